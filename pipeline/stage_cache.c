/* Stages and caches: lookups at cache points inside stages, online inserts from the last stage,
 * and hot reload: a new snapshot is swapped in with an atomic pointer store and the old one freed
 * after every stage has passed a quiescent point (rte_rcu_qsbr). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <rte_malloc.h>
#include <rte_rcu_qsbr.h>

#include "app_pvt.h"
#include "stage_cache.h"

static struct rte_rcu_qsbr *qsv;          /* readers: the stage lcores, thread id = index */
static struct fz_cache_set *retired;      /* the set replaced by the last reload */
static uint64_t retired_token;

static int layer_of(const struct fz_cache *c)
{
	return fz_model_find_layer(fz_app.model, fz_cache_params(c)->layer);
}

struct fz_cache_set *fz_app_caches_current(void)
{
	/* pairs with the release store in fz_app_caches_reload() */
	return __atomic_load_n(&fz_app.caches, __ATOMIC_ACQUIRE);
}

struct fz_cache *fz_app_cache_in(const struct fz_cache_set *cs, int layer)
{
	if (!cs || layer < 0)
		return NULL;
	for (int i = 0; i < cs->n_caches; i++)
		if (layer_of(cs->caches[i]) == layer)
			return cs->caches[i];
	return NULL;
}

struct fz_cache *fz_app_cache_at(int layer)
{
	return fz_app_cache_in(fz_app_caches_current(), layer);
}

/* Keys of caches before `layer` come first in a request's key area. */
static int key_offset(const struct fz_cache_set *cs, int layer)
{
	int off = 0;
	for (int i = 0; cs && i < cs->n_caches; i++)
		if (layer_of(cs->caches[i]) < layer)
			off += fz_cache_key_dim(cs->caches[i]);
	return off;
}

size_t fz_app_key_floats(void)
{
	if (!fz_app.caches || !fz_app.cfg.online)
		return 0;
	return (size_t)key_offset(fz_app.caches, fz_app.model->n_layers);
}

static struct fz_cache_set *load_checked(const char *path, char *err, size_t errlen)
{
	struct fz_cache_set *cs = fz_cache_set_load(path, fz_net_fingerprint(fz_app.net), err, errlen);
	if (!cs)
		return NULL;
	for (int i = 0; i < cs->n_caches; i++) {
		const struct fz_cache_params *p = fz_cache_params(cs->caches[i]);
		int layer = fz_model_find_layer(fz_app.model, p->layer);
		if (layer < 0) {
			snprintf(err, errlen, "%s: cache for layer '%s', which model %s lacks", path,
				 p->layer, fz_app.model->path);
			fz_cache_set_free(cs);
			errno = EINVAL;
			return NULL;
		}
		/* the tap's layout is what oneDNN chose on this CPU: refuse one the cache cannot
		 * read now, not as silent misses on the data path */
		struct fz_act_layout lay = fz_net_layout(fz_app.net, layer);
		char why[384];
		if (fz_cache_layout_check(cs->caches[i], &lay, why, sizeof(why)) < 0) {
			snprintf(err, errlen, "%s: layer '%s': %s", path, p->layer, why);
			fz_cache_set_free(cs);
			errno = EINVAL;
			return NULL;
		}
	}
	return cs;
}

int fz_app_caches_load(const char *path, char *err, size_t errlen)
{
	fz_app.caches = load_checked(path, err, errlen);
	if (!fz_app.caches)
		return -errno;
	size_t sz = rte_rcu_qsbr_get_memsize(FZ_MAX_STAGES);
	qsv = rte_zmalloc("fz_rcu", sz, RTE_CACHE_LINE_SIZE);
	if (!qsv || rte_rcu_qsbr_init(qsv, FZ_MAX_STAGES) != 0) {
		snprintf(err, errlen, "cannot set up RCU for cache reloads");
		return -ENOMEM;
	}
	return 0;
}

void fz_app_caches_free(void)
{
	fz_cache_set_free(retired);
	retired = NULL;
	fz_cache_set_free(fz_app.caches);
	fz_app.caches = NULL;
	rte_free(qsv);
	qsv = NULL;
}

/* Same cache layers and key sizes: stages' layer groups are split at the cache layers and
 * requests carry keys of these sizes, so a snapshot that changes them needs a restart. */
static bool same_shape(const struct fz_cache_set *a, const struct fz_cache_set *b)
{
	if (a->n_caches != b->n_caches)
		return false;
	for (int i = 0; i < a->n_caches; i++)
		if (layer_of(a->caches[i]) != layer_of(b->caches[i]) ||
		    fz_cache_key_dim(a->caches[i]) != fz_cache_key_dim(b->caches[i]))
			return false;
	return true;
}

int fz_app_caches_reload(char *err, size_t errlen)
{
	const char *path = fz_app.cfg.cache_path;
	if (!fz_app.caches) {
		snprintf(err, errlen, "caches are off: nothing to reload");
		return -EINVAL;
	}
	if (retired) {
		/* one reload at a time: wait out the previous grace period */
		rte_rcu_qsbr_check(qsv, retired_token, true);
		fz_cache_set_free(retired);
		retired = NULL;
	}
	struct fz_cache_set *cs = load_checked(path, err, errlen);
	if (!cs)
		return -errno;
	if (!same_shape(cs, fz_app.caches)) {
		snprintf(err, errlen, "%s: its caches sit on other layers or have other key sizes "
				      "than the running ones; restart to use it", path);
		fz_cache_set_free(cs);
		return -EINVAL;
	}
	struct fz_cache_set *old = fz_app.caches;
	/* pairs with the acquire load in fz_app_caches_current() */
	__atomic_store_n(&fz_app.caches, cs, __ATOMIC_RELEASE);
	retired = old;
	retired_token = rte_rcu_qsbr_start(qsv);
	return 0;
}

void fz_app_caches_poll(void)
{
	if (retired && rte_rcu_qsbr_check(qsv, retired_token, false) == 1) {
		fz_cache_set_free(retired);
		retired = NULL;
	}
}

void fz_app_rcu_online(unsigned id)
{
	if (qsv) {
		rte_rcu_qsbr_thread_register(qsv, id);
		rte_rcu_qsbr_thread_online(qsv, id);
	}
}

void fz_app_rcu_quiescent(unsigned id)
{
	if (qsv)
		rte_rcu_qsbr_quiescent(qsv, id);
}

void fz_app_rcu_offline(unsigned id)
{
	if (qsv) {
		rte_rcu_qsbr_thread_offline(qsv, id);
		rte_rcu_qsbr_thread_unregister(qsv, id);
	}
}

int fz_stage_cache_init(struct fz_stage_cache *sc, struct fz_stage_rt *s, int layer)
{
	memset(sc, 0, sizeof(*sc));
	sc->stage = s;
	sc->layer = layer;
	sc->cache = fz_app_cache_at(layer);
	sc->keep_keys = fz_app.cfg.online && sc->cache;
	sc->key_off = key_offset(fz_app.caches, layer);
	if (!sc->cache)
		return 0;
	sc->keys = aligned_alloc(64, sizeof(float) * FZ_CACHE_MAX_BURST * FZ_CACHE_MAX_DIM);
	sc->res = calloc(FZ_CACHE_MAX_BURST, sizeof(*sc->res));
	return sc->keys && sc->res ? 0 : -ENOMEM;
}

void fz_stage_cache_fini(struct fz_stage_cache *sc)
{
	free(sc->keys);
	free(sc->res);
	sc->keys = NULL;
	sc->res = NULL;
}

void fz_stage_cache_lookup(struct fz_stage_cache *sc, const struct fz_cache_set *cs,
			   const float *tap, struct fz_act_layout lay, struct fz_req **reqs,
			   unsigned n, bool *hit)
{
	memset(hit, 0, n * sizeof(*hit));
	if (!sc->cache)
		return;
	const int dim = fz_cache_key_dim(sc->cache);
	for (unsigned base = 0; base < n; base += FZ_CACHE_MAX_BURST) {
		unsigned m = n - base < FZ_CACHE_MAX_BURST ? n - base : FZ_CACHE_MAX_BURST;
		const float *t = tap + base * lay.sample_stride;
		if (fz_cache_key_burst(sc->cache, t, &lay, (int)m, sc->keys) < 0 ||
		    fz_cache_lookup_keys(sc->cache, sc->keys, (int)m, sc->res) < 0)
			return; /* a failed lookup is a miss: the full model answers */
		for (unsigned i = 0; i < m; i++) {
			struct fz_req *rq = reqs[base + i];
			if (sc->res[i].hit) {
				hit[base + i] = true;
				rq->label = (int16_t)sc->res[i].label;
				rq->confidence = sc->res[i].conf;
				rq->exit_layer = (uint16_t)sc->layer;
				rq->status = 0;
			} else if (sc->keep_keys && rq->keys) {
				memcpy(rq->keys + sc->key_off, sc->keys + (size_t)i * dim,
				       dim * sizeof(float));
				/* keys from two snapshots (a reload in between) are never inserted */
				if (!rq->keys_set)
					rq->keys_set = cs;
				else if (rq->keys_set != cs)
					rq->keys_set = FZ_KEYS_MIXED;
			}
		}
	}
}

unsigned fz_app_caches_online(const struct fz_cache_set *cs, struct fz_req **reqs, unsigned n)
{
	unsigned inserts = 0;
	if (!cs || !fz_app.cfg.online)
		return 0;
	/* caches are in model order, so each one's key follows the previous ones' (key_offset) */
	for (int i = 0, off = 0; i < cs->n_caches; off += fz_cache_key_dim(cs->caches[i]), i++) {
		struct fz_cache *c = cs->caches[i];
		if (!fz_cache_params(c)->online)
			continue;
		for (unsigned j = 0; j < n; j++)
			if (reqs[j]->keys && reqs[j]->status == 0 && reqs[j]->keys_set == cs &&
			    reqs[j]->confidence >= fz_app.cfg.online_min_confidence &&
			    fz_cache_insert(c, reqs[j]->keys + off, reqs[j]->label) == 0)
				inserts++;
	}
	return inserts;
}
