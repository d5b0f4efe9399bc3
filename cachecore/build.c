/* Freeze cachecore build: calibrated entries from keys (knn point selection, k-means centroids). */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cache_pvt.h"

#define KMEANS_ITERS 30

static void clear_base(struct fz_cache *c)
{
	float zero[FZ_CACHE_MAX_DIM] = { 0 };

	for (int s = 0; s < c->base_slots; s++)
		if (c->labels[s] != FZ_CACHE_LABEL_NONE)
			fz_cache_write_slot(c, s, zero, FZ_CACHE_LABEL_NONE, 0.0f);
	c->n_base = 0;
}

/* knn: all points, or a class-stratified, evenly spaced subset of `size` of them. */
static int build_knn(struct fz_cache *c, const float *keys, const int *labels, size_t n)
{
	size_t cnt[FZ_CACHE_MAX_CLASSES] = { 0 }, quota[FZ_CACHE_MAX_CLASSES] = { 0 };
	size_t seen[FZ_CACHE_MAX_CLASSES] = { 0 }, taken[FZ_CACHE_MAX_CLASSES] = { 0 };
	size_t size = (size_t)c->base_slots, total = 0;

	for (size_t i = 0; i < n; i++)
		cnt[labels[i]]++;
	for (int l = 0; l < c->n_classes; l++) {
		quota[l] = n <= size ? cnt[l] : cnt[l] * size / n;
		total += quota[l];
	}
	/* hand the rounding remainder to the largest classes with points left */
	while (total < size && total < n) {
		int best = -1;
		for (int l = 0; l < c->n_classes; l++)
			if (quota[l] < cnt[l] && (best < 0 || cnt[l] - quota[l] > cnt[best] - quota[best]))
				best = l;
		if (best < 0)
			break;
		quota[best]++;
		total++;
	}
	int s = 0;
	for (size_t i = 0; i < n && s < c->base_slots; i++) {
		int l = labels[i];
		/* take the point when the even spread of quota[l] over cnt[l] reaches it */
		if (taken[l] < quota[l] && (seen[l] * quota[l]) / cnt[l] >= taken[l]) {
			fz_cache_write_slot(c, s++, keys + i * (size_t)c->dim, l, 1.0f);
			taken[l]++;
		}
		seen[l]++;
	}
	c->n_base = s;
	return 0;
}

/* Centroids (k x dim, row-major) -> 16-slot blocks (the entry store's layout) and their norms;
 * lanes past k get norm +inf so they never become candidates. */
static void to_blocks(const float *cent, int k, int dim, float *blk, float *cn)
{
	const struct fz_cache_kern *kn = fz_cache_kern_get();
	int nb = (k + FZ_BLK - 1) / FZ_BLK;

	for (int b = 0; b < nb; b++)
		for (int d = 0; d < dim; d++)
			for (int l = 0; l < FZ_BLK; l++) {
				int j = b * FZ_BLK + l;
				blk[((size_t)b * dim + d) * FZ_BLK + l] = j < k ? cent[(size_t)j * dim + d]
									      : 0.0f;
			}
	for (int j = 0; j < nb * FZ_BLK; j++)
		cn[j] = j < k ? kn->norm2(cent + (size_t)j * dim, dim) : INFINITY;
}

#define NR_GQ 64  /* points per pass */
#define NR_GB 16  /* blocks per GEMM */
#define NR_CAND 256

/*
 * Nearest centroid of each of n points (assign[i]), as a lookup finds it: the GEMM's estimates
 * (kern.h k_gemm), then every centroid within the rounding window (fz_cache_window) checked
 * exactly (k_dist_blocks): the assignment is the exact one on every ISA. Ties go to the first.
 */
static void assign_all(const float *keys, size_t n, int D, const float *blk, const float *cn,
		       int k, int *assign)
{
	const struct fz_cache_kern *kn = fz_cache_kern_get();
	_Alignas(FZ_CACHE_LINE) float a[NR_GQ * NR_GB * FZ_BLK];
	float ex[FZ_BLK];
	int idx[NR_CAND];
	float cmax = 0.0f;

	for (int j = 0; j < k; j++)
		cmax = cn[j] > cmax ? cn[j] : cmax;
	for (size_t q0 = 0; q0 < n; q0 += NR_GQ) {
		const int nq = n - q0 < NR_GQ ? (int)(n - q0) : NR_GQ;
		const float *qb = keys + q0 * D;
		float amin[NR_GQ], win[NR_GQ], best[NR_GQ];
		int bi[NR_GQ];
		bool redo[NR_GQ];

		for (int i = 0; i < nq; i++) {
			float qn = kn->norm2(qb + (size_t)i * D, D);
			win[i] = fz_cache_window(qn, cmax, D);
			redo[i] = !isfinite(qn);
			amin[i] = best[i] = INFINITY;
			bi[i] = 0;
		}
		for (int s0 = 0; s0 < k; s0 += NR_GB * FZ_BLK) {
			const int ns = k - s0 < NR_GB * FZ_BLK ? k - s0 : NR_GB * FZ_BLK;
			kn->gemm(qb, nq, D, blk + (size_t)s0 * D, (ns + FZ_BLK - 1) / FZ_BLK, cn + s0, a,
				 NR_GB * FZ_BLK);
			for (int i = 0; i < nq; i++) {
				const float *ar = a + (size_t)i * NR_GB * FZ_BLK;
				int eb = -1;
				if (redo[i])
					continue;
				float m = kn->scan_min(ar, ns);
				amin[i] = m < amin[i] ? m : amin[i];
				float lim = amin[i] + win[i];
				int cnt = kn->scan_le(ar, ns, lim <= FLT_MAX ? lim : FLT_MAX, idx, NR_CAND);
				redo[i] = cnt < 0;
				for (int j = 0; j < cnt; j++) {
					int r = s0 + idx[j];
					if (r / FZ_BLK != eb) {
						eb = r / FZ_BLK;
						kn->dist_blocks(qb + (size_t)i * D, blk + (size_t)eb * D * FZ_BLK,
								1, D, ex);
					}
					if (ex[r % FZ_BLK] < best[i]) { /* ascending: ties go to the first */
						best[i] = ex[r % FZ_BLK];
						bi[i] = r;
					}
				}
			}
		}
		for (int i = 0; i < nq; i++) {
			if (redo[i]) { /* exactly, block by block */
				best[i] = INFINITY;
				bi[i] = 0;
				for (int b = 0; b * FZ_BLK < k; b++) {
					kn->dist_blocks(qb + (size_t)i * D, blk + (size_t)b * D * FZ_BLK, 1, D,
							ex);
					for (int l = 0; l < FZ_BLK && b * FZ_BLK + l < k; l++)
						if (ex[l] < best[i]) {
							best[i] = ex[l];
							bi[i] = b * FZ_BLK + l;
						}
				}
			}
			assign[q0 + i] = bi[i];
		}
	}
}

static float dist2(const float *a, const float *b, int dim)
{
	float s = 0.0f;

	for (int d = 0; d < dim; d++) {
		float t = a[d] - b[d];
		s += t * t;
	}
	return s;
}

static int build_kmeans(struct fz_cache *c, const float *keys, const int *labels, size_t n,
			uint64_t seed)
{
	const int D = c->dim;
	int k = c->base_slots < (int)n ? c->base_slots : (int)n;
	int nb = (k + FZ_BLK - 1) / FZ_BLK;
	float *cent = malloc((size_t)k * D * sizeof(float));
	float *blk = fz_cache_zalloc((size_t)nb * D * FZ_BLK * sizeof(float));
	float *cn = fz_cache_zalloc((size_t)nb * FZ_BLK * sizeof(float));
	double *sum = malloc((size_t)k * D * sizeof(double));
	float *mind = malloc(n * sizeof(float));
	int *assign = malloc(n * sizeof(int)), *prev = malloc(n * sizeof(int));
	size_t *count = malloc((size_t)k * sizeof(size_t));
	size_t *votes = calloc((size_t)k * c->n_classes, sizeof(size_t));
	uint64_t rs = seed ? seed : 1;
	int rc = -ENOMEM;

	if (!cent || !blk || !cn || !sum || !mind || !assign || !prev || !count || !votes)
		goto out;

	/* k-means++ seeding: each next centre drawn with probability ~ squared distance */
	size_t first = fz_cache_rand(&rs) % n;
	memcpy(cent, keys + first * D, (size_t)D * sizeof(float));
	for (size_t i = 0; i < n; i++)
		mind[i] = dist2(keys + i * D, cent, D);
	for (int j = 1; j < k; j++) {
		double tot = 0.0;
		for (size_t i = 0; i < n; i++)
			tot += mind[i];
		double r = (double)(fz_cache_rand(&rs) >> 11) / 9007199254740992.0 * tot;
		size_t pick = n - 1;
		for (size_t i = 0; i < n; i++) {
			r -= mind[i];
			if (r <= 0.0) {
				pick = i;
				break;
			}
		}
		float *cj = cent + (size_t)j * D;
		memcpy(cj, keys + pick * D, (size_t)D * sizeof(float));
		for (size_t i = 0; i < n; i++) {
			float d = dist2(keys + i * D, cj, D);
			if (d < mind[i])
				mind[i] = d;
		}
	}

	/* Lloyd iterations; the assignment is a lookup's (GEMM, then the candidates exactly) */
	for (size_t i = 0; i < n; i++)
		assign[i] = -1;
	for (int it = 0; it < KMEANS_ITERS; it++) {
		size_t changed = 0;
		to_blocks(cent, k, D, blk, cn);
		memset(sum, 0, (size_t)k * D * sizeof(double));
		memset(count, 0, (size_t)k * sizeof(size_t));
		memcpy(prev, assign, n * sizeof(int));
		assign_all(keys, n, D, blk, cn, k, assign);
		for (size_t i = 0; i < n; i++) {
			const float *x = keys + i * D;
			int bi = assign[i];
			changed += prev[i] != bi;
			count[bi]++;
			for (int d = 0; d < D; d++)
				sum[(size_t)bi * D + d] += x[d];
		}
		for (int j = 0; j < k; j++) {
			if (count[j]) {
				for (int d = 0; d < D; d++)
					cent[(size_t)j * D + d] = (float)(sum[(size_t)j * D + d] / count[j]);
			} else { /* empty cluster: restart it on a random point */
				size_t p = fz_cache_rand(&rs) % n;
				memcpy(cent + (size_t)j * D, keys + p * D, (size_t)D * sizeof(float));
				changed++;
			}
		}
		if (changed <= n / 2000)
			break;
	}
	/* final assignment against the final centroids, then majority labels */
	to_blocks(cent, k, D, blk, cn);
	assign_all(keys, n, D, blk, cn, k, assign);
	for (size_t i = 0; i < n; i++)
		votes[(size_t)assign[i] * c->n_classes + labels[i]]++;
	int s = 0;
	for (int j = 0; j < k; j++) {
		size_t tot = 0, bestv = 0;
		int lab = 0;
		for (int l = 0; l < c->n_classes; l++) {
			size_t v = votes[(size_t)j * c->n_classes + l];
			tot += v;
			if (v > bestv) {
				bestv = v;
				lab = l;
			}
		}
		if (!tot)
			continue; /* a centroid nobody chose carries no label */
		fz_cache_write_slot(c, s++, cent + (size_t)j * D, lab, (float)bestv / (float)tot);
	}
	c->n_base = s;
	rc = 0;
out:
	free(cent), free(blk), free(cn), free(sum), free(mind), free(assign), free(prev);
	free(count), free(votes);
	return rc;
}

int fz_cache_build(struct fz_cache *c, const float *keys, const int *labels, size_t n,
		   uint64_t seed)
{
	if (!keys || !labels || !n)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		if (labels[i] < 0 || labels[i] >= c->n_classes)
			return -EINVAL;
	if (c->p.kind == FZ_CACHE_LEARNED) { /* a predictor, installed with fz_cache_set_head */
		if (!c->sub)
			return 0;
		/* the confirmer's keys follow logits and guard */
		const size_t SD = (size_t)c->sub->dim, off = (size_t)c->n_classes + 1;
		float *tail = malloc(n * SD * sizeof(float));
		if (!tail)
			return -ENOMEM;
		for (size_t i = 0; i < n; i++)
			memcpy(tail + i * SD, keys + i * (size_t)c->dim + off, SD * sizeof(float));
		int rc = fz_cache_build(c->sub, tail, labels, n, seed);
		free(tail);
		return rc;
	}
	clear_base(c);
	if (c->p.kind == FZ_CACHE_KNN)
		return build_knn(c, keys, labels, n);
	return build_kmeans(c, keys, labels, n, seed);
}
