/* Tests of cachecore snapshots: round trip, and every kind of bad snapshot refused whole. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fz_cache.h"

#define FP 0x1234abcd5678ef01ULL

static char dir[] = "/tmp/fz_snap_XXXXXX";
static char path[256];

static struct fz_cache *mk(const char *layer, enum fz_cache_kind kind, int dims, int cap)
{
	struct fz_cache_params p;
	fz_cache_params_default(&p);
	snprintf(p.layer, sizeof(p.layer), "%s", layer);
	p.kind = kind;
	p.grid = 1;
	p.dims = dims;
	p.size = 32;
	p.capacity = cap;
	p.online = cap > 0;
	struct fz_cache *c = fz_cache_create(&p, 8, 2, 2, 10);
	assert_non_null(c);
	float x[200 * 8];
	int lab[200];
	for (int i = 0; i < 200; i++) {
		for (int d = 0; d < 8; d++)
			x[i * 8 + d] = (float)((i * 7 + d * 13) % 17) + (float)(i % 10) * 3.0f;
		lab[i] = i % 10;
	}
	float keys[200 * 8];
	if (dims)
		assert_int_equal(fz_cache_fit_pca(c, x, 200, 0), 0);
	assert_int_equal(fz_cache_project_burst(c, x, 200, keys), 0);
	assert_int_equal(fz_cache_build(c, keys, lab, 200, 3), 0);
	fz_cache_set_threshold(c, 2.5f);
	return c;
}

static struct fz_cache_set *mkset(void)
{
	struct fz_cache_set *s = fz_cache_set_new(FP, 10, 3);
	assert_non_null(s);
	s->caches[0] = mk("block1", FZ_CACHE_KMEANS, 0, 0);
	s->caches[1] = mk("block2", FZ_CACHE_KNN, 4, 8);
	s->caches[2] = mk("block3", FZ_CACHE_KMEANS, 3, 4);
	float k[4] = { 1, 2, 3, 4 };
	assert_int_equal(fz_cache_insert(s->caches[1], k, 3), 0);
	fz_cache_set_enabled(s->caches[2], false);
	return s;
}

static int setup(void **state)
{
	(void)state;
	if (!mkdtemp(dir))
		return -1;
	snprintf(path, sizeof(path), "%s/cache.snap", dir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(path);
	rmdir(dir);
	return 0;
}

static void *slurp(size_t *len)
{
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	*len = (size_t)ftell(f);
	rewind(f);
	void *b = malloc(*len);
	assert_int_equal(fread(b, 1, *len, f), *len);
	fclose(f);
	return b;
}

static void spit(const void *b, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(b, 1, len, f), len);
	fclose(f);
}

/* Re-seal the checksum so a test reaches the structural checks behind it. */
static void reseal(unsigned char *b, size_t len)
{
	uint32_t crc = fz_crc32c(0, b, len - 8);
	memcpy(b + len - 8, &crc, 4);
}

static void expect_refused(const char *what)
{
	char err[512] = "";
	errno = 0;
	struct fz_cache_set *s = fz_cache_set_load(path, FP, err, sizeof(err));
	if (s)
		fail_msg("snapshot with %s was accepted", what);
	assert_int_equal(errno, EINVAL);
	print_message("  %s -> %s\n", what, err);
	assert_non_null(strstr(err, path));
}

static void test_round_trip(void **state)
{
	(void)state;
	struct fz_cache_set *s = mkset();
	assert_int_equal(fz_cache_set_save(s, path), 0);
	char err[512];
	struct fz_cache_set *t = fz_cache_set_load(path, FP, err, sizeof(err));
	if (!t)
		fail_msg("%s", err);
	assert_int_equal(t->n_caches, 3);
	assert_int_equal(t->model_fp, FP);
	assert_int_equal(fz_cache_set_bytes(t), fz_cache_set_bytes(s));
	for (int i = 0; i < 3; i++) {
		struct fz_cache *a = s->caches[i], *b = t->caches[i];
		assert_string_equal(fz_cache_params(a)->layer, fz_cache_params(b)->layer);
		assert_int_equal(fz_cache_entries(a), fz_cache_entries(b));
		assert_float_equal(fz_cache_threshold(a), fz_cache_threshold(b), 0);
		/* same answers on probe pooled vectors */
		for (int q = 0; q < 20; q++) {
			float x[8], k1[8], k2[8];
			for (int d = 0; d < 8; d++)
				x[d] = (float)((q * 5 + d * 3) % 11);
			assert_int_equal(fz_cache_project_burst(a, x, 1, k1), 0);
			assert_int_equal(fz_cache_project_burst(b, x, 1, k2), 0);
			assert_memory_equal(k1, k2, sizeof(float) * fz_cache_key_dim(a));
			struct fz_cache_result r1, r2;
			fz_cache_lookup_keys(a, k1, 1, &r1);
			fz_cache_lookup_keys(b, k2, 1, &r2);
			assert_int_equal(r1.label, r2.label);
			assert_float_equal(r1.conf, r2.conf, 0);
			assert_int_equal(r1.hit, r2.hit);
		}
	}
	/* the online entry survived and online inserts continue after it */
	float k[4] = { 1, 2, 3, 4 }, kk[4];
	int lab;
	assert_int_equal(fz_cache_read_entry(t->caches[1], 32, kk, &lab), 0);
	assert_int_equal(lab, 3);
	assert_int_equal(fz_cache_insert(t->caches[1], k, 4), 0);
	assert_int_equal(fz_cache_read_entry(t->caches[1], 33, kk, &lab), 0);
	/* fingerprint 0 accepts any model */
	fz_cache_set_free(t);
	t = fz_cache_set_load(path, 0, err, sizeof(err));
	assert_non_null(t);
	fz_cache_set_free(t);
	fz_cache_set_free(s);
}

static void test_refuse_truncated(void **state)
{
	(void)state;
	struct fz_cache_set *s = mkset();
	assert_int_equal(fz_cache_set_save(s, path), 0);
	fz_cache_set_free(s);
	size_t len;
	unsigned char *b = slurp(&len);
	size_t cuts[] = { 0, 7, 40, len / 2, len - 1 };
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		spit(b, cuts[i]);
		expect_refused("truncation");
	}
	free(b);
}

static void test_refuse_bad_magic(void **state)
{
	(void)state;
	struct fz_cache_set *s = mkset();
	assert_int_equal(fz_cache_set_save(s, path), 0);
	fz_cache_set_free(s);
	size_t len;
	unsigned char *b = slurp(&len);
	b[0] = 'X';
	spit(b, len);
	expect_refused("bad magic");
	free(b);
}

/* A version 1 file whose first record is cut short after a few bytes: refused, the peek at the
 * record's kind reads nothing past the data (fuzz_snapshot found that over-read). */
static void test_refuse_v1_short_record(void **state)
{
	(void)state;
	unsigned char b[40 + 8 + 8] = "FZCACHE";
	uint32_t one = 1, classes = 10;
	uint64_t fp = FP, total = sizeof(b);
	memcpy(b + 8, &one, 4);
	memcpy(b + 12, &one, 4); /* one cache */
	memcpy(b + 16, &fp, 8);
	memcpy(b + 24, &classes, 4);
	memcpy(b + 32, &total, 8);
	reseal(b, sizeof(b));
	spit(b, sizeof(b));
	expect_refused("a version 1 record of 8 bytes");
}

static void test_refuse_bad_version(void **state)
{
	(void)state;
	struct fz_cache_set *s = mkset();
	assert_int_equal(fz_cache_set_save(s, path), 0);
	fz_cache_set_free(s);
	size_t len;
	unsigned char *b = slurp(&len);
	b[8] = 3;
	reseal(b, len);
	spit(b, len);
	expect_refused("version 3");
	free(b);
}

static void test_refuse_wrong_fingerprint(void **state)
{
	(void)state;
	struct fz_cache_set *s = mkset();
	s->model_fp = FP ^ 1;
	assert_int_equal(fz_cache_set_save(s, path), 0);
	fz_cache_set_free(s);
	expect_refused("another model's fingerprint");
}

static void test_refuse_checksum(void **state)
{
	(void)state;
	struct fz_cache_set *s = mkset();
	assert_int_equal(fz_cache_set_save(s, path), 0);
	fz_cache_set_free(s);
	size_t len;
	unsigned char *b = slurp(&len);
	b[len / 2] ^= 0x10; /* one flipped bit in an entry */
	spit(b, len);
	expect_refused("a flipped bit");
	free(b);
}

static void test_refuse_counts_lying(void **state)
{
	(void)state;
	struct fz_cache_set *s = mkset();
	assert_int_equal(fz_cache_set_save(s, path), 0);
	fz_cache_set_free(s);
	size_t len;
	unsigned char *b = slurp(&len);
	unsigned char *c = malloc(len);
	/* n_entries of the first cache: record at 40, name 64 bytes, then 16 u32 fields */
	size_t off_entries = 40 + 64 + 16 * 4;
	uint32_t v;
	memcpy(&v, b + off_entries, 4);
	assert_true(v > 0 && v <= 32);
	uint32_t lies[] = { v + 1, v - 1, 1000000 };
	for (size_t i = 0; i < 3; i++) {
		memcpy(c, b, len);
		memcpy(c + off_entries, &lies[i], 4);
		reseal(c, len);
		spit(c, len);
		expect_refused("a lying entry count");
	}
	/* more caches than the file holds */
	memcpy(c, b, len);
	c[12] = 4;
	reseal(c, len);
	spit(c, len);
	expect_refused("a lying cache count");
	/* key dim that disagrees with the settings */
	memcpy(c, b, len);
	c[40 + 64 + 15 * 4] += 1;
	reseal(c, len);
	spit(c, len);
	expect_refused("a lying key dim");
	free(c);
	free(b);
}

static void test_missing_file(void **state)
{
	(void)state;
	char err[512];
	errno = 0;
	assert_null(fz_cache_set_load("/nonexistent/x.snap", FP, err, sizeof(err)));
	assert_int_equal(errno, ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_refuse_truncated),
		cmocka_unit_test(test_refuse_bad_magic),
		cmocka_unit_test(test_refuse_bad_version),
		cmocka_unit_test(test_refuse_v1_short_record),
		cmocka_unit_test(test_refuse_wrong_fingerprint),
		cmocka_unit_test(test_refuse_checksum),
		cmocka_unit_test(test_refuse_counts_lying),
		cmocka_unit_test(test_missing_file),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
