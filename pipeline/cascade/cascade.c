/* The cascade: groups, lookups, close-up, full-model answers and online inserts (fz_cascade.h). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fz_cascade.h"

/* a stage cuts its layers at most at every point of a set: cut groups never exceed the cap */
_Static_assert(FZ_CASCADE_MAX_GROUPS > FZ_CACHE_MAX_POINTS, "groups for every cache point");

struct cgroup {
	struct fz_group *g;
	int first, last;
	struct fz_cache *cache; /* after `last`, or NULL */
	int cache_idx;          /* its index in the set */
	int key_off;            /* its key within a row's key area */
};

struct fz_cascade {
	struct fz_net *net;
	const struct fz_cache_set *cs;
	int n;
	bool final;  /* the range ends at the model's output: the full model answers */
	bool timing, online;
	float min_conf;
	int classes;
	float *keys; /* FZ_CACHE_MAX_BURST keys */
	struct fz_cascade_stats st;
	struct cgroup grp[FZ_CASCADE_MAX_GROUPS];
};

static uint64_t now_ns(const struct fz_cascade *cc)
{
	struct timespec ts;
	if (!cc->timing)
		return 0;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct fz_cascade *fz_cascade_create(struct fz_net *net, int first, int last, const int *cut,
				     int n_cut, int max_batch, char *err, size_t errlen)
{
	const struct fz_model *m = fz_net_model(net);
	if (first < 0 || last < first || last >= m->n_layers || max_batch < 1 ||
	    max_batch > FZ_CASCADE_MAX_BATCH) {
		snprintf(err, errlen, "cascade: layers %d..%d, max_batch %d: out of range", first,
			 last, max_batch);
		errno = EINVAL;
		return NULL;
	}
	struct fz_cascade *cc = calloc(1, sizeof(*cc));
	if (!cc || !(cc->keys = aligned_alloc(64, sizeof(float) * FZ_CACHE_MAX_BURST *
							  FZ_CACHE_MAX_DIM))) {
		fz_cascade_free(cc);
		snprintf(err, errlen, "cascade: out of memory");
		errno = ENOMEM;
		return NULL;
	}
	cc->net = net;
	cc->final = last == m->n_layers - 1;
	cc->classes = m->layers[m->output].out.c;
	int from = first;
	for (int l = first; l <= last; l++) {
		bool at_cut = l == last;
		for (int i = 0; i < n_cut && !at_cut; i++)
			at_cut = cut[i] == l;
		if (!at_cut)
			continue;
		if (cc->n == FZ_CASCADE_MAX_GROUPS) {
			snprintf(err, errlen, "cascade: more than %d layer groups",
				 FZ_CASCADE_MAX_GROUPS);
			fz_cascade_free(cc);
			errno = EINVAL;
			return NULL;
		}
		struct cgroup *cg = &cc->grp[cc->n++];
		cg->first = from;
		cg->last = l;
		cg->cache_idx = -1;
		if (!(cg->g = fz_group_create(net, from, l, max_batch, err, errlen))) {
			int e = errno ? errno : EINVAL;
			fz_cascade_free(cc);
			errno = e;
			return NULL;
		}
		from = l + 1;
	}
	/* a batch passes from group to group in place */
	for (int k = 1; k < cc->n; k++) {
		struct fz_act_layout a = fz_group_out_layout(cc->grp[k - 1].g);
		struct fz_act_layout b = fz_group_in_layout(cc->grp[k].g);
		int rc = fz_layout_equal(&a, &b) ? fz_group_bind(cc->grp[k].g,
				(float *)fz_group_output(cc->grp[k - 1].g), NULL) : -EINVAL;
		if (rc < 0) {
			snprintf(err, errlen, "cascade: group %d (%s, %zu floats) cannot read group "
				 "%d's output (%s, %zu floats): %s", k, b.tag, b.sample_stride, k - 1,
				 a.tag, a.sample_stride, strerror(-rc));
			fz_cascade_free(cc);
			errno = -rc;
			return NULL;
		}
	}
	return cc;
}

void fz_cascade_free(struct fz_cascade *cc)
{
	if (!cc)
		return;
	for (int k = 0; k < cc->n; k++)
		fz_group_free(cc->grp[k].g);
	free(cc->keys);
	free(cc);
}

int fz_cascade_groups(const struct fz_cascade *cc) { return cc->n; }
struct fz_group *fz_cascade_group(const struct fz_cascade *cc, int k) { return cc->grp[k].g; }
int fz_cascade_group_first(const struct fz_cascade *cc, int k) { return cc->grp[k].first; }
int fz_cascade_group_last(const struct fz_cascade *cc, int k) { return cc->grp[k].last; }
struct fz_cache *fz_cascade_cache(const struct fz_cascade *cc, int k) { return cc->grp[k].cache; }
float *fz_cascade_input(struct fz_cascade *cc) { return fz_group_input(cc->grp[0].g); }

struct fz_act_layout fz_cascade_in_layout(const struct fz_cascade *cc)
{
	return fz_group_in_layout(cc->grp[0].g);
}

struct fz_act_layout fz_cascade_out_layout(const struct fz_cascade *cc)
{
	return fz_group_out_layout(cc->grp[cc->n - 1].g);
}

int fz_cascade_use_caches(struct fz_cascade *cc, const struct fz_cache_set *cs, char *err,
			  size_t errlen)
{
	const struct fz_model *m = fz_net_model(cc->net);
	for (int k = 0; k < cc->n; k++) {
		struct cgroup *cg = &cc->grp[k];
		cg->cache = NULL;
		cg->cache_idx = -1;
		cg->key_off = 0;
		for (int i = 0; cs && i < cs->n_caches; i++) {
			int l = fz_model_find_layer(m, fz_cache_params(cs->caches[i])->layer);
			if (l < cg->last)
				cg->key_off += fz_cache_key_dim(cs->caches[i]);
			/* no cache answers after the model's last layer */
			if (l == cg->last && l != m->n_layers - 1) {
				cg->cache = cs->caches[i];
				cg->cache_idx = i;
			}
		}
		if (cg->cache) {
			struct fz_act_layout lay = fz_group_out_layout(cg->g);
			char why[512];
			if (fz_cache_layout_check(cg->cache, &lay, why, sizeof(why)) < 0) {
				snprintf(err, errlen, "cache on '%s': %s", m->layers[cg->last].name,
					 why);
				return -EINVAL;
			}
		}
	}
	cc->cs = cs;
	return 0;
}

void fz_cascade_online(struct fz_cascade *cc, bool on, float min_confidence)
{
	cc->online = on;
	cc->min_conf = min_confidence;
}

size_t fz_cascade_key_floats(const struct fz_cache_set *cs)
{
	size_t n = 0;
	for (int i = 0; cs && i < cs->n_caches; i++)
		n += (size_t)fz_cache_key_dim(cs->caches[i]);
	return n;
}

void fz_cascade_timing(struct fz_cascade *cc, bool on) { cc->timing = on; }
const struct fz_cascade_stats *fz_cascade_stats(const struct fz_cascade *cc) { return &cc->st; }

int fz_cascade_argmax_conf(const float *logits, int classes, float *conf)
{
	int best = fz_argmax(logits, classes);
	double sum = 0;
	for (int c = 0; c < classes; c++)
		sum += exp((double)logits[c] - logits[best]);
	*conf = (float)(1.0 / sum); /* softmax probability of the answer */
	return best;
}

/* Run group g on n rows of `in` into `out`, binding it first where they are not its buffers. */
static int group_run(struct fz_group *g, float *in, float *out, unsigned n)
{
	int rc = 0;
	if (in != fz_group_input(g) || out != fz_group_output(g))
		rc = fz_group_bind(g, in, out); /* a few pointer updates per batch size */
	return rc < 0 ? rc : fz_group_run(g, (int)n);
}

/* Look up n rows' taps after group k: hit[i] set and the exit appended; misses keep keys. */
static void lookup(struct fz_cascade *cc, int k, const struct fz_cascade_run *run,
		   const float *tap, const struct fz_act_layout *lay,
		   struct fz_cascade_row *rows, unsigned n, bool *hit, struct fz_cache_result *all)
{
	struct cgroup *cg = &cc->grp[k];
	const int dim = fz_cache_key_dim(cg->cache);
	for (unsigned base = 0; base < n; base += FZ_CACHE_MAX_BURST) {
		unsigned m = n - base < FZ_CACHE_MAX_BURST ? n - base : FZ_CACHE_MAX_BURST;
		const float *t = tap + base * lay->sample_stride;
		struct fz_cache_result *res = all + base;
		if (fz_cache_key_burst(cg->cache, t, lay, (int)m, cc->keys) < 0 ||
		    fz_cache_lookup_keys(cg->cache, cc->keys, (int)m, res) < 0) {
			/* a failed lookup is a miss: the full model answers, no keys are kept */
			cc->st.lookup_errors++;
			for (unsigned i = 0; i < m; i++) {
				res[i] = (struct fz_cache_result){FZ_CACHE_LABEL_NONE, 0, false, -1};
				hit[base + i] = false;
				if (rows[base + i].keys_set) /* a key missing: never inserted */
					*rows[base + i].keys_set = FZ_CASCADE_KEYS_MIXED;
			}
			if (run->lookup)
				run->lookup(run->arg, cg->cache_idx, rows + base, res, m);
			continue;
		}
		if (run->lookup)
			run->lookup(run->arg, cg->cache_idx, rows + base, res, m);
		for (unsigned i = 0; i < m; i++) {
			struct fz_cascade_row *r = &rows[base + i];
			hit[base + i] = res[i].hit && !run->no_exit && !r->shadow;
			if (hit[base + i] || !cc->online || !r->keys)
				continue;
			memcpy(r->keys + cg->key_off, cc->keys + (size_t)i * dim,
			       dim * sizeof(float));
			/* keys from two snapshots (a reload in between) are never inserted */
			if (!r->keys_set)
				continue;
			if (!*r->keys_set)
				*r->keys_set = cc->cs;
			else if (*r->keys_set != cc->cs)
				*r->keys_set = FZ_CASCADE_KEYS_MIXED;
		}
	}
}

unsigned fz_cascade_close_up(float *act, size_t stride, struct fz_cascade_row *rows,
			     const bool *hit, unsigned n,
			     void (*on_exit)(void *arg, unsigned idx, const struct fz_cascade_row *row),
			     void *arg)
{
	unsigned lo = 0, hi = n; /* [0, lo) survivors, [hi, n) decided */
	for (;;) {
		while (lo < hi && !hit[lo])
			lo++;
		while (hi > lo && hit[hi - 1]) {
			hi--;
			on_exit(arg, hi, &rows[hi]);
		}
		if (lo == hi)
			return lo;
		/* hit[lo] and !hit[hi - 1], lo < hi - 1: the last survivor fills the hole (an exit
		 * is decided where it was: a row only moves once it is known to survive) */
		on_exit(arg, lo, &rows[lo]);
		hi--;
		memcpy(act + lo * stride, act + hi * stride, stride * sizeof(float));
		rows[lo++] = rows[hi];
	}
}

/* fz_cascade_close_up's exits of one cache point become answers. */
struct exits_to_answers {
	const struct cgroup *cg;
	const struct fz_cache_result *res;
	struct fz_cascade_answer *ans;
	unsigned *nans;
};

static void answer_exit(void *arg, unsigned idx, const struct fz_cascade_row *row)
{
	struct exits_to_answers *x = arg;
	x->ans[(*x->nans)++] = (struct fz_cascade_answer){
		.user = row->user, .label = x->res[idx].label, .confidence = x->res[idx].conf,
		.src = fz_answer_layer(x->cg->last), .cache = x->cg->cache_idx};
}

/* The full model answers n rows of logits; online caches take the sure ones. */
static void answer_full(struct fz_cascade *cc, const float *out, size_t stride,
			const struct fz_cascade_row *rows, unsigned n,
			struct fz_cascade_answer *ans, unsigned *nans)
{
	struct fz_cascade_answer *a = ans + *nans;
	for (unsigned i = 0; i < n; i++) {
		a[i].user = rows[i].user;
		a[i].label = fz_cascade_argmax_conf(out + i * stride, cc->classes, &a[i].confidence);
		a[i].src = fz_answer_of(FZ_ANSWERED_FULL);
		a[i].cache = -1;
	}
	*nans += n;
	if (!cc->online || !cc->cs)
		return;
	/* caches are in model order, so each one's key follows the previous ones' */
	const struct fz_cache_set *cs = cc->cs;
	for (int c = 0, off = 0; c < cs->n_caches; off += fz_cache_key_dim(cs->caches[c]), c++) {
		struct fz_cache *ca = cs->caches[c];
		if (!fz_cache_params(ca)->online)
			continue;
		for (unsigned i = 0; i < n; i++)
			if (rows[i].keys && rows[i].keys_set && *rows[i].keys_set == cs &&
			    a[i].confidence >= cc->min_conf &&
			    fz_cache_insert(ca, rows[i].keys + off, a[i].label) == 0)
				cc->st.online_inserts++;
	}
}

int fz_cascade_run(struct fz_cascade *cc, const struct fz_cascade_run *run,
		   struct fz_cascade_row *rows, unsigned *np, struct fz_cascade_answer *ans,
		   unsigned *nans)
{
	static const struct fz_cascade_run none;
	bool hit[FZ_CASCADE_MAX_BATCH];
	struct fz_cache_result res[FZ_CASCADE_MAX_BATCH];
	unsigned n = *np;
	if (!run)
		run = &none;
	if (n > (unsigned)fz_group_max_batch(cc->grp[0].g))
		return -EINVAL;
	float *in = run->in ? run->in : fz_group_input(cc->grp[0].g);
	float *out = NULL;
	int rc = 0;
	for (int k = 0; k < cc->n && n; k++) {
		struct cgroup *cg = &cc->grp[k];
		out = (float *)fz_group_output(cg->g); /* own, or the next group's input */
		if (k == cc->n - 1 && (run->out || run->out_get))
			out = run->out ? run->out : run->out_get(run->arg);
		uint64_t t0 = now_ns(cc);
		rc = group_run(cg->g, k ? fz_group_input(cg->g) : in, out, n);
		if (k == 0 && run->in_done)
			run->in_done(run->arg);
		uint64_t t1 = now_ns(cc);
		cc->st.group_ns[k] += t1 - t0;
		if (rc < 0)
			break;
		const struct fz_act_layout lay = fz_group_out_layout(cg->g);
		if (run->tap)
			run->tap(run->arg, k, out, &lay, rows, n);
		if (k == cc->n - 1 && cc->final) {
			answer_full(cc, out, lay.sample_stride, rows, n, ans, nans);
			n = 0;
			break;
		}
		/* a cache switched off answers nothing: no lookup, unless someone wants its answers
		 * (eval's every-cache pass) or it keeps keys for online inserts */
		if (!cg->cache || (!fz_cache_enabled(cg->cache) && !run->lookup &&
				   !fz_cache_params(cg->cache)->online))
			continue;
		lookup(cc, k, run, out, &lay, rows, n, hit, res);
		struct exits_to_answers x = {cg, res, ans, nans};
		unsigned looked = n;
		for (unsigned i = 0; i < n; i++)
			looked -= rows[i].shadow;
		const unsigned before = n;
		n = fz_cascade_close_up(out, lay.sample_stride, rows, hit, n, answer_exit, &x);
		cc->st.lookups[k] += looked;
		cc->st.hits[k] += before - n;
		cc->st.lookup_ns[k] += now_ns(cc) - t1;
	}
	*np = n;
	return rc < 0 ? rc : 0;
}
