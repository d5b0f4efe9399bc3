/*
 * The front tiers on the RX lcore: the glue between the appliance and pipeline/front (the
 * tiers themselves, DPDK-free). It builds the tiers from the config and the loaded model, maps
 * a request to what the tiers keep of it and their answers to the appliance's, asks
 * self-checking whether a tier is switched off, and clears the tables when a reload bumps
 * fz_app.front_epoch. Everything here is RX's alone: no locks, no atomics but the reload
 * epoch and the guard's tier word.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "app_pvt.h"
#include "front.h"
#include "fz_cache.h"
#include "verify.h"

/* the guard's tier bits and the answer kinds of the front tiers are the tiers' own order */
#define FZ_SAME_TIER(e, s)                                                                         \
	_Static_assert((int)FZ_TIER_##e == (int)FZ_SELFCHECK_TIER_##e, #e);                       \
	_Static_assert((int)FZ_ANSWERED_FRONT_FIRST + FZ_TIER_##e == (int)FZ_ANSWERED_##e, #e);
FZ_TIERS_FOREACH(FZ_SAME_TIER)
#undef FZ_SAME_TIER
_Static_assert(FZ_ANSWERED_FRONT_FIRST + FZ_TIERS == FZ_ANSWERED__COUNT, "a kind per tier");

static struct {
	struct fz_tiers *t;
	struct fz_front_io io;
	uint32_t epoch;
} F;

static struct fz_req *req_of(struct fz_tiers_req *r)
{
	return r->owner;
}

struct fz_answer_src fz_front_answer_src(enum fz_tier t)
{
	return fz_answer_of((enum fz_answered)(FZ_ANSWERED_FRONT_FIRST + (int)t));
}

/* A request the tiers answered: the answer as TX sends it. */
static void take_answer(struct fz_req *rq)
{
	rq->label = rq->fr.label;
	rq->confidence = rq->fr.confidence;
	rq->answer = fz_front_answer_src((enum fz_tier)rq->fr.tier);
	rq->status = 0;
}

static void io_answer(void *arg, struct fz_tiers_req *r)
{
	(void)arg;
	take_answer(req_of(r));
	F.io.answer(req_of(r));
}

static void io_run(void *arg, struct fz_tiers_req *r)
{
	(void)arg;
	F.io.run(req_of(r));
}

static void io_release(void *arg, struct fz_tiers_req *r)
{
	(void)arg;
	F.io.release(req_of(r));
}

static bool io_tier_off(void *arg, enum fz_tier t)
{
	(void)arg;
	return fz_verify_tier_off((enum fz_selfcheck_tier)t);
}

bool fz_front_on(void)
{
	return fz_tiers_on(F.t);
}

void fz_front_fini(void)
{
	fz_tiers_free(F.t);
	memset(&F, 0, sizeof(F));
}

int fz_front_init(const struct fz_front_io *io)
{
	const struct fz_appcfg *c = &fz_app.cfg;
	const struct fz_model_input *in = &fz_app.model->input;
	memset(&F, 0, sizeof(F));
	F.io = *io;
	const int nl = fz_app.model->n_layers;
	bool *logodds = calloc((size_t)nl + 1, sizeof(bool));
	if (!logodds)
		return -ENOMEM;
	for (int i = 0; fz_app.caches && i < fz_app.caches->n_caches; i++) {
		const struct fz_cache_params *cp = fz_cache_params(fz_app.caches->caches[i]);
		int l = fz_model_find_layer(fz_app.model, cp->layer);
		if (l >= 0 && l < nl)
			logodds[l] = cp->kind == FZ_CACHE_LEARNED;
	}
	const struct fz_tiers_params p = {
		.cfg = c, .c = in->shape.c, .h = in->shape.h, .w = in->shape.w,
		.model_fp = fz_net_fingerprint(fz_app.net), .n_layers = nl, .logodds = logodds,
		.stats = &fz_app.rx.front,
		.io = {.answer = io_answer, .run = io_run, .release = io_release,
		       .tier_off = io_tier_off}};
	char err[256];
	F.t = fz_tiers_create(&p, err, sizeof(err));
	free(logodds);
	if (!F.t) {
		int rc = -errno;
		FZ_LOG(ERR, "%s", err);
		return rc;
	}
	if (fz_tiers_img_bytes(F.t) > fz_app.img_floats * sizeof(float)) {
		FZ_LOG(ERR, "front: requests have room for %zu image bytes, the tiers need %zu",
		       fz_app.img_floats * sizeof(float), fz_tiers_img_bytes(F.t));
		fz_front_fini();
		return -EINVAL;
	}
	F.epoch = atomic_load(&fz_app.front_epoch);
	if (fz_tiers_on(F.t))
		FZ_LOG(INFO, "front: exact %d entries, near %d inputs within rms %.4f (grid %d, 0: "
			     "automatic), flows %d, coalescing %d in flight x %d followers for <= %d us",
		       c->front.exact_entries, c->front.near_radius > 0 ? c->front.near_entries : 0,
		       (double)c->front.near_radius, c->front.near_grid,
		       c->front.near_radius > 0 ? c->front.flow_entries : 0, c->front.pending,
		       c->front.followers, c->front.wait_us);
	return 0;
}

/* A reload replaced the model's caches or the model: what the tables hold may be wrong now.
 * Partner of the release increment in control/reload.c. */
static void check_epoch(void)
{
	uint32_t e = atomic_load_explicit(&fz_app.front_epoch, memory_order_acquire);
	if (e == F.epoch)
		return;
	F.epoch = e;
	fz_tiers_clear(F.t);
	FZ_LOG(INFO, "front: reload: exact, near and flow tables cleared");
}

enum fz_front_verdict fz_front_submit(struct fz_req *rq, const struct fz_reasm_req *r,
				      const void *host, uint64_t now_ns)
{
	check_epoch();
	struct fz_tiers_req *fr = &rq->fr;
	fr->owner = rq;
	fr->t_ns = now_ns;
	fr->src_ip = r->reply.ip;
	fr->src_port = r->reply.port;
	const struct fz_tiers_input in = {.dtype = r->dtype, .c = r->c, .h = r->h, .w = r->w,
					  .bytes = r->data, .len = r->len,
					  .host_u8 = r->dtype == FZ_PROTO_DT_U8, .host = host};
	switch (fz_tiers_submit(F.t, fr, &in, now_ns)) {
	case FZ_TIERS_ANSWERED:
		take_answer(rq);
		return FZ_FRONT_ANSWERED;
	case FZ_TIERS_WAITING:
		return FZ_FRONT_WAITING;
	case FZ_TIERS_RUN:
		break;
	}
	return FZ_FRONT_RUN;
}

void fz_front_learn(struct fz_req *rq, uint64_t now_ns)
{
	check_epoch();
	const struct fz_tiers_result res = {
		.ok = rq->status == 0, .label = rq->label, .confidence = rq->confidence,
		.src = rq->answer};
	fz_tiers_learn(F.t, &rq->fr, &res, now_ns);
}

void fz_front_abandon(struct fz_req *rq, uint64_t now_ns)
{
	if (F.t)
		fz_tiers_abandon(F.t, &rq->fr, now_ns);
}

void fz_front_expire(uint64_t now_ns)
{
	fz_tiers_expire(F.t, now_ns);
}

unsigned fz_front_waiting(void)
{
	return fz_tiers_waiting(F.t);
}
