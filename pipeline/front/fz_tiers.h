/* Freeze front tiers: what answers a request before any layer runs (exact repeats, per-flow
 * memory, near-duplicate inputs, coalescing with a request alike in flight). DPDK-free, one
 * owner thread (the appliance's RX lcore), an explicit context; the tables are cachecore's
 * (fz_front.h), the glue is pipeline/datapath/front.c, unit tests drive it directly. */
#ifndef FZ_TIERS_H
#define FZ_TIERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fz_answer.h"
#include "fz_appcfg.h"
#include "fz_front.h"

/* The tiers, in the order a request meets them (one list: enum and names together). */
#define FZ_TIERS_FOREACH(_)                                                                         \
	_(EXACT, "exact")                                                                          \
	_(FLOW, "flow")                                                                            \
	_(NEAR, "near")                                                                            \
	_(COALESCED, "coalesced")

enum fz_tier {
#define FZ_TIER_ENUM(e, s) FZ_TIER_##e,
	FZ_TIERS_FOREACH(FZ_TIER_ENUM)
#undef FZ_TIER_ENUM
	FZ_TIERS
};
const char *fz_tier_name(enum fz_tier t);

/* The counters (the owner's; readers elsewhere load them relaxed). Every request passes once:
 * requests = exact_hits + flow_hits + near_hits + followers + ran;
 * followers = followers_answered + followers_ran + followers_expired + followers_relead +
 * still waiting (a follower whose leader's answer was not sure enough waits again for another
 * request in flight, followers_rewaited, or leads: followers_relead, and runs). */
#define FZ_FOREACH_FRONT_STAT(_)                                                                   \
	_(requests) _(exact_hits) _(flow_hits) _(near_hits) _(followers) _(exact_followers)        \
	_(followers_answered) _(followers_ran) _(followers_expired) _(ran) _(leaders)             \
	_(pending_full) _(followers_full) _(exact_inserts) _(exact_evictions) _(near_lookups)     \
	_(near_inserts) _(near_evictions) _(flow_lookups) _(flow_expired) _(flow_replaced)        \
	_(clears) _(learned) _(stale) _(followers_relead) _(followers_rewaited)                  \
	_(near_no_image) _(near_candidates) _(near_refuted) _(tier_off_skips)

struct fz_front_stats {
#define FZ_FS_FIELD(f) uint64_t f;
	FZ_FOREACH_FRONT_STAT(FZ_FS_FIELD)
#undef FZ_FS_FIELD
};

/* What the tiers keep of a request (embedded in the caller's request; `owner` points back). */
struct fz_tiers_req {
	void *owner;
	uint64_t t_ns;           /* its arrival (a follower's wait counts from here) */
	uint32_t src_ip;         /* its source, for the flow memory */
	uint16_t src_port;
	uint8_t flags;           /* FZ_TIERS_F_* */
	uint8_t img_ok;          /* img and key hold this request's (it is a u8 image) */
	int16_t label;           /* set when a tier answered it */
	uint8_t tier;            /* ... which (enum fz_tier) */
	float confidence;
	int32_t exact_slot, pend_slot;
	uint32_t exact_gen, pend_gen, epoch;
	struct fz_tiers_req *next; /* a follower's link in its leader's list */
	uint8_t *img;            /* room for the input as a u8 image (c h w bytes), the caller's */
	float key[FZ_FRONT_MAX_DIM];
};

#define FZ_TIERS_F_LEADER 1u       /* it ran: give it back (fz_tiers_learn) once answered */
#define FZ_TIERS_F_FOLLOW_EXACT 2u /* waits for an exact repeat in flight */

/* What becomes of a submitted request. */
enum fz_tiers_verdict {
	FZ_TIERS_ANSWERED, /* label, confidence and tier set */
	FZ_TIERS_WAITING,  /* held until the request it follows is answered (then io.answer/run) */
	FZ_TIERS_RUN,      /* it runs (a leader others may wait for) */
};

/* How the tiers hand requests back (arg: io.arg). */
struct fz_tiers_io {
	void *arg;
	void (*answer)(void *arg, struct fz_tiers_req *r); /* a follower answered (tier set) */
	void (*run)(void *arg, struct fz_tiers_req *r);    /* a follower runs itself */
	void (*release)(void *arg, struct fz_tiers_req *r); /* a learned leader is done with */
	/* is tier t switched off (self-checking)? NULL: never */
	bool (*tier_off)(void *arg, enum fz_tier t);
};

struct fz_tiers_params {
	const struct fz_appcfg *cfg; /* front:, online_min_confidence */
	int c, h, w;                 /* the model input */
	uint64_t model_fp;           /* fz_net_fingerprint: part of the exact key */
	int n_layers;
	const bool *logodds;         /* [n_layers]: that layer's early exits carry log-odds (learned
				      * caches), so their probability can gate sharing; may be NULL */
	struct fz_front_stats *stats; /* where the counters go */
	struct fz_tiers_io io;
};

/* The tiers of cfg->front (NULL with errno EINVAL and a message in err: a key that does not fit
 * the input; ENOMEM). With `front` off or no tier sized, an object that answers nothing
 * (fz_tiers_on false). */
struct fz_tiers *fz_tiers_create(const struct fz_tiers_params *p, char *err, size_t errlen);
void fz_tiers_free(struct fz_tiers *t);
bool fz_tiers_on(const struct fz_tiers *t);
/* Bytes of an input image the caller gives every request room for (r->img), 0: none needed. */
size_t fz_tiers_img_bytes(const struct fz_tiers *t);

/* A complete request's input: the tensor as received (the exact key, with its header), and in
 * host order (u8 bytes, or f32 values on the u8 scale: the near-duplicate tiers' image). */
struct fz_tiers_input {
	unsigned dtype, c, h, w; /* as the request's header says (dtype: the wire's code) */
	const void *bytes;       /* as received */
	size_t len;
	bool host_u8;            /* host holds u8 bytes (else f32 values) */
	const void *host;
};

/* A complete request; r->t_ns, src_ip, src_port and img must be set. ANSWERED: r->label,
 * confidence and tier are the answer. */
enum fz_tiers_verdict fz_tiers_submit(struct fz_tiers *t, struct fz_tiers_req *r,
				      const struct fz_tiers_input *in, uint64_t now_ns);

/* How a leader was answered: ok (an answer, not an error), its label and confidence, and
 * where: an early exit of a layer (FZ_ANSWERED_LAYER) or the full model (FZ_ANSWERED_FULL:
 * confidence its softmax probability). */
struct fz_tiers_result {
	bool ok;
	int16_t label;
	struct fz_answer_src src;
	float confidence;
};

/* A leader answered: the tables learn, its followers are answered or run, io.release(r). */
void fz_tiers_learn(struct fz_tiers *t, struct fz_tiers_req *r, const struct fz_tiers_result *res,
		    uint64_t now_ns);
/* A leader that never entered the pipeline (dropped on the way): its followers run (or lead
 * again). Nothing else happens to it. */
void fz_tiers_abandon(struct fz_tiers *t, struct fz_tiers_req *r, uint64_t now_ns);
/* Followers that waited wait_us since their own arrival (r->t_ns) run themselves; the others
 * keep waiting for their leader. */
void fz_tiers_expire(struct fz_tiers *t, uint64_t now_ns);
/* Followers held now (each holds its request, and will need a place in stage 1's ring when it
 * runs: the owner counts them against its room). */
unsigned fz_tiers_waiting(const struct fz_tiers *t);
/* What the tables hold was answered by a model or caches now replaced: forget it. Leaders in
 * flight still release their followers; they teach the tables nothing. */
void fz_tiers_clear(struct fz_tiers *t);

#endif /* FZ_TIERS_H */
