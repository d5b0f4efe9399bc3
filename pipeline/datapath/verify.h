/* Self-checking on the data path (datapath/verify.c): the thin glue between the lcores and the
 * self-check module (pipeline/selfcheck): which answers are checked, their shadows, the shadows'
 * lookups, and the samples the last stage scores for the control thread (control/verify_ctl.c),
 * which decides. Private to the appliance. */
#ifndef FZ_DP_VERIFY_H
#define FZ_DP_VERIFY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "app_pvt.h"
#include "fz_selfcheck.h"

struct fz_cascade_row;
struct fz_cache_result;
struct fz_cache_set;

/* Samplers, the shadow ring and the sample ring from the config (before the lcores start):
 * 0, or -ENOMEM. Nothing to do with verify.sample 0 or the caches off. */
int fz_verify_init(void);
void fz_verify_fini(void);
bool fz_verify_on(void);

/*
 * RX (front tiers): is tier t switched off by the guard? One relaxed load of the word the
 * control thread publishes (fz_app.front_off, bit 1 << t): the bit is the whole message.
 * Partner: the store in control/verify_ctl.c publish_tiers(). A tier that is off answers
 * nothing; its requests run (or lead) as if the tier had missed.
 */
static inline bool fz_verify_tier_off(enum fz_selfcheck_tier t)
{
	return (atomic_load_explicit(&fz_app.front_off, memory_order_relaxed) >> t) & 1;
}

/* RX, for a request the front tiers answered (label, confidence, answer set): when its
 * tier is off, the answer is taken back (the request is reset to run, counted) and true is
 * returned: the caller runs it. */
bool fz_verify_rx_veto(struct fz_req *rq);
/* RX, for a front answer it sends on: is it to be checked (rq->sh_want)? Then the caller must
 * have loaded rq's model input (rq->act) before it goes to TX. */
bool fz_verify_rx_pick(struct fz_req *rq);
/* TX, for each answer it sent: maybe a shadow of it (a sampled cache exit, a picked front
 * answer), to stage 1. */
void fz_verify_tx(const struct fz_req *rq);
/* The stages' lookup hook (fz_cascade_run.lookup) while a batch holds shadows. */
void fz_verify_lookup(void *arg, int cache, const struct fz_cascade_row *rows,
		      const struct fz_cache_result *res, unsigned n);
/* The last stage: the shadow's full-model answer scores the points (a cache exit's shadow) or
 * the tier (a front answer's), as samples for the control thread; online entries the full
 * model contradicts are forgotten here (this lcore inserts them: one writer). The shadow is
 * released. */
void fz_verify_done(struct fz_req *rq, int full_label, const struct fz_cache_set *cs);
/* A shadow back to the pool (a failed batch, a full ring). */
void fz_verify_release(struct fz_req *rq);

/* Control thread: up to n scored samples, oldest first; returns how many. */
unsigned fz_verify_samples_take(struct fz_selfcheck_sample *s, unsigned n);

/* The glue's counters (each written by one lcore, read relaxed). */
struct fz_verify_counters {
	uint64_t samples_lost;                   /* last stage: the sample ring was full */
	uint64_t forgotten[FZ_VERIFY_POINTS];    /* last stage: online entries contradicted */
	uint64_t front_picked[FZ_SELFCHECK_TIERS]; /* RX: front answers picked to be checked */
	uint64_t front_vetoed[FZ_SELFCHECK_TIERS]; /* RX: answers of a tier that was off */
};
void fz_verify_counters(struct fz_verify_counters *c);

#endif /* FZ_DP_VERIFY_H */
