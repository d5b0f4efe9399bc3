/*
 * The front tiers on the RX lcore. A complete request meets, in order:
 *   1. the exact table: the same (model, dtype, dims, bytes) answered before -> that answer;
 *      the same in flight -> it waits for it;
 *   2. its source's memory: the near-table entry that answered this (IPv4, UDP port) last,
 *      if the input is within the radius of it (one comparison instead of a scan);
 *   3. the near table: an answered input within the radius (root-mean-square pixel difference,
 *      cachecore/fz_front.h: found through keys that bound it, confirmed on the pixels);
 *   4. the requests in flight: one within the radius -> it waits for that one (coalescing;
 *      inside a burst as across batches in flight, the same table);
 * and otherwise runs as a leader, which the others may wait for. Once answered, TX hands the
 * leader back (learn ring): the exact table keeps its answer, the near table and its source's
 * memory keep its key when the answer is one to share (its probability at least
 * near.min_confidence, calibrated with the radius), and its followers take its answer or, when
 * it is not one to share, wait for another request alike or run themselves. A follower waits at most wait_us. The radius comes from
 * calibration (tools/calibrate_front.py): within it, held-out requests and transformed copies
 * of them (noise, blur, shifts, and the changes of level, contrast and sign the model answers
 * differently) got the same answer from the full model. Only inputs that are u8 images (u8
 * requests, f32 ones of integer values 0..255) take part in 2-4; the others still meet 1.
 * Everything here is RX's alone: no locks, no atomics but the reload epoch.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "app_pvt.h"
#include "front.h"
#include "fz_cache.h"

struct pend_rec {
	struct fz_req *head, *tail; /* followers, in arrival order */
	unsigned n;
	uint64_t t0_ns; /* the leader entered the pipeline */
};

static struct {
	bool on, near_on;
	struct fz_front_io io;
	struct fz_exact *exact;
	struct fz_front_keyer *keyer;
	struct fz_near *near, *pend; /* answered keys; leaders in flight (no eviction) */
	struct fz_flows *flows;
	struct pend_rec *pr;          /* [pending] */
	struct {
		int32_t p;
		uint32_t g;
	} *exact_pend;                /* [exact capacity]: the leader a pending slot belongs to */
	float r, min_conf, exit_min_conf;
	size_t pixels; /* bytes of an input image (c h w) */
	bool logodds[64]; /* layers whose early exits carry log(p / (1 - p)) (learned caches) */
	uint64_t wait_ns;
	unsigned max_followers;
	uint32_t epoch;
	uint64_t model_fp;
} F;

bool fz_front_on(void)
{
	return F.on;
}

void fz_front_fini(void)
{
	fz_exact_free(F.exact);
	fz_front_keyer_free(F.keyer);
	fz_near_free(F.near);
	fz_near_free(F.pend);
	fz_flows_free(F.flows);
	free(F.pr);
	free(F.exact_pend);
	memset(&F, 0, sizeof(F));
}

int fz_front_init(const struct fz_front_io *io)
{
	const struct fz_appcfg *c = &fz_app.cfg;
	const struct fz_model_input *in = &fz_app.model->input;
	memset(&F, 0, sizeof(F));
	if (!c->front.enabled || !c->caches) /* caches off: every request runs the whole model */
		return 0;
	F.io = *io;
	F.model_fp = fz_net_fingerprint(fz_app.net);
	/* online_min_confidence stays a guard on what the tiers learn too */
	F.min_conf = c->front.near_min_confidence > c->online_min_confidence
			     ? c->front.near_min_confidence
			     : c->online_min_confidence;
	F.exit_min_conf = c->front.near_exit_min_confidence;
	for (int i = 0; fz_app.caches && i < fz_app.caches->n_caches; i++) {
		const struct fz_cache_params *cp = fz_cache_params(fz_app.caches->caches[i]);
		int l = fz_model_find_layer(fz_app.model, cp->layer);
		if (l >= 0 && l < 64)
			F.logodds[l] = cp->kind == FZ_CACHE_LEARNED;
	}
	F.wait_ns = (uint64_t)c->front.wait_us * 1000;
	F.max_followers = (unsigned)c->front.followers;
	F.r = c->front.near_radius;
	F.epoch = atomic_load(&fz_app.front_epoch);
	const size_t max_bytes = fz_shape_size(in->shape) * 4; /* f32 is the larger dtype */
	int dim = 1;
	if (c->front.exact_entries &&
	    !(F.exact = fz_exact_create((unsigned)c->front.exact_entries, max_bytes)))
		goto fail;
	if (c->front.near_radius > 0) {
		int grid = c->front.near_grid ? c->front.near_grid
					      : fz_front_grid_auto(in->shape.c, in->shape.h, in->shape.w);
		if (!(F.keyer = fz_front_keyer_create(in->shape.c, in->shape.h, in->shape.w, grid))) {
			FZ_LOG(ERR, "front: no input key of %dx%d cells for %dx%dx%d inputs (at "
				    "most %d floats, at most one cell per pixel)",
			       grid, grid, in->shape.c, in->shape.h, in->shape.w, FZ_FRONT_MAX_DIM);
			fz_front_fini();
			return -EINVAL;
		}
		dim = fz_front_key_dim(F.keyer);
		F.pixels = fz_front_key_pixels(F.keyer);
		F.near_on = c->front.near_entries > 0;
		if (F.near_on && !(F.near = fz_near_create((unsigned)c->front.near_entries, dim,
							    F.pixels, true)))
			goto fail;
		if (F.near_on && c->front.flow_entries &&
		    !(F.flows = fz_flows_create((unsigned)c->front.flow_entries,
						(uint64_t)c->front.flow_timeout_ms * 1000000ull)))
			goto fail;
	}
	if (c->front.pending && c->front.followers && (F.exact || F.keyer)) {
		if (!(F.pend = fz_near_create((unsigned)c->front.pending, dim,
					      F.pixels ? F.pixels : 1, false)) ||
		    !(F.pr = calloc((size_t)c->front.pending, sizeof(*F.pr))))
			goto fail;
		if (F.exact && !(F.exact_pend = calloc(fz_exact_capacity(F.exact),
							sizeof(*F.exact_pend))))
			goto fail;
	}
	F.on = F.exact || F.keyer;
	FZ_LOG(INFO, "front: exact %u entries (%zu KiB), near %u inputs (keys of %d floats) within "
		     "rms %.4f, "
		     "flows %u, coalescing %d in flight x %d followers for <= %d us",
	       F.exact ? fz_exact_capacity(F.exact) : 0,
	       F.exact ? fz_exact_bytes(F.exact) / 1024 : 0, F.near ? fz_near_capacity(F.near) : 0,
	       F.keyer ? dim : 0, (double)c->front.near_radius,
	       F.flows ? fz_flows_capacity(F.flows) : 0, F.pend ? c->front.pending : 0,
	       F.pend ? c->front.followers : 0, c->front.wait_us);
	return 0;
fail:
	FZ_LOG(ERR, "front: cannot allocate the tables (exact %d x %zu bytes, near %d)",
	       c->front.exact_entries, max_bytes, c->front.near_entries);
	fz_front_fini();
	return -ENOMEM;
}

/* The tables' own counters, copied where telemetry reads them. */
static void sync_stats(void)
{
	struct fz_front_stats *st = &fz_app.rx.front;
	if (F.exact) {
		st->exact_inserts = fz_exact_stats(F.exact)->inserts;
		st->exact_evictions = fz_exact_stats(F.exact)->evictions;
	}
	if (F.near) {
		st->near_inserts = fz_near_stats(F.near)->inserts;
		st->near_evictions = fz_near_stats(F.near)->evictions;
		st->near_candidates = fz_near_stats(F.near)->candidates;
		st->near_refuted = fz_near_stats(F.near)->refuted;
	}
	if (F.flows) {
		st->flow_expired = fz_flows_stats(F.flows)->expired;
		st->flow_replaced = fz_flows_stats(F.flows)->replaced;
	}
}

/* A reload replaced the model's caches or the model: what the tables hold may be wrong now. */
static void check_epoch(void)
{
	uint32_t e = atomic_load_explicit(&fz_app.front_epoch, memory_order_acquire);
	if (e == F.epoch)
		return;
	F.epoch = e;
	if (F.exact)
		fz_exact_clear(F.exact);
	if (F.near)
		fz_near_clear(F.near);
	if (F.flows)
		fz_flows_clear(F.flows);
	fz_app.rx.front.clears++;
	FZ_LOG(INFO, "front: reload: exact, near and flow tables cleared");
}

static void set_answer(struct fz_req *rq, const struct fz_front_answer *a, uint16_t code)
{
	rq->label = a->label;
	rq->confidence = a->confidence;
	rq->exit_layer = code;
	rq->status = 0;
	rq->front = 0;
}

/* Wait for the leader in pending slot p (of generation g, UINT32_MAX: as found just now). */
static bool follow(struct fz_req *rq, int p, uint32_t g, bool exact)
{
	struct fz_front_stats *st = &fz_app.rx.front;
	if (p < 0 || fz_near_get(F.pend, p, g, NULL, NULL) < 0)
		return false;
	struct pend_rec *pr = &F.pr[p];
	if (pr->n >= F.max_followers) {
		st->followers_full++;
		return false;
	}
	rq->front = exact ? FZ_FRONT_F_FOLLOW_EXACT : 0;
	rq->next = NULL;
	if (pr->tail)
		pr->tail->next = rq;
	else
		pr->head = rq;
	pr->tail = rq;
	pr->n++;
	st->followers++;
	st->exact_followers += exact;
	return true;
}

/* Register rq as a leader others may wait for (pending slot), and, with its raw bytes, as
 * the exact table's pending slot for them. */
static void lead(struct fz_req *rq, const struct fz_reasm_req *r, uint64_t h, bool claim_exact,
		 uint64_t now_ns)
{
	uint32_t gen;
	int p = -1, slot;
	if (F.pend) {
		/* without an image it is found only as an exact repeat (exact_pend) */
		if ((p = fz_near_put(F.pend, rq->fkey, rq->fimg_ok ? rq->fimg : NULL, NULL, &gen)) >=
		    0) {
			F.pr[p] = (struct pend_rec){.t0_ns = now_ns};
			rq->pend_slot = p;
			rq->pend_gen = gen;
		} else {
			fz_app.rx.front.pending_full++;
		}
	}
	if (F.exact && claim_exact &&
	    (slot = fz_exact_claim(F.exact, h, r->data, r->len, &gen)) >= 0) {
		rq->exact_slot = slot;
		rq->exact_gen = gen;
		if (F.exact_pend) {
			F.exact_pend[slot].p = p;
			F.exact_pend[slot].g = rq->pend_gen;
		}
	}
	rq->front = FZ_FRONT_F_LEADER;
	fz_app.rx.front.leaders++;
}

static uint64_t waited_ns(const struct fz_req *rq, uint64_t now_ns)
{
	uint64_t t = (uint64_t)((double)rq->t_rx * 1e9 / (double)fz_app.tsc_hz);
	return now_ns > t ? now_ns - t : 0;
}

enum fz_front_verdict fz_front_submit(struct fz_req *rq, const struct fz_reasm_req *r,
				      const void *host, uint64_t now_ns)
{
	struct fz_front_stats *st = &fz_app.rx.front;
	struct fz_front_answer a;
	int slot;
	uint32_t gen;
	check_epoch();
	st->requests++;
	rq->front = 0;
	rq->exact_slot = rq->pend_slot = -1;
	rq->epoch = F.epoch;
	rq->next = NULL;
	rq->dtype = r->dtype;
	uint64_t h = 0;
	bool exact_pending = false; /* a repeat in flight: no second slot for the same bytes */
	if (F.exact) {
		h = fz_exact_hash(F.model_fp, r->dtype, r->c, r->h, r->w, r->data, r->len);
		switch (fz_exact_find(F.exact, h, r->data, r->len, &slot, &a)) {
		case FZ_EXACT_READY:
			set_answer(rq, &a, FZ_PROTO_EXIT_EXACT);
			st->exact_hits++;
			return FZ_FRONT_ANSWERED;
		case FZ_EXACT_PENDING:
			exact_pending = true;
			if (F.exact_pend && follow(rq, F.exact_pend[slot].p, F.exact_pend[slot].g, true))
				return FZ_FRONT_WAITING;
			break;
		case FZ_EXACT_MISS:
			break;
		}
	}
	rq->fimg_ok = 0;
	if (F.keyer) {
		/* the input as a u8 image: the bytes of a u8 request, an f32 one's values when they
		 * are integers 0..255 (else it has none and meets the exact tier only) */
		if (r->dtype == FZ_PROTO_DT_U8)
			memcpy(rq->fimg, host, F.pixels), rq->fimg_ok = 1;
		else
			rq->fimg_ok = fz_front_image_f32(host, F.pixels, rq->fimg) == 0;
		if (rq->fimg_ok)
			fz_front_key_u8(F.keyer, rq->fimg, rq->fkey);
		else
			st->near_no_image++;
	}
	if (rq->fimg_ok) {
		if (F.flows) {
			st->flow_lookups++;
			if (fz_flows_get(F.flows, r->reply.ip, r->reply.port, now_ns, &slot, &gen) == 0 &&
			    fz_near_within(F.near, slot, gen, rq->fimg, F.r) &&
			    fz_near_get(F.near, slot, gen, NULL, &a) == 0) {
				set_answer(rq, &a, FZ_PROTO_EXIT_FLOW);
				st->flow_hits++;
				return FZ_FRONT_ANSWERED;
			}
		}
		if (F.near) {
			st->near_lookups++;
			if ((slot = fz_near_find(F.near, rq->fkey, rq->fimg, F.r, NULL, true)) >= 0) {
				fz_near_get(F.near, slot, UINT32_MAX, NULL, &a);
				set_answer(rq, &a, FZ_PROTO_EXIT_NEAR);
				if (F.flows)
					fz_flows_set(F.flows, r->reply.ip, r->reply.port, now_ns, slot,
						     fz_near_gen(F.near, slot));
				st->near_hits++;
				return FZ_FRONT_ANSWERED;
			}
		}
		if (F.pend && follow(rq, fz_near_find(F.pend, rq->fkey, rq->fimg, F.r, NULL, false),
				     UINT32_MAX, false))
			return FZ_FRONT_WAITING;
	}
	/* it runs: a leader the alike may wait for, and whose answer the tables learn */
	st->ran++;
	lead(rq, r, h, !exact_pending, now_ns);
	sync_stats();
	return FZ_FRONT_RUN;
}

/*
 * Hand pending slot p's followers on: the leader's answer (*a) to those it may answer. The
 * others wait again: the first becomes a leader itself and those near it wait for it (a scene
 * whose first frame the full model was unsure of may be sure of the next), unless they have
 * waited wait_us already or `why` is the expiry counter: then they run. `why`: the counter
 * of those that run.
 */
static void release_followers(int p, uint32_t gen, const struct fz_front_answer *a,
			      bool exact_ok, bool near_ok, uint64_t *why, uint64_t now_ns)
{
	struct fz_front_stats *st = &fz_app.rx.front;
	struct fz_req *f = F.pr[p].head;
	const bool expired = why == &st->followers_expired;
	/* the slot goes first: those that wait again must not wait for it */
	F.pr[p] = (struct pend_rec){0};
	fz_near_remove(F.pend, p, gen);
	while (f) {
		struct fz_req *next = f->next;
		f->next = NULL;
		bool exact = f->front & FZ_FRONT_F_FOLLOW_EXACT;
		f->front = 0;
		f->exact_slot = f->pend_slot = -1;
		f->epoch = F.epoch;
		if (a && (exact ? exact_ok : near_ok)) {
			set_answer(f, a, FZ_PROTO_EXIT_COALESCED);
			st->followers_answered++;
			F.io.answer(f);
		} else if (!expired && f->fimg_ok && waited_ns(f, now_ns) < F.wait_ns &&
			   !exact /* an exact repeat of an unsure answer would get the same */) {
			if (follow(f, fz_near_find(F.pend, f->fkey, f->fimg, F.r, NULL, false),
				   UINT32_MAX, false)) {
				st->followers--; /* not a new follower: one waiting again */
				st->followers_rewaited++;
			} else {
				st->followers_relead++;
				lead(f, NULL, 0, false, now_ns);
				F.io.run(f);
			}
		} else {
			(*why)++;
			F.io.run(f);
		}
		f = next;
	}
}

/* The leader's pending slot: followers handed on, slot freed. */
static void close_pending(struct fz_req *rq, const struct fz_front_answer *a, bool exact_ok,
			  bool near_ok, uint64_t now_ns)
{
	if (rq->pend_slot < 0 || fz_near_get(F.pend, rq->pend_slot, rq->pend_gen, NULL, NULL) < 0)
		return; /* none, or expired (its followers ran) */
	release_followers(rq->pend_slot, rq->pend_gen, a, exact_ok, near_ok,
			  &fz_app.rx.front.followers_ran, now_ns);
	rq->pend_slot = -1;
}

void fz_front_learn(struct fz_req *rq, uint64_t now_ns)
{
	struct fz_front_stats *st = &fz_app.rx.front;
	check_epoch();
	st->learned++;
	const bool ok = rq->status == 0;
	/* shared only when sure: a full-model answer of probability >= min_confidence, an early
	 * exit whose log-odds (learned caches) give a probability >= exit_min_confidence; other
	 * caches' confidences are not probabilities, their early exits are not shared */
	bool share = false;
	if (ok && rq->exit_layer == FZ_EXIT_FULL_MODEL)
		share = rq->confidence >= F.min_conf;
	else if (ok && rq->exit_layer < 64 && F.logodds[rq->exit_layer] && F.exit_min_conf < 1)
		share = 1.0 / (1.0 + exp(-(double)rq->confidence)) >= F.exit_min_conf;
	const struct fz_front_answer a = {.label = rq->label, .exit_layer = rq->exit_layer,
					  .confidence = rq->confidence};
	if (rq->epoch == F.epoch) {
		if (F.exact && rq->exact_slot >= 0) {
			if (ok)
				fz_exact_fill(F.exact, rq->exact_slot, rq->exact_gen, &a);
			else
				fz_exact_drop(F.exact, rq->exact_slot, rq->exact_gen);
		}
		if (F.near && share && rq->fimg_ok) {
			uint32_t gen;
			int s = fz_near_put(F.near, rq->fkey, rq->fimg, &a, &gen);
			if (s >= 0 && F.flows) {
				struct fz_proto_addr to;
				memcpy(&to, rq->reply, sizeof(to));
				fz_flows_set(F.flows, to.ip, to.port, now_ns, s, gen);
			}
		}
	} else {
		st->stale++; /* answered by what a reload replaced: nothing learned */
	}
	close_pending(rq, ok ? &a : NULL, ok, share, now_ns);
	sync_stats();
	rq->front = 0;
	F.io.release(rq);
}

void fz_front_abandon(struct fz_req *rq)
{
	if (!(rq->front & FZ_FRONT_F_LEADER))
		return;
	if (F.exact && rq->exact_slot >= 0 && rq->epoch == F.epoch)
		fz_exact_drop(F.exact, rq->exact_slot, rq->exact_gen);
	close_pending(rq, NULL, false, false, 0);
	rq->front = 0;
}

void fz_front_expire(uint64_t now_ns)
{
	if (!F.pend || !fz_near_count(F.pend))
		return;
	for (unsigned p = 0; p < fz_near_capacity(F.pend); p++) {
		if (!F.pr[p].n || now_ns - F.pr[p].t0_ns <= F.wait_ns ||
		    fz_near_get(F.pend, (int)p, UINT32_MAX, NULL, NULL) < 0)
			continue;
		/* the leader is slow: its followers run, and no one else waits for it */
		release_followers((int)p, UINT32_MAX, NULL, false, false,
				  &fz_app.rx.front.followers_expired, now_ns);
	}
}
