/* Freeze cachecore, front tiers: what answers a request before any layer runs. An exact table
 * (raw tensor bytes -> answer), a table of answered input images searched by distance (through
 * a key that bounds it), and a per-flow memory. Plain C, single-threaded: the appliance's RX lcore
 * owns them (pipeline/front), `freeze front-keys` and the tests drive them too. */
#ifndef FZ_FRONT_H
#define FZ_FRONT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FZ_FRONT_MAX_DIM 64   /* most floats in an input key */
#define FZ_NEAR_CANDIDATES 4 /* key-space candidates a near lookup confirms on their pixels */
#define FZ_FRONT_WAYS 8       /* ways per set of the exact and flow tables */

/* ---- input keys ---- */

/*
 * The near-duplicate tiers compare inputs as u8 images (c x h x w, the wire's u8 values; an f32
 * request takes part only when every value is an integer in 0..255, so it equals such an image).
 * Two images are near when their root-mean-square difference on the 0..1 scale,
 *   rms(a, b) = sqrt(sum (a_i - b_i)^2 / (255^2 n)),
 * is at most the radius. Nothing is thrown away: the mean level, the contrast and the sign of
 * an image all count, so an inverted or contrast-changed copy is far from its original.
 * The key makes the search cheap: per channel a grid x grid grid of cells (cell edges at
 * floor(i h / grid)), each cell's mean / 255 weighted by sqrt(cell pixels / channel pixels /
 * c). By Cauchy-Schwarz inside each cell, |key(a) - key(b)| <= rms(a, b): a scan of keys within
 * the radius never misses an image within it, and every candidate is then confirmed on its
 * pixels (fz_near_find). The same bits on every CPU: sums of integers, one division and one
 * multiplication per cell.
 */
struct fz_front_keyer;

/* Cells per axis for a c x h x w input when the config leaves it out: the most with
 * c * grid^2 <= FZ_FRONT_MAX_DIM and grid <= h, w. */
int fz_front_grid_auto(int c, int h, int w);
/* A keyer for c x h x w inputs and grid x grid cells; NULL with errno EINVAL (grid < 1, grid >
 * h or w, c * grid^2 > FZ_FRONT_MAX_DIM, h or w > 4096) or ENOMEM. */
struct fz_front_keyer *fz_front_keyer_create(int c, int h, int w, int grid);
void fz_front_keyer_free(struct fz_front_keyer *k);
int fz_front_key_dim(const struct fz_front_keyer *k);      /* c * grid^2 */
size_t fz_front_key_pixels(const struct fz_front_keyer *k); /* c * h * w: bytes of an image */
/* img[c][h][w] -> key[key_dim]. */
void fz_front_key_u8(const struct fz_front_keyer *k, const uint8_t *img, float *key);
/* f32 values (on the u8 scale) -> the u8 image they are: 0, or -ERANGE when a value is not an
 * integer in 0..255 (NaN and infinities included); such a request has no key. */
int fz_front_image_f32(const float *raw, size_t n, uint8_t *img);
/* Sum of squared differences of two images of n bytes (exact). */
uint64_t fz_front_sse(const uint8_t *a, const uint8_t *b, size_t n);

/* Squared L2 distance of two keys of dim floats. */
float fz_front_d2(const float *a, const float *b, int dim);

/* ---- exact answers ---- */

/* What the tables remember of an answer. */
struct fz_front_answer {
	int16_t label;
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

/* ---- near-duplicate inputs ---- */

/*
 * A table of input images (and their keys) with answers, searched for an image within a radius
 * of a query: the keys within it are candidates (an exact scan of a few hundred keys, 16 per
 * vector step, through cachecore's kernels: AVX-512, AVX2 or portable as fz_cache_isa() says,
 * the same results on each), the FZ_NEAR_CANDIDATES nearest of them are confirmed on their
 * pixels in order, and the first within the radius answers. `evict`: a put into a full table
 * replaces a slot by CLOCK; without, it fails (the appliance's table of requests in flight,
 * which must not forget one). Slots carry generations, as in the exact table. A slot put
 * without an image (a request that has none) is kept but never found.
 */
struct fz_near;

struct fz_near_stats {
	uint64_t lookups, hits, inserts, evictions, full, clears;
	uint64_t candidates, refuted; /* key-space candidates, and those the pixels ruled out */
};

/* entries slots for keys of dim floats and images of `pixels` bytes. NULL with errno EINVAL
 * (entries 0 or > 2^20, dim outside 1..FZ_FRONT_MAX_DIM, pixels 0) or ENOMEM. */
struct fz_near *fz_near_create(unsigned entries, int dim, size_t pixels, bool evict);
void fz_near_free(struct fz_near *n);
unsigned fz_near_capacity(const struct fz_near *n);
unsigned fz_near_count(const struct fz_near *n);
size_t fz_near_bytes(const struct fz_near *n);
/* The slot whose image is within radius r (rms, fz_front_key_u8 above) of img (key: its key),
 * or -1: the nearest confirmed of the key-space candidates; its CLOCK bit is set, *rms2 (may
 * be NULL) receives its squared rms distance. Counts a lookup (and a hit) when `count`. */
int fz_near_find(struct fz_near *n, const float *key, const uint8_t *img, float r,
		 float *rms2, bool count);
/* Is slot (of generation gen) within radius r of img? (One confirmation, no scan.) */
bool fz_near_within(const struct fz_near *n, int slot, uint32_t gen, const uint8_t *img,
		    float r);
/* Store key and img (NULL: kept, never found) with answer a (may be NULL); *gen receives the
 * slot's generation. Returns the slot, or -ENOSPC (full, no eviction) or -EINVAL (a key with
 * a NaN or infinity). */
int fz_near_put(struct fz_near *n, const float *key, const uint8_t *img,
		const struct fz_front_answer *a, uint32_t *gen);
/* Slot contents (key copied out, key or a may be NULL), when it still holds generation gen
 * (gen UINT32_MAX: any): 0 or -ESTALE. */
int fz_near_get(const struct fz_near *n, int slot, uint32_t gen, float *key,
		struct fz_front_answer *a);
uint32_t fz_near_gen(const struct fz_near *n, int slot); /* its current generation */
int fz_near_remove(struct fz_near *n, int slot, uint32_t gen);
void fz_near_clear(struct fz_near *n);
const struct fz_near_stats *fz_near_stats(const struct fz_near *n);

/* ---- per-flow memory ---- */

/*
 * The last near-table slot (and its generation) that answered each source (IPv4 address, UDP
 * port): `entries` in sets of FZ_FRONT_WAYS, the oldest of a set replaced; an entry older than
 * timeout_ns is not used. The caller confirms the slot against the request (fz_near_within).
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
