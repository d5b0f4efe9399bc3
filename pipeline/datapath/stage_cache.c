/* Stages and caches on the data path: the snapshot in use, the key area of a request, RCU
 * quiescent points (reloads themselves run on the control thread; lookups and inserts are the
 * cascade's). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <rte_rcu_qsbr.h>

#include "app_pvt.h"
#include "fz_cascade.h"
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

size_t fz_app_key_floats(void)
{
	/* Taken once, at start-up (control/appliance.c reqs_init, before any lcore runs): a
	 * reload keeps every cache's key size (control/reload.c same_shape), and the lcores that
	 * ask later (RX, TX for shadows) are no RCU readers of the set, so they must not walk it. */
	static size_t n = SIZE_MAX;
	if (n == SIZE_MAX)
		n = fz_app.caches && fz_app.cfg.online ? fz_cascade_key_floats(fz_app.caches) : 0;
	return n;
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
