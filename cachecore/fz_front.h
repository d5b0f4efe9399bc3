/* Freeze cachecore, front tiers: what answers a request before any layer runs. An exact table
 * (raw tensor bytes -> answer), an input-level near-duplicate key (|DFT| of the raw input) and a
 * table of such keys, and a per-flow memory. Plain C, single-threaded: the appliance's RX lcore
 * owns them (pipeline/datapath/front.c), `freeze calibrate-front` and the tests drive them too. */
#ifndef FZ_FRONT_H
#define FZ_FRONT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FZ_FRONT_MAX_DIM 64   /* most floats in an input key */
#define FZ_FRONT_MAX_FREQS 8  /* most frequencies per axis */
#define FZ_FRONT_WAYS 8       /* ways per set of the exact and flow tables */

/* ---- input keys ---- */

/*
 * The key of an input tensor: for each channel the magnitudes |F(ky, kx)| of its 2-D discrete
 * Fourier transform at the lowest frequencies, ky in [0, freqs) and kx in (-freqs, freqs), but
 * at ky = 0 only kx >= 1 (kx < 0 has the same magnitudes there, and the DC term is left out),
 * L2-normalised over the whole key. Magnitudes do not change when the picture moves
 * (circularly; nearly so for an object on a plain background), the normalisation removes a
 * change of brightness (gain), and low frequencies average sensor noise away: consecutive
 * frames of a camera stay near one another, different pictures do not. Without the DC term,
 * which dominates every picture's magnitudes, pictures with little structure at low
 * frequencies (noise, fine patterns) do not all fall together.
 */
struct fz_front_keyer;

/* A keyer for c x h x w inputs; NULL with errno EINVAL (freqs < 2, > FZ_FRONT_MAX_FREQS or
 * > h or w; h or w > 4096; key longer than FZ_FRONT_MAX_DIM) or ENOMEM. */
struct fz_front_keyer *fz_front_keyer_create(int c, int h, int w, int freqs);
void fz_front_keyer_free(struct fz_front_keyer *k);
int fz_front_key_dim(const struct fz_front_keyer *k); /* c * 2 freqs (freqs - 1) */
/* raw[c][h][w] (u8, or f32 on the u8 scale) -> key[key_dim]. A constant-zero input gives the
 * zero key. */
void fz_front_key_u8(const struct fz_front_keyer *k, const uint8_t *raw, float *key);
void fz_front_key_f32(const struct fz_front_keyer *k, const float *raw, float *key);

/* Squared L2 distance of two keys of dim floats. */
float fz_front_d2(const float *a, const float *b, int dim);

/* ---- exact answers ---- */

/* What the tables remember of an answer. */
struct fz_front_answer {
	int16_t label;
	uint16_t exit_layer; /* where the pipeline answered (the appliance's code) */
	float confidence;
};

/*
 * Exact table: (hash, raw bytes) -> answer, `entries` slots in sets of FZ_FRONT_WAYS, CLOCK
 * eviction inside a set. The bytes are kept and compared, so a hit is an exact repeat whatever
 * the hash. A slot is claimed when its request enters the pipeline (pending: repeats arriving
 * meanwhile can wait for it) and filled, or dropped, with its answer. Slots carry a generation:
 * a fill or drop for a slot evicted and reused since is ignored.
 */
struct fz_exact;

struct fz_exact_stats {
	uint64_t lookups, hits, pending_hits, inserts, evictions, clears;
};

/* NULL with errno EINVAL (entries < FZ_FRONT_WAYS, max_bytes 0) or ENOMEM; entries is rounded
 * down to a power-of-two number of sets. */
struct fz_exact *fz_exact_create(unsigned entries, size_t max_bytes);
void fz_exact_free(struct fz_exact *e);
unsigned fz_exact_capacity(const struct fz_exact *e);
size_t fz_exact_bytes(const struct fz_exact *e);

/* The 64-bit hash of a request: model fingerprint, dtype, dims and the raw tensor bytes. */
uint64_t fz_exact_hash(uint64_t model_fp, unsigned dtype, unsigned c, unsigned h, unsigned w,
		       const void *bytes, size_t len);

enum fz_exact_state { FZ_EXACT_MISS, FZ_EXACT_PENDING, FZ_EXACT_READY };

/* Look up; on a hit *slot (and, READY, *ans) are set and the slot's CLOCK bit too. */
enum fz_exact_state fz_exact_find(struct fz_exact *e, uint64_t hash, const void *bytes,
				  size_t len, int *slot, struct fz_front_answer *ans);
/* Claim a pending slot for (hash, bytes), evicting by CLOCK; *gen receives its generation.
 * Returns the slot, or -EINVAL (len > max_bytes). */
int fz_exact_claim(struct fz_exact *e, uint64_t hash, const void *bytes, size_t len,
		   uint32_t *gen);
/* Fill a claimed slot (still of generation gen) with its answer: 0, or -ESTALE. */
int fz_exact_fill(struct fz_exact *e, int slot, uint32_t gen, const struct fz_front_answer *a);
/* Forget a claimed slot (an error answer, nothing to remember): 0, or -ESTALE. */
int fz_exact_drop(struct fz_exact *e, int slot, uint32_t gen);
/* Forget everything (a model or snapshot reload). */
void fz_exact_clear(struct fz_exact *e);
unsigned fz_exact_count(const struct fz_exact *e); /* slots pending or filled */
const struct fz_exact_stats *fz_exact_stats(const struct fz_exact *e);

/* ---- near-duplicate keys ---- */

/*
 * A table of input keys with answers, searched for the nearest within a radius (an exact scan
 * of a few hundred keys of a few dozen floats, 16 keys per vector step, dispatched to AVX-512,
 * AVX2 or SSE2 at run time with the same results). `evict`: a put into a full table replaces a slot
 * by CLOCK; without, it fails (the appliance's table of requests in flight, which must not
 * forget one). Slots carry generations, as in the exact table.
 */
struct fz_near;

struct fz_near_stats {
	uint64_t lookups, hits, inserts, evictions, full, clears;
};

struct fz_near *fz_near_create(unsigned entries, int dim, bool evict);
void fz_near_free(struct fz_near *n);
unsigned fz_near_capacity(const struct fz_near *n);
unsigned fz_near_count(const struct fz_near *n);
size_t fz_near_bytes(const struct fz_near *n);
/* The nearest slot with d2 <= r2 (its CLOCK bit set, *d2 its distance), or -1. Counts a
 * lookup (and a hit) when `count`. */
int fz_near_find(struct fz_near *n, const float *key, float r2, float *d2, bool count);
/* Store key with answer a (may be NULL); *gen receives the slot's generation. Returns the
 * slot, or -ENOSPC (full, no eviction) or -EINVAL (a key with a NaN or infinity). */
int fz_near_put(struct fz_near *n, const float *key, const struct fz_front_answer *a,
		uint32_t *gen);
/* Slot contents (key copied out, key or a may be NULL), when it still holds generation gen
 * (gen UINT32_MAX: any): 0 or -ESTALE. */
int fz_near_get(const struct fz_near *n, int slot, uint32_t gen, float *key,
		struct fz_front_answer *a);
/* Squared distance of key to slot's key. */
float fz_near_dist2(const struct fz_near *n, int slot, const float *key);
uint32_t fz_near_gen(const struct fz_near *n, int slot); /* its current generation */
int fz_near_remove(struct fz_near *n, int slot, uint32_t gen);
void fz_near_clear(struct fz_near *n);
const struct fz_near_stats *fz_near_stats(const struct fz_near *n);

/* ---- per-flow memory ---- */

/*
 * The last near-table slot (and its generation) that answered each source (IPv4 address, UDP
 * port): `entries` in sets of FZ_FRONT_WAYS, the oldest of a set replaced; an entry older than
 * timeout_ns is not used. The caller checks the slot's key against the request's.
 */
struct fz_flows;

struct fz_flows_stats {
	uint64_t lookups, found, expired, replaced;
};

struct fz_flows *fz_flows_create(unsigned entries, uint64_t timeout_ns);
void fz_flows_free(struct fz_flows *f);
unsigned fz_flows_capacity(const struct fz_flows *f);
/* The flow's slot/gen if seen within the timeout: 0, or -ENOENT. */
int fz_flows_get(struct fz_flows *f, uint32_t ip, uint16_t port, uint64_t now_ns, int *slot,
		 uint32_t *gen);
void fz_flows_set(struct fz_flows *f, uint32_t ip, uint16_t port, uint64_t now_ns, int slot,
		  uint32_t gen);
void fz_flows_clear(struct fz_flows *f);
unsigned fz_flows_count(const struct fz_flows *f, uint64_t now_ns); /* within the timeout */
const struct fz_flows_stats *fz_flows_stats(const struct fz_flows *f);

#endif /* FZ_FRONT_H */
