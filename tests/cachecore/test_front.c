/* Tests of the front tiers (fz_front.h): input keys against a direct DFT and under shifts and
 * gain, the exact table's repeats, pending slots, CLOCK eviction and generations, the near
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

static void key_matches_direct_dft(void **state)
{
	(void)state;
	struct fz_front_keyer *k = fz_front_keyer_create(1, 28, 28, 4);
	assert_non_null(k);
	assert_int_equal(fz_front_key_dim(k), 3 + 3 * 7);
	uint8_t im[784];
	for (int i = 0; i < 784; i++)
		im[i] = (uint8_t)urand();
	float key[FZ_FRONT_MAX_DIM], ref[FZ_FRONT_MAX_DIM];
	fz_front_key_u8(k, im, key);
	int o = 0;
	double norm = 0;
	for (int ky = 0; ky < 4; ky++)
		for (int kx = ky ? -3 : 1; kx <= 3; kx++) {
			double re = 0, im_ = 0;
			for (int y = 0; y < 28; y++)
				for (int x = 0; x < 28; x++) {
					double a = -2 * M_PI * (ky * y / 28.0 + kx * x / 28.0);
					re += im[y * 28 + x] / 255.0 * cos(a);
					im_ += im[y * 28 + x] / 255.0 * sin(a);
				}
			ref[o] = (float)sqrt(re * re + im_ * im_);
			norm += (double)ref[o] * ref[o];
			o++;
		}
	for (int i = 0; i < o; i++)
		assert_float_equal(key[i], ref[i] / sqrt(norm), 1e-4);
	/* the f32 path (values on the u8 scale) gives the same key */
	float f[784], key2[FZ_FRONT_MAX_DIM];
	for (int i = 0; i < 784; i++)
		f[i] = im[i];
	fz_front_key_f32(k, f, key2);
	for (int i = 0; i < o; i++)
		assert_float_equal(key[i], key2[i], 1e-6);
	/* all zero: the zero key, no NaN */
	memset(im, 0, sizeof(im));
	fz_front_key_u8(k, im, key);
	for (int i = 0; i < o; i++)
		assert_true(key[i] == 0.f);
	fz_front_keyer_free(k);
}

static void key_is_near_for_shift_and_gain_far_for_others(void **state)
{
	(void)state;
	struct fz_front_keyer *k = fz_front_keyer_create(1, 28, 28, 4);
	const int d = fz_front_key_dim(k);
	uint8_t a[784], b[784], c[784];
	float ka[FZ_FRONT_MAX_DIM], kb[FZ_FRONT_MAX_DIM], kc[FZ_FRONT_MAX_DIM];
	blob(a, 14, 14, 6, 1.0f);
	blob(b, 15, 13, 6, 1.1f); /* a pixel over and up, 10 % brighter: same picture */
	blob(c, 14, 14, 9, 1.0f); /* a larger object */
	fz_front_key_u8(k, a, ka);
	fz_front_key_u8(k, b, kb);
	fz_front_key_u8(k, c, kc);
	float near = fz_front_d2(ka, kb, d), far = fz_front_d2(ka, kc, d);
	assert_true(near < 0.01f * far);
	fz_front_keyer_free(k);
	/* keys too long or frequencies beyond the picture are refused */
	assert_null(fz_front_keyer_create(3, 28, 28, 4)); /* 72 floats */
	assert_int_equal(errno, EINVAL);
	assert_null(fz_front_keyer_create(1, 2, 2, 4));
	assert_null(fz_front_keyer_create(1, 28, 28, 1)); /* nothing but DC */
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
	struct fz_front_answer a = {.label = 3, .exit_layer = 5, .confidence = 0.9f};
	assert_int_equal(fz_exact_fill(e, s, gen, &a), 0);
	assert_int_equal(fz_exact_find(e, hx, x, 16, &slot, &ans), FZ_EXACT_READY);
	assert_int_equal(ans.label, 3);
	assert_int_equal(ans.exit_layer, 5);
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

static void near_finds_nearest_within_radius(void **state)
{
	(void)state;
	struct fz_near *n = fz_near_create(4, 2, true);
	const float k0[2] = {0, 0}, k1[2] = {1, 0}, q[2] = {0.8f, 0};
	struct fz_front_answer a0 = {.label = 0}, a1 = {.label = 1}, got;
	uint32_t g0, g1;
	int s0 = fz_near_put(n, k0, &a0, &g0), s1 = fz_near_put(n, k1, &a1, &g1);
	float d2;
	assert_int_equal(fz_near_find(n, q, 0.05f, &d2, true), s1);
	assert_float_equal(d2, 0.04f, 1e-6);
	assert_int_equal(fz_near_find(n, q, 0.01f, &d2, true), -1);
	assert_int_equal(fz_near_get(n, s1, g1, NULL, &got), 0);
	assert_int_equal(got.label, 1);
	assert_int_equal(fz_near_stats(n)->lookups, 2);
	assert_int_equal(fz_near_stats(n)->hits, 1);
	/* removed: gone, and its old generation is stale */
	assert_int_equal(fz_near_remove(n, s0, g0), 0);
	assert_int_equal(fz_near_get(n, s0, g0, NULL, NULL), -ESTALE);
	assert_int_equal(fz_near_count(n), 1);
	const float bad[2] = {NAN, 0};
	assert_int_equal(fz_near_put(n, bad, &a0, &g0), -EINVAL);
	/* full with eviction: CLOCK replaces one not used since; without: refused */
	for (int i = 0; i < 3; i++) {
		float k[2] = {10.f + i, 0};
		assert_true(fz_near_put(n, k, &a0, NULL) >= 0);
	}
	assert_int_equal(fz_near_count(n), 4);
	fz_near_find(n, k1, 0.1f, NULL, false); /* k1 used */
	float k5[2] = {20, 0};
	assert_true(fz_near_put(n, k5, &a0, NULL) >= 0);
	assert_int_equal(fz_near_count(n), 4);
	assert_int_equal(fz_near_stats(n)->evictions, 1);
	assert_int_equal(fz_near_find(n, k1, 0.1f, NULL, false), s1);
	fz_near_free(n);

	struct fz_near *p = fz_near_create(2, 2, false);
	assert_true(fz_near_put(p, k0, NULL, NULL) >= 0);
	assert_true(fz_near_put(p, k1, NULL, NULL) >= 0);
	assert_int_equal(fz_near_put(p, q, NULL, NULL), -ENOSPC);
	assert_int_equal(fz_near_stats(p)->full, 1);
	fz_near_clear(p);
	assert_int_equal(fz_near_count(p), 0);
	assert_int_equal(fz_near_find(p, k0, 1.f, NULL, false), -1);
	fz_near_free(p);
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
		cmocka_unit_test(key_matches_direct_dft),
		cmocka_unit_test(key_is_near_for_shift_and_gain_far_for_others),
		cmocka_unit_test(exact_repeats_pending_and_stale_fills),
		cmocka_unit_test(exact_clock_keeps_what_is_used),
		cmocka_unit_test(near_finds_nearest_within_radius),
		cmocka_unit_test(flows_remember_until_timeout),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
