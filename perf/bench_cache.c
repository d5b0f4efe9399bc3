/* Benchmark of cachecore lookups: pooling, projection and distance search per sample, against a brute-force baseline in the same run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fz_cache.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rs = 7;
static float frand(void)
{
	rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
	return (float)((rs >> 40) & 0xffffff) / 16777216.0f;
}

/* Nearest of n row-major points to q: the naive baseline. */
static int naive_nearest(const float *pts, int n, int d, const float *q)
{
	int best = 0;
	float bd = INFINITY;
	for (int i = 0; i < n; i++) {
		float s = 0;
		for (int e = 0; e < d; e++) {
			float t = q[e] - pts[(size_t)i * d + e];
			s += t * t;
		}
		if (s < bd)
			bd = s, best = i;
	}
	return best;
}

static void bench(const char *what, enum fz_cache_kind kind, int c, int h, int grid, int dims,
		  int size, int k, int batch)
{
	struct fz_cache_params p;
	fz_cache_params_default(&p);
	snprintf(p.layer, sizeof(p.layer), "b");
	p.kind = kind;
	p.grid = grid;
	p.dims = dims;
	p.size = size;
	p.k = k;
	struct fz_cache *ca = fz_cache_create(&p, c, h, h, 10);
	if (!ca) {
		perror("fz_cache_create");
		exit(1);
	}
	const int P = fz_cache_pooled_dim(ca), D = fz_cache_key_dim(ca), NB = 4 * size;
	float *pooled = malloc((size_t)NB * P * sizeof(float));
	float *keys = malloc((size_t)NB * D * sizeof(float));
	int *lab = malloc(NB * sizeof(int));
	for (size_t i = 0; i < (size_t)NB * P; i++)
		pooled[i] = frand();
	for (int i = 0; i < NB; i++)
		lab[i] = i % 10;
	if (dims)
		fz_cache_fit_pca(ca, pooled, NB, 4096);
	fz_cache_project_burst(ca, pooled, NB, keys);
	fz_cache_build(ca, keys, lab, NB, 1);

	/* tap in nChw16c (or the block given by FZ_BENCH_CBLOCK: 8 is what AVX2 kernels use) */
	const char *cbe = getenv("FZ_BENCH_CBLOCK");
	int cb = cbe ? atoi(cbe) : 16;
	if (cb < 1 || cb > FZ_CACHE_MAX_CBLOCK)
		cb = 16;
	struct fz_act_layout lay = { .c = c, .h = h, .w = h, .cblock = cb,
				     .c_stride = (size_t)h * h * cb, .h_stride = (size_t)h * cb,
				     .w_stride = (size_t)cb,
				     .sample_stride = (size_t)((c + cb - 1) / cb * cb) * h * h };
	snprintf(lay.tag, sizeof(lay.tag), "nChw%dc", cb);
	float *act = malloc(lay.sample_stride * batch * sizeof(float));
	for (size_t i = 0; i < lay.sample_stride * batch; i++)
		act[i] = frand();
	struct fz_cache_result res[FZ_CACHE_MAX_BURST];
	float kb[FZ_CACHE_MAX_BURST * FZ_CACHE_MAX_DIM];
	int reps = 200;
	double t0 = now();
	for (int r = 0; r < reps; r++)
		fz_cache_key_burst(ca, act, &lay, batch, kb);
	double t_key = (now() - t0) / reps / batch;
	t0 = now();
	for (int r = 0; r < reps; r++)
		fz_cache_lookup_keys(ca, kb, batch, res);
	double t_look = (now() - t0) / reps / batch;
	/* baseline: naive row-major nearest search of the same entries (k-means answer) */
	float *rows = malloc((size_t)size * D * sizeof(float));
	int n_ent = fz_cache_entries(ca);
	for (int i = 0; i < n_ent; i++) {
		int l;
		fz_cache_read_entry(ca, i, rows + (size_t)i * D, &l);
	}
	volatile int sink = 0;
	t0 = now();
	for (int r = 0; r < reps / 4; r++)
		for (int q = 0; q < batch; q++)
			sink += naive_nearest(rows, n_ent, D, kb + (size_t)q * D);
	double t_naive = (now() - t0) / (reps / 4) / batch;
	printf("%-22s %-6s tap %3dx%2dx%2d key %4d entries %5d: key %7.0f ns, search %7.0f ns "
	       "(naive %7.0f ns, %.1fx), %zu bytes\n",
	       what, fz_cache_kind_name(kind), c, h, h, D, n_ent, t_key * 1e9, t_look * 1e9,
	       t_naive * 1e9, t_naive / t_look, fz_cache_bytes(ca));
	free(rows), free(act), free(pooled), free(keys), free(lab);
	fz_cache_free(ca);
}

int main(void)
{
	printf("cachecore lookup cost per sample (batch 64; 'naive' = scalar row-major scan)\n");
	bench("block1 g1", FZ_CACHE_KMEANS, 16, 28, 1, 0, 512, 1, 64);
	bench("block1 g2", FZ_CACHE_KMEANS, 16, 28, 2, 0, 512, 1, 64);
	bench("block4 g1", FZ_CACHE_KMEANS, 32, 14, 1, 0, 512, 1, 64);
	bench("block4 g2 pca32", FZ_CACHE_KMEANS, 32, 14, 2, 32, 512, 1, 64);
	bench("block6 g1", FZ_CACHE_KMEANS, 64, 7, 1, 0, 512, 1, 64);
	bench("block8 g1", FZ_CACHE_KMEANS, 128, 4, 1, 0, 512, 1, 64);
	bench("block8 g1 pca32", FZ_CACHE_KMEANS, 128, 4, 1, 32, 512, 1, 64);
	bench("block8 g2 pca64", FZ_CACHE_KMEANS, 128, 4, 2, 64, 512, 1, 64);
	bench("block4 knn k8", FZ_CACHE_KNN, 32, 14, 1, 0, 2048, 8, 64);
	/* the shipped settings: 4x4 grid, PCA 64, 1024 centroids */
	bench("shipped block1", FZ_CACHE_KMEANS, 16, 28, 4, 64, 1024, 1, 64);
	bench("shipped block3", FZ_CACHE_KMEANS, 32, 14, 4, 64, 1024, 1, 64);
	bench("knn example block3", FZ_CACHE_KNN, 32, 14, 4, 32, 1024, 8, 64);
	bench("block8 knn k8", FZ_CACHE_KNN, 128, 4, 1, 0, 2048, 8, 64);
	return 0;
}
