/* How a request was answered: the one encoding the appliance, the cascade, the front tiers,
 * self-checking, telemetry and the offline commands share. Only pipeline/proto maps it to the
 * wire (fz_proto_exit_code). Header only, no DPDK: every room includes it. */
#ifndef FZ_ANSWER_H
#define FZ_ANSWER_H

#include <stdbool.h>
#include <stdint.h>

/* Who answered, as an X-macro: enum value and name stay together. The front tiers come last,
 * in pipeline/front's order (enum fz_tier; pipeline/datapath/front.c asserts it). */
#define FZ_FOREACH_ANSWERED(_)                                                                     \
	_(ERROR, "error")         /* an error response: no label (the status says why) */        \
	_(LAYER, "layer")         /* the cache after model layer `layer` (an early exit) */       \
	_(FULL, "full_model")     /* the whole model ran */                                      \
	_(EXACT, "exact")         /* front tier: an exact repeat of an answered request */       \
	_(FLOW, "flow")           /* front tier: near the last request of the same source */     \
	_(NEAR, "near")           /* front tier: near an answered input */                       \
	_(COALESCED, "coalesced") /* front tier: waited for a request alike in flight */

enum fz_answered {
#define FZ_ANS_ENUM(e, s) FZ_ANSWERED_##e,
	FZ_FOREACH_ANSWERED(FZ_ANS_ENUM)
#undef FZ_ANS_ENUM
	FZ_ANSWERED__COUNT
};
#define FZ_ANSWERED_FRONT_FIRST FZ_ANSWERED_EXACT /* the front tiers: FRONT_FIRST + tier */

/* Where an answer came from: kind, and for FZ_ANSWERED_LAYER the model layer index (below
 * FZ_MODEL_MAX_LAYERS, which the model loader enforces); -1 for every other kind. */
struct fz_answer_src {
	uint8_t kind; /* enum fz_answered */
	int16_t layer;
};

static inline struct fz_answer_src fz_answer_of(enum fz_answered kind)
{
	return (struct fz_answer_src){.kind = (uint8_t)kind, .layer = -1};
}

static inline struct fz_answer_src fz_answer_layer(int layer)
{
	return (struct fz_answer_src){.kind = FZ_ANSWERED_LAYER, .layer = (int16_t)layer};
}

/* The front tier (pipeline/front's enum fz_tier) that answered, or -1 for any other kind. */
static inline int fz_answer_tier(struct fz_answer_src a)
{
	return a.kind >= FZ_ANSWERED_FRONT_FIRST && a.kind < FZ_ANSWERED__COUNT
		       ? a.kind - FZ_ANSWERED_FRONT_FIRST
		       : -1;
}

/* The model layer whose cache answered (an early exit), or -1 for any other kind. */
static inline int fz_answer_exit_layer(struct fz_answer_src a)
{
	return a.kind == FZ_ANSWERED_LAYER ? a.layer : -1;
}

static inline bool fz_answer_is(struct fz_answer_src a, enum fz_answered kind)
{
	return a.kind == kind;
}

#endif /* FZ_ANSWER_H */
