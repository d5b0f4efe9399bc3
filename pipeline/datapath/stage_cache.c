/* Stages and caches on the data path: lookups at cache points inside stages, online inserts from
 * the last stage, RCU quiescent points (reloads themselves run on the control thread). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <rte_rcu_qsbr.h>

#include "app_pvt.h"
#include "stage_cache.h"

int fz_app_cache_layer(const struct fz_cache *c)
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
		if (fz_app_cache_layer(cs->caches[i]) == layer)
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
		if (fz_app_cache_layer(cs->caches[i]) < layer)
			off += fz_cache_key_dim(cs->caches[i]);
	return off;
}

size_t fz_app_key_floats(void)
{
	if (!fz_app.caches || !fz_app.cfg.online)
		return 0;
	return (size_t)key_offset(fz_app.caches, fz_app.model->n_layers);
}

void fz_app_rcu_online(unsigned id)
{
	if (fz_app.rcu) {
		rte_rcu_qsbr_thread_register(fz_app.rcu, id);
		rte_rcu_qsbr_thread_online(fz_app.rcu, id);
	}
}

void fz_app_rcu_quiescent(unsigned id)
{
	if (fz_app.rcu)
		rte_rcu_qsbr_quiescent(fz_app.rcu, id);
}

void fz_app_rcu_offline(unsigned id)
{
	if (fz_app.rcu) {
		rte_rcu_qsbr_thread_offline(fz_app.rcu, id);
		rte_rcu_qsbr_thread_unregister(fz_app.rcu, id);
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
