/* Freeze appliance configuration loader: the stages YAML, validated with file:line:col errors. */
#include <arpa/inet.h>
#include <errno.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fz_appcfg.h"
#include "fz_yaml.h"

static const char *const idle_names[] = {
#define FZ_IDLE_NAME(e, s) [FZ_IDLE_##e] = s,
	FZ_FOREACH_IDLE(FZ_IDLE_NAME)
#undef FZ_IDLE_NAME
};

const char *fz_idle_name(enum fz_idle i)
{
	return idle_names[i];
}

static const char *const top_keys[] = {"model", "cache", "caches", "online", "port", "rx", "tx",
				       "stages", "rings", "pools", "reassembly", "idle",
				       "exit_idle_ms", "run_as", "state_dir", "online_min_confidence",
				       "front", "verify", NULL};
static const char *const port_keys[] = {"device", "ipv4", "udp_port", NULL};
static const char *const lcore_keys[] = {"lcore", NULL};
static const char *const stage_keys[] = {"name", "lcore", "layers", "max_batch", "idle", NULL};
static const char *const rings_keys[] = {"size", NULL};
static const char *const pools_keys[] = {"mbufs", "requests", NULL};
static const char *const reasm_keys[] = {"entries", "timeout_ms", NULL};
static const char *const idle_keys[] = {"policy", "spins", "sleep_us", NULL};
static const char *const front_keys[] = {"enabled", "exact", "near", "flows", "coalesce", NULL};
static const char *const front_exact_keys[] = {"entries", NULL};
static const char *const verify_keys[] = {"sample", "target", "window", "min_samples", "margin",
					  "every", NULL};
static const char *const front_near_keys[] = {"entries", "grid", "radius", "min_confidence",
					       "exit_min_confidence", NULL};
static const char *const front_flows_keys[] = {"entries", "timeout_ms", NULL};
static const char *const front_coalesce_keys[] = {"pending", "followers", "wait_us", NULL};

int fz_appcfg_err(const struct fz_appcfg *cfg, struct fz_cfgpos pos, char *err, size_t errlen,
		  const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(err, errlen, "%s:%d:%d: ", cfg->path, pos.line, pos.col);
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < errlen)
		vsnprintf(err + n, errlen - n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static struct fz_cfgpos pos_of(const struct fz_ynode *n)
{
	return (struct fz_cfgpos){n ? n->line : 0, n ? n->col : 0};
}

/* A path from the config, resolved against the config file's directory. */
static int get_path(struct fz_ydoc *doc, const struct fz_ynode *map, const char *key, int flags,
		    const char *base_dir, char *out, size_t size)
{
	char raw[FZ_PATH_MAX] = "";
	int r = fz_ymap_str(doc, map, key, flags, raw, sizeof(raw));
	if (r || raw[0] == '\0')
		return r;
	int n = raw[0] == '/' || !base_dir[0] ? snprintf(out, size, "%s", raw)
					      : snprintf(out, size, "%s/%s", base_dir, raw);
	if (n < 0 || (size_t)n >= size)
		return fz_yerr(doc, fz_ymap_get(map, key), "path too long");
	return 0;
}

static int get_idle(struct fz_ydoc *doc, const struct fz_ynode *map, const char *key,
		    enum fz_idle *out)
{
	char s[16];
	struct fz_ynode *n = fz_ymap_get(map, key);
	if (!n)
		return 0;
	if (fz_ynode_str(doc, n, s, sizeof(s)))
		return -EINVAL;
	for (size_t i = 0; i < sizeof(idle_names) / sizeof(idle_names[0]); i++)
		if (!strcmp(s, idle_names[i])) {
			*out = (enum fz_idle)i;
			return 0;
		}
	return fz_yerr(doc, n, "unknown idle policy '%s'; expected spin, yield or sleep", s);
}

static int get_lcore(struct fz_ydoc *doc, const struct fz_ynode *top, const char *key, int *lcore,
		     struct fz_cfgpos *pos)
{
	struct fz_ynode *n = fz_ymap_get(top, key);
	if (!n)
		return 0;
	if (fz_ymap_check_keys(doc, n, lcore_keys))
		return -EINVAL;
	if (fz_ymap_int_min(doc, n, "lcore", FZ_Y_REQUIRED, 0, lcore))
		return -EINVAL;
	*pos = pos_of(fz_ymap_get(n, "lcore"));
	return 0;
}

/* `layers:` as "first..last", "name", or [first, ..., last]. */
static int get_layers(struct fz_ydoc *doc, const struct fz_ynode *n, struct fz_stage_cfg *st)
{
	char s[2 * FZ_NAME_MAX + 4];
	if (n->type == FZ_YNODE_SEQ) {
		if (n->n == 0)
			return fz_yerr(doc, n, "expected at least one layer name");
		if (fz_ynode_str(doc, n->items[0], st->first, sizeof(st->first)) ||
		    fz_ynode_str(doc, n->items[n->n - 1], st->last, sizeof(st->last)))
			return -EINVAL;
		return 0;
	}
	if (fz_ynode_str(doc, n, s, sizeof(s)))
		return -EINVAL;
	char *dots = strstr(s, "..");
	if (dots) {
		*dots = '\0';
		if (!s[0] || !dots[2])
			return fz_yerr(doc, n, "expected FIRST..LAST layer names, found '%s'",
				       n->str);
		if (strlen(s) >= FZ_NAME_MAX || strlen(dots + 2) >= FZ_NAME_MAX)
			return fz_yerr(doc, n, "layer name too long");
		strcpy(st->first, s);
		strcpy(st->last, dots + 2);
	} else {
		if (strlen(s) >= FZ_NAME_MAX)
			return fz_yerr(doc, n, "layer name too long");
		strcpy(st->first, s);
		strcpy(st->last, s);
	}
	return 0;
}

static void defaults(struct fz_appcfg *c)
{
	memset(c, 0, sizeof(*c));
	c->caches = true;
	c->online = false;
	c->port.ipv4 = (198u << 24) | (18u << 16) | 1; /* 198.18.0.1 (benchmarking range) */
	c->port.udp_port = 7878; /* FZ_PROTO_DEFAULT_PORT, docs/protocol.md */
	c->rx_lcore = 0;
	c->tx_lcore = 1;
	c->ring_size = 1024;
	c->mbufs = 8191;
	c->requests = 2048;
	c->reasm_entries = 1024;
	c->reasm_timeout_ms = 100;
	c->idle = FZ_IDLE_YIELD;
	c->sleep_us = 50;
	c->idle_spins = 64;
	c->exit_idle_ms = 0;
	c->front.enabled = false; /* a `front:` section turns them on */
	c->front.exact_entries = 4096;
	c->front.near_entries = 512;
	c->front.near_grid = 0; /* the most cells a key holds (fz_front_grid_auto) */
	c->front.near_radius = 0;
	c->front.near_min_confidence = 0.95f;
	c->front.near_exit_min_confidence = 1.0f;
	c->front.flow_entries = 4096;
	c->front.flow_timeout_ms = 2000;
	c->front.pending = 256;
	c->front.followers = 64;
	c->front.wait_us = 200000;
	c->verify.sample = 0; /* a `verify:` section turns it on */
	c->verify.target = 0.995;
	c->verify.window = 4000;
	c->verify.min_samples = 0;
	c->verify.margin = 0.002;
	c->verify.every = 50;
}

/* `verify:` (shadow sampling and guarded thresholds). */
static int load_verify(struct fz_ydoc *doc, const struct fz_ynode *n, struct fz_appcfg *c)
{
	double sample = 0.01, target = c->verify.target, margin = c->verify.margin;
	if (fz_ymap_check_keys(doc, n, verify_keys) ||
	    fz_ymap_float(doc, n, "sample", FZ_Y_OPTIONAL, &sample) ||
	    fz_ymap_float(doc, n, "target", FZ_Y_OPTIONAL, &target) ||
	    fz_ymap_float(doc, n, "margin", FZ_Y_OPTIONAL, &margin) ||
	    fz_ymap_int_pos(doc, n, "window", FZ_Y_OPTIONAL, &c->verify.window) ||
	    fz_ymap_int_min(doc, n, "min_samples", FZ_Y_OPTIONAL, 0, &c->verify.min_samples) ||
	    fz_ymap_int_pos(doc, n, "every", FZ_Y_OPTIONAL, &c->verify.every))
		return -EINVAL;
	if (!(sample >= 0 && sample <= 1))
		return fz_yerr(doc, fz_ymap_get(n, "sample"),
			       "expected the share of early answers checked, 0..1, found %g", sample);
	if (!(target > 0 && target < 1))
		return fz_yerr(doc, fz_ymap_get(n, "target"),
			       "expected an agreement strictly between 0 and 1, found %g", target);
	if (!(margin >= 0 && target + margin < 1))
		return fz_yerr(doc, fz_ymap_get(n, "margin"),
			       "expected a margin >= 0 with target + margin < 1, found %g", margin);
	if (c->verify.window > (1 << 20))
		return fz_yerr(doc, fz_ymap_get(n, "window"), "expected at most %d samples, found %d",
			       1 << 20, c->verify.window);
	c->verify.sample = sample;
	c->verify.target = target;
	c->verify.margin = margin;
	return 0;
}

/* `front:` (tiers before the pipeline). Every size may be 0: that tier is off. */
static int load_front(struct fz_ydoc *doc, const struct fz_ynode *n, struct fz_appcfg *c)
{
	struct fz_ynode *m;
	double radius = c->front.near_radius, min_conf = c->front.near_min_confidence;
	double exit_conf = c->front.near_exit_min_confidence;
	c->front.enabled = true;
	c->front.pos = pos_of(n);
	if (fz_ymap_check_keys(doc, n, front_keys) ||
	    fz_ymap_bool(doc, n, "enabled", FZ_Y_OPTIONAL, &c->front.enabled))
		return -EINVAL;
	if ((m = fz_ymap_get(n, "exact")) &&
	    (fz_ymap_check_keys(doc, m, front_exact_keys) ||
	     fz_ymap_int_min(doc, m, "entries", FZ_Y_OPTIONAL, 0, &c->front.exact_entries)))
		return -EINVAL;
	if ((m = fz_ymap_get(n, "near"))) {
		if (fz_ymap_get(m, "freqs"))
			return fz_yerr(doc, fz_ymap_get(m, "freqs"),
				       "`freqs` (a key of |DFT| magnitudes, blind to sign, gain and "
				       "offset) is gone: expected `grid` (cells per axis of the key) "
				       "and a radius from tools/calibrate_front.py");
		if (fz_ymap_check_keys(doc, m, front_near_keys) ||
		    fz_ymap_int_min(doc, m, "entries", FZ_Y_OPTIONAL, 0, &c->front.near_entries) ||
		    fz_ymap_int_min(doc, m, "grid", FZ_Y_OPTIONAL, 0, &c->front.near_grid) ||
		    fz_ymap_float(doc, m, "radius", FZ_Y_OPTIONAL, &radius) ||
		    fz_ymap_float(doc, m, "min_confidence", FZ_Y_OPTIONAL, &min_conf) ||
		    fz_ymap_float(doc, m, "exit_min_confidence", FZ_Y_OPTIONAL, &exit_conf))
			return -EINVAL;
		if (!(min_conf >= 0 && min_conf <= 1))
			return fz_yerr(doc, fz_ymap_get(m, "min_confidence"),
				       "expected a probability in 0..1, found %g", min_conf);
		if (!(exit_conf >= 0 && exit_conf <= 1))
			return fz_yerr(doc, fz_ymap_get(m, "exit_min_confidence"),
				       "expected a probability in 0..1 (1: early exits are not shared), "
				       "found %g", exit_conf);
		c->front.near_min_confidence = (float)min_conf;
		c->front.near_exit_min_confidence = (float)exit_conf;
		if (!(radius >= 0 && radius <= 1)) /* rms of pixels on the 0..1 scale */
			return fz_yerr(doc, fz_ymap_get(m, "radius"),
				       "expected a root-mean-square pixel difference in 0..1 (from "
				       "tools/calibrate_front.py), found %g", radius);
		if (c->front.near_grid > 64)
			return fz_yerr(doc, fz_ymap_get(m, "grid"),
				       "expected 0 (automatic) or 1..64 cells per axis, found %d",
				       c->front.near_grid);
		if (c->front.near_entries > (1 << 20))
			return fz_yerr(doc, fz_ymap_get(m, "entries"),
				       "expected at most %d entries (every lookup scans them), found %d",
				       1 << 20, c->front.near_entries);
		c->front.near_radius = (float)radius;
	}
	if ((m = fz_ymap_get(n, "flows")) &&
	    (fz_ymap_check_keys(doc, m, front_flows_keys) ||
	     fz_ymap_int_min(doc, m, "entries", FZ_Y_OPTIONAL, 0, &c->front.flow_entries) ||
	     fz_ymap_int_pos(doc, m, "timeout_ms", FZ_Y_OPTIONAL, &c->front.flow_timeout_ms)))
		return -EINVAL;
	if ((m = fz_ymap_get(n, "coalesce")) &&
	    (fz_ymap_check_keys(doc, m, front_coalesce_keys) ||
	     fz_ymap_int_min(doc, m, "pending", FZ_Y_OPTIONAL, 0, &c->front.pending) ||
	     fz_ymap_int_min(doc, m, "followers", FZ_Y_OPTIONAL, 0, &c->front.followers) ||
	     fz_ymap_int_pos(doc, m, "wait_us", FZ_Y_OPTIONAL, &c->front.wait_us)))
		return -EINVAL;
	/* a follower holds a request object and a place in stage 1's ring while it waits */
	if (m && c->front.wait_us > FZ_FRONT_WAIT_US_MAX)
		return fz_yerr(doc, fz_ymap_get(m, "wait_us"),
			       "expected at most %d us (a follower's longest wait), found %d",
			       FZ_FRONT_WAIT_US_MAX, c->front.wait_us);
	const struct { int v, min; const char *tier, *key; } sizes[] = {
		{c->front.exact_entries, 8, "exact", "entries"},
		{c->front.flow_entries, 8, "flows", "entries"},
	};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		if (sizes[i].v && sizes[i].v < sizes[i].min)
			return fz_yerr(doc, fz_ymap_get(fz_ymap_get(n, sizes[i].tier), sizes[i].key),
				       "expected 0 (off) or at least %d, found %d", sizes[i].min,
				       sizes[i].v);
	return 0;
}

static int load_doc(struct fz_ydoc *doc, struct fz_appcfg *c, const char *dir)
{
	const struct fz_ynode *top = doc->root;
	struct fz_ynode *n;
	enum fz_idle idle_default = FZ_IDLE_YIELD;
	double min_conf = 0;

	if (!top)
		return fz_yerr(doc, NULL, "empty configuration; expected a mapping with 'model' and "
				      "'stages'");
	if (fz_ymap_check_keys(doc, top, top_keys))
		return -EINVAL;
	if (get_path(doc, top, "model", FZ_Y_REQUIRED, dir, c->model_path, sizeof(c->model_path)) ||
	    get_path(doc, top, "cache", FZ_Y_OPTIONAL, dir, c->cache_path, sizeof(c->cache_path)) ||
	    get_path(doc, top, "state_dir", FZ_Y_OPTIONAL, dir, c->state_dir,
		     sizeof(c->state_dir)) ||
	    fz_ymap_bool(doc, top, "caches", FZ_Y_OPTIONAL, &c->caches) ||
	    fz_ymap_bool(doc, top, "online", FZ_Y_OPTIONAL, &c->online) ||
	    fz_ymap_float(doc, top, "online_min_confidence", FZ_Y_OPTIONAL, &min_conf) ||
	    fz_ymap_int_min(doc, top, "exit_idle_ms", FZ_Y_OPTIONAL, 0, &c->exit_idle_ms) ||
	    fz_ymap_str(doc, top, "run_as", FZ_Y_OPTIONAL, c->run_as, sizeof(c->run_as)))
		return -EINVAL;
	if (min_conf < 0 || min_conf > 1)
		return fz_yerr(doc, fz_ymap_get(top, "online_min_confidence"),
			       "expected a probability in 0..1, found %g", min_conf);
	c->online_min_confidence = (float)min_conf;
	c->model_pos = pos_of(fz_ymap_get(top, "model"));
	c->cache_pos = pos_of(fz_ymap_get(top, "cache"));
	if ((n = fz_ymap_get(top, "port"))) {
		char ip[64] = "";
		struct in_addr a;
		int udp = c->port.udp_port;
		c->port.pos = pos_of(n);
		if (fz_ymap_check_keys(doc, n, port_keys) ||
		    fz_ymap_str(doc, n, "device", FZ_Y_OPTIONAL, c->port.device,
				sizeof(c->port.device)) ||
		    fz_ymap_str(doc, n, "ipv4", FZ_Y_OPTIONAL, ip, sizeof(ip)) ||
		    fz_ymap_int_pos(doc, n, "udp_port", FZ_Y_OPTIONAL, &udp))
			return -EINVAL;
		if (ip[0]) {
			if (inet_pton(AF_INET, ip, &a) != 1)
				return fz_yerr(doc, fz_ymap_get(n, "ipv4"),
					       "expected a dotted IPv4 address, found '%s'", ip);
			c->port.ipv4 = ntohl(a.s_addr);
		}
		if (udp > 65535)
			return fz_yerr(doc, fz_ymap_get(n, "udp_port"),
				       "expected a UDP port in 1..65535, found %d", udp);
		c->port.udp_port = (uint16_t)udp;
	}
	if (get_lcore(doc, top, "rx", &c->rx_lcore, &c->rx_pos) ||
	    get_lcore(doc, top, "tx", &c->tx_lcore, &c->tx_pos))
		return -EINVAL;
	if ((n = fz_ymap_get(top, "rings"))) {
		if (fz_ymap_check_keys(doc, n, rings_keys) ||
		    fz_ymap_int_pos(doc, n, "size", FZ_Y_OPTIONAL, &c->ring_size))
			return -EINVAL;
		if (c->ring_size & (c->ring_size - 1) || c->ring_size < 16)
			return fz_yerr(doc, fz_ymap_get(n, "size"),
				       "expected a power of two >= 16, found %d", c->ring_size);
	}
	if ((n = fz_ymap_get(top, "pools"))) {
		if (fz_ymap_check_keys(doc, n, pools_keys) ||
		    fz_ymap_int_min(doc, n, "mbufs", FZ_Y_OPTIONAL, 64, &c->mbufs) ||
		    fz_ymap_int_min(doc, n, "requests", FZ_Y_OPTIONAL, 16, &c->requests))
			return -EINVAL;
	}
	if ((n = fz_ymap_get(top, "reassembly"))) {
		if (fz_ymap_check_keys(doc, n, reasm_keys) ||
		    fz_ymap_int_pos(doc, n, "entries", FZ_Y_OPTIONAL, &c->reasm_entries) ||
		    fz_ymap_int_pos(doc, n, "timeout_ms", FZ_Y_OPTIONAL, &c->reasm_timeout_ms))
			return -EINVAL;
	}
	if ((n = fz_ymap_get(top, "idle"))) {
		if (fz_ymap_check_keys(doc, n, idle_keys) || get_idle(doc, n, "policy", &idle_default) ||
		    fz_ymap_int_min(doc, n, "spins", FZ_Y_OPTIONAL, 0, &c->idle_spins) ||
		    fz_ymap_int_pos(doc, n, "sleep_us", FZ_Y_OPTIONAL, &c->sleep_us))
			return -EINVAL;
	}
	c->idle = idle_default;
	if ((n = fz_ymap_get(top, "front")) && load_front(doc, n, c))
		return -EINVAL;
	if ((n = fz_ymap_get(top, "verify")) && load_verify(doc, n, c))
		return -EINVAL;
	struct fz_ynode *stages;
	if (fz_ymap_find(doc, top, "stages", FZ_Y_REQUIRED, &stages))
		return -EINVAL;
	if (stages->type != FZ_YNODE_SEQ || stages->n == 0)
		return fz_yerr(doc, stages, "expected a sequence of stages, found %s",
			       fz_ynode_kind(stages));
	if (stages->n > FZ_MAX_STAGES)
		return fz_yerr(doc, stages->items[FZ_MAX_STAGES],
			       "too many stages: at most %d", FZ_MAX_STAGES);
	for (size_t i = 0; i < stages->n; i++) {
		struct fz_ynode *s = stages->items[i], *ln;
		struct fz_stage_cfg *st = &c->stages[c->n_stages++];
		st->max_batch = 32;
		st->idle = idle_default;
		st->pos = pos_of(s);
		snprintf(st->name, sizeof(st->name), "stage%zu", i + 1);
		if (fz_ymap_check_keys(doc, s, stage_keys) ||
		    fz_ymap_str(doc, s, "name", FZ_Y_OPTIONAL, st->name, sizeof(st->name)) ||
		    fz_ymap_int_min(doc, s, "lcore", FZ_Y_REQUIRED, 0, &st->lcore) ||
		    fz_ymap_find(doc, s, "layers", FZ_Y_REQUIRED, &ln) || get_layers(doc, ln, st) ||
		    fz_ymap_int_pos(doc, s, "max_batch", FZ_Y_OPTIONAL, &st->max_batch) ||
		    get_idle(doc, s, "idle", &st->idle))
			return -EINVAL;
		if (st->max_batch > 1024)
			return fz_yerr(doc, fz_ymap_get(s, "max_batch"),
				       "expected max_batch <= 1024, found %d", st->max_batch);
		/* batches travel whole from stage to stage: a stage takes what the one before it
		 * hands on, at most that stage's max_batch rows */
		if (i && st->max_batch < c->stages[i - 1].max_batch)
			return fz_yerr(doc, fz_ymap_get(s, "max_batch") ? fz_ymap_get(s, "max_batch") : s,
				       "max_batch %d is below the %d of stage '%s': batches travel whole "
				       "between stages, so a stage takes at least as many rows as the "
				       "one before it", st->max_batch, c->stages[i - 1].max_batch,
				       c->stages[i - 1].name);
		st->lcore_pos = pos_of(fz_ymap_get(s, "lcore"));
		st->layers_pos = pos_of(ln);
		for (int j = 0; j < c->n_stages - 1; j++)
			if (!strcmp(c->stages[j].name, st->name))
				return fz_yerr(doc, fz_ymap_get(s, "name"),
					       "stage name '%s' already used at line %d", st->name,
					       c->stages[j].pos.line);
	}
	/* each lcore runs one loop: rx, tx and every stage on distinct lcores */
	struct {
		int lcore;
		struct fz_cfgpos pos;
		const char *what;
	} used[FZ_MAX_STAGES + 2];
	int nu = 0;
	used[nu++] = (typeof(used[0])){c->rx_lcore, c->rx_pos, "rx"};
	used[nu++] = (typeof(used[0])){c->tx_lcore, c->tx_pos, "tx"};
	for (int i = 0; i < c->n_stages; i++)
		used[nu++] = (typeof(used[0])){c->stages[i].lcore, c->stages[i].lcore_pos,
					       c->stages[i].name};
	for (int i = 1; i < nu; i++)
		for (int j = 0; j < i; j++)
			if (used[i].lcore == used[j].lcore) {
				struct fz_cfgpos p = used[i].pos.line ? used[i].pos : used[j].pos;
				return fz_appcfg_err(c, p, doc->err, doc->errlen,
						     "lcore %d of '%s' is already used by '%s'; each "
						     "of rx, tx and the stages needs its own lcore",
						     used[i].lcore, used[i].what, used[j].what);
			}
	return 0;
}

int fz_appcfg_load(const char *path, const char *buf, size_t len, const char *base_dir,
		   struct fz_appcfg *cfg, char *err, size_t errlen)
{
	struct fz_ydoc *doc;
	char dir[FZ_PATH_MAX];
	defaults(cfg);
	snprintf(cfg->path, sizeof(cfg->path), "%s", path);
	if (buf) {
		doc = fz_ydoc_parse(path, buf, len, err, errlen);
		snprintf(dir, sizeof(dir), "%s", base_dir ? base_dir : "");
	} else {
		doc = fz_ydoc_load(path, err, errlen);
		char tmp[FZ_PATH_MAX];
		snprintf(tmp, sizeof(tmp), "%s", path);
		snprintf(dir, sizeof(dir), "%s", dirname(tmp));
	}
	if (!doc)
		return -errno;
	int rc = load_doc(doc, cfg, dir);
	fz_ydoc_free(doc);
	return rc;
}

int fz_appcfg_resolve(struct fz_appcfg *c, const struct fz_model *m, char *err, size_t errlen)
{
	int next = 0; /* the first layer no stage has claimed yet */
	for (int i = 0; i < c->n_stages; i++) {
		struct fz_stage_cfg *st = &c->stages[i];
		st->first_layer = fz_model_find_layer(m, st->first);
		st->last_layer = fz_model_find_layer(m, st->last);
		const char *bad = st->first_layer < 0 ? st->first : st->last_layer < 0 ? st->last : NULL;
		if (bad)
			return fz_appcfg_err(c, st->layers_pos, err, errlen,
					     "stage '%s': no layer '%s' in model %s", st->name, bad,
					     m->path);
		if (st->first_layer > st->last_layer)
			return fz_appcfg_err(c, st->layers_pos, err, errlen,
					     "stage '%s': layer '%s' comes after '%s' in the model",
					     st->name, st->first, st->last);
		if (st->first_layer < next) {
			int owner = 0;
			while (owner < i && c->stages[owner].last_layer < st->first_layer)
				owner++;
			if (owner < i && c->stages[owner].first_layer <= st->first_layer)
				return fz_appcfg_err(c, st->layers_pos, err, errlen,
						     "stage '%s': layer '%s' is already in stage '%s'",
						     st->name, st->first, c->stages[owner].name);
			return fz_appcfg_err(c, st->layers_pos, err, errlen,
					     "stage '%s': stages out of model order ('%s' comes "
					     "before the layers of stage '%s')",
					     st->name, st->first, c->stages[i - 1].name);
		}
		for (int j = i + 1; st->first_layer > next && j < c->n_stages; j++) {
			int f = fz_model_find_layer(m, c->stages[j].first);
			if (f >= 0 && f <= next)
				return fz_appcfg_err(c, st->layers_pos, err, errlen,
						     "stage '%s': stages out of model order: stage "
						     "'%s' (from '%s') must come before it",
						     st->name, c->stages[j].name, c->stages[j].first);
		}
		if (st->first_layer > next)
			return fz_appcfg_err(c, st->layers_pos, err, errlen,
					     "stage '%s': layer '%s' is in no stage (stage '%s' "
					     "should start there)",
					     st->name, m->layers[next].name, st->name);
		next = st->last_layer + 1;
	}
	if (next < m->n_layers) {
		const struct fz_stage_cfg *st = &c->stages[c->n_stages - 1];
		return fz_appcfg_err(c, st->layers_pos, err, errlen,
				     "layer '%s' is in no stage (the last stage ends at '%s')",
				     m->layers[next].name, st->last);
	}
	return 0;
}
