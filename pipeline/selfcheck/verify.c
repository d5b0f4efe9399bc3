/* Self-checking caches (fz_verify.h): sliding windows of sampled agreement, Wilson intervals,
 * the threshold guard. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fz_verify.h"

#define Z95 1.959963984540054

void fz_wilson(uint64_t k, uint64_t n, double *lo, double *hi)
{
	if (n == 0) {
		*lo = 0, *hi = 1;
		return;
	}
	const double p = (double)k / n, z2 = Z95 * Z95, den = 1 + z2 / n;
	const double c = p + z2 / (2.0 * n), r = Z95 * sqrt(p * (1 - p) / n + z2 / (4.0 * n * n));
	*lo = (c - r) / den;
	*hi = (c + r) / den;
	if (*lo < 0)
		*lo = 0;
	if (*hi > 1)
		*hi = 1;
}

struct sample {
	float conf;
	bool agree;
};

struct fz_verify {
	unsigned cap, n, head; /* ring: the oldest at head once full */
	struct sample *s;
	float *scratch; /* sorted confidences (the guard's candidates): the floor + cap samples */
};

struct fz_verify *fz_verify_create(unsigned cap)
{
	if (!cap || cap > (1u << 24)) {
		errno = EINVAL;
		return NULL;
	}
	struct fz_verify *v = calloc(1, sizeof(*v));
	if (!v)
		return NULL;
	v->cap = cap;
	v->s = calloc(cap, sizeof(*v->s));
	v->scratch = calloc((size_t)cap + 1, sizeof(float));
	if (!v->s || !v->scratch) {
		fz_verify_free(v);
		errno = ENOMEM;
		return NULL;
	}
	return v;
}

void fz_verify_free(struct fz_verify *v)
{
	if (!v)
		return;
	free(v->s);
	free(v->scratch);
	free(v);
}

void fz_verify_add(struct fz_verify *v, float conf, bool agree)
{
	if (isnan(conf))
		return;
	v->s[v->head] = (struct sample){conf, agree};
	v->head = (v->head + 1) % v->cap;
	if (v->n < v->cap)
		v->n++;
}

void fz_verify_clear(struct fz_verify *v)
{
	v->n = v->head = 0;
}

unsigned fz_verify_count(const struct fz_verify *v)
{
	return v->n;
}

static void count_above(const struct fz_verify *v, float thr, uint64_t *n, uint64_t *agree)
{
	*n = *agree = 0;
	for (unsigned i = 0; i < v->n; i++)
		if (v->s[i].conf > thr) {
			(*n)++;
			*agree += v->s[i].agree;
		}
}

void fz_verify_at(const struct fz_verify *v, float thr, uint64_t *n, uint64_t *agree, double *lo,
		  double *hi)
{
	count_above(v, thr, n, agree);
	fz_wilson(*agree, *n, lo, hi);
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

/* The smallest candidate t >= floor whose samples above pass `need` with min_samples; or NAN. */
static float smallest_passing(const struct fz_verify *v, const struct fz_guard_cfg *g,
			      float floor, double need)
{
	unsigned m = 0;
	v->scratch[m++] = floor;
	for (unsigned i = 0; i < v->n; i++)
		if (v->s[i].conf >= floor)
			v->scratch[m++] = v->s[i].conf;
	qsort(v->scratch, m, sizeof(float), cmp_float);
	for (unsigned i = 0; i < m; i++) {
		if (i && v->scratch[i] == v->scratch[i - 1])
			continue;
		uint64_t n, k;
		double lo, hi;
		fz_verify_at(v, v->scratch[i], &n, &k, &lo, &hi);
		if (n < g->min_samples)
			return NAN; /* higher thresholds have fewer samples still */
		if (lo >= need)
			return v->scratch[i];
	}
	return NAN;
}

enum fz_guard_action fz_guard_update(const struct fz_guard_cfg *g, const struct fz_verify *v,
				     float calibrated, float *thr, bool *on)
{
	uint64_t n, k;
	double lo, hi;
	if (!*on) {
		/* off: back on once a threshold passes with the margin */
		float t = smallest_passing(v, g, calibrated, g->target + g->margin);
		if (isnan(t))
			return FZ_GUARD_KEEP;
		*thr = t;
		*on = true;
		return FZ_GUARD_ON;
	}
	fz_verify_at(v, *thr, &n, &k, &lo, &hi);
	if (n < g->min_samples)
		return FZ_GUARD_KEEP;
	if (lo < g->target) {
		float t = smallest_passing(v, g, *thr, g->target);
		if (isnan(t) || t <= *thr) {
			*on = false; /* no threshold the window supports: off until it recovers */
			return FZ_GUARD_OFF;
		}
		*thr = t;
		return FZ_GUARD_TIGHTEN;
	}
	if (*thr > calibrated) {
		float t = smallest_passing(v, g, calibrated, g->target + g->margin);
		if (!isnan(t) && t < *thr) {
			*thr = t;
			return FZ_GUARD_RELAX;
		}
	}
	return FZ_GUARD_KEEP;
}

const char *fz_guard_action_name(enum fz_guard_action a)
{
	static const char *const names[] = {"keep", "tighten", "relax", "off", "on"};
	return a >= 0 && a <= FZ_GUARD_ON ? names[a] : "?";
}
