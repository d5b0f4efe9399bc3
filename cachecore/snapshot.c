/* Freeze cachecore snapshots: a versioned, checksummed binary image of a model's caches. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_pvt.h"
#include "fz_io.h"

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "snapshots are stored little-endian; add byte swapping for this target"
#endif

/*
 * Layout (little-endian):
 *   header  : magic "FZCACHE\0", u32 version, u32 n_caches, u64 model_fp, u32 n_classes,
 *             u32 reserved, u64 file length
 *   caches  : per cache a fixed record (name, params, shape, dims, counts, threshold), then
 *             PCA mean[pooled] + proj[pooled][dims] when dims > 0, then n_entries x
 *             (u32 slot, i32 label, f32 frac, f32 key[key_dim]); a learned cache (version 2)
 *             holds instead its predictor: f32 mean[pooled], inv_std[pooled],
 *             w1t[pooled][n1p], b1[n1p], with a hidden layer w2t[n1p][cp], b2[cp], then
 *             temperature, radius^2 (n1p, cp: hidden units or classes, classes, rounded up
 *             to 16; the record's k is the hidden units; online 2 = confirmed: dims, l2 and
 *             size are the confirming k-means cache's, whose whole record follows)
 *   trailer : u32 CRC32C of every byte before it, u32 reserved
 */
#define SNAP_MAGIC "FZCACHE"
#define SNAP_VERSION 2u /* 2: learned caches; version 1 files are read too */
#define SNAP_HDR 40
#define SNAP_TRAILER 8
/* Most memory the caches of one snapshot may take: a record's size and capacity are believed
 * only this far, so a few hundred bytes cannot ask for 16 GiB of slots. The fuzz build lowers it
 * (tests/fuzz/meson.build) so that its executions go to parsing, not to zeroing memory. */
#ifndef SNAP_MAX_BYTES
#define SNAP_MAX_BYTES (1ull << 30)
#endif

struct snap_rec {
	char name[FZ_NAME_MAX];
	uint32_t kind, grid, dims, l2, k, size, capacity, evict, thr_mode, enabled, online;
	uint32_t c, h, w, pooled_dim, key_dim, n_entries, bytes; /* bytes: PCA + entries after it */
	float threshold, fixed;
};
_Static_assert(sizeof(struct snap_rec) == FZ_NAME_MAX + 18 * 4 + 8, "packed record");

uint64_t fz_fnv1a64(uint64_t h, const void *buf, size_t len)
{
	const unsigned char *p = buf;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

struct wbuf {
	unsigned char *p;
	size_t len, cap;
};

static int put(struct wbuf *b, const void *src, size_t n)
{
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 1 << 16;
		while (cap < b->len + n)
			cap *= 2;
		unsigned char *np = realloc(b->p, cap);
		if (!np)
			return -ENOMEM;
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, src, n);
	b->len += n;
	return 0;
}

static int put_u32(struct wbuf *b, uint32_t v)
{
	return put(b, &v, 4);
}

static int put_u64(struct wbuf *b, uint64_t v)
{
	return put(b, &v, 8);
}

/* The predictor's arrays in file order: (pointer, floats); n of them. */
static int head_arrays(const struct fz_cache *c, float **a, size_t *len)
{
	const size_t P = (size_t)c->pooled_dim;
	int n = 0;
	a[n] = c->h_mean, len[n++] = P;
	a[n] = c->h_isd, len[n++] = P;
	a[n] = c->h_w1t, len[n++] = P * c->h_n1p;
	a[n] = c->h_b1, len[n++] = c->h_n1p;
	if (c->p.hidden) {
		a[n] = c->h_w2t, len[n++] = (size_t)c->h_n1p * c->h_cp;
		a[n] = c->h_b2, len[n++] = c->h_cp;
	}
	return n;
}

static size_t head_bytes(const struct fz_cache *c)
{
	float *a[6];
	size_t len[6], b = 2 * sizeof(float);
	for (int i = 0, n = head_arrays(c, a, len); i < n; i++)
		b += len[i] * sizeof(float);
	return b;
}

static int put_cache(struct wbuf *b, const struct fz_cache *c)
{
	struct snap_rec r;
	int rc = 0;
	uint32_t n = 0;

	for (int s = 0; s < c->slots; s++)
		n += c->labels[s] != FZ_CACHE_LABEL_NONE;
	memset(&r, 0, sizeof(r));
	snprintf(r.name, sizeof(r.name), "%s", c->p.layer);
	r.kind = c->p.kind;
	r.grid = (uint32_t)c->p.grid;
	r.dims = (uint32_t)c->p.dims;
	r.l2 = c->p.l2;
	r.k = (uint32_t)(c->p.kind == FZ_CACHE_LEARNED ? c->p.hidden : c->p.k);
	r.size = (uint32_t)c->p.size;
	r.capacity = (uint32_t)c->p.capacity;
	r.evict = c->p.evict;
	r.thr_mode = c->p.thr_mode;
	r.enabled = fz_cache_enabled(c);
	r.online = c->p.online;
	r.c = (uint32_t)c->c;
	r.h = (uint32_t)c->h;
	r.w = (uint32_t)c->w;
	r.pooled_dim = (uint32_t)c->pooled_dim;
	r.key_dim = (uint32_t)c->dim;
	r.n_entries = n;
	r.bytes = (uint32_t)((size_t)n * (12 + (size_t)c->dim * 4) +
			     (c->p.dims ? (size_t)c->pooled_dim * (1 + (size_t)c->p.dims) * 4 : 0));
	if (c->p.kind == FZ_CACHE_LEARNED) {
		r.bytes = (uint32_t)head_bytes(c);
		if (c->sub) {
			r.online = 2;
			r.dims = (uint32_t)c->sub->p.dims;
			r.l2 = c->sub->p.l2;
			r.size = (uint32_t)c->sub->p.size;
		}
	}
	r.threshold = fz_cache_threshold(c);
	r.fixed = c->p.threshold;
	rc |= put(b, &r, sizeof(r));
	if (c->p.kind == FZ_CACHE_LEARNED) {
		float *a[6];
		size_t len[6];
		for (int i = 0, n = head_arrays(c, a, len); i < n; i++)
			rc |= put(b, a[i], len[i] * sizeof(float));
		rc |= put(b, &c->h_temp, 4);
		rc |= put(b, &c->h_r2, 4);
		if (!rc && c->sub)
			return put_cache(b, c->sub);
		return rc ? -ENOMEM : 0;
	}
	if (c->p.dims) {
		rc |= put(b, c->pca_mean, (size_t)c->pooled_dim * sizeof(float));
		rc |= put(b, c->pca_proj, (size_t)c->pooled_dim * c->p.dims * sizeof(float));
	}
	for (int s = 0; s < c->slots && !rc; s++) {
		if (c->labels[s] == FZ_CACHE_LABEL_NONE)
			continue;
		rc |= put_u32(b, (uint32_t)s);
		rc |= put_u32(b, (uint32_t)c->labels[s]);
		rc |= put(b, &c->frac[s], 4);
		for (int d = 0; d < c->dim; d++)
			rc |= put(b, fz_cache_key_at(c->keys, c->dim, s, d), 4);
	}
	return rc ? -ENOMEM : 0;
}

int fz_cache_set_save(const struct fz_cache_set *s, const char *path)
{
	struct wbuf b = { 0 };
	int rc = 0;

	if (!s || !path)
		return -EINVAL;
	rc |= put(&b, SNAP_MAGIC, 8);
	rc |= put_u32(&b, SNAP_VERSION);
	rc |= put_u32(&b, (uint32_t)s->n_caches);
	rc |= put_u64(&b, s->model_fp);
	rc |= put_u32(&b, (uint32_t)s->n_classes);
	rc |= put_u32(&b, 0);
	rc |= put_u64(&b, 0); /* file length, patched below */
	for (int i = 0; i < s->n_caches && !rc; i++)
		rc = put_cache(&b, s->caches[i]);
	if (!rc) {
		uint64_t total = b.len + SNAP_TRAILER;
		memcpy(b.p + 32, &total, 8);
		rc = put_u32(&b, fz_crc32c(0, b.p, b.len));
		rc |= put_u32(&b, 0);
	}
	if (!rc)
		rc = fz_file_write_durable(path, b.p, b.len);
	free(b.p);
	return rc ? (rc < 0 ? rc : -ENOMEM) : 0;
}

static void msg(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

struct rbuf {
	const unsigned char *p;
	size_t len, off;
};

static bool take(struct rbuf *r, void *dst, size_t n)
{
	if (r->len - r->off < n)
		return false;
	memcpy(dst, r->p + r->off, n);
	r->off += n;
	return true;
}

static bool finite_all(const float *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isfinite(v[i]))
			return false;
	return true;
}

/* Bytes fz_cache_create() will allocate for a record's settings (as fz_cache_bytes() counts). */
static size_t rec_mem(const struct snap_rec *rec)
{
	size_t slots = ((size_t)rec->size + rec->capacity + 15) / 16 * 16;
	size_t pooled = (size_t)rec->c * rec->grid * rec->grid;
	size_t dim = rec->dims ? rec->dims : pooled;
	/* per slot: key, norm, label, fraction, seqlock, CLOCK bit, LRU stamp; then PCA */
	size_t entries = slots * (dim * 4 + 4 + 4 + 4 + 4 + 1 + 4) +
			 (rec->dims ? pooled * (1 + dim) * 4 : 0);

	if (rec->kind != FZ_CACHE_LEARNED)
		return entries;
	/* a learned cache: its predictor, bounded with at most FZ_CACHE_MAX_CLASSES classes
	 * (padded rows: hidden units or classes, +16), and with `online` 2 the confirming k-means
	 * cache fz_cache_create makes with it (size, dims of this record) */
	size_t n1 = (rec->k ? rec->k : FZ_CACHE_MAX_CLASSES) + 16;
	size_t cp = FZ_CACHE_MAX_CLASSES + 16;
	return (pooled * (n1 + 2) + n1 * (cp + 1) + cp) * 4 + (rec->online == 2 ? entries : 0);
}

/*
 * Parse cache i; on failure returns NULL and leaves a message (path prefixed by the caller).
 * *mem_left is what the snapshot's caches may still allocate; this cache's share comes off it.
 */
static struct fz_cache *get_cache(struct rbuf *r, int i, int n_classes, size_t *mem_left,
				  char *err, size_t errlen)
{
	struct snap_rec rec;
	struct fz_cache_params p;
	struct fz_cache *c;

	if (!take(r, &rec, sizeof(rec))) {
		msg(err, errlen, "cache %d: record runs past the end of the data", i);
		return NULL;
	}
	rec.name[FZ_NAME_MAX - 1] = 0;
	fz_cache_params_default(&p);
	snprintf(p.layer, sizeof(p.layer), "%s", rec.name);
	if (rec.kind >= FZ_CACHE_KIND__COUNT || rec.evict >= FZ_CACHE_EVICT__COUNT ||
	    rec.thr_mode >= FZ_CACHE_THR__COUNT || rec.grid < 1 || rec.grid > 64 ||
	    rec.k > (rec.kind == FZ_CACHE_LEARNED ? 1024u : FZ_CACHE_MAX_K) || rec.size > (1u << 24) || rec.capacity > (1u << 24) ||
	    rec.c > 65536 || rec.h > 65536 || rec.w > 65536 || rec.dims > FZ_CACHE_MAX_DIM) {
		msg(err, errlen, "cache %d (%s): a setting is out of range", i, p.layer);
		return NULL;
	}
	if (rec_mem(&rec) > *mem_left) {
		msg(err, errlen, "cache %d (%s): %zu slots would take %zu MiB, past the %llu MiB "
			"all caches of a snapshot may take", i, p.layer,
		    (size_t)rec.size + rec.capacity, rec_mem(&rec) >> 20, SNAP_MAX_BYTES >> 20);
		return NULL;
	}
	*mem_left -= rec_mem(&rec);
	p.kind = rec.kind;
	p.grid = (int)rec.grid;
	p.dims = (int)rec.dims;
	p.l2 = rec.l2 != 0;
	p.k = (int)rec.k;
	if (rec.kind == FZ_CACHE_LEARNED) {
		p.k = 1;
		p.hidden = (int)rec.k;
		p.confirm = rec.online == 2;
		rec.online = 0;
	}
	p.size = (int)rec.size;
	p.capacity = (int)rec.capacity;
	p.evict = rec.evict;
	p.thr_mode = rec.thr_mode;
	p.threshold = rec.fixed;
	p.enabled = rec.enabled != 0;
	p.online = rec.online != 0;
	c = fz_cache_create(&p, (int)rec.c, (int)rec.h, (int)rec.w, n_classes);
	if (!c) {
		msg(err, errlen, "cache %d (%s): settings do not describe a valid cache", i, p.layer);
		return NULL;
	}
	if ((uint32_t)c->pooled_dim != rec.pooled_dim || (uint32_t)c->dim != rec.key_dim ||
	    rec.n_entries > (uint32_t)c->slots) {
		msg(err, errlen,
		    "cache %d (%s): dims or counts lie (pooled %u, key %u, %u entries for %d slots)",
		    i, p.layer, rec.pooled_dim, rec.key_dim, rec.n_entries, c->slots);
		goto fail;
	}
	fz_cache_set_threshold(c, rec.threshold);
	if (p.kind == FZ_CACHE_LEARNED) {
		float *a[6];
		size_t len[6], need = head_bytes(c);
		if (rec.n_entries || need != rec.bytes || r->len - r->off < need) {
			msg(err, errlen, "cache %d (%s): a learned cache's predictor needs %zu bytes "
				"and no entries; the record says %u bytes, %u entries (%zu left)", i,
			    p.layer, need, rec.bytes, rec.n_entries, r->len - r->off);
			goto fail;
		}
		for (int q = 0, n = head_arrays(c, a, len); q < n; q++) {
			take(r, a[q], len[q] * 4);
			if (!finite_all(a[q], len[q]))
				goto bad_head;
		}
		take(r, &c->h_temp, 4);
		take(r, &c->h_r2, 4);
		if (!(c->h_temp > 0.0f) || !isfinite(c->h_temp) || !(c->h_r2 >= 0.0f) ||
		    !isfinite(c->h_r2))
			goto bad_head;
		c->head_set = true;
		if (c->sub) { /* the confirmer's own record follows */
			struct fz_cache *sub = get_cache(r, i, n_classes, mem_left, err, errlen);
			if (!sub)
				goto fail;
			if (sub->p.kind != FZ_CACHE_KMEANS || sub->pooled_dim != c->pooled_dim ||
			    sub->dim != c->sub->dim || sub->p.grid != c->p.grid) {
				fz_cache_free(sub);
				msg(err, errlen, "cache %d (%s): its confirming cache does not match "
					"it", i, p.layer);
				goto fail;
			}
			fz_cache_free(c->sub);
			c->sub = sub;
		}
		return c;
	bad_head:
		msg(err, errlen, "cache %d (%s): the predictor holds a non-finite or out-of-range "
			"value", i, p.layer);
		goto fail;
	}
	size_t need = (size_t)rec.n_entries * (12 + (size_t)c->dim * 4);
	if (p.dims)
		need += (size_t)c->pooled_dim * (1 + (size_t)p.dims) * 4;
	if (need != rec.bytes) {
		msg(err, errlen, "cache %d (%s): counts lie: %u entries of %d floats need %zu bytes, "
			"the record holds %u", i, p.layer, rec.n_entries, c->dim, need, rec.bytes);
		goto fail;
	}
	if (r->len - r->off < need) {
		msg(err, errlen, "cache %d (%s): %u entries need %zu bytes, %zu left", i, p.layer,
		    rec.n_entries, need, r->len - r->off);
		goto fail;
	}
	if (p.dims) {
		take(r, c->pca_mean, (size_t)c->pooled_dim * 4);
		take(r, c->pca_proj, (size_t)c->pooled_dim * p.dims * 4);
		if (!finite_all(c->pca_mean, c->pooled_dim) ||
		    !finite_all(c->pca_proj, (size_t)c->pooled_dim * p.dims)) {
			msg(err, errlen, "cache %d (%s): PCA holds a non-finite value", i, p.layer);
			goto fail;
		}
		c->pca_fitted = true;
	}
	float key[FZ_CACHE_MAX_DIM];
	for (uint32_t e = 0; e < rec.n_entries; e++) {
		uint32_t slot = 0;
		int32_t lab = -1;
		float frac;
		take(r, &slot, 4);
		take(r, &lab, 4);
		take(r, &frac, 4);
		take(r, key, (size_t)c->dim * 4);
		if (slot >= (uint32_t)c->slots || lab < 0 || lab >= n_classes ||
		    c->labels[slot] != FZ_CACHE_LABEL_NONE || !(frac >= 0.0f && frac <= 1.0f) ||
		    !finite_all(key, c->dim)) {
			msg(err, errlen, "cache %d (%s): entry %u is invalid (slot %u, label %d)", i,
			    p.layer, e, slot, lab);
			goto fail;
		}
		fz_cache_write_slot(c, (int)slot, key, lab, frac);
		if ((int)slot < c->base_slots)
			c->n_base++;
		else if ((int)slot - c->base_slots + 1 > c->n_online)
			c->n_online = (int)slot - c->base_slots + 1;
	}
	return c;
fail:
	fz_cache_free(c);
	return NULL;
}

struct fz_cache_set *fz_cache_set_parse(const char *path, const void *buf, size_t len,
					uint64_t model_fp, char *err, size_t errlen)
{
	struct fz_cache_set *s = NULL;
	char why[256];
	const unsigned char *p = buf;
	uint32_t version, n_caches, n_classes, crc;
	uint64_t fp, total;
	if (len < SNAP_HDR + SNAP_TRAILER) {
		msg(err, errlen, "%s: truncated snapshot (%zu bytes, a header alone takes %d)", path,
		    len, SNAP_HDR + SNAP_TRAILER);
		goto bad;
	}
	if (memcmp(p, SNAP_MAGIC, 8)) {
		msg(err, errlen, "%s: not a Freeze cache snapshot (bad magic)", path);
		goto bad;
	}
	memcpy(&version, p + 8, 4);
	memcpy(&n_caches, p + 12, 4);
	memcpy(&fp, p + 16, 8);
	memcpy(&n_classes, p + 24, 4);
	memcpy(&total, p + 32, 8);
	if (version != SNAP_VERSION && version != 1) {
		msg(err, errlen, "%s: snapshot version %u, this build reads versions 1 and %u", path,
		    version, SNAP_VERSION);
		goto bad;
	}
	if (total != len) {
		msg(err, errlen, "%s: %s snapshot (%zu bytes, header says %llu)", path,
		    len < total ? "truncated" : "overlong", len, (unsigned long long)total);
		goto bad;
	}
	memcpy(&crc, p + len - SNAP_TRAILER, 4);
	if (fz_crc32c(0, p, len - SNAP_TRAILER) != crc) {
		msg(err, errlen, "%s: checksum mismatch: the snapshot is corrupt", path);
		goto bad;
	}
	if (model_fp && fp != model_fp) {
		msg(err, errlen,
		    "%s: snapshot is for another model (fingerprint %016llx, this model %016llx): "
		    "calibrate again for this model",
		    path, (unsigned long long)fp, (unsigned long long)model_fp);
		goto bad;
	}
	if (n_classes < 2 || n_classes > FZ_CACHE_MAX_CLASSES || n_caches > 1024) {
		msg(err, errlen, "%s: counts lie (%u classes, %u caches)", path, n_classes, n_caches);
		goto bad;
	}
	if (n_caches > FZ_CACHE_MAX_POINTS) {
		msg(err, errlen, "%s: %u cache points, more than FZ_CACHE_MAX_POINTS (%d)", path,
		    n_caches, FZ_CACHE_MAX_POINTS);
		goto bad;
	}
	s = fz_cache_set_new(fp, (int)n_classes, (int)n_caches);
	if (!s)
		return NULL;
	struct rbuf r = { .p = p, .len = len - SNAP_TRAILER, .off = SNAP_HDR };
	size_t mem_left = SNAP_MAX_BYTES;
	for (uint32_t i = 0; i < n_caches; i++) {
		/* version 1 knew two kinds (a record too short for its kind is refused below) */
		if (version == 1 && r.len - r.off >= FZ_NAME_MAX + 4) {
			uint32_t kind;
			memcpy(&kind, r.p + r.off + FZ_NAME_MAX, 4);
			if (kind == FZ_CACHE_LEARNED) {
				msg(err, errlen, "%s: cache %u: kind %u in a version 1 snapshot", path,
				    i, kind);
				goto bad;
			}
		}
		s->caches[i] = get_cache(&r, (int)i, (int)n_classes, &mem_left, why, sizeof(why));
		if (!s->caches[i]) {
			msg(err, errlen, "%s: %s", path, why);
			goto bad;
		}
	}
	if (r.off != r.len) {
		msg(err, errlen, "%s: counts lie: %zu bytes left after the last cache", path,
		    r.len - r.off);
		goto bad;
	}
	return s;
bad:
	fz_cache_set_free(s);
	errno = EINVAL;
	return NULL;
}

struct fz_cache_set *fz_cache_set_load(const char *path, uint64_t model_fp, char *err,
				       size_t errlen)
{
	void *buf = NULL;
	size_t len = 0;
	struct fz_cache_set *s;
	int rc = fz_file_read(path, &buf, &len);

	if (rc) {
		msg(err, errlen, "%s: cannot read snapshot: %s", path, strerror(-rc));
		errno = -rc;
		return NULL;
	}
	s = fz_cache_set_parse(path, buf, len, model_fp, err, errlen);
	rc = errno;
	free(buf);
	errno = rc;
	return s;
}
