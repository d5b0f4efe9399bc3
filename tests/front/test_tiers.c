/* Tests of the front tiers (pipeline/front/fz_tiers.h) on 1x4x4 inputs: exact repeats and
 * their followers, near hits confirmed on pixels (and inverted, contrast-changed and non-image
 * inputs refused), the confidence gates, every branch of a follower (answered, led again,
 * waiting again, expired, abandoned, followers_full, pending_full), tiers switched off, and
 * a clear that makes answers in flight stale. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fz_tiers.h"

#define NPIX 16
#define WAIT_NS 1000000ull /* wait_us 1000 */

struct treq {
	struct fz_tiers_req fr;
	uint8_t img[NPIX], in[NPIX];
	float inf[NPIX];
	int answered, ran, released;
};

static struct fz_front_stats st;
static struct fz_appcfg cfg;
static unsigned off_bits;

static void io_answer(void *arg, struct fz_tiers_req *r)
{
	(void)arg;
	((struct treq *)r->owner)->answered++;
}
static void io_run(void *arg, struct fz_tiers_req *r)
{
	(void)arg;
	((struct treq *)r->owner)->ran++;
}
static void io_release(void *arg, struct fz_tiers_req *r)
{
	(void)arg;
	((struct treq *)r->owner)->released++;
}
static bool io_off(void *arg, enum fz_tier t)
{
	(void)arg;
	return off_bits >> t & 1;
}

static struct fz_tiers *make(int pending, int followers)
{
	memset(&cfg, 0, sizeof(cfg));
	memset(&st, 0, sizeof(st));
	off_bits = 0;
	cfg.caches = true;
	cfg.front.enabled = true;
	cfg.front.exact_entries = 64;
	cfg.front.near_entries = 32;
	cfg.front.near_radius = 0.05f;
	cfg.front.near_grid = 2; /* 2x2 cells of 2x2 pixels */
	cfg.front.near_min_confidence = 0.9f;
	cfg.front.near_exit_min_confidence = 0.99f;
	cfg.front.flow_entries = 16;
	cfg.front.flow_timeout_ms = 1000;
	cfg.front.pending = pending;
	cfg.front.followers = followers;
	cfg.front.wait_us = (int)(WAIT_NS / 1000);
	static const bool logodds[3] = {false, true, false};
	const struct fz_tiers_params p = {
		.cfg = &cfg, .c = 1, .h = 4, .w = 4, .model_fp = 7, .n_layers = 3,
		.logodds = logodds, .stats = &st,
		.io = {.answer = io_answer, .run = io_run, .release = io_release, .tier_off = io_off}};
	char err[128];
	struct fz_tiers *t = fz_tiers_create(&p, err, sizeof(err));
	assert_non_null(t);
	assert_true(fz_tiers_on(t));
	assert_int_equal(fz_tiers_img_bytes(t), NPIX);
	return t;
}

/* A request of one grey level v (per-pixel offsets d[i] when given), from port `port`. */
static enum fz_tiers_verdict submit(struct fz_tiers *t, struct treq *q, int v, const int *d,
				    uint16_t port, uint64_t now)
{
	memset(q, 0, sizeof(*q));
	for (int i = 0; i < NPIX; i++)
		q->in[i] = (uint8_t)(v + (d ? d[i] : 0));
	q->fr.owner = q;
	q->fr.img = q->img;
	q->fr.t_ns = now;
	q->fr.src_ip = 0x0a000001;
	q->fr.src_port = port;
	const struct fz_tiers_input in = {.dtype = 0, .c = 1, .h = 4, .w = 4, .bytes = q->in,
					  .len = NPIX, .host_u8 = true, .host = q->in};
	return fz_tiers_submit(t, &q->fr, &in, now);
}

/* exit_layer: an early exit of that layer, -1 the full model */
static void learn(struct fz_tiers *t, struct treq *q, int label, int exit_layer, float conf,
		  uint64_t now)
{
	const struct fz_tiers_result r = {
		.ok = true, .label = (int16_t)label, .confidence = conf,
		.src = exit_layer < 0 ? fz_answer_of(FZ_ANSWERED_FULL) : fz_answer_layer(exit_layer)};
	fz_tiers_learn(t, &q->fr, &r, now);
}

static void exact_repeats_wait_then_hit(void **state)
{
	(void)state;
	struct fz_tiers *t = make(8, 8);
	struct treq a, b, c;
	assert_int_equal(submit(t, &a, 100, NULL, 1, 0), FZ_TIERS_RUN);
	assert_true(a.fr.flags & FZ_TIERS_F_LEADER);
	assert_int_equal(submit(t, &b, 100, NULL, 2, 10), FZ_TIERS_WAITING); /* in flight */
	assert_int_equal(st.exact_followers, 1);
	learn(t, &a, 3, -1, 0.97f, 20);
	assert_int_equal(a.released, 1);
	assert_int_equal(b.answered, 1);
	assert_int_equal(b.fr.tier, FZ_TIER_COALESCED);
	assert_int_equal(b.fr.label, 3);
	assert_int_equal(submit(t, &c, 100, NULL, 3, 30), FZ_TIERS_ANSWERED);
	assert_int_equal(c.fr.tier, FZ_TIER_EXACT);
	assert_int_equal(c.fr.label, 3);
	assert_int_equal(st.requests, st.exact_hits + st.flow_hits + st.near_hits + st.followers +
					      st.ran);
	fz_tiers_free(t);
}

static void near_hits_are_confirmed_and_keep_level_contrast_sign(void **state)
{
	(void)state;
	struct fz_tiers *t = make(8, 8);
	struct treq a, q;
	int d[NPIX];
	for (int i = 0; i < NPIX; i++)
		d[i] = i % 2 ? 40 : -40;
	assert_int_equal(submit(t, &a, 100, d, 1, 0), FZ_TIERS_RUN);
	learn(t, &a, 4, -1, 0.99f, 1);
	/* 3 grey levels brighter everywhere: rms 0.012, within 0.05 */
	for (int i = 0; i < NPIX; i++)
		d[i] = (i % 2 ? 40 : -40) + 3;
	assert_int_equal(submit(t, &q, 100, d, 2, 2), FZ_TIERS_ANSWERED);
	assert_int_equal(q.fr.tier, FZ_TIER_NEAR);
	assert_int_equal(q.fr.label, 4);
	/* inverted (255 - x), contrast halved (x / 2 + 64), 20 levels brighter: all run */
	const int lv[3][2] = {{155, -1}, {114, 2}, {120, 1}};
	for (int k = 0; k < 3; k++) {
		for (int i = 0; i < NPIX; i++)
			d[i] = (i % 2 ? 40 : -40) * lv[k][1] / (lv[k][1] == 2 ? 4 : 1);
		assert_int_equal(submit(t, &q, lv[k][0], d, 3, 3), FZ_TIERS_RUN);
		fz_tiers_abandon(t, &q.fr, 3);
	}
	/* the same cell means with the pixels moved (checkerboard swapped): the key cannot tell,
	 * the pixels can */
	for (int i = 0; i < NPIX; i++)
		d[i] = i % 2 ? -40 : 40;
	uint64_t refuted = 0;
	assert_int_equal(submit(t, &q, 100, d, 4, 4), FZ_TIERS_RUN);
	refuted = st.near_refuted;
	assert_true(refuted >= 1);
	fz_tiers_abandon(t, &q.fr, 4);
	/* an f32 request that is not a u8 image meets only the exact tier */
	struct treq f;
	memset(&f, 0, sizeof(f));
	for (int i = 0; i < NPIX; i++)
		f.inf[i] = 100.5f;
	f.fr.owner = &f, f.fr.img = f.img;
	const struct fz_tiers_input in = {.dtype = 1, .c = 1, .h = 4, .w = 4, .bytes = f.inf,
					  .len = sizeof(f.inf), .host_u8 = false, .host = f.inf};
	assert_int_equal(fz_tiers_submit(t, &f.fr, &in, 5), FZ_TIERS_RUN);
	assert_int_equal(st.near_no_image, 1);
	fz_tiers_free(t);
}

static void only_sure_answers_are_shared(void **state)
{
	(void)state;
	struct fz_tiers *t = make(8, 8);
	struct treq a, q;
	/* full model at 0.5: not shared; early exit of a learned layer (log-odds 3: p 0.95 <
	 * 0.99): not shared; of a layer without log-odds: never; log-odds 6 (p 0.9975): shared */
	const struct { int exit; float conf; bool shared; } cases[] = {
		{-1, 0.5f, false}, {1, 3.f, false}, {0, 100.f, false}, {1, 6.f, true}, {-1, 0.95f, true}};
	for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
		int v = 20 + 40 * (int)k;
		assert_int_equal(submit(t, &a, v, NULL, 1, 0), FZ_TIERS_RUN);
		learn(t, &a, 1, cases[k].exit, cases[k].conf, 1);
		int d[NPIX];
		for (int i = 0; i < NPIX; i++)
			d[i] = 1;
		enum fz_tiers_verdict v2 = submit(t, &q, v, d, 2, 2);
		assert_int_equal(v2, cases[k].shared ? FZ_TIERS_ANSWERED : FZ_TIERS_RUN);
		if (v2 == FZ_TIERS_RUN)
			fz_tiers_abandon(t, &q.fr, 2);
	}
	fz_tiers_free(t);
}

static void followers_answered_led_again_or_waiting_again(void **state)
{
	(void)state;
	struct fz_tiers *t = make(8, 8);
	struct treq a, f1, f2, f3;
	int d1[NPIX], d2[NPIX];
	for (int i = 0; i < NPIX; i++)
		d1[i] = 1, d2[i] = 2;
	assert_int_equal(submit(t, &a, 60, NULL, 1, 0), FZ_TIERS_RUN);
	assert_int_equal(submit(t, &f1, 60, d1, 2, 10), FZ_TIERS_WAITING);
	assert_int_equal(submit(t, &f2, 60, d2, 3, 20), FZ_TIERS_WAITING);
	/* unsure: f1 leads again (and runs), f2 waits for f1 */
	learn(t, &a, 2, -1, 0.6f, 30);
	assert_int_equal(f1.ran, 1);
	assert_true(f1.fr.flags & FZ_TIERS_F_LEADER);
	assert_int_equal(f2.ran + f2.answered, 0);
	assert_int_equal(st.followers_relead, 1);
	assert_int_equal(st.followers_rewaited, 1);
	/* f1 sure: f2 answered by it */
	learn(t, &f1, 2, -1, 0.98f, 40);
	assert_int_equal(f2.answered, 1);
	assert_int_equal(f2.fr.tier, FZ_TIER_COALESCED);
	/* a follower that waited wait_us already runs instead of waiting again */
	assert_int_equal(submit(t, &a, 200, NULL, 1, 100), FZ_TIERS_RUN);
	assert_int_equal(submit(t, &f3, 200, d1, 2, 100), FZ_TIERS_WAITING);
	learn(t, &a, 2, -1, 0.6f, 100 + WAIT_NS + 1);
	assert_int_equal(f3.ran, 1);
	assert_int_equal(st.followers_ran, 1);
	fz_tiers_free(t);
}

static void followers_expire_and_abandon_counts_from_now(void **state)
{
	(void)state;
	struct fz_tiers *t = make(8, 8);
	struct treq a, f, b, g;
	int d[NPIX];
	for (int i = 0; i < NPIX; i++)
		d[i] = 1;
	assert_int_equal(submit(t, &a, 60, NULL, 1, 0), FZ_TIERS_RUN);
	assert_int_equal(submit(t, &f, 60, d, 2, 5), FZ_TIERS_WAITING);
	fz_tiers_expire(t, WAIT_NS + 4); /* not yet: f arrived at 5 */
	assert_int_equal(f.ran, 0);
	fz_tiers_expire(t, WAIT_NS + 5);
	assert_int_equal(f.ran, 1);
	assert_int_equal(st.followers_expired, 1);
	learn(t, &a, 1, -1, 0.99f, WAIT_NS + 2); /* its followers are gone: nothing to hand on */
	assert_int_equal(f.answered, 0);
	/* abandoned leader: its follower leads again from now, and does not expire at once */
	const uint64_t t0 = 5 * WAIT_NS;
	assert_int_equal(submit(t, &b, 180, NULL, 1, t0), FZ_TIERS_RUN);
	assert_int_equal(submit(t, &g, 180, d, 2, t0 + 1), FZ_TIERS_WAITING);
	fz_tiers_abandon(t, &b.fr, t0 + 2);
	assert_int_equal(g.ran, 1);
	assert_true(g.fr.flags & FZ_TIERS_F_LEADER);
	struct treq h;
	assert_int_equal(submit(t, &h, 180, d, 3, t0 + 3), FZ_TIERS_WAITING); /* waits for g */
	fz_tiers_expire(t, t0 + 4);
	assert_int_equal(h.ran, 0);
	learn(t, &g, 5, -1, 0.99f, t0 + 5);
	assert_int_equal(h.answered, 1);
	fz_tiers_free(t);
}

/* A follower's wait was measured from its leader's start: one that arrived late expired at
 * once, after waiting next to nothing. */
static void follower_arriving_late_expired_at_its_leaders_deadline(void **state)
{
	(void)state;
	struct fz_tiers *t = make(8, 8);
	struct treq a, f;
	int d[NPIX];
	for (int i = 0; i < NPIX; i++)
		d[i] = 1;
	assert_int_equal(submit(t, &a, 60, NULL, 1, 0), FZ_TIERS_RUN);
	assert_int_equal(submit(t, &f, 60, d, 2, WAIT_NS - 10), FZ_TIERS_WAITING);
	assert_int_equal(fz_tiers_waiting(t), 1);
	fz_tiers_expire(t, WAIT_NS + 1);
	assert_int_equal(f.ran, 0);
	assert_int_equal(fz_tiers_waiting(t), 1);
	fz_tiers_expire(t, 2 * WAIT_NS - 10);
	assert_int_equal(f.ran, 1);
	assert_int_equal(fz_tiers_waiting(t), 0);
	assert_int_equal(st.followers_expired, 1);
	learn(t, &a, 1, -1, 0.99f, 2 * WAIT_NS); /* nothing left to hand on */
	assert_int_equal(f.answered, 0);
	fz_tiers_free(t);
}

/* A follower that waited again for a second leader was timed from that leader's start: it
 * could wait nearly twice wait_us. */
static void follower_waiting_again_waited_twice_wait_us(void **state)
{
	(void)state;
	struct fz_tiers *t = make(8, 1);
	struct treq a, f, b;
	int d1[NPIX], d2[NPIX];
	for (int i = 0; i < NPIX; i++)
		d1[i] = 1, d2[i] = 2;
	assert_int_equal(submit(t, &a, 60, NULL, 1, 0), FZ_TIERS_RUN);
	assert_int_equal(submit(t, &f, 60, d1, 2, 1), FZ_TIERS_WAITING);
	/* a has its one follower: b, alike, leads */
	assert_int_equal(submit(t, &b, 60, d2, 3, WAIT_NS - 100), FZ_TIERS_RUN);
	assert_int_equal(st.followers_full, 1);
	/* a's answer is not sure enough to share: f waits again, for b */
	learn(t, &a, 1, -1, 0.5f, WAIT_NS - 50);
	assert_int_equal(f.answered + f.ran, 0);
	assert_int_equal(st.followers_rewaited, 1);
	assert_int_equal(fz_tiers_waiting(t), 1);
	fz_tiers_expire(t, WAIT_NS);
	assert_int_equal(f.ran, 0);
	fz_tiers_expire(t, WAIT_NS + 1); /* wait_us after its own arrival */
	assert_int_equal(f.ran, 1);
	assert_int_equal(fz_tiers_waiting(t), 0);
	learn(t, &b, 1, -1, 0.99f, WAIT_NS + 2);
	assert_int_equal(f.answered, 0);
	fz_tiers_free(t);
}

static void full_tables_let_requests_run(void **state)
{
	(void)state;
	struct fz_tiers *t = make(1, 1);
	struct treq a, b, f1, f2;
	int d[NPIX];
	for (int i = 0; i < NPIX; i++)
		d[i] = 1;
	assert_int_equal(submit(t, &a, 60, NULL, 1, 0), FZ_TIERS_RUN);
	assert_int_equal(submit(t, &b, 200, NULL, 1, 0), FZ_TIERS_RUN); /* pending table full */
	assert_int_equal(st.pending_full, 1);
	assert_int_equal(submit(t, &f1, 60, d, 2, 1), FZ_TIERS_WAITING);
	assert_int_equal(submit(t, &f2, 61, NULL, 3, 1), FZ_TIERS_RUN); /* one follower at most */
	assert_int_equal(st.followers_full, 1);
	fz_tiers_free(t);
}

static void tiers_switched_off_answer_nothing(void **state)
{
	(void)state;
	struct fz_tiers *t = make(8, 8);
	struct treq a, q;
	int d[NPIX];
	for (int i = 0; i < NPIX; i++)
		d[i] = 1;
	assert_int_equal(submit(t, &a, 90, NULL, 1, 0), FZ_TIERS_RUN);
	learn(t, &a, 6, -1, 0.99f, 1);
	off_bits = 1u << FZ_TIER_EXACT | 1u << FZ_TIER_NEAR | 1u << FZ_TIER_FLOW |
		   1u << FZ_TIER_COALESCED;
	assert_int_equal(submit(t, &q, 90, NULL, 1, 2), FZ_TIERS_RUN); /* an exact repeat */
	struct treq w;
	assert_int_equal(submit(t, &w, 90, d, 2, 2), FZ_TIERS_RUN); /* no waiting either */
	assert_true(st.tier_off_skips >= 4);
	off_bits = 0;
	struct treq r;
	assert_int_equal(submit(t, &r, 90, NULL, 3, 3), FZ_TIERS_ANSWERED);
	fz_tiers_free(t);
}

static void a_clear_makes_answers_in_flight_stale(void **state)
{
	(void)state;
	struct fz_tiers *t = make(8, 8);
	struct treq a, b;
	assert_int_equal(submit(t, &a, 70, NULL, 1, 0), FZ_TIERS_RUN);
	fz_tiers_clear(t);
	learn(t, &a, 2, -1, 0.99f, 1);
	assert_int_equal(st.stale, 1);
	assert_int_equal(st.clears, 1);
	assert_int_equal(submit(t, &b, 70, NULL, 1, 2), FZ_TIERS_RUN); /* nothing learned */
	fz_tiers_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(exact_repeats_wait_then_hit),
		cmocka_unit_test(near_hits_are_confirmed_and_keep_level_contrast_sign),
		cmocka_unit_test(only_sure_answers_are_shared),
		cmocka_unit_test(followers_answered_led_again_or_waiting_again),
		cmocka_unit_test(followers_expire_and_abandon_counts_from_now),
		cmocka_unit_test(follower_arriving_late_expired_at_its_leaders_deadline),
		cmocka_unit_test(follower_waiting_again_waited_twice_wait_us),
		cmocka_unit_test(full_tables_let_requests_run),
		cmocka_unit_test(tiers_switched_off_answer_nothing),
		cmocka_unit_test(a_clear_makes_answers_in_flight_stale),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
