/* Freeze cachecore internals: the entry store (16-slot transposed blocks + per-entry seqlocks). */
#ifndef FZ_CACHE_PVT_H
#define FZ_CACHE_PVT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "fz_cache.h"

#define FZ_BLK 16 /* slots per block: one AVX-512 register of distances */
#define FZ_CACHE_LINE 64

/* 16 floats as one vector (GCC/clang extension): one zmm with AVX-512, two ymm with AVX2. */
typedef float fz_v16 __attribute__((vector_size(64), aligned(64)));
typedef float fz_v16u __attribute__((vector_size(64), aligned(4))); /* unaligned loads */

/*
 * Entry store. Slot s lives in block s / 16, lane s % 16; its key element d is at
 * keys[(s / 16) * dim * 16 + d * 16 + s % 16], so one query against a block is 16 lanes of
 * (q[d] - key)^2 per d: a loop the compiler turns into AVX-512 FMAs with no horizontal sums.
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
	float thr;
	bool enabled;

	/* PCA (p.dims > 0): key[j] = sum_i (x[i] - mean[i]) * proj[i * dims + j] */
	float *pca_mean;
	float *pca_proj;
	bool pca_fitted;

	float *keys;            /* n_blocks * dim * 16, 64-byte aligned */
	int32_t *labels;        /* per slot; FZ_CACHE_LABEL_NONE = empty */
	float *frac;            /* per slot: k-means majority fraction (1 for points) */
	_Atomic uint32_t *seq;  /* per slot seqlock */
	_Atomic uint8_t *ref;   /* per slot CLOCK reference bit, set by readers on a hit */
	_Atomic uint32_t *used; /* per slot LRU stamp, stored by readers on a hit */

	/* Shared between the writer and readers: slots that may be live (high-water mark). */
	_Alignas(FZ_CACHE_LINE) _Atomic int n_live;
	/* LRU clock: inserts so far, bumped by the writer, read by readers to stamp hits. */
	_Alignas(FZ_CACHE_LINE) _Atomic uint32_t tick;

	/* Writer-only state. */
	_Alignas(FZ_CACHE_LINE) int n_base; /* calibrated entries filled */
	int n_online;                       /* online slots filled */
	int hand;                           /* CLOCK hand over online slots */
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

/* Squared distances of one query to the 16 slots of one block (out[16]). */
void fz_cache_dist_block(const float *q, const float *blk, int dim, float *out);

/* The same for 4 consecutive queries q[4][dim] (out[4][16]): 4 FMA chains, ~4x the rate. */
void fz_cache_dist_block4(const float *q, const float *blk, int dim, float (*out)[FZ_BLK]);

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
