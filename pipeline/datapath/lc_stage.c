/* Stage lcore: its layers as layer groups split at cache points; after each group the cache
 * answers what it can, the batch closes up around the exits in place, and the rest runs on.
 * Groups are bound buffer to buffer, and a stage's last group writes straight into the batch
 * the next stage's first group reads: an activation is written once per group, never copied
 * between requests and batches (stage 1 gathers the requests' model inputs). */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_lcore.h>

#include "app_pvt.h"
#include "fz_proto.h"
#include "stage_cache.h"

#define MAX_SEGS 64
#define STASH 16 /* batches taken off the ring at a time: small ones waiting are merged */

struct seg {
	struct fz_group *g;
	struct fz_stage_cache sc; /* the cache after the group's last layer */
};

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

static void answer_full_model(struct fz_req *rq, const float *logits, int classes)
{
	int best = fz_argmax(logits, classes);
	double sum = 0;
	for (int c = 0; c < classes; c++)
		sum += exp((double)logits[c] - logits[best]);
	rq->label = (int16_t)best;
	rq->confidence = (float)(1.0 / sum); /* softmax probability of the answer */
	rq->exit_layer = FZ_EXIT_FULL_MODEL;
	rq->status = 0;
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
 * Bind each group's input to the previous group's output, once: a batch passes from group to
 * group in place. The first group's input (stages after the first) and the last group's output
 * (stages before the last) are the batches', bound per batch. Checks every buffer shared
 * between two sides against both sides' layouts.
 */
static int segs_bind(struct fz_stage_rt *s, struct seg *segs, int nseg)
{
	const struct fz_act_layout il = fz_group_in_layout(segs[0].g);
	const struct fz_bpool *ip = s->in_pool, *op = s->out_pool;
	if (!ip && same_layout(s, "the requests' model input against the first group",
			       fz_net_layout(fz_app.net, FZ_INPUT_TENSOR), il) < 0)
		return -1;
	if (ip && same_layout(s, "batches in against the first group", ip->lay, il) < 0)
		return -1;
	if (op && same_layout(s, "the last group against batches out",
			      fz_group_out_layout(segs[nseg - 1].g), op->lay) < 0)
		return -1;
	if ((ip && ip->cap < (unsigned)s->cfg->max_batch) ||
	    (op && op->cap < (unsigned)s->cfg->max_batch)) {
		FZ_LOG(ERR, "stage '%s': batches of %u rows cannot hold max_batch %d", s->cfg->name,
		       ip && ip->cap < (unsigned)s->cfg->max_batch ? ip->cap : op->cap,
		       s->cfg->max_batch);
		return -1;
	}
	for (int k = 1; k < nseg; k++) {
		const struct fz_act_layout prev = fz_group_out_layout(segs[k - 1].g);
		if (same_layout(s, "a group's output against the next group's input", prev,
				fz_group_in_layout(segs[k].g)) < 0)
			return -1;
		int rc = fz_group_bind(segs[k].g, (float *)fz_group_output(segs[k - 1].g), NULL);
		if (rc < 0) {
			FZ_LOG(ERR, "stage '%s': cannot bind group %d to group %d's output: %s",
			       s->cfg->name, k, k - 1, strerror(-rc));
			return -1;
		}
	}
	return 0;
}

/* Run group g on n rows of `in` into `out`, binding it first where they are not its buffers. */
static int seg_run(struct fz_group *g, float *in, float *out, unsigned n)
{
	int rc = 0;
	if (in != fz_group_input(g) || out != fz_group_output(g))
		rc = fz_group_bind(g, in, out); /* a few pointer updates per batch size */
	return rc < 0 ? rc : fz_group_run(g, (int)n);
}

/* Split the stage's layers at cache points and compile each piece on this lcore. */
static int segs_create(struct fz_stage_rt *s, struct seg *segs, int *nseg)
{
	const struct fz_stage_cfg *c = s->cfg;
	const bool last_stage = s->next == NULL;
	char err[512];
	int first = c->first_layer;
	*nseg = 0;
	for (int l = c->first_layer; l <= c->last_layer; l++) {
		bool cut = l == c->last_layer ||
			   (fz_app.cfg.caches && fz_app_cache_at(l) != NULL);
		if (!cut)
			continue;
		if (*nseg == MAX_SEGS)
			return -1;
		struct seg *sg = &segs[(*nseg)++];
		sg->g = fz_group_create(fz_app.net, first, l, c->max_batch, err, sizeof(err));
		if (!sg->g || fz_group_prepare_all(sg->g) < 0) {
			FZ_LOG(ERR, "stage '%s': %s", c->name,
			       sg->g ? "cannot compile every batch size" : err);
			return -1;
		}
		struct fz_act_layout il = fz_group_in_layout(sg->g), ol = fz_group_out_layout(sg->g);
		char impl[2048];
		fz_group_describe(sg->g, impl, sizeof(impl));
		FZ_LOG(INFO, "stage '%s': layers %s..%s: in %s, out %s, oneDNN ISA %s", c->name,
		       fz_app.model->layers[first].name, fz_app.model->layers[l].name, il.tag,
		       ol.tag, fz_stages_isa());
		FZ_LOG(DEBUG, "stage '%s': %s", c->name, impl);
		/* no cache answers after the model's last layer */
		bool cached = fz_app.cfg.caches && !(last_stage && l == c->last_layer);
		if (fz_stage_cache_init(&sg->sc, s, cached ? l : -1) < 0)
			return -1;
		first = l + 1;
	}
	return segs_bind(s, segs, *nseg);
}

int fz_lcore_stage(void *arg)
{
	struct fz_stage_rt *s = arg;
	const struct fz_stage_cfg *c = s->cfg;
	const bool last = s->next == NULL;
	static __thread struct fz_req *batch[FZ_STAGE_MAX_BATCH], *done[FZ_STAGE_MAX_BATCH];
	static __thread bool hit[FZ_STAGE_MAX_BATCH];
	static __thread struct stash stash;
	struct seg segs[MAX_SEGS] = {0};
	int nseg = 0;

	/* oneDNN 2.6: set this thread's OpenMP thread count, then create primitives here */
	omp_set_num_threads(1);
	if (segs_create(s, segs, &nseg) < 0) {
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
	const char *fault = getenv("FZ_FAULT_STALL");
	size_t nl = strlen(c->name);
	if (fault && !strncmp(fault, c->name, nl) && fault[nl] == ':')
		stall_ms = strtol(fault + nl + 1, NULL, 10);
	for (;;) {
		/* a quiescent point: nothing of a replaced snapshot is held across it */
		fz_app_rcu_quiescent((unsigned)s->index);
		/* requests from RX (stage 1), or batches into the stash (n counts those first) */
		unsigned n;
		if (!s->in_pool) {
			n = rte_ring_sc_dequeue_burst(s->in, (void **)batch, c->max_batch, NULL);
		} else {
			stash.n += rte_ring_sc_dequeue_burst(s->in, (void **)stash.b + stash.n,
							     STASH - stash.n, NULL);
			n = stash.n;
		}
		const struct fz_cache_set *cs = fz_app_caches_current();
		if (cs != seen) {
			/* a reload swapped the snapshot: same layers and key sizes, new entries */
			for (int k = 0; k < nseg; k++)
				if (segs[k].sc.cache)
					segs[k].sc.cache = fz_app_cache_in(cs, segs[k].sc.layer);
			seen = cs;
		}
		if (n == 0) {
			/* pairs with RX's release store once every request is answered (a batch
			 * holds requests: none is left in a ring or the stash then) */
			if (atomic_load_explicit(&fz_app.stop_all, memory_order_acquire) &&
			    rte_ring_empty(s->in))
				break;
			fz_idle(c->idle, &empty);
			continue;
		}
		empty = 0;
		uint64_t t0 = rte_rdtsc(), lookup = 0;
		unsigned nd = 0;
		/* the first group's input: the batch from the previous stage, or the requests'
		 * model inputs gathered into the group's own buffer (stage 1) */
		struct fz_batch *ib = NULL, *ob = NULL;
		float *in = fz_group_input(segs[0].g);
		if (s->in_pool) {
			ib = batch_take(&stash, s->in_pool, (unsigned)c->max_batch);
			n = ib->n;
			memcpy(batch, ib->reqs, n * sizeof(*batch));
			in = ib->act;
		} else {
			const size_t stride = fz_group_in_layout(segs[0].g).sample_stride;
			for (unsigned i = 0; i < n; i++)
				memcpy(in + i * stride, batch[i]->act, stride * sizeof(float));
		}
		s->st.in += n;
		s->st.batches++;
		s->st.batch_sum += n;

		float *out = NULL;
		struct fz_act_layout ol = {0};
		for (int k = 0; k < nseg && n; k++) {
			struct fz_group *g = segs[k].g;
			out = (float *)fz_group_output(g); /* own, or the next group's input */
			if (k == nseg - 1 && !last) {
				/* the last group writes the next stage's batch */
				ob = batch_get(s->out_pool);
				out = ob->act;
			}
			int rc = seg_run(g, k ? fz_group_input(g) : in, out, n);
			if (ib) {
				/* read: the previous stage may fill it again */
				batch_put(s->in_pool, &ib, 1);
				ib = NULL;
			}
			if (rc < 0) {
				for (unsigned i = 0; i < n; i++) {
					batch[i]->status = FZ_PROTO_R_INTERNAL;
					done[nd++] = batch[i];
				}
				s->st.errors += n;
				n = 0;
				break;
			}
			ol = fz_group_out_layout(g);
			if (!segs[k].sc.cache)
				continue;
			uint64_t tl = rte_rdtsc();
			fz_stage_cache_lookup(&segs[k].sc, cs, out, ol, batch, n, hit);
			/* close the batch up around the exits, in place: it runs on from here */
			const unsigned nd0 = nd;
			const unsigned nk =
				fz_batch_close_up(out, ol.sample_stride, batch, hit, n, done, &nd);
			for (unsigned i = nd0; i < nd; i++)
				done[i]->stage = (uint16_t)s->index;
			s->st.exits_by_layer[segs[k].sc.layer & 63] += n - nk;
			s->st.hits += n - nk;
			n = nk;
			lookup += rte_rdtsc() - tl;
		}
		if (n && last) {
			for (unsigned i = 0; i < n; i++) {
				answer_full_model(batch[i], out + i * ol.sample_stride, ol.c);
				batch[i]->stage = (uint16_t)s->index;
				done[nd++] = batch[i];
			}
			s->st.online_inserts += fz_app_caches_online(cs, batch, n);
			n = 0;
		}
		if (nd) {
			enqueue_all(fz_app.tx_ring, (void **)done, nd, true);
			s->st.answered += nd;
		}
		if (n) {
			ob->n = n;
			memcpy(ob->reqs, batch, n * sizeof(*batch));
			enqueue_all(s->next, (void **)&ob, 1, false); /* room for every batch */
			s->st.out_next += n;
		} else if (ob) {
			batch_put(s->out_pool, &ob, 1); /* all exited at the last cache point */
		}
		if (stall_ms > 0) {
			FZ_LOG(WARNING, "stage '%s': stalling %ld ms (FZ_FAULT_STALL)", c->name, stall_ms);
			rte_delay_us_sleep((unsigned)stall_ms * 1000);
			stall_ms = 0;
		}
		uint64_t busy = rte_rdtsc() - t0;
		s->st.busy_tsc += busy;
		s->st.lookup_tsc += lookup;
		s->st.compute_tsc += busy - lookup;
	}
	fz_app_rcu_offline((unsigned)s->index);
out:
	for (int k = 0; k < nseg; k++) {
		fz_stage_cache_fini(&segs[k].sc);
		fz_group_free(segs[k].g);
	}
	return 0;
}
