/* Unit tests of stages/safetensors.c: round trip, every refusal reason, the shipped weights. */
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

#include "../fz_test_skip.h"
#include "fz_stages.h"

static char g_dir[256];
static char g_err[512];

static const char *tpath(const char *name)
{
	static char p[512];

	snprintf(p, sizeof(p), "%s/%s", g_dir, name);
	return p;
}

static void write_raw(const char *path, const void *a, size_t alen, const void *b, size_t blen)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(a, 1, alen, f), alen);
	if (blen)
		assert_int_equal(fwrite(b, 1, blen, f), blen);
	assert_int_equal(fclose(f), 0);
}

/* A safetensors file: u64 LE length of `json`, `json`, `dlen` bytes of data. */
static const char *write_st(const char *name, const char *json, const void *data, size_t dlen)
{
	size_t n = strlen(json);
	char *img = malloc(8 + n);
	const char *path = tpath(name);

	assert_non_null(img);
	for (int i = 0; i < 8; i++)
		img[i] = (char)((uint64_t)n >> (8 * i));
	memcpy(img + 8, json, n);
	write_raw(path, img, 8 + n, data, dlen);
	free(img);
	return path;
}

static void assert_contains(const char *msg, const char *needle)
{
	if (strstr(msg, needle) == NULL)
		fail_msg("message \"%s\" does not mention \"%s\"", msg, needle);
}

/* Loading must fail with EINVAL and a message naming the file and every needle (NULL-ended). */
static void expect_refused(const char *name, const char *json, const void *data, size_t dlen, ...)
{
	const char *path = write_st(name, json, data, dlen);
	struct fz_weights *w;
	const char *needle;
	va_list ap;

	g_err[0] = '\0';
	errno = 0;
	w = fz_weights_load(path, g_err, sizeof(g_err));
	if (w != NULL)
		fail_msg("%s: loaded, expected a refusal of %s", name, json);
	assert_int_equal(errno, EINVAL);
	assert_contains(g_err, path);
	va_start(ap, dlen);
	while ((needle = va_arg(ap, const char *)) != NULL)
		assert_contains(g_err, needle);
	va_end(ap);
}

static uint8_t g_zero[4096];

static int group_setup(void **state)
{
	const char *tmp = getenv("TMPDIR");

	(void)state;
	snprintf(g_dir, sizeof(g_dir), "%s/fz_safetensors_XXXXXX", tmp && *tmp ? tmp : "/tmp");
	return mkdtemp(g_dir) ? 0 : -1;
}

static int group_teardown(void **state)
{
	char cmd[600];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---- the valid file ---- */

#define RT_JSON                                                                                    \
	"{\"mask\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},"                      \
	" \"odd\" : { \"shape\" : [ 2 ] , \"dtype\" : \"F32\", \"data_offsets\" : [3, 11] },\n"   \
	"\"conv.weight\":{\"dtype\":\"F32\",\"shape\":[2,1,3,3],\"data_offsets\":[16,88]},"        \
	"\"fc\\u002ebias\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[88,104]},"           \
	"\"__metadata__\":{\"format\":\"freeze\","                                                 \
	"\"note\":\"tab\\there \\\"q\\\" \\u00e9 \\ud83d\\ude00\"},"                               \
	"\"steps\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[104,112]},"                   \
	"\"empty\":{\"dtype\":\"F16\",\"shape\":[0,5],\"data_offsets\":[112,112]}}   "

static size_t rt_data(uint8_t *d)
{
	float odd[2] = {0.5f, -2.0f}, conv[18], bias[4] = {1, 2, 3, 4};
	int64_t steps = 123456789012LL;

	memset(d, 0xee, 112);
	d[0] = 1, d[1] = 2, d[2] = 3;
	memcpy(d + 3, odd, sizeof(odd)); /* misaligned on purpose: begin 3 */
	for (int i = 0; i < 18; i++)
		conv[i] = (float)i * 0.25f;
	memcpy(d + 16, conv, sizeof(conv)); /* bytes 11..15 are a gap */
	memcpy(d + 88, bias, sizeof(bias));
	memcpy(d + 104, &steps, sizeof(steps));
	return 112;
}

static void test_round_trip(void **state)
{
	uint8_t d[112];
	const char *path, *dtype;
	const int64_t *dims;
	const int64_t conv_dims[] = {2, 1, 3, 3}, four[] = {4}, two[] = {2};
	struct fz_weights *w;
	const float *f;
	const uint8_t *u;
	const int64_t *s;
	int ndim;

	(void)state;
	path = write_st("ok.safetensors", RT_JSON, d, rt_data(d));
	w = fz_weights_load(path, g_err, sizeof(g_err));
	if (w == NULL)
		fail_msg("load: %s", g_err);
	assert_int_equal(fz_weights_count(w), 6);
	/* Names come back sorted. */
	assert_string_equal(fz_weights_name(w, 0), "conv.weight");
	assert_string_equal(fz_weights_name(w, 1), "empty");
	assert_string_equal(fz_weights_name(w, 2), "fc.bias");
	assert_string_equal(fz_weights_name(w, 5), "steps");
	assert_null(fz_weights_name(w, 6));

	f = fz_weights_f32(w, "conv.weight", 4, conv_dims, g_err, sizeof(g_err));
	assert_non_null(f);
	assert_int_equal((uintptr_t)f % sizeof(float), 0);
	for (int i = 0; i < 18; i++)
		assert_true(f[i] == (float)i * 0.25f);
	f = fz_weights_f32(w, "fc.bias", 1, four, g_err, sizeof(g_err));
	assert_non_null(f);
	assert_true(f[0] == 1.0f && f[3] == 4.0f);
	f = fz_weights_f32(w, "odd", 1, two, g_err, sizeof(g_err));
	assert_non_null(f);
	assert_int_equal((uintptr_t)f % sizeof(float), 0);
	assert_true(f[0] == 0.5f && f[1] == -2.0f);

	u = fz_weights_find(w, "mask", &dtype, &ndim, &dims);
	assert_non_null(u);
	assert_string_equal(dtype, "U8");
	assert_int_equal(ndim, 1);
	assert_int_equal(dims[0], 3);
	assert_true(u[0] == 1 && u[1] == 2 && u[2] == 3);
	s = fz_weights_find(w, "steps", &dtype, &ndim, NULL);
	assert_non_null(s);
	assert_string_equal(dtype, "I64");
	assert_int_equal(ndim, 0);
	assert_int_equal((uintptr_t)s % sizeof(int64_t), 0);
	assert_true(*s == 123456789012LL);
	assert_non_null(fz_weights_find(w, "empty", &dtype, &ndim, &dims));
	assert_string_equal(dtype, "F16");
	assert_int_equal(ndim, 2);
	assert_int_equal(dims[0], 0);

	assert_string_equal(fz_weights_meta(w, "format"), "freeze");
	assert_string_equal(fz_weights_meta(w, "note"),
			    "tab\there \"q\" \xc3\xa9 \xf0\x9f\x98\x80");
	assert_null(fz_weights_meta(w, "missing"));
	fz_weights_free(w);
}

/* Edge cases that are valid: no tensors, only metadata, data after the last tensor. */
static void test_valid_edge_cases(void **state)
{
	const char *path;
	struct fz_weights *w;

	(void)state;
	path = write_st("empty.safetensors", "{}", NULL, 0);
	w = fz_weights_load(path, g_err, sizeof(g_err));
	if (w == NULL)
		fail_msg("%s", g_err);
	assert_int_equal(fz_weights_count(w), 0);
	assert_null(fz_weights_find(w, "x", NULL, NULL, NULL));
	fz_weights_free(w);

	path = write_st("trail.safetensors",
			"{\"__metadata__\":{},\"a\":{\"dtype\":\"BF16\",\"shape\":[2],"
			"\"data_offsets\":[4,8]}}",
			g_zero, 16);
	w = fz_weights_load(path, g_err, sizeof(g_err));
	if (w == NULL)
		fail_msg("%s", g_err);
	assert_int_equal(fz_weights_count(w), 1);
	fz_weights_free(w);
}

/* ---- refusals of the whole file ---- */

static void test_truncated_file(void **state)
{
	uint8_t d[112];
	const char *path = tpath("short.safetensors");

	(void)state;
	write_raw(path, "\x10\x00\x00\x00\x00", 5, NULL, 0);
	errno = 0;
	assert_null(fz_weights_load(path, g_err, sizeof(g_err)));
	assert_int_equal(errno, EINVAL);
	assert_contains(g_err, path);
	assert_contains(g_err, "shorter than the 8-byte header length");

	/* The valid file cut inside the last tensor's data. */
	rt_data(d);
	expect_refused("cut.safetensors", RT_JSON, d, 108, "'steps'", "truncated", NULL);
}

static void test_header_length_past_eof(void **state)
{
	uint8_t img[40] = {0};
	const char *path = tpath("hlen.safetensors");

	(void)state;
	img[0] = 0xe8, img[1] = 0x03; /* 1000 bytes of header in a 40-byte file */
	memcpy(img + 8, "{}", 2);
	write_raw(path, img, sizeof(img), NULL, 0);
	errno = 0;
	assert_null(fz_weights_load(path, g_err, sizeof(g_err)));
	assert_int_equal(errno, EINVAL);
	assert_contains(g_err, "header length 1000");
	assert_contains(g_err, "past the end of the file");

	img[0] = 0, img[1] = 0, img[5] = 1; /* 2^40 */
	write_raw(path, img, sizeof(img), NULL, 0);
	assert_null(fz_weights_load(path, g_err, sizeof(g_err)));
	assert_int_equal(errno, EINVAL);
	assert_contains(g_err, "absurd");
}

static void test_header_lies_about_sizes(void **state)
{
	(void)state;
	expect_refused("lies.safetensors",
		       "{\"ok\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
		       "\"liar\":{\"dtype\":\"F32\",\"shape\":[4,4],\"data_offsets\":[4,64]}}",
		       g_zero, 64, "'liar'", "hold 60 bytes", "[4,4]", "needs 64", NULL);
	expect_refused("lies2.safetensors",
		       "{\"i64\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[0,12]}}",
		       g_zero, 64, "'i64'", "I64", "needs 24", NULL);
}

static void test_offsets_out_of_range(void **state)
{
	(void)state;
	expect_refused("range.safetensors",
		       "{\"far\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[1000,1008]}}",
		       g_zero, 64, "'far'", "[1000,1008]", "past the end of the data section", NULL);
	expect_refused("backwards.safetensors",
		       "{\"back\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,4]}}", g_zero,
		       64, "'back'", "end before begin", NULL);
	expect_refused("huge.safetensors",
		       "{\"huge\":{\"dtype\":\"U8\",\"shape\":[1],"
		       "\"data_offsets\":[0,99999999999999999999]}}",
		       g_zero, 64, "malformed header JSON at line 1, column 72", "too big integer",
		       NULL);
	expect_refused("three.safetensors",
		       "{\"three\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}",
		       g_zero, 64, "'three'", "data_offsets", NULL);
}

static void test_overlapping_offsets(void **state)
{
	(void)state;
	expect_refused("overlap.safetensors",
		       "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
		       "\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32,36]},"
		       "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
		       g_zero, 64, "'a'", "'b'", "overlap", NULL);
	/* Same range twice is an overlap too. */
	expect_refused("alias.safetensors",
		       "{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
		       "\"y\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
		       g_zero, 64, "'x'", "'y'", "overlap", NULL);
}

static void test_bad_dtype(void **state)
{
	(void)state;
	expect_refused("dtype.safetensors",
		       "{\"w\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", g_zero, 64,
		       "'w'", "unknown dtype 'F33'", NULL);
	expect_refused("dtype2.safetensors",
		       "{\"w\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", g_zero, 64,
		       "'w'", "expected a string", NULL);
}

static void test_malformed_json(void **state)
{
	static const char *const bad[] = {
		"",
		"[]",
		"{",
		"{\"a\"}",
		"{\"a\" {\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
		"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},}",
		"{\"a\":{\"dtype\":\"U8\",\"shape\":[1,],\"data_offsets\":[0,1]}}",
		"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}} x",
		"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}{}",
		"{\"a\":{\"dtype\":\"U8\",\"shape\":[01],\"data_offsets\":[0,1]}}",
		"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,-]}}",
		"{\"a:{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
		"{\"a\\q\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
		"{\"a\\u12\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
		"{\"a\\u0000\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
		"{\"a\\ud800\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
		"{\"a\xff\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
		"{\"a\xc0\xae\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
		"{\"a\tb\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
		"{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":1}}",
		"{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
		"{\"a\":[0,1]}",
		"{\"__metadata__\":{\"k\":1}}",
		"{\"__metadata__\":{\"k\":\"v\"},\"__metadata__\":{}}",
		"{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"}}",
		"{\"\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
		"{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}",
	};
	char name[64];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(name, sizeof(name), "bad%zu.safetensors", i);
		expect_refused(name, bad[i], g_zero, 64, NULL);
	}
	/* Syntax errors say where, and what was expected. */
	expect_refused("colon.safetensors", "{\"a\" 1}", g_zero, 64,
		       "malformed header JSON at line 1, column 6", "':' expected near '1'", NULL);
}

/*
 * A syntax error on a later line names that line and the column in it: of the last character of
 * the offending token, counted in characters (the two-byte e-acute counts once).
 */
static void test_syntax_error_line_column(void **state)
{
	(void)state;
	expect_refused("syntax.safetensors",
		       "{\n"
		       "  \"a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]},\n"
		       "  \"\xc3\xa9\xc3\xa9\": {\"dtype\": \"U8\" \"shape\": [1]}\n"
		       "}\n",
		       g_zero, 64, "malformed header JSON at line 3, column 30",
		       "'}' expected near '\"shape\"'", NULL);
	expect_refused("eof.safetensors", "{\"a\": {\"dtype\": \"U8\",\n", g_zero, 64,
		       "line 2, column 0", "end of file", NULL);
}

static void test_missing_field(void **state)
{
	(void)state;
	expect_refused("nodtype.safetensors", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}",
		       g_zero, 64, "'w'", "missing dtype", NULL);
	expect_refused("noshape.safetensors", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}",
		       g_zero, 64, "'w'", "missing shape", NULL);
	expect_refused("nooffsets.safetensors", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", g_zero,
		       64, "'w'", "missing data_offsets", NULL);
}

static void test_bad_dims(void **state)
{
	(void)state;
	expect_refused("negdim.safetensors",
		       "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1,4],\"data_offsets\":[0,16]}}", g_zero,
		       64, "'w'", "negative dim", NULL);
	expect_refused("fracdim.safetensors",
		       "{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", g_zero, 64,
		       "'w'", "non-integer dim", NULL);
	expect_refused("expdim.safetensors",
		       "{\"w\":{\"dtype\":\"F32\",\"shape\":[1e2],\"data_offsets\":[0,400]}}", g_zero,
		       64, "'w'", "non-integer dim", NULL);
	expect_refused("strdim.safetensors",
		       "{\"w\":{\"dtype\":\"F32\",\"shape\":[\"4\"],\"data_offsets\":[0,16]}}", g_zero,
		       64, "'w'", "dim is not an integer", NULL);
	expect_refused("overflow.safetensors",
		       "{\"w\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],"
		       "\"data_offsets\":[0,0]}}",
		       g_zero, 64, "'w'", "overflows", NULL);
}

static void test_duplicate_names(void **state)
{
	(void)state;
	expect_refused("dup.safetensors",
		       "{\"twice\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
		       "\"other\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]},"
		       "\"twice\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[8,12]}}",
		       g_zero, 64, "line 1, column 120", "duplicate object key near '\"twice\"'",
		       NULL);
	/* The same name spelled with an escape is still a duplicate. */
	expect_refused("dup2.safetensors",
		       "{\"ab\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
		       "\"a\\u0062\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
		       g_zero, 64, "duplicate object key near '\"a\\u0062\"'", NULL);
}

/* Duplicate keys are refused at every depth, with the line and column of the second one. */
static void test_duplicate_key_line_column(void **state)
{
	(void)state;
	expect_refused("dupfield.safetensors",
		       "{\n"
		       "  \"w\": {\"dtype\": \"U8\",\n"
		       "        \"shape\": [4],\n"
		       "        \"dtype\": \"F32\",\n"
		       "        \"data_offsets\": [0, 4]}\n"
		       "}",
		       g_zero, 64, "malformed header JSON at line 4, column 15",
		       "duplicate object key near '\"dtype\"'", NULL);
	expect_refused("dupmeta.safetensors",
		       "{\"__metadata__\": {\"format\": \"freeze\",\n"
		       "                  \"format\": \"other\"}}",
		       g_zero, 64, "line 2, column 26", "duplicate object key near '\"format\"'",
		       NULL);
	expect_refused("dupmeta2.safetensors",
		       "{\"__metadata__\": {},\n\"__metadata__\": {}}", g_zero, 64,
		       "line 2, column 14", "duplicate object key near '\"__metadata__\"'", NULL);
}

static void test_missing_file(void **state)
{
	(void)state;
	errno = 0;
	assert_null(fz_weights_load(tpath("nope.safetensors"), g_err, sizeof(g_err)));
	assert_int_equal(errno, ENOENT);
	assert_contains(g_err, "nope.safetensors");
}

/* ---- fz_weights_f32 refusals ---- */

static struct fz_weights *load_valid(void)
{
	uint8_t d[112];
	struct fz_weights *w;

	w = fz_weights_load(write_st("ok2.safetensors", RT_JSON, d, rt_data(d)), g_err,
			    sizeof(g_err));
	if (w == NULL)
		fail_msg("load: %s", g_err);
	return w;
}

static void test_missing_tensor(void **state)
{
	const int64_t dims[] = {4};
	struct fz_weights *w = load_valid();

	(void)state;
	errno = 0;
	assert_null(fz_weights_f32(w, "fc.weight", 1, dims, g_err, sizeof(g_err)));
	assert_int_equal(errno, ENOENT);
	assert_contains(g_err, "'fc.weight'");
	assert_contains(g_err, "not found");
	assert_contains(g_err, "ok2.safetensors");
	assert_null(fz_weights_find(w, "fc.weight", NULL, NULL, NULL));
	fz_weights_free(w);
}

static void test_wrong_shape(void **state)
{
	const int64_t want[] = {2, 1, 3, 5}, fewer[] = {2, 1, 3};
	struct fz_weights *w = load_valid();

	(void)state;
	errno = 0;
	assert_null(fz_weights_f32(w, "conv.weight", 4, want, g_err, sizeof(g_err)));
	assert_int_equal(errno, EINVAL);
	assert_contains(g_err, "'conv.weight'");
	assert_contains(g_err, "shape [2,1,3,3]");
	assert_contains(g_err, "expected [2,1,3,5]");
	assert_null(fz_weights_f32(w, "conv.weight", 3, fewer, g_err, sizeof(g_err)));
	assert_contains(g_err, "expected [2,1,3]");
	fz_weights_free(w);
}

static void test_wrong_dtype(void **state)
{
	const int64_t dims[] = {3};
	struct fz_weights *w = load_valid();

	(void)state;
	errno = 0;
	assert_null(fz_weights_f32(w, "mask", 1, dims, g_err, sizeof(g_err)));
	assert_int_equal(errno, EINVAL);
	assert_contains(g_err, "'mask'");
	assert_contains(g_err, "dtype U8, expected F32");
	fz_weights_free(w);
}

/* ---- the shipped model ---- */

static void test_real_weights(void **state)
{
	const char *src = getenv("FZ_SRCDIR");
	const int64_t stem[] = {16, 1, 3, 3}, fc[] = {10, 128};
	char path[1024];
	struct fz_weights *w;
	const float *f;

	(void)state;
	snprintf(path, sizeof(path), "%s/models/resnet18-w16-fmnist/weights.safetensors",
		 src ? src : ".");
	if (access(path, R_OK) != 0) {
		FZ_SKIP("%s not there (train it with tools/train.py)", path);
	}
	w = fz_weights_load(path, g_err, sizeof(g_err));
	if (w == NULL)
		fail_msg("%s", g_err);
	f = fz_weights_f32(w, "stem.weight", 4, stem, g_err, sizeof(g_err));
	if (f == NULL)
		fail_msg("%s", g_err);
	assert_int_equal((uintptr_t)f % sizeof(float), 0);
	if (fz_weights_f32(w, "fc.weight", 2, fc, g_err, sizeof(g_err)) == NULL)
		fail_msg("%s", g_err);
	/* The trainer exports every tensor as F32 and tags the file. */
	for (size_t i = 0; i < fz_weights_count(w); i++) {
		const char *dtype;

		assert_non_null(fz_weights_find(w, fz_weights_name(w, i), &dtype, NULL, NULL));
		assert_string_equal(dtype, "F32");
	}
	assert_true(fz_weights_count(w) > 60);
	assert_string_equal(fz_weights_meta(w, "format"), "freeze");
	fz_weights_free(w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_valid_edge_cases),
		cmocka_unit_test(test_truncated_file),
		cmocka_unit_test(test_header_length_past_eof),
		cmocka_unit_test(test_header_lies_about_sizes),
		cmocka_unit_test(test_offsets_out_of_range),
		cmocka_unit_test(test_overlapping_offsets),
		cmocka_unit_test(test_bad_dtype),
		cmocka_unit_test(test_malformed_json),
		cmocka_unit_test(test_missing_field),
		cmocka_unit_test(test_bad_dims),
		cmocka_unit_test(test_syntax_error_line_column),
		cmocka_unit_test(test_duplicate_names),
		cmocka_unit_test(test_duplicate_key_line_column),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_missing_tensor),
		cmocka_unit_test(test_wrong_shape),
		cmocka_unit_test(test_wrong_dtype),
		cmocka_unit_test(test_real_weights),
	};

	return fz_test_exit(
	    cmocka_run_group_tests_name("safetensors", tests, group_setup, group_teardown));
}
