/* Front tiers (fz_front.h): input keys, the exact table, near-duplicate inputs, per-flow memory. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cache_pvt.h"
#include "fz_cache.h"
#include "fz_front.h"

/* ---- input keys ---- */

struct fz_front_keyer {
	int c, h, w, grid, dim;
	size_t pixels;
	int *y0, *x0; /* [grid + 1]: cell edges */
	float *wt;    /* [grid * grid]: sqrt(cell pixels / channel pixels / c) / (255 * pixels) */
};

int fz_front_grid_auto(int c, int h, int w)
{
	int g = 1;
	while (c * (g + 1) * (g + 1) <= FZ_FRONT_MAX_DIM && g + 1 <= h && g + 1 <= w)
		g++;
	return g;
}

struct fz_front_keyer *fz_front_keyer_create(int c, int h, int w, int grid)
{
	if (c < 1 || h < 1 || w < 1 || h > 4096 || w > 4096 || grid < 1 || grid > h || grid > w ||
	    c * grid * grid > FZ_FRONT_MAX_DIM) {
		errno = EINVAL;
		return NULL;
	}
	struct fz_front_keyer *k = calloc(1, sizeof(*k));
	if (!k)
		return NULL;
	k->c = c, k->h = h, k->w = w, k->grid = grid, k->dim = c * grid * grid;
	k->pixels = (size_t)c * h * w;
	k->y0 = malloc(sizeof(int) * (size_t)(grid + 1));
	k->x0 = malloc(sizeof(int) * (size_t)(grid + 1));
	k->wt = malloc(sizeof(float) * (size_t)grid * grid);
	if (!k->y0 || !k->x0 || !k->wt) {
		fz_front_keyer_free(k);
		errno = ENOMEM;
		return NULL;
	}
	for (int i = 0; i <= grid; i++) {
		k->y0[i] = (int)((long)i * h / grid);
		k->x0[i] = (int)((long)i * w / grid);
	}
	/* key = cell sum * wt: the mean / 255 times sqrt(cell pixels / all pixels) */
	for (int i = 0; i < grid; i++)
		for (int j = 0; j < grid; j++) {
			double np = (double)(k->y0[i + 1] - k->y0[i]) * (k->x0[j + 1] - k->x0[j]);
			k->wt[i * grid + j] = (float)(sqrt(np / (double)k->pixels) / (255.0 * np));
		}
	return k;
}

void fz_front_keyer_free(struct fz_front_keyer *k)
{
	if (!k)
		return;
	free(k->y0), free(k->x0), free(k->wt);
	free(k);
}

int fz_front_key_dim(const struct fz_front_keyer *k)
{
	return k->dim;
}

size_t fz_front_key_pixels(const struct fz_front_keyer *k)
{
	return k->pixels;
}

void fz_front_key_u8(const struct fz_front_keyer *k, const uint8_t *img, float *key)
{
	const int g = k->grid;
	for (int ch = 0; ch < k->c; ch++) {
		const uint8_t *p = img + (size_t)ch * k->h * k->w;
		for (int i = 0; i < g; i++)
			for (int j = 0; j < g; j++) {
				uint32_t sum = 0; /* at most 4096^2 * 255: fits */
				for (int y = k->y0[i]; y < k->y0[i + 1]; y++)
					for (int x = k->x0[j]; x < k->x0[j + 1]; x++)
						sum += p[(size_t)y * k->w + x];
				key[(ch * g + i) * g + j] = (float)sum * k->wt[i * g + j];
			}
	}
}

int fz_front_image_f32(const float *raw, size_t n, uint8_t *img)
{
	for (size_t i = 0; i < n; i++) {
		const float v = raw[i];
		/* NaN fails both comparisons */
		if (!(v >= 0.f && v <= 255.f) || v != (float)(int)v)
			return -ERANGE;
		img[i] = (uint8_t)v;
	}
	return 0;
}

uint64_t fz_front_sse(const uint8_t *a, const uint8_t *b, size_t n)
{
	uint64_t s = 0;
	for (size_t i = 0; i < n; i++) {
		const int d = (int)a[i] - (int)b[i];
		s += (uint64_t)(d * d);
	}
	return s;
}

float fz_front_d2(const float *a, const float *b, int dim)
{
	float s = 0;
	for (int i = 0; i < dim; i++) {
		float d = a[i] - b[i];
		s += d * d;
	}
	return s;
}

/* ---- exact answers ---- */

enum { SLOT_EMPTY, SLOT_PENDING, SLOT_READY };

struct exact_slot {
	uint64_t hash;
	uint32_t gen, len;
	uint8_t state, ref;
	struct fz_front_answer ans;
};

struct fz_exact {
	unsigned sets, mask;
	size_t max_bytes;
	struct exact_slot *slot; /* [sets * WAYS] */
	uint8_t *bytes;          /* [sets * WAYS][max_bytes] */
	uint8_t *hand;           /* CLOCK hand per set */
	unsigned used;
	struct fz_exact_stats st;
};

struct fz_exact *fz_exact_create(unsigned entries, size_t max_bytes)
{
	if (entries < FZ_FRONT_WAYS || !max_bytes || max_bytes > (1u << 24)) {
		errno = EINVAL;
		return NULL;
	}
	unsigned sets = 1;
	while (sets * 2 * FZ_FRONT_WAYS <= entries)
		sets *= 2;
	struct fz_exact *e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	e->sets = sets, e->mask = sets - 1, e->max_bytes = max_bytes;
	e->slot = calloc((size_t)sets * FZ_FRONT_WAYS, sizeof(*e->slot));
	e->bytes = malloc((size_t)sets * FZ_FRONT_WAYS * max_bytes);
	e->hand = calloc(sets, 1);
	if (!e->slot || !e->bytes || !e->hand) {
		fz_exact_free(e);
		errno = ENOMEM;
		return NULL;
	}
	return e;
}

void fz_exact_free(struct fz_exact *e)
{
	if (!e)
		return;
	free(e->slot), free(e->bytes), free(e->hand);
	free(e);
}

unsigned fz_exact_capacity(const struct fz_exact *e)
{
	return e->sets * FZ_FRONT_WAYS;
}

size_t fz_exact_bytes(const struct fz_exact *e)
{
	return sizeof(*e) + (size_t)fz_exact_capacity(e) * (sizeof(*e->slot) + e->max_bytes) +
	       e->sets;
}

uint64_t fz_exact_hash(uint64_t model_fp, unsigned dtype, unsigned c, unsigned h, unsigned w,
		       const void *bytes, size_t len)
{
	const uint32_t hdr[4] = {dtype, c, h, w};
	uint64_t a = fz_fnv1a64(FZ_FNV64_INIT, &model_fp, sizeof(model_fp));
	a = fz_fnv1a64(a, hdr, sizeof(hdr));
	/* the bytes through CRC32C (one instruction per 8 bytes) twice, seeded apart */
	uint32_t lo = fz_crc32c((uint32_t)a, bytes, len), hi = fz_crc32c((uint32_t)(a >> 32), bytes, len);
	return ((uint64_t)hi << 32 | lo) ^ a;
}

static const uint8_t *exact_bytes(const struct fz_exact *e, unsigned i)
{
	return e->bytes + (size_t)i * e->max_bytes;
}

enum fz_exact_state fz_exact_find(struct fz_exact *e, uint64_t hash, const void *bytes,
				  size_t len, int *slot, struct fz_front_answer *ans)
{
	e->st.lookups++;
	const unsigned base = (unsigned)(hash & e->mask) * FZ_FRONT_WAYS;
	for (unsigned i = base; i < base + FZ_FRONT_WAYS; i++) {
		struct exact_slot *s = &e->slot[i];
		if (s->state == SLOT_EMPTY || s->hash != hash || s->len != len ||
		    memcmp(exact_bytes(e, i), bytes, len))
			continue;
		s->ref = 1;
		*slot = (int)i;
		if (s->state == SLOT_PENDING) {
			e->st.pending_hits++;
			return FZ_EXACT_PENDING;
		}
		e->st.hits++;
		if (ans)
			*ans = s->ans;
		return FZ_EXACT_READY;
	}
	return FZ_EXACT_MISS;
}

int fz_exact_claim(struct fz_exact *e, uint64_t hash, const void *bytes, size_t len,
		   uint32_t *gen)
{
	if (len > e->max_bytes)
		return -EINVAL;
	const unsigned set = (unsigned)(hash & e->mask), base = set * FZ_FRONT_WAYS;
	unsigned victim = base + FZ_FRONT_WAYS;
	for (unsigned i = base; i < base + FZ_FRONT_WAYS; i++)
		if (e->slot[i].state == SLOT_EMPTY) {
			victim = i;
			break;
		}
	if (victim == base + FZ_FRONT_WAYS) {
		/* CLOCK: the hand passes slots used since it last came by (clearing their bit);
		 * a pending slot is passed as used (its request is still in flight) */
		for (int round = 0; round < 2 * FZ_FRONT_WAYS + 1; round++) {
			unsigned i = base + e->hand[set];
			e->hand[set] = (uint8_t)((e->hand[set] + 1) % FZ_FRONT_WAYS);
			struct exact_slot *s = &e->slot[i];
			if (s->ref || (s->state == SLOT_PENDING && round < FZ_FRONT_WAYS)) {
				s->ref = 0;
				continue;
			}
			victim = i;
			break;
		}
		if (victim == base + FZ_FRONT_WAYS)
			victim = base + e->hand[set];
		e->st.evictions++;
		e->used--;
	}
	struct exact_slot *s = &e->slot[victim];
	s->hash = hash;
	s->len = (uint32_t)len;
	s->state = SLOT_PENDING;
	s->ref = 0;
	s->gen++;
	memcpy(e->bytes + (size_t)victim * e->max_bytes, bytes, len);
	e->used++;
	*gen = s->gen;
	return (int)victim;
}

static struct exact_slot *exact_own(struct fz_exact *e, int slot, uint32_t gen)
{
	if (slot < 0 || (unsigned)slot >= fz_exact_capacity(e))
		return NULL;
	struct exact_slot *s = &e->slot[slot];
	return s->state == SLOT_EMPTY || s->gen != gen ? NULL : s;
}

int fz_exact_fill(struct fz_exact *e, int slot, uint32_t gen, const struct fz_front_answer *a)
{
	struct exact_slot *s = exact_own(e, slot, gen);
	if (!s)
		return -ESTALE;
	s->ans = *a;
	s->state = SLOT_READY;
	e->st.inserts++;
	return 0;
}

int fz_exact_drop(struct fz_exact *e, int slot, uint32_t gen)
{
	struct exact_slot *s = exact_own(e, slot, gen);
	if (!s)
		return -ESTALE;
	s->state = SLOT_EMPTY;
	s->gen++;
	e->used--;
	return 0;
}

void fz_exact_clear(struct fz_exact *e)
{
	for (unsigned i = 0; i < fz_exact_capacity(e); i++)
		if (e->slot[i].state != SLOT_EMPTY) {
			e->slot[i].state = SLOT_EMPTY;
			e->slot[i].gen++;
		}
	e->used = 0;
	e->st.clears++;
}

unsigned fz_exact_count(const struct fz_exact *e)
{
	return e->used;
}

const struct fz_exact_stats *fz_exact_stats(const struct fz_exact *e)
{
	return &e->st;
}

/* ---- near-duplicate inputs ---- */

struct near_slot {
	uint32_t gen;
	uint8_t used, ref, findable;
	struct fz_front_answer ans;
};

/* Keys in blocks of NB slots, dimension-major inside a block (keys[block][dim][NB]), the layout
 * of cachecore's dist_blocks kernel: one query meets NB keys per vector step. */
#define NB 16

struct fz_near {
	unsigned cap, hand, count, hi; /* hi: slots [0, hi) may be in use (a scan stops there) */
	int dim;
	bool evict;
	size_t pixels;
	float *keys;   /* [cap / NB][dim][NB]; a free slot's key is +inf (never a candidate) */
	float *dist;   /* [cap / NB * NB] scan scratch */
	uint8_t *imgs; /* [cap][pixels] */
	struct near_slot *slot;
	unsigned *free_list, n_free;
	struct fz_near_stats st;
};

static float *near_key(const struct fz_near *n, unsigned slot, int d)
{
	return n->keys + ((size_t)(slot / NB) * n->dim + d) * NB + slot % NB;
}

static void near_key_set(struct fz_near *n, unsigned s, const float *key)
{
	for (int d = 0; d < n->dim; d++)
		*near_key(n, s, d) = key ? key[d] : INFINITY;
}

struct fz_near *fz_near_create(unsigned entries, int dim, size_t pixels, bool evict)
{
	if (!entries || dim < 1 || dim > FZ_FRONT_MAX_DIM || entries > (1u << 20) || !pixels ||
	    pixels > ((size_t)1 << 32) / entries) {
		errno = EINVAL;
		return NULL;
	}
	struct fz_near *n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	const size_t blocks = (entries + NB - 1) / NB;
	n->cap = entries, n->dim = dim, n->evict = evict, n->pixels = pixels;
	n->keys = malloc(blocks * NB * dim * sizeof(float));
	n->dist = malloc(blocks * NB * sizeof(float));
	n->imgs = malloc((size_t)entries * pixels);
	n->slot = calloc(entries, sizeof(*n->slot));
	n->free_list = malloc(entries * sizeof(*n->free_list));
	if (!n->keys || !n->dist || !n->imgs || !n->slot || !n->free_list) {
		fz_near_free(n);
		errno = ENOMEM;
		return NULL;
	}
	for (size_t i = 0; i < blocks * NB * dim; i++)
		n->keys[i] = INFINITY;
	fz_near_clear(n);
	n->st.clears = 0;
	return n;
}

void fz_near_free(struct fz_near *n)
{
	if (!n)
		return;
	free(n->keys), free(n->dist), free(n->imgs), free(n->slot), free(n->free_list);
	free(n);
}

unsigned fz_near_capacity(const struct fz_near *n)
{
	return n->cap;
}

unsigned fz_near_count(const struct fz_near *n)
{
	return n->count;
}

size_t fz_near_bytes(const struct fz_near *n)
{
	const size_t blocks = (n->cap + NB - 1) / NB;
	return sizeof(*n) + blocks * NB * (n->dim + 1) * sizeof(float) +
	       (size_t)n->cap * (n->pixels + sizeof(struct near_slot) + sizeof(unsigned));
}

/* The squared rms distance of img to slot's image as a limit on the sum of squared
 * differences: rms <= r  <=>  sse <= r^2 255^2 pixels (in double: exact enough for any r). */
static bool near_confirm(const struct fz_near *n, unsigned s, const uint8_t *img, float r,
			 float *rms2)
{
	const uint64_t sse = fz_front_sse(n->imgs + (size_t)s * n->pixels, img, n->pixels);
	const double m = (double)sse / (255.0 * 255.0 * (double)n->pixels);
	if (rms2)
		*rms2 = (float)m;
	return m <= (double)r * r;
}

int fz_near_find(struct fz_near *n, const float *key, const uint8_t *img, float r, float *rms2,
		 bool count)
{
	if (count)
		n->st.lookups++;
	if (!n->count || !img || !(r > 0))
		return -1;
	/* the keys' distance is at most the images' (fz_front.h); the float sums may round it
	 * up by a few ulps of the key norms (at most 1): a margin well above that */
	const float lim = r * r * (1 + 1e-5f) + 1e-6f;
	const unsigned nb = (n->hi + NB - 1) / NB;
	fz_cache_kern_get()->dist_blocks(key, n->keys, (int)nb, n->dim, n->dist);
	/* the nearest few within lim, ascending (free and unfindable slots hold +inf keys) */
	int cand[FZ_NEAR_CANDIDATES];
	float cd[FZ_NEAR_CANDIDATES];
	int nc = 0;
	for (unsigned j = 0; j < n->hi; j++) {
		const float d = n->dist[j];
		if (!(d <= lim) || (nc == FZ_NEAR_CANDIDATES && d >= cd[nc - 1]))
			continue;
		int at = nc < FZ_NEAR_CANDIDATES ? nc++ : nc - 1;
		while (at > 0 && cd[at - 1] > d) {
			cd[at] = cd[at - 1], cand[at] = cand[at - 1];
			at--;
		}
		cd[at] = d, cand[at] = (int)j;
	}
	for (int i = 0; i < nc; i++) {
		n->st.candidates++;
		if (near_confirm(n, (unsigned)cand[i], img, r, rms2)) {
			n->slot[cand[i]].ref = 1;
			if (count)
				n->st.hits++;
			return cand[i];
		}
		n->st.refuted++;
	}
	return -1;
}

bool fz_near_within(const struct fz_near *n, int slot, uint32_t gen, const uint8_t *img, float r)
{
	if (!img || slot < 0 || (unsigned)slot >= n->cap || !n->slot[slot].used ||
	    !n->slot[slot].findable || n->slot[slot].gen != gen)
		return false;
	return near_confirm(n, (unsigned)slot, img, r, NULL);
}

int fz_near_put(struct fz_near *n, const float *key, const uint8_t *img,
		const struct fz_front_answer *a, uint32_t *gen)
{
	for (int i = 0; img && i < n->dim; i++)
		if (!isfinite(key[i]))
			return -EINVAL;
	unsigned s;
	if (n->n_free) {
		s = n->free_list[--n->n_free];
	} else if (!n->evict) {
		n->st.full++;
		return -ENOSPC;
	} else {
		for (;;) { /* CLOCK: at most two turns */
			s = n->hand;
			n->hand = (n->hand + 1) % n->cap;
			if (!n->slot[s].ref)
				break;
			n->slot[s].ref = 0;
		}
		n->st.evictions++;
		n->count--;
	}
	near_key_set(n, s, img ? key : NULL);
	if (img)
		memcpy(n->imgs + (size_t)s * n->pixels, img, n->pixels);
	if (s >= n->hi)
		n->hi = s + 1;
	struct near_slot *sl = &n->slot[s];
	sl->gen++;
	sl->used = 1;
	sl->findable = img != NULL;
	sl->ref = 0;
	sl->ans = a ? *a : (struct fz_front_answer){.label = -1};
	n->count++;
	n->st.inserts++;
	if (gen)
		*gen = sl->gen;
	return (int)s;
}

int fz_near_get(const struct fz_near *n, int slot, uint32_t gen, float *key,
		struct fz_front_answer *a)
{
	if (slot < 0 || (unsigned)slot >= n->cap || !n->slot[slot].used ||
	    (gen != UINT32_MAX && n->slot[slot].gen != gen))
		return -ESTALE;
	for (int d = 0; key && d < n->dim; d++)
		key[d] = *near_key(n, (unsigned)slot, d);
	if (a)
		*a = n->slot[slot].ans;
	return 0;
}

uint32_t fz_near_gen(const struct fz_near *n, int slot)
{
	return slot >= 0 && (unsigned)slot < n->cap ? n->slot[slot].gen : 0;
}

int fz_near_remove(struct fz_near *n, int slot, uint32_t gen)
{
	if (fz_near_get(n, slot, gen, NULL, NULL) < 0)
		return -ESTALE;
	n->slot[slot].used = 0;
	n->slot[slot].gen++;
	near_key_set(n, (unsigned)slot, NULL);
	n->free_list[n->n_free++] = (unsigned)slot;
	n->count--;
	return 0;
}

void fz_near_clear(struct fz_near *n)
{
	n->n_free = 0;
	for (unsigned i = n->cap; i-- > 0;) {
		if (n->slot[i].used) {
			n->slot[i].gen++;
			near_key_set(n, i, NULL);
		}
		n->slot[i].used = 0;
		n->slot[i].ref = 0;
		n->free_list[n->n_free++] = i; /* slot 0 is taken first */
	}
	n->count = 0;
	n->hand = 0;
	n->hi = 0;
	n->st.clears++;
}

const struct fz_near_stats *fz_near_stats(const struct fz_near *n)
{
	return &n->st;
}

/* ---- per-flow memory ---- */

struct flow {
	uint32_t ip, gen;
	uint16_t port;
	uint8_t used;
	int32_t slot;
	uint64_t t_ns;
};

struct fz_flows {
	unsigned sets, mask;
	uint64_t timeout_ns;
	struct flow *f;
	struct fz_flows_stats st;
};

struct fz_flows *fz_flows_create(unsigned entries, uint64_t timeout_ns)
{
	if (entries < FZ_FRONT_WAYS || entries > (1u << 24)) {
		errno = EINVAL;
		return NULL;
	}
	unsigned sets = 1;
	while (sets * 2 * FZ_FRONT_WAYS <= entries)
		sets *= 2;
	struct fz_flows *f = calloc(1, sizeof(*f));
	if (!f)
		return NULL;
	f->sets = sets, f->mask = sets - 1, f->timeout_ns = timeout_ns;
	if (!(f->f = calloc((size_t)sets * FZ_FRONT_WAYS, sizeof(*f->f)))) {
		free(f);
		errno = ENOMEM;
		return NULL;
	}
	return f;
}

void fz_flows_free(struct fz_flows *f)
{
	if (f)
		free(f->f);
	free(f);
}

unsigned fz_flows_capacity(const struct fz_flows *f)
{
	return f->sets * FZ_FRONT_WAYS;
}

static unsigned flow_set(const struct fz_flows *f, uint32_t ip, uint16_t port)
{
	uint64_t k = ((uint64_t)ip << 16 | port) * 0x9e3779b97f4a7c15ull;
	return (unsigned)(k >> 40) & f->mask;
}

static bool flow_fresh(const struct fz_flows *f, const struct flow *e, uint64_t now_ns)
{
	return now_ns - e->t_ns <= f->timeout_ns;
}

int fz_flows_get(struct fz_flows *f, uint32_t ip, uint16_t port, uint64_t now_ns, int *slot,
		 uint32_t *gen)
{
	f->st.lookups++;
	struct flow *s = f->f + (size_t)flow_set(f, ip, port) * FZ_FRONT_WAYS;
	for (int i = 0; i < FZ_FRONT_WAYS; i++) {
		struct flow *e = &s[i];
		if (!e->used || e->ip != ip || e->port != port)
			continue;
		if (!flow_fresh(f, e, now_ns)) {
			e->used = 0;
			f->st.expired++;
			return -ENOENT;
		}
		f->st.found++;
		*slot = e->slot;
		*gen = e->gen;
		return 0;
	}
	return -ENOENT;
}

void fz_flows_set(struct fz_flows *f, uint32_t ip, uint16_t port, uint64_t now_ns, int slot,
		  uint32_t gen)
{
	struct flow *s = f->f + (size_t)flow_set(f, ip, port) * FZ_FRONT_WAYS, *v = NULL;
	for (int i = 0; i < FZ_FRONT_WAYS && !v; i++)
		if (s[i].used && s[i].ip == ip && s[i].port == port)
			v = &s[i];
	for (int i = 0; i < FZ_FRONT_WAYS && !v; i++)
		if (!s[i].used || !flow_fresh(f, &s[i], now_ns))
			v = &s[i];
	if (!v) { /* the set is full of live flows: the one heard from longest ago goes */
		v = &s[0];
		for (int i = 1; i < FZ_FRONT_WAYS; i++)
			if (s[i].t_ns < v->t_ns)
				v = &s[i];
		f->st.replaced++;
	}
	*v = (struct flow){.ip = ip, .port = port, .used = 1, .slot = slot, .gen = gen,
			   .t_ns = now_ns};
}

void fz_flows_clear(struct fz_flows *f)
{
	memset(f->f, 0, (size_t)fz_flows_capacity(f) * sizeof(*f->f));
}

unsigned fz_flows_count(const struct fz_flows *f, uint64_t now_ns)
{
	unsigned n = 0;
	for (unsigned i = 0; i < fz_flows_capacity(f); i++)
		n += f->f[i].used && flow_fresh(f, &f->f[i], now_ns);
	return n;
}

const struct fz_flows_stats *fz_flows_stats(const struct fz_flows *f)
{
	return &f->st;
}
