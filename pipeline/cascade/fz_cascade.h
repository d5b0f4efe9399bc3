/* Freeze cascade: a layer range split at cache points into layer groups bound output to input;
 * after each group the cache answers what it can and the batch closes up around the exits; the
 * full model answers the rest (argmax, softmax confidence) and feeds online caches under one
 * policy. DPDK-free: the stage lcores, `freeze eval` and `freeze calibrate` all run this. */
#ifndef FZ_CASCADE_H
#define FZ_CASCADE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fz_answer.h"
#include "fz_cache.h"
#include "fz_layout.h"
#include "fz_stages.h"

#define FZ_CASCADE_MAX_GROUPS 64
#define FZ_CASCADE_MAX_BATCH 1024

/* One row the cascade carries: moved, never copied apart, as the batch closes up. */
struct fz_cascade_row {
	void *user;   /* the caller's (a request, an image index) */
	float *keys;  /* key area (fz_cascade_key_floats) for online inserts, or NULL: none kept */
	/* with keys: where the set the keys came from is recorded (start it at NULL; it becomes
	 * FZ_CASCADE_KEYS_MIXED once two sets, or a failed lookup, left the keys unusable) */
	const struct fz_cache_set **keys_set;
	/* a shadow: a sample checked against the full model, never exits (its lookups are still
	 * reported through run->lookup, at switched-off points too); not counted in stats */
	bool shadow;
};
#define FZ_CASCADE_KEYS_MIXED ((const struct fz_cache_set *)1)

/* A decided row: a cache exit, or the full model's answer. */
struct fz_cascade_answer {
	void *user;
	int label;
	float confidence; /* the cache's, or the full model's softmax probability */
	struct fz_answer_src src; /* FZ_ANSWERED_LAYER (that cache's layer) or FZ_ANSWERED_FULL */
	int cache;        /* that cache's index in the set, -1: the full model */
};

/* Counters, cumulative since create (timings only while fz_cascade_timing is on). */
struct fz_cascade_stats {
	uint64_t group_ns[FZ_CASCADE_MAX_GROUPS];  /* running each group */
	uint64_t lookup_ns[FZ_CASCADE_MAX_GROUPS]; /* keys + lookup after it */
	uint64_t lookup_errors; /* key or lookup calls that failed: their rows missed */
	uint64_t online_inserts;
	uint64_t lookups[FZ_CASCADE_MAX_GROUPS]; /* rows looked up after group k */
	uint64_t hits[FZ_CASCADE_MAX_GROUPS];    /* ... of which exited there */
};

/* What one run does besides groups and lookups: all fields optional (zero = default). */
struct fz_cascade_run {
	float *in;  /* the first group's input rows; NULL: its own buffer (fz_cascade_input) */
	float *out; /* where the last group writes; NULL: its own buffer */
	float *(*out_get)(void *arg); /* instead of `out`: asked just before the last group runs */
	void (*in_done)(void *arg);   /* told once the first group has read `in` */
	/* every group's output (the tap) of the n rows about to be looked up */
	void (*tap)(void *arg, int group, const float *tap, const struct fz_act_layout *lay,
		    const struct fz_cascade_row *rows, unsigned n);
	/* every cache point's results for its n rows, before they close up */
	void (*lookup)(void *arg, int cache, const struct fz_cascade_row *rows,
		       const struct fz_cache_result *res, unsigned n);
	void *arg;
	bool no_exit; /* every row runs every group (lookups still run and are reported) */
};

struct fz_cascade;

/*
 * Compile model layers [first, last] of net for batches of 1..max_batch, cut after each of the
 * cut[0..n_cut) layers inside the range (increasing; others ignored) and after `last`. Each
 * group's input is bound to the previous group's output. Call on the thread that will run it
 * (oneDNN primitives are made there). NULL with errno (EINVAL, ENOMEM, or the group's) and err.
 */
struct fz_cascade *fz_cascade_create(struct fz_net *net, int first, int last, const int *cut,
				     int n_cut, int max_batch, char *err, size_t errlen);
void fz_cascade_free(struct fz_cascade *cc);

int fz_cascade_groups(const struct fz_cascade *cc);
struct fz_group *fz_cascade_group(const struct fz_cascade *cc, int k);
int fz_cascade_group_first(const struct fz_cascade *cc, int k); /* model layers of group k */
int fz_cascade_group_last(const struct fz_cascade *cc, int k);
struct fz_act_layout fz_cascade_in_layout(const struct fz_cascade *cc);
struct fz_act_layout fz_cascade_out_layout(const struct fz_cascade *cc);
float *fz_cascade_input(struct fz_cascade *cc); /* the first group's own input buffer */

/*
 * Look up in cs's caches from now on (NULL: none): group k's cache is the one after its last
 * layer, none after the model's output. Same layers and key sizes across reloads: a new
 * snapshot swaps entries. Returns 0, or -EINVAL with err when a cache cannot read its tap.
 */
int fz_cascade_use_caches(struct fz_cascade *cc, const struct fz_cache_set *cs, char *err,
			  size_t errlen);
/* The cache after group k (NULL: none). */
struct fz_cache *fz_cascade_cache(const struct fz_cascade *cc, int k);

/*
 * The online policy: when on, misses keep their keys (rows with a key area) and the full
 * model's answers with confidence >= min_confidence are inserted into every cache configured
 * online, when all of the row's keys came from the set in use (*keys_set). Off by default.
 */
void fz_cascade_online(struct fz_cascade *cc, bool on, float min_confidence);

/* Floats of the key area a row needs for cs's caches (all of them, in model order). */
size_t fz_cascade_key_floats(const struct fz_cache_set *cs);

void fz_cascade_timing(struct fz_cascade *cc, bool on);
const struct fz_cascade_stats *fz_cascade_stats(const struct fz_cascade *cc);

/*
 * Run *n rows (<= max_batch; rows[i] owns input row i) through the groups. Exits, and when the
 * range ends at the model's output the full model's answers, are appended at ans[*nans]
 * (*nans advanced). Afterwards rows[0..*n) are the survivors, their rows in the last group's
 * output (run->out or its own buffer), order changed by the close-up. Returns 0, or -EIO / -EINVAL
 * when a group failed: then rows[0..*n) are the rows left undecided.
 */
int fz_cascade_run(struct fz_cascade *cc, const struct fz_cascade_run *run,
		   struct fz_cascade_row *rows, unsigned *n, struct fz_cascade_answer *ans,
		   unsigned *nans);

/*
 * Close rows [0, n) (row i: `stride` floats at act + i * stride, and rows[i]) up around the
 * exits hit[i], in place: afterwards the survivors fill [0, returned count). on_exit(arg, i,
 * row) is told each exit with its index in the original order, before its row is reused. A
 * hole is filled with the last survivor, so one row moves per exit at most and none when the
 * exits sit at the end; the survivors' order changes.
 */
unsigned fz_cascade_close_up(float *act, size_t stride, struct fz_cascade_row *rows,
			     const bool *hit, unsigned n,
			     void (*on_exit)(void *arg, unsigned idx, const struct fz_cascade_row *row),
			     void *arg);

/* The full model's answer for one row of logits: argmax, and its softmax probability. */
int fz_cascade_argmax_conf(const float *logits, int classes, float *conf);

#endif /* FZ_CASCADE_H */
