/* Freeze cachecore online updates: one writer stores entries under per-slot seqlocks, evicting by CLOCK or LRU. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "cache_pvt.h"

void fz_cache_write_slot(struct fz_cache *c, int s, const float *key, int label, float frac)
{
	_Atomic uint32_t *seq = &c->seq[s];
	/* Only this (single) writer changes seq: a relaxed load sees its own last store. */
	uint32_t v = atomic_load_explicit(seq, memory_order_relaxed);

	atomic_store_explicit(seq, v + 1, memory_order_relaxed); /* odd: write in progress */
	/* Release fence: the odd seq above is ordered before the key/label stores below; pairs with
	 * the readers' acquire fence before they re-load seq (lookup.c take, lookup_exact and
	 * fz_cache_read_entry), so a reader that saw any of the new stores sees seq changed. */
	atomic_thread_fence(memory_order_release);
	for (int d = 0; d < c->dim; d++) {
		uint32_t bits;
		memcpy(&bits, &key[d], sizeof(bits));
		/* Relaxed atomic stores: readers may be loading the slot concurrently, with relaxed
		 * loads (kern.h v_ld_shared for keys and norms, lookup.c label_at / frac_at). */
		__atomic_store_n((uint32_t *)fz_cache_key_at(c->keys, c->dim, s, d), bits,
				 __ATOMIC_RELAXED);
	}
	/* |key|^2 for the GEMM path (+inf keeps an empty slot out of it), in the kernels' order */
	float nn = label == FZ_CACHE_LABEL_NONE ? INFINITY : fz_cache_kern_get()->norm2(key, c->dim);
	uint32_t nbits, mbits = atomic_load_explicit(&c->max_norm2, memory_order_relaxed);
	float mx;
	memcpy(&nbits, &nn, sizeof(nbits));
	memcpy(&mx, &mbits, sizeof(mx));
	__atomic_store_n((uint32_t *)&c->norm2[s], nbits, __ATOMIC_RELAXED);
	if (label != FZ_CACHE_LABEL_NONE && nn > mx)
		/* Relaxed, before the release store of seq below: a reader whose acquire load of
		 * seq sees this write complete sees this maximum too (lookup_gemm's re-check). */
		atomic_store_explicit(&c->max_norm2, nbits, memory_order_relaxed);
	__atomic_store_n(&c->labels[s], (int32_t)label, __ATOMIC_RELAXED);
	uint32_t fbits;
	memcpy(&fbits, &frac, sizeof(fbits));
	__atomic_store_n((uint32_t *)&c->frac[s], fbits, __ATOMIC_RELAXED);
	atomic_store_explicit(&c->ref[s], 0, memory_order_relaxed);
	atomic_store_explicit(&c->used[s], atomic_load_explicit(&c->tick, memory_order_relaxed),
			      memory_order_relaxed);
	/* Release: the stores above are visible before seq turns even again; pairs with the
	 * readers' acquire load of seq at the start of their read. */
	atomic_store_explicit(seq, v + 2, memory_order_release);
	if (s >= atomic_load_explicit(&c->n_live, memory_order_relaxed))
		/* Release: the slot (and every slot below it) is initialised before readers scan
		 * up to it; pairs with the acquire load of n_live in fz_cache_lookup_keys. */
		atomic_store_explicit(&c->n_live, s + 1, memory_order_release);
}

/* Victim among the full online slots. CLOCK: sweep, clearing reference bits, take the first
 * unreferenced slot. LRU: the slot with the oldest stamp (ticks compared modulo 2^32). */
static int pick_victim(struct fz_cache *c)
{
	const int lo = c->base_slots, n = c->p.capacity;

	if (c->p.evict == FZ_CACHE_EVICT_LRU) {
		uint32_t now = atomic_load_explicit(&c->tick, memory_order_relaxed);
		int best = lo;
		uint32_t age = 0;
		for (int s = lo; s < lo + n; s++) {
			uint32_t a = now - atomic_load_explicit(&c->used[s], memory_order_relaxed);
			if (a > age || s == lo) {
				age = a;
				best = s;
			}
		}
		return best;
	}
	for (int sweeps = 0; sweeps < 2 * n + 1; sweeps++) {
		int s = c->hand;
		c->hand = s + 1 < lo + n ? s + 1 : lo;
		/* Relaxed: a hint set by readers on hits; a lost race only changes which slot goes. */
		if (atomic_exchange_explicit(&c->ref[s], 0, memory_order_relaxed) == 0)
			return s;
	}
	return c->hand;
}

int fz_cache_forget(struct fz_cache *c, int slot)
{
	if (slot < c->base_slots || slot >= c->base_slots + c->n_online ||
	    __atomic_load_n(&c->labels[slot], __ATOMIC_RELAXED) ==
		    FZ_CACHE_LABEL_NONE)
		return -EINVAL;
	static const float zero[FZ_CACHE_MAX_DIM];
	/* an empty slot: no label, +inf norm (out of every GEMM), never a neighbour; a later
	 * insert may take it again */
	fz_cache_write_slot(c, slot, zero, FZ_CACHE_LABEL_NONE, 0.0f);
	return 0;
}

uint64_t fz_cache_evictions(const struct fz_cache *c)
{
	return __atomic_load_n(&c->evictions, __ATOMIC_RELAXED);
}

int fz_cache_insert(struct fz_cache *c, const float *key, int label)
{
	int s;

	if (!key || label < 0 || label >= c->n_classes)
		return -EINVAL;
	for (int d = 0; d < c->dim; d++)
		if (!isfinite(key[d])) /* a NaN would sit in every distance to it */
			return -EINVAL;
	if (c->p.capacity < 1)
		return -ENOSPC;
	if (c->n_online < c->p.capacity)
		s = c->base_slots + c->n_online++;
	else {
		s = pick_victim(c);
		/* relaxed: a counter the writer alone changes, read by telemetry */
		__atomic_store_n(&c->evictions, c->evictions + 1, __ATOMIC_RELAXED);
	}
	fz_cache_write_slot(c, s, key, label, 1.0f);
	/* Relaxed: the LRU clock (inserts so far); readers stamp hits with it, unordered. */
	atomic_store_explicit(&c->tick, atomic_load_explicit(&c->tick, memory_order_relaxed) + 1,
			      memory_order_relaxed);
	return 0;
}
