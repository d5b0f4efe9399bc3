/* Tests of cachecore's SIMD levels: every level this CPU runs gives the portable level's bits (keys, lookups, CRC), and lookups are exact. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fz_cache.h"
#include "layout_util.h"

/*
 * Why bit-identical, not "close": the kernels are one source (cachecore/kern.h) whose every
 * operation is lane by lane or a written-out reduction tree, compiled without FMA contraction,
 * so the three levels execute the same IEEE operations in the same order. The GEMM inside a
 * lookup does differ (FMA on AVX2/AVX-512), but it only nominates candidates; every answer's
 * distance is recomputed exactly (kern.h k_dist_blocks), so answers are the same bits too.
 * Against a double-precision reference (the last test) the tolerance is float rounding:
 * a 64-term sum of squares is within gamma_67 ~ 4e-6 relative, and conf ~ 1/sqrt(d^2).
 */

static const char *const levels[] = { "portable", "avx2", "avx512" };
#define N_LEVELS 3

static uint64_t rs = 99;

static float frand(void)
{
	rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
	return (float)((rs >> 40) & 0xffffff) / 16777216.0f;
}

static float gauss(void)
{
	float u = frand() + 1e-7f, v = frand();
	return sqrtf(-2.0f * logf(u)) * cosf(6.2831853f * v);
}

/* Levels this CPU runs (portable always); prints which, since a test that ran one is weak. */
static int available(const char **out)
{
	int n = 0;
	for (int i = 0; i < N_LEVELS; i++)
		if (fz_cache_isa_set(levels[i]) == 0)
			out[n++] = levels[i];
	fz_cache_isa_set(NULL);
	return n;
}


static void test_isa_select(void **state)
{
	(void)state;
	const char *av[N_LEVELS];
	int n = available(av);

	print_message("  levels on this CPU:");
	for (int i = 0; i < n; i++)
		print_message(" %s", av[i]);
	print_message(" (default %s)\n", fz_cache_isa());
	assert_int_equal(fz_cache_isa_set("sse9"), -EINVAL);
	assert_int_equal(fz_cache_isa_set("portable"), 0);
	assert_string_equal(fz_cache_isa(), "portable");
	/* the environment caps the default: FZ_CPU_ISA, ONEDNN_MAX_CPU_ISA (case-insensitive) */
	unsetenv("FZ_CPU_ISA");
	unsetenv("ONEDNN_MAX_CPU_ISA");
	unsetenv("DNNL_MAX_CPU_ISA");
	assert_int_equal(fz_cache_isa_set(NULL), 0);
	assert_string_equal(fz_cache_isa(), av[n - 1]); /* the best this CPU has */
	setenv("FZ_CPU_ISA", "Portable", 1);
	fz_cache_isa_set(NULL);
	assert_string_equal(fz_cache_isa(), "portable");
	setenv("FZ_CPU_ISA", "avx512", 1); /* asks more than a cap below: the lower wins */
	setenv("ONEDNN_MAX_CPU_ISA", "avx2", 1);
	fz_cache_isa_set(NULL);
	assert_string_equal(fz_cache_isa(), n > 1 ? "avx2" : "portable");
	setenv("ONEDNN_MAX_CPU_ISA", "AVX2_VNNI", 1);
	fz_cache_isa_set(NULL);
	assert_string_equal(fz_cache_isa(), n > 1 ? "avx2" : "portable");
	setenv("ONEDNN_MAX_CPU_ISA", "SSE41", 1);
	fz_cache_isa_set(NULL);
	assert_string_equal(fz_cache_isa(), "portable");
	setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16", 1);
	unsetenv("FZ_CPU_ISA");
	fz_cache_isa_set(NULL);
	assert_string_equal(fz_cache_isa(), av[n - 1]);
	unsetenv("ONEDNN_MAX_CPU_ISA");
	/* an explicit choice beats the caps, but not the CPU */
	setenv("FZ_CPU_ISA", "portable", 1);
	assert_int_equal(fz_cache_isa_set(av[n - 1]), 0);
	assert_string_equal(fz_cache_isa(), av[n - 1]);
	unsetenv("FZ_CPU_ISA");
	if (n < N_LEVELS)
		assert_int_equal(fz_cache_isa_set(levels[n]), -ENOTSUP);
	fz_cache_isa_set(NULL);
}

/* Pooling: every layout oneDNN may pick (nchw, nhwc, blocks of 4, 8, 16, an odd 5, padded
 * channels and samples), grids that do and do not divide the tap: the same bits per level. */
static void test_isa_same_pooling(void **state)
{
	(void)state;
	const char *av[N_LEVELS];
	int n_av = available(av);
	const struct {
		int C, H, G;
	} shapes[] = { { 16, 28, 4 }, { 32, 14, 4 }, { 20, 7, 2 }, { 24, 9, 3 }, { 128, 4, 1 },
		       { 96, 5, 2 } };
	enum { N = 3 };

	for (size_t si = 0; si < sizeof(shapes) / sizeof(shapes[0]); si++) {
		const int C = shapes[si].C, H = shapes[si].H;
		struct fz_cache_params p;
		fz_cache_params_default(&p);
		p.grid = shapes[si].G;
		p.dims = 8; /* never fitted: pooling alone, any pooled size */
		p.l2 = false;
		struct fz_cache *ca = fz_cache_create(&p, C, H, H, 10);
		assert_non_null(ca);
		const struct fz_act_layout lays[] = {
			mk_layout(C, H, H, 1, false, 0), mk_layout(C, H, H, 1, true, 3),
			mk_layout(C, H, H, 4, false, 0), mk_layout(C, H, H, 8, false, 8),
			mk_layout(C, H, H, 16, false, 5), mk_layout(C, H, H, 5, false, 1),
		};
		const int P = fz_cache_pooled_dim(ca);
		float *ref = malloc((size_t)N * P * sizeof(float));
		float *out = malloc((size_t)N * P * sizeof(float));
		for (size_t li = 0; li < sizeof(lays) / sizeof(lays[0]); li++) {
			const struct fz_act_layout *l = &lays[li];
			float *x = malloc(N * l->sample_stride * sizeof(float));
			for (size_t i = 0; i < N * l->sample_stride; i++)
				x[i] = gauss();
			assert_int_equal(fz_cache_isa_set("portable"), 0);
			assert_int_equal(fz_cache_pool_burst(ca, x, l, N, ref), 0);
			for (int a = 1; a < n_av; a++) {
				assert_int_equal(fz_cache_isa_set(av[a]), 0);
				assert_int_equal(fz_cache_pool_burst(ca, x, l, N, out), 0);
				if (memcmp(ref, out, (size_t)N * P * sizeof(float)))
					fail_msg("%s pooling of %dx%dx%d %s differs from portable", av[a], C,
						 H, H, l->tag);
			}
			/* and it is the mean: cell 0 of channel C-1, sample N-1, to float rounding */
			const int G = shapes[si].G, y1 = (H + G - 1) / G;
			double s = 0;
			for (int y = 0; y < y1; y++)
				for (int xx = 0; xx < y1; xx++)
					s += x[(N - 1) * l->sample_stride + fz_layout_offset(l, C - 1, y, xx)];
			assert_float_equal(ref[(size_t)(N - 1) * P + (size_t)(C - 1) * G * G],
					   s / (y1 * y1), 1e-5);
			free(x);
		}
		free(ref);
		free(out);
		fz_cache_free(ca);
	}
	fz_cache_isa_set(NULL);
}

/* Projection + L2: the same bits per level, and per sample whatever the batch around it. */
static void test_isa_same_keys(void **state)
{
	(void)state;
	const char *av[N_LEVELS];
	int n_av = available(av);
	const int dims[] = { 16, 32, 48, 64, 80, 20, 0 };

	for (size_t di = 0; di < sizeof(dims) / sizeof(dims[0]); di++)
		for (int l2 = 0; l2 < 2; l2++) {
			enum { C = 32, NS = 300 };
			struct fz_cache_params p;
			fz_cache_params_default(&p);
			p.grid = 2;
			p.dims = dims[di];
			p.l2 = l2;
			struct fz_cache *ca = fz_cache_create(&p, C, 4, 4, 10);
			assert_non_null(ca);
			const int P = fz_cache_pooled_dim(ca), D = fz_cache_key_dim(ca);
			float *x = malloc((size_t)NS * P * sizeof(float));
			for (int i = 0; i < NS * P; i++)
				x[i] = 3.0f + gauss();
			if (dims[di])
				assert_int_equal(fz_cache_fit_pca(ca, x, NS, 0), 0);
			float *ref = malloc((size_t)NS * D * sizeof(float));
			float *out = malloc((size_t)NS * D * sizeof(float));
			assert_int_equal(fz_cache_isa_set("portable"), 0);
			assert_int_equal(fz_cache_project_burst(ca, x, NS, ref), 0);
			for (int a = 0; a < n_av; a++) {
				assert_int_equal(fz_cache_isa_set(av[a]), 0);
				assert_int_equal(fz_cache_project_burst(ca, x, NS, out), 0);
				if (memcmp(ref, out, (size_t)NS * D * sizeof(float)))
					fail_msg("%s keys (dims %d, l2 %d) differ from portable", av[a],
						 dims[di], l2);
				/* batches of 1..9: every tail shape of the register blocks */
				for (int b = 1; b <= 9; b++) {
					for (int s = 0; s + b <= 40; s += b)
						assert_int_equal(fz_cache_project_burst(ca, x + (size_t)s * P, b,
											out + (size_t)s * D), 0);
					if (memcmp(ref, out, (size_t)(40 / b * b) * D * sizeof(float)))
						fail_msg("%s keys in batches of %d differ (dims %d)", av[a], b,
							 dims[di]);
				}
			}
			free(x);
			free(ref);
			free(out);
			fz_cache_free(ca);
		}
	fz_cache_isa_set(NULL);
}

/* Squared distance as every answer defines it: d ascending, each operation rounded (this file
 * is compiled with -ffp-contract=off, like cachecore). */
static float exact_d2(const float *q, const float *c, int D)
{
	float s = 0.0f;
	for (int d = 0; d < D; d++) {
		float t = q[d] - c[d];
		s += t * t;
	}
	return s;
}

/*
 * The reference knn lookup: a scan of every entry in slot order with that distance (ties to
 * the lower slot), the confidence rule of lookup.c answer() in the same float operations.
 */
static void ref_lookup(struct fz_cache *ca, const float *q, int k, struct fz_cache_result *r)
{
	const int D = fz_cache_key_dim(ca);
	float bd[64], key[256];
	int bl[64], n = 0;

	for (int s = 0; s < fz_cache_slots(ca); s++) {
		int lab;
		if (fz_cache_read_entry(ca, s, key, &lab))
			continue;
		float d = exact_d2(q, key, D);
		if (n == k && d >= bd[k - 1])
			continue;
		int i = n < k ? n++ : k - 1;
		while (i > 0 && bd[i - 1] > d) {
			bd[i] = bd[i - 1], bl[i] = bl[i - 1];
			i--;
		}
		bd[i] = d, bl[i] = lab;
	}
	r->label = -1;
	r->conf = 0;
	if (!n)
		return;
	float best = -1.0f;
	for (int i = 0; i < n; i++) {
		int m = 0;
		float inv = 0.0f;
		bool seen = false;
		for (int j = 0; j < i; j++)
			seen |= bl[j] == bl[i];
		if (seen)
			continue;
		for (int j = i; j < n; j++)
			if (bl[j] == bl[i]) {
				m++;
				inv += 1.0f / fmaxf(sqrtf(bd[j]), 1e-6f);
			}
		float ci = (float)m / (float)k * inv;
		if (ci > best) {
			best = ci;
			r->label = bl[i];
		}
	}
	r->conf = best;
}

static void check_lookups(struct fz_cache *ca, const float *q, int nq, int k, const char *what)
{
	const char *av[N_LEVELS];
	int n_av = available(av);
	const int D = fz_cache_key_dim(ca);
	struct fz_cache_result *r = calloc((size_t)nq, sizeof(*r));
	struct fz_cache_result *want = calloc((size_t)nq, sizeof(*want));

	for (int j = 0; j < nq; j++)
		ref_lookup(ca, q + (size_t)j * D, k, &want[j]);
	for (int a = 0; a < n_av; a++) {
		assert_int_equal(fz_cache_isa_set(av[a]), 0);
		for (int b = 1; b <= nq; b = b < 8 ? b + 1 : b * 4) { /* batch sizes 1..7, 8, 32, ... */
			for (int s = 0; s < nq; s += b) {
				int m = nq - s < b ? nq - s : b;
				assert_int_equal(fz_cache_lookup_keys(ca, q + (size_t)s * D, m, r + s), 0);
			}
			for (int j = 0; j < nq; j++)
				if (r[j].label != want[j].label ||
				    memcmp(&r[j].conf, &want[j].conf, sizeof(float)))
					fail_msg("%s, %s, batch %d, query %d: label %d conf %.9g, exact scan "
						 "label %d conf %.9g", what, av[a], b, j, r[j].label,
						 (double)r[j].conf, want[j].label, (double)want[j].conf);
		}
	}
	fz_cache_isa_set(NULL);
	free(r);
	free(want);
}

static struct fz_cache *mk_cache(enum fz_cache_kind kind, int D, int k, int size, int cap)
{
	struct fz_cache_params p;
	fz_cache_params_default(&p);
	p.kind = kind;
	p.grid = 1;
	p.dims = 0;
	p.l2 = false;
	p.k = k;
	p.size = size;
	p.capacity = cap;
	p.online = cap > 0;
	struct fz_cache *ca = fz_cache_create(&p, D, 1, 1, 10);
	assert_non_null(ca);
	return ca;
}

/* Lookups on every level, at every batch size, equal an exact scan bit for bit: knn (k 1, 3,
 * 8) and k-means-style nearest entry, dims that are and are not multiples of 16, entries spread
 * over calibrated and online slots. */
static void test_isa_lookups_exact(void **state)
{
	(void)state;
	const int dims[] = { 64, 20, 3, 128 };
	const int ks[] = { 1, 3, 8 };

	for (size_t di = 0; di < sizeof(dims) / sizeof(dims[0]); di++)
		for (size_t ki = 0; ki < sizeof(ks) / sizeof(ks[0]); ki++) {
			const int D = dims[di], K = ks[ki], NP = 700, NQ = 130;
			float *pts = malloc((size_t)NP * D * sizeof(float));
			float *q = malloc((size_t)NQ * D * sizeof(float));
			int *lab = malloc(NP * sizeof(int));
			for (int i = 0; i < NP * D; i++)
				pts[i] = gauss();
			for (int i = 0; i < NP; i++)
				lab[i] = (int)(frand() * 10) % 10;
			for (int i = 0; i < NQ * D; i++)
				q[i] = gauss();
			/* a few queries on top of entries (distance ~0: the floor) */
			memcpy(q, pts + 5 * D, (size_t)D * sizeof(float));
			memcpy(q + D, pts + 600 * D, (size_t)D * sizeof(float));
			struct fz_cache *ca = mk_cache(FZ_CACHE_KNN, D, K, 600, 200);
			assert_int_equal(fz_cache_build(ca, pts, lab, 600, 1), 0);
			for (int i = 600; i < NP; i++) /* online slots */
				assert_int_equal(fz_cache_insert(ca, pts + (size_t)i * D, lab[i]), 0);
			char what[64];
			snprintf(what, sizeof(what), "knn k %d dim %d", K, D);
			check_lookups(ca, q, NQ, K, what);
			fz_cache_free(ca);
			free(pts);
			free(q);
			free(lab);
		}
}

/*
 * Where a GEMM's ranking goes wrong: entries whose distances to the query differ by less than
 * the GEMM's rounding (a shell of near-equidistant entries), exact duplicates (ties: the lower
 * slot), and keys with norms far larger than their distances (|q|^2 + |c|^2 - 2 q.c cancels).
 */
static void test_isa_gemm_hard_cases(void **state)
{
	(void)state;
	enum { D = 64, NP = 512, NQ = 64 };
	float *pts = malloc((size_t)NP * D * sizeof(float));
	float *q = malloc((size_t)NQ * D * sizeof(float));
	int lab[NP];

	for (int t = 0; t < 3; t++) {
		for (int j = 0; j < NQ * D; j++)
			q[j] = gauss();
		for (int i = 0; i < NP; i++) {
			const float *qq = q + (size_t)(i % NQ) * D;
			lab[i] = i % 10;
			for (int d = 0; d < D; d++) {
				float *e = &pts[(size_t)i * D + d];
				if (t == 0) /* a shell around query i % NQ: radius 0.5, jitter 1e-7 */
					*e = qq[d] + (d == i % D ? 0.5f : 0.0f) + 1e-7f * gauss();
				else if (t == 1) /* duplicates of 8 points */
					*e = q[(size_t)(i % 8) * D + d] + 0.25f;
				else /* norms ~1e3, distances ~1 */
					*e = 1000.0f + qq[d] + gauss();
			}
		}
		if (t == 2)
			for (int j = 0; j < NQ * D; j++)
				q[j] += 1000.0f;
		for (int k = 1; k <= 8; k += 7) {
			struct fz_cache *ca = mk_cache(FZ_CACHE_KNN, D, k, NP, 0);
			assert_int_equal(fz_cache_build(ca, pts, lab, NP, 1), 0);
			char what[64];
			snprintf(what, sizeof(what), "hard case %d, k %d", t, k);
			check_lookups(ca, q, NQ, k, what);
			fz_cache_free(ca);
		}
	}
	free(pts);
	free(q);
}

/* k-means builds assign through the same GEMM: the same centroids on every level. */
static void test_isa_same_kmeans(void **state)
{
	(void)state;
	const char *av[N_LEVELS];
	int n_av = available(av);
	enum { D = 24, NP = 3000, K = 64 };
	float *pts = malloc((size_t)NP * D * sizeof(float));
	int lab[NP];
	float ref[K * D], key[D];
	int rl[K], l;
	struct fz_cache_result res[200], res0[200];

	for (int i = 0; i < NP; i++) {
		lab[i] = i % 10;
		for (int d = 0; d < D; d++)
			pts[(size_t)i * D + d] = (float)(i % 37) * 0.1f + gauss();
	}
	for (int a = 0; a < n_av; a++) {
		assert_int_equal(fz_cache_isa_set(av[a]), 0);
		struct fz_cache *ca = mk_cache(FZ_CACHE_KMEANS, D, 1, K, 0);
		assert_int_equal(fz_cache_build(ca, pts, lab, NP, 5), 0);
		for (int s = 0; s < K; s++) {
			int rc = fz_cache_read_entry(ca, s, a ? key : ref + s * D, a ? &l : &rl[s]);
			assert_int_equal(rc, 0);
			if (a && (l != rl[s] || memcmp(key, ref + s * D, sizeof(key))))
				fail_msg("%s k-means centroid %d differs from portable", av[a], s);
		}
		/* and k-means answers (fraction / distance) on the training points */
		assert_int_equal(fz_cache_lookup_keys(ca, pts, 200, a ? res : res0), 0);
		for (int j = 0; a && j < 200; j++)
			if (res[j].label != res0[j].label || res[j].hit != res0[j].hit ||
			    memcmp(&res[j].conf, &res0[j].conf, sizeof(float)))
				fail_msg("%s k-means answer %d differs from portable", av[a], j);
		fz_cache_free(ca);
	}
	fz_cache_isa_set(NULL);
	free(pts);
}

/* Against double precision: labels agree except where two neighbours are nearly tied, and
 * confidences within float rounding (gamma_67 on d^2, see the top of this file). */
static void test_lookup_vs_double(void **state)
{
	(void)state;
	enum { D = 64, NP = 1024, NQ = 256 };
	float *pts = malloc((size_t)NP * D * sizeof(float));
	float *q = malloc((size_t)NQ * D * sizeof(float));
	int lab[NP];
	struct fz_cache_result r[NQ];

	for (int i = 0; i < NP * D; i++)
		pts[i] = gauss();
	for (int i = 0; i < NQ * D; i++)
		q[i] = gauss();
	for (int i = 0; i < NP; i++)
		lab[i] = i % 10;
	struct fz_cache *ca = mk_cache(FZ_CACHE_KNN, D, 1, NP, 0);
	assert_int_equal(fz_cache_build(ca, pts, lab, NP, 1), 0);
	assert_int_equal(fz_cache_lookup_keys(ca, q, NQ, r), 0);
	int near_ties = 0;
	for (int j = 0; j < NQ; j++) {
		double b1 = INFINITY, b2 = INFINITY;
		int l1 = -1;
		for (int i = 0; i < NP; i++) {
			double s = 0;
			for (int d = 0; d < D; d++) {
				double t = (double)q[j * D + d] - pts[i * D + d];
				s += t * t;
			}
			if (s < b1)
				b2 = b1, b1 = s, l1 = lab[i];
			else if (s < b2)
				b2 = s;
		}
		double conf = 1.0 / sqrt(b1);
		assert_float_equal(r[j].conf, conf, 1e-5 * conf);
		if (b2 - b1 < 1e-5 * b1)
			near_ties++;
		else
			assert_int_equal(r[j].label, l1);
	}
	print_message("  %d of %d queries nearly tied (label not compared)\n", near_ties, NQ);
	fz_cache_free(ca);
	free(pts);
	free(q);
}

/* CRC32C: the check value, and the crc32 instruction equals the tables for every length and
 * alignment. */
static void test_isa_crc32c(void **state)
{
	(void)state;
	const char *av[N_LEVELS];
	int n_av = available(av);
	unsigned char buf[400]; /* up to 35 + 39 * 7 bytes read below */
	uint32_t ref[64][40];

	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (unsigned char)(frand() * 256);
	for (int a = 0; a < n_av; a++) {
		assert_int_equal(fz_cache_isa_set(av[a]), 0);
		assert_int_equal(fz_crc32c(0, "123456789", 9), 0xe3069283u);
		assert_int_equal(fz_crc32c(0, "", 0), 0);
		/* continuing a CRC over two pieces equals one pass */
		assert_int_equal(fz_crc32c(fz_crc32c(0, buf, 77), buf + 77, 200), fz_crc32c(0, buf, 277));
		for (int off = 0; off < 8; off++)
			for (int len = 0; len < 40; len++) {
				uint32_t c = fz_crc32c(0x12345678u, buf + off * 5, (size_t)len * 7);
				if (!a)
					ref[off][len] = c;
				else
					assert_int_equal(c, ref[off][len]);
			}
	}
	fz_cache_isa_set(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_isa_select),
		cmocka_unit_test(test_isa_same_pooling),
		cmocka_unit_test(test_isa_same_keys),
		cmocka_unit_test(test_isa_lookups_exact),
		cmocka_unit_test(test_isa_gemm_hard_cases),
		cmocka_unit_test(test_isa_same_kmeans),
		cmocka_unit_test(test_lookup_vs_double),
		cmocka_unit_test(test_isa_crc32c),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
