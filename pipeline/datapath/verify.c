/*
 * Self-checking on the data path: the glue between the lcores and pipeline/selfcheck.
 * - Which answers are checked: a share (verify.sample) of each stream, picked evenly per
 *   stream (fz_selfcheck_pick): TX picks cache exits; RX picks front-tier answers, for which
 *   it loads the model input it would otherwise skip (an exact, flow or near hit never needs
 *   it), so the shadow can carry it.
 * - TX copies a picked answer into a shadow (the request without a reply address) and sends it
 *   into a ring stage 1 reads only to fill a batch that has room (the lowest priority: when the
 *   ring or the request pool is short, the shadow is dropped and counted). A shadow never
 *   exits; every cache point looks it up (switched-off points too) and the lookup hook notes
 *   what each point would have answered.
 * - The last stage scores it: the full model's answer against each point's (a cache exit's
 *   shadow) or against the tier's (a front answer's shadow carries it), as 16-byte samples into
 *   an SP/SC ring to the control thread, which owns the windows and the guard
 *   (control/verify_ctl.c). When the ring is full a sample is dropped and counted: the stage
 *   never waits for control. An online entry that answered a shadow differently from the full
 *   model is forgotten here: the last stage inserts online entries too (one writer).
 * A shadow re-runs the layers before its exit point too (it starts from the model input): the
 * price of keeping the answer path free of copies.
 */
#include <errno.h>
#include <stdalign.h>
#include <string.h>

#include <rte_lcore.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include "app_pvt.h"
#include "fz_cache.h"
#include "fz_cascade.h"
#include "fz_proto.h"
#include "fz_selfcheck.h"
#include "stage_cache.h"
#include "verify.h"

_Static_assert(FZ_VERIFY_POINTS == FZ_SELFCHECK_MAX_POINTS,
	       "a shadow notes the answers of every point self-checking follows");

#define SAMPLE_RING 4096 /* samples in flight to control (it drains every 2 ms) */

static struct {
	bool on;
	struct rte_ring *samples; /* struct fz_selfcheck_sample, last stage -> control */
	alignas(64) struct fz_selfcheck_sampler rx; /* RX's alone */
	uint64_t front_picked[FZ_SELFCHECK_TIERS], front_vetoed[FZ_SELFCHECK_TIERS];
	alignas(64) struct fz_selfcheck_sampler tx; /* TX's alone */
	alignas(64) uint64_t samples_lost;          /* the last stage's alone */
	uint64_t forgotten[FZ_VERIFY_POINTS];
} V;

bool fz_verify_on(void)
{
	return V.on;
}

int fz_verify_init(void)
{
	const struct fz_appcfg *c = &fz_app.cfg;
	memset(&V, 0, sizeof(V));
	if (c->verify.sample <= 0 || !c->caches || !fz_app.caches)
		return 0;
	V.rx.rate = V.tx.rate = c->verify.sample;
	/* as many shadows wait as requests wait for stage 1 (rings.size) */
	fz_app.shadow_ring = rte_ring_create("fz_shadow", (unsigned)c->ring_size, rte_socket_id(),
					     RING_F_SP_ENQ | RING_F_SC_DEQ);
	V.samples = rte_ring_create_elem("fz_verify_samples", sizeof(struct fz_selfcheck_sample),
					 SAMPLE_RING, rte_socket_id(),
					 RING_F_SP_ENQ | RING_F_SC_DEQ);
	if (!fz_app.shadow_ring || !V.samples) {
		fz_verify_fini();
		return -ENOMEM;
	}
	V.on = true;
	return 0;
}

void fz_verify_fini(void)
{
	rte_ring_free(fz_app.shadow_ring);
	fz_app.shadow_ring = NULL;
	rte_ring_free(V.samples);
	memset(&V, 0, sizeof(V));
}

/* The self-checking tier that answered rq, or -1 (fz_answer_tier: the tiers' order, which is
 * self-checking's: datapath/front.c asserts it). */
static int tier_of(const struct fz_req *rq)
{
	return fz_answer_tier(rq->answer);
}

bool fz_verify_rx_veto(struct fz_req *rq)
{
	const int t = tier_of(rq);
	if (t < 0 || rq->status || !fz_verify_tier_off((enum fz_selfcheck_tier)t))
		return false;
	V.front_vetoed[t]++;
	rq->label = -1;
	rq->confidence = 0;
	rq->answer = fz_answer_of(FZ_ANSWERED_ERROR); /* none yet: it runs */
	rq->fr.flags = 0;
	rq->sh_want = 0;
	return true;
}

bool fz_verify_rx_pick(struct fz_req *rq)
{
	const int t = tier_of(rq);
	rq->sh_want = V.on && t >= 0 && !rq->status && fz_selfcheck_pick(&V.rx, 1 + (unsigned)t);
	if (rq->sh_want)
		V.front_picked[t]++;
	return rq->sh_want;
}

void fz_verify_tx(const struct fz_req *rq)
{
	if (!V.on || rq->status || rq->shadow)
		return;
	const bool front = tier_of(rq) >= 0;
	if (front ? !rq->sh_want /* RX picked it, and loaded its input */
		  : !fz_answer_is(rq->answer, FZ_ANSWERED_LAYER) || !fz_selfcheck_pick(&V.tx, 0))
		return;
	void *o;
	/* the lowest priority: never take the last quarter of the pool */
	if (rte_mempool_avail_count(fz_app.reqs) < fz_app.reqs->size / 4 ||
	    rte_mempool_get(fz_app.reqs, &o) < 0) {
		fz_app.tx.shadows_busy++;
		return;
	}
	struct fz_req *sh = o;
	memcpy(sh->act, rq->act, (fz_app.act_floats - fz_app_key_floats()) * sizeof(float));
	sh->id = rq->id;
	sh->t_rx = rq->t_rx;
	sh->status = 0;
	/* a front answer's shadow carries it (the tier and what it answered); a cache exit's
	 * shadow is scored at every point */
	sh->label = front ? rq->label : -1;
	sh->confidence = front ? rq->confidence : 0;
	sh->answer = front ? rq->answer : fz_answer_of(FZ_ANSWERED_FULL);
	sh->keys = NULL;
	sh->keys_set = NULL;
	sh->fr.flags = 0;
	sh->sh_want = 0;
	sh->shadow = 1;
	for (int i = 0; i < FZ_VERIFY_POINTS; i++)
		sh->sh_label[i] = -1;
	atomic_fetch_add_explicit(&fz_app.in_flight, 1, memory_order_relaxed);
	if (rte_ring_sp_enqueue(fz_app.shadow_ring, sh) < 0) {
		fz_app.tx.shadows_busy++;
		fz_verify_release(sh);
		return;
	}
	fz_app.tx.shadows_sent++;
}

void fz_verify_lookup(void *arg, int cache, const struct fz_cascade_row *rows,
		      const struct fz_cache_result *res, unsigned n)
{
	(void)arg;
	if (cache < 0 || cache >= FZ_VERIFY_POINTS)
		return;
	for (unsigned i = 0; i < n; i++)
		if (rows[i].shadow) {
			struct fz_req *rq = rows[i].user;
			rq->sh_label[cache] = (int16_t)res[i].label;
			rq->sh_conf[cache] = res[i].conf;
			rq->sh_slot[cache] = res[i].slot;
		}
}

void fz_verify_release(struct fz_req *rq)
{
	fz_req_free(rq);
}

void fz_verify_done(struct fz_req *rq, int full_label, const struct fz_cache_set *cs)
{
	struct fz_selfcheck_sample s[FZ_VERIFY_POINTS + 1];
	unsigned n = 0;
	const uint64_t tag = (uint64_t)(uintptr_t)cs;
	const int tier = tier_of(rq);
	if (tier >= 0)
		s[n++] = (struct fz_selfcheck_sample){.set = tag, .conf = rq->confidence,
						      .kind = FZ_SELFCHECK_TIER,
						      .index = (uint8_t)tier,
						      .agree = rq->label == full_label};
	const int np = cs ? cs->n_caches : 0; /* <= FZ_CACHE_MAX_POINTS = FZ_VERIFY_POINTS */
	for (int i = 0; i < np; i++) {
		if (rq->sh_label[i] < 0)
			continue;
		struct fz_cache *c = cs->caches[i];
		const bool agree = rq->sh_label[i] == full_label;
		/* an online entry the full model contradicts goes (this lcore inserts them too) */
		if (!agree && rq->sh_slot[i] >= 0 && fz_cache_params(c)->online &&
		    fz_cache_forget(c, rq->sh_slot[i]) == 0)
			__atomic_store_n(&V.forgotten[i], V.forgotten[i] + 1, __ATOMIC_RELAXED);
		/* the points score a cache exit's shadow: a front answer's one would count one
		 * input as often as it is repeated */
		if (tier < 0)
			s[n++] = (struct fz_selfcheck_sample){.set = tag, .conf = rq->sh_conf[i],
							      .kind = FZ_SELFCHECK_POINT,
							      .index = (uint8_t)i, .agree = agree};
	}
	const unsigned put = rte_ring_sp_enqueue_burst_elem(V.samples, s, sizeof(*s), n, NULL);
	if (put < n)
		__atomic_store_n(&V.samples_lost, V.samples_lost + (n - put), __ATOMIC_RELAXED);
	__atomic_store_n(&fz_app.shadows_checked, fz_app.shadows_checked + 1, __ATOMIC_RELAXED);
	fz_verify_release(rq);
}

unsigned fz_verify_samples_take(struct fz_selfcheck_sample *s, unsigned n)
{
	if (!V.samples)
		return 0;
	return rte_ring_sc_dequeue_burst_elem(V.samples, s, sizeof(*s), n, NULL);
}

void fz_verify_counters(struct fz_verify_counters *c)
{
	memset(c, 0, sizeof(*c));
	c->samples_lost = __atomic_load_n(&V.samples_lost, __ATOMIC_RELAXED);
	for (int i = 0; i < FZ_VERIFY_POINTS; i++)
		c->forgotten[i] = __atomic_load_n(&V.forgotten[i], __ATOMIC_RELAXED);
	for (int t = 0; t < FZ_SELFCHECK_TIERS; t++) {
		c->front_picked[t] = __atomic_load_n(&V.front_picked[t], __ATOMIC_RELAXED);
		c->front_vetoed[t] = __atomic_load_n(&V.front_vetoed[t], __ATOMIC_RELAXED);
	}
}
