/* Tests of the front tiers (fz_front.h): input keys as weighted cell means that bound the pixels'
 * distance and keep level, contrast and sign; the near table's confirmed search on every SIMD
 * level; the exact table's repeats, pending slots, CLOCK eviction and generations, the near
 * table's nearest-within-radius, and the flow table's timeout. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fz_cache.h"
#include "fz_front.h"

static uint64_t rs = 11;
static unsigned urand(void)
{
	rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
	return (unsigned)(rs >> 33);
}

/* A blob on a black background, like a Fashion-MNIST item. */
static void blob(uint8_t *im, int cx, int cy, int r, float gain)
{
	for (int y = 0; y < 28; y++)
		for (int x = 0; x < 28; x++) {
			int d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy);
			float v = d2 <= r * r ? (float)(120 + (x * 7 + y * 3) % 100) : 0.f;
			v *= gain;
			im[y * 28 + x] = (uint8_t)(v > 255 ? 255 : v);
		}
}

/* Root-mean-square difference of two 28x28 images on the 0..1 scale. */
static double rms(const uint8_t *a, const uint8_t *b)
{
	double s = 0;
	for (int i = 0; i < 784; i++)
		s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
	return sqrt(s / 784) / 255;
}

static void key_is_weighted_cell_means(void **state)
{
	(void)state;
	assert_int_equal(fz_front_grid_auto(1, 28, 28), 8);
	assert_int_equal(fz_front_grid_auto(3, 224, 224), 4);
	assert_int_equal(fz_front_grid_auto(1, 2, 3), 2);
	struct fz_front_keyer *k = fz_front_keyer_create(1, 28, 28, 7);
	assert_non_null(k);
	assert_int_equal(fz_front_key_dim(k), 49);
	assert_int_equal(fz_front_key_pixels(k), 784);
	uint8_t im[784];
	for (int i = 0; i < 784; i++)
		im[i] = (uint8_t)urand();
	float key[FZ_FRONT_MAX_DIM];
	fz_front_key_u8(k, im, key);
	for (int i = 0; i < 7; i++)
		for (int j = 0; j < 7; j++) {
			double s = 0;
			for (int y = 4 * i; y < 4 * i + 4; y++)
				for (int x = 4 * j; x < 4 * j + 4; x++)
					s += im[y * 28 + x];
			assert_float_equal(key[i * 7 + j], s / 16 / 255 * sqrt(16.0 / 784), 1e-6);
		}
	fz_front_keyer_free(k);
	/* keys too long, or cells smaller than a pixel, are refused */
	assert_null(fz_front_keyer_create(3, 28, 28, 5)); /* 75 floats */
	assert_int_equal(errno, EINVAL);
	assert_null(fz_front_keyer_create(1, 2, 2, 3));
	assert_null(fz_front_keyer_create(1, 28, 28, 0));
}

/* The key's distance is a lower bound of the images' (what makes the scan exact), uneven
 * cells included; and it keeps what a model is sensitive to: level, contrast and sign. */
static void key_bounds_rms_and_keeps_level_contrast_sign(void **state)
{
	(void)state;
	for (int grid = 1; grid <= 8; grid++) {
		struct fz_front_keyer *k = fz_front_keyer_create(1, 28, 28, grid);
		const int d = fz_front_key_dim(k);
		for (int t = 0; t < 200; t++) {
			uint8_t a[784], b[784];
			float ka[FZ_FRONT_MAX_DIM], kb[FZ_FRONT_MAX_DIM];
			blob(a, 8 + (int)(urand() % 12), 8 + (int)(urand() % 12), 3 + (int)(urand() % 6),
			     1.f);
			for (int i = 0; i < 784; i++) { /* a random change: noise, a patch, a shift */
				int v = t % 3 == 0   ? a[i] + (int)(urand() % 41) - 20
					: t % 3 == 1 ? ((i % 28) > 10 && (i / 28) < 9 ? 255 : a[i])
						     : a[(i + 1) % 784];
				b[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
			}
			fz_front_key_u8(k, a, ka);
			fz_front_key_u8(k, b, kb);
			assert_true(sqrt(fz_front_d2(ka, kb, d)) <= rms(a, b) * (1 + 1e-5) + 1e-6);
		}
		fz_front_keyer_free(k);
	}
	struct fz_front_keyer *k = fz_front_keyer_create(1, 28, 28, 7);
	uint8_t a[784], inv[784], half[784], dark[784];
	float ka[FZ_FRONT_MAX_DIM], kx[FZ_FRONT_MAX_DIM];
	blob(a, 14, 14, 7, 1.f);
	for (int i = 0; i < 784; i++) {
		inv[i] = (uint8_t)(255 - a[i]);
		half[i] = (uint8_t)(a[i] / 2 + 64);
		dark[i] = (uint8_t)(a[i] * 3 / 4);
	}
	fz_front_key_u8(k, a, ka);
	const uint8_t *other[] = {inv, half, dark};
	for (int i = 0; i < 3; i++) {
		fz_front_key_u8(k, other[i], kx);
		/* far: the shipped radius is a few hundredths */
		assert_true(sqrt(fz_front_d2(ka, kx, 49)) > 0.05);
	}
	fz_front_keyer_free(k);
}

static void f32_requests_are_images_only_when_integers_0_255(void **state)
{
	(void)state;
	const float ok[4] = {0, 1, 254, 255}, frac[4] = {0, 1.5f, 2, 3}, big[4] = {0, 256, 1, 1},
		    neg[4] = {-1, 0, 0, 0}, nan[4] = {0, NAN, 0, 0}, inf[4] = {INFINITY, 0, 0, 0};
	uint8_t img[4];
	assert_int_equal(fz_front_image_f32(ok, 4, img), 0);
	assert_int_equal(img[2], 254);
	assert_int_equal(img[3], 255);
	assert_int_equal(fz_front_image_f32(frac, 4, img), -ERANGE);
	assert_int_equal(fz_front_image_f32(big, 4, img), -ERANGE);
	assert_int_equal(fz_front_image_f32(neg, 4, img), -ERANGE);
	assert_int_equal(fz_front_image_f32(nan, 4, img), -ERANGE);
	assert_int_equal(fz_front_image_f32(inf, 4, img), -ERANGE);
	const uint8_t x[3] = {0, 10, 255}, y[3] = {3, 10, 0};
	assert_int_equal(fz_front_sse(x, y, 3), 9 + 255 * 255);
}

static void exact_repeats_pending_and_stale_fills(void **state)
{
	(void)state;
	struct fz_exact *e = fz_exact_create(64, 16);
	assert_non_null(e);
	assert_int_equal(fz_exact_capacity(e), 64);
	uint8_t x[16] = {1, 2, 3}, y[16] = {1, 2, 4};
	uint64_t hx = fz_exact_hash(7, 0, 1, 4, 4, x, 16), hy = fz_exact_hash(7, 0, 1, 4, 4, y, 16);
	assert_true(hx != hy);
	/* the model, dtype and dims are part of the hash */
	assert_true(hx != fz_exact_hash(8, 0, 1, 4, 4, x, 16));
	assert_true(hx != fz_exact_hash(7, 1, 1, 4, 4, x, 16));
	assert_true(hx != fz_exact_hash(7, 0, 1, 2, 8, x, 16));
	int slot;
	struct fz_front_answer ans;
	assert_int_equal(fz_exact_find(e, hx, x, 16, &slot, &ans), FZ_EXACT_MISS);
	uint32_t gen;
	int s = fz_exact_claim(e, hx, x, 16, &gen);
	assert_true(s >= 0);
	assert_int_equal(fz_exact_find(e, hx, x, 16, &slot, &ans), FZ_EXACT_PENDING);
	assert_int_equal(slot, s);
	struct fz_front_answer a = {.label = 3, .confidence = 0.9f};
	assert_int_equal(fz_exact_fill(e, s, gen, &a), 0);
	assert_int_equal(fz_exact_find(e, hx, x, 16, &slot, &ans), FZ_EXACT_READY);
	assert_int_equal(ans.label, 3);
	/* same hash, other bytes: never a hit */
	assert_int_equal(fz_exact_find(e, hx, y, 16, &slot, &ans), FZ_EXACT_MISS);
	/* a stale generation changes nothing */
	assert_int_equal(fz_exact_fill(e, s, gen + 1, &a), -ESTALE);
	assert_int_equal(fz_exact_drop(e, s, gen + 1), -ESTALE);
	assert_int_equal(fz_exact_drop(e, s, gen), 0);
	assert_int_equal(fz_exact_find(e, hx, x, 16, &slot, &ans), FZ_EXACT_MISS);
	assert_int_equal(fz_exact_fill(e, s, gen, &a), -ESTALE);
	assert_int_equal(fz_exact_count(e), 0);
	assert_int_equal(fz_exact_claim(e, hx, x, 17, &gen), -EINVAL);
	fz_exact_free(e);
}

static void exact_clock_keeps_what_is_used(void **state)
{
	(void)state;
	struct fz_exact *e = fz_exact_create(8, 4); /* one set of 8 ways */
	uint32_t v[20], gen;
	uint64_t h[20];
	int slot;
	struct fz_front_answer a = {.label = 1};
	for (int i = 0; i < 8; i++) {
		v[i] = (uint32_t)i;
		h[i] = fz_exact_hash(1, 0, 1, 1, 4, &v[i], 4);
		int s = fz_exact_claim(e, h[i], &v[i], 4, &gen);
		fz_exact_fill(e, s, gen, &a);
	}
	assert_int_equal(fz_exact_count(e), 8);
	/* entry 0 is used again: the next insert evicts another one */
	assert_int_equal(fz_exact_find(e, h[0], &v[0], 4, &slot, NULL), FZ_EXACT_READY);
	v[8] = 8;
	h[8] = fz_exact_hash(1, 0, 1, 1, 4, &v[8], 4);
	int s8 = fz_exact_claim(e, h[8], &v[8], 4, &gen);
	fz_exact_fill(e, s8, gen, &a);
	assert_int_equal(fz_exact_count(e), 8);
	assert_int_equal(fz_exact_stats(e)->evictions, 1);
	assert_int_equal(fz_exact_find(e, h[0], &v[0], 4, &slot, NULL), FZ_EXACT_READY);
	assert_int_equal(fz_exact_find(e, h[8], &v[8], 4, &slot, NULL), FZ_EXACT_READY);
	int kept = 0;
	for (int i = 1; i < 8; i++)
		kept += fz_exact_find(e, h[i], &v[i], 4, &slot, NULL) == FZ_EXACT_READY;
	assert_int_equal(kept, 6);
	fz_exact_clear(e);
	assert_int_equal(fz_exact_count(e), 0);
	assert_int_equal(fz_exact_find(e, h[0], &v[0], 4, &slot, NULL), FZ_EXACT_MISS);
	fz_exact_free(e);
}

/* Images 1 x 4 x 4 (16 pixels) of one level, for the near table. */
static void flat(uint8_t *im, int v)
{
	memset(im, v, 16);
}

static void near_finds_within_radius_confirmed_on_pixels(void **state)
{
	(void)state;
	struct fz_front_keyer *k = fz_front_keyer_create(1, 4, 4, 2);
	struct fz_near *n = fz_near_create(4, 4, 16, true);
	assert_non_null(n);
	uint8_t i0[16], i1[16], q[16];
	float k0[4], k1[4], kq[4];
	flat(i0, 0), flat(i1, 100), flat(q, 90);
	fz_front_key_u8(k, i0, k0), fz_front_key_u8(k, i1, k1), fz_front_key_u8(k, q, kq);
	struct fz_front_answer a0 = {.label = 0}, a1 = {.label = 1}, got;
	uint32_t g0, g1;
	int s0 = fz_near_put(n, k0, i0, &a0, &g0), s1 = fz_near_put(n, k1, i1, &a1, &g1);
	float m2;
	/* q is 10 grey levels from i1: rms 10 / 255 */
	assert_int_equal(fz_near_find(n, kq, q, 11.f / 255, &m2, true), s1);
	assert_float_equal(m2, (10.f / 255) * (10.f / 255), 1e-7);
	assert_int_equal(fz_near_find(n, kq, q, 9.f / 255, &m2, true), -1);
	assert_true(fz_near_within(n, s1, g1, q, 11.f / 255));
	assert_false(fz_near_within(n, s1, g1 + 1, q, 11.f / 255));
	assert_false(fz_near_within(n, s0, g0, q, 11.f / 255));
	assert_int_equal(fz_near_get(n, s1, g1, NULL, &got), 0);
	assert_int_equal(got.label, 1);
	assert_int_equal(fz_near_stats(n)->lookups, 2);
	assert_int_equal(fz_near_stats(n)->hits, 1);
	/* a candidate by key whose pixels are far is refuted: same cell means, checkerboard */
	uint8_t cb[16];
	for (int i = 0; i < 16; i++)
		cb[i] = (i + i / 4) % 2 ? 200 : 0;
	float kcb[4];
	fz_front_key_u8(k, cb, kcb);
	struct fz_near *m = fz_near_create(4, 4, 16, true);
	uint8_t mid[16];
	flat(mid, 100);
	fz_near_put(m, k1, mid, &a1, NULL);
	assert_float_equal(fz_front_d2(kcb, k1, 4), 0, 1e-9); /* the keys cannot tell them apart */
	assert_int_equal(fz_near_find(m, kcb, cb, 0.05f, NULL, true), -1);
	assert_int_equal(fz_near_stats(m)->candidates, 1);
	assert_int_equal(fz_near_stats(m)->refuted, 1);
	/* ... while a nearer one behind it in key order is still found */
	uint8_t cb2[16];
	memcpy(cb2, cb, 16);
	cb2[0] = 10;
	float kcb2[4];
	fz_front_key_u8(k, cb2, kcb2);
	int s = fz_near_put(m, kcb2, cb2, &a0, NULL);
	assert_int_equal(fz_near_find(m, kcb, cb, 0.05f, NULL, true), s);
	fz_near_free(m);
	/* removed: gone, and its old generation is stale */
	assert_int_equal(fz_near_remove(n, s0, g0), 0);
	assert_int_equal(fz_near_get(n, s0, g0, NULL, NULL), -ESTALE);
	assert_int_equal(fz_near_count(n), 1);
	assert_int_equal(fz_near_find(n, k0, i0, 0.01f, NULL, false), -1);
	const float bad[4] = {NAN, 0, 0, 0};
	assert_int_equal(fz_near_put(n, bad, i0, &a0, &g0), -EINVAL);
	/* kept without an image: never found */
	int sx = fz_near_put(n, k0, NULL, &a0, &g0);
	assert_true(sx >= 0);
	assert_int_equal(fz_near_find(n, k0, i0, 0.01f, NULL, false), -1);
	assert_false(fz_near_within(n, sx, g0, i0, 1.f));
	/* full with eviction: CLOCK replaces one not used since; without: refused */
	for (int i = 0; i < 2; i++) {
		uint8_t im[16];
		float ki[4];
		flat(im, 200 + 20 * i);
		fz_front_key_u8(k, im, ki);
		assert_true(fz_near_put(n, ki, im, &a0, NULL) >= 0);
	}
	assert_int_equal(fz_near_count(n), 4);
	fz_near_find(n, k1, i1, 0.01f, NULL, false); /* i1 used */
	uint8_t i5[16];
	float k5[4];
	flat(i5, 50);
	fz_front_key_u8(k, i5, k5);
	assert_true(fz_near_put(n, k5, i5, &a0, NULL) >= 0);
	assert_int_equal(fz_near_count(n), 4);
	assert_int_equal(fz_near_stats(n)->evictions, 1);
	assert_int_equal(fz_near_find(n, k1, i1, 0.01f, NULL, false), s1);
	fz_near_free(n);

	struct fz_near *p = fz_near_create(2, 4, 16, false);
	assert_true(fz_near_put(p, k0, i0, NULL, NULL) >= 0);
	assert_true(fz_near_put(p, k1, i1, NULL, NULL) >= 0);
	assert_int_equal(fz_near_put(p, kq, q, NULL, NULL), -ENOSPC);
	assert_int_equal(fz_near_stats(p)->full, 1);
	fz_near_clear(p);
	assert_int_equal(fz_near_count(p), 0);
	assert_int_equal(fz_near_find(p, k0, i0, 1.f, NULL, false), -1);
	fz_near_free(p);
	fz_front_keyer_free(k);
	assert_null(fz_near_create(4, 4, 0, true));
}

/* The scan through cachecore's kernels: the same slot and distance at every SIMD level (and
 * with the ISA capped as ONEDNN_MAX_CPU_ISA would), against a plain search, over tables that
 * are not whole blocks. */
static void near_scan_same_on_every_isa(void **state)
{
	(void)state;
	static const char *const isa[] = {"portable", "avx2", "avx512"};
	struct fz_front_keyer *k = fz_front_keyer_create(1, 28, 28, 7);
	enum { N = 301, Q = 60 };
	static uint8_t imgs[N][784], qs[Q][784];
	float keys[N][FZ_FRONT_MAX_DIM];
	for (int i = 0; i < N; i++) {
		blob(imgs[i], 6 + (int)(urand() % 16), 6 + (int)(urand() % 16), 3 + (int)(urand() % 7),
		     0.6f + (float)(urand() % 60) / 100);
		fz_front_key_u8(k, imgs[i], keys[i]);
	}
	for (int j = 0; j < Q; j++) /* noisy copies */
		for (int p = 0; p < 784; p++) {
			int v = imgs[(j * 5) % N][p] + (int)(urand() % 13) - 6;
			qs[j][p] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
		}
	int want[Q];
	for (int j = 0; j < Q; j++) { /* nearest within 0.03 by rms over all entries */
		want[j] = -1;
		double best = 0.03;
		for (int i = 0; i < N; i++)
			if (rms(qs[j], imgs[i]) <= best)
				best = rms(qs[j], imgs[i]), want[j] = i;
	}
	for (size_t l = 0; l < sizeof(isa) / sizeof(isa[0]); l++) {
		if (fz_cache_isa_set(isa[l]) < 0)
			continue; /* this CPU lacks it */
		struct fz_near *n = fz_near_create(N, 49, 784, true);
		for (int i = 0; i < N; i++)
			assert_int_equal(fz_near_put(n, keys[i], imgs[i], NULL, NULL), i);
		int hits = 0;
		for (int j = 0; j < Q; j++) {
			float kq[FZ_FRONT_MAX_DIM];
			fz_front_key_u8(k, qs[j], kq);
			int s = fz_near_find(n, kq, qs[j], 0.03f, NULL, false);
			/* the first confirmed of the key-nearest: within the radius; the plain search
			 * finds one exactly when it does */
			assert_int_equal(s >= 0, want[j] >= 0);
			if (s >= 0)
				assert_true(rms(qs[j], imgs[s]) <= 0.03);
			hits += s >= 0;
		}
		assert_true(hits >= Q / 2);
		fz_near_free(n);
	}
	fz_cache_isa_set(NULL);
	fz_front_keyer_free(k);
}

static void flows_remember_until_timeout(void **state)
{
	(void)state;
	struct fz_flows *f = fz_flows_create(16, 1000);
	int slot;
	uint32_t gen;
	assert_int_equal(fz_flows_get(f, 0x0a000001, 5000, 0, &slot, &gen), -ENOENT);
	fz_flows_set(f, 0x0a000001, 5000, 100, 7, 3);
	assert_int_equal(fz_flows_get(f, 0x0a000001, 5000, 600, &slot, &gen), 0);
	assert_int_equal(slot, 7);
	assert_int_equal(gen, 3u);
	/* another port of the same host is another flow */
	assert_int_equal(fz_flows_get(f, 0x0a000001, 5001, 600, &slot, &gen), -ENOENT);
	assert_int_equal(fz_flows_count(f, 600), 1);
	assert_int_equal(fz_flows_get(f, 0x0a000001, 5000, 1101, &slot, &gen), -ENOENT);
	assert_int_equal(fz_flows_stats(f)->expired, 1);
	/* bounded: many flows replace the oldest of a set, the table never grows */
	for (unsigned i = 0; i < 1000; i++)
		fz_flows_set(f, 0x0b000000 + i, 1, 2000 + i, (int)i, 0);
	assert_true(fz_flows_count(f, 3000) <= fz_flows_capacity(f));
	assert_true(fz_flows_stats(f)->replaced > 0);
	assert_int_equal(fz_flows_get(f, 0x0b000000 + 999, 1, 3000, &slot, &gen), 0);
	assert_int_equal(slot, 999);
	fz_flows_free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(key_is_weighted_cell_means),
		cmocka_unit_test(key_bounds_rms_and_keeps_level_contrast_sign),
		cmocka_unit_test(f32_requests_are_images_only_when_integers_0_255),
		cmocka_unit_test(exact_repeats_pending_and_stale_fills),
		cmocka_unit_test(exact_clock_keeps_what_is_used),
		cmocka_unit_test(near_finds_within_radius_confirmed_on_pixels),
		cmocka_unit_test(near_scan_same_on_every_isa),
		cmocka_unit_test(flows_remember_until_timeout),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
