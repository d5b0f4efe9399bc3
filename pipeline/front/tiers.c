/*
 * The front tiers (fz_tiers.h). A complete request meets, in order:
 *   1. the exact table: the same (model, dtype, dims, bytes) answered before -> that answer;
 *      the same in flight -> it waits for it;
 *   2. its source's memory: the near-table entry that answered this (IPv4, UDP port) last,
 *      if the input is within the radius of it (one comparison instead of a scan);
 *   3. the near table: an answered input within the radius (root-mean-square pixel difference,
 *      cachecore/fz_front.h: found through keys that bound it, confirmed on the pixels);
 *   4. the requests in flight: one within the radius -> it waits for that one (coalescing;
 *      inside a burst as across batches in flight, the same table);
 * and otherwise runs as a leader, which the others may wait for. Once answered, the leader is
 * handed back (fz_tiers_learn): the exact table keeps its answer, the near table and its
 * source's memory keep its image when the answer is one to share (its probability at least
 * near.min_confidence, calibrated with the radius), and its followers take its answer or, when
 * it is not one to share, wait for another request alike or run themselves. A follower waits at
 * most wait_us from its own arrival, however often it waits again. The radius comes from calibration (tools/calibrate_front.py): within it,
 * held-out requests and transformed copies of them (noise, blur, shifts, and the changes of
 * level, contrast and sign the model answers differently) got the same answer from the full
 * model. Only inputs that are u8 images (u8 requests, f32 ones of integer values 0..255) take
 * part in 2-4; the others still meet 1. A tier self-checking switched off answers nothing.
 * One owner thread: no locks, no atomics.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fz_tiers.h"

const char *fz_tier_name(enum fz_tier t)
{
	static const char *const names[] = {
#define FZ_TIER_NAME(e, s) s,
		FZ_TIERS_FOREACH(FZ_TIER_NAME)
#undef FZ_TIER_NAME
	};
	return (unsigned)t < FZ_TIERS ? names[t] : "?";
}

struct pend_rec {
	struct fz_tiers_req *head, *tail; /* followers, in the order they began waiting here */
	unsigned n;
};

struct fz_tiers {
	bool on;
	struct fz_tiers_io io;
	struct fz_front_stats *st;
	struct fz_exact *exact;
	struct fz_front_keyer *keyer;
	struct fz_near *near, *pend; /* answered inputs; leaders in flight (no eviction) */
	struct fz_flows *flows;
	struct pend_rec *pr;         /* [pending] */
	struct {
		int32_t p;
		uint32_t g;
	} *exact_pend;               /* [exact capacity]: the leader a pending slot belongs to */
	float r, min_conf, exit_min_conf;
	size_t pixels;               /* bytes of an input image (c h w) */
	int n_layers;
	bool *logodds;               /* [n_layers] */
	uint64_t wait_ns;
	unsigned max_followers;
	unsigned waiting;            /* followers held, in every pending slot */
	uint32_t epoch;
	uint64_t model_fp;
};

void fz_tiers_free(struct fz_tiers *t)
{
	if (!t)
		return;
	fz_exact_free(t->exact);
	fz_front_keyer_free(t->keyer);
	fz_near_free(t->near);
	fz_near_free(t->pend);
	fz_flows_free(t->flows);
	free(t->pr);
	free(t->exact_pend);
	free(t->logodds);
	free(t);
}

bool fz_tiers_on(const struct fz_tiers *t)
{
	return t && t->on;
}

size_t fz_tiers_img_bytes(const struct fz_tiers *t)
{
	return t && t->keyer ? t->pixels : 0;
}

struct fz_tiers *fz_tiers_create(const struct fz_tiers_params *p, char *err, size_t errlen)
{
	const struct fz_appcfg *c = p->cfg;
	const size_t max_bytes = (size_t)p->c * p->h * p->w * 4; /* f32 is the larger dtype */
	struct fz_tiers *t = calloc(1, sizeof(*t));
	if (!t) {
		snprintf(err, errlen, "front: out of memory");
		return NULL;
	}
	t->io = p->io;
	t->st = p->stats;
	if (!c->front.enabled || !c->caches) /* caches off: every request runs the whole model */
		return t;
	t->model_fp = p->model_fp;
	/* online_min_confidence stays a guard on what the tiers learn too */
	t->min_conf = c->front.near_min_confidence > c->online_min_confidence
			      ? c->front.near_min_confidence
			      : c->online_min_confidence;
	t->exit_min_conf = c->front.near_exit_min_confidence;
	t->n_layers = p->n_layers > 0 ? p->n_layers : 0;
	if (!(t->logodds = calloc((size_t)t->n_layers + 1, sizeof(bool))))
		goto nomem;
	for (int l = 0; p->logodds && l < t->n_layers; l++)
		t->logodds[l] = p->logodds[l];
	t->wait_ns = (uint64_t)c->front.wait_us * 1000;
	t->max_followers = (unsigned)c->front.followers;
	t->r = c->front.near_radius;
	int dim = 1;
	if (c->front.exact_entries &&
	    !(t->exact = fz_exact_create((unsigned)c->front.exact_entries, max_bytes)))
		goto nomem;
	if (c->front.near_radius > 0) {
		int grid = c->front.near_grid ? c->front.near_grid : fz_front_grid_auto(p->c, p->h, p->w);
		if (!(t->keyer = fz_front_keyer_create(p->c, p->h, p->w, grid))) {
			snprintf(err, errlen, "front: no input key of %dx%d cells for %dx%dx%d inputs (at "
					      "most %d floats, at most one cell per pixel)",
				 grid, grid, p->c, p->h, p->w, FZ_FRONT_MAX_DIM);
			fz_tiers_free(t);
			errno = EINVAL;
			return NULL;
		}
		dim = fz_front_key_dim(t->keyer);
		t->pixels = fz_front_key_pixels(t->keyer);
		if (c->front.near_entries > 0 &&
		    !(t->near = fz_near_create((unsigned)c->front.near_entries, dim, t->pixels, true)))
			goto nomem;
		if (t->near && c->front.flow_entries &&
		    !(t->flows = fz_flows_create((unsigned)c->front.flow_entries,
						 (uint64_t)c->front.flow_timeout_ms * 1000000ull)))
			goto nomem;
	}
	if (c->front.pending && c->front.followers && (t->exact || t->keyer)) {
		if (!(t->pend = fz_near_create((unsigned)c->front.pending, dim,
					       t->pixels ? t->pixels : 1, false)) ||
		    !(t->pr = calloc((size_t)c->front.pending, sizeof(*t->pr))))
			goto nomem;
		if (t->exact && !(t->exact_pend = calloc(fz_exact_capacity(t->exact),
							 sizeof(*t->exact_pend))))
			goto nomem;
	}
	t->on = t->exact || t->keyer;
	return t;
nomem:
	snprintf(err, errlen, "front: cannot allocate the tables (exact %d x %zu bytes, near %d)",
		 c->front.exact_entries, max_bytes, c->front.near_entries);
	fz_tiers_free(t);
	errno = ENOMEM;
	return NULL;
}

/* The tables' own counters, copied where the owner's readers find them. */
static void sync_stats(struct fz_tiers *t)
{
	struct fz_front_stats *st = t->st;
	if (t->exact) {
		st->exact_inserts = fz_exact_stats(t->exact)->inserts;
		st->exact_evictions = fz_exact_stats(t->exact)->evictions;
	}
	if (t->near) {
		st->near_inserts = fz_near_stats(t->near)->inserts;
		st->near_evictions = fz_near_stats(t->near)->evictions;
		st->near_candidates = fz_near_stats(t->near)->candidates;
		st->near_refuted = fz_near_stats(t->near)->refuted;
	}
	if (t->flows) {
		st->flow_expired = fz_flows_stats(t->flows)->expired;
		st->flow_replaced = fz_flows_stats(t->flows)->replaced;
	}
}

void fz_tiers_clear(struct fz_tiers *t)
{
	if (!t->on)
		return;
	t->epoch++;
	if (t->exact)
		fz_exact_clear(t->exact);
	if (t->near)
		fz_near_clear(t->near);
	if (t->flows)
		fz_flows_clear(t->flows);
	t->st->clears++;
}

static bool tier_off(const struct fz_tiers *t, enum fz_tier tier)
{
	if (!t->io.tier_off || !t->io.tier_off(t->io.arg, tier))
		return false;
	t->st->tier_off_skips++;
	return true;
}

static void set_answer(struct fz_tiers_req *r, const struct fz_front_answer *a, enum fz_tier tier)
{
	r->label = a->label;
	r->confidence = a->confidence;
	r->tier = (uint8_t)tier;
	r->flags = 0;
}

/* Wait for the leader in pending slot p (of generation g, UINT32_MAX: as found just now). */
static bool follow(struct fz_tiers *t, struct fz_tiers_req *r, int p, uint32_t g, bool exact)
{
	if (p < 0 || fz_near_get(t->pend, p, g, NULL, NULL) < 0 || tier_off(t, FZ_TIER_COALESCED))
		return false;
	struct pend_rec *pr = &t->pr[p];
	if (pr->n >= t->max_followers) {
		t->st->followers_full++;
		return false;
	}
	r->flags = exact ? FZ_TIERS_F_FOLLOW_EXACT : 0;
	r->next = NULL;
	if (pr->tail)
		pr->tail->next = r;
	else
		pr->head = r;
	pr->tail = r;
	pr->n++;
	t->waiting++;
	t->st->followers++;
	t->st->exact_followers += exact;
	return true;
}

/* Register r as a leader others may wait for (pending slot), and, with its bytes, as the
 * exact table's pending slot for them. */
static void lead(struct fz_tiers *t, struct fz_tiers_req *r, uint64_t h, const void *bytes,
		 size_t len)
{
	uint32_t gen;
	int p = -1, slot;
	if (t->pend) {
		/* without an image it is found only as an exact repeat (exact_pend) */
		if ((p = fz_near_put(t->pend, r->key, r->img_ok ? r->img : NULL, NULL, &gen)) >= 0) {
			t->pr[p] = (struct pend_rec){0};
			r->pend_slot = p;
			r->pend_gen = gen;
		} else {
			t->st->pending_full++;
		}
	}
	if (t->exact && bytes && (slot = fz_exact_claim(t->exact, h, bytes, len, &gen)) >= 0) {
		r->exact_slot = slot;
		r->exact_gen = gen;
		if (t->exact_pend) {
			t->exact_pend[slot].p = p;
			t->exact_pend[slot].g = r->pend_gen;
		}
	}
	r->flags = FZ_TIERS_F_LEADER;
	t->st->leaders++;
}

enum fz_tiers_verdict fz_tiers_submit(struct fz_tiers *t, struct fz_tiers_req *r,
				      const struct fz_tiers_input *in, uint64_t now_ns)
{
	struct fz_front_stats *st = t->st;
	struct fz_front_answer a;
	int slot;
	uint32_t gen;
	st->requests++;
	r->flags = 0;
	r->exact_slot = r->pend_slot = -1;
	r->epoch = t->epoch;
	r->next = NULL;
	r->img_ok = 0;
	uint64_t h = 0;
	bool exact_pending = false; /* a repeat in flight: no second slot for the same bytes */
	if (t->exact && !tier_off(t, FZ_TIER_EXACT)) {
		h = fz_exact_hash(t->model_fp, in->dtype, in->c, in->h, in->w, in->bytes, in->len);
		switch (fz_exact_find(t->exact, h, in->bytes, in->len, &slot, &a)) {
		case FZ_EXACT_READY:
			set_answer(r, &a, FZ_TIER_EXACT);
			st->exact_hits++;
			return FZ_TIERS_ANSWERED;
		case FZ_EXACT_PENDING:
			exact_pending = true;
			if (t->exact_pend &&
			    follow(t, r, t->exact_pend[slot].p, t->exact_pend[slot].g, true))
				return FZ_TIERS_WAITING;
			break;
		case FZ_EXACT_MISS:
			break;
		}
	} else if (t->exact) {
		exact_pending = true; /* the exact tier is off: claim nothing */
	}
	if (t->keyer) {
		/* the input as a u8 image: the bytes of a u8 request, an f32 one's values when they
		 * are integers 0..255 (else it has none and meets the exact tier only) */
		if (in->host_u8)
			memcpy(r->img, in->host, t->pixels), r->img_ok = 1;
		else
			r->img_ok = fz_front_image_f32(in->host, t->pixels, r->img) == 0;
		if (r->img_ok)
			fz_front_key_u8(t->keyer, r->img, r->key);
		else
			st->near_no_image++;
	}
	if (r->img_ok) {
		if (t->flows && !tier_off(t, FZ_TIER_FLOW)) {
			st->flow_lookups++;
			if (fz_flows_get(t->flows, r->src_ip, r->src_port, now_ns, &slot, &gen) == 0 &&
			    fz_near_within(t->near, slot, gen, r->img, t->r) &&
			    fz_near_get(t->near, slot, gen, NULL, &a) == 0) {
				set_answer(r, &a, FZ_TIER_FLOW);
				st->flow_hits++;
				return FZ_TIERS_ANSWERED;
			}
		}
		if (t->near && !tier_off(t, FZ_TIER_NEAR)) {
			st->near_lookups++;
			if ((slot = fz_near_find(t->near, r->key, r->img, t->r, NULL, true)) >= 0) {
				fz_near_get(t->near, slot, UINT32_MAX, NULL, &a);
				set_answer(r, &a, FZ_TIER_NEAR);
				if (t->flows)
					fz_flows_set(t->flows, r->src_ip, r->src_port, now_ns, slot,
						     fz_near_gen(t->near, slot));
				st->near_hits++;
				return FZ_TIERS_ANSWERED;
			}
		}
		if (t->pend && follow(t, r, fz_near_find(t->pend, r->key, r->img, t->r, NULL, false),
				      UINT32_MAX, false))
			return FZ_TIERS_WAITING;
	}
	/* it runs: a leader the alike may wait for, and whose answer the tables learn */
	st->ran++;
	lead(t, r, h, exact_pending ? NULL : in->bytes, in->len);
	sync_stats(t);
	return FZ_TIERS_RUN;
}

/*
 * Hand pending slot p's followers on: the leader's answer (*a) to those it may answer. The
 * others wait again: the first becomes a leader itself and those near it wait for it (a scene
 * whose first frame the full model was unsure of may be sure of the next), unless they have
 * waited wait_us already or `why` is the expiry counter: then they run. `why`: the counter
 * of those that run.
 */
static void release_followers(struct fz_tiers *t, int p, uint32_t gen,
			      const struct fz_front_answer *a, bool exact_ok, bool near_ok,
			      uint64_t *why, uint64_t now_ns)
{
	struct fz_front_stats *st = t->st;
	struct fz_tiers_req *f = t->pr[p].head;
	const bool expired = why == &st->followers_expired;
	/* the slot goes first: those that wait again must not wait for it */
	t->waiting -= t->pr[p].n;
	t->pr[p] = (struct pend_rec){0};
	fz_near_remove(t->pend, p, gen);
	while (f) {
		struct fz_tiers_req *next = f->next;
		f->next = NULL;
		const bool exact = f->flags & FZ_TIERS_F_FOLLOW_EXACT;
		f->flags = 0;
		f->exact_slot = f->pend_slot = -1;
		f->epoch = t->epoch;
		if (a && (exact ? exact_ok : near_ok)) {
			set_answer(f, a, FZ_TIER_COALESCED);
			st->followers_answered++;
			t->io.answer(t->io.arg, f);
		} else if (!expired && f->img_ok && now_ns < f->t_ns + t->wait_ns &&
			   !exact /* an exact repeat of an unsure answer would get the same */) {
			if (follow(t, f, fz_near_find(t->pend, f->key, f->img, t->r, NULL, false),
				   UINT32_MAX, false)) {
				st->followers--; /* not a new follower: one waiting again */
				st->followers_rewaited++;
			} else {
				st->followers_relead++;
				lead(t, f, 0, NULL, 0);
				t->io.run(t->io.arg, f);
			}
		} else {
			(*why)++;
			t->io.run(t->io.arg, f);
		}
		f = next;
	}
}

/* The leader's pending slot: followers handed on, slot freed. */
static void close_pending(struct fz_tiers *t, struct fz_tiers_req *r,
			  const struct fz_front_answer *a, bool exact_ok, bool near_ok,
			  uint64_t now_ns)
{
	if (r->pend_slot < 0 || fz_near_get(t->pend, r->pend_slot, r->pend_gen, NULL, NULL) < 0)
		return; /* none, or expired (its followers ran) */
	release_followers(t, r->pend_slot, r->pend_gen, a, exact_ok, near_ok,
			  &t->st->followers_ran, now_ns);
	r->pend_slot = -1;
}

void fz_tiers_learn(struct fz_tiers *t, struct fz_tiers_req *r, const struct fz_tiers_result *res,
		    uint64_t now_ns)
{
	struct fz_front_stats *st = t->st;
	st->learned++;
	const bool ok = res->ok;
	/* shared only when sure: a full-model answer of probability >= min_confidence, an early
	 * exit whose log-odds (learned caches) give a probability >= exit_min_confidence; other
	 * caches' confidences are not probabilities, their early exits are not shared */
	bool share = false;
	const int layer = fz_answer_exit_layer(res->src);
	if (ok && fz_answer_is(res->src, FZ_ANSWERED_FULL))
		share = res->confidence >= t->min_conf;
	else if (ok && layer >= 0 && layer < t->n_layers && t->logodds[layer] &&
		 t->exit_min_conf < 1)
		share = 1.0 / (1.0 + exp(-(double)res->confidence)) >= t->exit_min_conf;
	const struct fz_front_answer a = {.label = res->label, .confidence = res->confidence};
	if (r->epoch == t->epoch) {
		if (t->exact && r->exact_slot >= 0) {
			if (ok)
				fz_exact_fill(t->exact, r->exact_slot, r->exact_gen, &a);
			else
				fz_exact_drop(t->exact, r->exact_slot, r->exact_gen);
		}
		if (t->near && share && r->img_ok) {
			uint32_t gen;
			int s = fz_near_put(t->near, r->key, r->img, &a, &gen);
			if (s >= 0 && t->flows)
				fz_flows_set(t->flows, r->src_ip, r->src_port, now_ns, s, gen);
		}
	} else {
		st->stale++; /* answered by what a reload replaced: nothing learned */
	}
	close_pending(t, r, ok ? &a : NULL, ok, share, now_ns);
	sync_stats(t);
	r->flags = 0;
	t->io.release(t->io.arg, r);
}

void fz_tiers_abandon(struct fz_tiers *t, struct fz_tiers_req *r, uint64_t now_ns)
{
	if (!(r->flags & FZ_TIERS_F_LEADER))
		return;
	if (t->exact && r->exact_slot >= 0 && r->epoch == t->epoch)
		fz_exact_drop(t->exact, r->exact_slot, r->exact_gen);
	close_pending(t, r, NULL, false, false, now_ns);
	r->flags = 0;
}

unsigned fz_tiers_waiting(const struct fz_tiers *t)
{
	return t ? t->waiting : 0;
}

void fz_tiers_expire(struct fz_tiers *t, uint64_t now_ns)
{
	if (!t->pend || !t->waiting)
		return;
	for (unsigned p = 0; p < fz_near_capacity(t->pend); p++) {
		struct pend_rec *pr = &t->pr[p];
		struct fz_tiers_req **pp = &pr->head, *prev = NULL;
		while (*pp) {
			struct fz_tiers_req *f = *pp;
			if (now_ns < f->t_ns + t->wait_ns) { /* waited less than wait_us */
				prev = f;
				pp = &f->next;
				continue;
			}
			/* out of the list, then it runs (and no longer waits for this leader) */
			*pp = f->next;
			if (pr->tail == f)
				pr->tail = prev;
			pr->n--;
			t->waiting--;
			f->next = NULL;
			f->flags = 0;
			f->exact_slot = f->pend_slot = -1;
			f->epoch = t->epoch;
			t->st->followers_expired++;
			t->io.run(t->io.arg, f);
		}
	}
}
