/* Freeze cachecore lookup: a batch's keys against all entries as one matrix product, the candidates checked exactly under their seqlocks, knn / k-means confidence. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "cache_pvt.h"

#define FZ_GQ 64     /* queries per pass over the entries */
#define FZ_GB 16     /* blocks (of 16 slots) per GEMM: the product a[64][256] is 64 KiB */
#define FZ_GS (FZ_GB * FZ_BLK)
#define FZ_CAND 256  /* most candidates one query takes from one GEMM's entries */
#define FZ_DMIN 1e-6f /* distance floor: an exact match gets a large, finite confidence */

/*
 * The seqlock's data loads: a slot's label and fraction, read while the online writer may be
 * storing them (relaxed atomic stores, online.c fz_cache_write_slot). Relaxed atomic loads:
 * the caller's acquire fence and seq re-check (take, lookup_exact) order them and drop them if
 * a write overlapped. Keys and norms are read the same way inside the kernels (kern.h
 * v_ld_shared).
 */
static inline int32_t label_at(const struct fz_cache *c, int s)
{
	return __atomic_load_n(&c->labels[s], __ATOMIC_RELAXED);
}

static inline float frac_at(const struct fz_cache *c, int s)
{
	uint32_t b = __atomic_load_n((const uint32_t *)&c->frac[s], __ATOMIC_RELAXED);
	float f;
	memcpy(&f, &b, sizeof(f));
	return f;
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
	r->slot = -1;
	if (!t->n)
		return;
	r->slot = t->slot[0];
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
	const struct fz_cache_gate g = fz_cache_gate(c); /* one load: a consistent pair */
	r->hit = g.on && r->conf > g.thr;
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

/* The exact distances of q to one block's slots, computed once per block a query touches. */
struct exact_blk {
	int b;
	float d[FZ_BLK];
};

/*
 * Slot s's exact distance to q, pushed into t, if the slot is whole and unchanged since `snap`
 * (its seq before the GEMM read it). false when it changed: the caller redoes the query.
 */
static bool take(struct fz_cache *c, const struct fz_cache_kern *kn, const float *q, int s,
		 uint32_t snap, int k, struct exact_blk *eb, struct topk *t)
{
	const int D = c->dim, b = s / FZ_BLK;

	if (snap & 1u)
		return false;
	/* Relaxed loads (the kernel's too) of what the online writer may be storing: the seq
	 * re-check below drops them if any write overlapped. */
	if (eb->b != b) {
		kn->dist_blocks(q, c->keys + (size_t)b * D * FZ_BLK, 1, D, eb->d);
		eb->b = b;
	}
	int32_t lab = label_at(c, s);
	float frac = frac_at(c, s);
	/* Acquire fence: orders the loads above before the seq re-load; pairs with the writer's
	 * release fence after it made seq odd. Unchanged since snap (an acquire load before the
	 * GEMM): no write overlapped the GEMM's read or ours. */
	atomic_thread_fence(memory_order_acquire);
	if (atomic_load_explicit(&c->seq[s], memory_order_relaxed) != snap) {
		eb->b = -1; /* another slot of the block may be taken after it settles */
		return false;
	}
	if (lab != FZ_CACHE_LABEL_NONE)
		topk_push(t, k, eb->d[s % FZ_BLK], lab, frac, s);
	return true;
}

/* One query against every live entry, exactly, four blocks at a time, each slot under its
 * seqlock: slots being written are left out (never a torn key). For queries the GEMM path gave
 * up on. */
static void lookup_exact(struct fz_cache *c, const struct fz_cache_kern *kn, const float *q,
			 int live, int k, struct topk *t)
{
	enum { NS = 4 * FZ_BLK };
	uint32_t s1[NS];
	float d[NS], frac[NS];
	int32_t lab[NS];

	t->n = 0;
	for (int s0 = 0; s0 < live; s0 += NS) {
		const int ns = live - s0 < NS ? live - s0 : NS;
		/* Acquire: pairs with the writer's final release store of each slot's seq; an even
		 * value means the key and label read below are that write's, or a later one's,
		 * which the re-check catches. */
		for (int l = 0; l < ns; l++)
			s1[l] = atomic_load_explicit(&c->seq[s0 + l], memory_order_acquire);
		/* Relaxed loads (the kernel's too) of what the online writer may be storing: the
		 * re-check below drops every slot a write overlapped. */
		kn->dist_blocks(q, c->keys + (size_t)s0 * c->dim, (ns + FZ_BLK - 1) / FZ_BLK, c->dim,
				d);
		for (int l = 0; l < ns; l++) {
			lab[l] = label_at(c, s0 + l);
			frac[l] = frac_at(c, s0 + l);
		}
		/* Acquire fence: orders the loads above before the seq re-loads; pairs with the
		 * writer's release fence after it made seq odd. */
		atomic_thread_fence(memory_order_acquire);
		for (int l = 0; l < ns; l++) {
			uint32_t s2 = atomic_load_explicit(&c->seq[s0 + l], memory_order_relaxed);
			if (s1[l] != s2 || (s1[l] & 1u) || lab[l] == FZ_CACHE_LABEL_NONE)
				continue;
			topk_push(t, k, d[l], lab[l], frac[l], s0 + l);
		}
	}
}

/*
 * nq queries against entries [0, live): per GEMM of FZ_GB blocks, a = |c|^2 - 2 Q C^T (kern.h
 * k_gemm), then every entry within the window of the query's k-th smallest a so far is checked
 * exactly (take). redo[q] says the query must be redone exactly: a candidate changed under us,
 * too many candidates, or a non-finite key.
 */
static void lookup_gemm(struct fz_cache *c, const struct fz_cache_kern *kn, const float *q,
			int nq, int live, int k, struct topk *top, bool *redo)
{
	const int D = c->dim;
	_Alignas(FZ_CACHE_LINE) float a[FZ_GQ * FZ_GS];
	float abest[FZ_GQ][FZ_CACHE_MAX_K], win[FZ_GQ], cmax;
	uint32_t snap[FZ_GS];
	int idx[FZ_CAND];

	/* Relaxed (after the acquire load of n_live): the largest norm so far, re-checked below. */
	uint32_t mb = atomic_load_explicit(&c->max_norm2, memory_order_relaxed);
	memcpy(&cmax, &mb, sizeof(cmax));
	for (int i = 0; i < nq; i++) {
		float qn = kn->norm2(q + (size_t)i * D, D);
		top[i].n = 0;
		redo[i] = !isfinite(qn);
		win[i] = fz_cache_window(qn, cmax, D);
		for (int j = 0; j < k; j++)
			abest[i][j] = INFINITY;
	}
	for (int s0 = 0; s0 < live; s0 += FZ_GS) {
		const int ns = live - s0 < FZ_GS ? live - s0 : FZ_GS;

		/* Acquire: pairs with the writer's final release store of each slot's seq; an even
		 * value means the key, norm and label read after it are that write's, or a later
		 * one's, which take() catches by the re-check. */
		for (int j = 0; j < ns; j++)
			snap[j] = atomic_load_explicit(&c->seq[s0 + j], memory_order_acquire);
		/* The next GEMM's keys, in flight while this one computes: the layer group before
		 * the lookup has evicted them, and a GEMM's worth takes ~3 us from DRAM. Only when
		 * this GEMM is long enough to hide the prefetches (at 1 query they cost 1.8 us). */
		const int nn = live - s0 - FZ_GS < FZ_GS ? live - s0 - FZ_GS : FZ_GS;
		for (size_t o = 0; nq >= 16 && nn > 0 &&
				   o < (size_t)(nn + FZ_BLK - 1) / FZ_BLK * FZ_BLK * D;
		     o += FZ_CACHE_LINE / sizeof(float))
			__builtin_prefetch(c->keys + (size_t)(s0 + FZ_GS) * D + o);
		/* Relaxed loads inside the kernel (v_ld_shared) of keys and norms the online writer
		 * may be storing: a torn key gives a wrong estimate, and the slot is either no
		 * candidate (as if absent, like a slot being written) or a candidate whose seq
		 * re-check fails. */
		kn->gemm(q, nq, D, c->keys + (size_t)s0 * D, (ns + FZ_BLK - 1) / FZ_BLK, c->norm2 + s0,
			 a, FZ_GS);
		for (int i = 0; i < nq; i++) {
			const float *ar = a + (size_t)i * FZ_GS;
			struct exact_blk eb = { .b = -1 };
			if (redo[i])
				continue;
			if (k == 1) {
				float m = kn->scan_min(ar, ns);
				abest[i][0] = m < abest[i][0] ? m : abest[i][0];
			} else {
				kn->scan_topk(ar, ns, abest[i], k);
			}
			float lim = abest[i][k - 1] + win[i];
			if (!(lim <= FLT_MAX)) /* fewer than k entries so far: every finite one */
				lim = FLT_MAX;
			int m = kn->scan_le(ar, ns, lim, idx, FZ_CAND);
			redo[i] = m < 0;
			for (int j = 0; j < m && !redo[i]; j++)
				redo[i] = !take(c, kn, q + (size_t)i * D, s0 + idx[j], snap[idx[j]], k, &eb,
						&top[i]);
		}
	}
	/* Relaxed, after the acquire loads of seq above: every entry those loads saw whole has a
	 * norm below this. A larger one written meanwhile may have made the window too narrow. */
	if (atomic_load_explicit(&c->max_norm2, memory_order_relaxed) != mb)
		for (int i = 0; i < nq; i++)
			redo[i] = true;
}

/* Is every element of a key a number? A NaN distance compares false everywhere and fmaxf()
 * drops it, so a k-means confidence frac / fmaxf(NaN, FZ_DMIN) became the largest there is. */
static bool key_finite(const float *key, int D)
{
	uint32_t bad = 0;
	for (int d = 0; d < D; d++) {
		uint32_t b;
		memcpy(&b, &key[d], sizeof(b));
		bad |= (b & 0x7f800000u) == 0x7f800000u; /* exponent all ones: NaN or infinity */
	}
	return !bad;
}

/* The answer to a key that is not all numbers: a miss. */
static void miss(struct fz_cache_result *r)
{
	r->label = FZ_CACHE_LABEL_NONE;
	r->conf = 0.0f;
	r->hit = false;
	r->slot = -1;
}

int fz_cache_lookup_keys(struct fz_cache *c, const float *keys, int n,
			 struct fz_cache_result *res)
{
	const struct fz_cache_kern *kn = fz_cache_kern_get();
	const int D = c->dim;
	const int k = c->p.kind == FZ_CACHE_KNN ? c->p.k : 1;
	struct topk top[FZ_GQ];
	bool redo[FZ_GQ];

	if (!keys || !res || n < 0 || n > FZ_CACHE_MAX_BURST)
		return -EINVAL;
	if (c->p.kind == FZ_CACHE_LEARNED) { /* the key is the predictor's answer */
		const int C = c->n_classes, SD = c->sub ? c->sub->dim : 0;
		float tail[FZ_GQ * FZ_CACHE_MAX_DIM];
		struct fz_cache_result sres[FZ_GQ];
		for (int q0 = 0; q0 < n; q0 += FZ_GQ) {
			const int nq = n - q0 < FZ_GQ ? n - q0 : FZ_GQ;
			if (c->sub) { /* the confirming k-means keys follow logits and guard */
				for (int i = 0; i < nq; i++)
					memcpy(tail + (size_t)i * SD, keys + (size_t)(q0 + i) * D + C + 1,
					       (size_t)SD * sizeof(float));
				int rc = fz_cache_lookup_keys(c->sub, tail, nq, sres);
				if (rc)
					return rc;
			}
			for (int i = 0; i < nq; i++) {
				const float *key = keys + (size_t)(q0 + i) * D;
				if (!key_finite(key, D))
					miss(&res[q0 + i]);
				else
					fz_cache_learned_answer(c, key, c->sub ? &sres[i] : NULL,
								&res[q0 + i]);
			}
		}
		return 0;
	}
	/* Acquire: pairs with the writer's release store of n_live in fz_cache_write_slot, so
	 * every slot below it has been initialised (and its seqlock tells whether it is whole). */
	int live = atomic_load_explicit(&c->n_live, memory_order_acquire);
	/* Relaxed: the writer's insert count is the LRU clock; readers only read it, so lookups
	 * on many cores never write a shared line (a hit stamps its own slot). */
	uint32_t tick = atomic_load_explicit(&c->tick, memory_order_relaxed);

	for (int q0 = 0; q0 < n; q0 += FZ_GQ) {
		const int nq = n - q0 < FZ_GQ ? n - q0 : FZ_GQ;
		const float *q = keys + (size_t)q0 * D;

		lookup_gemm(c, kn, q, nq, live, k, top, redo);
		for (int i = 0; i < nq; i++) {
			if (!key_finite(q + (size_t)i * D, D)) {
				miss(&res[q0 + i]);
				continue;
			}
			if (redo[i])
				lookup_exact(c, kn, q + (size_t)i * D, live, k, &top[i]);
			answer(c, &top[i], k, tick, &res[q0 + i]);
		}
	}
	return 0;
}

int fz_cache_lookup_burst(struct fz_cache *c, const float *act, const struct fz_act_layout *lay,
			  int n, struct fz_cache_result *res)
{
	float keys[FZ_GQ * FZ_CACHE_MAX_DIM];
	int rc;

	if (n < 0 || n > FZ_CACHE_MAX_BURST)
		return -EINVAL;
	for (int q0 = 0; q0 < n; q0 += FZ_GQ) { /* one GEMM's worth of keys at a time */
		int nq = n - q0 < FZ_GQ ? n - q0 : FZ_GQ;
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
