/* The control thread: cache snapshots loaded, verified and swapped in off the data path; the
 * replaced sets retired through DPDK's RCU defer queue once every stage has been quiescent. */
/* rte_rcu_qsbr_dq_* is still marked experimental in DPDK 22.11 (stable since 20.05 in use) */
#define ALLOW_EXPERIMENTAL_API 1

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_malloc.h>
#include <rte_rcu_qsbr.h>

#include "app_pvt.h"
#include "fz_control.h"
#include "port_stats.h"
#include "stage_cache.h"
#include "verify_ctl.h"

#define FZ_RETIRE_SLOTS 8 /* sets waiting for their grace period; a reload waits for room */

static struct rte_rcu_qsbr_dq *dq; /* retired sets, freed after a grace period */
static pthread_t control_tid;
static atomic_bool control_stop;
static bool control_running;

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

/* rte_rcu_qsbr_dq's free callback: n retired sets, every reader past them. */
/* Held while a retired set may be freed, and by telemetry while it reads the current set's
 * caches (it is no RCU reader): a set is never freed under a reader's feet. */
static pthread_mutex_t free_mu = PTHREAD_MUTEX_INITIALIZER;

void fz_app_caches_read_lock(void)
{
	pthread_mutex_lock(&free_mu);
}

void fz_app_caches_read_unlock(void)
{
	pthread_mutex_unlock(&free_mu);
}

static void retire_free(void *p, void *e, unsigned int n)
{
	(void)p;
	struct fz_cache_set **sets = e;
	for (unsigned i = 0; i < n; i++)
		fz_cache_set_free(sets[i]);
}

int fz_app_caches_load(const char *path, char *err, size_t errlen)
{
	fz_app.caches = load_checked(path, err, errlen);
	if (!fz_app.caches)
		return -errno;
	size_t sz = rte_rcu_qsbr_get_memsize(FZ_MAX_STAGES);
	fz_app.rcu = rte_zmalloc("fz_rcu", sz, RTE_CACHE_LINE_SIZE);
	if (!fz_app.rcu || rte_rcu_qsbr_init(fz_app.rcu, FZ_MAX_STAGES) != 0) {
		snprintf(err, errlen, "cannot set up RCU for cache reloads");
		return -ENOMEM;
	}
	struct rte_rcu_qsbr_dq_parameters dp = {
		.name = "fz_retired_caches",
		.size = FZ_RETIRE_SLOTS,
		.esize = sizeof(struct fz_cache_set *),
		.trigger_reclaim_limit = 0, /* reclaim on every enqueue */
		.max_reclaim_size = FZ_RETIRE_SLOTS,
		.free_fn = retire_free,
		.v = fz_app.rcu,
	};
	if (!(dq = rte_rcu_qsbr_dq_create(&dp))) {
		snprintf(err, errlen, "cannot set up the RCU defer queue for cache reloads: %s",
			 rte_strerror(rte_errno));
		return -ENOMEM;
	}
	return 0;
}

void fz_app_caches_free(void)
{
	pthread_mutex_lock(&free_mu);
	if (dq) /* every stage is offline by now: frees whatever still waits */
		rte_rcu_qsbr_dq_delete(dq);
	dq = NULL;
	fz_cache_set_free(fz_app.caches);
	fz_app.caches = NULL;
	pthread_mutex_unlock(&free_mu);
	rte_free(fz_app.rcu);
	fz_app.rcu = NULL;
}

/* Same cache layers and key sizes: stages' layer groups are split at the cache layers and
 * requests carry keys of these sizes, so a snapshot that changes them needs a restart. */
static bool same_shape(const struct fz_cache_set *a, const struct fz_cache_set *b)
{
	if (a->n_caches != b->n_caches)
		return false;
	for (int i = 0; i < a->n_caches; i++)
		if (fz_app_cache_layer(a->caches[i]) != fz_app_cache_layer(b->caches[i]) ||
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
	/* the defer queue frees `old` once every stage has passed a quiescent point; when it is
	 * full of sets still in their grace period, wait for one to be reclaimed */
	/* the front tiers' answers came from the old caches: RX forgets them */
	atomic_fetch_add_explicit(&fz_app.front_epoch, 1, memory_order_release);
	for (;;) {
		pthread_mutex_lock(&free_mu);
		int full = rte_rcu_qsbr_dq_enqueue(dq, &old) != 0;
		if (full)
			rte_rcu_qsbr_dq_reclaim(dq, FZ_RETIRE_SLOTS, NULL, NULL, NULL);
		pthread_mutex_unlock(&free_mu);
		if (!full)
			break;
		struct timespec ts = {0, 1000000};
		nanosleep(&ts, NULL);
	}
	return 0;
}

/* Self-checking's decisions, reload on request (SIGHUP, /freeze/reload), reclaim retired sets;
 * never on a data-path lcore. In this order: the self-check samples tagged with a set are
 * taken before a set allocated later can reuse its address (verify_ctl.c). */
static void *control_main(void *arg)
{
	(void)arg;
	while (!atomic_load_explicit(&control_stop, memory_order_acquire)) {
		fz_verify_ctl_poll();
		fz_port_stats_poll(); /* losses before RX, live (a few times a second) */
		if (atomic_exchange(&fz_app.reload, false)) {
			char err[512];
			if (fz_app_caches_reload(err, sizeof(err)) == 0) {
				fz_app.reloads++;
				FZ_LOG(INFO, "reloaded the cache snapshot %s", fz_app.cfg.cache_path);
			} else {
				fz_app.reload_failures++;
				FZ_LOG(ERR, "reload refused, the running caches stay: %s", err);
			}
		}
		if (dq) {
			pthread_mutex_lock(&free_mu);
			rte_rcu_qsbr_dq_reclaim(dq, FZ_RETIRE_SLOTS, NULL, NULL, NULL);
			pthread_mutex_unlock(&free_mu);
		}
		struct timespec ts = {0, 2000000}; /* 2 ms: a reload request waits at most that */
		nanosleep(&ts, NULL);
	}
	return NULL;
}

int fz_control_start(void)
{
	atomic_store(&control_stop, false);
	int rc = pthread_create(&control_tid, NULL, control_main, NULL);
	if (rc)
		return -rc;
	pthread_setname_np(control_tid, "fz-control");
	control_running = true;
	return 0;
}

void fz_control_stop(void)
{
	if (!control_running)
		return;
	/* pairs with the acquire load in control_main() */
	atomic_store_explicit(&control_stop, true, memory_order_release);
	pthread_join(control_tid, NULL);
	control_running = false;
	fz_verify_ctl_poll(); /* the last samples, once the lcores have stopped */
}
