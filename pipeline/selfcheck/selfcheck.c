/* Self-checking's context (fz_selfcheck.h): per point and per tier windows, the guard's
 * decisions, the state telemetry shows. One owner thread; no locks, no atomics. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fz_selfcheck.h"

#define Z95 1.959963984540054

struct follow {
	struct fz_verify *win;
	unsigned since; /* samples since the last decision */
	struct fz_selfcheck_view v;
};

struct fz_selfcheck {
	struct fz_selfcheck_cfg cfg;
	uint64_t set;
	int n_points;
	struct follow point[FZ_SELFCHECK_MAX_POINTS];
	struct follow tier[FZ_SELFCHECK_TIERS];
};

const char *fz_selfcheck_tier_name(enum fz_selfcheck_tier t)
{
	static const char *const names[] = {
#define FZ_SC_TIER_NAME(e, s) s,
		FZ_SELFCHECK_FOREACH_TIER(FZ_SC_TIER_NAME)
#undef FZ_SC_TIER_NAME
	};
	return t >= 0 && t < FZ_SELFCHECK_TIERS ? names[t] : "?";
}

unsigned fz_selfcheck_min_samples(double target)
{
	/* n agreeing of n: lower bound n / (n + z^2) >= target */
	return (unsigned)ceil(Z95 * Z95 * target / (1 - target));
}

void fz_selfcheck_free(struct fz_selfcheck *sc)
{
	if (!sc)
		return;
	for (int i = 0; i < FZ_SELFCHECK_MAX_POINTS; i++)
		fz_verify_free(sc->point[i].win);
	for (int t = 0; t < FZ_SELFCHECK_TIERS; t++)
		fz_verify_free(sc->tier[t].win);
	free(sc);
}

struct fz_selfcheck *fz_selfcheck_create(const struct fz_selfcheck_cfg *cfg)
{
	if (!cfg || !cfg->window || cfg->window > (1u << 24) || !cfg->every ||
	    !(cfg->guard.target > 0 && cfg->guard.target < 1)) {
		errno = EINVAL;
		return NULL;
	}
	struct fz_selfcheck *sc = calloc(1, sizeof(*sc));
	if (!sc)
		return NULL;
	sc->cfg = *cfg;
	if (!sc->cfg.guard.min_samples)
		sc->cfg.guard.min_samples = fz_selfcheck_min_samples(cfg->guard.target);
	for (int i = 0; i < FZ_SELFCHECK_MAX_POINTS; i++)
		if (!(sc->point[i].win = fz_verify_create(cfg->window)))
			goto fail;
	for (int t = 0; t < FZ_SELFCHECK_TIERS; t++) {
		if (!(sc->tier[t].win = fz_verify_create(cfg->window)))
			goto fail;
		sc->tier[t].v.gate = sc->tier[t].v.calibrated = (struct fz_cache_gate){.on = true};
		sc->tier[t].v.lo = 0, sc->tier[t].v.hi = 1;
	}
	return sc;
fail:
	fz_selfcheck_free(sc);
	errno = ENOMEM;
	return NULL;
}

const struct fz_guard_cfg *fz_selfcheck_guard(const struct fz_selfcheck *sc)
{
	return &sc->cfg.guard;
}

static void restart(struct follow *f)
{
	fz_verify_clear(f->win);
	f->since = 0;
	f->v.samples = f->v.agree = 0;
	f->v.lo = 0, f->v.hi = 1;
}

void fz_selfcheck_adopt(struct fz_selfcheck *sc, uint64_t set, int n_points,
			const struct fz_cache_gate *gates)
{
	sc->set = set;
	sc->n_points = n_points < 0 ? 0
		       : n_points > FZ_SELFCHECK_MAX_POINTS ? FZ_SELFCHECK_MAX_POINTS
							: n_points;
	for (int i = 0; i < FZ_SELFCHECK_MAX_POINTS; i++) {
		struct follow *f = &sc->point[i];
		restart(f);
		f->v.gate = f->v.calibrated = i < sc->n_points ? gates[i] : (struct fz_cache_gate){0};
	}
	for (int t = 0; t < FZ_SELFCHECK_TIERS; t++) {
		restart(&sc->tier[t]);
		sc->tier[t].v.gate.on = true;
	}
}

int fz_selfcheck_points(const struct fz_selfcheck *sc)
{
	return sc->n_points;
}

/* The window's numbers at threshold thr into the view. */
static void refresh(struct follow *f, float thr)
{
	fz_verify_at(f->win, thr, &f->v.samples, &f->v.agree, &f->v.lo, &f->v.hi);
}

static int point_add(struct fz_selfcheck *sc, struct follow *f, int i,
		     const struct fz_selfcheck_sample *s, struct fz_selfcheck_decision *d)
{
	fz_verify_add(f->win, s->conf, s->agree);
	if (++f->since < sc->cfg.every)
		return 0;
	f->since = 0;
	/* a point the snapshot switched off (no payoff) stays off: the guard only keeps the
	 * agreement of points that answer */
	if (!f->v.calibrated.on) {
		refresh(f, f->v.gate.thr);
		return 0;
	}
	struct fz_cache_gate g = f->v.gate;
	const struct fz_cache_gate before = g;
	enum fz_guard_action a =
		fz_guard_update(&sc->cfg.guard, f->win, f->v.calibrated.thr, &g.thr, &g.on);
	int rc = 0;
	if (a != FZ_GUARD_KEEP) {
		*d = (struct fz_selfcheck_decision){.kind = FZ_SELFCHECK_POINT, .index = i,
						    .action = a, .before = before, .after = g};
		fz_verify_at(f->win, before.thr, &d->n, &d->agree, &d->lo, &d->hi);
		f->v.gate = g;
		f->v.changes++;
		f->v.offs += a == FZ_GUARD_OFF;
		rc = 1;
	}
	refresh(f, f->v.gate.thr);
	return rc;
}

static int tier_add(struct fz_selfcheck *sc, struct follow *f, int t,
		    const struct fz_selfcheck_sample *s, struct fz_selfcheck_decision *d)
{
	fz_verify_add(f->win, s->conf, s->agree);
	if (++f->since < sc->cfg.every)
		return 0;
	f->since = 0;
	/* a tier answers whatever its table holds, at no threshold: every sample counts */
	refresh(f, -INFINITY);
	if (!f->v.gate.on || f->v.samples < sc->cfg.guard.min_samples ||
	    f->v.lo >= sc->cfg.guard.target)
		return 0;
	*d = (struct fz_selfcheck_decision){.kind = FZ_SELFCHECK_TIER, .index = t,
					    .action = FZ_GUARD_OFF, .before = f->v.gate,
					    .after = {.thr = f->v.gate.thr, .on = false},
					    .n = f->v.samples, .agree = f->v.agree, .lo = f->v.lo,
					    .hi = f->v.hi};
	f->v.gate.on = false;
	f->v.changes++;
	f->v.offs++;
	return 1;
}

int fz_selfcheck_add(struct fz_selfcheck *sc, const struct fz_selfcheck_sample *s,
		     struct fz_selfcheck_decision *d)
{
	if (s->kind != FZ_SELFCHECK_POINT && s->kind != FZ_SELFCHECK_TIER)
		return -EINVAL;
	if (s->set != sc->set)
		return -ESTALE; /* scored against a snapshot a reload replaced */
	if (s->index >= (s->kind == FZ_SELFCHECK_POINT ? sc->n_points : FZ_SELFCHECK_TIERS))
		return -EINVAL;
	if (isnan(s->conf))
		return 0;
	struct follow *f = s->kind == FZ_SELFCHECK_POINT ? &sc->point[s->index] : &sc->tier[s->index];
	f->v.checked++;
	f->v.disagreed += !s->agree;
	return s->kind == FZ_SELFCHECK_POINT ? point_add(sc, f, s->index, s, d)
					     : tier_add(sc, f, s->index, s, d);
}

int fz_selfcheck_view(const struct fz_selfcheck *sc, enum fz_selfcheck_kind kind, int index,
		      struct fz_selfcheck_view *v)
{
	if (kind == FZ_SELFCHECK_POINT && index >= 0 && index < FZ_SELFCHECK_MAX_POINTS)
		*v = sc->point[index].v;
	else if (kind == FZ_SELFCHECK_TIER && index >= 0 && index < FZ_SELFCHECK_TIERS)
		*v = sc->tier[index].v;
	else
		return -EINVAL;
	return 0;
}

uint32_t fz_selfcheck_tiers_off(const struct fz_selfcheck *sc)
{
	uint32_t off = 0;
	for (int t = 0; t < FZ_SELFCHECK_TIERS; t++)
		off |= (uint32_t)!sc->tier[t].v.gate.on << t;
	return off;
}
