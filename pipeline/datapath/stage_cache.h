/* The data path's caches: the snapshot stages look up in (swapped by reloads, read under RCU)
 * and the key area a request carries for online inserts; the lookups and inserts themselves
 * are the cascade's (pipeline/cascade/). Private to the appliance. */
#ifndef FZ_STAGE_CACHE_H
#define FZ_STAGE_CACHE_H

#include <stdbool.h>

#include "fz_cache.h"
#include "fz_model.h"

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

/* Floats of cache keys a request carries (0 without online updates): fz_cascade_key_floats. */
size_t fz_app_key_floats(void);

#endif /* FZ_STAGE_CACHE_H */
