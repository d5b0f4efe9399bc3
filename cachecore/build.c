/* Freeze cachecore build: calibrated entries from keys (knn point selection, k-means centroids). */
#include <errno.h>
#include <float.h>
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

/* Centroids (k x dim, row-major) -> transposed 16-blocks for fz_cache_dist_block. */
static void to_blocks(const float *cent, int k, int dim, float *blk)
{
	int nb = (k + FZ_BLK - 1) / FZ_BLK;

	for (int b = 0; b < nb; b++)
		for (int d = 0; d < dim; d++)
			for (int l = 0; l < FZ_BLK; l++) {
				int j = b * FZ_BLK + l;
				/* padding lanes sit far away so they never win */
				blk[((size_t)b * dim + d) * FZ_BLK + l] = j < k ? cent[(size_t)j * dim + d]
									      : 1e15f;
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

/* Nearest centroid (blocked, 4 points at a time) of each of n points into assign[i]. */
static void assign_all(const float *keys, size_t n, int D, const float *blk, int nb, int *assign)
{
	size_t i = 0;

	for (; i + 4 <= n; i += 4) {
		float best[4] = { FLT_MAX, FLT_MAX, FLT_MAX, FLT_MAX }, dd[4][FZ_BLK];
		int bi[4] = { 0 };
		for (int b = 0; b < nb; b++) {
			fz_cache_dist_block4(keys + i * D, blk + (size_t)b * D * FZ_BLK, D, dd);
			for (int q = 0; q < 4; q++)
				for (int l = 0; l < FZ_BLK; l++)
					if (dd[q][l] < best[q]) {
						best[q] = dd[q][l];
						bi[q] = b * FZ_BLK + l;
					}
		}
		for (int q = 0; q < 4; q++)
			assign[i + q] = bi[q];
	}
	for (; i < n; i++) {
		float best = FLT_MAX, dd[FZ_BLK];
		int bi = 0;
		for (int b = 0; b < nb; b++) {
			fz_cache_dist_block(keys + i * D, blk + (size_t)b * D * FZ_BLK, D, dd);
			for (int l = 0; l < FZ_BLK; l++)
				if (dd[l] < best) {
					best = dd[l];
					bi = b * FZ_BLK + l;
				}
		}
		assign[i] = bi;
	}
}

static int build_kmeans(struct fz_cache *c, const float *keys, const int *labels, size_t n,
			uint64_t seed)
{
	const int D = c->dim;
	int k = c->base_slots < (int)n ? c->base_slots : (int)n;
	int nb = (k + FZ_BLK - 1) / FZ_BLK;
	float *cent = malloc((size_t)k * D * sizeof(float));
	float *blk = fz_cache_zalloc((size_t)nb * D * FZ_BLK * sizeof(float)); /* vector loads */
	double *sum = malloc((size_t)k * D * sizeof(double));
	float *mind = malloc(n * sizeof(float));
	int *assign = malloc(n * sizeof(int)), *prev = malloc(n * sizeof(int));
	size_t *count = malloc((size_t)k * sizeof(size_t));
	size_t *votes = calloc((size_t)k * c->n_classes, sizeof(size_t));
	uint64_t rs = seed ? seed : 1;
	int rc = -ENOMEM;

	if (!cent || !blk || !sum || !mind || !assign || !prev || !count || !votes)
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

	/* Lloyd iterations with the lookup's blocked distance kernel */
	for (size_t i = 0; i < n; i++)
		assign[i] = -1;
	for (int it = 0; it < KMEANS_ITERS; it++) {
		size_t changed = 0;
		to_blocks(cent, k, D, blk);
		memset(sum, 0, (size_t)k * D * sizeof(double));
		memset(count, 0, (size_t)k * sizeof(size_t));
		memcpy(prev, assign, n * sizeof(int));
		assign_all(keys, n, D, blk, nb, assign);
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
	to_blocks(cent, k, D, blk);
	assign_all(keys, n, D, blk, nb, assign);
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
	free(cent), free(blk), free(sum), free(mind), free(assign), free(prev), free(count), free(votes);
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
	clear_base(c);
	if (c->p.kind == FZ_CACHE_KNN)
		return build_knn(c, keys, labels, n);
	return build_kmeans(c, keys, labels, n, seed);
}
