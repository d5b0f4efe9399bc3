/* Front tiers (fz_front.h): input keys, the exact table, near-duplicate keys, per-flow memory. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fz_cache.h"
#include "fz_front.h"

/* ---- input keys ---- */

struct fz_front_keyer {
	int c, h, w, freqs, nx, dim; /* nx = 2 freqs - 1 column frequencies, -(freqs-1)..freqs-1 */
	float *cx, *sx;             /* [nx][w]: cos/sin(2 pi kx x / w) */
	float *cy, *sy;             /* [freqs][h] */
	float *row_re, *row_im;     /* [h][nx] scratch (one keyer per thread) */
	float *plane;               /* [w][h] scratch: the channel transposed (scaled to 0..1) */
};

struct fz_front_keyer *fz_front_keyer_create(int c, int h, int w, int freqs)
{
	if (c < 1 || h < 1 || w < 1 || h > 4096 || w > 4096 || freqs < 2 ||
	    freqs > FZ_FRONT_MAX_FREQS || freqs > h || freqs > w ||
	    c * 2 * freqs * (freqs - 1) > FZ_FRONT_MAX_DIM) {
		errno = EINVAL;
		return NULL;
	}
	struct fz_front_keyer *k = calloc(1, sizeof(*k));
	if (!k)
		return NULL;
	k->c = c, k->h = h, k->w = w, k->freqs = freqs, k->nx = 2 * freqs - 1;
	k->dim = c * 2 * freqs * (freqs - 1); /* (freqs - 1) at ky = 0, nx at each other ky */
	k->cx = malloc(sizeof(float) * (size_t)(k->nx * w));
	k->sx = malloc(sizeof(float) * (size_t)(k->nx * w));
	k->cy = malloc(sizeof(float) * (size_t)(freqs * h));
	k->sy = malloc(sizeof(float) * (size_t)(freqs * h));
	k->row_re = malloc(sizeof(float) * (size_t)(h * k->nx)); /* [nx][h] */
	k->row_im = malloc(sizeof(float) * (size_t)(h * k->nx));
	k->plane = malloc(sizeof(float) * (size_t)h * w);
	if (!k->cx || !k->sx || !k->cy || !k->sy || !k->row_re || !k->row_im || !k->plane) {
		fz_front_keyer_free(k);
		errno = ENOMEM;
		return NULL;
	}
	for (int i = 0; i < k->nx; i++) {
		int kx = i - (freqs - 1);
		for (int x = 0; x < w; x++) {
			double a = 2 * M_PI * (double)((long)kx * x % w) / w;
			k->cx[i * w + x] = (float)cos(a);
			k->sx[i * w + x] = (float)-sin(a);
		}
	}
	for (int ky = 0; ky < freqs; ky++)
		for (int y = 0; y < h; y++) {
			double a = 2 * M_PI * (double)((long)ky * y % h) / h;
			k->cy[ky * h + y] = (float)cos(a);
			k->sy[ky * h + y] = (float)-sin(a);
		}
	return k;
}

void fz_front_keyer_free(struct fz_front_keyer *k)
{
	if (!k)
		return;
	free(k->cx), free(k->sx), free(k->cy), free(k->sy), free(k->row_re), free(k->row_im), free(k->plane);
	free(k);
}

int fz_front_key_dim(const struct fz_front_keyer *k)
{
	return k->dim;
}

/* One channel's magnitudes (planeT[w][h], already scaled) into out; returns how many. Along
 * the rows first (each against the column frequencies, all rows at once: the inner loop runs
 * over rows, so it vectorises without reordering any sum), then down the columns. */
__attribute__((target_clones("avx512f", "avx2", "default")))
static int key_channel(const struct fz_front_keyer *k, const float *planeT, float *out)
{
	const int h = k->h, w = k->w, nx = k->nx, f = k->freqs;
	for (int i = 0; i < nx; i++) {
		float *re = k->row_re + (size_t)i * h, *im = k->row_im + (size_t)i * h;
		const float *cx = k->cx + (size_t)i * w, *sx = k->sx + (size_t)i * w;
		for (int y = 0; y < h; y++)
			re[y] = im[y] = 0;
		for (int x = 0; x < w; x++) {
			const float c = cx[x], sn = sx[x], *col = planeT + (size_t)x * h;
			for (int y = 0; y < h; y++) {
				re[y] += col[y] * c;
				im[y] += col[y] * sn;
			}
		}
	}
	int o = 0;
	for (int ky = 0; ky < f; ky++)
		for (int i = ky ? 0 : f; i < nx; i++) { /* kx >= 1 at ky = 0: no DC */
			const float *re = k->row_re + (size_t)i * h, *im = k->row_im + (size_t)i * h;
			const float *cy = k->cy + (size_t)ky * h, *sy = k->sy + (size_t)ky * h;
			float fr = 0, fi = 0;
			for (int y = 0; y < h; y++) {
				fr += re[y] * cy[y] - im[y] * sy[y];
				fi += re[y] * sy[y] + im[y] * cy[y];
			}
			out[o++] = sqrtf(fr * fr + fi * fi);
		}
	return o;
}

static void normalise(float *key, int dim)
{
	double s = 0;
	for (int i = 0; i < dim; i++)
		s += (double)key[i] * key[i];
	if (s <= 0)
		return;
	float inv = (float)(1.0 / sqrt(s));
	for (int i = 0; i < dim; i++)
		key[i] *= inv;
}

void fz_front_key_u8(const struct fz_front_keyer *k, const uint8_t *raw, float *key)
{
	const size_t hw = (size_t)k->h * k->w;
	int o = 0;
	for (int ch = 0; ch < k->c; ch++) {
		const uint8_t *p = raw + ch * hw;
		for (int y = 0; y < k->h; y++)
			for (int x = 0; x < k->w; x++)
				k->plane[(size_t)x * k->h + y] = p[y * k->w + x] * (1.f / 255);
		o += key_channel(k, k->plane, key + o);
	}
	normalise(key, k->dim);
}

void fz_front_key_f32(const struct fz_front_keyer *k, const float *raw, float *key)
{
	const size_t hw = (size_t)k->h * k->w;
	int o = 0;
	for (int ch = 0; ch < k->c; ch++) {
		/* a non-finite value would make every distance NaN: it counts as 0 */
		const float *p = raw + ch * hw;
		for (int y = 0; y < k->h; y++)
			for (int x = 0; x < k->w; x++) {
				float v = p[y * k->w + x];
				k->plane[(size_t)x * k->h + y] = isfinite(v) ? v * (1.f / 255) : 0.f;
			}
		o += key_channel(k, k->plane, key + o);
	}
	normalise(key, k->dim);
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

/* ---- near-duplicate keys ---- */

struct near_slot {
	uint32_t gen;
	uint8_t used, ref;
	struct fz_front_answer ans;
};

/* Keys in blocks of NB slots, dimension-major inside a block (keys[block][dim][NB]): one
 * query meets NB keys per vector step, each key's sum taken in dimension order. */
#define NB 16

struct fz_near {
	unsigned cap, hand, count, hi; /* hi: slots [0, hi) may be in use (a scan stops there) */
	int dim;
	bool evict;
	float *keys; /* [cap / NB][dim][NB] */
	struct near_slot *slot;
	unsigned *free_list, n_free;
	struct fz_near_stats st;
};

struct fz_near *fz_near_create(unsigned entries, int dim, bool evict)
{
	if (!entries || dim < 1 || dim > FZ_FRONT_MAX_DIM || entries > (1u << 20)) {
		errno = EINVAL;
		return NULL;
	}
	struct fz_near *n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->cap = entries, n->dim = dim, n->evict = evict;
	n->keys = calloc((size_t)(entries + NB - 1) / NB * NB * dim, sizeof(float));
	n->slot = calloc(entries, sizeof(*n->slot));
	n->free_list = malloc(entries * sizeof(*n->free_list));
	if (!n->keys || !n->slot || !n->free_list) {
		fz_near_free(n);
		errno = ENOMEM;
		return NULL;
	}
	fz_near_clear(n);
	n->st.clears = 0;
	return n;
}

void fz_near_free(struct fz_near *n)
{
	if (!n)
		return;
	free(n->keys), free(n->slot), free(n->free_list);
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
	return sizeof(*n) + (size_t)(n->cap + NB - 1) / NB * NB * n->dim * sizeof(float) +
	       (size_t)n->cap * (sizeof(struct near_slot) + sizeof(unsigned));
}

static float *near_key(const struct fz_near *n, unsigned slot, int d)
{
	return n->keys + ((size_t)(slot / NB) * n->dim + d) * NB + slot % NB;
}

/* Squared distances of key to the NB keys of block b (the kernel every SIMD level runs; the
 * same sums in the same order on each, so the same bits). */
__attribute__((target_clones("avx512f", "avx2", "default")))
static void near_block(const float *blk, const float *key, int dim, float *d2)
{
	float acc[NB] = {0};
	for (int d = 0; d < dim; d++) {
		const float q = key[d], *kb = blk + (size_t)d * NB;
		for (int j = 0; j < NB; j++) {
			const float t = kb[j] - q;
			acc[j] += t * t;
		}
	}
	memcpy(d2, acc, sizeof(acc));
}

float fz_near_dist2(const struct fz_near *n, int slot, const float *key)
{
	float s = 0;
	for (int d = 0; d < n->dim; d++) {
		const float t = *near_key(n, (unsigned)slot, d) - key[d];
		s += t * t;
	}
	return s;
}

int fz_near_find(struct fz_near *n, const float *key, float r2, float *d2, bool count)
{
	int best = -1;
	float bd = r2;
	if (count)
		n->st.lookups++;
	if (!n->count)
		return -1;
	float dist[NB];
	for (unsigned b = 0; b * NB < n->hi; b++) {
		near_block(n->keys + (size_t)b * n->dim * NB, key, n->dim, dist);
		for (unsigned j = 0; j < NB && b * NB + j < n->hi; j++)
			if (dist[j] <= bd && n->slot[b * NB + j].used) {
				bd = dist[j];
				best = (int)(b * NB + j);
			}
	}
	if (best >= 0) {
		n->slot[best].ref = 1;
		if (count)
			n->st.hits++;
		if (d2)
			*d2 = bd;
	}
	return best;
}

int fz_near_put(struct fz_near *n, const float *key, const struct fz_front_answer *a,
		uint32_t *gen)
{
	for (int i = 0; i < n->dim; i++)
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
	for (int d = 0; d < n->dim; d++)
		*near_key(n, s, d) = key[d];
	if (s >= n->hi)
		n->hi = s + 1;
	struct near_slot *sl = &n->slot[s];
	sl->gen++;
	sl->used = 1;
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
	n->free_list[n->n_free++] = (unsigned)slot;
	n->count--;
	return 0;
}

void fz_near_clear(struct fz_near *n)
{
	n->n_free = 0;
	for (unsigned i = n->cap; i-- > 0;) {
		if (n->slot[i].used)
			n->slot[i].gen++;
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
