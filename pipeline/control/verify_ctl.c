/*
 * Self-checking's decisions, on the control thread: the stage lcores only score shadows into
 * samples (datapath/verify.c); here the self-check context (pipeline/selfcheck) owns the
 * windows and the guard, and what it decides is published to the data path:
 * - a point's gate (threshold and switch) with one atomic store into the running snapshot
 *   (fz_cache_set_gate; lookups read it with one load);
 * - the front tiers switched off, as one word of bits (fz_app.front_off) RX reads.
 * Each decision is logged and counted; telemetry reads the state under a mutex (it runs on
 * DPDK's telemetry thread).
 *
 * A sample is tagged with the snapshot it was scored against (its address). Samples of another
 * snapshot than the current one are dropped. The address cannot have been reused by a newer
 * snapshot: a retired set is freed (RCU defer queue, reclaimed in control_main after this poll)
 * only once the last stage has passed a quiescent point, so every sample it tagged with that
 * set is already in the ring; and this poll runs before any reload of the same round, so a set
 * allocated later at the same address finds those samples gone.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "app_pvt.h"
#include "fz_cache.h"
#include "fz_selfcheck.h"
#include "stage_cache.h"
#include "verify.h"
#include "verify_ctl.h"

static struct {
	struct fz_selfcheck *sc;
	const struct fz_cache_set *set; /* the snapshot sc follows */
	uint64_t stale;
	pthread_mutex_t mu; /* sc, set, stale: the control thread against telemetry */
} C = {.mu = PTHREAD_MUTEX_INITIALIZER};

int fz_verify_ctl_init(void)
{
	const struct fz_appcfg *c = &fz_app.cfg;
	if (!fz_verify_on())
		return 0;
	const struct fz_selfcheck_cfg sc = {
		.guard = {.target = c->verify.target, .margin = c->verify.margin,
			  .min_samples = (unsigned)c->verify.min_samples},
		.window = (unsigned)c->verify.window,
		.every = (unsigned)c->verify.every,
	};
	if (!(C.sc = fz_selfcheck_create(&sc)))
		return -errno;
	const unsigned need = fz_selfcheck_guard(C.sc)->min_samples;
	if (need > sc.window)
		FZ_LOG(WARNING, "verify: a window of %u samples is below the %u the guard decides on: "
				"it never will", sc.window, need);
	FZ_LOG(INFO, "verify: %.2f %% of early answers (cache points and each front tier) checked "
		     "against the full model; per point and tier a window of %u, guard at %.2f %% "
		     "(95 %% lower bound) on >= %u samples, decided on the control thread",
	       100 * c->verify.sample, sc.window, 100 * c->verify.target, need);
	atomic_store_explicit(&fz_app.front_off, 0, memory_order_relaxed);
	return 0;
}

void fz_verify_ctl_fini(void)
{
	pthread_mutex_lock(&C.mu);
	fz_selfcheck_free(C.sc);
	C.sc = NULL;
	C.set = NULL;
	pthread_mutex_unlock(&C.mu);
}

static void publish_tiers(void)
{
	/* relaxed: the word is the whole message (which tiers may answer); nothing else is
	 * published with it. Partner: the load in datapath/verify.h fz_verify_tier_off() (RX). */
	atomic_store_explicit(&fz_app.front_off, fz_selfcheck_tiers_off(C.sc),
			      memory_order_relaxed);
}

/* A new snapshot (start, reload): the windows start afresh from its calibrated gates, and the
 * tiers are on again (RX clears its tables on a reload too). */
static void adopt(const struct fz_cache_set *cs)
{
	struct fz_cache_gate g[FZ_SELFCHECK_MAX_POINTS];
	int n = cs ? cs->n_caches : 0;
	if (n > FZ_SELFCHECK_MAX_POINTS)
		n = FZ_SELFCHECK_MAX_POINTS;
	for (int i = 0; i < n; i++)
		g[i] = fz_cache_gate(cs->caches[i]);
	fz_selfcheck_adopt(C.sc, (uint64_t)(uintptr_t)cs, n, g);
	C.set = cs;
	publish_tiers();
}

static void apply(const struct fz_cache_set *cs, const struct fz_selfcheck_decision *d)
{
	if (d->kind == FZ_SELFCHECK_TIER) {
		publish_tiers();
		FZ_LOG(WARNING, "verify: front tier %s: switched off (sampled agreement %.2f %% "
				"[%.2f, %.2f] over %llu answers); on again after a reload",
		       fz_selfcheck_tier_name((enum fz_selfcheck_tier)d->index),
		       d->n ? 100.0 * d->agree / d->n : 0.0, 100 * d->lo, 100 * d->hi,
		       (unsigned long long)d->n);
		return;
	}
	struct fz_cache *c = cs->caches[d->index];
	fz_cache_set_gate(c, d->after);
	FZ_LOG(WARNING, "verify: %s: %s, threshold %.4g -> %.4g%s (sampled agreement %.2f %% "
			"[%.2f, %.2f] over %llu at the old threshold)",
	       fz_cache_params(c)->layer, fz_guard_action_name(d->action), (double)d->before.thr,
	       (double)d->after.thr, d->after.on ? "" : ", switched off",
	       d->n ? 100.0 * d->agree / d->n : 0.0, 100 * d->lo, 100 * d->hi,
	       (unsigned long long)d->n);
}

void fz_verify_ctl_poll(void)
{
	if (!C.sc)
		return;
	struct fz_selfcheck_sample s[256];
	pthread_mutex_lock(&C.mu);
	/* the control thread swaps snapshots and retires them: the current one stays valid here */
	const struct fz_cache_set *cs = fz_app_caches_current();
	if (cs != C.set)
		adopt(cs);
	unsigned n;
	do {
		n = fz_verify_samples_take(s, RTE_DIM(s));
		for (unsigned i = 0; i < n; i++) {
			struct fz_selfcheck_decision d;
			int rc = fz_selfcheck_add(C.sc, &s[i], &d);
			if (rc == 1)
				apply(cs, &d);
			else if (rc == -ESTALE)
				C.stale++;
		}
	} while (n == RTE_DIM(s));
	pthread_mutex_unlock(&C.mu);
}

int fz_verify_ctl_view(enum fz_selfcheck_kind kind, int index, struct fz_selfcheck_view *v)
{
	pthread_mutex_lock(&C.mu);
	int rc = C.sc ? fz_selfcheck_view(C.sc, kind, index, v) : -EINVAL;
	pthread_mutex_unlock(&C.mu);
	return rc;
}

uint64_t fz_verify_ctl_stale(void)
{
	pthread_mutex_lock(&C.mu);
	uint64_t n = C.stale;
	pthread_mutex_unlock(&C.mu);
	return n;
}
