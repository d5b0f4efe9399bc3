/* Freeze cachecore internals: the entry store (16-slot blocks, norms, per-entry seqlocks) and the kernel table. */
#ifndef FZ_CACHE_PVT_H
#define FZ_CACHE_PVT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "fz_cache.h"

#define FZ_BLK 16 /* floats per kernel vector: one zmm with AVX-512, two ymm with AVX2 */
#define FZ_CACHE_LINE 64

/*
 * Entry store. Slot s lives in block s / 16, lane s % 16; its key element d is at
 * keys[(s / 16) * dim * 16 + d * 16 + s % 16]: each block is a dim x 16 panel, the layout a
 * GEMM kernel packs its right-hand matrix into, so the keys of a batch meet all entries as one
 * matrix product with nothing packed per call (kern.h k_gemm). norm2[s] is the key's squared
 * L2 norm (+inf while the slot is empty), the |c|^2 of dist^2 = |q|^2 + |c|^2 - 2 q.c.
 *
 * Slots [0, n_base) hold calibrated entries (never evicted); [base_slots, slots) are online
 * slots. Each slot has a seqlock: odd while the writer rewrites the slot, bumped by 2 per write.
 */
struct fz_cache {
	struct fz_cache_params p;
	int c, h, w;     /* tap shape */
	int n_classes;
	int pooled_dim;  /* c * grid * grid */
	int dim;         /* key dim */
	int base_slots;  /* p.size */
	int slots;       /* base_slots + p.capacity */
	int n_blocks;    /* ceil(slots / 16) */
	/* fz_cache_gate_pack(threshold, on): read by lookups (lookup.c, learned.c) with one
	 * relaxed load, written by fz_cache_set_gate (cache.c); rarely written, so it stays on
	 * the read-mostly line */
	_Atomic uint64_t gate;

	/* PCA (p.dims > 0): key[j] = sum_i (x[i] - mean[i]) * proj[i * dims + j] */
	float *pca_mean;
	float *pca_proj;
	bool pca_fitted;

	/* learned (p.kind == FZ_CACHE_LEARNED): the predictor, rows padded to 16 floats */
	int h_n1, h_n1p, h_cp; /* first layer's outputs (hidden or classes), padded; classes padded */
	float *h_w1t;          /* [pooled][n1p] */
	float *h_b1;           /* [n1p] */
	float *h_w2t;          /* [n1p][cp] (hidden only) */
	float *h_b2;           /* [cp] */
	float *h_mean, *h_isd; /* [pooled] */
	float h_temp, h_r2;    /* temperature, guard radius^2 */
	struct fz_cache *sub;  /* the confirming k-means cache, its key after ours (or NULL) */
	bool head_set;

	float *keys;            /* n_blocks * dim * 16, 64-byte aligned */
	float *norm2;           /* per slot |key|^2; +inf when empty */
	int32_t *labels;        /* per slot; FZ_CACHE_LABEL_NONE = empty */
	float *frac;            /* per slot: k-means majority fraction (1 for points) */
	_Atomic uint32_t *seq;  /* per slot seqlock */
	_Atomic uint8_t *ref;   /* per slot CLOCK reference bit, set by readers on a hit */
	_Atomic uint32_t *used; /* per slot LRU stamp, stored by readers on a hit */

	/* Shared between the writer and readers: slots that may be live (high-water mark). */
	_Alignas(FZ_CACHE_LINE) _Atomic int n_live;
	/* The largest norm2 ever written (float bits; never decreases): bounds the GEMM's
	 * rounding error in lookups. Stored by the writer before the slot's seq turns even. */
	_Atomic uint32_t max_norm2;
	/* LRU clock: inserts so far, bumped by the writer, read by readers to stamp hits. */
	_Alignas(FZ_CACHE_LINE) _Atomic uint32_t tick;

	/* Writer-only state. */
	_Alignas(FZ_CACHE_LINE) int n_base; /* calibrated entries filled */
	int n_online;                       /* online slots filled */
	int hand;                           /* CLOCK hand over online slots */
	uint64_t evictions;                 /* online entries replaced (writer only) */
};

/* Lines written by one side and read by the other sit apart (rte_ring_core.h style). */
_Static_assert(offsetof(struct fz_cache, n_live) % FZ_CACHE_LINE == 0, "n_live line");
_Static_assert(offsetof(struct fz_cache, tick) - offsetof(struct fz_cache, n_live) >= FZ_CACHE_LINE,
	       "tick shares n_live's line");
_Static_assert(offsetof(struct fz_cache, n_base) - offsetof(struct fz_cache, tick) >= FZ_CACHE_LINE,
	       "writer state shares tick's line");

static inline float *fz_cache_key_at(float *keys, int dim, int slot, int d)
{
	return &keys[(size_t)(slot / FZ_BLK) * (size_t)dim * FZ_BLK + (size_t)d * FZ_BLK +
		     (size_t)(slot % FZ_BLK)];
}

/*
 * The hand-written SIMD kernels, one table per ISA level (kern.h compiled by kern_portable.c,
 * kern_avx2.c, kern_avx512.c), chosen once at run time (cpu.c). All three run the same source
 * with the same operation order and no FMA contraction (meson.build: -ffp-contract=off), so
 * every level gives bit-identical keys and distances; only speed differs (the GEMM's estimates
 * differ, but answers never come from them).
 */
struct fz_cache_kern {
	const char *name;
	/* grid average pooling of n samples (layout already checked) into out[n][pooled_dim] */
	void (*pool)(const struct fz_cache *c, const float *act, const struct fz_act_layout *lay,
		     int n, float *out);
	/* pooled[n][pooled_dim] -> keys[n][dim]: PCA projection (when fitted), L2 norm (when set) */
	void (*project)(const struct fz_cache *c, const float *pooled, int n, float *keys);
	/* The GEMM: a[i * lda + s] = cn[s] - 2 q_i . key_s for nq queries q[nq][dim] and the
	 * 16 * nb slots of nb blocks. Estimates (FMA where the ISA has it, any rounding within
	 * lookup.c's window): candidates are taken from them, answers never. blk and cn may be
	 * under the online writer's stores: read with relaxed loads only (kern.h v_ld_shared). */
	void (*gemm)(const float *q, int nq, int dim, const float *blk, int nb, const float *cn,
		     float *a, int lda);
	/* Exact squared distances of q to the slots of nb blocks (out[16 * nb]): per slot the sum
	 * over d ascending of (q[d] - key[d])^2, each operation rounded. What answers use. blk:
	 * read with relaxed loads only, as for gemm. */
	void (*dist_blocks)(const float *q, const float *blk, int nb, int dim, float *out);
	/* |r|^2 of a contiguous key */
	float (*norm2)(const float *r, int dim);
	/* min of a[0..n) (+inf when none is smaller) */
	float (*scan_min)(const float *a, int n);
	/* j < n with a[j] <= lim into idx (ascending): their count, or -1 past max */
	int (*scan_le)(const float *a, int n, float lim, int *idx, int max);
	/* the k smallest of a[0..n) merged into best[0..k) (ascending, +inf padded) */
	void (*scan_topk)(const float *a, int n, float *best, int k);
};

extern const struct fz_cache_kern fz_cache_kern_portable;
#if defined(__x86_64__)
extern const struct fz_cache_kern fz_cache_kern_avx2;
extern const struct fz_cache_kern fz_cache_kern_avx512;
#endif

/* The kernel table in use: chosen on first use (CPU, FZ_CPU_ISA, ONEDNN_MAX_CPU_ISA). */
const struct fz_cache_kern *fz_cache_kern_get(void);

/* Does fz_crc32c use the SSE4.2 crc32 instruction (the CPU has it, the ISA is not capped to
 * portable)? Chosen with the kernels. */
bool fz_cache_crc32_hw(void);

/*
 * Rounding bound of the GEMM's estimates. For query q and entry c the GEMM ranks by
 * a = |c|^2 - 2 q.c, which is |q - c|^2 - |q|^2 up to at most gamma_{D+1} (|q| + |c|)^2
 * (gamma_n = n u / (1 - n u), u = 2^-24: a D-term dot product in any order, with or without
 * FMA, the norm and the final subtraction); the exact distance (kern.h k_dist_blocks) is within
 * gamma_{D+3} |q - c|^2 <= gamma_{D+3} (|q| + |c|)^2 of the true one. So an entry among the
 * exact k nearest has an a at most 4 gamma_{D+3} M above the k-th smallest a, with
 * M = (|q| + max |c|)^2. Lookups and builds check every entry within twice that (qn = |q|^2,
 * cmax = max |c|^2) exactly, so the answer is the exact one: the same entries, distances and
 * confidences as an exact scan, at any batch size and on any ISA (whose estimates differ).
 */
static inline float fz_cache_window(float qn, float cmax, int dim)
{
	double m = __builtin_sqrt((double)qn) + __builtin_sqrt((double)cmax);

	return (float)(8.0 * (dim + 3) * 0x1p-24 * m * m * (1.0 + 1e-3)) + 1e-30f;
}

/* A learned cache's answer from its key (logits, guard): learned.c. */
void fz_cache_learned_answer(const struct fz_cache *c, const float *key,
			     const struct fz_cache_result *confirm, struct fz_cache_result *r);

/* Write slot s whole under its seqlock (writer only). */
void fz_cache_write_slot(struct fz_cache *c, int s, const float *key, int label, float frac);

/* Allocate zeroed memory aligned to a cache line (free with free()). */
void *fz_cache_zalloc(size_t bytes);

/* Deterministic PRNG (splitmix64) for builds. */
static inline uint64_t fz_cache_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

#endif /* FZ_CACHE_PVT_H */
