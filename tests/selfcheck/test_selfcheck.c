/* Tests of the self-check module (fz_selfcheck.h) and of the gate it publishes through: the
 * gate is one word (a reader, lookups included, never pairs the threshold of one update with
 * the switch of another); per-tier scoring switches off only the tier that disagrees, and a
 * new snapshot brings it back; per-point decisions; stale and bad samples; the sampler. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fz_cache.h"
#include "fz_selfcheck.h"

/* ---- the gate: one word ---------------------------------------------------------------- */

static void test_gate_pack(void **state)
{
	(void)state;
	const float thr[] = {0.f, -0.f, 1.5f, 3.4e38f, INFINITY, -INFINITY, 1e-45f};
	for (size_t i = 0; i < sizeof(thr) / sizeof(thr[0]); i++)
		for (int on = 0; on < 2; on++) {
			struct fz_cache_gate g = {.thr = thr[i], .on = on};
			struct fz_cache_gate u = fz_cache_gate_unpack(fz_cache_gate_pack(g));
			assert_memory_equal(&u.thr, &thr[i], sizeof(float));
			assert_int_equal(u.on, on);
		}
}

#define D 8
#define CLASSES 4

static struct fz_cache *one_entry_cache(void)
{
	struct fz_cache_params p;
	fz_cache_params_default(&p);
	p.kind = FZ_CACHE_KMEANS;
	p.grid = 1;
	p.dims = 0;
	p.l2 = false;
	p.size = 1;
	p.capacity = 0;
	struct fz_cache *c = fz_cache_create(&p, D, 1, 1, CLASSES);
	assert_non_null(c);
	float key[D] = {0};
	int lab = 1;
	assert_int_equal(fz_cache_build(c, key, &lab, 1, 1), 0);
	return c;
}

/* Two gates that both answer nothing: a lookup that answers has paired halves of the two. */
static const struct fz_cache_gate NEVER_ON = {.thr = INFINITY, .on = true};
static const struct fz_cache_gate ALWAYS_OFF = {.thr = 0.f, .on = false};

static atomic_bool stop;

static void *flipper(void *arg)
{
	struct fz_cache *c = arg;
	for (unsigned i = 0; !atomic_load(&stop); i++)
		fz_cache_set_gate(c, i & 1 ? ALWAYS_OFF : NEVER_ON);
	return NULL;
}

struct reads {
	struct fz_cache *c;
	long loads, torn, lookups, hits;
};

static void *reader(void *arg)
{
	struct reads *r = arg;
	float q[4 * D];
	struct fz_cache_result res[4];
	for (int i = 0; i < 4 * D; i++)
		q[i] = 0.01f * (float)(i % D + 1); /* near the entry: confidence well above 0 */
	while (!atomic_load(&stop)) {
		for (int i = 0; i < 256; i++) {
			struct fz_cache_gate g = fz_cache_gate(r->c);
			r->torn += !((isinf(g.thr) && g.on) || (g.thr == 0.f && !g.on));
			r->loads++;
		}
		if (fz_cache_lookup_keys(r->c, q, 4, res) == 0)
			for (int i = 0; i < 4; i++, r->lookups++)
				r->hits += res[i].hit;
	}
	return NULL;
}

static void test_gate_never_torn(void **state)
{
	(void)state;
	struct fz_cache *c = one_entry_cache();
	/* the mix a torn read would make answers: the test can see one */
	fz_cache_set_gate(c, (struct fz_cache_gate){.thr = 0.f, .on = true});
	float q[D] = {0.01f};
	struct fz_cache_result res;
	assert_int_equal(fz_cache_lookup_keys(c, q, 1, &res), 0);
	assert_true(res.hit);

	fz_cache_set_gate(c, NEVER_ON);
	atomic_store(&stop, false);
	struct reads r[2] = {{.c = c}, {.c = c}};
	pthread_t w, t[2];
	assert_int_equal(pthread_create(&w, NULL, flipper, c), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, reader, &r[i]), 0);
	struct timespec ts = {0, 300 * 1000 * 1000};
	nanosleep(&ts, NULL);
	atomic_store(&stop, true);
	pthread_join(w, NULL);
	for (int i = 0; i < 2; i++) {
		pthread_join(t[i], NULL);
		assert_true(r[i].loads > 1000 && r[i].lookups > 0);
		assert_int_equal(r[i].torn, 0);
		assert_int_equal(r[i].hits, 0);
	}
	fz_cache_free(c);
}

static void test_gate_halves(void **state)
{
	(void)state;
	struct fz_cache *c = one_entry_cache();
	fz_cache_set_gate(c, (struct fz_cache_gate){.thr = 2.5f, .on = true});
	fz_cache_set_enabled(c, false);
	assert_true(fz_cache_threshold(c) == 2.5f);
	assert_false(fz_cache_enabled(c));
	fz_cache_set_threshold(c, 7.f);
	assert_false(fz_cache_gate(c).on);
	assert_true(fz_cache_gate(c).thr == 7.f);
	fz_cache_free(c);
}

/* ---- the context ------------------------------------------------------------------------ */

static struct fz_selfcheck *ctx(unsigned window, unsigned every)
{
	const struct fz_selfcheck_cfg cfg = {.guard = {.target = 0.995, .margin = 0.002},
					     .window = window, .every = every};
	struct fz_selfcheck *sc = fz_selfcheck_create(&cfg);
	assert_non_null(sc);
	return sc;
}

static struct fz_selfcheck_sample tier_sample(enum fz_selfcheck_tier t, bool agree)
{
	return (struct fz_selfcheck_sample){.set = 7, .conf = 0.99f, .kind = FZ_SELFCHECK_TIER,
					    .index = (uint8_t)t, .agree = agree};
}

static void test_min_samples(void **state)
{
	(void)state;
	assert_int_equal(fz_selfcheck_min_samples(0.995), 765);
	struct fz_selfcheck *sc = ctx(1000, 10);
	assert_int_equal(fz_selfcheck_guard(sc)->min_samples, 765);
	fz_selfcheck_free(sc);
	const struct fz_selfcheck_cfg bad = {.guard = {.target = 1.0}, .window = 10, .every = 1};
	errno = 0;
	assert_null(fz_selfcheck_create(&bad));
	assert_int_equal(errno, EINVAL);
}

/* The near tier answers 3 % wrong, the exact one always right: only near goes off, once the
 * window holds enough to tell, and a new snapshot brings it back. */
static void test_tier_off_only_the_bad_one(void **state)
{
	(void)state;
	struct fz_selfcheck *sc = ctx(2000, 25);
	struct fz_cache_gate g = {.thr = 1.f, .on = true};
	fz_selfcheck_adopt(sc, 7, 1, &g);
	int off_at = -1, decisions = 0;
	for (int i = 0; i < 2000; i++) {
		struct fz_selfcheck_decision d;
		struct fz_selfcheck_sample e = tier_sample(FZ_SELFCHECK_TIER_EXACT, true);
		struct fz_selfcheck_sample n = tier_sample(FZ_SELFCHECK_TIER_NEAR, i % 33 != 0);
		assert_int_equal(fz_selfcheck_add(sc, &e, &d), 0);
		int rc = fz_selfcheck_add(sc, &n, &d);
		assert_true(rc == 0 || rc == 1);
		if (rc == 1) {
			decisions++;
			off_at = i;
			assert_int_equal(d.kind, FZ_SELFCHECK_TIER);
			assert_int_equal(d.index, FZ_SELFCHECK_TIER_NEAR);
			assert_int_equal(d.action, FZ_GUARD_OFF);
			assert_true(d.before.on && !d.after.on);
			assert_true(d.n >= 765 && d.lo < 0.995);
		}
	}
	assert_int_equal(decisions, 1); /* off once, and it stays off */
	assert_true(off_at >= 765 - 1 && off_at < 1000);
	assert_int_equal(fz_selfcheck_tiers_off(sc), 1u << FZ_SELFCHECK_TIER_NEAR);
	struct fz_selfcheck_view v;
	assert_int_equal(fz_selfcheck_view(sc, FZ_SELFCHECK_TIER, FZ_SELFCHECK_TIER_NEAR, &v), 0);
	assert_false(v.gate.on);
	assert_int_equal(v.offs, 1);
	assert_int_equal(v.checked, 2000);
	assert_int_equal(v.disagreed, (2000 + 32) / 33);
	assert_int_equal(fz_selfcheck_view(sc, FZ_SELFCHECK_TIER, FZ_SELFCHECK_TIER_EXACT, &v), 0);
	assert_true(v.gate.on && v.offs == 0 && v.samples > 1900 && v.agree == v.samples);
	assert_true(v.lo > 0.995);
	/* a reload: tiers on again, windows empty, counters kept */
	fz_selfcheck_adopt(sc, 8, 1, &g);
	assert_int_equal(fz_selfcheck_tiers_off(sc), 0);
	assert_int_equal(fz_selfcheck_view(sc, FZ_SELFCHECK_TIER, FZ_SELFCHECK_TIER_NEAR, &v), 0);
	assert_true(v.gate.on && v.samples == 0 && v.offs == 1);
	fz_selfcheck_free(sc);
}

/* Too few samples to tell (a window below min_samples): a tier is never switched off. */
static void test_tier_small_window_never_decides(void **state)
{
	(void)state;
	struct fz_selfcheck *sc = ctx(500, 10);
	fz_selfcheck_adopt(sc, 7, 0, NULL);
	for (int i = 0; i < 3000; i++) {
		struct fz_selfcheck_decision d;
		struct fz_selfcheck_sample s = tier_sample(FZ_SELFCHECK_TIER_FLOW, i % 2);
		assert_int_equal(fz_selfcheck_add(sc, &s, &d), 0);
	}
	assert_int_equal(fz_selfcheck_tiers_off(sc), 0);
	fz_selfcheck_free(sc);
}

/* A point whose confident answers stay right and whose less confident ones turn wrong: off while
 * the window is too short to support a higher threshold, then on again at one that excludes the
 * wrong answers (or tightened to it); a stale or bad sample is refused. */
static void test_point_tightened(void **state)
{
	(void)state;
	struct fz_selfcheck *sc = ctx(4000, 50);
	struct fz_cache_gate g[2] = {{.thr = 1.f, .on = true}, {.thr = 5.f, .on = false}};
	fz_selfcheck_adopt(sc, 42, 2, g);
	assert_int_equal(fz_selfcheck_points(sc), 2);
	struct fz_cache_gate now = g[0];
	int changed = 0;
	for (int i = 0; i < 4000; i++) {
		const float conf = 1.f + (float)(i % 100) / 10.f; /* 1 .. 10.9 */
		struct fz_selfcheck_sample s = {.set = 42, .conf = conf, .kind = FZ_SELFCHECK_POINT,
						.index = 0, .agree = conf > 6.f || i % 5};
		struct fz_selfcheck_decision d;
		int rc = fz_selfcheck_add(sc, &s, &d);
		if (rc == 1) {
			assert_int_equal(d.kind, FZ_SELFCHECK_POINT);
			assert_int_equal(d.index, 0);
			assert_true(d.before.thr == now.thr && d.before.on == now.on);
			now = d.after;
			changed++;
		}
		/* the point calibration switched off is only watched */
		s.index = 1;
		assert_int_equal(fz_selfcheck_add(sc, &s, &d), 0);
	}
	assert_true(changed >= 1);
	assert_true(now.on && now.thr >= 5.9f);
	struct fz_selfcheck_view v;
	assert_int_equal(fz_selfcheck_view(sc, FZ_SELFCHECK_POINT, 0, &v), 0);
	assert_true(v.gate.thr == now.thr && v.calibrated.thr == 1.f && v.changes >= 1);
	assert_true(v.lo >= 0.995);
	assert_int_equal(fz_selfcheck_view(sc, FZ_SELFCHECK_POINT, 1, &v), 0);
	assert_true(!v.gate.on && v.changes == 0 && v.checked == 4000);

	struct fz_selfcheck_decision d;
	struct fz_selfcheck_sample s = {.set = 41, .conf = 2.f, .kind = FZ_SELFCHECK_POINT};
	assert_int_equal(fz_selfcheck_add(sc, &s, &d), -ESTALE);
	s.set = 42, s.index = 2;
	assert_int_equal(fz_selfcheck_add(sc, &s, &d), -EINVAL);
	s.index = 0, s.kind = 9;
	assert_int_equal(fz_selfcheck_add(sc, &s, &d), -EINVAL);
	s = tier_sample(FZ_SELFCHECK_TIERS, true);
	s.set = 42;
	assert_int_equal(fz_selfcheck_add(sc, &s, &d), -EINVAL);
	assert_int_equal(fz_selfcheck_view(sc, FZ_SELFCHECK_TIER, FZ_SELFCHECK_TIERS, &v), -EINVAL);
	fz_selfcheck_free(sc);
}

static void test_tier_names(void **state)
{
	(void)state;
	assert_string_equal(fz_selfcheck_tier_name(FZ_SELFCHECK_TIER_EXACT), "exact");
	assert_string_equal(fz_selfcheck_tier_name(FZ_SELFCHECK_TIER_COALESCED), "coalesced");
	assert_string_equal(fz_selfcheck_tier_name(FZ_SELFCHECK_TIERS), "?");
}

/* Each stream gets its share, however the streams mix. */
static void test_sampler(void **state)
{
	(void)state;
	struct fz_selfcheck_sampler s = {.rate = 0.1};
	int picked[FZ_SELFCHECK_STREAMS] = {0};
	for (int i = 0; i < 1000; i++) {
		picked[0] += fz_selfcheck_pick(&s, 0);
		if (i % 10 == 0) /* a rare tier */
			picked[1 + FZ_SELFCHECK_TIER_NEAR] += fz_selfcheck_pick(&s, 1 + FZ_SELFCHECK_TIER_NEAR);
	}
	assert_in_range(picked[0], 99, 101);
	assert_in_range(picked[1 + FZ_SELFCHECK_TIER_NEAR], 9, 11);
	assert_false(fz_selfcheck_pick(&s, FZ_SELFCHECK_STREAMS));
	struct fz_selfcheck_sampler off = {.rate = 0};
	assert_false(fz_selfcheck_pick(&off, 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gate_pack),
		cmocka_unit_test(test_gate_never_torn),
		cmocka_unit_test(test_gate_halves),
		cmocka_unit_test(test_min_samples),
		cmocka_unit_test(test_tier_off_only_the_bad_one),
		cmocka_unit_test(test_tier_small_window_never_decides),
		cmocka_unit_test(test_point_tightened),
		cmocka_unit_test(test_tier_names),
		cmocka_unit_test(test_sampler),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
