/*
 * Self-checking caches on the data path. TX sends a share (verify.sample) of the early answers
 * it has just sent on as shadows: copies of the request, without a reply address, into a ring
 * stage 1 reads only to fill a batch that has room (the lowest priority: when the ring or the
 * request pool is short, the shadow is dropped and counted). A shadow never exits; every cache
 * point looks it up (switched-off points too) and the stage's lookup hook notes what each point
 * would have answered. At the last stage the full model's answer scores every point: one sample
 * (the point's confidence, agreed or not) into the point's window (cachecore/fz_verify.h), and
 * every verify.every samples the guard may tighten, switch off, relax or switch on the point's
 * threshold in the running snapshot; each change is logged and counted. An online entry that
 * answered a shadow differently from the full model is forgotten (the last stage inserts online
 * entries too: one writer). The last stage is the only writer of the windows; it publishes each
 * point's numbers for telemetry.
 * A shadow re-runs the layers before its exit point too (it starts from the model input): the
 * price of keeping the answer path free of copies.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <rte_lcore.h>

#include "app_pvt.h"
#include "fz_cache.h"
#include "fz_cascade.h"
#include "fz_verify.h"
#include "stage_cache.h"
#include "verify.h"

static struct {
	bool on;
	struct fz_verify *win[FZ_VERIFY_POINTS];
	float calibrated[FZ_VERIFY_POINTS]; /* thresholds of the set they were taken from */
	bool was_on[FZ_VERIFY_POINTS];
	unsigned since[FZ_VERIFY_POINTS]; /* samples since the guard last ran */
	const struct fz_cache_set *set;   /* the snapshot the windows belong to */
	struct fz_guard_cfg g;
	double acc; /* TX's sampling accumulator */
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
	for (int i = 0; i < FZ_VERIFY_POINTS; i++)
		if (!(V.win[i] = fz_verify_create((unsigned)c->verify.window))) {
			fz_verify_fini();
			return -1;
		}
	V.g.target = c->verify.target;
	V.g.margin = c->verify.margin;
	/* by default the fewest samples at which a window of agreeing answers passes the target:
	 * below that the lower bound is below it whatever the point does */
	unsigned need = (unsigned)ceil(1.959963984540054 * 1.959963984540054 * c->verify.target /
				       (1 - c->verify.target));
	V.g.min_samples = c->verify.min_samples ? (unsigned)c->verify.min_samples : need;
	if (V.g.min_samples > (unsigned)c->verify.window)
		FZ_LOG(WARNING, "verify: a window of %d samples is below the %u the guard decides on: "
				"it never will", c->verify.window, V.g.min_samples);
	fz_app.shadow_ring = rte_ring_create("fz_shadow", 1024, rte_socket_id(),
					     RING_F_SP_ENQ | RING_F_SC_DEQ);
	if (!fz_app.shadow_ring) {
		fz_verify_fini();
		return -1;
	}
	V.on = true;
	FZ_LOG(INFO, "verify: %.2f %% of early answers checked against the full model; per point a "
		     "window of %d, guard at %.2f %% (95 %% lower bound) on >= %u samples",
	       100 * c->verify.sample, c->verify.window, 100 * c->verify.target, V.g.min_samples);
	return 0;
}

void fz_verify_fini(void)
{
	for (int i = 0; i < FZ_VERIFY_POINTS; i++)
		fz_verify_free(V.win[i]);
	rte_ring_free(fz_app.shadow_ring);
	fz_app.shadow_ring = NULL;
	memset(&V, 0, sizeof(V));
}

void fz_verify_tx(const struct fz_req *rq)
{
	/* an early answer of a cache point (not a front tier, not an error) */
	if (!V.on || rq->status || rq->shadow || rq->exit_layer >= 64)
		return;
	V.acc += fz_app.cfg.verify.sample;
	if (V.acc < 1)
		return;
	V.acc -= 1;
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
	sh->label = -1;
	sh->exit_layer = FZ_EXIT_FULL_MODEL;
	sh->keys = NULL;
	sh->keys_set = NULL;
	sh->front = 0;
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

static void publish(int i, struct fz_cache *c)
{
	struct fz_verify_pub *p = &fz_app.verify_pub[i];
	uint64_t n, k;
	double lo, hi;
	fz_verify_at(V.win[i], fz_cache_threshold(c), &n, &k, &lo, &hi);
	__atomic_store_n(&p->samples, n, __ATOMIC_RELAXED);
	__atomic_store_n(&p->agree, k, __ATOMIC_RELAXED);
	p->lo = lo, p->hi = hi;
	p->threshold = fz_cache_threshold(c);
	p->calibrated = V.calibrated[i];
	p->on = fz_cache_enabled(c);
}

/* A reload swapped the snapshot: the windows described the old one. */
static void adopt(const struct fz_cache_set *cs)
{
	V.set = cs;
	for (int i = 0; i < FZ_VERIFY_POINTS; i++) {
		fz_verify_clear(V.win[i]);
		V.since[i] = 0;
		if (cs && i < cs->n_caches) {
			V.calibrated[i] = fz_cache_threshold(cs->caches[i]);
			V.was_on[i] = fz_cache_enabled(cs->caches[i]);
		}
	}
}

void fz_verify_done(struct fz_req *rq, int full_label, const struct fz_cache_set *cs)
{
	if (cs != V.set)
		adopt(cs);
	const int np = cs ? (cs->n_caches < FZ_VERIFY_POINTS ? cs->n_caches : FZ_VERIFY_POINTS) : 0;
	for (int i = 0; i < np; i++) {
		if (rq->sh_label[i] < 0)
			continue;
		struct fz_cache *c = cs->caches[i];
		const bool agree = rq->sh_label[i] == full_label;
		fz_verify_add(V.win[i], rq->sh_conf[i], agree);
		/* an online entry the full model contradicts goes (this lcore inserts them too) */
		if (!agree && rq->sh_slot[i] >= 0 && fz_cache_params(c)->online &&
		    fz_cache_forget(c, rq->sh_slot[i]) == 0)
			__atomic_store_n(&fz_app.verify_pub[i].forgotten,
					 fz_app.verify_pub[i].forgotten + 1, __ATOMIC_RELAXED);
		__atomic_store_n(&fz_app.verify_pub[i].checked, fz_app.verify_pub[i].checked + 1,
				 __ATOMIC_RELAXED);
		/* the guard and the published numbers (each a scan of the window) every
		 * verify.every samples of the point */
		if (++V.since[i] < (unsigned)fz_app.cfg.verify.every)
			continue;
		V.since[i] = 0;
		/* a point calibration switched off (no payoff) stays off: the guard only keeps
		 * the agreement of points that answer */
		if (!V.was_on[i]) {
			publish(i, c);
			continue;
		}
		float thr = fz_cache_threshold(c), before = thr;
		bool on = fz_cache_enabled(c);
		enum fz_guard_action a = fz_guard_update(&V.g, V.win[i], V.calibrated[i], &thr, &on);
		if (a != FZ_GUARD_KEEP) {
			uint64_t n, k;
			double lo, hi;
			fz_verify_at(V.win[i], before, &n, &k, &lo, &hi);
			fz_cache_set_threshold(c, thr);
			fz_cache_set_enabled(c, on);
			fz_app.verify_pub[i].changes++;
			FZ_LOG(WARNING, "verify: %s: %s, threshold %.4g -> %.4g%s (sampled agreement "
					"%.2f %% [%.2f, %.2f] over %llu at the old threshold)",
			       fz_cache_params(c)->layer, fz_guard_action_name(a), (double)before,
			       (double)thr, on ? "" : ", switched off", n ? 100.0 * k / n : 0.0,
			       100 * lo, 100 * hi, (unsigned long long)n);
		}
		publish(i, c);
	}
	fz_app.shadows_checked++;
	fz_verify_release(rq);
}
