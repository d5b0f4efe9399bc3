/* Freeze cachecore: per-layer approximate caches (keys, knn/k-means lookup, thresholds, snapshots). */
#ifndef FZ_CACHE_H
#define FZ_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fz_layout.h"
#include "fz_model.h"

#define FZ_CACHE_MAX_POOLED 2048 /* most floats in a pooled key (c * grid * grid) */
#define FZ_CACHE_MAX_DIM 256     /* most floats in a final key */
#define FZ_CACHE_MAX_K 64        /* most knn neighbours */
#define FZ_CACHE_MAX_CLASSES 256
#define FZ_CACHE_MAX_BURST 256 /* most samples per lookup call */
/* Most cache points in a set: a cache config, a snapshot or fz_cache_set_new with more is
 * refused (by this name). Threshold calibration, self-checking and telemetry follow every point
 * of a set up to it. */
#define FZ_CACHE_MAX_POINTS 32
#define FZ_CACHE_LABEL_NONE (-1)

#define FZ_FOREACH_CACHE_KIND(_)                                                                  \
	_(KNN, "knn")                                                                              \
	_(KMEANS, "kmeans")                                                                        \
	_(LEARNED, "learned")

enum fz_cache_kind {
#define FZ_CK_ENUM(e, s) FZ_CACHE_##e,
	FZ_FOREACH_CACHE_KIND(FZ_CK_ENUM)
#undef FZ_CK_ENUM
	FZ_CACHE_KIND__COUNT
};

#define FZ_FOREACH_CACHE_THR(_)                                                                   \
	_(ZERO_ERROR, "zero-error")                                                                \
	_(BUDGET, "budget")                                                                        \
	_(FIXED, "fixed")

enum fz_cache_thr_mode {
#define FZ_CT_ENUM(e, s) FZ_CACHE_THR_##e,
	FZ_FOREACH_CACHE_THR(FZ_CT_ENUM)
#undef FZ_CT_ENUM
	FZ_CACHE_THR__COUNT
};

#define FZ_FOREACH_CACHE_EVICT(_)                                                                 \
	_(CLOCK, "clock")                                                                          \
	_(LRU, "lru")

enum fz_cache_evict {
#define FZ_CE_ENUM(e, s) FZ_CACHE_EVICT_##e,
	FZ_FOREACH_CACHE_EVICT(FZ_CE_ENUM)
#undef FZ_CE_ENUM
	FZ_CACHE_EVICT__COUNT
};

/* One cache point's settings (a `caches:` item of the cache config). */
struct fz_cache_params {
	char layer[FZ_NAME_MAX]; /* model layer whose output is the key's source */
	enum fz_cache_kind kind;
	int grid;  /* average-pool the tap to grid x grid cells (1 = global average) */
	int dims;  /* PCA projection to this many dims, fitted at calibration; 0 (or >= the
		    * pooled c*grid*grid floats) = none */
	bool l2;   /* L2-normalise the key */
	int k;     /* knn: neighbours voting */
	int hidden; /* learned: hidden units of the predictor (0 = linear; set from its file) */
	bool confirm; /* learned: a k-means cache (key grid/dims/l2, size) must give the same
		       * answer above its threshold, or the point abstains */
	int size;  /* calibrated entries: knn points kept / k-means centroids */
	int capacity; /* online entries on top of the calibrated ones (0 = none) */
	enum fz_cache_evict evict;
	enum fz_cache_thr_mode thr_mode;
	float threshold; /* FIXED: the threshold; else set by calibration */
	bool enabled;    /* false: never a hit (the layer's exits are switched off) */
	bool online;     /* full-model answers are inserted (needs capacity > 0) */
};

/* Defaults (the measured winner): kmeans, grid 4, PCA to 64 dims, l2, size 1024 centroids,
 * k 8 (knn), no online slots, budget thresholds, enabled. A tap smaller than 4x4 needs a
 * smaller grid. */
void fz_cache_params_default(struct fz_cache_params *p);

const char *fz_cache_kind_name(enum fz_cache_kind k);
const char *fz_cache_thr_name(enum fz_cache_thr_mode m);
const char *fz_cache_evict_name(enum fz_cache_evict e);

/* ---- one layer's cache ---- */

struct fz_cache;

/* What a lookup answers for one sample. */
struct fz_cache_result {
	int label;   /* the cache's answer, or FZ_CACHE_LABEL_NONE when it holds nothing */
	float conf;  /* confidence (>= 0; larger is surer) */
	bool hit;    /* enabled && conf > threshold */
	int slot;    /* the nearest entry's slot (knn, k-means), -1: none (learned, empty) */
};

/*
 * An empty cache for a tap of shape c x h x w with labels 0..n_classes-1.
 * NULL with errno EINVAL (bad params: grid < 1 or > h or w, pooled or key too large, k out of
 * range, size < 1) or ENOMEM.
 */
struct fz_cache *fz_cache_create(const struct fz_cache_params *p, int c, int h, int w,
				 int n_classes);
void fz_cache_free(struct fz_cache *c);

const struct fz_cache_params *fz_cache_params(const struct fz_cache *c);
/* The tap shape (c x h x w) the cache was created for. */
void fz_cache_tap_shape(const struct fz_cache *c, int *ch, int *h, int *w);
int fz_cache_pooled_dim(const struct fz_cache *c); /* c * grid * grid */
int fz_cache_key_dim(const struct fz_cache *c);    /* dims, or the pooled dim without PCA */
int fz_cache_entries(const struct fz_cache *c);    /* live entries (calibrated + online) */
size_t fz_cache_bytes(const struct fz_cache *c);   /* memory the cache holds */
/*
 * A point's gate: its threshold and whether it may answer at all, published together as one
 * 64-bit word (the float's bits, and bit 32 for "on"). Lookups read it with one atomic load, so
 * a reader never pairs the threshold of one update with the switch of another; the self-check
 * guard (control thread) writes both with one store while stages look up.
 */
struct fz_cache_gate {
	float thr;
	bool on; /* false: never a hit (switched off by calibration, or by the guard) */
};

static inline uint64_t fz_cache_gate_pack(struct fz_cache_gate g)
{
	union {
		float f;
		uint32_t u;
	} b = {.f = g.thr};
	return (uint64_t)b.u | (uint64_t)g.on << 32;
}

static inline struct fz_cache_gate fz_cache_gate_unpack(uint64_t w)
{
	union {
		uint32_t u;
		float f;
	} b = {.u = (uint32_t)w};
	return (struct fz_cache_gate){.thr = b.f, .on = (w >> 32) & 1};
}

/* The gate now (one atomic load). */
struct fz_cache_gate fz_cache_gate(const struct fz_cache *c);
/* Publish a gate (one atomic store; readers see the old or the new one whole). */
void fz_cache_set_gate(struct fz_cache *c, struct fz_cache_gate g);
float fz_cache_threshold(const struct fz_cache *c);
/* One half of the gate: the other half kept (a compare-exchange, safe against another writer). */
void fz_cache_set_threshold(struct fz_cache *c, float thr);
void fz_cache_set_enabled(struct fz_cache *c, bool on);
bool fz_cache_enabled(const struct fz_cache *c); /* false: never a hit (e.g. switched off by
						  * calibration for not paying) */

/*
 * Can the cache read taps in layout `lay` (shape, channel block, strides)? 0, or -EINVAL with a
 * message naming the layout and why (err may be NULL). Checked once where a cache meets a tap,
 * so a layout it cannot read is refused by name, never a silent miss or a garbage key.
 */
#define FZ_CACHE_MAX_CBLOCK 64
int fz_cache_layout_check(const struct fz_cache *c, const struct fz_act_layout *lay, char *err,
			  size_t errlen);

/*
 * Average-pool n samples of a tap (layout `lay`, c/h/w must match the cache) into
 * out[n][pooled_dim], cells in adaptive-pooling bounds. Returns 0 or -EINVAL.
 */
int fz_cache_pool_burst(const struct fz_cache *c, const float *act,
			const struct fz_act_layout *lay, int n, float *out);

/*
 * Pooled vectors -> keys: PCA projection (when fitted) then L2 normalisation (when set).
 * pooled[n][pooled_dim] -> keys[n][key_dim]. No allocation. Returns 0 or -EINVAL.
 */
int fz_cache_project_burst(const struct fz_cache *c, const float *pooled, int n, float *keys);

/* Tap -> keys, both steps above. n <= FZ_CACHE_MAX_BURST. Returns 0 or -EINVAL. */
int fz_cache_key_burst(const struct fz_cache *c, const float *act,
		       const struct fz_act_layout *lay, int n, float *keys);

/*
 * Fit the PCA projection (params.dims > 0) on n pooled vectors (at most `sample` of them, spread
 * evenly, are used; 0 = all). Returns 0, -EINVAL (n < dims, or no PCA configured) or -ENOMEM.
 */
int fz_cache_fit_pca(struct fz_cache *c, const float *pooled, size_t n, size_t sample);

/*
 * Fill the calibrated entries from n keys with the full model's labels. knn: keeps `size`
 * points (a class-stratified even spread when n > size); kmeans: `size` centroids by k-means++
 * and Lloyd iterations (`seed` makes it repeatable), each with majority label and fraction.
 * Replaces any previous entries. Returns 0, -EINVAL or -ENOMEM.
 */
int fz_cache_build(struct fz_cache *c, const float *keys, const int *labels, size_t n,
		   uint64_t seed);

/*
 * Look up n keys (keys[n][key_dim], n <= FZ_CACHE_MAX_BURST). Lock-free and allocation-free:
 * safe on any number of reader threads while one writer inserts. knn: C_i = (m_i/k) * sum 1/d_j
 * over the k nearest; kmeans: fraction / distance of the nearest centroid. The keys meet all
 * entries as one matrix product (|c|^2 - 2 Q C^T), then the candidates it nominates are checked
 * exactly: the answers are an exact scan's, on every SIMD level and at any batch size.
 * Returns 0 or -EINVAL.
 */
int fz_cache_lookup_keys(struct fz_cache *c, const float *keys, int n,
			 struct fz_cache_result *res);

/* Tap -> keys -> lookup (n <= FZ_CACHE_MAX_BURST). Returns 0 or -EINVAL. Works on the stack
 * (~210 KiB: keys, one GEMM's distances and the top-k of 64 queries at a time; a learned
 * cache with a confirmer ~64 KiB more for the confirmer's keys). */
int fz_cache_lookup_burst(struct fz_cache *c, const float *act, const struct fz_act_layout *lay,
			  int n, struct fz_cache_result *res);

/*
 * Online insert (single writer): store key with label in an online slot, evicting by the
 * cache's CLOCK or LRU policy once the `capacity` online slots are full. Calibrated entries are
 * never evicted. Readers on other threads keep going and never see the entry half-written.
 * Returns 0, -EINVAL (bad label, or a key with a NaN or infinity) or -ENOSPC (capacity 0).
 */
int fz_cache_insert(struct fz_cache *c, const float *key, int label);
/* Forget an online entry (the writer thread): slot must be an online slot holding one. 0, or
 * -EINVAL (a calibrated or empty slot, out of range). For entries the full model contradicts. */
int fz_cache_forget(struct fz_cache *c, int slot);
/* Online entries replaced so far (any thread may read it). */
uint64_t fz_cache_evictions(const struct fz_cache *c);

/*
 * Copy entry `slot` whole (key[key_dim], label) with the entry's seqlock: never torn.
 * Returns 0, -EAGAIN (being written right now: try again), -ENOENT (empty slot) or -EINVAL.
 * For tests and diagnostics; lookups validate entries the same way.
 */
int fz_cache_read_entry(const struct fz_cache *c, int slot, float *key, int *label);
int fz_cache_slots(const struct fz_cache *c); /* calibrated + online slots */

/* ---- learned caches ---- */

/*
 * A `learned` cache holds no entries: a small predictor (after GATI) maps the pooled tap x
 * (c * grid * grid floats) to the full model's answer. Its "key" is what the predictor says:
 * key[0..classes) the logits z = W2 relu(W1 x + b1) + b2 (or W1 x + b1 without a hidden layer)
 * and key[classes] the guard |(x - mean) * inv_std|^2. The lookup answers argmax z with
 * confidence log(p / (1 - p)) of the tempered softmax p = softmax(z / T) (so 0 = even odds;
 * never saturates), and abstains (confidence 0) when the guard is above radius^2. With
 * `confirm`, the key goes on with a k-means key (grid, dims, l2 of the params; size
 * centroids) and the point answers only when the nearest centroid gives the same label with a
 * k-means confidence above the confirmer's threshold: far from every centroid (inputs unlike
 * the training data) it abstains. Without it, dims / l2 / size do not apply.
 * Trained by tools/train_caches.py, installed by `freeze calibrate`, kept in snapshots.
 */
struct fz_cache_head {
	int hidden;          /* H, 0 = linear */
	const float *w1;     /* [H or classes][pooled], row-major (torch's Linear.weight) */
	const float *b1;     /* [H or classes] */
	const float *w2;     /* [classes][H] (hidden only) */
	const float *b2;     /* [classes] (hidden only) */
	const float *mean;   /* [pooled] */
	const float *inv_std; /* [pooled] */
	float temperature;   /* > 0 */
	float radius;        /* >= 0 */
};

/* Install a learned cache's predictor (copied). The cache's params.hidden must equal it. 0, or -EINVAL
 * (not a learned cache, hidden mismatch, a non-finite weight, temperature <= 0). */
int fz_cache_set_head(struct fz_cache *c, const struct fz_cache_head *h);
/* A learned cache's confirming k-means cache (NULL: none; it is owned by c). Calibration fits
 * its PCA, builds it (fz_cache_build on c does) and sets its threshold. */
struct fz_cache *fz_cache_confirmer(const struct fz_cache *c);
/* Has a learned cache got its predictor? (others: true) */
bool fz_cache_ready(const struct fz_cache *c);

/* ---- thresholds ---- */

/*
 * Per-cache validation results for thresholds: for cache l and sample j, conf[l * n + j] and
 * agree[l * n + j] (the cache's answer equals the full model's).
 * zero-error caches get the highest confidence that was still wrong (0 if none was);
 * budget caches get thresholds chosen greedily for the most exits such that the disagreement of
 * the whole cascade (a sample exits at its first hit) stays <= budget * n; with gain (per cache,
 * e.g. the share of compute an exit there saves) for the largest sum of gain over exits instead.
 * Fixed caches keep theirs; disabled caches exit nothing. thr[l] receives each threshold.
 * Returns 0, -EINVAL (n_caches outside 0..FZ_CACHE_MAX_POINTS, a NULL array, budget < 0) or
 * -ENOMEM.
 */
int fz_cache_calibrate_thresholds(const enum fz_cache_thr_mode *mode, const bool *enabled,
				  const float *fixed, int n_caches, const float *conf,
				  const bool *agree, size_t n, double budget, const double *gain,
				  float *thr);

/*
 * Simulate the cascade: exit[j] = first cache l with enabled and conf > thr[l], or n_caches.
 * Returns the number of exiting samples that disagree (when agree given) or 0.
 */
size_t fz_cache_cascade(const bool *enabled, const float *thr, int n_caches, const float *conf,
			const bool *agree, size_t n, int *exit);

/* ---- a model's caches: what a snapshot holds ---- */

struct fz_cache_set {
	uint64_t model_fp; /* fingerprint of the model the caches were calibrated on */
	int n_classes;
	int n_caches;
	struct fz_cache **caches; /* in model order */
};

/* NULL with errno EINVAL (n_classes outside 2..FZ_CACHE_MAX_CLASSES, n_caches < 0), E2BIG
 * (n_caches > FZ_CACHE_MAX_POINTS) or ENOMEM. */
struct fz_cache_set *fz_cache_set_new(uint64_t model_fp, int n_classes, int n_caches);
void fz_cache_set_free(struct fz_cache_set *s); /* frees the caches too */
size_t fz_cache_set_bytes(const struct fz_cache_set *s);

/*
 * Write a snapshot durably (temp file, fsync, rename, directory fsync). Format: magic "FZCACHE1",
 * version, model fingerprint, per-cache params/dims/counts, PCA, entries (calibrated and online),
 * and a CRC32C of everything before it. Call it from the writer thread (online inserts
 * paused), so no entry changes while it is copied. Returns 0 or a negative errno.
 */
int fz_cache_set_save(const struct fz_cache_set *s, const char *path);

/*
 * Read a snapshot (io_uring, pread fallback). Refused whole, NULL with errno EINVAL and a
 * message in err, when truncated, of another magic or version, failing its checksum, made for
 * another model (fingerprint != model_fp; pass 0 to accept any), when its counts or dims are
 * inconsistent, or when its caches' sizes and capacities would take more than 1 GiB together.
 * errno ENOENT/EIO/ENOMEM from reading.
 */
struct fz_cache_set *fz_cache_set_load(const char *path, uint64_t model_fp, char *err,
				       size_t errlen);

/* Same, from buf[0..len) in memory; `path` names it in messages. NULL with errno EINVAL/ENOMEM. */
struct fz_cache_set *fz_cache_set_parse(const char *path, const void *buf, size_t len,
					uint64_t model_fp, char *err, size_t errlen);

/* ---- cache config (YAML) ---- */

struct fz_cache_config {
	char path[FZ_PATH_MAX];
	int build;      /* calibration: first `build` train samples build the caches */
	int validation; /* the next `validation` samples set thresholds */
	double budget;  /* cumulative disagreement budget of `budget` caches */
	bool objective_compute; /* budget buys saved compute (MACs) rather than exit count */
	char heads[FZ_PATH_MAX]; /* learned caches' predictors (safetensors), resolved against
				  * the config's directory; "" = none */
	double confirm_keep; /* a confirmer's threshold passes this share of the validation
			      * requests its nearest centroid answers right (default 0.75) */
	uint64_t seed;
	struct fz_cache_params *caches;
	int n_caches;
};

/*
 * Load a cache config:
 *   build: 50000, validation: 10000, budget: 0.004, seed: 1, objective: compute|exits,
 *   heads: FILE.safetensors (needed by kind: learned), confirm_keep: 0.75
 *   defaults: {kind, key: {grid, dims, l2}, k, size, capacity, eviction, threshold, enabled, online}
 *   caches: [ {layer: block1, <any default overridden>}, ... ]
 * threshold is zero-error, budget, or a number (fixed). NULL with errno and a
 * "FILE:LINE:COLUMN: ..." message in err.
 */
struct fz_cache_config *fz_cache_config_load(const char *path, char *err, size_t errlen);
/* Same, from buf[0..len) in memory; `path` names it in messages (NULL: ""). */
struct fz_cache_config *fz_cache_config_parse(const char *path, const char *buf, size_t len,
					      char *err, size_t errlen);
void fz_cache_config_free(struct fz_cache_config *cfg);

/* FNV-1a 64 of a buffer, continuing from h (start with FZ_FNV64_INIT). */
#define FZ_FNV64_INIT 0xcbf29ce484222325ULL
uint64_t fz_fnv1a64(uint64_t h, const void *buf, size_t len);

/* CRC32C (Castagnoli), continuing from crc (start with 0). SSE4.2 crc32 instruction when the
 * CPU has it and the ISA is not capped to portable, else tables: the same value either way. */
uint32_t fz_crc32c(uint32_t crc, const void *buf, size_t len);

/* ---- SIMD level ---- */

/*
 * Name of the SIMD kernels the caches use: "avx512" (F, VL, BW, DQ), "avx2" (with FMA) or
 * "portable", chosen on first use: the CPU's best, capped by FZ_CPU_ISA=avx512|avx2|portable
 * and by ONEDNN_MAX_CPU_ISA (AVX2* caps at avx2; SSE41 and AVX at portable), so the variable
 * that caps oneDNN caps the caches too. Every level gives the same bits; only speed differs.
 * For start-up logs.
 */
const char *fz_cache_isa(void);

/*
 * Use the kernels `name` ("avx512", "avx2", "portable") from now on, whatever the caps say;
 * NULL chooses again as on first use (re-reading the environment). Safe while lookups run on
 * other threads (each call uses one level or the other, with the same results). For tests and
 * benchmarks. Returns 0, -EINVAL (unknown name) or -ENOTSUP (this CPU lacks it).
 */
int fz_cache_isa_set(const char *name);

#endif /* FZ_CACHE_H */
