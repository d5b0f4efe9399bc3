/* Freeze cachecore: cache objects, parameters, names, and the set of a model's caches. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cache_pvt.h"

static const char *const kind_names[] = {
#define FZ_CK_STR(e, s) s,
	FZ_FOREACH_CACHE_KIND(FZ_CK_STR)
#undef FZ_CK_STR
};
static const char *const thr_names[] = {
#define FZ_CT_STR(e, s) s,
	FZ_FOREACH_CACHE_THR(FZ_CT_STR)
#undef FZ_CT_STR
};
static const char *const evict_names[] = {
#define FZ_CE_STR(e, s) s,
	FZ_FOREACH_CACHE_EVICT(FZ_CE_STR)
#undef FZ_CE_STR
};

const char *fz_cache_kind_name(enum fz_cache_kind k)
{
	return (unsigned)k < FZ_CACHE_KIND__COUNT ? kind_names[k] : "?";
}

const char *fz_cache_thr_name(enum fz_cache_thr_mode m)
{
	return (unsigned)m < FZ_CACHE_THR__COUNT ? thr_names[m] : "?";
}

const char *fz_cache_evict_name(enum fz_cache_evict e)
{
	return (unsigned)e < FZ_CACHE_EVICT__COUNT ? evict_names[e] : "?";
}

void fz_cache_params_default(struct fz_cache_params *p)
{
	memset(p, 0, sizeof(*p));
	/* the key and size that won perf/bench_cache_keys.sh on the shipped model */
	p->kind = FZ_CACHE_KMEANS;
	p->grid = 4;
	p->dims = 64;
	p->l2 = true;
	p->k = 8;
	p->size = 1024;
	p->capacity = 0;
	p->evict = FZ_CACHE_EVICT_CLOCK;
	p->thr_mode = FZ_CACHE_THR_BUDGET;
	p->enabled = true;
	p->online = false;
}

void *fz_cache_zalloc(size_t bytes)
{
	size_t sz = (bytes + FZ_CACHE_LINE - 1) / FZ_CACHE_LINE * FZ_CACHE_LINE;
	void *m = aligned_alloc(FZ_CACHE_LINE, sz ? sz : FZ_CACHE_LINE);

	if (m)
		memset(m, 0, sz ? sz : FZ_CACHE_LINE);
	return m;
}

struct fz_cache *fz_cache_create(const struct fz_cache_params *p, int c, int h, int w,
				 int n_classes)
{
	struct fz_cache *ca;

	if (!p || c < 1 || h < 1 || w < 1 || p->grid < 1 || p->grid > h || p->grid > w ||
	    n_classes < 2 || n_classes > FZ_CACHE_MAX_CLASSES || p->size < 1 || p->capacity < 0 ||
	    p->dims < 0 || (unsigned)p->kind >= FZ_CACHE_KIND__COUNT ||
	    (unsigned)p->evict >= FZ_CACHE_EVICT__COUNT ||
	    (unsigned)p->thr_mode >= FZ_CACHE_THR__COUNT ||
	    (p->kind == FZ_CACHE_KNN && (p->k < 1 || p->k > FZ_CACHE_MAX_K)) ||
	    (p->kind == FZ_CACHE_LEARNED &&
	     (p->hidden < 0 || p->hidden > 1024 || p->capacity || p->online ||
	      n_classes + 1 > FZ_CACHE_MAX_DIM))) {
		errno = EINVAL;
		return NULL;
	}
	const bool learned = p->kind == FZ_CACHE_LEARNED;
	int pooled = c * p->grid * p->grid;
	/* PCA to >= pooled dims: no projection; a learned cache's key is its logits and guard */
	int dims = !learned && p->dims < pooled ? p->dims : 0;
	int dim = learned ? n_classes + 1 : dims ? dims : pooled;
	struct fz_cache *sub = NULL;
	if (learned && p->confirm) {
		struct fz_cache_params sp = *p;
		sp.kind = FZ_CACHE_KMEANS;
		sp.confirm = false;
		sp.thr_mode = FZ_CACHE_THR_FIXED;
		sp.threshold = 0.0f;
		if (!(sub = fz_cache_create(&sp, c, h, w, n_classes)))
			return NULL;
		dim += sub->dim;
	}
	if (pooled > FZ_CACHE_MAX_POOLED || dim > FZ_CACHE_MAX_DIM ||
	    (long)p->size + p->capacity > (1L << 24)) {
		errno = EINVAL;
		return NULL;
	}
	ca = fz_cache_zalloc(sizeof(*ca));
	if (!ca) {
		fz_cache_free(sub);
		return NULL;
	}
	ca->sub = sub;
	ca->p = *p;
	ca->p.dims = dims;
	if (learned) {
		ca->p.l2 = false;
		ca->p.size = 1; /* no entries */
		ca->h_n1 = p->hidden ? p->hidden : n_classes;
		ca->h_n1p = (ca->h_n1 + FZ_BLK - 1) / FZ_BLK * FZ_BLK;
		ca->h_cp = (n_classes + FZ_BLK - 1) / FZ_BLK * FZ_BLK;
		ca->h_w1t = fz_cache_zalloc((size_t)pooled * ca->h_n1p * sizeof(float));
		ca->h_b1 = fz_cache_zalloc((size_t)ca->h_n1p * sizeof(float));
		ca->h_w2t = fz_cache_zalloc((size_t)ca->h_n1p * ca->h_cp * sizeof(float));
		ca->h_b2 = fz_cache_zalloc((size_t)ca->h_cp * sizeof(float));
		ca->h_mean = fz_cache_zalloc((size_t)pooled * sizeof(float));
		ca->h_isd = fz_cache_zalloc((size_t)pooled * sizeof(float));
		if (!ca->h_w1t || !ca->h_b1 || !ca->h_w2t || !ca->h_b2 || !ca->h_mean ||
		    !ca->h_isd) {
			fz_cache_free(ca);
			errno = ENOMEM;
			return NULL;
		}
	}
	ca->c = c;
	ca->h = h;
	ca->w = w;
	ca->n_classes = n_classes;
	ca->pooled_dim = pooled;
	ca->dim = dim;
	ca->base_slots = ca->p.size;
	ca->slots = ca->p.size + p->capacity;
	ca->n_blocks = (ca->slots + FZ_BLK - 1) / FZ_BLK;
	fz_cache_set_gate(ca, (struct fz_cache_gate){
				      .thr = p->thr_mode == FZ_CACHE_THR_FIXED ? p->threshold : 0.0f,
				      .on = p->enabled});
	size_t ns = (size_t)ca->n_blocks * FZ_BLK;
	ca->keys = fz_cache_zalloc(ns * (size_t)dim * sizeof(float));
	ca->norm2 = fz_cache_zalloc(ns * sizeof(*ca->norm2));
	ca->labels = fz_cache_zalloc(ns * sizeof(*ca->labels));
	ca->frac = fz_cache_zalloc(ns * sizeof(*ca->frac));
	ca->seq = fz_cache_zalloc(ns * sizeof(*ca->seq));
	ca->ref = fz_cache_zalloc(ns * sizeof(*ca->ref));
	ca->used = fz_cache_zalloc(ns * sizeof(*ca->used));
	if (dims) {
		ca->pca_mean = fz_cache_zalloc((size_t)pooled * sizeof(float));
		ca->pca_proj = fz_cache_zalloc((size_t)pooled * (size_t)dims * sizeof(float));
	}
	if (!ca->keys || !ca->norm2 || !ca->labels || !ca->frac || !ca->seq || !ca->ref ||
	    !ca->used || (dims && (!ca->pca_mean || !ca->pca_proj))) {
		fz_cache_free(ca);
		errno = ENOMEM;
		return NULL;
	}
	for (size_t s = 0; s < ns; s++) {
		ca->labels[s] = FZ_CACHE_LABEL_NONE;
		ca->norm2[s] = INFINITY;
	}
	atomic_init(&ca->n_live, 0);
	atomic_init(&ca->max_norm2, 0); /* the bits of 0.0f */
	atomic_init(&ca->tick, 0);
	ca->hand = ca->base_slots;
	return ca;
}

void fz_cache_free(struct fz_cache *c)
{
	if (!c)
		return;
	free(c->keys);
	free(c->norm2);
	free(c->labels);
	free(c->frac);
	free((void *)c->seq);
	free((void *)c->ref);
	free((void *)c->used);
	free(c->pca_mean);
	free(c->pca_proj);
	free(c->h_w1t);
	free(c->h_b1);
	free(c->h_w2t);
	free(c->h_b2);
	free(c->h_mean);
	free(c->h_isd);
	fz_cache_free(c->sub);
	free(c);
}

const struct fz_cache_params *fz_cache_params(const struct fz_cache *c)
{
	return &c->p;
}

void fz_cache_tap_shape(const struct fz_cache *c, int *ch, int *h, int *w)
{
	*ch = c->c;
	*h = c->h;
	*w = c->w;
}

int fz_cache_pooled_dim(const struct fz_cache *c)
{
	return c->pooled_dim;
}

int fz_cache_key_dim(const struct fz_cache *c)
{
	return c->dim;
}

int fz_cache_entries(const struct fz_cache *c)
{
	return c->n_base + c->n_online;
}

int fz_cache_slots(const struct fz_cache *c)
{
	return c->slots;
}

size_t fz_cache_bytes(const struct fz_cache *c)
{
	size_t ns = (size_t)c->n_blocks * FZ_BLK;
	size_t b = sizeof(*c) + ns * ((size_t)c->dim * sizeof(float) + sizeof(*c->norm2) +
				      sizeof(*c->labels) + sizeof(*c->frac) + sizeof(*c->seq) +
				      sizeof(*c->ref) + sizeof(*c->used));

	if (c->p.dims)
		b += (size_t)c->pooled_dim * (1 + (size_t)c->p.dims) * sizeof(float);
	if (c->p.kind == FZ_CACHE_LEARNED)
		b += ((size_t)c->pooled_dim * (c->h_n1p + 2) + c->h_n1p * (1 + (size_t)c->h_cp) +
		      c->h_cp) * sizeof(float);
	if (c->sub)
		b += fz_cache_bytes(c->sub);
	return b;
}

struct fz_cache_gate fz_cache_gate(const struct fz_cache *c)
{
	/* relaxed: the word is the whole message (threshold and switch of one update); nothing
	 * else is published with it. Partner: the store in fz_cache_set_gate() below. */
	return fz_cache_gate_unpack(atomic_load_explicit(&c->gate, memory_order_relaxed));
}

void fz_cache_set_gate(struct fz_cache *c, struct fz_cache_gate g)
{
	/* one store of both halves: a lookup's load in fz_cache_gate() (lookup.c, learned.c)
	 * sees the old gate or this one, never a mix; relaxed, as nothing else travels with it */
	atomic_store_explicit(&c->gate, fz_cache_gate_pack(g), memory_order_relaxed);
}

/* Change one half of the gate, keeping the other: a CAS loop, so even two writers (the guard
 * and an operator tool) never undo each other's other half. */
static void gate_update(struct fz_cache *c, const float *thr, const bool *on)
{
	uint64_t w = atomic_load_explicit(&c->gate, memory_order_relaxed), nw;
	do {
		struct fz_cache_gate g = fz_cache_gate_unpack(w);
		if (thr)
			g.thr = *thr;
		if (on)
			g.on = *on;
		nw = fz_cache_gate_pack(g);
	} while (!atomic_compare_exchange_weak_explicit(&c->gate, &w, nw, memory_order_relaxed,
							memory_order_relaxed));
}

float fz_cache_threshold(const struct fz_cache *c)
{
	return fz_cache_gate(c).thr;
}

void fz_cache_set_threshold(struct fz_cache *c, float thr)
{
	gate_update(c, &thr, NULL);
}

void fz_cache_set_enabled(struct fz_cache *c, bool on)
{
	gate_update(c, NULL, &on);
}

bool fz_cache_enabled(const struct fz_cache *c)
{
	return fz_cache_gate(c).on;
}

struct fz_cache_set *fz_cache_set_new(uint64_t model_fp, int n_classes, int n_caches)
{
	struct fz_cache_set *s;

	if (n_caches < 0 || n_classes < 2 || n_classes > FZ_CACHE_MAX_CLASSES) {
		errno = EINVAL;
		return NULL;
	}
	if (n_caches > FZ_CACHE_MAX_POINTS) {
		errno = E2BIG;
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->caches = calloc(n_caches ? (size_t)n_caches : 1, sizeof(*s->caches));
	if (!s->caches) {
		free(s);
		errno = ENOMEM;
		return NULL;
	}
	s->model_fp = model_fp;
	s->n_classes = n_classes;
	s->n_caches = n_caches;
	return s;
}

void fz_cache_set_free(struct fz_cache_set *s)
{
	if (!s)
		return;
	for (int i = 0; i < s->n_caches; i++)
		fz_cache_free(s->caches[i]);
	free(s->caches);
	free(s);
}

size_t fz_cache_set_bytes(const struct fz_cache_set *s)
{
	size_t b = 0;

	for (int i = 0; i < s->n_caches; i++)
		if (s->caches[i])
			b += fz_cache_bytes(s->caches[i]);
	return b;
}
