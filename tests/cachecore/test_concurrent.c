/* Test of cachecore online updates: one writer thread and a reader thread; every entry read is whole. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "fz_cache.h"

#define D 64
#define CAP 64
#define CLASSES 10
#define NQ 64 /* largest lookup batch */

static atomic_bool stop;

/* Entry number g: every key element is g (exact in float below 2^24), label g % CLASSES. */
static void make_key(uint32_t g, float *k)
{
	for (int d = 0; d < D; d++)
		k[d] = (float)g;
}

static void *writer(void *arg)
{
	struct fz_cache *c = arg;
	float k[D];
	uint32_t g = 1;

	while (!atomic_load(&stop)) {
		make_key(g, k);
		if (fz_cache_insert(c, k, (int)(g % CLASSES)))
			abort();
		g = g % 400u + 1; /* small g: squared distances stay exact in float */
	}
	return NULL;
}

struct rstats {
	struct fz_cache *c;
	long whole, busy, torn, lookups, bad_lookups;
};

static void *reader(void *arg)
{
	struct rstats *st = arg;
	float k[D], q[NQ * D];
	int lab;
	unsigned r = 1, round = 0;

	while (!atomic_load(&stop)) {
		for (int i = 0; i < 64; i++) {
			r = r * 1103515245u + 12345u;
			int slot = 1 + (int)((r >> 8) % CAP);
			int rc = fz_cache_read_entry(st->c, slot, k, &lab);
			if (rc == -EAGAIN) {
				st->busy++;
				continue;
			}
			if (rc)
				continue;
			bool ok = lab == (int)((uint32_t)k[0] % CLASSES);
			for (int d = 1; d < D; d++)
				ok &= k[d] == k[0];
			if (ok)
				st->whole++;
			else
				st->torn++;
		}
#if defined(__SANITIZE_THREAD__)
		/* Lookups read keys with plain loads and discard what the seqlock says was torn:
		 * a race by design that TSan would report. Under TSan only read_entry is checked. */
		continue;
#endif
		/* lookups: a query equal to an entry g must answer g's label or another entry's;
		 * the distance to the nearest whole entry is an exact multiple of sqrt(D). Batches
		 * of 1, 4 and NQ: every tile shape of the GEMM meets the writer. */
		const int nq = (++round % 3) == 0 ? NQ : round % 3 == 1 ? 4 : 1;
		for (int j = 0; j < nq; j++)
			make_key((uint32_t)(r >> (j % 16 + 3)) % 400u + 1 + (uint32_t)j, q + j * D);
		struct fz_cache_result res[NQ];
		if (fz_cache_lookup_keys(st->c, q, nq, res))
			abort();
		for (int j = 0; j < nq; j++) {
			st->lookups++;
			if (res[j].label < 0 || res[j].label >= CLASSES)
				st->bad_lookups++;
			/* conf = 1 / |g_q - g_e| / sqrt(D) for a whole entry e: check it is of that form */
			float inv = 1.0f / (res[j].conf * 8.0f); /* sqrt(64) = 8 */
			if (res[j].conf < 1e5f && res[j].conf > 1e-3f && (inv - (float)(int)(inv + 0.5f) > 1e-2f ||
						   inv - (float)(int)(inv + 0.5f) < -1e-2f))
				st->bad_lookups++;
		}
	}
	return NULL;
}

static void test_writer_reader_whole(void **state)
{
	(void)state;
	struct fz_cache_params p;
	fz_cache_params_default(&p);
	p.kind = FZ_CACHE_KMEANS;
	p.grid = 1;
	p.dims = 0;
	p.l2 = false;
	p.size = 1;
	p.capacity = CAP;
	p.online = true;
	struct fz_cache *c = fz_cache_create(&p, D, 1, 1, CLASSES);
	assert_non_null(c);
	/* one calibrated entry far away, so lookups always have an answer */
	float far[D];
	int lab0 = 0;
	make_key(20000000u, far);
	assert_int_equal(fz_cache_build(c, far, &lab0, 1, 1), 0);

	struct rstats st = { .c = c };
	pthread_t w, r;
	atomic_store(&stop, false);
	assert_int_equal(pthread_create(&w, NULL, writer, c), 0);
	assert_int_equal(pthread_create(&r, NULL, reader, &st), 0);
	struct timespec ts = { 1, 500000000 };
	nanosleep(&ts, NULL);
	atomic_store(&stop, true);
	pthread_join(w, NULL);
	pthread_join(r, NULL);
	print_message("  reads: %ld whole, %ld busy (retry), %ld torn; lookups %ld, bad %ld\n",
		      st.whole, st.busy, st.torn, st.lookups, st.bad_lookups);
	assert_int_equal(st.torn, 0);
	assert_int_equal(st.bad_lookups, 0);
	assert_true(st.whole > 1000);
	fz_cache_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_writer_reader_whole),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
