/* Freeze cachecore lookup: blocked distances, knn / k-means confidence, seqlock-checked reads. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "cache_pvt.h"

#define FZ_QCHUNK 32   /* queries per pass over the entry store (distances kept on the stack) */
#define FZ_DMIN 1e-6f  /* distance floor: an exact match gets a large, finite confidence */

void fz_cache_dist_block(const float *restrict q, const float *restrict blk, int dim,
			 float *restrict out)
{
	/* One 16-lane vector per d: sub + fma, no horizontal sum (~dim cycles per block with
	 * AVX-512). GCC's vector type keeps the loop lane-parallel; left to itself, -O3
	 * vectorised over d instead with permutes (10x slower, perf/bench_cache).
	 * The loads are plain and may race with the online writer: lookups re-check each slot's
	 * seqlock afterwards and drop any slot that changed, so a torn key is never used. */
	fz_v16 acc = { 0 };

	for (int d = 0; d < dim; d++) {
		fz_v16 t = q[d] - *(const fz_v16 *)(blk + (size_t)d * FZ_BLK);
		acc += t * t;
	}
	memcpy(out, &acc, sizeof(acc));
}

/* Four queries against one block: four independent FMA chains hide the FMA latency that
 * bounds the one-query kernel (~4 cycles per d). q points at 4 consecutive keys. */
void fz_cache_dist_block4(const float *restrict q, const float *restrict blk, int dim,
			float (*restrict out)[FZ_BLK])
{
	fz_v16 a0 = { 0 }, a1 = { 0 }, a2 = { 0 }, a3 = { 0 };
	const float *q1 = q + dim, *q2 = q + 2 * dim, *q3 = q + 3 * dim;

	for (int d = 0; d < dim; d++) {
		fz_v16 r = *(const fz_v16 *)(blk + (size_t)d * FZ_BLK);
		fz_v16 t0 = q[d] - r, t1 = q1[d] - r, t2 = q2[d] - r, t3 = q3[d] - r;
		a0 += t0 * t0;
		a1 += t1 * t1;
		a2 += t2 * t2;
		a3 += t3 * t3;
	}
	memcpy(out[0], &a0, sizeof(a0));
	memcpy(out[1], &a1, sizeof(a1));
	memcpy(out[2], &a2, sizeof(a2));
	memcpy(out[3], &a3, sizeof(a3));
}

/* Sorted (ascending) top-k of one query: distances and labels. */
struct topk {
	float d[FZ_CACHE_MAX_K];
	int32_t lab[FZ_CACHE_MAX_K];
	float frac[FZ_CACHE_MAX_K];
	int slot[FZ_CACHE_MAX_K];
	int n;
};

static inline void topk_push(struct topk *t, int k, float d, int32_t lab, float frac, int slot)
{
	if (t->n == k && d >= t->d[k - 1])
		return;
	int i = t->n < k ? t->n++ : k - 1;
	while (i > 0 && t->d[i - 1] > d) {
		t->d[i] = t->d[i - 1];
		t->lab[i] = t->lab[i - 1];
		t->frac[i] = t->frac[i - 1];
		t->slot[i] = t->slot[i - 1];
		i--;
	}
	t->d[i] = d;
	t->lab[i] = lab;
	t->frac[i] = frac;
	t->slot[i] = slot;
}

static void answer(struct fz_cache *c, const struct topk *t, int k, uint32_t tick,
		   struct fz_cache_result *r)
{
	r->label = FZ_CACHE_LABEL_NONE;
	r->conf = 0.0f;
	r->hit = false;
	if (!t->n)
		return;
	if (c->p.kind == FZ_CACHE_KMEANS) {
		r->label = t->lab[0];
		r->conf = t->frac[0] / fmaxf(sqrtf(t->d[0]), FZ_DMIN);
	} else {
		/* C_i = (m_i / k) * sum_j 1/d_j over the neighbours carrying label i */
		float best = -1.0f;
		for (int i = 0; i < t->n; i++) {
			int lab = t->lab[i], m = 0;
			float inv = 0.0f;
			bool seen = false;
			for (int j = 0; j < i; j++)
				seen |= t->lab[j] == lab;
			if (seen)
				continue;
			for (int j = i; j < t->n; j++)
				if (t->lab[j] == lab) {
					m++;
					inv += 1.0f / fmaxf(sqrtf(t->d[j]), FZ_DMIN);
				}
			float ci = (float)m / (float)k * inv;
			if (ci > best) {
				best = ci;
				r->label = lab;
			}
		}
		r->conf = best;
	}
	r->hit = c->enabled && r->conf > c->thr;
	if (r->hit && t->slot[0] >= c->base_slots) {
		/* Recency for eviction. Relaxed: a hint the writer reads without ordering; skip the
		 * store when already set so hot entries do not bounce their line between cores. */
		int s = t->slot[0];
		if (!atomic_load_explicit(&c->ref[s], memory_order_relaxed))
			atomic_store_explicit(&c->ref[s], 1, memory_order_relaxed);
		if (atomic_load_explicit(&c->used[s], memory_order_relaxed) != tick)
			atomic_store_explicit(&c->used[s], tick, memory_order_relaxed);
	}
}

/* k = 1 (k-means, 1-nn): per query a running minimum per lane, merged with masked blends. */
struct lane_min {
	float d[FZ_BLK];
	int32_t slot[FZ_BLK], lab[FZ_BLK];
	float frac[FZ_BLK];
};

int fz_cache_lookup_keys(struct fz_cache *c, const float *keys, int n,
			 struct fz_cache_result *res)
{
	const int D = c->dim;
	const int k = c->p.kind == FZ_CACHE_KNN ? c->p.k : 1;
	struct topk top[FZ_QCHUNK];
	struct lane_min lm[FZ_QCHUNK];
	float dist[FZ_QCHUNK][FZ_BLK];
	uint32_t s1[FZ_BLK];

	if (!keys || !res || n < 0 || n > FZ_CACHE_MAX_BURST)
		return -EINVAL;
	/* Acquire: pairs with the writer's release store of n_live in fz_cache_write_slot, so
	 * every slot below it has been initialised (and its seqlock tells whether it is whole). */
	int live = atomic_load_explicit(&c->n_live, memory_order_acquire);
	int nb = (live + FZ_BLK - 1) / FZ_BLK;
	/* Relaxed: the writer's insert count is the LRU clock; readers only read it, so lookups
	 * on many cores never write a shared line (a hit stamps its own slot). */
	uint32_t tick = atomic_load_explicit(&c->tick, memory_order_relaxed);

	for (int q0 = 0; q0 < n; q0 += FZ_QCHUNK) {
		int nq = n - q0 < FZ_QCHUNK ? n - q0 : FZ_QCHUNK;

		for (int q = 0; q < nq; q++) {
			top[q].n = 0;
			for (int l = 0; l < FZ_BLK; l++) {
				lm[q].d[l] = INFINITY;
				lm[q].slot[l] = -1;
			}
		}
		for (int b = 0; b < nb; b++) {
			const float *blk = c->keys + (size_t)b * D * FZ_BLK;
			int base = b * FZ_BLK;
			int32_t lab[FZ_BLK];
			float frac[FZ_BLK], pen[FZ_BLK];

			/* Acquire: pairs with the writer's final release store of the slot's seq;
			 * an even value means the key/label read below are that write's (or a
			 * later one, caught by the re-check). */
			for (int l = 0; l < FZ_BLK; l++)
				s1[l] = atomic_load_explicit(&c->seq[base + l], memory_order_acquire);
			int q = 0;
			for (; q + 4 <= nq; q += 4)
				fz_cache_dist_block4(keys + (size_t)(q0 + q) * D, blk, D, &dist[q]);
			for (; q < nq; q++)
				fz_cache_dist_block(keys + (size_t)(q0 + q) * D, blk, D, dist[q]);
			memcpy(lab, c->labels + base, sizeof(lab));
			memcpy(frac, c->frac + base, sizeof(frac));
			/* Acquire fence: orders the key/label loads above before the seq re-loads
			 * below; pairs with the writer's release fence after it made seq odd. If seq is
			 * unchanged and even, no write overlapped our reads: the entry is whole. */
			atomic_thread_fence(memory_order_acquire);
			for (int l = 0; l < FZ_BLK; l++) {
				uint32_t s2 = atomic_load_explicit(&c->seq[base + l],
								   memory_order_relaxed);
				bool bad = s1[l] != s2 || (s1[l] & 1u) || base + l >= live ||
					   lab[l] == FZ_CACHE_LABEL_NONE;
				pen[l] = bad ? INFINITY : 0.0f; /* torn or empty: never the nearest */
			}
			if (k == 1) {
				for (int q = 0; q < nq; q++) {
					struct lane_min *m = &lm[q];
					for (int l = 0; l < FZ_BLK; l++) { /* masked blends */
						float d = dist[q][l] + pen[l];
						bool lt = d < m->d[l];
						m->d[l] = lt ? d : m->d[l];
						m->slot[l] = lt ? base + l : m->slot[l];
						m->lab[l] = lt ? lab[l] : m->lab[l];
						m->frac[l] = lt ? frac[l] : m->frac[l];
					}
				}
				continue;
			}
			for (int q = 0; q < nq; q++) {
				float kth = top[q].n == k ? top[q].d[k - 1] : INFINITY;
				for (int l = 0; l < FZ_BLK; l++) {
					float d = dist[q][l] + pen[l];
					if (d < kth) {
						topk_push(&top[q], k, d, lab[l], frac[l], base + l);
						kth = top[q].n == k ? top[q].d[k - 1] : INFINITY;
					}
				}
			}
		}
		for (int q = 0; q < nq; q++) {
			if (k == 1) {
				const struct lane_min *m = &lm[q];
				int best = 0;
				for (int l = 1; l < FZ_BLK; l++)
					if (m->d[l] < m->d[best])
						best = l;
				if (m->slot[best] >= 0)
					topk_push(&top[q], 1, m->d[best], m->lab[best], m->frac[best],
						  m->slot[best]);
			}
			answer(c, &top[q], k, tick, &res[q0 + q]);
		}
	}
	return 0;
}

int fz_cache_lookup_burst(struct fz_cache *c, const float *act, const struct fz_act_layout *lay,
			  int n, struct fz_cache_result *res)
{
	float keys[FZ_QCHUNK * FZ_CACHE_MAX_DIM];
	int rc;

	if (n < 0 || n > FZ_CACHE_MAX_BURST)
		return -EINVAL;
	for (int q0 = 0; q0 < n; q0 += FZ_QCHUNK) {
		int nq = n - q0 < FZ_QCHUNK ? n - q0 : FZ_QCHUNK;
		rc = fz_cache_key_burst(c, act + (size_t)q0 * lay->sample_stride, lay, nq, keys);
		if (!rc)
			rc = fz_cache_lookup_keys(c, keys, nq, res + q0);
		if (rc)
			return rc;
	}
	return 0;
}

int fz_cache_read_entry(const struct fz_cache *c, int slot, float *key, int *label)
{
	if (slot < 0 || slot >= c->slots || !key || !label)
		return -EINVAL;
	_Atomic uint32_t *seq = &c->seq[slot];
	/* Acquire: pairs with the writer's final release store of seq (write complete). */
	uint32_t s1 = atomic_load_explicit(seq, memory_order_acquire);
	if (s1 & 1u)
		return -EAGAIN;
	for (int d = 0; d < c->dim; d++) {
		/* Relaxed atomic loads: the writer may be rewriting the slot right now. */
		uint32_t bits = __atomic_load_n(
			(uint32_t *)fz_cache_key_at(c->keys, c->dim, slot, d), __ATOMIC_RELAXED);
		memcpy(&key[d], &bits, sizeof(bits));
	}
	int lab = __atomic_load_n(&c->labels[slot], __ATOMIC_RELAXED);
	/* Acquire fence: the loads above happen before the re-load below; pairs with the
	 * writer's release fence after making seq odd. */
	atomic_thread_fence(memory_order_acquire);
	if (atomic_load_explicit(seq, memory_order_relaxed) != s1)
		return -EAGAIN;
	if (lab == FZ_CACHE_LABEL_NONE)
		return -ENOENT;
	*label = lab;
	return 0;
}
