/* Stages and caches: lookups at cache points inside stages, online inserts from the last stage. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "app_pvt.h"
#include "stage_cache.h"

static int layer_of(const struct fz_cache *c)
{
	return fz_model_find_layer(fz_app.model, fz_cache_params(c)->layer);
}

struct fz_cache *fz_app_cache_at(int layer)
{
	struct fz_cache_set *cs = fz_app.caches;
	if (!cs || layer < 0)
		return NULL;
	for (int i = 0; i < cs->n_caches; i++)
		if (layer_of(cs->caches[i]) == layer)
			return cs->caches[i];
	return NULL;
}

/* Keys of caches before `layer` come first in a request's key area. */
static int key_offset(int layer)
{
	int off = 0;
	for (int i = 0; fz_app.caches && i < fz_app.caches->n_caches; i++)
		if (layer_of(fz_app.caches->caches[i]) < layer)
			off += fz_cache_key_dim(fz_app.caches->caches[i]);
	return off;
}

size_t fz_app_key_floats(void)
{
	if (!fz_app.caches || !fz_app.cfg.online)
		return 0;
	return (size_t)key_offset(fz_app.model->n_layers);
}

int fz_app_caches_load(const char *path, char *err, size_t errlen)
{
	fz_app.caches = fz_cache_set_load(path, fz_net_fingerprint(fz_app.net), err, errlen);
	if (!fz_app.caches)
		return -errno;
	for (int i = 0; i < fz_app.caches->n_caches; i++) {
		const struct fz_cache_params *p = fz_cache_params(fz_app.caches->caches[i]);
		if (fz_model_find_layer(fz_app.model, p->layer) < 0) {
			snprintf(err, errlen, "%s: cache for layer '%s', which model %s lacks", path,
				 p->layer, fz_app.model->path);
			fz_app_caches_free();
			return -EINVAL;
		}
	}
	return 0;
}

void fz_app_caches_free(void)
{
	fz_cache_set_free(fz_app.caches);
	fz_app.caches = NULL;
}

int fz_stage_cache_init(struct fz_stage_cache *sc, struct fz_stage_rt *s, int layer)
{
	memset(sc, 0, sizeof(*sc));
	sc->stage = s;
	sc->layer = layer;
	sc->cache = fz_app_cache_at(layer);
	sc->keep_keys = fz_app.cfg.online && sc->cache;
	sc->key_off = key_offset(layer);
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

void fz_stage_cache_lookup(struct fz_stage_cache *sc, const float *tap, struct fz_act_layout lay,
			   struct fz_req **reqs, unsigned n, bool *hit)
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
			}
		}
	}
}

unsigned fz_app_caches_online(struct fz_req **reqs, unsigned n)
{
	unsigned inserts = 0;
	if (!fz_app.caches || !fz_app.cfg.online)
		return 0;
	for (int i = 0; i < fz_app.caches->n_caches; i++) {
		struct fz_cache *c = fz_app.caches->caches[i];
		if (!fz_cache_params(c)->online)
			continue;
		int off = key_offset(layer_of(c));
		for (unsigned j = 0; j < n; j++)
			if (reqs[j]->keys && reqs[j]->status == 0 &&
			    fz_cache_insert(c, reqs[j]->keys + off, reqs[j]->label) == 0)
				inserts++;
	}
	return inserts;
}
