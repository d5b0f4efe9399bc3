/* The front tiers on the RX lcore: glue between the appliance's requests and the DPDK-free
 * tiers (pipeline/front/fz_tiers.h). Private to the appliance; RX is their only user (TX only
 * asks whether a request is a leader to give back). */
#ifndef FZ_DP_FRONT_H
#define FZ_DP_FRONT_H

#include <stdbool.h>
#include <stdint.h>

#include "fz_proto.h"
#include "fz_tiers.h"

struct fz_req;

/* What RX does with a request the front tiers have seen. */
enum fz_front_verdict {
	FZ_FRONT_ANSWERED, /* label, confidence and answer set: to TX */
	FZ_FRONT_WAITING,  /* held by the front tiers until the request it follows is answered */
	FZ_FRONT_RUN,      /* into the pipeline (its input still to load) */
};

/* The callbacks through which the front tiers give requests back to RX. */
struct fz_front_io {
	void (*answer)(struct fz_req *rq); /* answered: to TX */
	void (*run)(struct fz_req *rq);    /* runs itself: to stage 1 */
	void (*release)(struct fz_req *rq); /* back to the pool */
};

/* Create the tiers from the config (RX lcore, before serving). 0, or -ENOMEM/-EINVAL with a
 * logged message. Nothing to do when the config has no `front:`. */
int fz_front_init(const struct fz_front_io *io);
void fz_front_fini(void);
bool fz_front_on(void);

/* Who answered for tier t (FZ_ANSWERED_EXACT, ...). */
struct fz_answer_src fz_front_answer_src(enum fz_tier t);

/* A complete request (rq's reply and id set): look it up. `host` is the tensor in host order
 * (u8 bytes, or f32 values) for the near-duplicate tiers, r's bytes the exact key. */
enum fz_front_verdict fz_front_submit(struct fz_req *rq, const struct fz_reasm_req *r,
				      const void *host, uint64_t now_ns);
/* A leader back from TX (answered, or refused): the tables learn, its followers are answered
 * or run, and it is released. */
void fz_front_learn(struct fz_req *rq, uint64_t now_ns);
/* A leader that never entered the pipeline (dropped on the way): its followers run. */
void fz_front_abandon(struct fz_req *rq, uint64_t now_ns);
/* Followers that waited wait_us since their own arrival run themselves. */
void fz_front_expire(uint64_t now_ns);
/* Followers held now: each will want a place in stage 1's ring (RX keeps room for them). */
unsigned fz_front_waiting(void);

#endif /* FZ_DP_FRONT_H */
