/* Benchmark of cachecore lookups: pooling, projection and search per sample on every SIMD level and batch size, against a brute-force baseline in the same run. */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fz_cache.h"

/*
 * Usage: bench_cache [REPS]. Prints one CSV row per (case, layout, level, batch):
 *   case,layout,isa,batch,pool_ns,project_ns,search_ns,lookup_ns,cold_lookup_ns,naive_ns,
 *   naive_over_search
 * ns are per sample, medians of REPS (default 7) timed rounds; lookup = pool + project + search
 * with warm caches (fz_cache_key_burst + fz_cache_lookup_keys, what freeze eval times).
 * cold_lookup (batch 64 only) is the same after the tap was rewritten and 32 MiB of other data
 * read, as in the pipeline, where the layer group before the lookup evicts the entries and the
 * projection. naive = a scalar row-major nearest-entry scan of the same entries, in the same
 * run. Then the search against oneDNN's sgemm (bench_vs_sgemm), a second CSV block.
 */

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

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
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

static int reps = 7;

#define EVICT_BYTES (32u << 20)
static unsigned char *evict_buf;

/* What a layer group does to the caches between two lookups: writes the tap, reads the rest. */
static void make_cold(float *act, size_t n)
{
	volatile unsigned char sink = 0;
	for (size_t i = 0; i < n; i++)
		act[i] = (float)(i % 251) * (1.0f / 251);
	for (size_t i = 0; i < EVICT_BYTES; i += 64)
		sink += evict_buf[i];
	(void)sink;
}

/* Median over reps rounds of the per-sample time of fn (each round runs it `inner` times). */
#define TIME_MEDIAN(out, inner, per, body)                                                        \
	do {                                                                                       \
		double _t[64];                                                                     \
		body; /* warm-up */                                                                \
		for (int _r = 0; _r < reps; _r++) {                                                \
			double _t0 = now();                                                        \
			for (int _i = 0; _i < (inner); _i++) {                                     \
				body;                                                              \
			}                                                                          \
			_t[_r] = (now() - _t0) / (inner) / (per);                                  \
		}                                                                                  \
		qsort(_t, reps, sizeof(double), cmp_d);                                            \
		(out) = _t[reps / 2] * 1e9;                                                        \
	} while (0)

static struct fz_act_layout mk_layout(int c, int h, const char *tag)
{
	struct fz_act_layout l = { .c = c, .h = h, .w = h };
	if (!strcmp(tag, "nhwc")) {
		l.cblock = 1, l.c_stride = 1, l.w_stride = (size_t)c, l.h_stride = (size_t)h * c;
		l.sample_stride = (size_t)c * h * h;
	} else {
		int cb = atoi(tag + 4); /* nChw<cb>c */
		l.cblock = cb, l.w_stride = (size_t)cb, l.h_stride = (size_t)h * cb;
		l.c_stride = (size_t)h * h * cb;
		l.sample_stride = (size_t)((c + cb - 1) / cb * cb) * h * h;
	}
	snprintf(l.tag, sizeof(l.tag), "%s", tag);
	return l;
}

static void bench(const char *what, enum fz_cache_kind kind, int c, int h, int grid, int dims,
		  int size, int k, const char *const *layouts, const int *batches)
{
	static const char *const isas[] = { "portable", "avx2", "avx512" };
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
	const int n_ent = fz_cache_entries(ca);
	float *rows = malloc((size_t)n_ent * D * sizeof(float));
	for (int i = 0; i < n_ent; i++) {
		int l;
		fz_cache_read_entry(ca, i, rows + (size_t)i * D, &l);
	}
	static float pb[FZ_CACHE_MAX_BURST * FZ_CACHE_MAX_POOLED];
	static float kb[FZ_CACHE_MAX_BURST * FZ_CACHE_MAX_DIM];
	static struct fz_cache_result res[FZ_CACHE_MAX_BURST];

	for (const char *const *lt = layouts; *lt; lt++) {
		struct fz_act_layout lay = mk_layout(c, h, *lt);
		const int maxb = 64;
		float *act = aligned_alloc(64, (lay.sample_stride * maxb * sizeof(float) + 63) / 64 * 64);
		for (size_t i = 0; i < lay.sample_stride * maxb; i++)
			act[i] = frand();
		for (size_t li = 0; li < sizeof(isas) / sizeof(isas[0]); li++) {
			if (fz_cache_isa_set(isas[li]) != 0)
				continue;
			for (const int *b = batches; *b; b++) {
				const int n = *b, inner = n >= 16 ? 8 : 64;
				double t_pool, t_proj, t_search, t_naive;
				volatile int sink = 0; /* keeps the baseline scan from being dropped */
				TIME_MEDIAN(t_pool, inner, n, fz_cache_pool_burst(ca, act, &lay, n, pb));
				TIME_MEDIAN(t_proj, inner, n, fz_cache_project_burst(ca, pb, n, kb));
				fz_cache_key_burst(ca, act, &lay, n, kb);
				TIME_MEDIAN(t_search, inner, n, fz_cache_lookup_keys(ca, kb, n, res));
				TIME_MEDIAN(t_naive, 2, n,
					    for (int q = 0; q < n; q++) sink += naive_nearest(
						    rows, n_ent, D, kb + (size_t)q * D));
				double t_cold = NAN;
				if (n == 64) {
					double tc[64];
					for (int r = 0; r < reps; r++) {
						make_cold(act, lay.sample_stride * n);
						double t0 = now();
						fz_cache_key_burst(ca, act, &lay, n, kb);
						fz_cache_lookup_keys(ca, kb, n, res);
						tc[r] = (now() - t0) / n * 1e9;
					}
					qsort(tc, reps, sizeof(double), cmp_d);
					t_cold = tc[reps / 2];
				}
				(void)sink;
				printf("%s,%s,%s,%d,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.1f\n", what, *lt,
				       isas[li], n, t_pool, t_proj, t_search, t_pool + t_proj + t_search,
				       t_cold, t_naive, t_naive / t_search);
				fflush(stdout);
			}
		}
		free(act);
	}
	fz_cache_isa_set(NULL);
	free(rows), free(pooled), free(keys), free(lab);
	fz_cache_free(ca);
}

/*
 * The search against oneDNN's sgemm on the same entries (row-major, the layout sgemm takes):
 * the whole lookup (GEMM on the 16-slot blocks, scans, exact checks) vs sgemm's dot products
 * alone, per query, warm and after make_cold. libdnnl is opened at run time (the bench links
 * only cachecore); skipped without it.
 */
typedef int (*sgemm_fn)(char, char, long, long, long, float, const float *, long, const float *,
			long, float, float *, long);

static void bench_vs_sgemm(int nq, int n_ent, int dim)
{
	void *h = dlopen("libdnnl.so.2", RTLD_NOW | RTLD_LOCAL);
	sgemm_fn sgemm = h ? (sgemm_fn)dlsym(h, "dnnl_sgemm") : NULL;
	if (!sgemm) {
		printf("# vs sgemm: skipped, no libdnnl.so.2 (%s)\n", dlerror());
		return;
	}
	struct fz_cache_params p;
	fz_cache_params_default(&p);
	p.kind = FZ_CACHE_KNN;
	p.k = 1;
	p.grid = 1;
	p.dims = 0;
	p.size = n_ent;
	struct fz_cache *ca = fz_cache_create(&p, dim, 1, 1, 10);
	float *pts = malloc((size_t)n_ent * dim * sizeof(float));
	float *q = malloc((size_t)nq * dim * sizeof(float));
	float *g = malloc((size_t)nq * n_ent * sizeof(float));
	int *lab = malloc(n_ent * sizeof(int));
	float *act = malloc((size_t)nq * 12544 * sizeof(float)); /* a block1-sized tap to rewrite */
	static struct fz_cache_result res[FZ_CACHE_MAX_BURST];
	for (size_t i = 0; i < (size_t)n_ent * dim; i++)
		pts[i] = frand() - 0.5f;
	for (size_t i = 0; i < (size_t)nq * dim; i++)
		q[i] = frand() - 0.5f;
	for (int i = 0; i < n_ent; i++)
		lab[i] = i % 10;
	fz_cache_project_burst(ca, pts, n_ent, pts); /* l2 in place */
	fz_cache_project_burst(ca, q, nq, q);
	fz_cache_build(ca, pts, lab, n_ent, 1);
	printf("vs_sgemm,variant,queries,entries,dim,hot_ns_per_query,cold_ns_per_query\n");
	static const char *const variants[] = { "fz_cache_lookup_keys (whole search)",
						"dnnl_sgemm one call (dot products only)",
						"dnnl_sgemm per 256 entries (dot products only)" };
	for (int v = 0; v < 3; v++) {
		double hot, tc[64];
#define RUN_V                                                                                      \
	do {                                                                                       \
		if (v == 0)                                                                        \
			fz_cache_lookup_keys(ca, q, nq, res);                                      \
		else                                                                               \
			for (int s0 = 0; s0 < n_ent; s0 += v == 1 ? n_ent : 256)                   \
				sgemm('N', 'T', nq, v == 1 ? n_ent : 256, dim, -2.0f, q, dim,      \
				      pts + (size_t)s0 * dim, dim, 0.0f, g, n_ent);                \
	} while (0)
		TIME_MEDIAN(hot, 8, nq, RUN_V);
		for (int r = 0; r < reps; r++) {
			make_cold(act, (size_t)nq * 12544);
			double t0 = now();
			RUN_V;
			tc[r] = (now() - t0) / nq * 1e9;
		}
#undef RUN_V
		qsort(tc, reps, sizeof(double), cmp_d);
		printf("vs_sgemm,%s,%d,%d,%d,%.0f,%.0f\n", variants[v], nq, n_ent, dim, hot,
		       tc[reps / 2]);
	}
	free(pts), free(q), free(g), free(lab), free(act);
	fz_cache_free(ca);
}

/* A learned cache's predictor (pooled -> hidden 64 -> 10 logits and the guard) per SIMD level:
 * ns per sample at batch 64, median of reps; random weights (the cost does not depend on them). */
static void bench_learned(int c, int grid)
{
	static const char *const lv[] = { "portable", "avx2", "avx512" };
	const int P = c * grid * grid, H = 64, K = 10;
	struct fz_cache_params p;
	fz_cache_params_default(&p);
	p.kind = FZ_CACHE_LEARNED;
	p.hidden = H;
	p.grid = grid;
	snprintf(p.layer, sizeof(p.layer), "b");
	struct fz_cache *ca = fz_cache_create(&p, c, grid, grid, K);
	float *w1 = malloc(sizeof(float) * (size_t)H * P), *w2 = malloc(sizeof(float) * K * H);
	float *b = calloc(H, sizeof(float)), *mean = calloc((size_t)P, sizeof(float));
	float *isd = malloc(sizeof(float) * (size_t)P), *x = malloc(sizeof(float) * 64 * (size_t)P);
	float *keys = malloc(sizeof(float) * 64 * (K + 1));
	if (!ca || !w1 || !w2 || !b || !mean || !isd || !x || !keys)
		goto out;
	for (int i = 0; i < H * P; i++)
		w1[i] = frand() - 0.5f;
	for (int i = 0; i < K * H; i++)
		w2[i] = frand() - 0.5f;
	for (int i = 0; i < P; i++)
		isd[i] = 1.0f;
	for (int i = 0; i < 64 * P; i++)
		x[i] = frand();
	struct fz_cache_head h = { H, w1, b, w2, b, mean, isd, 1.0f, 1e6f };
	if (fz_cache_set_head(ca, &h) < 0)
		goto out;
	for (int l = 0; l < 3; l++) {
		if (fz_cache_isa_set(lv[l]) < 0)
			continue;
		double t[64];
		for (int r = 0; r < reps; r++) {
			double t0 = now();
			for (int it = 0; it < 200; it++)
				fz_cache_project_burst(ca, x, 64, keys);
			t[r] = (now() - t0) / (200.0 * 64) * 1e9;
		}
		qsort(t, (size_t)reps, sizeof(double), cmp_d);
		printf("learned,%d,%d,%s,64,%.0f\n", P, H, lv[l], t[reps / 2]);
	}
	fz_cache_isa_set(NULL);
out:
	fz_cache_free(ca);
	free(w1), free(w2), free(b), free(mean), free(isd), free(x), free(keys);
}

int main(int argc, char **argv)
{
	static const char *const tap_layouts[] = { "nhwc", "nChw8c", "nChw16c", NULL };
	static const char *const one_layout[] = { "nChw16c", NULL };
	static const int batches[] = { 1, 2, 4, 8, 16, 64, 0 };
	static const int b64[] = { 64, 0 };

	if (argc > 1)
		reps = atoi(argv[1]) > 0 && atoi(argv[1]) <= 64 ? atoi(argv[1]) : 7;
	setenv("OMP_NUM_THREADS", "1", 0); /* oneDNN's sgemm, if opened: one thread, as a stage */
	printf("# cachecore lookup cost per sample; SIMD default here: %s\n", fz_cache_isa());
	evict_buf = malloc(EVICT_BYTES);
	if (!evict_buf)
		return 1;
	memset(evict_buf, 1, EVICT_BYTES);
	printf("case,layout,isa,batch,pool_ns,project_ns,search_ns,lookup_ns,cold_lookup_ns,naive_ns,"
	       "naive_over_search\n");
	/* the shipped settings (4x4 grid, PCA 64, 1024 centroids) on the taps of block1 and
	 * block3: nhwc is what oneDNN picks on AVX-512 here, nChw8c on AVX2 */
	bench("shipped-block1", FZ_CACHE_KMEANS, 16, 28, 4, 64, 1024, 1, tap_layouts, batches);
	bench("shipped-block3", FZ_CACHE_KMEANS, 32, 14, 4, 64, 1024, 1, tap_layouts, batches);
	bench("knn-k8-block3", FZ_CACHE_KNN, 32, 14, 4, 32, 1024, 8, one_layout, b64);
	bench("block8-g1", FZ_CACHE_KMEANS, 128, 4, 1, 0, 512, 1, one_layout, b64);
	bench("block8-knn-k8", FZ_CACHE_KNN, 128, 4, 1, 0, 2048, 8, one_layout, b64);
	bench_vs_sgemm(64, 1024, 64);
	printf("learned,pooled,hidden,isa,batch,predictor_ns_per_sample\n");
	for (int g = 0; g < 4; g++) /* the shipped points' pooled sizes: 256, 512, 1024, 2048 */
		bench_learned(16 << g, 4);
	return 0;
}
