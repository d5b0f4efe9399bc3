/* Stage lcore: its layers as layer groups split at cache points; after each group the cache
 * answers what it can, the batch closes up around the exits, and the rest runs on. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_lcore.h>

#include "app_pvt.h"
#include "cmd.h"
#include "fz_proto.h"
#include "stage_cache.h"

#define MAX_SEGS 64

struct seg {
	struct fz_group *g;
	struct fz_stage_cache sc; /* the cache after the group's last layer */
};

/* Hand requests to a ring, waiting while it is full: the pipeline behind RX is lossless, so
 * back-pressure reaches the RX ring, where overload is answered with an error. */
static void enqueue_all(struct rte_ring *r, struct fz_req **reqs, unsigned n, bool mp)
{
	unsigned done = 0, spins = 0;
	while (done < n) {
		done += mp ? rte_ring_mp_enqueue_burst(r, (void **)reqs + done, n - done, NULL)
			   : rte_ring_sp_enqueue_burst(r, (void **)reqs + done, n - done, NULL);
		if (done < n)
			fz_idle(FZ_IDLE_YIELD, &spins);
	}
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
	return 0;
}

int fz_lcore_stage(void *arg)
{
	struct fz_stage_rt *s = arg;
	const struct fz_stage_cfg *c = s->cfg;
	const bool last = s->next == NULL;
	static __thread struct fz_req *batch[FZ_STAGE_MAX_BATCH], *keep[FZ_STAGE_MAX_BATCH],
		*done[FZ_STAGE_MAX_BATCH];
	static __thread bool hit[FZ_STAGE_MAX_BATCH];
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
		unsigned n = rte_ring_sc_dequeue_burst(s->in, (void **)batch, c->max_batch, NULL);
		const struct fz_cache_set *cs = fz_app_caches_current();
		if (cs != seen) {
			/* a reload swapped the snapshot: same layers and key sizes, new entries */
			for (int k = 0; k < nseg; k++)
				if (segs[k].sc.cache)
					segs[k].sc.cache = fz_app_cache_in(cs, segs[k].sc.layer);
			seen = cs;
		}
		if (n == 0) {
			/* pairs with RX's release store once every request is answered */
			if (atomic_load_explicit(&fz_app.stop_all, memory_order_acquire) &&
			    rte_ring_empty(s->in))
				break;
			fz_idle(c->idle, &empty);
			continue;
		}
		empty = 0;
		uint64_t t0 = rte_rdtsc(), lookup = 0;
		unsigned nd = 0;
		s->st.in += n;
		s->st.batches++;
		s->st.batch_sum += n;

		/* gather the requests' activations into the first group's batch */
		struct fz_act_layout il = fz_group_in_layout(segs[0].g);
		float *in = fz_group_input(segs[0].g);
		for (unsigned i = 0; i < n; i++)
			memcpy(in + i * il.sample_stride, batch[i]->act,
			       il.sample_stride * sizeof(float));
		const float *out = NULL;
		struct fz_act_layout ol = il;
		for (int k = 0; k < nseg && n; k++) {
			if (fz_group_run(segs[k].g, (int)n) < 0) {
				for (unsigned i = 0; i < n; i++) {
					batch[i]->status = FZ_PROTO_R_INTERNAL;
					done[nd++] = batch[i];
				}
				s->st.errors += n;
				n = 0;
				break;
			}
			out = fz_group_output(segs[k].g);
			ol = fz_group_out_layout(segs[k].g);
			float *dst = k + 1 < nseg ? fz_group_input(segs[k + 1].g) : NULL;
			if (!segs[k].sc.cache) {
				if (dst)
					memcpy(dst, out, n * ol.sample_stride * sizeof(float));
				continue;
			}
			uint64_t tl = rte_rdtsc();
			fz_stage_cache_lookup(&segs[k].sc, cs, out, ol, batch, n, hit);
			/* close the batch up around the exits: survivors' taps go straight into
			 * the next group's input (or stay in this output for the next stage) */
			unsigned nk = 0;
			for (unsigned i = 0; i < n; i++) {
				if (hit[i]) {
					batch[i]->stage = (uint16_t)s->index;
					s->st.exits_by_layer[segs[k].sc.layer & 63]++;
					done[nd++] = batch[i];
					continue;
				}
				if (dst)
					memcpy(dst + nk * ol.sample_stride, out + i * ol.sample_stride,
					       ol.sample_stride * sizeof(float));
				else if (nk != i)
					memmove((float *)out + nk * ol.sample_stride,
						out + i * ol.sample_stride,
						ol.sample_stride * sizeof(float));
				keep[nk++] = batch[i];
			}
			s->st.hits += n - nk;
			memcpy(batch, keep, nk * sizeof(*batch));
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
			enqueue_all(fz_app.tx_ring, done, nd, true);
			s->st.answered += nd;
		}
		if (n) {
			for (unsigned i = 0; i < n; i++)
				memcpy(batch[i]->act, out + i * ol.sample_stride,
				       ol.sample_stride * sizeof(float));
			enqueue_all(s->next, batch, n, false);
			s->st.out_next += n;
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
