/* Tests of cachecore: keys, lookup against a brute-force reference, k-means, thresholds, online insert. */
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

static uint64_t rs = 42;

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

static struct fz_cache *mk(enum fz_cache_kind kind, int c, int grid, int dims, bool l2, int k,
			   int size, int capacity)
{
	struct fz_cache_params p;

	fz_cache_params_default(&p);
	strcpy(p.layer, "t");
	p.kind = kind;
	p.grid = grid;
	p.dims = dims;
	p.l2 = l2;
	p.k = k;
	p.size = size;
	p.capacity = capacity;
	struct fz_cache *ca = fz_cache_create(&p, c, 4, 4, 10);
	assert_non_null(ca);
	return ca;
}


/* Pooling reads every layout oneDNN may choose (nchw, nhwc, channel blocks of 4, 8, 16 and an
 * odd 5, with padded channels and padded sample strides) exactly like plain NCHW. */
static void pool_layouts_case(const int C)
{
	enum { H = 7, W = 7, G = 2, N = 3 };
	struct fz_cache_params p;
	fz_cache_params_default(&p);
	p.grid = G;
	p.dims = 0;
	p.l2 = false;
	struct fz_cache *ca = fz_cache_create(&p, C, H, W, 10);
	assert_non_null(ca);
	struct fz_act_layout lp = mk_layout(C, H, W, 1, false, 0);
	assert_true(fz_layout_is_nchw(&lp));
	float *plain = calloc(N * lp.sample_stride, sizeof(float));
	for (size_t i = 0; i < N * lp.sample_stride; i++)
		plain[i] = frand();
	float a[N * C * G * G], b[N * C * G * G];
	assert_int_equal(fz_cache_pool_burst(ca, plain, &lp, N, a), 0);
	const struct fz_act_layout other[] = {
		mk_layout(C, H, W, 1, true, 3), mk_layout(C, H, W, 4, false, 0),
		mk_layout(C, H, W, 8, false, 8), mk_layout(C, H, W, 16, false, 5),
		mk_layout(C, H, W, 5, false, 1),
	};
	for (size_t k = 0; k < sizeof(other) / sizeof(other[0]); k++) {
		const struct fz_act_layout *l = &other[k];
		float *x = malloc(N * l->sample_stride * sizeof(float));
		for (size_t i = 0; i < N * l->sample_stride; i++)
			x[i] = 1e30f; /* padding must never be read */
		for (int n = 0; n < N; n++)
			for (int c = 0; c < C; c++)
				for (int y = 0; y < H; y++)
					for (int xx = 0; xx < W; xx++)
						x[n * l->sample_stride + fz_layout_offset(l, c, y, xx)] =
							plain[n * lp.sample_stride +
							      fz_layout_offset(&lp, c, y, xx)];
		char err[256] = "";
		assert_int_equal(fz_cache_layout_check(ca, l, err, sizeof(err)), 0);
		assert_int_equal(fz_cache_pool_burst(ca, x, l, N, b), 0);
		for (int i = 0; i < N * C * G * G; i++)
			assert_float_equal(a[i], b[i], 1e-5);
		free(x);
	}
	/* reference: cell (1,0) of channel 3 of sample 2 covers y 3..6, x 0..3 (adaptive bounds) */
	double s = 0;
	for (int y = 3; y < 7; y++)
		for (int x = 0; x < 4; x++)
			s += plain[2 * lp.sample_stride + 3 * H * W + y * W + x];
	assert_float_equal(a[2 * C * G * G + 3 * G * G + 1 * G + 0], s / 16, 1e-5);
	/* refused by name: another shape, a block too wide to read, overlapping samples */
	char err[256];
	struct fz_act_layout bad = lp;
	bad.c = C - 1;
	assert_int_equal(fz_cache_pool_burst(ca, plain, &bad, 1, a), -EINVAL);
	assert_int_equal(fz_cache_layout_check(ca, &bad, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "nChw1c"));
	bad = mk_layout(C, H, W, 128, false, 0);
	assert_int_equal(fz_cache_layout_check(ca, &bad, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "nChw128c"));
	bad = lp;
	bad.sample_stride -= 1;
	assert_int_equal(fz_cache_layout_check(ca, &bad, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "overlap"));
	free(plain);
	fz_cache_free(ca);
}

static void test_pool_layouts(void **state)
{
	(void)state;
	pool_layouts_case(20); /* nhwc: 16 channels, then a tail of 4 */
	pool_layouts_case(26); /* nhwc: 16, then 8 at once and 2 singly */
}

/* knn lookup equals a brute-force computation of C_i = (m_i/k) * sum 1/d_j. */
static void test_knn_brute_force(void **state)
{
	(void)state;
	enum { D = 12, NP = 300, NQ = 70, K = 7 };
	struct fz_cache *ca = mk(FZ_CACHE_KNN, D, 1, 0, false, K, 400, 0);
	float *pts = malloc(NP * D * sizeof(float)), *q = malloc(NQ * D * sizeof(float));
	int lab[NP];
	for (int i = 0; i < NP * D; i++)
		pts[i] = gauss();
	for (int i = 0; i < NP; i++)
		lab[i] = (int)(frand() * 10) % 10;
	for (int i = 0; i < NQ * D; i++)
		q[i] = gauss();
	assert_int_equal(fz_cache_build(ca, pts, lab, NP, 1), 0);
	assert_int_equal(fz_cache_entries(ca), NP);
	fz_cache_set_threshold(ca, 1.0f);
	struct fz_cache_result res[NQ];
	assert_int_equal(fz_cache_lookup_keys(ca, q, NQ, res), 0);
	for (int j = 0; j < NQ; j++) {
		float d[NP];
		int used[NP] = { 0 }, nn[K];
		for (int i = 0; i < NP; i++) {
			double s = 0;
			for (int e = 0; e < D; e++)
				s += (q[j * D + e] - pts[i * D + e]) * (q[j * D + e] - pts[i * D + e]);
			d[i] = (float)sqrt(s);
		}
		for (int t = 0; t < K; t++) {
			int b = -1;
			for (int i = 0; i < NP; i++)
				if (!used[i] && (b < 0 || d[i] < d[b]))
					b = i;
			used[b] = 1;
			nn[t] = b;
		}
		double best = -1;
		int bl = -1;
		for (int l = 0; l < 10; l++) {
			int m = 0;
			double inv = 0;
			for (int t = 0; t < K; t++)
				if (lab[nn[t]] == l)
					m++, inv += 1.0 / d[nn[t]];
			double ci = (double)m / K * inv;
			if (m && ci > best)
				best = ci, bl = l;
		}
		assert_int_equal(res[j].label, bl);
		assert_float_equal(res[j].conf, best, 1e-3 * best);
		assert_int_equal(res[j].hit, best > 1.0);
	}
	/* disabled: same answers, never a hit */
	fz_cache_set_enabled(ca, false);
	fz_cache_set_threshold(ca, 0.0f);
	assert_int_equal(fz_cache_lookup_keys(ca, q, NQ, res), 0);
	for (int j = 0; j < NQ; j++)
		assert_false(res[j].hit);
	free(pts);
	free(q);
	fz_cache_free(ca);
}

/* k-means finds four well-separated clusters, their labels and fractions. */
static void test_kmeans_toy(void **state)
{
	(void)state;
	enum { D = 4, PER = 200, NC = 4 };
	const float centre[4][4] = { { 10, 0, 0, 0 }, { 0, 10, 0, 0 }, { 0, 0, 10, 0 }, { 0, 0, 0, 10 } };
	float *pts = malloc(PER * NC * D * sizeof(float));
	int lab[PER * NC];
	for (int c = 0; c < NC; c++)
		for (int i = 0; i < PER; i++) {
			for (int d = 0; d < D; d++)
				pts[(c * PER + i) * D + d] = centre[c][d] + 0.3f * gauss();
			/* cluster 3 is mixed: 3/4 label 7, 1/4 label 8 */
			lab[c * PER + i] = c < 3 ? c : (i % 4 ? 7 : 8);
		}
	struct fz_cache *ca = mk(FZ_CACHE_KMEANS, D, 1, 0, false, 1, NC, 0);
	assert_int_equal(fz_cache_build(ca, pts, lab, PER * NC, 7), 0);
	assert_int_equal(fz_cache_entries(ca), NC);
	for (int c = 0; c < NC; c++) {
		struct fz_cache_result r;
		assert_int_equal(fz_cache_lookup_keys(ca, centre[c], 1, &r), 0);
		assert_int_equal(r.label, c < 3 ? c : 7);
		/* nearest centroid within ~0.1 of the true centre; conf = frac / dist */
		float frac = c < 3 ? 1.0f : 0.75f;
		assert_true(r.conf > frac / 0.15f);
	}
	/* the stored centroid's fraction: read it back through the entry API */
	int found = 0;
	for (int s = 0; s < fz_cache_slots(ca); s++) {
		float key[4];
		int l;
		if (fz_cache_read_entry(ca, s, key, &l) == 0) {
			int c = l < 3 ? l : 3;
			for (int d = 0; d < D; d++)
				assert_float_equal(key[d], centre[c][d], 0.1);
			found++;
		}
	}
	assert_int_equal(found, NC);
	free(pts);
	fz_cache_free(ca);
}

/* A NaN key made a k-means lookup a hit of the largest confidence there is (the NaN distance
 * vanished in fmaxf); NaN or infinity anywhere in a key is a miss, for every kind. */
static void test_nan_key_kmeans_max_confidence_hit(void **state)
{
	(void)state;
	enum { D = 4, PER = 50, NC = 2 };
	float pts[PER * NC * D];
	int lab[PER * NC];
	for (int c = 0; c < NC; c++)
		for (int i = 0; i < PER; i++) {
			for (int d = 0; d < D; d++)
				pts[(c * PER + i) * D + d] = (d == c ? 10.0f : 0.0f) + 0.3f * gauss();
			lab[c * PER + i] = c;
		}
	const enum fz_cache_kind kinds[] = {FZ_CACHE_KMEANS, FZ_CACHE_KNN};
	for (unsigned kk = 0; kk < 2; kk++) {
		struct fz_cache *ca = mk(kinds[kk], D, 1, 0, false, kinds[kk] == FZ_CACHE_KNN ? 4 : 1,
					 kinds[kk] == FZ_CACHE_KNN ? PER * NC : NC, 0);
		assert_int_equal(fz_cache_build(ca, pts, lab, PER * NC, 7), 0);
		fz_cache_set_gate(ca, (struct fz_cache_gate){.thr = 0.5f, .on = true});
		const float good[D] = {10, 0, 0, 0};
		struct fz_cache_result r;
		assert_int_equal(fz_cache_lookup_keys(ca, good, 1, &r), 0);
		assert_true(r.hit); /* the gate lets real answers through */
		const float bad[3][D] = {{NAN, 0, 0, 0}, {10, INFINITY, 0, 0}, {-INFINITY, 0, 0, 0}};
		for (int b = 0; b < 3; b++) {
			struct fz_cache_result rs[2];
			float two[2 * D];
			memcpy(two, bad[b], sizeof(bad[b]));
			memcpy(two + D, good, sizeof(good)); /* a good key in the same burst */
			assert_int_equal(fz_cache_lookup_keys(ca, two, 2, rs), 0);
			assert_false(rs[0].hit);
			assert_int_equal(rs[0].label, FZ_CACHE_LABEL_NONE);
			assert_true(rs[0].conf == 0.0f);
			assert_true(rs[1].hit);
		}
		fz_cache_free(ca);
	}
}

/* Thresholds on a constructed case with known answers. */
static void test_thresholds_known(void **state)
{
	(void)state;
	enum { L = 2, N = 10 };
	/* layer 0: confidences 1..10; wrong at 3 and 6 -> zero-error threshold 6 (exits 7..10). */
	/* layer 1: confidences 10..1;  wrong at conf 9 (sample 1) -> zero-error threshold 9. */
	float conf[L * N];
	bool agree[L * N];
	for (int j = 0; j < N; j++) {
		conf[j] = (float)(j + 1);
		agree[j] = !(j + 1 == 3 || j + 1 == 6);
		conf[N + j] = (float)(N - j);
		agree[N + j] = j != 1;
	}
	enum fz_cache_thr_mode mode[L] = { FZ_CACHE_THR_ZERO_ERROR, FZ_CACHE_THR_ZERO_ERROR };
	bool en[L] = { true, true };
	float thr[L];
	int exit[N];
	assert_int_equal(fz_cache_calibrate_thresholds(mode, en, NULL, L, conf, agree, N, 0, NULL, thr), 0);
	assert_float_equal(thr[0], 6, 0);
	assert_float_equal(thr[1], 9, 0);
	assert_int_equal(fz_cache_cascade(en, thr, L, conf, agree, N, exit), 0);
	/* samples 6..9 exit at layer 0, sample 0 (conf 10) at layer 1, the rest run everything */
	int want[N] = { 1, 2, 2, 2, 2, 2, 0, 0, 0, 0 };
	for (int j = 0; j < N; j++)
		assert_int_equal(exit[j], want[j]);

	/* budget 1/10: one disagreement allowed. The best single move is layer 0 down to 3
	 * (admits samples 3..5 and the wrong sample 5: +3 exits for 1 error) vs layer 1 down to
	 * its next wrong (none left: to 0, admitting samples 1..5, of which sample 1 is wrong:
	 * +5 exits... minus those already exiting). Layer 1 wins: exits 6..9 at 0, 0..5 at 1. */
	mode[0] = mode[1] = FZ_CACHE_THR_BUDGET;
	assert_int_equal(fz_cache_calibrate_thresholds(mode, en, NULL, L, conf, agree, N, 0.1, NULL, thr), 0);
	size_t wrong = fz_cache_cascade(en, thr, L, conf, agree, N, exit);
	assert_int_equal(wrong, 1);
	for (int j = 0; j < N; j++)
		assert_true(exit[j] < L);
	assert_float_equal(thr[0], 6, 0);
	assert_float_equal(thr[1], 0, 0);

	/* with gain {10, 1} an exit at layer 0 is worth ten at layer 1: lowering layer 0 to 3
	 * (+3 exits there, 1 error) beats lowering layer 1 to 0 (+5 exits there, 1 error) */
	double gain[L] = { 10, 1 };
	assert_int_equal(fz_cache_calibrate_thresholds(mode, en, NULL, L, conf, agree, N, 0.1, gain,
						       thr), 0);
	assert_float_equal(thr[0], 3, 0);
	assert_float_equal(thr[1], 9, 0);
	assert_int_equal(fz_cache_cascade(en, thr, L, conf, agree, N, exit), 1);

	/* disabled layer: infinite threshold; fixed: kept */
	en[0] = false;
	mode[1] = FZ_CACHE_THR_FIXED;
	float fixed[L] = { 0, 4.5f };
	assert_int_equal(fz_cache_calibrate_thresholds(mode, en, fixed, L, conf, agree, N, 0, NULL, thr), 0);
	assert_true(isinf(thr[0]));
	assert_float_equal(thr[1], 4.5f, 0);
}

/* PCA recovers a 2-D subspace embedded in 8 dims: keys keep the pairwise distances. */
static void test_pca_subspace(void **state)
{
	(void)state;
	enum { P = 8, N = 500 };
	float *x = malloc(N * P * sizeof(float));
	for (int i = 0; i < N; i++) {
		float a = 3 * gauss(), b = gauss();
		for (int d = 0; d < P; d++)
			x[i * P + d] = 5.0f + a * (d % 2 ? 0.5f : -0.5f) + b * (d < 4 ? 0.5f : -0.5f);
	}
	struct fz_cache *ca = mk(FZ_CACHE_KMEANS, P, 1, 2, false, 1, 16, 0);
	assert_int_equal(fz_cache_fit_pca(ca, x, N, 0), 0);
	float k[N * 2];
	assert_int_equal(fz_cache_project_burst(ca, x, N, k), 0);
	for (int t = 0; t < 50; t++) {
		int i = t, j = N - 1 - t;
		double dx = 0, dk = 0;
		for (int d = 0; d < P; d++)
			dx += (x[i * P + d] - x[j * P + d]) * (x[i * P + d] - x[j * P + d]);
		for (int d = 0; d < 2; d++)
			dk += (k[i * 2 + d] - k[j * 2 + d]) * (k[i * 2 + d] - k[j * 2 + d]);
		assert_float_equal(sqrt(dx), sqrt(dk), 1e-3 + 1e-3 * sqrt(dx));
	}
	free(x);
	fz_cache_free(ca);
}

/* Online insert: a repeated key exits; full online slots evict by CLOCK, sparing hit entries. */
static void test_online_clock(void **state)
{
	(void)state;
	const int D = 4;
	struct fz_cache *ca = mk(FZ_CACHE_KMEANS, D, 1, 0, false, 1, 4, 3);
	float base[4 * 4] = { 100, 0, 0, 0, 0, 100, 0, 0, 0, 0, 100, 0, 0, 0, 0, 100 };
	int bl[4] = { 0, 1, 2, 3 };
	assert_int_equal(fz_cache_build(ca, base, bl, 4, 1), 0);
	fz_cache_set_threshold(ca, 10.0f);
	float k[4][4] = { { 1, 1, 1, 1 }, { 2, 2, 2, 2 }, { 3, 3, 3, 3 }, { 4, 4, 4, 4 } };
	struct fz_cache_result r;
	assert_int_equal(fz_cache_lookup_keys(ca, k[0], 1, &r), 0);
	assert_false(r.hit);
	for (int i = 0; i < 3; i++)
		assert_int_equal(fz_cache_insert(ca, k[i], 5 + i), 0);
	assert_int_equal(fz_cache_entries(ca), 7);
	assert_int_equal(fz_cache_lookup_keys(ca, k[0], 1, &r), 0);
	assert_true(r.hit);
	assert_int_equal(r.label, 5);
	/* k[0] was hit (reference bit set): the next insert evicts k[1] instead */
	assert_int_equal(fz_cache_insert(ca, k[3], 9), 0);
	assert_int_equal(fz_cache_lookup_keys(ca, k[0], 1, &r), 0);
	assert_int_equal(r.label, 5);
	assert_int_equal(fz_cache_lookup_keys(ca, k[1], 1, &r), 0);
	assert_int_not_equal(r.label, 6);
	assert_int_equal(fz_cache_lookup_keys(ca, k[3], 1, &r), 0);
	assert_int_equal(r.label, 9);
	/* calibrated entries are never evicted */
	assert_int_equal(fz_cache_lookup_keys(ca, base + 8, 1, &r), 0);
	assert_int_equal(r.label, 2);
	assert_int_equal(fz_cache_insert(ca, k[0], 10), -EINVAL);
	fz_cache_free(ca);
	ca = mk(FZ_CACHE_KNN, D, 1, 0, false, 1, 4, 0);
	assert_int_equal(fz_cache_insert(ca, k[0], 1), -ENOSPC);
	fz_cache_free(ca);
}

/* An online entry the full model contradicts is forgotten; calibrated entries cannot be. */
static void test_online_forget(void **state)
{
	(void)state;
	const int D = 4;
	struct fz_cache *ca = mk(FZ_CACHE_KMEANS, D, 1, 0, false, 1, 4, 3);
	float base[4 * 4] = { 100, 0, 0, 0, 0, 100, 0, 0, 0, 0, 100, 0, 0, 0, 0, 100 };
	int bl[4] = { 0, 1, 2, 3 };
	assert_int_equal(fz_cache_build(ca, base, bl, 4, 1), 0);
	fz_cache_set_threshold(ca, 10.0f);
	float k[4] = { 1, 1, 1, 1 };
	struct fz_cache_result r;
	assert_int_equal(fz_cache_insert(ca, k, 5), 0);
	assert_int_equal(fz_cache_lookup_keys(ca, k, 1, &r), 0);
	assert_true(r.hit);
	assert_int_equal(r.label, 5);
	const int online = r.slot;
	assert_true(online >= 4);
	assert_int_equal(fz_cache_lookup_keys(ca, base, 1, &r), 0);
	assert_int_equal(fz_cache_forget(ca, r.slot), -EINVAL); /* calibrated */
	assert_int_equal(fz_cache_forget(ca, online), 0);
	assert_int_equal(fz_cache_forget(ca, online), -EINVAL); /* already empty */
	assert_int_equal(fz_cache_lookup_keys(ca, k, 1, &r), 0);
	assert_false(r.hit && r.label == 5);
	assert_true(r.slot != online);
	assert_int_equal(fz_cache_forget(ca, 99), -EINVAL);
	fz_cache_free(ca);
}

/* LRU evicts the entry used longest ago. */
static void test_online_lru(void **state)
{
	(void)state;
	struct fz_cache_params p;
	fz_cache_params_default(&p);
	p.kind = FZ_CACHE_KNN;
	p.grid = 1;
	p.dims = 0;
	p.k = 1;
	p.l2 = false;
	p.size = 1;
	p.capacity = 2;
	p.evict = FZ_CACHE_EVICT_LRU;
	struct fz_cache *ca = fz_cache_create(&p, 2, 1, 1, 10);
	assert_non_null(ca);
	float a[2] = { 1, 1 }, b[2] = { 5, 5 }, c[2] = { 9, 9 };
	struct fz_cache_result r;
	assert_int_equal(fz_cache_insert(ca, a, 1), 0);
	assert_int_equal(fz_cache_insert(ca, b, 2), 0);
	assert_int_equal(fz_cache_lookup_keys(ca, a, 1, &r), 0); /* a used last */
	assert_int_equal(r.label, 1);
	assert_int_equal(fz_cache_insert(ca, c, 3), 0); /* evicts b */
	assert_int_equal(fz_cache_lookup_keys(ca, b, 1, &r), 0);
	assert_int_not_equal(r.label, 2);
	assert_int_equal(fz_cache_lookup_keys(ca, a, 1, &r), 0);
	assert_int_equal(r.label, 1);
	fz_cache_free(ca);
}

/* Bad parameters are refused. */
static void test_create_invalid(void **state)
{
	(void)state;
	struct fz_cache_params p;
	fz_cache_params_default(&p);
	p.grid = 5;
	assert_null(fz_cache_create(&p, 16, 4, 4, 10));
	assert_int_equal(errno, EINVAL);
	fz_cache_params_default(&p);
	p.kind = FZ_CACHE_KNN;
	p.k = 0;
	assert_null(fz_cache_create(&p, 16, 4, 4, 10));
	fz_cache_params_default(&p);
	p.grid = 1;
	p.dims = 300;
	assert_null(fz_cache_create(&p, 512, 4, 4, 10)); /* a 512-float key: above the limit */
	/* PCA to as many dims as the pooled key (or more) is no projection */
	p.dims = 17;
	struct fz_cache *c = fz_cache_create(&p, 16, 4, 4, 10);
	assert_non_null(c);
	assert_int_equal(fz_cache_key_dim(c), 16);
	assert_int_equal(fz_cache_params(c)->dims, 0);
	fz_cache_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pool_layouts),
		cmocka_unit_test(test_knn_brute_force),
		cmocka_unit_test(test_kmeans_toy),
		cmocka_unit_test(test_nan_key_kmeans_max_confidence_hit),
		cmocka_unit_test(test_thresholds_known),
		cmocka_unit_test(test_pca_subspace),
		cmocka_unit_test(test_online_clock),
		cmocka_unit_test(test_online_forget),
		cmocka_unit_test(test_online_lru),
		cmocka_unit_test(test_create_invalid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
