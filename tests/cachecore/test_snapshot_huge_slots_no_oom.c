/* Regression (fuzz_snapshot): a 192-byte snapshot declaring 2^24 slots of 256 floats is refused. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <cmocka.h>

#include "fz_cache.h"

/*
 * Were the bound gone, the loader would allocate and zero 16 GiB. Make that fail fast instead of
 * swapping the machine: a 4 GiB allocation cap under ASan or TSan (their shadow memory needs
 * more address space than any limit would leave), an address-space limit otherwise.
 */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
	return "allocator_may_return_null=1:max_allocation_size_mb=4096";
}
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
	return "allocator_may_return_null=1:max_allocation_size_mb=4096";
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FZ_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define FZ_TEST_ASAN 1
#endif
#endif

/* The snapshot layout of cachecore/snapshot.c: 40-byte header, records, CRC32C trailer. */
struct rec {
	char name[FZ_NAME_MAX];
	uint32_t kind, grid, dims, l2, k, size, capacity, evict, thr_mode, enabled, online;
	uint32_t c, h, w, pooled_dim, key_dim, n_entries, bytes;
	float threshold, fixed;
};

/* A snapshot of n empty knn caches, each of `slots` slots keyed by c floats (c x 1 x 1, grid 1). */
static size_t mk_snapshot(unsigned char *buf, int n, uint32_t slots, uint32_t c)
{
	const uint32_t version = 1, n_classes = 10, zero = 0;
	const uint64_t fp = 0;
	uint64_t total = 40 + (uint64_t)n * sizeof(struct rec) + 8;
	size_t off = 40;
	uint32_t crc;

	memcpy(buf, "FZCACHE", 8);
	memcpy(buf + 8, &version, 4);
	memcpy(buf + 12, &n, 4);
	memcpy(buf + 16, &fp, 8);
	memcpy(buf + 24, &n_classes, 4);
	memcpy(buf + 28, &zero, 4);
	memcpy(buf + 32, &total, 8);
	for (int i = 0; i < n; i++) {
		struct rec r = { .kind = FZ_CACHE_KNN, .grid = 1, .l2 = 1, .k = 3,
				 .size = slots - 1, .capacity = 1, .enabled = 1, .c = c, .h = 1,
				 .w = 1, .pooled_dim = c, .key_dim = c, .threshold = 0.5f };
		snprintf(r.name, sizeof(r.name), "block%d", i + 1);
		memcpy(buf + off, &r, sizeof(r));
		off += sizeof(r);
	}
	crc = fz_crc32c(0, buf, off);
	memcpy(buf + off, &crc, 4);
	memcpy(buf + off + 4, &zero, 4);
	return off + 8;
}

static int setup(void **state)
{
	(void)state;
#ifndef FZ_TEST_ASAN
	struct rlimit lim;

	if (getrlimit(RLIMIT_AS, &lim) == 0 &&
	    (lim.rlim_cur == RLIM_INFINITY || lim.rlim_cur > (4ull << 30))) {
		lim.rlim_cur = 4ull << 30;
		setrlimit(RLIMIT_AS, &lim);
	}
#endif
	return 0;
}

/* The case fuzz_snapshot found: one cache of 2^24 slots x 256 floats (16 GiB) from 192 bytes. */
static void test_one_cache_of_16gib_refused(void **state)
{
	unsigned char buf[512];
	char err[512] = "";
	size_t len = mk_snapshot(buf, 1, 1u << 24, 256);

	(void)state;
	assert_int_equal(len, 192);
	errno = 0;
	assert_null(fz_cache_set_parse("huge.fzc", buf, len, 0, err, sizeof(err)));
	assert_int_equal(errno, EINVAL);
	assert_non_null(strstr(err, "huge.fzc: cache 0 (block1): 16777216 slots would take"));
	assert_non_null(strstr(err, "MiB all caches of a snapshot may take"));
}

/* Below the budget the same shape loads: the bound does not refuse real snapshots. */
static void test_small_empty_caches_load(void **state)
{
	unsigned char buf[1024];
	char err[512] = "";
	size_t len = mk_snapshot(buf, 3, 4096, 64);
	struct fz_cache_set *s;

	(void)state;
	s = fz_cache_set_parse("small.fzc", buf, len, 0, err, sizeof(err));
	if (s == NULL)
		fail_msg("%s", err);
	assert_int_equal(s->n_caches, 3);
	assert_int_equal(fz_cache_slots(s->caches[2]), 4096);
	fz_cache_set_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_cache_of_16gib_refused),
		cmocka_unit_test(test_small_empty_caches_load),
	};
	return cmocka_run_group_tests(tests, setup, NULL);
}
