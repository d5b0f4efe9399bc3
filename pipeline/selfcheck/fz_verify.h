/* Freeze self-checking, the statistics: a cache point's sampled agreement with the full model
 * over a sliding window, its 95 % Wilson interval, and the guard that tightens the point's threshold
 * (or switches the point off) when the interval falls below a target and relaxes it back toward
 * the calibrated value once it has recovered. Plain C, one writer (the control thread's
 * self-check context, fz_selfcheck.h); unit-tested on synthetic streams
 * (tests/selfcheck/test_verify.c). */
#ifndef FZ_VERIFY_H
#define FZ_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The 95 % Wilson score interval of k successes in n trials (n = 0: [0, 1]). */
void fz_wilson(uint64_t k, uint64_t n, double *lo, double *hi);

/* One point's window: the last `cap` samples (the point's confidence for the request, and
 * whether its answer agreed with the full model's). */
struct fz_verify;

struct fz_verify *fz_verify_create(unsigned cap);
void fz_verify_free(struct fz_verify *v);
void fz_verify_add(struct fz_verify *v, float conf, bool agree);
void fz_verify_clear(struct fz_verify *v);
unsigned fz_verify_count(const struct fz_verify *v);
/* Among the window's samples with confidence > thr (the ones the point answers at thr): how
 * many, how many agreed, and the Wilson interval of their agreement. */
void fz_verify_at(const struct fz_verify *v, float thr, uint64_t *n, uint64_t *agree, double *lo,
		  double *hi);

/* The guard's settings (the `verify:` section of a stages config). */
struct fz_guard_cfg {
	double target;       /* the lower bound must stay >= this (e.g. 0.995) */
	double margin;       /* relax only while the lower bound is >= target + margin */
	unsigned min_samples; /* decide on at least this many samples above a threshold */
};

enum fz_guard_action { FZ_GUARD_KEEP, FZ_GUARD_TIGHTEN, FZ_GUARD_RELAX, FZ_GUARD_OFF, FZ_GUARD_ON };

/*
 * The threshold the window supports: the smallest t >= calibrated (among the window's
 * confidences) whose samples above it number >= min_samples with a Wilson lower bound >=
 * target (+ margin when that would lower the current threshold, or switch an off point on).
 * *thr and *on are the point's current state, updated; returns what changed. With fewer than
 * min_samples samples above the current threshold nothing changes (too little to tell).
 */
enum fz_guard_action fz_guard_update(const struct fz_guard_cfg *g, const struct fz_verify *v,
				     float calibrated, float *thr, bool *on);
const char *fz_guard_action_name(enum fz_guard_action a);

#endif /* FZ_VERIFY_H */
