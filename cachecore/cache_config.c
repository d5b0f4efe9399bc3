/* Freeze cachecore config: the YAML file naming the cache points and each cache's settings. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fz_cache.h"
#include "fz_yaml.h"

static const char *const top_keys[] = { "build", "validation", "budget", "seed", "objective",
					"heads", "confirm_keep", "defaults", "caches", NULL };
static const char *const set_keys[] = { "layer", "kind", "key", "k", "size", "capacity",
					"eviction", "threshold", "enabled", "online", "confirm",
					NULL };
static const char *const key_keys[] = { "grid", "dims", "l2", NULL };

/* A scalar that must be one of the names of an X-macro table; *out gets its index. */
static int enum_value(struct fz_ydoc *doc, const struct fz_ynode *n, const char *what,
		      const char *(*name)(int), int count, int *out)
{
	char s[32];
	char list[256] = "";

	if (fz_ynode_str(doc, n, s, sizeof(s)))
		return -EINVAL;
	for (int i = 0; i < count; i++) {
		if (!strcmp(s, name(i))) {
			*out = i;
			return 0;
		}
		strncat(list, i ? ", " : "", sizeof(list) - strlen(list) - 1);
		strncat(list, name(i), sizeof(list) - strlen(list) - 1);
	}
	return fz_yerr(doc, n, "unknown %s '%s'; expected one of: %s", what, s, list);
}

static const char *kind_n(int i)
{
	return fz_cache_kind_name((enum fz_cache_kind)i);
}

static const char *evict_n(int i)
{
	return fz_cache_evict_name((enum fz_cache_evict)i);
}

/* Settings in mapping `m` override *p (for `defaults:` and for each `caches:` item). */
static int parse_settings(struct fz_ydoc *doc, const struct fz_ynode *m, struct fz_cache_params *p,
			  bool item)
{
	struct fz_ynode *n;
	int v;

	if (fz_ymap_check_keys(doc, m, set_keys))
		return -EINVAL;
	if (item) {
		if (fz_ymap_str(doc, m, "layer", FZ_Y_REQUIRED, p->layer, sizeof(p->layer)))
			return -EINVAL;
	} else if (fz_ymap_get(m, "layer")) {
		return fz_yerr(doc, fz_ymap_key(m, "layer"),
			       "'layer' names one cache: put it in a 'caches:' item");
	}
	if ((n = fz_ymap_get(m, "kind"))) {
		if (enum_value(doc, n, "cache kind", kind_n, FZ_CACHE_KIND__COUNT, &v))
			return -EINVAL;
		p->kind = (enum fz_cache_kind)v;
	}
	if ((n = fz_ymap_get(m, "key"))) {
		if (fz_ymap_check_keys(doc, n, key_keys) ||
		    fz_ymap_int_pos(doc, n, "grid", FZ_Y_OPTIONAL, &p->grid) ||
		    fz_ymap_int_min(doc, n, "dims", FZ_Y_OPTIONAL, 0, &p->dims) ||
		    fz_ymap_bool(doc, n, "l2", FZ_Y_OPTIONAL, &p->l2))
			return -EINVAL;
		if (p->dims > FZ_CACHE_MAX_DIM)
			return fz_yerr(doc, fz_ymap_get(n, "dims"), "dims %d is above the limit %d",
				       p->dims, FZ_CACHE_MAX_DIM);
	}
	if (fz_ymap_int_pos(doc, m, "k", FZ_Y_OPTIONAL, &p->k) ||
	    fz_ymap_int_pos(doc, m, "size", FZ_Y_OPTIONAL, &p->size) ||
	    fz_ymap_int_min(doc, m, "capacity", FZ_Y_OPTIONAL, 0, &p->capacity) ||
	    fz_ymap_bool(doc, m, "enabled", FZ_Y_OPTIONAL, &p->enabled) ||
	    fz_ymap_bool(doc, m, "online", FZ_Y_OPTIONAL, &p->online) ||
	    fz_ymap_bool(doc, m, "confirm", FZ_Y_OPTIONAL, &p->confirm))
		return -EINVAL;
	if (p->k > FZ_CACHE_MAX_K)
		return fz_yerr(doc, fz_ymap_get(m, "k"), "k %d is above the limit %d", p->k,
			       FZ_CACHE_MAX_K);
	if ((n = fz_ymap_get(m, "eviction"))) {
		if (enum_value(doc, n, "eviction policy", evict_n, FZ_CACHE_EVICT__COUNT, &v))
			return -EINVAL;
		p->evict = (enum fz_cache_evict)v;
	}
	if ((n = fz_ymap_get(m, "threshold"))) {
		double t;
		if (n->type == FZ_YNODE_SCALAR && !n->quoted && !strcmp(n->str, "zero-error")) {
			p->thr_mode = FZ_CACHE_THR_ZERO_ERROR;
		} else if (n->type == FZ_YNODE_SCALAR && !n->quoted && !strcmp(n->str, "budget")) {
			p->thr_mode = FZ_CACHE_THR_BUDGET;
		} else if (n->type == FZ_YNODE_SCALAR && !n->quoted &&
			   !fz_ynode_float(doc, n, &t)) {
			if (t < 0.0)
				return fz_yerr(doc, n, "a fixed threshold is >= 0, found %g", t);
			p->thr_mode = FZ_CACHE_THR_FIXED;
			p->threshold = (float)t;
		} else {
			return fz_yerr(doc, n,
				       "expected zero-error, budget or a number (a fixed threshold)");
		}
	}
	return 0;
}

static int parse(struct fz_ydoc *doc, struct fz_cache_config *cfg)
{
	const struct fz_ynode *root = doc->root;
	struct fz_ynode *caches, *defs;
	struct fz_cache_params def;
	int seed = 1;

	if (!root)
		return fz_yerr(doc, NULL, "empty cache config: expected a mapping with 'caches:'");
	if (fz_ymap_check_keys(doc, root, top_keys) ||
	    fz_ymap_int_pos(doc, root, "build", FZ_Y_OPTIONAL, &cfg->build) ||
	    fz_ymap_int_pos(doc, root, "validation", FZ_Y_OPTIONAL, &cfg->validation) ||
	    fz_ymap_float(doc, root, "budget", FZ_Y_OPTIONAL, &cfg->budget) ||
	    fz_ymap_float(doc, root, "confirm_keep", FZ_Y_OPTIONAL, &cfg->confirm_keep) ||
	    fz_ymap_int_min(doc, root, "seed", FZ_Y_OPTIONAL, 0, &seed))
		return -EINVAL;
	cfg->seed = (uint64_t)seed;
	if (!(cfg->confirm_keep > 0.0 && cfg->confirm_keep <= 1.0))
		return fz_yerr(doc, fz_ymap_get(root, "confirm_keep"),
			       "confirm_keep is a fraction in (0, 1], found %g", cfg->confirm_keep);
	if (cfg->budget < 0.0 || cfg->budget > 1.0)
		return fz_yerr(doc, fz_ymap_get(root, "budget"),
			       "budget is a fraction of validation requests in [0, 1], found %g",
			       cfg->budget);
	struct fz_ynode *obj = fz_ymap_get(root, "objective");
	if (obj) {
		char o[16];
		if (fz_ynode_str(doc, obj, o, sizeof(o)))
			return -EINVAL;
		if (strcmp(o, "exits") && strcmp(o, "compute"))
			return fz_yerr(doc, obj, "unknown objective '%s'; expected one of: exits, compute",
				       o);
		cfg->objective_compute = !strcmp(o, "compute");
	}
	struct fz_ynode *hn = fz_ymap_get(root, "heads");
	if (hn) {
		char h[FZ_PATH_MAX];
		if (fz_ynode_str(doc, hn, h, sizeof(h)))
			return -EINVAL;
		const char *slash = h[0] == '/' ? NULL : strrchr(cfg->path, '/');
		int dirlen = slash ? (int)(slash - cfg->path) + 1 : 0;
		int w = snprintf(cfg->heads, sizeof(cfg->heads), "%.*s%s", dirlen, cfg->path, h);
		if (w < 0 || (size_t)w >= sizeof(cfg->heads))
			return fz_yerr(doc, hn, "heads: path is too long (at most %d bytes)",
				       FZ_PATH_MAX - 1);
	}
	fz_cache_params_default(&def);
	if ((defs = fz_ymap_get(root, "defaults")) && parse_settings(doc, defs, &def, false))
		return -EINVAL;
	if (fz_ymap_find(doc, root, "caches", FZ_Y_REQUIRED, &caches))
		return -EINVAL;
	if (caches->type != FZ_YNODE_SEQ || !caches->n)
		return fz_yerr(doc, caches, "expected a non-empty sequence of caches, found %s",
			       fz_ynode_kind(caches));
	if (caches->n > FZ_CACHE_MAX_POINTS)
		return fz_yerr(doc, caches, "%zu caches, more than FZ_CACHE_MAX_POINTS (%d)",
			       (size_t)caches->n, FZ_CACHE_MAX_POINTS);
	cfg->caches = calloc(caches->n, sizeof(*cfg->caches));
	if (!cfg->caches)
		return -ENOMEM;
	for (size_t i = 0; i < caches->n; i++) {
		const struct fz_ynode *it = caches->items[i];
		struct fz_cache_params *p = &cfg->caches[i];

		*p = def;
		fz_ydoc_set_context(doc, "cache %zu", i + 1);
		if (parse_settings(doc, it, p, true))
			return -EINVAL;
		for (size_t j = 0; j < i; j++)
			if (!strcmp(cfg->caches[j].layer, p->layer))
				return fz_yerr(doc, fz_ymap_get(it, "layer"),
					       "layer '%s' already has a cache (item %zu)", p->layer,
					       j + 1);
		if (p->kind == FZ_CACHE_LEARNED && !cfg->heads[0])
			return fz_yerr(doc, it, "a learned cache needs 'heads:' (the predictors' "
					"file, written by tools/train_caches.py) at the top level");
		if (p->kind == FZ_CACHE_LEARNED && (p->online || p->capacity))
			return fz_yerr(doc, it, "a learned cache holds no entries: online and "
					"capacity do not apply");
		if (p->confirm && p->kind != FZ_CACHE_LEARNED)
			return fz_yerr(doc, fz_ymap_get(it, "confirm") ? fz_ymap_get(it, "confirm") : it,
				       "confirm: a k-means cache confirms a learned cache's answers; "
				       "this cache is %s", fz_cache_kind_name(p->kind));
		if (p->online && p->capacity < 1)
			return fz_yerr(doc, it,
				       "online: true needs capacity > 0 (slots for online entries)");
		cfg->n_caches++;
	}
	fz_ydoc_set_context(doc, NULL);
	return 0;
}

static struct fz_cache_config *config_from_doc(struct fz_ydoc *doc, const char *path)
{
	struct fz_cache_config *cfg;
	int rc;

	if (!doc)
		return NULL;
	cfg = calloc(1, sizeof(*cfg));
	if (!cfg) {
		fz_ydoc_free(doc);
		errno = ENOMEM;
		return NULL;
	}
	snprintf(cfg->path, sizeof(cfg->path), "%s", path);
	cfg->build = 50000;
	cfg->validation = 10000;
	cfg->budget = 0.004;
	cfg->objective_compute = true;
	cfg->confirm_keep = 0.75;
	rc = parse(doc, cfg);
	fz_ydoc_free(doc);
	if (rc) {
		fz_cache_config_free(cfg);
		errno = -rc;
		return NULL;
	}
	return cfg;
}

struct fz_cache_config *fz_cache_config_load(const char *path, char *err, size_t errlen)
{
	return config_from_doc(fz_ydoc_load(path, err, errlen), path);
}

struct fz_cache_config *fz_cache_config_parse(const char *path, const char *buf, size_t len,
					      char *err, size_t errlen)
{
	return config_from_doc(fz_ydoc_parse(path, buf, len, err, errlen), path ? path : "");
}

void fz_cache_config_free(struct fz_cache_config *cfg)
{
	if (!cfg)
		return;
	free(cfg->caches);
	free(cfg);
}
