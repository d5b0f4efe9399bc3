/* The appliance: EAL and port set-up, pools and rings, stage lcores, drain on SIGINT/SIGTERM. */
#include <errno.h>
#include <limits.h>
#include <grp.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rte_bus.h>
#include <rte_cycles.h>
#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>

#include "app_pvt.h"
#include "verify.h"
#include "verify_ctl.h"
#include "fz_cli.h"
#include "fz_control.h"
#include "port_stats.h"
#include "stage_cache.h"

RTE_LOG_REGISTER_DEFAULT(fz_logtype_pipeline, INFO);

struct fz_app fz_app;

const char *const fz_app_drop_names[] = {
#define FZ_AD_NAME(e, s) [FZ_APP_DROP_##e] = s,
	FZ_FOREACH_APP_DROP(FZ_AD_NAME)
#undef FZ_AD_NAME
};

static void on_signal(int sig)
{
	(void)sig;
	/* the RX lcore sees this, stops receiving and drains the pipeline */
	atomic_store_explicit(&fz_app.stop_rx, true, memory_order_release);
}

static void on_hangup(int sig)
{
	(void)sig;
	/* the RX lcore reloads the cache snapshot and swaps it in */
	atomic_store_explicit(&fz_app.reload, true, memory_order_release);
}

static void app_usage(FILE *f)
{
	fprintf(f, "usage: freeze [EAL options] -- [--config STAGES.yaml] [--no-caches] [--online]\n"
		   "                                 [--no-front] [--exit-idle MS] [--print-config]\n"
		   "  Without --config the embedded default runs: the shipped ResNet-18 with its\n"
		   "  calibrated caches and front tiers on port 0 (give the port with EAL's --vdev).\n"
		   "  --no-caches: every request runs the whole model (no exits, no front tiers);\n"
		   "  --no-front: the caches without the front tiers.\n");
}

/* Probe the configured device (a vdev spec or a PCI address) and return its port id. */
static int port_find(const char *device, uint16_t *port)
{
	if (device[0]) {
		char name[256];
		snprintf(name, sizeof(name), "%s", device);
		char *comma = strchr(name, ',');
		if (comma)
			*comma = '\0';
		if (rte_eth_dev_get_port_by_name(name, port) == 0)
			return 0; /* already probed by EAL (--vdev / -a) */
		int rc = rte_dev_probe(device);
		if (rc < 0) {
			FZ_LOG(ERR, "cannot probe device '%s': %s", device, rte_strerror(-rc));
			return rc;
		}
		return rte_eth_dev_get_port_by_name(name, port);
	}
	RTE_ETH_FOREACH_DEV(*port)
	return 0;
	FZ_LOG(ERR, "no Ethernet port: give one with --vdev (e.g. net_pcap0,rx_pcap=in.pcap,"
		    "tx_pcap=out.pcap) or set port.device in the config");
	return -ENODEV;
}

static int port_init(uint16_t port)
{
	struct rte_eth_conf conf = {0};
	struct rte_eth_dev_info info;
	int rc;
	if ((rc = rte_eth_dev_info_get(port, &info)) < 0)
		return rc;
	/* a device that checks UDP checksums says so per frame (ol_flags, lc_rx.c: l4csum());
	 * without it (net_af_packet, net_pcap in 22.11) RX checks them in software */
	conf.rxmode.offloads = info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_UDP_CKSUM;
	FZ_LOG(INFO, "port %u (%s): UDP checksums checked by %s", port, info.driver_name,
	       conf.rxmode.offloads ? "the device" : "software");
	if ((rc = rte_eth_dev_configure(port, 1, 1, &conf)) < 0)
		return rc;
	uint16_t nrx = 1024, ntx = 1024;
	if ((rc = rte_eth_dev_adjust_nb_rx_tx_desc(port, &nrx, &ntx)) < 0)
		return rc;
	int socket = rte_eth_dev_socket_id(port);
	if ((rc = rte_eth_rx_queue_setup(port, 0, nrx, socket, NULL, fz_app.mbufs)) < 0 ||
	    (rc = rte_eth_tx_queue_setup(port, 0, ntx, socket, NULL)) < 0)
		return rc;
	if ((rc = rte_eth_dev_start(port)) < 0)
		return rc;
	rte_eth_promiscuous_enable(port); /* some vdevs do not support it: harmless */
	return rte_eth_macaddr_get(port, &fz_app.mac);
}

/* Create an empty pool of n objects of elt bytes with a per-lcore cache of `cache` objects,
 * on DPDK's lock-free stack ("lf_stack", the mempool_stack driver loaded with the PMDs) or,
 * without it, a ring; populate it and run `init` on every object. Returns the pool (and the
 * ops' name in *ops) or NULL with rte_errno set. */
static struct rte_mempool *pool_create(const char *name, unsigned n, unsigned elt, unsigned cache,
				       rte_mempool_obj_cb_t *init, void *arg, const char **ops)
{
	struct rte_mempool *mp = rte_mempool_create_empty(name, n, elt, cache, 0, rte_socket_id(), 0);
	if (!mp)
		return NULL;
	/* a stack gives back the object put last, still in cache; lock-free, so an lcore
	 * preempted inside get or put (more lcores than cores) holds up nobody. A ring works
	 * too, only FIFO: every object goes cold before it comes round */
	*ops = "lf_stack";
	if (rte_mempool_set_ops_byname(mp, *ops, NULL) < 0) {
		*ops = "ring_mp_mc";
		if (rte_mempool_set_ops_byname(mp, *ops, NULL) < 0) {
			rte_mempool_free(mp);
			rte_errno = ENOTSUP;
			return NULL;
		}
	}
	int rc = rte_mempool_populate_default(mp);
	if (rc < 0 || (unsigned)rc != n) {
		rte_mempool_free(mp);
		rte_errno = rc < 0 ? -rc : ENOMEM;
		return NULL;
	}
	rte_mempool_obj_iter(mp, init, arg);
	return mp;
}

/* Point request `idx` at its input and key rows in the arena (rte_mempool_obj_iter). */
static void req_init(struct rte_mempool *mp, void *arg, void *obj, unsigned idx)
{
	(void)mp;
	(void)arg;
	struct fz_req *r = obj;
	memset(r, 0, sizeof(*r));
	r->act = fz_app.arena + (size_t)idx * fz_app.act_floats;
	r->fr.img = fz_app.img_floats ? (uint8_t *)(r->act + fz_app.img_at) : NULL;
}

/*
 * The request pool: struct fz_req objects in DPDK memory, their input and key rows in an arena
 * outside it (2048 requests of a 28x28 input are 6.4 MB, more with online keys; --no-huge -m
 * is small). Stages after the first get their activations in batches (batches_init), so a
 * request carries only what RX writes: the model input, and the cache keys kept for online
 * inserts. RX gets (and puts back what it cannot hand on), TX puts after sending: each through
 * its own per-lcore cache, so neither touches the shared stack for most requests.
 */
static int reqs_init(void)
{
	const struct fz_appcfg *c = &fz_app.cfg;
	/* the model input in the layout oneDNN chose on this CPU (lc_rx.c: load_tensor) */
	size_t floats = fz_net_layout(fz_app.net, FZ_INPUT_TENSOR).sample_stride;
	/* input, the input as a u8 image (the front tiers' near-duplicate search), then the
	 * cache keys kept for online inserts (lc_rx.c: submit) */
	fz_app.img_at = (floats + 15) & ~(size_t)15;
	fz_app.img_floats = 0;
	if (c->front.enabled && c->caches && c->front.near_radius > 0)
		fz_app.img_floats = ((fz_shape_size(fz_app.model->input.shape) + 3) / 4 + 15) &
				    ~(size_t)15;
	fz_app.act_floats = fz_app.img_at + fz_app.img_floats + fz_app_key_floats();
	size_t bytes = (size_t)c->requests * fz_app.act_floats * sizeof(float);
	fz_app.arena = aligned_alloc(64, bytes);
	if (!fz_app.arena)
		return -ENOMEM;
	/* touch every page now: first-touch faults would otherwise land on the data path */
	memset(fz_app.arena, 0, bytes);
	/* What TX's cache holds (up to 1.5x its size, the flush threshold) RX cannot get until
	 * TX flushes: at requests / 8 that is at most ~19 % of a small pool; at 32 (one burst)
	 * a big pool's shared stack is touched about once a burst. rte_mempool_avail_count
	 * counts what the caches hold as free. */
	unsigned cache = RTE_MIN(32u, (unsigned)c->requests / 8);
	const char *ops;
	fz_app.reqs = pool_create("fz_reqs", (unsigned)c->requests, sizeof(struct fz_req), cache,
				  req_init, NULL, &ops);
	if (!fz_app.reqs)
		return -rte_errno;
	FZ_LOG(INFO, "requests: %d, %.1f MB of inputs%s, pool %s, per-lcore cache %u",
	       c->requests, bytes / 1048576.0, fz_app_key_floats() ? " and keys" : "", ops, cache);
	return 0;
}

#define BPOOL_MIN 4 /* batches per boundary at least: one filling, one running, two queued */

/* Point batch `idx` of the pool at its rows and request slots (rte_mempool_obj_iter). */
static void batch_init(struct rte_mempool *mp, void *arg, void *obj, unsigned idx)
{
	(void)mp;
	struct fz_bpool *p = arg;
	struct fz_batch *b = obj;
	b->n = 0;
	b->act = (float *)((char *)p->arena + idx * p->obj_bytes);
	b->reqs = p->reqs + (size_t)idx * p->cap;
}

/* The batch pools between stages (struct fz_bpool). */
static int batches_init(void)
{
	const struct fz_appcfg *c = &fz_app.cfg;
	char name[RTE_MEMPOOL_NAMESIZE];
	for (int i = 0; i + 1 < fz_app.n_stages; i++) {
		struct fz_bpool *p = &fz_app.bpools[i];
		/* where stage i's last group writes and stage i+1's first reads (lc_stage.c
		 * checks both groups against it) */
		p->lay = fz_net_layout(fz_app.net, c->stages[i].last_layer);
		p->stride = p->lay.sample_stride;
		p->cap = (unsigned)RTE_MAX(c->stages[i].max_batch, c->stages[i + 1].max_batch);
		p->count = RTE_MAX((unsigned)BPOOL_MIN, (unsigned)c->ring_size / p->cap);
		p->obj_bytes = ((p->cap * p->stride + 15) & ~(size_t)15) * sizeof(float);
		p->arena = aligned_alloc(64, p->count * p->obj_bytes);
		p->reqs = calloc((size_t)p->count * p->cap, sizeof(*p->reqs));
		if (!p->arena || !p->reqs)
			return -ENOMEM;
		memset(p->arena, 0, p->count * p->obj_bytes); /* first-touch faults now */
		snprintf(name, sizeof(name), "fz_batches%d", i);
		/* no per-lcore cache: it would keep the batches stage i+1 gives back from stage i */
		const char *ops;
		if (!(p->mp = pool_create(name, p->count, sizeof(struct fz_batch), 0, batch_init, p,
					  &ops)))
			return -rte_errno;
		fz_app.stages[i].out_pool = p;
		fz_app.stages[i + 1].in_pool = p;
		FZ_LOG(INFO, "batches %s>%s: %u of %u rows, %s, %.1f MB, pool %s",
		       c->stages[i].name, c->stages[i + 1].name, p->count, p->cap, p->lay.tag,
		       p->count * p->obj_bytes / 1048576.0, ops);
	}
	return 0;
}

static int rings_init(void)
{
	const struct fz_appcfg *c = &fz_app.cfg;
	char name[RTE_RING_NAMESIZE];
	for (int i = 0; i < fz_app.n_stages; i++) {
		snprintf(name, sizeof(name), "fz_stage%d", i);
		/* stage 1 takes requests from RX; the others take batches, and their ring holds
		 * every batch of the pool, so handing one on never waits (getting a free one
		 * does: that is the back-pressure) */
		fz_app.stages[i].in =
			i == 0 ? rte_ring_create(name, c->ring_size, rte_socket_id(),
						 RING_F_SP_ENQ | RING_F_SC_DEQ)
			       : rte_ring_create(name, fz_app.bpools[i - 1].count, rte_socket_id(),
						 RING_F_SP_ENQ | RING_F_SC_DEQ | RING_F_EXACT_SZ);
		if (!fz_app.stages[i].in)
			return -rte_errno;
	}
	for (int i = 0; i < fz_app.n_stages; i++)
		fz_app.stages[i].next = i + 1 < fz_app.n_stages ? fz_app.stages[i + 1].in : NULL;
	/* every stage answers: multi-producer, single consumer (TX) */
	fz_app.tx_ring = rte_ring_create("fz_tx", rte_align32pow2(c->requests + 1),
					 rte_socket_id(), RING_F_SC_DEQ);
	fz_app.ctl_ring = rte_ring_create("fz_ctl", 256, rte_socket_id(),
					  RING_F_SP_ENQ | RING_F_SC_DEQ);
	/* answered front leaders, TX -> RX: room for every request, so TX never waits */
	fz_app.learn_ring = rte_ring_create("fz_learn", rte_align32pow2(c->requests + 1),
					    rte_socket_id(), RING_F_SP_ENQ | RING_F_SC_DEQ);
	return fz_app.tx_ring && fz_app.ctl_ring && fz_app.learn_ring ? 0 : -rte_errno;
}

/*
 * After start-up the appliance needs no privilege: ports, pcap files, the telemetry socket and
 * the snapshot's directory are open or readable. Switch to cfg.run_as (if set) and forbid
 * gaining privileges again (no_new_privs). Returns 0 or -errno with a message.
 */
static int drop_privileges(char *err, size_t errlen)
{
	const char *user = fz_app.cfg.run_as;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		snprintf(err, errlen, "prctl(PR_SET_NO_NEW_PRIVS): %s", strerror(errno));
		return -errno;
	}
	if (!user[0])
		return 0;
	struct passwd *pw = getpwnam(user);
	if (!pw) {
		snprintf(err, errlen, "%.900s: run_as: no user '%s'", fz_app.cfg.path, user);
		return -ENOENT;
	}
	if (setgroups(0, NULL) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0) {
		snprintf(err, errlen, "run_as %s: %s", user, strerror(errno));
		return -errno;
	}
	if (setuid(0) == 0) { /* must not be able to go back */
		snprintf(err, errlen, "run_as %s: could regain root", user);
		return -EPERM;
	}
	return 0;
}

/* Is `path` (resolved) inside directory `dir` (resolved)? */
static bool inside(const char *path, const char *dir)
{
	char rp[PATH_MAX], rd[PATH_MAX];
	if (!dir[0] || !realpath(path, rp) || !realpath(dir, rd))
		return false;
	size_t n = strlen(rd);
	return !strncmp(rp, rd, n) && (rp[n] == '/' || (n == 1 && rd[0] == '/'));
}

/*
 * The model and the cache snapshot must live in the models directory or the configured
 * state_dir: a typo or a hostile config cannot make the appliance read other files.
 */
static int check_paths(char *err, size_t errlen)
{
	const struct fz_appcfg *c = &fz_app.cfg;
	const char *what[2] = {"model", "cache"};
	const char *path[2] = {c->model_path, c->cache_path};
	struct fz_cfgpos pos[2] = {c->model_pos, c->cache_pos};
	for (int i = 0; i < 2; i++) {
		if (!path[i][0] || inside(path[i], FZ_MODELS_DIR) || inside(path[i], c->state_dir))
			continue;
		if (access(path[i], R_OK) != 0)
			return fz_appcfg_err(c, pos[i], err, errlen, "%s '%s': %s", what[i], path[i],
					     strerror(errno));
		return fz_appcfg_err(c, pos[i], err, errlen,
				     "%s '%s' is outside the allowed directories (%s%s%s); move it "
				     "there or set state_dir",
				     what[i], path[i], FZ_MODELS_DIR, c->state_dir[0] ? ", " : "",
				     c->state_dir);
	}
	return 0;
}

/* Lcores named by the config must be enabled by EAL (-l / --lcores). */
static int check_lcores(char *err, size_t errlen)
{
	const struct fz_appcfg *c = &fz_app.cfg;
	if ((unsigned)c->rx_lcore != rte_get_main_lcore())
		return fz_appcfg_err(c, c->rx_pos, err, errlen,
				     "rx runs on the main lcore (%u), not lcore %d; give EAL -l "
				     "%d,... or change rx.lcore",
				     rte_get_main_lcore(), c->rx_lcore, c->rx_lcore);
	if (!rte_lcore_is_enabled(c->tx_lcore))
		return fz_appcfg_err(c, c->tx_pos, err, errlen,
				     "tx lcore %d is not enabled by EAL (-l / --lcores)", c->tx_lcore);
	for (int i = 0; i < c->n_stages; i++)
		if (!rte_lcore_is_enabled(c->stages[i].lcore))
			return fz_appcfg_err(c, c->stages[i].lcore_pos, err, errlen,
					     "stage '%s': lcore %d is not enabled by EAL (-l / "
					     "--lcores)",
					     c->stages[i].name, c->stages[i].lcore);
	return 0;
}

int fz_appliance_main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, 0, 'c'}, {"no-caches", no_argument, 0, 'n'},
		{"online", no_argument, 0, 'o'},       {"exit-idle", required_argument, 0, 'x'},
		{"print-config", no_argument, 0, 'p'}, {"help", no_argument, 0, 'h'},
		{"no-front", no_argument, 0, 'f'},     {0, 0, 0, 0}};
	char err[1024];
	int rc, c;

	int eal = rte_eal_init(argc, argv);
	if (eal < 0) {
		fprintf(stderr, "freeze: EAL init failed: %s\n", rte_strerror(rte_errno));
		return 1;
	}
	argc -= eal;
	argv += eal;
	const char *cfg_path = NULL;
	int no_caches = 0, no_front = 0, online = 0, exit_idle = -1;
	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c': cfg_path = optarg; break;
		case 'n': no_caches = 1; break;
		case 'f': no_front = 1; break;
		case 'o': online = 1; break;
		case 'x': exit_idle = fz_opt_int("--exit-idle", optarg, 0, 1 << 30); break;
		case 'p':
			fputs(fz_appcfg_default_yaml, stdout);
			return 0;
		case 'h': app_usage(stdout); return 0;
		default: app_usage(stderr); return 2;
		}
	}
	struct fz_appcfg *cfg = &fz_app.cfg;
	rc = cfg_path ? fz_appcfg_load(cfg_path, NULL, 0, NULL, cfg, err, sizeof(err))
		      : fz_appcfg_load(FZ_APPCFG_DEFAULT_NAME, fz_appcfg_default_yaml,
				       strlen(fz_appcfg_default_yaml), FZ_EXAMPLES_DIR, cfg, err,
				       sizeof(err));
	if (rc < 0) {
		fprintf(stderr, "freeze: %s\n", err);
		return 1;
	}
	if (no_caches)
		cfg->caches = false;
	if (no_front)
		cfg->front.enabled = false;
	if (online)
		cfg->online = true;
	if (exit_idle >= 0)
		cfg->exit_idle_ms = exit_idle;
	if (check_paths(err, sizeof(err)) < 0 ||
	    !(fz_app.model = fz_model_load(cfg->model_path, err, sizeof(err))) ||
	    fz_appcfg_resolve(cfg, fz_app.model, err, sizeof(err)) < 0 ||
	    check_lcores(err, sizeof(err)) < 0 ||
	    !(fz_app.net = fz_net_create(fz_app.model, err, sizeof(err)))) {
		fprintf(stderr, "freeze: %s\n", err);
		return 1;
	}
#ifndef FZ_FAULT_INJECTION
	if (getenv("FZ_FAULT_STALL"))
		FZ_LOG(WARNING, "FZ_FAULT_STALL ignored: this build has no fault injection (meson "
				"-Dfault_injection=true)");
#endif
	if (cfg->caches && cfg->cache_path[0] &&
	    fz_app_caches_load(cfg->cache_path, err, sizeof(err)) < 0) {
		fprintf(stderr, "freeze: %s\n", err);
		return 1;
	}
	fz_app.tsc_hz = rte_get_tsc_hz();
	fz_app.n_stages = cfg->n_stages;
	for (int i = 0; i < cfg->n_stages; i++) {
		fz_app.stages[i].cfg = &cfg->stages[i];
		fz_app.stages[i].index = i;
	}
	/* a per-lcore cache may hold at most n / 1.5 buffers (rte_mempool) */
	unsigned mcache = RTE_MIN(256u, (unsigned)cfg->mbufs * 2 / 3);
	fz_app.mbufs = rte_pktmbuf_pool_create("fz_mbufs", cfg->mbufs, mcache, 0,
					       RTE_MBUF_DEFAULT_BUF_SIZE, rte_socket_id());
	if (!fz_app.mbufs) {
		fprintf(stderr, "freeze: cannot create %d mbufs: %s (raise EAL -m or lower "
				"pools.mbufs)\n",
			cfg->mbufs, rte_strerror(rte_errno));
		return 1;
	}
	if ((rc = reqs_init()) < 0 || (rc = batches_init()) < 0 || (rc = rings_init()) < 0 ||
	    (rc = fz_verify_init()) < 0 || (rc = fz_verify_ctl_init()) < 0) {
		fprintf(stderr, "freeze: cannot allocate requests, batches and rings: %s\n",
			strerror(-rc));
		return 1;
	}
	if ((rc = port_find(cfg->port.device, &fz_app.port)) < 0 ||
	    (rc = port_init(fz_app.port)) < 0) {
		fprintf(stderr, "freeze: port set-up failed: %s\n", rte_strerror(-rc));
		return 1;
	}
	/* before privileges drop: the af_packet PMD's socket is found among our descriptors */
	if ((rc = fz_port_stats_init(fz_app.port)) < 0)
		FZ_LOG(WARNING, "port %u: losses before RX not read: %s", fz_app.port,
		       rte_strerror(-rc));
	if (fz_app_telemetry_init() != 0)
		FZ_LOG(WARNING, "telemetry commands not registered: /freeze/... will not answer");
	if (drop_privileges(err, sizeof(err)) < 0) {
		fprintf(stderr, "freeze: %s\n", err);
		return 1;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGHUP, on_hangup);

	/* stages compile their primitives on their own lcores; wait until all are ready */
	for (int i = 0; i < fz_app.n_stages; i++)
		if ((rc = rte_eal_remote_launch(fz_lcore_stage, &fz_app.stages[i],
						cfg->stages[i].lcore)) != 0) {
			/* never launched: nobody will say it is ready */
			FZ_LOG(ERR, "stage '%s': cannot launch on lcore %u: %s", cfg->stages[i].name,
			       cfg->stages[i].lcore, strerror(-rc));
			atomic_store(&fz_app.stages[i].ready, -1);
		}
	for (int i = 0; i < fz_app.n_stages; i++) {
		int r;
		while ((r = atomic_load_explicit(&fz_app.stages[i].ready, memory_order_acquire)) == 0)
			rte_delay_us_sleep(1000);
		if (r < 0) {
			atomic_store(&fz_app.stop_all, true);
			rte_eal_mp_wait_lcore();
			fprintf(stderr, "freeze: stage '%s' failed to start\n", cfg->stages[i].name);
			return 1;
		}
	}
	const char *what = "TX lcore";
	if ((rc = rte_eal_remote_launch(fz_lcore_tx, NULL, cfg->tx_lcore)) != 0 ||
	    (what = "control thread", rc = fz_control_start()) != 0) {
		fprintf(stderr, "freeze: cannot start the %s: %s\n", what, strerror(-rc));
		atomic_store(&fz_app.stop_all, true);
		rte_eal_mp_wait_lcore();
		return 1;
	}
	char ip[32];
	uint32_t a = cfg->port.ipv4;
	snprintf(ip, sizeof(ip), "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
	printf("freeze: serving %s on port %u (" RTE_ETHER_ADDR_PRT_FMT ") %s:%u, %d stages, "
	       "caches %s%s; oneDNN ISA %s, cache kernels %s\n",
	       fz_app.model->name, fz_app.port, RTE_ETHER_ADDR_BYTES(&fz_app.mac), ip,
	       cfg->port.udp_port, fz_app.n_stages, fz_app.caches ? "on" : "off",
	       cfg->online && fz_app.caches ? " (online updates)" : "", fz_stages_isa(),
	       fz_cache_isa());
	fflush(stdout);
	FILE *sm = fopen("/proc/self/statm", "r");
	long rss = 0;
	if (sm) {
		if (fscanf(sm, "%*s %ld", &rss) == 1)
			fz_app.rss_start_kb = rss * (sysconf(_SC_PAGESIZE) / 1024);
		fclose(sm);
	}
	fz_lcore_rx(NULL); /* returns once the pipeline is drained */
	rte_eal_mp_wait_lcore();
	fz_control_stop();
	rte_eth_dev_stop(fz_app.port);
	fz_port_stats_close(); /* the last read: closing takes the PMD's sockets */
	/* closing releases what the port holds (net_pcap's infinite_rx keeps its replay frames):
	 * after it every mbuf must be back in the pool */
	rte_eth_dev_close(fz_app.port);
	fz_app_summary(stdout);
	fz_verify_ctl_fini();
	fz_verify_fini();
	fz_app_caches_free();
	fz_net_free(fz_app.net);
	fz_model_free(fz_app.model);
	rte_eal_cleanup();
	return 0;
}
