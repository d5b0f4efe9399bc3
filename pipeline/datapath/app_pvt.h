/* The appliance's shared state, requests and counters: set up by control (pipeline/control/),
 * run by the data-path lcores (pipeline/datapath/). Private to the appliance. */
#ifndef FZ_APP_PVT_H
#define FZ_APP_PVT_H

#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <rte_common.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_log.h>
#include <rte_mempool.h>
#include <rte_rcu_qsbr.h>
#include <rte_ring.h>

#include "fz_answer.h"
#include "fz_appcfg.h"
#include "fz_cache.h"
#include "fz_tiers.h"
#include "fz_model.h"
#include "fz_proto.h"
#include "fz_stages.h"
#include "stage_batch.h"

#define FZ_VERIFY_POINTS FZ_CACHE_MAX_POINTS /* self-checking follows every point of a set */

extern int fz_logtype_pipeline;
#define FZ_LOG(level, fmt, ...)                                                                    \
	rte_log(RTE_LOG_##level, fz_logtype_pipeline, "freeze: " fmt "\n", ##__VA_ARGS__)

/* Requests dropped without an answer, by reason (one list: enum and names stay together). */
#define FZ_FOREACH_APP_DROP(_)                                                                     \
	_(REQ_POOL_EMPTY, "req_pool_empty")                                                        \
	_(STAGE_RING_FULL, "stage_ring_full")                                                      \
	_(TX_RING_FULL, "tx_ring_full")                                                            \
	_(MBUF_POOL_EMPTY, "mbuf_pool_empty")                                                      \
	_(TX_QUEUE_FULL, "tx_queue_full")                                                          \
	_(RESPONSE_BUILD, "response_build_failed")

enum fz_app_drop {
#define FZ_AD_ENUM(e, s) FZ_APP_DROP_##e,
	FZ_FOREACH_APP_DROP(FZ_AD_ENUM)
#undef FZ_AD_ENUM
	FZ_APP_DROP__COUNT
};
extern const char *const fz_app_drop_names[];

/* One inference request, from reassembly to its response; an object of fz_app.reqs. Owned by
 * one lcore at a time: the rings hand it over (the ring's store-release/load-acquire orders its
 * contents), and the pool's stack orders it the same way between TX's put and RX's get. */
struct fz_req {
	uint64_t id;          /* the client's request id */
	uint64_t t_rx;        /* TSC when its last fragment arrived */
	uint8_t reply[64];    /* the protocol's reply address (MACs, IPs, ports) */
	int16_t label;        /* answer */
	uint16_t status;      /* protocol status; 0 = ok */
	struct fz_answer_src answer; /* who answered (TX maps it to the wire: fz_proto_exit_code) */
	uint16_t stage;       /* index of the stage that answered */
	float confidence;
	float *act;           /* model input (fz_net_layout(FZ_INPUT_TENSOR)), read by stage 1 */
	float *keys;          /* cache keys per cache layer (online inserts; after act), or NULL */
	const struct fz_cache_set *keys_set; /* the snapshot the keys came from */
	/* front tiers (RX's, pipeline/front through datapath/front.c): a leader is handed back
	 * to RX by TX once answered, so that what waits for it is answered and the tables learn
	 * its answer */
	struct fz_tiers_req fr;
	/* self-checking (datapath/verify.c): a shadow is a copy of an early-answered request
	 * that runs the whole model off the answer path; its lookups at each cache point */
	uint8_t shadow;
	uint8_t sh_want; /* a front answer RX picked to be checked: its input is loaded */
	int16_t sh_label[FZ_VERIFY_POINTS]; /* -1: not looked up there */
	float sh_conf[FZ_VERIFY_POINTS];
	int32_t sh_slot[FZ_VERIFY_POINTS]; /* the entry that answered there, -1: none */
};
#define FZ_KEYS_MIXED ((const struct fz_cache_set *)1) /* keys from two snapshots */

/* Per-lcore counters: written by their lcore only, read by telemetry (relaxed, torn reads of a
 * 64-bit counter cannot happen on x86-64). Each on its own cache line. */
struct fz_rx_stats {
	alignas(64) uint64_t frames, bursts, requests, arp, icmp, control_tx_full;
	uint64_t drop_frame[FZ_PROTO_R__COUNT]; /* by protocol reason */
	uint64_t drop[FZ_APP_DROP__COUNT];
	uint64_t errors_answered; /* error responses queued */
	uint64_t udp_csum_partial; /* frames with an unfinished UDP checksum, accepted unverified */
	uint64_t busy_tsc, idle_polls, backpressure_polls;
	uint64_t first_tsc; /* first frame */
	uint64_t front_tsc; /* time in the front tiers */
	struct fz_front_stats front;
};

struct fz_stage_stats {
	alignas(64) uint64_t in, out_next, hits, answered, batches, batch_sum, busy_tsc;
	uint64_t lookup_tsc, compute_tsc, errors, online_inserts;
	uint64_t lookup_errors; /* cache lookups that failed: those rows ran on, as misses */
	uint64_t drop[FZ_APP_DROP__COUNT];
	uint64_t exits_by_layer[FZ_MODEL_MAX_LAYERS];   /* the model loader enforces the cap */
	uint64_t lookups_by_layer[FZ_MODEL_MAX_LAYERS]; /* rows looked up at the cache after each layer */
};

struct fz_tx_stats {
	alignas(64) uint64_t responses, ok, errors, frames, control, bursts, busy_tsc;
	uint64_t drop[FZ_APP_DROP__COUNT];
	uint64_t latency_ns_sum;
	uint64_t last_tsc; /* last response sent */
	uint64_t lat_hist[64]; /* log2 buckets of ns inside the appliance */
	uint64_t shadows_sent, shadows_busy; /* early answers sent to be checked; not (busy) */
};

struct fz_cache_set;

/*
 * The batches between stage i and stage i+1: `count` objects of `cap` rows (the larger of the
 * two stages' max_batch) in the boundary layout. The rows live outside DPDK memory (32 rows of a
 * 16x28x28 tap are 1.6 MB; --no-huge -m is small), touched at start. Stage i takes a free batch
 * for its last group's output and hands it on; stage i+1 runs its first group on it and gives
 * it back. count * cap = rings.size requests, as a ring of requests held (at least 4 batches).
 * The pool is a stack (mempool ops "lf_stack"): the batch given back last, still in cache, is
 * the next one taken; lock-free, so an lcore preempted inside get or put (more lcores than
 * cores) holds up nobody; no per-lcore cache, which would keep given-back batches from stage i.
 */
struct fz_bpool {
	struct rte_mempool *mp; /* of struct fz_batch: stage i gets; stage i+1 (or i) puts */
	float *arena;
	struct fz_req **reqs;
	unsigned count, cap;
	size_t stride;          /* floats per row: lay.sample_stride */
	size_t obj_bytes;       /* one batch's rows in the arena */
	struct fz_act_layout lay;
};

struct fz_stage_rt {
	alignas(64) const struct fz_stage_cfg *cfg;
	int index;
	/* SP/SC from the previous lcore: requests from RX (stage 1), else struct fz_batch * */
	struct rte_ring *in;
	struct rte_ring *next; /* SP/SC to the next stage (batches), NULL for the last */
	struct fz_bpool *in_pool;  /* where `in`'s batches come from, NULL for stage 1 */
	struct fz_bpool *out_pool; /* where `next`'s batches come from, NULL for the last */
	atomic_int ready;      /* 1 once primitives exist, -1 on failure (main waits) */
	struct fz_stage_stats st;
};

struct fz_app {
	struct fz_appcfg cfg;
	struct fz_model *model;
	struct fz_net *net;
	struct fz_cache_set *caches;
	uint16_t port;
	struct rte_ether_addr mac;
	struct rte_mempool *mbufs;
	/* struct fz_req: RX gets, RX and TX put, each through its per-lcore cache */
	struct rte_mempool *reqs;
	float *arena;      /* the requests' input and key rows (appliance.c: reqs_init) */
	size_t act_floats; /* per request: the model input, its u8 image, then the cache keys */
	size_t img_at, img_floats; /* where the u8 image starts (floats), its room (0: none) */
	struct fz_bpool bpools[FZ_MAX_STAGES - 1]; /* bpools[i]: between stages i and i + 1 */
	struct rte_ring *tx_ring;   /* answered requests, MP/SC: every stage answers */
	struct rte_ring *ctl_ring;  /* ARP/ICMP replies (mbufs) from RX to TX, SP/SC */
	struct rte_ring *learn_ring; /* answered front leaders from TX back to RX, SP/SC, room
				      * for every request (TX never waits on it) */
	atomic_uint front_epoch;     /* bumped by a reload: the front tables forget all */
	/* front tiers the self-check guard switched off, bit 1 << enum fz_selfcheck_tier: stored
	 * by the control thread, read by RX (datapath/verify.h fz_verify_tier_off) */
	_Atomic uint32_t front_off;
	struct rte_ring *shadow_ring; /* shadows from TX to stage 1, SP/SC (verify on) */
	uint64_t shadows_checked, shadows_failed;
	struct fz_stage_rt stages[FZ_MAX_STAGES];
	int n_stages;
	uint64_t tsc_hz;
	/* lifecycle: RX stops taking frames, then every lcore drains and leaves */
	alignas(64) atomic_bool stop_rx;
	atomic_bool stop_all;
	atomic_bool reload; /* SIGHUP or /freeze/reload: the control thread reloads the snapshot */
	struct rte_rcu_qsbr *rcu; /* readers of fz_app.caches: the stage lcores, id = index */
	uint64_t reloads, reload_failures;
	long rss_start_kb; /* resident memory when serving started (soak: it must not grow) */
	atomic_uint_fast64_t last_rx_tsc;
	alignas(64) struct fz_rx_stats rx;
	alignas(64) struct fz_tx_stats tx;
	alignas(64) atomic_uint_fast64_t in_flight; /* requests taken from the pool, not yet back */
};

extern struct fz_app fz_app;

/* A request done with goes back to the pool (through the calling lcore's cache); paired with
 * RX's increment of in_flight when it took it. */
static inline void fz_req_free(struct fz_req *rq)
{
	rq->keys = NULL;
	rq->shadow = 0;
	rte_mempool_put(fz_app.reqs, rq);
	atomic_fetch_sub_explicit(&fz_app.in_flight, 1, memory_order_relaxed);
}

int fz_lcore_rx(void *arg);
int fz_lcore_stage(void *arg);
int fz_lcore_tx(void *arg);

/* Idle back-off of a polling loop: spin, then pause/yield/sleep by policy. */
void fz_idle(enum fz_idle policy, unsigned *empty_polls);


#endif /* FZ_APP_PVT_H */
