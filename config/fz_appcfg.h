/* Freeze appliance configuration: the stages YAML (model, caches, port, lcores, stages, sizes). */
#ifndef FZ_APPCFG_H
#define FZ_APPCFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fz_model.h"

#define FZ_MAX_STAGES 16
/* front: coalesce: wait_us at most 1 s: a follower holds a request and RX's room meanwhile */
#define FZ_FRONT_WAIT_US_MAX 1000000

#define FZ_FOREACH_IDLE(_)                                                                         \
	_(SPIN, "spin")                                                                            \
	_(YIELD, "yield")                                                                          \
	_(SLEEP, "sleep")

enum fz_idle {
#define FZ_IDLE_ENUM(e, s) FZ_IDLE_##e,
	FZ_FOREACH_IDLE(FZ_IDLE_ENUM)
#undef FZ_IDLE_ENUM
};

const char *fz_idle_name(enum fz_idle i);

struct fz_cfgpos {
	int line, col; /* where a value was written, for later checks' messages */
};

struct fz_stage_cfg {
	char name[FZ_NAME_MAX];
	int lcore;
	char first[FZ_NAME_MAX], last[FZ_NAME_MAX]; /* layer names as written */
	int first_layer, last_layer;                /* resolved by fz_appcfg_resolve() */
	int max_batch;
	enum fz_idle idle;
	struct fz_cfgpos pos, lcore_pos, layers_pos;
};

struct fz_appcfg {
	char path[FZ_PATH_MAX];
	char model_path[FZ_PATH_MAX]; /* resolved against the config file's directory */
	char cache_path[FZ_PATH_MAX]; /* "" for none */
	bool caches;                  /* exits on (a snapshot is loaded) */
	bool online;                  /* the last stage inserts full-model answers */
	float online_min_confidence;  /* ... whose softmax probability is at least this */
	struct {
		char device[256]; /* vdev spec ("net_pcap0,rx_pcap=...") or PCI address; "" = port 0 */
		uint32_t ipv4;    /* host byte order */
		uint16_t udp_port;
		struct fz_cfgpos pos;
	} port;
	int rx_lcore, tx_lcore;
	struct fz_cfgpos rx_pos, tx_pos;
	struct fz_stage_cfg stages[FZ_MAX_STAGES];
	int n_stages;
	int ring_size;        /* entries per inter-lcore ring (power of two) */
	int mbufs;            /* packet buffers */
	int requests;         /* request objects in flight at most */
	int reasm_entries;    /* reassembly table capacity */
	int reasm_timeout_ms; /* incomplete requests are answered with an error after this */
	enum fz_idle idle;    /* idle policy of rx, tx and stages that set none */
	int sleep_us;         /* idle policy "sleep": how long one idle sleep lasts */
	int idle_spins;       /* empty polls before an idle lcore yields or sleeps */
	int exit_idle_ms;     /* > 0: stop after this long with no traffic and nothing in flight */
	char run_as[64];      /* user to switch to once ports and files are open ("" = stay) */
	char state_dir[FZ_PATH_MAX]; /* besides models/, where model and cache files may live */
	struct fz_cfgpos model_pos, cache_pos;
	/* Tiers that answer before any layer runs, on the RX lcore (docs/architecture.md): exact
	 * repeats, per-flow memory, near-duplicate inputs, and requests coalesced with one alike
	 * in flight. A size of 0 turns that tier off. */
	struct {
		bool enabled;        /* a `front:` section; `enabled: false` keeps it off */
		int exact_entries;   /* exact (raw bytes) answers kept, CLOCK */
		int near_entries;    /* near-duplicate input keys kept, CLOCK */
		int near_grid;       /* cells per axis of the input key (0: automatic) */
		float near_radius;   /* root-mean-square pixel difference (0..1 scale) within
				      * which an answer is shared (calibrated,
				      * tools/calibrate_front.py); 0 = near, flows and coalescing
				      * of near-duplicates off */
		float near_min_confidence; /* a full-model answer is shared (near, flows,
					    * coalescing) when its probability is at least this */
		float near_exit_min_confidence; /* an early exit of a learned cache, when the
						 * probability of its log-odds is (1: never);
						 * both calibrated */
		int flow_entries;    /* sources (IPv4, UDP port) remembered */
		int flow_timeout_ms; /* a source's memory is used this long */
		int pending;         /* requests in flight others may wait for */
		int followers;       /* waiting requests per request in flight */
		int wait_us;         /* longest wait from its own arrival, <= FZ_FRONT_WAIT_US_MAX;
				      * then a follower runs itself */
		struct fz_cfgpos pos;
	} front;
	/* Self-checking: a share of the early answers also runs through the whole model, off the
	 * answer path (dropped, and counted, when the pipeline is busy); per cache point the
	 * sampled agreement over a window, and a guard that tightens, switches off, relaxes and
	 * switches on thresholds to keep its 95 % lower bound >= target. */
	struct {
		double sample;   /* share of early answers checked (0: off) */
		double target;   /* agreement the guard keeps */
		int window;      /* samples per cache point */
		int min_samples; /* decide on at least this many (0: the fewest an all-agreeing
				  * window needs to pass the target) */
		double margin;   /* relax only this far above the target */
		int every;       /* run the guard every this many samples of a point */
	} verify;
};

/* The embedded default configuration (YAML text) and the name used for it in messages. */
extern const char fz_appcfg_default_yaml[];
#define FZ_APPCFG_DEFAULT_NAME "<embedded default>"

/*
 * Parse a stages config from a file (path) or, when buf != NULL, from buf[0..len) named `path`.
 * Relative paths inside resolve against the file's directory, or `base_dir` for a buffer (NULL:
 * the current directory). Fills *cfg with defaults first. Returns 0, or -errno with "FILE:LINE:COL: message"
 * in err: unknown key, wrong type, bad IPv4 address, ring size not a power of two, stages out of
 * range, duplicate stage names, an lcore used twice (rx, tx and stages), ...
 */
int fz_appcfg_load(const char *path, const char *buf, size_t len, const char *base_dir,
		   struct fz_appcfg *cfg, char *err, size_t errlen);

/*
 * Resolve stage layer ranges against the model: every layer in exactly one stage, stages in model
 * order, ranges well-formed. Returns 0 or -EINVAL with "FILE:LINE:COL: message".
 */
int fz_appcfg_resolve(struct fz_appcfg *cfg, const struct fz_model *m, char *err, size_t errlen);

/* Format "FILE:LINE:COL: message" for a position recorded in cfg. Returns -EINVAL. */
int fz_appcfg_err(const struct fz_appcfg *cfg, struct fz_cfgpos pos, char *err, size_t errlen,
		  const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#endif /* FZ_APPCFG_H */
