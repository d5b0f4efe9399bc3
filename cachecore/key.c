/* Freeze cachecore keys: grid average pooling of a tap, PCA projection (and its fit), L2 norm; the loops live in kern.h. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_pvt.h"

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
	if (!act || !out || n < 0 || fz_cache_layout_check(c, lay, NULL, 0) < 0)
		return -EINVAL;
	fz_cache_kern_get()->pool(c, act, lay, n, out);
	return 0;
}

int fz_cache_project_burst(const struct fz_cache *c, const float *pooled, int n, float *keys)
{
	if (!pooled || !keys || n < 0)
		return -EINVAL;
	fz_cache_kern_get()->project(c, pooled, n, keys);
	return 0;
}

int fz_cache_key_burst(const struct fz_cache *c, const float *act,
		       const struct fz_act_layout *lay, int n, float *keys)
{
	const struct fz_cache_kern *k = fz_cache_kern_get();
	float pooled[4 * FZ_CACHE_MAX_POOLED];

	if (!act || !keys || n < 0 || n > FZ_CACHE_MAX_BURST ||
	    fz_cache_layout_check(c, lay, NULL, 0) < 0)
		return -EINVAL;
	for (int s = 0; s < n; s += 4) { /* four at a time: the projection's fast path */
		int m = n - s < 4 ? n - s : 4;
		k->pool(c, act + (size_t)s * lay->sample_stride, lay, m, pooled);
		k->project(c, pooled, m, keys + (size_t)s * c->dim);
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

	if (c->p.kind == FZ_CACHE_LEARNED)
		return c->sub ? fz_cache_fit_pca(c->sub, pooled, n, sample) : -EINVAL;
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
