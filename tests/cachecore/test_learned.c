/* Tests of learned caches: the predictor's logits against a double reference, the answer rules
 * (log-odds, guard, confirmation), every SIMD level's bits, and snapshots that keep it all. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fz_cache.h"

#define C 16 /* channels of the tap */
#define G 2  /* grid: pooled = 64 */
#define P (C * G * G)
#define H 24 /* hidden units: not a multiple of 16, so padding is exercised */
#define K 10 /* classes */

static uint64_t rs = 7;

static float frand(void) /* [-1, 1) */
{
	rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
	return (float)((rs >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

struct head_data {
	float w1[H * P], b1[H], w2[K * H], b2[K], mean[P], isd[P];
	struct fz_cache_head h;
};

static void make_head(struct head_data *d, int hidden, float radius)
{
	int n1 = hidden ? hidden : K;
	for (int i = 0; i < n1 * P; i++)
		d->w1[i] = frand() * 0.3f;
	for (int i = 0; i < n1; i++)
		d->b1[i] = frand() * 0.1f;
	for (int i = 0; i < K * H; i++)
		d->w2[i] = frand() * 0.5f;
	for (int i = 0; i < K; i++)
		d->b2[i] = frand() * 0.1f;
	for (int i = 0; i < P; i++) {
		d->mean[i] = frand() * 0.1f;
		d->isd[i] = 1.0f + 0.5f * frand();
	}
	d->h = (struct fz_cache_head){hidden, d->w1, d->b1, hidden ? d->w2 : NULL,
				      hidden ? d->b2 : NULL, d->mean, d->isd, 1.5f, radius};
}

static struct fz_cache *learned(int hidden, bool confirm)
{
	struct fz_cache_params p;
	fz_cache_params_default(&p);
	p.kind = FZ_CACHE_LEARNED;
	p.hidden = hidden;
	p.grid = G;
	p.confirm = confirm;
	p.dims = 8;
	p.size = 32;
	snprintf(p.layer, sizeof(p.layer), "block1");
	struct fz_cache *c = fz_cache_create(&p, C, 4, 4, K);
	assert_non_null(c);
	return c;
}

/* The predictor in double: logits z, the guard. */
static void reference(const struct head_data *d, int hidden, const float *x, double *z, double *g)
{
	double h[H];
	*g = 0;
	for (int i = 0; i < P; i++)
		*g += ((double)x[i] - d->mean[i]) * d->isd[i] * ((double)x[i] - d->mean[i]) * d->isd[i];
	int n1 = hidden ? hidden : K;
	for (int o = 0; o < n1; o++) {
		double a = d->b1[o];
		for (int i = 0; i < P; i++)
			a += (double)d->w1[o * P + i] * x[i];
		if (hidden)
			h[o] = a > 0 ? a : 0;
		else
			z[o] = a;
	}
	for (int o = 0; hidden && o < K; o++) {
		double a = d->b2[o];
		for (int i = 0; i < hidden; i++)
			a += (double)d->w2[o * hidden + i] * h[i];
		z[o] = a;
	}
}

static void test_logits_match_reference(void **state)
{
	(void)state;
	for (int hidden = 0; hidden <= H; hidden += H) {
		static struct head_data d;
		make_head(&d, hidden, 1e6f);
		struct fz_cache *c = learned(hidden, false);
		assert_int_equal(fz_cache_set_head(c, &d.h), 0);
		assert_int_equal(fz_cache_key_dim(c), K + 1);
		float x[7 * P], keys[7 * (K + 1)];
		for (int i = 0; i < 7 * P; i++)
			x[i] = frand();
		assert_int_equal(fz_cache_project_burst(c, x, 7, keys), 0);
		struct fz_cache_result r[7];
		assert_int_equal(fz_cache_lookup_keys(c, keys, 7, r), 0);
		for (int s = 0; s < 7; s++) {
			double z[K], g;
			reference(&d, hidden, x + s * P, z, &g);
			int best = 0;
			for (int j = 0; j < K; j++) {
				assert_true(fabs(keys[s * (K + 1) + j] - z[j]) < 1e-4 * (1 + fabs(z[j])));
				if (z[j] > z[best])
					best = j;
			}
			assert_true(fabs(keys[s * (K + 1) + K] - g) < 1e-4 * (1 + g));
			/* log-odds of the tempered softmax, never below 0 */
			double rest = 0;
			for (int j = 0; j < K; j++)
				if (j != best)
					rest += exp((z[j] - z[best]) / 1.5);
			double lo = -log(rest);
			assert_int_equal(r[s].label, best);
			assert_true(fabs(r[s].conf - (lo > 0 ? lo : 0)) < 1e-3);
		}
		fz_cache_free(c);
	}
}

static void test_guard_and_threshold(void **state)
{
	(void)state;
	static struct head_data d;
	make_head(&d, 0, 3.0f);
	struct fz_cache *c = learned(0, false);
	struct fz_cache_result r;
	float key[K + 1] = {0};
	key[3] = 10.0f; /* sure of class 3 */
	key[K] = 8.9f;  /* guard inside radius^2 = 9 */
	/* no predictor yet: abstains */
	assert_false(fz_cache_ready(c));
	assert_int_equal(fz_cache_lookup_keys(c, key, 1, &r), 0);
	assert_false(r.hit);
	assert_int_equal(fz_cache_set_head(c, &d.h), 0);
	assert_true(fz_cache_ready(c));
	fz_cache_set_threshold(c, 4.0f);
	assert_int_equal(fz_cache_lookup_keys(c, key, 1, &r), 0);
	assert_int_equal(r.label, 3);
	assert_true(r.hit); /* 10 / 1.5 - log(9) = 4.47 > 4 */
	fz_cache_set_threshold(c, 4.5f);
	assert_int_equal(fz_cache_lookup_keys(c, key, 1, &r), 0);
	assert_false(r.hit);
	fz_cache_set_threshold(c, 0.0f);
	key[K] = 9.1f; /* outside the guard: abstains whatever the logits say */
	assert_int_equal(fz_cache_lookup_keys(c, key, 1, &r), 0);
	assert_false(r.hit);
	assert_true(r.conf == 0.0f);
	key[K] = NAN;
	assert_int_equal(fz_cache_lookup_keys(c, key, 1, &r), 0);
	assert_false(r.hit);
	/* bad predictors are refused */
	d.h.temperature = 0.0f;
	assert_int_equal(fz_cache_set_head(c, &d.h), -EINVAL);
	d.h.temperature = 1.5f;
	d.w1[5] = INFINITY;
	assert_int_equal(fz_cache_set_head(c, &d.h), -EINVAL);
	d.w1[5] = 0.0f;
	d.h.hidden = 8; /* the cache was made for a linear one */
	assert_int_equal(fz_cache_set_head(c, &d.h), -EINVAL);
	fz_cache_free(c);
}

/* Keys of n samples around two prototypes, labelled by prototype; the predictor says class 1
 * for everything. The confirmer (k-means) agrees only near prototype 1. */
static void test_confirmation(void **state)
{
	(void)state;
	static struct head_data d;
	make_head(&d, 0, 1e6f);
	memset(d.w1, 0, sizeof(d.w1));
	memset(d.b1, 0, sizeof(d.b1));
	d.b1[1] = 20.0f;
	struct fz_cache *c = learned(0, true);
	assert_non_null(fz_cache_confirmer(c));
	assert_int_equal(fz_cache_set_head(c, &d.h), 0);
	enum { N = 400 };
	static float x[N * P];
	int lab[N];
	for (int s = 0; s < N; s++) {
		lab[s] = s % 2 ? 1 : 4;
		for (int i = 0; i < P; i++)
			x[s * P + i] = (lab[s] == 1 ? 1.0f : -1.0f) * (i % 3 ? 1.0f : 0.2f) +
				       0.05f * frand();
	}
	assert_int_equal(fz_cache_fit_pca(c, x, N, 0), 0);
	static float keys[N * (K + 1 + 64)];
	assert_int_equal(fz_cache_project_burst(c, x, N, keys), 0);
	assert_int_equal(fz_cache_build(c, keys, lab, N, 1), 0);
	fz_cache_set_threshold(fz_cache_confirmer(c), 0.0f);
	fz_cache_set_threshold(c, 1.0f);
	struct fz_cache_result r[64];
	assert_int_equal(fz_cache_lookup_keys(c, keys, 64, r), 0);
	for (int s = 0; s < 64; s++) {
		assert_int_equal(r[s].label, 1);
		assert_int_equal(r[s].hit, lab[s] == 1); /* confirmed only where k-means says 1 */
	}
	/* far from every centroid: a high confirmer threshold holds everything back */
	fz_cache_set_threshold(fz_cache_confirmer(c), 1e30f);
	assert_int_equal(fz_cache_lookup_keys(c, keys, 64, r), 0);
	for (int s = 0; s < 64; s++)
		assert_false(r[s].hit);
	fz_cache_free(c);
}

static void test_levels_bit_identical(void **state)
{
	(void)state;
	static const char *const lv[] = {"portable", "avx2", "avx512"};
	static struct head_data d;
	make_head(&d, H, 1e6f);
	struct fz_cache *c = learned(H, false);
	assert_int_equal(fz_cache_set_head(c, &d.h), 0);
	float x[13 * P], ref[13 * (K + 1)], got[13 * (K + 1)];
	for (int i = 0; i < 13 * P; i++)
		x[i] = frand();
	assert_int_equal(fz_cache_isa_set("portable"), 0);
	assert_int_equal(fz_cache_project_burst(c, x, 13, ref), 0);
	int ran = 0;
	for (int l = 1; l < 3; l++) {
		if (fz_cache_isa_set(lv[l]) < 0)
			continue;
		ran++;
		assert_int_equal(fz_cache_project_burst(c, x, 13, got), 0);
		assert_memory_equal(ref, got, sizeof(ref));
	}
	fz_cache_isa_set(NULL);
	printf("learned: %d SIMD level(s) besides portable compared\n", ran);
	fz_cache_free(c);
}

static void test_snapshot_round_trip(void **state)
{
	(void)state;
	static struct head_data d;
	make_head(&d, H, 5.0f);
	struct fz_cache_set *s = fz_cache_set_new(42, K, 1);
	s->caches[0] = learned(H, true);
	struct fz_cache *c = s->caches[0];
	assert_int_equal(fz_cache_set_head(c, &d.h), 0);
	enum { N = 100 };
	static float x[N * P], keys[N * (K + 1 + 64)];
	int lab[N];
	for (int i = 0; i < N * P; i++)
		x[i] = frand();
	for (int i = 0; i < N; i++)
		lab[i] = i % K;
	assert_int_equal(fz_cache_fit_pca(c, x, N, 0), 0);
	assert_int_equal(fz_cache_project_burst(c, x, N, keys), 0);
	assert_int_equal(fz_cache_build(c, keys, lab, N, 3), 0);
	fz_cache_set_threshold(c, 0.7f);
	fz_cache_set_threshold(fz_cache_confirmer(c), 0.3f);
	char path[] = "/tmp/fz_learned_XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(fz_cache_set_save(s, path), 0);
	char err[256];
	struct fz_cache_set *t = fz_cache_set_load(path, 42, err, sizeof(err));
	assert_non_null(t);
	struct fz_cache *u = t->caches[0];
	assert_int_equal(fz_cache_params(u)->kind, FZ_CACHE_LEARNED);
	assert_int_equal(fz_cache_params(u)->hidden, H);
	assert_non_null(fz_cache_confirmer(u));
	assert_true(fz_cache_threshold(fz_cache_confirmer(u)) == 0.3f);
	static float k2[N * (K + 1 + 64)];
	assert_int_equal(fz_cache_project_burst(u, x, N, k2), 0);
	assert_memory_equal(keys, k2, sizeof(float) * (size_t)N * fz_cache_key_dim(c));
	struct fz_cache_result a[N], b[N];
	assert_int_equal(fz_cache_lookup_keys(c, keys, N, a), 0);
	assert_int_equal(fz_cache_lookup_keys(u, k2, N, b), 0);
	for (int i = 0; i < N; i++) {
		assert_int_equal(a[i].label, b[i].label);
		assert_int_equal(a[i].hit, b[i].hit);
		assert_true(a[i].conf == b[i].conf);
	}
	fz_cache_set_free(t);
	/* a flipped byte in the predictor is caught by the checksum: refused whole */
	FILE *f = fopen(path, "r+b");
	assert_non_null(f);
	fseek(f, 400, SEEK_SET);
	fputc(0x5a, f);
	fclose(f);
	assert_null(fz_cache_set_load(path, 42, err, sizeof(err)));
	assert_non_null(strstr(err, "checksum"));
	/* a record asking for 2^24 confirming centroids is refused before anything is allocated
	 * (the confirmer counts against the snapshot's memory bound) */
	assert_int_equal(fz_cache_set_save(s, path), 0);
	f = fopen(path, "r+b");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	long len = ftell(f);
	unsigned char *img = malloc((size_t)len);
	rewind(f);
	assert_int_equal(fread(img, 1, (size_t)len, f), (size_t)len);
	uint32_t huge = 1u << 24, dims = P; /* 2^24 keys of 64 floats: 4.6 GB */
	memcpy(img + 40 + FZ_NAME_MAX + 2 * 4, &dims, 4); /* the record's dims */
	memcpy(img + 40 + FZ_NAME_MAX + 5 * 4, &huge, 4); /* the record's size */
	uint32_t crc = fz_crc32c(0, img, (size_t)len - 8);
	memcpy(img + len - 8, &crc, 4);
	rewind(f);
	assert_int_equal(fwrite(img, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	free(img);
	assert_null(fz_cache_set_load(path, 42, err, sizeof(err)));
	assert_non_null(strstr(err, "MiB"));
	unlink(path);
	fz_cache_set_free(s);
}

static void test_config(void **state)
{
	(void)state;
	char err[512];
	const char *ok = "heads: h.safetensors\ncaches:\n  - {layer: block1, kind: learned, confirm: true}\n";
	struct fz_cache_config *cfg = fz_cache_config_parse("/a/b/c.yaml", ok, strlen(ok), err,
							    sizeof(err));
	assert_non_null(cfg);
	assert_string_equal(cfg->heads, "/a/b/h.safetensors");
	assert_true(cfg->caches[0].confirm);
	assert_true(cfg->confirm_keep == 0.75);
	fz_cache_config_free(cfg);
	const char *bad = "caches:\n  - {layer: block1, kind: kmeans, confirm: true}\n";
	assert_null(fz_cache_config_parse("c.yaml", bad, strlen(bad), err, sizeof(err)));
	assert_non_null(strstr(err, "c.yaml:2:"));
	assert_non_null(strstr(err, "confirm"));
	const char *keep = "confirm_keep: 1.5\nheads: h\ncaches:\n  - {layer: block1, kind: learned}\n";
	assert_null(fz_cache_config_parse("c.yaml", keep, strlen(keep), err, sizeof(err)));
	assert_non_null(strstr(err, "c.yaml:1:"));
	const char *onl = "heads: h\ncaches:\n  - {layer: block1, kind: learned, online: true, capacity: 8}\n";
	assert_null(fz_cache_config_parse("c.yaml", onl, strlen(onl), err, sizeof(err)));
	assert_non_null(strstr(err, "no entries"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_logits_match_reference),
		cmocka_unit_test(test_guard_and_threshold),
		cmocka_unit_test(test_confirmation),
		cmocka_unit_test(test_levels_bit_identical),
		cmocka_unit_test(test_snapshot_round_trip),
		cmocka_unit_test(test_config),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
