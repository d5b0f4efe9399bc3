/* Freeze cachecore keys: grid average pooling of a tap, PCA projection (and its fit), L2 norm. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_pvt.h"

/*
 * Sum of one pooling cell [y0, y1) x [x0, x1) over a channel block of CB lanes (CB a constant:
 * one vector per pixel); four chains hide the add latency (~4x, perf/bench_cache).
 */
static inline __attribute__((always_inline)) void cell_sum_blk(const float *blk,
							     const struct fz_act_layout *l,
							     int y0, int y1, int x0, int x1,
							     float *acc, const int CB)
{
	typedef float v16u __attribute__((vector_size(64), aligned(4)));
	typedef float v8u __attribute__((vector_size(32), aligned(4)));
	const size_t ws = l->w_stride; /* CB channels are contiguous at every pixel */
	if (CB == 16) {
		v16u a0 = { 0 }, a1 = { 0 }, a2 = { 0 }, a3 = { 0 };
		for (int y = y0; y < y1; y++) {
			const float *row = blk + (size_t)y * l->h_stride;
			int xx = x0;
			for (; xx + 4 <= x1; xx += 4) {
				const float *p = row + (size_t)xx * ws;
				a0 += *(const v16u *)p;
				a1 += *(const v16u *)(p + ws);
				a2 += *(const v16u *)(p + 2 * ws);
				a3 += *(const v16u *)(p + 3 * ws);
			}
			for (; xx < x1; xx++)
				a0 += *(const v16u *)(row + (size_t)xx * ws);
		}
		a0 += a1 + a2 + a3;
		memcpy(acc, &a0, sizeof(a0));
	} else if (CB == 8) {
		v8u a0 = { 0 }, a1 = { 0 }, a2 = { 0 }, a3 = { 0 };
		for (int y = y0; y < y1; y++) {
			const float *row = blk + (size_t)y * l->h_stride;
			int xx = x0;
			for (; xx + 4 <= x1; xx += 4) {
				const float *p = row + (size_t)xx * ws;
				a0 += *(const v8u *)p;
				a1 += *(const v8u *)(p + ws);
				a2 += *(const v8u *)(p + 2 * ws);
				a3 += *(const v8u *)(p + 3 * ws);
			}
			for (; xx < x1; xx++)
				a0 += *(const v8u *)(row + (size_t)xx * ws);
		}
		a0 += a1 + a2 + a3;
		memcpy(acc, &a0, sizeof(a0));
	} else {
		for (int k = 0; k < CB; k++)
			acc[k] = 0.0f;
		for (int y = y0; y < y1; y++)
			for (int xx = x0; xx < x1; xx++) {
				const float *px = blk + (size_t)y * l->h_stride + (size_t)xx * ws;
				for (int k = 0; k < CB; k++)
					acc[k] += px[k];
			}
	}
}

int fz_cache_layout_check(const struct fz_cache *c, const struct fz_act_layout *lay, char *err,
			  size_t errlen)
{
	const char *why = NULL;
	if (lay->c != c->c || lay->h != c->h || lay->w != c->w)
		why = "its shape is not the cache's";
	else if (lay->cblock < 1 || lay->cblock > FZ_CACHE_MAX_CBLOCK)
		why = "its channel block is larger than a key reader handles";
	else if (lay->sample_stride <
		 fz_layout_offset(lay, lay->c - 1, lay->h - 1, lay->w - 1) + 1)
		why = "its samples overlap";
	if (!why)
		return 0;
	if (err)
		snprintf(err, errlen,
			 "cache for a %dx%dx%d tap cannot read a %dx%dx%d tap in layout %s "
			 "(channel block %d): %s",
			 c->c, c->h, c->w, lay->c, lay->h, lay->w, lay->tag, lay->cblock, why);
	return -EINVAL;
}

int fz_cache_pool_burst(const struct fz_cache *c, const float *act,
			const struct fz_act_layout *lay, int n, float *out)
{
	const int G = c->p.grid, H = c->h, W = c->w, cb = lay->cblock;

	if (!act || !out || n < 0 || fz_cache_layout_check(c, lay, NULL, 0) < 0)
		return -EINVAL;
	/* channels contiguous at each pixel (nhwc): read them 16 at a time like a block */
	const bool nhwc = cb == 1 && lay->c_stride == 1 && c->c > 1;
	const int chunk = nhwc ? 16 : cb;
	for (int s = 0; s < n; s++) {
		const float *x = act + (size_t)s * lay->sample_stride;
		float *o = out + (size_t)s * (size_t)c->pooled_dim;

		for (int gy = 0; gy < G; gy++) {
			/* adaptive pooling bounds: [floor(i*H/G), ceil((i+1)*H/G)) */
			int y0 = gy * H / G, y1 = ((gy + 1) * H + G - 1) / G;
			for (int gx = 0; gx < G; gx++) {
				int x0 = gx * W / G, x1 = ((gx + 1) * W + G - 1) / G;
				float inv = 1.0f / (float)((y1 - y0) * (x1 - x0));
				for (int c0 = 0; c0 < c->c; c0 += chunk) {
					const float *blk =
						x + (nhwc ? (size_t)c0 : (size_t)(c0 / cb) * lay->c_stride);
					int nc = c->c - c0 < chunk ? c->c - c0 : chunk;
					float acc[FZ_CACHE_MAX_CBLOCK];
					/* constant block sizes: vector adds per pixel; a short last run of
					 * contiguous channels is not loaded past: 8 at once, then singly */
					int head = nhwc && nc < chunk ? (nc >= 8 ? 8 : 0) : chunk;
					switch (head) {
					case 0: break;
					case 16: cell_sum_blk(blk, lay, y0, y1, x0, x1, acc, 16); break;
					case 8: cell_sum_blk(blk, lay, y0, y1, x0, x1, acc, 8); break;
					case 4: cell_sum_blk(blk, lay, y0, y1, x0, x1, acc, 4); break;
					case 1: cell_sum_blk(blk, lay, y0, y1, x0, x1, acc, 1); break;
					default: cell_sum_blk(blk, lay, y0, y1, x0, x1, acc, cb); break;
					}
					for (int k = head; k < nc; k++)
						cell_sum_blk(blk + k, lay, y0, y1, x0, x1, acc + k, 1);
					for (int k = 0; k < nc; k++)
						o[(size_t)(c0 + k) * G * G + gy * G + gx] = acc[k] * inv;
				}
			}
		}
	}
	return 0;
}

static void l2_normalise(float *v, int d)
{
	float part[FZ_BLK] = { 0 }, s = 0.0f;
	int i = 0;

	for (; i + FZ_BLK <= d; i += FZ_BLK) /* lane-parallel partial sums: vectorises */
		for (int l = 0; l < FZ_BLK; l++)
			part[l] += v[i + l] * v[i + l];
	for (; i < d; i++)
		s += v[i] * v[i];
	for (int l = 0; l < FZ_BLK; l++)
		s += part[l];
	if (s > 0.0f) {
		float inv = 1.0f / sqrtf(s);
		for (i = 0; i < d; i++)
			v[i] *= inv;
	}
}

/*
 * Four samples against one pass over the projection (P x D, D = 16 * NV <= 64): 4 x NV vector
 * accumulators stay in registers and each row of the matrix is loaded once per four samples
 * instead of once per sample (the matrix, up to 128 KiB, streams from L2).
 */
static inline __attribute__((always_inline)) void project4(const struct fz_cache *c,
							   const float *const x[4], float *const k[4],
							   const int NV)
{
	const int P = c->pooled_dim, D = c->dim;
	fz_v16 a[4][4] = { { { 0 } } };

	for (int i = 0; i < P; i++) {
		const float *row = c->pca_proj + (size_t)i * D;
		const float m = c->pca_mean[i];
		const float x0 = x[0][i] - m, x1 = x[1][i] - m, x2 = x[2][i] - m, x3 = x[3][i] - m;
		for (int v = 0; v < NV; v++) {
			fz_v16 r = *(const fz_v16u *)(row + v * FZ_BLK);
			a[0][v] += x0 * r;
			a[1][v] += x1 * r;
			a[2][v] += x2 * r;
			a[3][v] += x3 * r;
		}
	}
	for (int q = 0; q < 4; q++)
		memcpy(k[q], a[q], (size_t)D * sizeof(float));
}

int fz_cache_project_burst(const struct fz_cache *c, const float *pooled, int n, float *keys)
{
	const int P = c->pooled_dim, D = c->dim;
	int s = 0;

	if (!pooled || !keys || n < 0)
		return -EINVAL;
	if (c->p.dims && D % FZ_BLK == 0 && D <= 4 * FZ_BLK && keys != pooled) {
		for (; s + 4 <= n; s += 4) {
			const float *x[4];
			float *k[4];
			for (int q = 0; q < 4; q++) {
				x[q] = pooled + (size_t)(s + q) * P;
				k[q] = keys + (size_t)(s + q) * D;
			}
			switch (D / FZ_BLK) { /* constant trip counts: the accumulators stay in zmm */
			case 1: project4(c, x, k, 1); break;
			case 2: project4(c, x, k, 2); break;
			case 3: project4(c, x, k, 3); break;
			default: project4(c, x, k, 4); break;
			}
			if (c->p.l2)
				for (int q = 0; q < 4; q++)
					l2_normalise(k[q], D);
		}
	}
	for (; s < n; s++) {
		const float *x = pooled + (size_t)s * P;
		float *k = keys + (size_t)s * D;

		if (c->p.dims) {
			/* key = sum_i (x_i - mean_i) * proj[i][0..D): axpy rows, lane-parallel */
			float acc[FZ_CACHE_MAX_DIM] = { 0 };
			for (int i = 0; i < P; i++) {
				const float xi = x[i] - c->pca_mean[i];
				const float *row = c->pca_proj + (size_t)i * D;
				for (int j = 0; j < D; j++)
					acc[j] += xi * row[j];
			}
			memcpy(k, acc, (size_t)D * sizeof(float));
		} else if (k != x) {
			memcpy(k, x, (size_t)P * sizeof(float));
		}
		if (c->p.l2)
			l2_normalise(k, D);
	}
	return 0;
}

int fz_cache_key_burst(const struct fz_cache *c, const float *act,
		       const struct fz_act_layout *lay, int n, float *keys)
{
	float pooled[4 * FZ_CACHE_MAX_POOLED];
	int rc;

	if (n < 0 || n > FZ_CACHE_MAX_BURST)
		return -EINVAL;
	for (int s = 0; s < n; s += 4) { /* four at a time: fz_cache_project_burst's fast path */
		int m = n - s < 4 ? n - s : 4;
		rc = fz_cache_pool_burst(c, act + (size_t)s * lay->sample_stride, lay, m, pooled);
		if (rc)
			return rc;
		rc = fz_cache_project_burst(c, pooled, m, keys + (size_t)s * c->dim);
		if (rc)
			return rc;
	}
	return 0;
}

/* Orthonormalise the d columns of V (P x d, row-major) by modified Gram-Schmidt. */
static void orthonormalise(double *V, int P, int d)
{
	for (int j = 0; j < d; j++) {
		for (int i = 0; i < j; i++) {
			double dot = 0.0;
			for (int r = 0; r < P; r++)
				dot += V[(size_t)r * d + i] * V[(size_t)r * d + j];
			for (int r = 0; r < P; r++)
				V[(size_t)r * d + j] -= dot * V[(size_t)r * d + i];
		}
		double nrm = 0.0;
		for (int r = 0; r < P; r++)
			nrm += V[(size_t)r * d + j] * V[(size_t)r * d + j];
		nrm = sqrt(nrm);
		if (nrm < 1e-30) { /* degenerate: restart the column on a unit vector */
			for (int r = 0; r < P; r++)
				V[(size_t)r * d + j] = r == j % P ? 1.0 : 0.0;
			j--;
			continue;
		}
		for (int r = 0; r < P; r++)
			V[(size_t)r * d + j] /= nrm;
	}
}

int fz_cache_fit_pca(struct fz_cache *c, const float *pooled, size_t n, size_t sample)
{
	const int P = c->pooled_dim, d = c->p.dims;
	size_t m = sample && sample < n ? sample : n;

	if (!d || !pooled || n < (size_t)d)
		return -EINVAL;
	double *mean = calloc((size_t)P, sizeof(double));
	double *cov = calloc((size_t)P * P, sizeof(double));
	double *V = malloc((size_t)P * d * sizeof(double));
	double *Wm = malloc((size_t)P * d * sizeof(double));
	float *xc = malloc((size_t)P * sizeof(float));
	if (!mean || !cov || !V || !Wm || !xc) {
		free(mean), free(cov), free(V), free(Wm), free(xc);
		return -ENOMEM;
	}
	for (size_t t = 0; t < m; t++) {
		const float *x = pooled + (t * n / m) * (size_t)P;
		for (int i = 0; i < P; i++)
			mean[i] += x[i];
	}
	for (int i = 0; i < P; i++)
		mean[i] /= (double)m;
	/* covariance: upper triangle, accumulated in double (rows of the sample, centred) */
	for (size_t t = 0; t < m; t++) {
		const float *x = pooled + (t * n / m) * (size_t)P;
		for (int i = 0; i < P; i++)
			xc[i] = (float)(x[i] - mean[i]);
		for (int i = 0; i < P; i++) {
			double xi = xc[i];
			double *row = cov + (size_t)i * P;
			for (int j = i; j < P; j++)
				row[j] += xi * xc[j];
		}
	}
	for (int i = 0; i < P; i++)
		for (int j = 0; j < i; j++)
			cov[(size_t)i * P + j] = cov[(size_t)j * P + i];
	/* top-d eigenvectors by subspace iteration from a deterministic start */
	uint64_t rs = 0x5eed;
	for (size_t i = 0; i < (size_t)P * d; i++)
		V[i] = (double)(fz_cache_rand(&rs) >> 11) / 9007199254740992.0 - 0.5;
	orthonormalise(V, P, d);
	for (int it = 0; it < 80; it++) {
		memset(Wm, 0, (size_t)P * d * sizeof(double));
		for (int i = 0; i < P; i++)
			for (int k = 0; k < P; k++) {
				double a = cov[(size_t)i * P + k];
				const double *vk = V + (size_t)k * d;
				double *wi = Wm + (size_t)i * d;
				for (int j = 0; j < d; j++)
					wi[j] += a * vk[j];
			}
		orthonormalise(Wm, P, d);
		double *t = V;
		V = Wm;
		Wm = t;
	}
	for (int i = 0; i < P; i++)
		c->pca_mean[i] = (float)mean[i];
	for (size_t i = 0; i < (size_t)P * d; i++) /* both P x d, row-major */
		c->pca_proj[i] = (float)V[i];
	c->pca_fitted = true;
	free(mean), free(cov), free(V), free(Wm), free(xc);
	return 0;
}
