/* Freeze safetensors loader: JSON header read by jansson, checked offsets, aligned tensor data. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fz_io.h"
#include "fz_stages.h"

#define FZ_ST_HEADER_MAX (100u << 20) /* larger header lengths are refused as absurd */
#define FZ_ST_DIMS_MAX 8
#define FZ_ST_ALIGN 64 /* data section alignment (one cache line, an AVX-512 vector) */

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
	       "safetensors data is little-endian and is used in place");

struct fz_st_dtype {
	const char *name;
	unsigned size;
};

static const struct fz_st_dtype fz_st_dtypes[] = {
	{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F8_E4M3", 1}, {"F8_E5M2", 1},
	{"I64", 8}, {"I32", 4}, {"I16", 2}, {"I8", 1},	 {"U64", 8},	 {"U32", 4},
	{"U16", 2}, {"U8", 1},	{"BOOL", 1},
};

struct fz_st_tensor {
	char *name;
	const struct fz_st_dtype *dt;
	int ndim;
	int64_t dims[FZ_ST_DIMS_MAX];
	uint64_t begin, end; /* relative to the data section */
	const void *data;
	void *own; /* private aligned copy when begin is misaligned for the dtype */
};

struct fz_st_meta {
	char *key, *val;
};

struct fz_weights {
	char *path;
	void *block;	/* what to free: the file buffer (data in place) or an aligned copy */
	const char *data; /* data section */
	size_t n, nmeta;
	struct fz_st_tensor *t; /* sorted by name */
	struct fz_st_meta *meta; /* sorted by key */
};

/* Message context: the file, and the tensor being checked. */
struct fz_st_ctx {
	const char *file;
	const char *tensor;
	char *err;
	size_t errlen;
};

static void fz_st_msg(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void fz_st_msg(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* "<file>: [tensor '<t>': ]<what>"; returns -EINVAL. */
static int fz_st_fail(struct fz_st_ctx *cx, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int fz_st_fail(struct fz_st_ctx *cx, const char *fmt, ...)
{
	char what[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (cx->tensor)
		fz_st_msg(cx->err, cx->errlen, "%s: tensor '%s': %s", cx->file, cx->tensor, what);
	else
		fz_st_msg(cx->err, cx->errlen, "%s: %s", cx->file, what);
	return -EINVAL;
}

/* "an array", "a string", ... for "expected X, found Y" messages. */
static const char *fz_st_type(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a non-integer number";
	case JSON_TRUE: return "true";
	case JSON_FALSE: return "false";
	case JSON_NULL: return "null";
	}
	return "something else";
}

/* A non-negative JSON integer (jansson already refused any above INT64_MAX). */
static int fz_st_uint(struct fz_st_ctx *cx, const json_t *v, const char *what, uint64_t *out)
{
	json_int_t i;

	if (json_is_real(v))
		return fz_st_fail(cx, "non-integer %s", what);
	if (!json_is_integer(v))
		return fz_st_fail(cx, "%s is not an integer (found %s)", what, fz_st_type(v));
	i = json_integer_value(v);
	if (i < 0)
		return fz_st_fail(cx, "negative %s", what);
	*out = (uint64_t)i;
	return 0;
}

/* Array `arr` of at most `max` non-negative integers, each called `what` in messages. */
static int fz_st_uint_array(struct fz_st_ctx *cx, const json_t *a, const char *arr,
			    const char *what, int max, int64_t *out, int *n)
{
	size_t i;
	json_t *v;
	int rc;

	*n = 0;
	if (!json_is_array(a))
		return fz_st_fail(cx, "%s: expected an array of integers, found %s", arr,
				  fz_st_type(a));
	if (json_array_size(a) > (size_t)max)
		return fz_st_fail(cx, "more than %d values in %s", max, arr);
	json_array_foreach(a, i, v) {
		uint64_t u = 0;

		if ((rc = fz_st_uint(cx, v, what, &u)) < 0)
			return rc;
		out[(*n)++] = (int64_t)u;
	}
	return 0;
}

static const struct fz_st_dtype *fz_st_dtype_find(const char *name)
{
	for (size_t i = 0; i < sizeof(fz_st_dtypes) / sizeof(fz_st_dtypes[0]); i++)
		if (strcmp(fz_st_dtypes[i].name, name) == 0)
			return &fz_st_dtypes[i];
	return NULL;
}

/* {"dtype": "..", "shape": [..], "data_offsets": [b, e]}: all three and nothing else. */
static int fz_st_tensor(struct fz_st_ctx *cx, const json_t *o, struct fz_st_tensor *t)
{
	const json_t *dtype, *shape, *offsets;
	const char *key;
	int64_t off[2];
	json_t *v;
	int rc, n;

	if (!json_is_object(o))
		return fz_st_fail(cx, "expected an object with dtype, shape and data_offsets, "
				      "found %s", fz_st_type(o));
	json_object_foreach((json_t *)o, key, v)
		if (strcmp(key, "dtype") != 0 && strcmp(key, "shape") != 0 &&
		    strcmp(key, "data_offsets") != 0)
			return fz_st_fail(cx, "unknown field '%.32s'", key);
	if ((dtype = json_object_get(o, "dtype")) == NULL)
		return fz_st_fail(cx, "missing dtype");
	if ((shape = json_object_get(o, "shape")) == NULL)
		return fz_st_fail(cx, "missing shape");
	if ((offsets = json_object_get(o, "data_offsets")) == NULL)
		return fz_st_fail(cx, "missing data_offsets");

	if (!json_is_string(dtype))
		return fz_st_fail(cx, "dtype: expected a string, found %s", fz_st_type(dtype));
	t->dt = fz_st_dtype_find(json_string_value(dtype));
	if (t->dt == NULL)
		return fz_st_fail(cx, "unknown dtype '%.32s'", json_string_value(dtype));
	rc = fz_st_uint_array(cx, shape, "shape", "dim", FZ_ST_DIMS_MAX, t->dims, &t->ndim);
	if (rc < 0)
		return rc;
	rc = fz_st_uint_array(cx, offsets, "data_offsets", "data offset", 2, off, &n);
	if (rc < 0)
		return rc;
	if (n != 2)
		return fz_st_fail(cx, "data_offsets needs 2 integers, got %d", n);
	t->begin = (uint64_t)off[0];
	t->end = (uint64_t)off[1];
	return 0;
}

/* "__metadata__": {"key": "value", ...}, strings only. */
static int fz_st_metadata(struct fz_st_ctx *cx, const json_t *o, struct fz_weights *w)
{
	const char *key;
	json_t *v;

	if (!json_is_object(o))
		return fz_st_fail(cx, "__metadata__: expected an object of strings, found %s",
				  fz_st_type(o));
	w->meta = calloc(json_object_size(o) ? json_object_size(o) : 1, sizeof(*w->meta));
	if (w->meta == NULL)
		return -ENOMEM;
	json_object_foreach((json_t *)o, key, v) {
		struct fz_st_meta *m = &w->meta[w->nmeta];

		if (!json_is_string(v))
			return fz_st_fail(cx, "__metadata__ value of '%.32s' is not a string", key);
		/* Without JSON_ALLOW_NUL no key or string holds a NUL: C strings are whole. */
		m->key = strdup(key);
		m->val = strdup(json_string_value(v));
		w->nmeta++;
		if (m->key == NULL || m->val == NULL)
			return -ENOMEM;
	}
	return 0;
}

/*
 * The header [json, json + len): one object of tensors and at most one "__metadata__".
 * jansson refuses malformed JSON (with line and column), duplicate keys at any depth, integers
 * beyond int64, strings with NUL or bad UTF-8, and anything after the object.
 */
static int fz_st_header(struct fz_st_ctx *cx, const char *json, size_t len, struct fz_weights *w)
{
	json_error_t je;
	const char *key;
	json_t *root, *v;
	int rc = 0;

	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
	if (root == NULL) {
		if (json_error_code(&je) == json_error_out_of_memory)
			return -ENOMEM;
		return fz_st_fail(cx, "malformed header JSON at line %d, column %d: %s", je.line,
				  je.column, je.text);
	}
	if (!json_is_object(root)) {
		rc = fz_st_fail(cx, "header: expected a JSON object of tensors, found %s",
				fz_st_type(root));
		goto out;
	}
	w->t = calloc(json_object_size(root) ? json_object_size(root) : 1, sizeof(*w->t));
	if (w->t == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	json_object_foreach(root, key, v) {
		struct fz_st_tensor *t;

		if (strcmp(key, "__metadata__") == 0) {
			if ((rc = fz_st_metadata(cx, v, w)) < 0)
				goto out;
			continue;
		}
		t = &w->t[w->n++];
		if ((t->name = strdup(key)) == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		cx->tensor = t->name;
		if (key[0] == '\0') {
			rc = fz_st_fail(cx, "empty tensor name");
			goto out;
		}
		if ((rc = fz_st_tensor(cx, v, t)) < 0)
			goto out;
		cx->tensor = NULL;
	}
out:
	cx->tensor = NULL;
	json_decref(root);
	return rc;
}

static int fz_st_cmp_name(const void *a, const void *b)
{
	return strcmp(((const struct fz_st_tensor *)a)->name, ((const struct fz_st_tensor *)b)->name);
}

static int fz_st_cmp_key(const void *a, const void *b)
{
	return strcmp(((const struct fz_st_meta *)a)->key, ((const struct fz_st_meta *)b)->key);
}

static int fz_st_cmp_begin(const void *a, const void *b)
{
	const struct fz_st_tensor *x = *(const struct fz_st_tensor *const *)a;
	const struct fz_st_tensor *y = *(const struct fz_st_tensor *const *)b;

	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	return x->end < y->end ? -1 : x->end > y->end;
}

/* "[16,1,3,3]" into buf. */
static const char *fz_st_shape_str(char *buf, size_t len, int ndim, const int64_t *dims)
{
	size_t o = 0;

	o += (size_t)snprintf(buf, len, "[");
	for (int i = 0; i < ndim && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%lld", i ? "," : "", (long long)dims[i]);
	if (o < len)
		snprintf(buf + o, len - o, "]");
	return buf;
}

/* Sizes, ranges and overlaps of the parsed tensors against a data section of dlen. */
static int fz_st_check(struct fz_st_ctx *cx, struct fz_weights *w, uint64_t dlen)
{
	struct fz_st_tensor **by_begin, *prev = NULL;
	char shape[160];

	for (size_t i = 0; i < w->n; i++) {
		struct fz_st_tensor *t = &w->t[i];
		uint64_t bytes = t->dt->size;

		cx->tensor = t->name;
		if (t->end < t->begin)
			return fz_st_fail(cx, "data_offsets [%llu,%llu]: end before begin",
					  (unsigned long long)t->begin, (unsigned long long)t->end);
		if (t->end > dlen)
			return fz_st_fail(cx,
					  "data_offsets [%llu,%llu] past the end of the data section "
					  "(%llu bytes): truncated file?",
					  (unsigned long long)t->begin, (unsigned long long)t->end,
					  (unsigned long long)dlen);
		for (int d = 0; d < t->ndim && bytes; d++) {
			if (t->dims[d] && bytes > UINT64_MAX / (uint64_t)t->dims[d])
				return fz_st_fail(cx, "shape %s overflows",
						  fz_st_shape_str(shape, sizeof(shape), t->ndim,
								  t->dims));
			bytes *= (uint64_t)t->dims[d];
		}
		for (int d = 0; d < t->ndim; d++)
			if (t->dims[d] == 0)
				bytes = 0;
		if (t->end - t->begin != bytes)
			return fz_st_fail(cx,
					  "data_offsets [%llu,%llu] hold %llu bytes, dtype %s shape %s "
					  "needs %llu",
					  (unsigned long long)t->begin, (unsigned long long)t->end,
					  (unsigned long long)(t->end - t->begin), t->dt->name,
					  fz_st_shape_str(shape, sizeof(shape), t->ndim, t->dims),
					  (unsigned long long)bytes);
	}
	cx->tensor = NULL;

	/* Sorted for bsearch; names and keys are unique (JSON_REJECT_DUPLICATES). */
	if (w->n > 1)
		qsort(w->t, w->n, sizeof(*w->t), fz_st_cmp_name);
	if (w->nmeta > 1)
		qsort(w->meta, w->nmeta, sizeof(*w->meta), fz_st_cmp_key);

	/* Overlaps: by begin, each non-empty tensor starts at or after the previous one's end. */
	by_begin = malloc((w->n ? w->n : 1) * sizeof(*by_begin));
	if (by_begin == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < w->n; i++)
		by_begin[i] = &w->t[i];
	if (w->n > 1)
		qsort(by_begin, w->n, sizeof(*by_begin), fz_st_cmp_begin);
	for (size_t i = 0; i < w->n; i++) {
		struct fz_st_tensor *t = by_begin[i];

		if (t->begin == t->end)
			continue;
		if (prev && t->begin < prev->end) {
			fz_st_fail(cx, "tensors '%.64s' [%llu,%llu) and '%.64s' [%llu,%llu) overlap",
				   prev->name, (unsigned long long)prev->begin,
				   (unsigned long long)prev->end, t->name,
				   (unsigned long long)t->begin, (unsigned long long)t->end);
			free(by_begin);
			return -EINVAL;
		}
		prev = t;
	}
	free(by_begin);
	return 0;
}

void fz_weights_free(struct fz_weights *w)
{
	if (w == NULL)
		return;
	for (size_t i = 0; i < w->n; i++) {
		free(w->t[i].name);
		free(w->t[i].own);
	}
	for (size_t i = 0; i < w->nmeta; i++) {
		free(w->meta[i].key);
		free(w->meta[i].val);
	}
	free(w->t);
	free(w->meta);
	free(w->block);
	free(w->path);
	free(w);
}

static size_t fz_st_round(size_t n)
{
	return (n + FZ_ST_ALIGN - 1) / FZ_ST_ALIGN * FZ_ST_ALIGN;
}

/* Point every tensor at its data: the section 64-byte aligned, each tensor aligned for its dtype. */
static int fz_st_place(struct fz_weights *w, char *buf, size_t base, size_t dlen)
{
	if ((uintptr_t)(buf + base) % FZ_ST_ALIGN == 0) {
		w->block = buf;
		w->data = buf + base;
	} else {
		/* One copy at start-up buys aligned loads for every later use of the weights. */
		w->block = aligned_alloc(FZ_ST_ALIGN, fz_st_round(dlen ? dlen : 1));
		if (w->block == NULL) {
			w->block = buf; /* freed with w */
			return -ENOMEM;
		}
		memcpy(w->block, buf + base, dlen);
		w->data = w->block;
		free(buf);
	}
	for (size_t i = 0; i < w->n; i++) {
		struct fz_st_tensor *t = &w->t[i];
		size_t bytes = (size_t)(t->end - t->begin);

		t->data = w->data + t->begin;
		if (t->begin % t->dt->size == 0)
			continue;
		t->own = aligned_alloc(FZ_ST_ALIGN, fz_st_round(bytes ? bytes : 1));
		if (t->own == NULL)
			return -ENOMEM;
		memcpy(t->own, t->data, bytes);
		t->data = t->own;
	}
	return 0;
}

struct fz_weights *fz_weights_parse(const char *name, void *buf, size_t len, char *err,
				    size_t errlen)
{
	struct fz_st_ctx cx = {.file = name, .err = err, .errlen = errlen};
	struct fz_weights *w;
	uint64_t hlen = 0;
	int rc;

	w = calloc(1, sizeof(*w));
	if (w == NULL || (w->path = strdup(name)) == NULL) {
		free(w);
		free(buf);
		fz_st_msg(err, errlen, "%s: out of memory", name);
		errno = ENOMEM;
		return NULL;
	}
	if (len < 8) {
		rc = fz_st_fail(&cx, "%zu bytes, shorter than the 8-byte header length", len);
		goto fail;
	}
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | ((const unsigned char *)buf)[i];
	if (hlen > FZ_ST_HEADER_MAX) {
		rc = fz_st_fail(&cx, "header length %llu is absurd (limit %u bytes)",
				(unsigned long long)hlen, FZ_ST_HEADER_MAX);
		goto fail;
	}
	if (hlen > len - 8) {
		rc = fz_st_fail(&cx, "header length %llu runs past the end of the file (%zu bytes)",
				(unsigned long long)hlen, len);
		goto fail;
	}
	if ((rc = fz_st_header(&cx, (const char *)buf + 8, (size_t)hlen, w)) < 0)
		goto fail;
	if ((rc = fz_st_check(&cx, w, len - 8 - hlen)) < 0)
		goto fail;
	rc = fz_st_place(w, buf, 8 + (size_t)hlen, len - 8 - (size_t)hlen);
	buf = NULL; /* owned by w now, or freed */
	if (rc < 0)
		goto fail;
	return w;
fail:
	if (rc == -ENOMEM)
		fz_st_msg(err, errlen, "%s: out of memory", name);
	fz_weights_free(w);
	free(buf);
	errno = -rc;
	return NULL;
}

struct fz_weights *fz_weights_load(const char *path, char *err, size_t errlen)
{
	void *buf;
	size_t len;
	int rc;

	rc = fz_file_read(path, &buf, &len);
	if (rc < 0) {
		fz_st_msg(err, errlen, "%s: cannot read weights: %s", path, strerror(-rc));
		errno = -rc;
		return NULL;
	}
	return fz_weights_parse(path, buf, len, err, errlen);
}

static const struct fz_st_tensor *fz_st_lookup(const struct fz_weights *w, const char *name)
{
	struct fz_st_tensor key = {.name = (char *)name};

	if (w == NULL || name == NULL || w->n == 0)
		return NULL;
	return bsearch(&key, w->t, w->n, sizeof(*w->t), fz_st_cmp_name);
}

const float *fz_weights_f32(const struct fz_weights *w, const char *name, int ndim,
			    const int64_t *dims, char *err, size_t errlen)
{
	const struct fz_st_tensor *t = fz_st_lookup(w, name);
	char want[160], have[160];
	bool same;

	if (t == NULL) {
		fz_st_msg(err, errlen, "%s: tensor '%s' not found", w ? w->path : "(no weights)",
			  name ? name : "(null)");
		errno = ENOENT;
		return NULL;
	}
	if (strcmp(t->dt->name, "F32") != 0) {
		fz_st_msg(err, errlen, "%s: tensor '%s': dtype %s, expected F32", w->path, name,
			  t->dt->name);
		errno = EINVAL;
		return NULL;
	}
	same = ndim == t->ndim;
	for (int i = 0; same && i < ndim; i++)
		same = dims[i] == t->dims[i];
	if (!same) {
		fz_st_msg(err, errlen, "%s: tensor '%s': shape %s, expected %s", w->path, name,
			  fz_st_shape_str(have, sizeof(have), t->ndim, t->dims),
			  fz_st_shape_str(want, sizeof(want), ndim < 0 ? 0 : ndim, dims));
		errno = EINVAL;
		return NULL;
	}
	return t->data;
}

const void *fz_weights_find(const struct fz_weights *w, const char *name, const char **dtype,
			    int *ndim, const int64_t **dims)
{
	const struct fz_st_tensor *t = fz_st_lookup(w, name);

	if (t == NULL)
		return NULL;
	if (dtype)
		*dtype = t->dt->name;
	if (ndim)
		*ndim = t->ndim;
	if (dims)
		*dims = t->dims;
	return t->data;
}

size_t fz_weights_count(const struct fz_weights *w)
{
	return w ? w->n : 0;
}

const char *fz_weights_name(const struct fz_weights *w, size_t i)
{
	return w && i < w->n ? w->t[i].name : NULL;
}

const char *fz_weights_meta(const struct fz_weights *w, const char *key)
{
	struct fz_st_meta k = {.key = (char *)key}, *m;

	if (w == NULL || key == NULL || w->nmeta == 0)
		return NULL;
	m = bsearch(&k, w->meta, w->nmeta, sizeof(*w->meta), fz_st_cmp_key);
	return m ? m->val : NULL;
}
