/* Freeze self-checking: shadows of early answers scored against the full model, per cache point
 * and per front tier, and the guard's decisions. DPDK-free, with an explicit context: the stage
 * lcores only score samples (struct fz_selfcheck_sample, 16 bytes) and hand them over; one
 * thread (the appliance's control thread, or a test) owns the context, feeds it the samples and
 * applies what it decides: a point's new gate (fz_cache_set_gate: threshold and switch in one
 * word), a tier switched off. */
#ifndef FZ_SELFCHECK_H
#define FZ_SELFCHECK_H

#include <stdbool.h>
#include <stdint.h>

#include "fz_cache.h"
#include "fz_verify.h"

#define FZ_SELFCHECK_MAX_POINTS FZ_CACHE_MAX_POINTS /* every point of a set is followed */

/* The front tiers, in the order RX asks them (one list: enum and names stay together). */
#define FZ_SELFCHECK_FOREACH_TIER(_)                                                               \
	_(EXACT, "exact")                                                                          \
	_(FLOW, "flow")                                                                            \
	_(NEAR, "near")                                                                            \
	_(COALESCED, "coalesced")

enum fz_selfcheck_tier {
#define FZ_SC_TIER_ENUM(e, s) FZ_SELFCHECK_TIER_##e,
	FZ_SELFCHECK_FOREACH_TIER(FZ_SC_TIER_ENUM)
#undef FZ_SC_TIER_ENUM
	FZ_SELFCHECK_TIERS
};
const char *fz_selfcheck_tier_name(enum fz_selfcheck_tier t);

/* What a sample scores. */
enum fz_selfcheck_kind { FZ_SELFCHECK_POINT, FZ_SELFCHECK_TIER };

/* One scored sample: the answer a cache point (or a front tier) gave a shadow, against the full
 * model's. What a stage hands to the context's owner; small, to travel through a ring. */
struct fz_selfcheck_sample {
	uint64_t set;   /* the snapshot the point answered from (an opaque tag, e.g. its address) */
	float conf;     /* the point's (tier's) confidence in its answer */
	uint8_t kind;   /* enum fz_selfcheck_kind */
	uint8_t index;  /* the point's index in the set, or the tier */
	uint8_t agree;  /* 1: the full model gave the same label */
	uint8_t pad;
};
_Static_assert(sizeof(struct fz_selfcheck_sample) == 16, "a sample is 16 bytes");

struct fz_selfcheck_cfg {
	struct fz_guard_cfg guard; /* target, margin, min_samples (0: the fewest an all-agreeing
				    * window needs to pass the target: fz_selfcheck_min_samples) */
	unsigned window;           /* samples kept per point and per tier */
	unsigned every;            /* decide every this many samples of a point or tier */
};

/* The fewest samples at which an all-agreeing window's 95 % lower bound reaches target. */
unsigned fz_selfcheck_min_samples(double target);

/* A point's or tier's state (what telemetry shows). Counters run since create; the window's
 * numbers are those of the last decision (every `every` samples). */
struct fz_selfcheck_view {
	uint64_t checked;   /* samples scored */
	uint64_t disagreed; /* ... whose answer the full model did not give */
	uint64_t changes;   /* decisions that changed it (tighten, relax, off, on) */
	uint64_t offs;      /* ... of which switched it off */
	uint64_t samples, agree; /* in the window, answered at the current gate, agreeing */
	double lo, hi;      /* their 95 % Wilson interval */
	struct fz_cache_gate gate, calibrated; /* points: now, and as the snapshot set it; tiers:
						* on or off (threshold unused) */
};

/* A decision the owner applies (and logs). */
struct fz_selfcheck_decision {
	enum fz_selfcheck_kind kind;
	int index;
	enum fz_guard_action action;
	struct fz_cache_gate before, after;
	uint64_t n, agree; /* the window at the old gate, and its interval */
	double lo, hi;
};

struct fz_selfcheck;

/* A context with windows of cfg->window samples; no points until fz_selfcheck_adopt. NULL with
 * errno EINVAL (window 0 or > 2^24, every 0, target outside (0, 1)) or ENOMEM. */
struct fz_selfcheck *fz_selfcheck_create(const struct fz_selfcheck_cfg *cfg);
void fz_selfcheck_free(struct fz_selfcheck *sc);
/* The guard's settings in use (min_samples resolved). */
const struct fz_guard_cfg *fz_selfcheck_guard(const struct fz_selfcheck *sc);

/*
 * Follow snapshot `set` from now on: n_points points (a set holds at most FZ_CACHE_MAX_POINTS,
 * every one is followed) with the gates the snapshot carries (their calibrated state). Every window starts
 * afresh and every tier is on again (a new snapshot, new front tables). Counters keep running.
 */
void fz_selfcheck_adopt(struct fz_selfcheck *sc, uint64_t set, int n_points,
			const struct fz_cache_gate *gates);
int fz_selfcheck_points(const struct fz_selfcheck *sc);

/*
 * Score one sample. A point's window feeds the guard (fz_guard_update: tighten, switch off,
 * relax, switch on) every `every` of its samples; a point the snapshot had switched off is only
 * watched. A tier is switched off when its window's lower bound over >= min_samples samples
 * falls below target, and stays off until the next adopt (an off tier answers nothing, so
 * nothing could show it has recovered). Returns 1 with *d filled when a gate or a tier changed
 * (the caller publishes it), 0 when not, -ESTALE for a sample of another snapshot (dropped),
 * -EINVAL for a kind or index out of range.
 */
int fz_selfcheck_add(struct fz_selfcheck *sc, const struct fz_selfcheck_sample *s,
		     struct fz_selfcheck_decision *d);

/* A point's or a tier's state: 0, or -EINVAL out of range. */
int fz_selfcheck_view(const struct fz_selfcheck *sc, enum fz_selfcheck_kind kind, int index,
		      struct fz_selfcheck_view *v);
/* The tiers switched off, bit (1 << tier) each. */
uint32_t fz_selfcheck_tiers_off(const struct fz_selfcheck *sc);

/*
 * Choosing which answers to check: a share `rate` of each stream (cache exits, each tier),
 * spread evenly (error diffusion, no randomness), so a rare tier is sampled at the same rate
 * as a busy one. One sampler per thread that picks.
 */
#define FZ_SELFCHECK_STREAMS (1 + FZ_SELFCHECK_TIERS) /* 0: cache exits; 1 + tier */
struct fz_selfcheck_sampler {
	double rate;
	double acc[FZ_SELFCHECK_STREAMS];
};

static inline bool fz_selfcheck_pick(struct fz_selfcheck_sampler *s, unsigned stream)
{
	if (stream >= FZ_SELFCHECK_STREAMS || s->rate <= 0)
		return false;
	s->acc[stream] += s->rate;
	if (s->acc[stream] < 1)
		return false;
	s->acc[stream] -= 1;
	return true;
}

#endif /* FZ_SELFCHECK_H */
