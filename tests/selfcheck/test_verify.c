/* Tests of self-checking (fz_verify.h): Wilson intervals against known values, the sliding
 * window, and the guard on synthetic streams: it tightens a point whose answers got worse,
 * switches off one no threshold can save, and relaxes or switches it back on once it recovers. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fz_verify.h"

static uint64_t rs = 5;
static double urand(void) /* [0, 1) */
{
	rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
	return (double)(rs >> 11) / 9007199254740992.0;
}

static void wilson_known_values(void **state)
{
	(void)state;
	double lo, hi;
	fz_wilson(95, 100, &lo, &hi); /* the textbook example */
	assert_float_equal(lo, 0.8882, 5e-4);
	assert_float_equal(hi, 0.9785, 5e-4);
	fz_wilson(1000, 1000, &lo, &hi);
	assert_float_equal(lo, 0.99617, 5e-5);
	assert_float_equal(hi, 1.0, 1e-12);
	fz_wilson(0, 0, &lo, &hi);
	assert_true(lo == 0 && hi == 1);
}

static void window_slides(void **state)
{
	(void)state;
	struct fz_verify *v = fz_verify_create(10);
	for (int i = 0; i < 10; i++)
		fz_verify_add(v, (float)i, false);
	for (int i = 0; i < 5; i++) /* the 5 oldest (conf 0..4) replaced */
		fz_verify_add(v, 100.f, true);
	uint64_t n, k;
	double lo, hi;
	fz_verify_at(v, -1.f, &n, &k, &lo, &hi);
	assert_int_equal(n, 10);
	assert_int_equal(k, 5);
	fz_verify_at(v, 4.5f, &n, &k, &lo, &hi); /* 5..9 and the five 100s */
	assert_int_equal(n, 10);
	fz_verify_at(v, 9.f, &n, &k, &lo, &hi);
	assert_int_equal(n, 5);
	assert_int_equal(k, 5);
	assert_int_equal(fz_verify_count(v), 10);
	fz_verify_clear(v);
	assert_int_equal(fz_verify_count(v), 0);
	fz_verify_free(v);
}

/* conf uniform in [0, 10); answers agree always above `good_from`, else with p_low */
static void feed(struct fz_verify *v, int n, float good_from, double p_low)
{
	for (int i = 0; i < n; i++) {
		float c = (float)(10 * urand());
		fz_verify_add(v, c, c > good_from || urand() < p_low);
	}
}

static void guard_tightens_and_relaxes(void **state)
{
	(void)state;
	const struct fz_guard_cfg g = {.target = 0.995, .margin = 0.001, .min_samples = 800};
	struct fz_verify *v = fz_verify_create(5000);
	float thr = 2.f;
	bool on = true;
	feed(v, 500, 0.f, 1.0); /* too few samples to tell: nothing changes */
	assert_int_equal(fz_guard_update(&g, v, 2.f, &thr, &on), FZ_GUARD_KEEP);
	feed(v, 5000, 0.f, 1.0); /* all agree: calibrated threshold kept */
	assert_int_equal(fz_guard_update(&g, v, 2.f, &thr, &on), FZ_GUARD_KEEP);
	assert_true(thr == 2.f && on);
	/* drift: below confidence 6 one answer in ten is wrong */
	feed(v, 5000, 6.f, 0.9);
	assert_int_equal(fz_guard_update(&g, v, 2.f, &thr, &on), FZ_GUARD_TIGHTEN);
	assert_true(on && thr > 5.5f && thr < 6.6f);
	uint64_t n, k;
	double lo, hi;
	fz_verify_at(v, thr, &n, &k, &lo, &hi);
	assert_true(lo >= g.target && n >= g.min_samples);
	assert_int_equal(fz_guard_update(&g, v, 2.f, &thr, &on), FZ_GUARD_KEEP); /* stable */
	/* recovered: back to the calibrated threshold once the window has refilled */
	feed(v, 5000, 0.f, 1.0);
	assert_int_equal(fz_guard_update(&g, v, 2.f, &thr, &on), FZ_GUARD_RELAX);
	assert_true(thr == 2.f);
	fz_verify_free(v);
}

static void guard_switches_off_and_on(void **state)
{
	(void)state;
	const struct fz_guard_cfg g = {.target = 0.995, .margin = 0.001, .min_samples = 800};
	struct fz_verify *v = fz_verify_create(4000);
	float thr = 1.f;
	bool on = true;
	feed(v, 4000, 11.f, 0.95); /* wrong 5 % at every confidence: no threshold helps */
	assert_int_equal(fz_guard_update(&g, v, 1.f, &thr, &on), FZ_GUARD_OFF);
	assert_false(on);
	assert_int_equal(fz_guard_update(&g, v, 1.f, &thr, &on), FZ_GUARD_KEEP);
	feed(v, 4000, 0.f, 1.0);
	assert_int_equal(fz_guard_update(&g, v, 1.f, &thr, &on), FZ_GUARD_ON);
	assert_true(on && thr == 1.f);
	fz_verify_free(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(wilson_known_values),
		cmocka_unit_test(window_slides),
		cmocka_unit_test(guard_tightens_and_relaxes),
		cmocka_unit_test(guard_switches_off_and_on),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
