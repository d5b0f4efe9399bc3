/* Stage lcore: its layers run as a cascade (pipeline/cascade/: layer groups split at cache
 * points, lookups, close-up around the exits, the full model's answer and online inserts, the
 * code `freeze eval` runs too). This file keeps the DPDK side: rings, batches between stages,
 * RCU quiescent points, requests. A stage's last group writes straight into the batch the next
 * stage's first group reads: an activation is written once per group, never copied between
 * requests and batches (stage 1 gathers the requests' model inputs). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_lcore.h>

#include "app_pvt.h"
#include "fz_cascade.h"
#include "fz_proto.h"
#include "stage_cache.h"
#include "verify.h"

#define STASH 16 /* batches taken off the ring at a time: small ones waiting are merged */
#define MAX_BATCH FZ_CASCADE_MAX_BATCH

/* The batches a stage has taken off its ring and not yet run (merging needs to look ahead). */
struct stash {
	struct fz_batch *b[STASH];
	unsigned n;
};

/* Hand objects to a ring, waiting while it is full: the pipeline behind RX is lossless, so
 * back-pressure reaches the RX ring, where overload is answered with an error. */
static void enqueue_all(struct rte_ring *r, void **objs, unsigned n, bool mp)
{
	unsigned done = 0, spins = 0;
	while (done < n) {
		done += mp ? rte_ring_mp_enqueue_burst(r, objs + done, n - done, NULL)
			   : rte_ring_sp_enqueue_burst(r, objs + done, n - done, NULL);
		if (done < n)
			fz_idle(FZ_IDLE_YIELD, &spins);
	}
}

/* A free batch for the next stage, waiting while there is none: the next stage gives them
 * back as it runs them, so a slow stage holds this one up as a full ring did, back to RX. */
static struct fz_batch *batch_get(struct fz_bpool *p)
{
	void *b;
	unsigned spins = 0;
	while (rte_mempool_get(p->mp, &b) < 0)
		fz_idle(FZ_IDLE_YIELD, &spins);
	return b;
}

/* Give batches back to their pool. */
static void batch_put(struct fz_bpool *p, struct fz_batch **b, unsigned n)
{
	rte_mempool_put_bulk(p->mp, (void **)b, n);
}

/*
 * The next batch from the stash: the oldest one, with the rows of the batches queued behind it
 * copied in as long as the total fits max_batch (they go back to the pool). Exits leave the
 * batches of later stages small; merging them buys batch size for one copy of their rows.
 * Measured (10k requests, 2 cores): with s1 at max_batch 8 and the others at 32, later stages
 * ran 13-16 rows a batch instead of 4-6 and answers/s rose from ~3.5k to ~4.9k (fewer batches
 * handed on and woken for); at the default 32 everywhere batches of ~24 and ~17 seldom pair up
 * within 32, and merging whole batches or splitting one to fill up changed nothing measurable.
 */
static struct fz_batch *batch_take(struct stash *st, struct fz_bpool *p, unsigned max_batch)
{
	struct fz_batch *b = st->b[0];
	unsigned used = fz_batch_merge_count(st->b, st->n, max_batch);
	for (unsigned i = 1; i < used; i++)
		fz_batch_append(b, st->b[i], p->stride);
	if (used > 1)
		batch_put(p, st->b + 1, used - 1);
	st->n -= used;
	memmove(st->b, st->b + used, st->n * sizeof(*st->b));
	return b;
}

/* Two layouts that must be one (a buffer written by one side is read by the other). */
static int same_layout(const struct fz_stage_rt *s, const char *what, struct fz_act_layout a,
		       struct fz_act_layout b)
{
	if (fz_layout_equal(&a, &b))
		return 0;
	FZ_LOG(ERR, "stage '%s': %s: %s (%zu floats) against %s (%zu floats)", s->cfg->name, what,
	       a.tag, a.sample_stride, b.tag, b.sample_stride);
	return -1;
}

/*
 * Check the buffers the stage shares with others against both sides' layouts: the first
 * group's input (the requests' model input, or the batches in) and the last group's output
 * (the batches out), both bound per batch; the cascade bound the groups inside to each other.
 */
static int cascade_check(struct fz_stage_rt *s, const struct fz_cascade *cc)
{
	const struct fz_act_layout il = fz_cascade_in_layout(cc);
	const struct fz_bpool *ip = s->in_pool, *op = s->out_pool;
	if (!ip && same_layout(s, "the requests' model input against the first group",
			       fz_net_layout(fz_app.net, FZ_INPUT_TENSOR), il) < 0)
		return -1;
	if (ip && same_layout(s, "batches in against the first group", ip->lay, il) < 0)
		return -1;
	if (op && same_layout(s, "the last group against batches out", fz_cascade_out_layout(cc),
			      op->lay) < 0)
		return -1;
	if ((ip && ip->cap < (unsigned)s->cfg->max_batch) ||
	    (op && op->cap < (unsigned)s->cfg->max_batch)) {
		FZ_LOG(ERR, "stage '%s': batches of %u rows cannot hold max_batch %d", s->cfg->name,
		       ip && ip->cap < (unsigned)s->cfg->max_batch ? ip->cap : op->cap,
		       s->cfg->max_batch);
		return -1;
	}
	return 0;
}

/* The caches the cascade looks up in (none when the config turns them off). */
static int cascade_caches(struct fz_stage_rt *s, struct fz_cascade *cc,
			  const struct fz_cache_set *cs)
{
	char err[640];
	if (fz_cascade_use_caches(cc, fz_app.cfg.caches ? cs : NULL, err, sizeof(err)) == 0)
		return 0;
	FZ_LOG(ERR, "stage '%s': %s", s->cfg->name, err);
	fz_cascade_use_caches(cc, NULL, err, sizeof(err)); /* no exits rather than a bad read */
	return -1;
}

/* Split the stage's layers at cache points and compile each group on this lcore. */
static struct fz_cascade *cascade_create(struct fz_stage_rt *s)
{
	const struct fz_stage_cfg *c = s->cfg;
	const struct fz_cache_set *cs = fz_app_caches_current();
	int cut[FZ_CASCADE_MAX_GROUPS], ncut = 0;
	char err[512];
	for (int l = c->first_layer; l < c->last_layer && ncut < FZ_CASCADE_MAX_GROUPS; l++)
		if (fz_app.cfg.caches && fz_app_cache_in(cs, l))
			cut[ncut++] = l;
	struct fz_cascade *cc = fz_cascade_create(fz_app.net, c->first_layer, c->last_layer, cut,
						  ncut, c->max_batch, err, sizeof(err));
	if (!cc) {
		FZ_LOG(ERR, "stage '%s': %s", c->name, err);
		return NULL;
	}
	for (int k = 0; k < fz_cascade_groups(cc); k++) {
		struct fz_group *g = fz_cascade_group(cc, k);
		if (fz_group_prepare_all(g) < 0) {
			FZ_LOG(ERR, "stage '%s': cannot compile every batch size", c->name);
			goto fail;
		}
		struct fz_act_layout il = fz_group_in_layout(g), ol = fz_group_out_layout(g);
		char impl[2048];
		fz_group_describe(g, impl, sizeof(impl));
		FZ_LOG(INFO, "stage '%s': layers %s..%s: in %s, out %s, oneDNN ISA %s", c->name,
		       fz_app.model->layers[fz_cascade_group_first(cc, k)].name,
		       fz_app.model->layers[fz_cascade_group_last(cc, k)].name, il.tag, ol.tag,
		       fz_stages_isa());
		FZ_LOG(DEBUG, "stage '%s': %s", c->name, impl);
	}
	if (cascade_check(s, cc) < 0 || cascade_caches(s, cc, cs) < 0)
		goto fail;
	/* the one online rule, shared with `freeze eval --online-min-confidence` */
	fz_cascade_online(cc, fz_app.cfg.online, (float)fz_app.cfg.online_min_confidence);
	fz_cascade_timing(cc, true); /* lookup time for the stage's counters */
	return cc;
fail:
	fz_cascade_free(cc);
	return NULL;
}

/* The batches one run takes in and hands on (the cascade's in_done and out_get hooks). */
struct run_io {
	struct fz_stage_rt *s;
	struct fz_batch *ib, *ob;
};

static void io_in_done(void *arg)
{
	struct run_io *io = arg;
	if (io->ib) {
		/* read: the previous stage may fill it again */
		batch_put(io->s->in_pool, &io->ib, 1);
		io->ib = NULL;
	}
}

static float *io_out_get(void *arg)
{
	struct run_io *io = arg;
	io->ob = batch_get(io->s->out_pool); /* the last group writes the next stage's batch */
	return io->ob->act;
}

static uint64_t lookup_ns(const struct fz_cascade *cc)
{
	const struct fz_cascade_stats *st = fz_cascade_stats(cc);
	uint64_t ns = 0;
	for (int k = 0; k < fz_cascade_groups(cc); k++)
		ns += st->lookup_ns[k];
	return ns;
}

int fz_lcore_stage(void *arg)
{
	struct fz_stage_rt *s = arg;
	const struct fz_stage_cfg *c = s->cfg;
	const bool last = s->next == NULL;
	static __thread struct fz_req *batch[MAX_BATCH], *done[MAX_BATCH];
	static __thread struct fz_cascade_row rows[MAX_BATCH];
	static __thread struct fz_cascade_answer ans[MAX_BATCH];
	static __thread struct stash stash;
	struct fz_cascade *cc;

	/* oneDNN 2.6: set this thread's OpenMP thread count, then create primitives here */
	omp_set_num_threads(1);
	if (!(cc = cascade_create(s))) {
		/* pairs with the main lcore's acquire load while it waits for stages */
		atomic_store_explicit(&s->ready, -1, memory_order_release);
		goto out;
	}
	atomic_store_explicit(&s->ready, 1, memory_order_release);
	fz_app_rcu_online((unsigned)s->index);

	unsigned empty = 0;
	const struct fz_cache_set *seen = fz_app_caches_current();
	/* fault injection for tests: FZ_FAULT_STALL=STAGE:MS stalls that stage once, after its
	 * first batch, as a stage stuck in a long computation would */
	long stall_ms = 0;
#ifdef FZ_FAULT_INJECTION
	const char *fault = getenv("FZ_FAULT_STALL");
	size_t nl = strlen(c->name);
	if (fault && !strncmp(fault, c->name, nl) && fault[nl] == ':')
		stall_ms = strtol(fault + nl + 1, NULL, 10);
#endif
	const uint64_t tsc_per_s = fz_app.tsc_hz;
	for (;;) {
		/* a quiescent point: nothing of a replaced snapshot is held across it */
		fz_app_rcu_quiescent((unsigned)s->index);
		/* requests from RX (stage 1), or batches into the stash (n counts those first) */
		unsigned n;
		if (!s->in_pool) {
			n = rte_ring_sc_dequeue_burst(s->in, (void **)batch, c->max_batch, NULL);
			/* shadows only fill the room requests leave: the lowest priority */
			if (fz_app.shadow_ring && n < (unsigned)c->max_batch)
				n += rte_ring_sc_dequeue_burst(fz_app.shadow_ring, (void **)batch + n,
							       c->max_batch - n, NULL);
		} else {
			stash.n += rte_ring_sc_dequeue_burst(s->in, (void **)stash.b + stash.n,
							     STASH - stash.n, NULL);
			n = stash.n;
		}
		const struct fz_cache_set *cs = fz_app_caches_current();
		if (cs != seen) {
			/* a reload swapped the snapshot: same layers and key sizes, new entries */
			cascade_caches(s, cc, cs);
			seen = cs;
		}
		if (n == 0) {
			/* pairs with RX's release store once every request is answered (a batch
			 * holds requests: none is left in a ring or the stash then) */
			if (atomic_load_explicit(&fz_app.stop_all, memory_order_acquire) &&
			    rte_ring_empty(s->in) &&
			    (s->in_pool || !fz_app.shadow_ring || rte_ring_empty(fz_app.shadow_ring)))
				break;
			fz_idle(c->idle, &empty);
			continue;
		}
		empty = 0;
		uint64_t t0 = rte_rdtsc();
		const uint64_t lookup0 = lookup_ns(cc);
		const uint64_t inserts0 = fz_cascade_stats(cc)->online_inserts;
		const uint64_t lookup_err0 = fz_cascade_stats(cc)->lookup_errors;
		/* the first group's input: the batch from the previous stage, or the requests'
		 * model inputs gathered into the group's own buffer (stage 1) */
		struct run_io io = {.s = s};
		struct fz_cascade_run run = {.arg = &io};
		if (s->in_pool) {
			io.ib = batch_take(&stash, s->in_pool, (unsigned)c->max_batch);
			n = io.ib->n;
			memcpy(batch, io.ib->reqs, n * sizeof(*batch));
			run.in = io.ib->act;
			run.in_done = io_in_done;
		} else {
			float *in = fz_cascade_input(cc);
			const size_t stride = fz_cascade_in_layout(cc).sample_stride;
			for (unsigned i = 0; i < n; i++)
				memcpy(in + i * stride, batch[i]->act, stride * sizeof(float));
		}
		if (!last)
			run.out_get = io_out_get;
		s->st.in += n;
		s->st.batches++;
		s->st.batch_sum += n;
		bool shadows = false;
		for (unsigned i = 0; i < n; i++) {
			rows[i] = (struct fz_cascade_row){.user = batch[i], .keys = batch[i]->keys,
							  .keys_set = &batch[i]->keys_set,
							  .shadow = batch[i]->shadow};
			shadows |= batch[i]->shadow;
		}
		if (shadows) /* every point's answer for them, switched-off points too */
			run.lookup = fz_verify_lookup;

		unsigned na = 0, nd = 0;
		int rc = fz_cascade_run(cc, &run, rows, &n, ans, &na);
		io_in_done(&io); /* a failed first group */
		/* lookups before the exits are counted: a reader never sees more hits than lookups */
		for (int k = 0; k < fz_cascade_groups(cc); k++) {
			const int l = fz_cascade_group_last(cc, k);
			if (l >= 0) /* relaxed store: telemetry reads it */
				__atomic_store_n(&s->st.lookups_by_layer[l],
						 fz_cascade_stats(cc)->lookups[k], __ATOMIC_RELAXED);
		}
		for (unsigned i = 0; i < na; i++) {
			struct fz_req *rq = ans[i].user;
			if (rq->shadow) { /* only the last stage answers a shadow (it never exits) */
				fz_verify_done(rq, ans[i].label, cs);
				continue;
			}
			rq->label = (int16_t)ans[i].label;
			rq->confidence = ans[i].confidence;
			rq->status = 0;
			rq->stage = (uint16_t)s->index;
			rq->answer = ans[i].src;
			const int l = fz_answer_exit_layer(ans[i].src);
			if (l >= 0) { /* < FZ_MODEL_MAX_LAYERS: the model loader's cap */
				s->st.exits_by_layer[l]++;
				s->st.hits++;
			}
			done[nd++] = rq;
		}
		if (rc < 0) {
			for (unsigned i = 0; i < n; i++) {
				struct fz_req *rq = rows[i].user;
				if (rq->shadow) {
					fz_app.shadows_failed++;
					fz_verify_release(rq);
					continue;
				}
				rq->status = FZ_PROTO_R_INTERNAL;
				done[nd++] = rq;
			}
			s->st.errors += n;
			n = 0;
		}
		s->st.online_inserts += fz_cascade_stats(cc)->online_inserts - inserts0;
		s->st.lookup_errors += fz_cascade_stats(cc)->lookup_errors - lookup_err0;
		if (nd) {
			enqueue_all(fz_app.tx_ring, (void **)done, nd, true);
			s->st.answered += nd;
		}
		if (n) {
			io.ob->n = n;
			for (unsigned i = 0; i < n; i++)
				io.ob->reqs[i] = rows[i].user;
			enqueue_all(s->next, (void **)&io.ob, 1, false); /* room for every batch */
			s->st.out_next += n;
		} else if (io.ob) {
			batch_put(s->out_pool, &io.ob, 1); /* all exited at the last cache point */
		}
		if (stall_ms > 0) {
			FZ_LOG(WARNING, "stage '%s': stalling %ld ms (FZ_FAULT_STALL)", c->name, stall_ms);
			rte_delay_us_sleep((unsigned)stall_ms * 1000);
			stall_ms = 0;
		}
		uint64_t busy = rte_rdtsc() - t0;
		uint64_t lookup = (lookup_ns(cc) - lookup0) * tsc_per_s / 1000000000u;
		if (lookup > busy)
			lookup = busy;
		s->st.busy_tsc += busy;
		s->st.lookup_tsc += lookup;
		s->st.compute_tsc += busy - lookup;
	}
	fz_app_rcu_offline((unsigned)s->index);
out:
	fz_cascade_free(cc);
	return 0;
}
