/* Tests of the cache config loader: defaults, overrides, and file:line:column errors. */
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

static char path[] = "/tmp/fz_cachecfg_XXXXXX.yaml";

static void write_cfg(const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static int setup(void **state)
{
	(void)state;
	int fd = mkstemps(path, 5);
	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	unlink(path);
	return 0;
}

static void test_good(void **state)
{
	(void)state;
	write_cfg("build: 40000\nvalidation: 20000\nbudget: 0.003\nseed: 9\nobjective: compute\n"
		  "defaults:\n"
		  "  kind: knn\n"
		  "  key: {grid: 2, dims: 32, l2: false}\n"
		  "  k: 5\n"
		  "  size: 1024\n"
		  "  threshold: budget\n"
		  "caches:\n"
		  "  - layer: block1\n"
		  "    enabled: false\n"
		  "  - {layer: block2, kind: kmeans, threshold: zero-error, capacity: 64, online: true,"
		  " eviction: lru}\n"
		  "  - {layer: block3, threshold: 2.5, key: {grid: 1}}\n");
	char err[512];
	struct fz_cache_config *c = fz_cache_config_load(path, err, sizeof(err));
	if (!c)
		fail_msg("%s", err);
	assert_int_equal(c->build, 40000);
	assert_int_equal(c->validation, 20000);
	assert_float_equal(c->budget, 0.003, 1e-12);
	assert_int_equal(c->seed, 9);
	assert_true(c->objective_compute);
	assert_int_equal(c->n_caches, 3);
	const struct fz_cache_params *p = c->caches;
	assert_string_equal(p[0].layer, "block1");
	assert_false(p[0].enabled);
	assert_int_equal(p[0].kind, FZ_CACHE_KNN);
	assert_int_equal(p[0].grid, 2);
	assert_int_equal(p[0].dims, 32);
	assert_false(p[0].l2);
	assert_int_equal(p[0].k, 5);
	assert_int_equal(p[0].size, 1024);
	assert_int_equal(p[0].thr_mode, FZ_CACHE_THR_BUDGET);
	assert_int_equal(p[1].kind, FZ_CACHE_KMEANS);
	assert_int_equal(p[1].thr_mode, FZ_CACHE_THR_ZERO_ERROR);
	assert_true(p[1].online);
	assert_int_equal(p[1].capacity, 64);
	assert_int_equal(p[1].evict, FZ_CACHE_EVICT_LRU);
	assert_true(p[1].enabled);
	assert_int_equal(p[2].thr_mode, FZ_CACHE_THR_FIXED);
	assert_float_equal(p[2].threshold, 2.5, 1e-6);
	assert_int_equal(p[2].grid, 1);
	assert_int_equal(p[2].dims, 32); /* the rest of `key` keeps the defaults */
	fz_cache_config_free(c);
}

static void expect_error(const char *text, const char *where, const char *what)
{
	char err[512] = "", want[600];
	write_cfg(text);
	errno = 0;
	struct fz_cache_config *c = fz_cache_config_load(path, err, sizeof(err));
	if (c)
		fail_msg("accepted: %s", text);
	assert_int_equal(errno, EINVAL);
	print_message("  %s\n", err);
	snprintf(want, sizeof(want), "%s:%s:", path, where);
	if (strncmp(err, want, strlen(want)) || !strstr(err, what))
		fail_msg("expected '%s...%s', got '%s'", want, what, err);
}

static void test_errors(void **state)
{
	(void)state;
	expect_error("caches:\n  - {layer: block1, kind: lsh}\n", "2:27", "unknown cache kind");
	expect_error("caches:\n  - {layer: block1, colour: red}\n", "2:21", "unknown key");
	expect_error("caches:\n  - {kind: knn}\n", "2:5", "layer");
	expect_error("budget: 0.01\n", "1:1", "caches");
	expect_error("caches:\n  - {layer: block1, k: 0}\n", "2:24", "positive");
	expect_error("caches:\n  - {layer: block1, threshold: strict}\n", "2:32", "zero-error");
	expect_error("caches:\n  - {layer: block1}\n  - {layer: block1}\n", "3:13", "already");
	expect_error("caches:\n  - {layer: block1, online: true}\n", "2:5", "capacity");
	expect_error("defaults: {key: {grid: 0}}\ncaches: [{layer: a}]\n", "1:24", "positive");
	expect_error("budget: 2\ncaches: [{layer: a}]\n", "1:9", "budget");
	expect_error("caches: []\n", "1:9", "non-empty");
	expect_error("objective: speed\ncaches: [{layer: a}]\n", "1:12", "objective");
}

/* More cache points than FZ_CACHE_MAX_POINTS (self-checking, thresholds and telemetry follow
 * every point up to it) is refused by the cap's name, in a config and in a set. */
static void test_points_over_cap(void **state)
{
	(void)state;
	char text[64 * (FZ_CACHE_MAX_POINTS + 2)];
	size_t len = (size_t)snprintf(text, sizeof(text), "caches:\n");
	for (int i = 0; i <= FZ_CACHE_MAX_POINTS; i++)
		len += (size_t)snprintf(text + len, sizeof(text) - len, "  - {layer: l%d}\n", i);
	expect_error(text, "2:3", "FZ_CACHE_MAX_POINTS");
	errno = 0;
	assert_null(fz_cache_set_new(1, 10, FZ_CACHE_MAX_POINTS + 1));
	assert_int_equal(errno, E2BIG);
	struct fz_cache_set *s = fz_cache_set_new(1, 10, FZ_CACHE_MAX_POINTS);
	assert_non_null(s);
	fz_cache_set_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_points_over_cap),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
