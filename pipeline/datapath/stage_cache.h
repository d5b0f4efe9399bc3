/* The data path's caches: what a stage consults between its layer groups, and the online updates
 * the last stage feeds (the bridge between stage lcores and cachecore). Private to the appliance. */
#ifndef FZ_STAGE_CACHE_H
#define FZ_STAGE_CACHE_H

#include <stdbool.h>

#include "fz_cache.h"
#include "fz_model.h"

#define FZ_STAGE_MAX_BATCH 1024

struct fz_req;
struct fz_stage_rt;

/* One cache point: the cache after model layer `layer`. */
struct fz_stage_cache {
	struct fz_stage_rt *stage;
	struct fz_cache *cache; /* NULL: no cache here (caches off, or none at this layer) */
	int layer;
	int key_off;            /* this cache's key within a request's key area */
	bool keep_keys;         /* online updates: keep the keys of misses */
	float *keys;            /* FZ_CACHE_MAX_BURST keys */
	struct fz_cache_result *res;
};

/* The snapshot stages use now (acquire load; readers hold it until their next quiescent point). */
struct fz_cache_set *fz_app_caches_current(void);
/* The cache after model layer `layer` in cs (or in the current set), or NULL. */
struct fz_cache *fz_app_cache_in(const struct fz_cache_set *cs, int layer);
struct fz_cache *fz_app_cache_at(int layer);

/* The model layer a cache sits after. */
int fz_app_cache_layer(const struct fz_cache *c);
/* Stage lcores: RCU reader registration and quiescent points (between batches). */
void fz_app_rcu_online(unsigned id);
void fz_app_rcu_quiescent(unsigned id);
void fz_app_rcu_offline(unsigned id);

/* Floats of cache keys a request carries (0 without online updates). */
size_t fz_app_key_floats(void);

int fz_stage_cache_init(struct fz_stage_cache *sc, struct fz_stage_rt *s, int layer);
void fz_stage_cache_fini(struct fz_stage_cache *sc);

/* Look up n requests' taps; hit[i] set and the request answered (label, confidence, exit). */
void fz_stage_cache_lookup(struct fz_stage_cache *sc, const struct fz_cache_set *cs,
			   const float *tap, struct fz_act_layout lay, struct fz_req **reqs,
			   unsigned n, bool *hit);

/* Last stage: insert the full model's answers into every online cache (the lcore running this
 * is the caches' only writer). Returns the number of inserts. */
unsigned fz_app_caches_online(const struct fz_cache_set *cs, struct fz_req **reqs, unsigned n);

#endif /* FZ_STAGE_CACHE_H */
