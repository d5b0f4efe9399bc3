/* Tests of config/idx.c: the real Fashion-MNIST files, and truncated or garbage idx refused. */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <unistd.h>

#include <zlib.h>

#include "cfg_test.h"
#include "../fz_test_skip.h"
#include "fz_idx.h"

static char dir[256];
static char err[512];

static int setup(void **state)
{
	(void)state;
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, sizeof(dir), "%s/fz-idx-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	DIR *d = opendir(dir);
	if (d == NULL)
		return -1;
	struct dirent *e;
	char p[512];
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
	return rmdir(dir);
}

static void fmnist_path(char *buf, size_t size, const char *name)
{
	const char *d = getenv("FZ_FMNIST_DIR");
	snprintf(buf, size, "%s/%s", d ? d : "/usr/share/datasets/fashion-mnist", name);
}

/* Write `len` bytes to dir/name, gzipped when `gz`; the path goes to out. */
static void write_file(const char *name, const void *data, size_t len, bool gz, char *out,
		       size_t size)
{
	snprintf(out, size, "%s/%s", dir, name);
	if (gz) {
		gzFile f = gzopen(out, "wb");
		assert_non_null(f);
		if (len)
			assert_int_equal(gzwrite(f, data, (unsigned)len), (int)len);
		assert_int_equal(gzclose(f), Z_OK);
	} else {
		FILE *f = fopen(out, "wb");
		assert_non_null(f);
		assert_int_equal(fwrite(data, 1, len, f), len);
		assert_int_equal(fclose(f), 0);
	}
}

/* A 3 x 2 x 2 unsigned-byte idx file: 16 bytes of header, 12 of data. */
static const uint8_t small_idx[] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2,
				    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};

/* The load must fail with `r`, and the message name the file and say `words`. */
static void refused(const char *path, int r, const char *words)
{
	struct fz_idx idx = {0};
	assert_int_equal(fz_idx_load(path, &idx, err, sizeof(err)), r);
	assert_null(idx.data);
	assert_contains(err, path);
	assert_contains(err, words);
}

static void test_fmnist_test_labels(void **state)
{
	(void)state;
	char path[512];
	fmnist_path(path, sizeof(path), "t10k-labels-idx1-ubyte.gz");
	if (access(path, R_OK) != 0)
		FZ_SKIP("%s: not there (Debian dataset-fashion-mnist)", path);
	struct fz_idx idx;
	if (fz_idx_load(path, &idx, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_int_equal(idx.ndim, 1);
	assert_int_equal(idx.count, 10000);
	assert_int_equal(idx.dims[0], 10000);
	assert_int_equal(idx.item_size, 1);
	int hist[10] = {0};
	for (size_t i = 0; i < idx.count; i++) {
		assert_true(idx.data[i] < 10);
		hist[idx.data[i]]++;
	}
	for (int c = 0; c < 10; c++) /* the test set is balanced */
		assert_int_equal(hist[c], 1000);
	fz_idx_free(&idx);
	assert_null(idx.data);
}

static void test_fmnist_test_images(void **state)
{
	(void)state;
	char path[512];
	fmnist_path(path, sizeof(path), "t10k-images-idx3-ubyte.gz");
	if (access(path, R_OK) != 0)
		FZ_SKIP("%s: not there (Debian dataset-fashion-mnist)", path);
	struct fz_idx idx;
	if (fz_idx_load(path, &idx, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_int_equal(idx.ndim, 3);
	assert_int_equal(idx.count, 10000);
	assert_int_equal(idx.dims[1], 28);
	assert_int_equal(idx.dims[2], 28);
	assert_int_equal(idx.item_size, 784);
	unsigned max = 0;
	for (size_t i = 0; i < 784; i++)
		max = idx.data[i] > max ? idx.data[i] : max;
	assert_true(max > 0); /* the first image is not blank */
	fz_idx_free(&idx);
}

static void test_plain_and_gz_agree(void **state)
{
	(void)state;
	char plain[512], gz[512];
	write_file("s.idx", small_idx, sizeof(small_idx), false, plain, sizeof(plain));
	write_file("s.idx.gz", small_idx, sizeof(small_idx), true, gz, sizeof(gz));
	for (int k = 0; k < 2; k++) {
		struct fz_idx idx;
		assert_int_equal(fz_idx_load(k ? gz : plain, &idx, err, sizeof(err)), 0);
		assert_int_equal(idx.ndim, 3);
		assert_int_equal(idx.count, 3);
		assert_int_equal(idx.item_size, 4);
		assert_memory_equal(idx.data, small_idx + 16, 12);
		fz_idx_free(&idx);
	}
}

static void test_truncated_refused(void **state)
{
	(void)state;
	char path[512];
	write_file("t.idx", small_idx, sizeof(small_idx) - 1, false, path, sizeof(path));
	refused(path, -EINVAL, "truncated idx file (11 data bytes, expected 12)");
	write_file("t.idx.gz", small_idx, sizeof(small_idx) - 5, true, path, sizeof(path));
	refused(path, -EINVAL, "truncated idx file (7 data bytes, expected 12)");
	write_file("h.idx", small_idx, 10, false, path, sizeof(path));
	refused(path, -EINVAL, "truncated idx header");
}

/* A gzip stream cut short is refused, not read as a short file. */
static void test_truncated_gzip_stream_refused(void **state)
{
	(void)state;
	char fmnist[512], path[512];
	fmnist_path(fmnist, sizeof(fmnist), "t10k-labels-idx1-ubyte.gz");
	FILE *f = fopen(fmnist, "rb");
	if (f == NULL)
		FZ_SKIP("%s: not there (Debian dataset-fashion-mnist)", fmnist);
	static char gz[4096];
	size_t n = fread(gz, 1, sizeof(gz), f);
	fclose(f);
	assert_int_equal(n, sizeof(gz));
	write_file("cut.idx.gz", gz, n, false, path, sizeof(path));
	refused(path, -EINVAL, "truncated");
}

static void test_garbage_refused(void **state)
{
	(void)state;
	char path[512];
	static const char text[] = "this is not an idx file at all\n";
	write_file("g.idx", text, sizeof(text) - 1, false, path, sizeof(path));
	refused(path, -EINVAL, "not an idx file");
	write_file("g.idx.gz", text, sizeof(text) - 1, true, path, sizeof(path));
	refused(path, -EINVAL, "not an idx file");
	/* gz by name, but plain data inside */
	write_file("p.idx.gz", small_idx, sizeof(small_idx), false, path, sizeof(path));
	refused(path, -EINVAL, "not gzip data");
	/* extra bytes after the data */
	uint8_t more[sizeof(small_idx) + 3];
	memcpy(more, small_idx, sizeof(small_idx));
	write_file("m.idx", more, sizeof(more), false, path, sizeof(path));
	refused(path, -EINVAL, "3 bytes of trailing garbage");
	write_file("m.idx.gz", more, sizeof(more), true, path, sizeof(path));
	refused(path, -EINVAL, "trailing garbage");
	write_file("e.idx", "", 0, false, path, sizeof(path));
	refused(path, -EINVAL, "truncated idx header (0 bytes)");
}

static void test_wrong_dtype_refused(void **state)
{
	(void)state;
	char path[512];
	uint8_t f32[sizeof(small_idx)];
	memcpy(f32, small_idx, sizeof(f32));
	f32[2] = 0x0d;
	write_file("f.idx.gz", f32, sizeof(f32), true, path, sizeof(path));
	refused(path, -EINVAL, "dtype 0x0d (float) is not supported; expected 0x08");
	uint8_t dims[sizeof(small_idx)];
	memcpy(dims, small_idx, sizeof(dims));
	dims[3] = 0;
	write_file("d.idx", dims, sizeof(dims), false, path, sizeof(path));
	refused(path, -EINVAL, "0 dimensions");
	memcpy(dims, small_idx, sizeof(dims));
	dims[11] = 0;
	write_file("z.idx", dims, sizeof(dims), false, path, sizeof(path));
	refused(path, -EINVAL, "dimension 1 is zero");
}

/* A header that claims ~4 GB of data over a few bytes of gzip must not allocate it up front. */
static void test_lying_header_refused(void **state)
{
	(void)state;
	char path[512];
	static const uint8_t huge[] = {0, 0, 8, 2, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 1, 2, 3};
	write_file("huge.idx.gz", huge, sizeof(huge), true, path, sizeof(path));
	refused(path, -EINVAL, "truncated idx file (3 data bytes, expected 4294967295)");
}

static void test_missing_file(void **state)
{
	(void)state;
	refused("/nonexistent/x.idx", -ENOENT, "No such file");
	refused("/nonexistent/x.idx.gz", -ENOENT, "No such file");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fmnist_test_labels),
		cmocka_unit_test(test_fmnist_test_images),
		cmocka_unit_test_setup_teardown(test_plain_and_gz_agree, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_truncated_gzip_stream_refused, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_garbage_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_dtype_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lying_header_refused, setup, teardown),
		cmocka_unit_test(test_missing_file),
	};
	return fz_test_exit(cmocka_run_group_tests_name("config/idx", tests, NULL, NULL));
}
