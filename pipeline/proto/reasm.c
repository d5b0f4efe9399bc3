/* Freeze request reassembly: a bounded, preallocated table of multi-fragment requests. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fz_proto.h"

#define FZ_NIL UINT32_MAX

enum fz_reasm_state {
	FZ_RE_FREE,
	FZ_RE_LIVE,     /* collecting fragments */
	FZ_RE_COMPLETE, /* handed out, not yet released */
	FZ_RE_TOMB,     /* answered (complete or failed): absorbs late fragments until deadline */
};

struct fz_reasm_range {
	uint32_t off, len;
};

struct fz_reasm_entry {
	uint64_t req_id;
	uint64_t deadline;
	uint32_t src_ip;
	uint16_t src_port;
	uint8_t state;
	uint8_t dtype;
	uint8_t mac[6];
	uint16_t c, h, w;
	uint16_t n_frags;
	uint32_t total;
	uint32_t received;
	uint32_t gen;
	uint32_t slot;         /* its storage (data, ranges) while LIVE or COMPLETE, else FZ_NIL */
	uint32_t hnext;        /* hash chain */
	uint32_t aprev, anext; /* age list: oldest (earliest deadline) first; free list via anext */
};

/*
 * Entries (headers) and storage slots are apart: capacity slots of max_tensor_bytes hold the
 * requests being collected; capacity + tombstones headers hold those and the answered ones. A
 * tombstone needs no storage, so an answer is remembered for a whole timeout even when every
 * slot is busy, and none is ever forgotten early (a forgotten one lets a stray fragment start
 * the request again and time out into a second answer).
 */
struct fz_reasm {
	struct fz_reasm_params p;
	uint32_t n_entries;            /* capacity + tombstones */
	struct fz_reasm_entry *e;      /* [n_entries] */
	struct fz_reasm_range *ranges; /* max_frags per slot, sorted by offset */
	uint8_t *data;                 /* max_tensor_bytes per slot */
	uint32_t *slots;               /* free slots (a stack of n_slots) */
	uint32_t n_slots;
	uint32_t *buckets;
	uint32_t bmask;
	uint64_t seed; /* per table, so nobody can aim request ids at one hash chain */
	uint64_t now;  /* the latest time a caller gave (release has none of its own) */
	uint32_t free_head;
	uint32_t age_head, age_tail; /* every used entry, earliest deadline first */
	struct fz_reasm_stats st;
};

static uint32_t fz_reasm_hash(const struct fz_reasm *r, uint32_t ip, uint16_t port, uint64_t id)
{
	uint64_t h = (id ^ r->seed) + ((uint64_t)ip << 16 | port) * 0x9e3779b97f4a7c15ull;

	h ^= h >> 31;
	h *= 0x94d049bb133111ebull;
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 32;
	return (uint32_t)h;
}

struct fz_reasm *fz_reasm_create(const struct fz_reasm_params *p)
{
	struct fz_reasm *r;
	uint32_t nb = 1, tombs;
	size_t data_bytes;

	if (p == NULL || p->capacity == 0 || p->max_tensor_bytes == 0 || p->max_frags == 0 ||
	    p->timeout_ns == 0 || p->capacity >= (1u << 26) || p->tombstones >= (1u << 28)) {
		errno = EINVAL;
		return NULL;
	}
	if ((size_t)p->capacity > SIZE_MAX / 2 / p->max_tensor_bytes) {
		errno = EINVAL;
		return NULL;
	}
	tombs = p->tombstones;
	if (!tombs)
		tombs = FZ_REASM_TOMBS_PER_ENTRY * p->capacity > FZ_REASM_TOMBS_MIN
				? FZ_REASM_TOMBS_PER_ENTRY * p->capacity
				: FZ_REASM_TOMBS_MIN;
	data_bytes = (size_t)p->capacity * p->max_tensor_bytes;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return NULL;
	r->p = *p;
	r->p.tombstones = tombs;
	r->n_entries = p->capacity + tombs;
	while (nb < r->n_entries * 2)
		nb <<= 1;
	r->e = calloc(r->n_entries, sizeof(*r->e));
	r->ranges = calloc((size_t)p->capacity * p->max_frags, sizeof(*r->ranges));
	r->data = aligned_alloc(64, (data_bytes + 63) & ~(size_t)63);
	r->slots = malloc(p->capacity * sizeof(*r->slots));
	r->buckets = malloc(nb * sizeof(*r->buckets));
	if (r->e == NULL || r->ranges == NULL || r->data == NULL || r->slots == NULL ||
	    r->buckets == NULL) {
		fz_reasm_free(r);
		errno = ENOMEM;
		return NULL;
	}
	r->bmask = nb - 1;
	{
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		r->seed = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) *
			  0xff51afd7ed558ccdull ^ (uint64_t)(uintptr_t)r;
	}
	memset(r->buckets, 0xff, nb * sizeof(*r->buckets));
	for (uint32_t i = 0; i < r->n_entries; i++) {
		r->e[i].anext = i + 1 < r->n_entries ? i + 1 : FZ_NIL;
		r->e[i].hnext = FZ_NIL;
		r->e[i].slot = FZ_NIL;
	}
	for (uint32_t i = 0; i < p->capacity; i++)
		r->slots[i] = p->capacity - 1 - i; /* slot 0 on top */
	r->n_slots = p->capacity;
	r->free_head = 0;
	r->age_head = r->age_tail = FZ_NIL;
	r->st.free = p->capacity;
	return r;
}

void fz_reasm_free(struct fz_reasm *r)
{
	if (r == NULL)
		return;
	free(r->e);
	free(r->ranges);
	free(r->data);
	free(r->slots);
	free(r->buckets);
	free(r);
}

static uint32_t fz_reasm_find(const struct fz_reasm *r, uint32_t ip, uint16_t port, uint64_t id)
{
	uint32_t i = r->buckets[fz_reasm_hash(r, ip, port, id) & r->bmask];

	while (i != FZ_NIL) {
		const struct fz_reasm_entry *e = &r->e[i];

		if (e->req_id == id && e->src_ip == ip && e->src_port == port)
			return i;
		i = e->hnext;
	}
	return FZ_NIL;
}

/* Give entry e's storage slot back. */
static void fz_reasm_put_slot(struct fz_reasm *r, struct fz_reasm_entry *e)
{
	if (e->slot == FZ_NIL)
		return;
	r->slots[r->n_slots++] = e->slot;
	e->slot = FZ_NIL;
	r->st.free++;
}

/* Unlink entry i from the age list. */
static void fz_reasm_age_unlink(struct fz_reasm *r, uint32_t i)
{
	struct fz_reasm_entry *e = &r->e[i];

	if (e->aprev != FZ_NIL)
		r->e[e->aprev].anext = e->anext;
	else
		r->age_head = e->anext;
	if (e->anext != FZ_NIL)
		r->e[e->anext].aprev = e->aprev;
	else
		r->age_tail = e->aprev;
}

/* Append entry i to the age list (its deadline is the latest: every deadline is some time the
 * table was given + timeout, and those times do not go back). */
static void fz_reasm_age_append(struct fz_reasm *r, uint32_t i)
{
	struct fz_reasm_entry *e = &r->e[i];

	e->anext = FZ_NIL;
	e->aprev = r->age_tail;
	if (r->age_tail != FZ_NIL)
		r->e[r->age_tail].anext = i;
	else
		r->age_head = i;
	r->age_tail = i;
}

/* Unlink entry i from its hash chain and the age list and put it on the free list. */
static void fz_reasm_drop_entry(struct fz_reasm *r, uint32_t i)
{
	struct fz_reasm_entry *e = &r->e[i];
	uint32_t *pp = &r->buckets[fz_reasm_hash(r, e->src_ip, e->src_port, e->req_id) & r->bmask];

	while (*pp != i)
		pp = &r->e[*pp].hnext;
	*pp = e->hnext;
	fz_reasm_age_unlink(r, i);
	if (e->state == FZ_RE_TOMB)
		r->st.tombstones--;
	else
		r->st.live--;
	fz_reasm_put_slot(r, e);
	e->state = FZ_RE_FREE;
	e->gen++;
	e->hnext = FZ_NIL;
	e->aprev = FZ_NIL;
	e->anext = r->free_head;
	r->free_head = i;
}

/* Entry i was answered: it keeps only its key, until now + timeout, to absorb the request's
 * stray fragments (late, duplicated, or from a sender that did not hear the answer). */
static void fz_reasm_tomb(struct fz_reasm *r, uint32_t i, uint64_t now)
{
	struct fz_reasm_entry *e = &r->e[i];

	e->state = FZ_RE_TOMB;
	e->gen++;
	fz_reasm_put_slot(r, e);
	r->st.live--;
	r->st.tombstones++;
	if (e->deadline < now + r->p.timeout_ns) {
		e->deadline = now + r->p.timeout_ns;
		fz_reasm_age_unlink(r, i);
		fz_reasm_age_append(r, i);
	}
}

/* A free entry (header), FZ_NIL when every one is in use: nothing is evicted. */
static uint32_t fz_reasm_alloc(struct fz_reasm *r)
{
	uint32_t i = r->free_head;

	if (i != FZ_NIL)
		r->free_head = r->e[i].anext;
	return i;
}

static void fz_reasm_fill_out(const struct fz_proto_pkt *pkt, enum fz_proto_reason reason,
			      struct fz_reasm_req *out)
{
	memset(out, 0, sizeof(*out));
	out->reply = pkt->reply;
	out->req_id = pkt->hdr.req_id;
	out->reason = reason;
	out->dtype = pkt->hdr.dtype;
	out->c = pkt->hdr.c;
	out->h = pkt->hdr.h;
	out->w = pkt->hdr.w;
	out->len = pkt->hdr.tensor_bytes;
	out->slot = FZ_NIL;
}

/* Insert [off, off+len) into entry i's sorted ranges; a reason when it cannot. */
static enum fz_proto_reason fz_reasm_insert_range(struct fz_reasm *r, uint32_t i, uint32_t off,
						  uint32_t len)
{
	struct fz_reasm_entry *e = &r->e[i];
	struct fz_reasm_range *rg = r->ranges + (size_t)e->slot * r->p.max_frags;
	uint32_t k = 0;

	while (k < e->n_frags && rg[k].off < off)
		k++;
	if (k < e->n_frags && rg[k].off == off)
		return rg[k].len == len ? FZ_PROTO_R_DUPLICATE_FRAGMENT
					: FZ_PROTO_R_OVERLAPPING_FRAGMENT;
	if (k > 0 && rg[k - 1].off + rg[k - 1].len > off)
		return FZ_PROTO_R_OVERLAPPING_FRAGMENT;
	if (k < e->n_frags && off + len > rg[k].off)
		return FZ_PROTO_R_OVERLAPPING_FRAGMENT;
	if (e->n_frags == r->p.max_frags)
		return FZ_PROTO_R_TOO_MANY_FRAGMENTS;
	memmove(rg + k + 1, rg + k, (e->n_frags - k) * sizeof(*rg));
	rg[k].off = off;
	rg[k].len = len;
	e->n_frags++;
	return FZ_PROTO_R_OK;
}

/* A new entry under pkt's key at time now: live with a storage slot (`slot`), else a
 * tombstone; FZ_NIL when no entry (or, for a live one, no slot) is free. */
static uint32_t fz_reasm_insert(struct fz_reasm *r, const struct fz_proto_pkt *pkt, uint64_t now,
				bool slot)
{
	const struct fz_proto_req *h = &pkt->hdr;
	struct fz_reasm_entry *e;
	uint32_t i, b;

	if (slot && r->n_slots == 0)
		return FZ_NIL;
	if ((i = fz_reasm_alloc(r)) == FZ_NIL)
		return FZ_NIL;
	e = &r->e[i];
	e->req_id = h->req_id;
	e->src_ip = pkt->reply.ip;
	e->src_port = pkt->reply.port;
	memcpy(e->mac, pkt->reply.mac, 6);
	e->dtype = h->dtype;
	e->c = h->c;
	e->h = h->h;
	e->w = h->w;
	e->total = h->tensor_bytes;
	e->received = 0;
	e->n_frags = 0;
	e->deadline = now + r->p.timeout_ns;
	b = fz_reasm_hash(r, e->src_ip, e->src_port, e->req_id) & r->bmask;
	e->hnext = r->buckets[b];
	r->buckets[b] = i;
	fz_reasm_age_append(r, i);
	if (slot) {
		e->state = FZ_RE_LIVE;
		e->slot = r->slots[--r->n_slots];
		r->st.free--;
		r->st.live++;
		if (r->st.live > r->st.peak_live)
			r->st.peak_live = r->st.live;
	} else {
		e->state = FZ_RE_TOMB;
		e->slot = FZ_NIL;
		r->st.tombstones++;
	}
	return i;
}

/* Does pkt carry a whole request (nothing else of it will come, nothing to remember)? */
static bool fz_reasm_whole(const struct fz_proto_pkt *pkt)
{
	return pkt->hdr.frag_off == 0 && pkt->hdr.frag_len == pkt->hdr.tensor_bytes &&
	       pkt->reason != FZ_PROTO_R_PAYLOAD_LENGTH_MISMATCH &&
	       pkt->reason != FZ_PROTO_R_BAD_FRAGMENT;
}

/* Answer pkt's request with `why` once: remembered under its key (a tombstone) so its other
 * fragments are late; a DROP when it was answered before or cannot be remembered. */
static enum fz_reasm_result fz_reasm_refuse(struct fz_reasm *r, const struct fz_proto_pkt *pkt,
					    uint64_t now, enum fz_proto_reason why,
					    struct fz_reasm_req *out)
{
	int rc = fz_reasm_abort(r, pkt, now);

	if (rc == -EALREADY) {
		out->reason = FZ_PROTO_R_LATE_FRAGMENT;
		return FZ_REASM_DROP;
	}
	out->reason = why;
	return rc == -ENOSPC ? FZ_REASM_DROP : FZ_REASM_ERROR;
}

enum fz_reasm_result fz_reasm_add(struct fz_reasm *r, const struct fz_proto_pkt *pkt,
				  uint64_t now, struct fz_reasm_req *out)
{
	const struct fz_proto_req *h = &pkt->hdr;
	struct fz_reasm_entry *e;
	enum fz_proto_reason why;
	uint32_t i;

	r->now = now;
	fz_reasm_fill_out(pkt, FZ_PROTO_R_OK, out);
	if (h->tensor_bytes > r->p.max_tensor_bytes)
		return fz_reasm_refuse(r, pkt, now, FZ_PROTO_R_OVERSIZED_TENSOR, out);
	/* Defensive: the classifier guarantees these for FZ_PROTO_V_REQUEST. */
	if (h->frag_len == 0 || (uint64_t)h->frag_off + h->frag_len > h->tensor_bytes)
		return fz_reasm_refuse(r, pkt, now, FZ_PROTO_R_BAD_FRAGMENT, out);

	i = fz_reasm_find(r, pkt->reply.ip, pkt->reply.port, h->req_id);
	if (i == FZ_NIL) {
		if (h->frag_off == 0 && h->frag_len == h->tensor_bytes) {
			out->data = pkt->frag; /* one datagram: no copy, nothing stored */
			r->st.completed++;
			return FZ_REASM_COMPLETE;
		}
		i = fz_reasm_insert(r, pkt, now, true);
		if (i == FZ_NIL) /* every slot busy: whichever fragment came first is answered */
			return fz_reasm_refuse(r, pkt, now, FZ_PROTO_R_REASSEMBLY_TABLE_FULL, out);
	}
	e = &r->e[i];
	if (e->state != FZ_RE_LIVE) {
		out->reason = FZ_PROTO_R_LATE_FRAGMENT;
		return FZ_REASM_DROP;
	}
	if (h->dtype != e->dtype || h->c != e->c || h->h != e->h || h->w != e->w ||
	    h->tensor_bytes != e->total)
		why = FZ_PROTO_R_FRAGMENT_MISMATCH;
	else
		why = fz_reasm_insert_range(r, i, h->frag_off, h->frag_len);
	if (why != FZ_PROTO_R_OK) {
		/* Answer once with the entry's own header; keep it to absorb the rest. */
		out->reason = why;
		out->dtype = e->dtype;
		out->c = e->c;
		out->h = e->h;
		out->w = e->w;
		out->len = e->total;
		fz_reasm_tomb(r, i, now);
		return FZ_REASM_ERROR;
	}
	memcpy(r->data + (size_t)e->slot * r->p.max_tensor_bytes + h->frag_off, pkt->frag,
	       h->frag_len);
	e->received += h->frag_len;
	if (e->received < e->total)
		return FZ_REASM_STORED;
	e->state = FZ_RE_COMPLETE;
	out->data = r->data + (size_t)e->slot * r->p.max_tensor_bytes;
	out->slot = i;
	out->gen = e->gen;
	r->st.completed++;
	return FZ_REASM_COMPLETE;
}

int fz_reasm_abort(struct fz_reasm *r, const struct fz_proto_pkt *pkt, uint64_t now)
{
	uint32_t i;

	r->now = now;
	if (pkt->reply.port == 0)
		return -EINVAL;
	i = fz_reasm_find(r, pkt->reply.ip, pkt->reply.port, pkt->hdr.req_id);
	if (i != FZ_NIL && r->e[i].state != FZ_RE_LIVE)
		return -EALREADY; /* answered before (error or complete) */
	if (i != FZ_NIL) {
		fz_reasm_tomb(r, i, now);
		return 0;
	}
	if (fz_reasm_whole(pkt))
		return 0; /* nothing else of it will come: nothing to remember */
	if (fz_reasm_insert(r, pkt, now, false) == FZ_NIL) {
		r->st.unanswered++;
		return -ENOSPC;
	}
	return 0;
}

void fz_reasm_release(struct fz_reasm *r, const struct fz_reasm_req *req)
{
	struct fz_reasm_entry *e;

	if (req->slot >= r->n_entries)
		return;
	e = &r->e[req->slot];
	if (e->state != FZ_RE_COMPLETE || e->gen != req->gen)
		return;
	fz_reasm_tomb(r, req->slot, r->now);
}

unsigned fz_reasm_expire(struct fz_reasm *r, uint64_t now, struct fz_reasm_req *out, unsigned n)
{
	unsigned k = 0;

	if (now != UINT64_MAX && now > r->now)
		r->now = now;
	while (r->age_head != FZ_NIL && k < n) {
		uint32_t i = r->age_head;
		struct fz_reasm_entry *e = &r->e[i];

		if (e->deadline > now)
			break;
		if (e->state == FZ_RE_LIVE) {
			struct fz_reasm_req *o = &out[k++];

			memset(o, 0, sizeof(*o));
			memcpy(o->reply.mac, e->mac, 6);
			o->reply.ip = e->src_ip;
			o->reply.port = e->src_port;
			o->req_id = e->req_id;
			o->reason = FZ_PROTO_R_REASSEMBLY_TIMEOUT;
			o->dtype = e->dtype;
			o->c = e->c;
			o->h = e->h;
			o->w = e->w;
			o->len = e->total;
			o->slot = FZ_NIL;
			r->st.expired++;
			/* answered: its fragments still on their way are late, not a new request
			 * (a stop, now UINT64_MAX, forgets it at once) */
			if (now != UINT64_MAX) {
				fz_reasm_tomb(r, i, now);
				continue;
			}
		}
		/* COMPLETE past its deadline: the caller never released it; its data stays intact
		 * until the slot is reused by fz_reasm_add(). */
		fz_reasm_drop_entry(r, i);
	}
	return k;
}

uint64_t fz_reasm_next_deadline(const struct fz_reasm *r)
{
	return r->age_head == FZ_NIL ? UINT64_MAX : r->e[r->age_head].deadline;
}

void fz_reasm_get_stats(const struct fz_reasm *r, struct fz_reasm_stats *st)
{
	*st = r->st;
}
