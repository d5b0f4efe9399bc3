/* Freeze safetensors loader: strict header parser, checked offsets, aligned tensor data. */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* Parser state over the JSON header [p, end). */
struct fz_st_js {
	const char *start, *p, *end;
	const char *file;
	const char *tensor; /* tensor being parsed, for messages */
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

/* "<file>: [tensor '<t>': ]<what>" (plus the header byte offset for syntax errors). */
static int fz_st_fail(struct fz_st_js *js, bool syntax, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fz_st_fail(struct fz_st_js *js, bool syntax, const char *fmt, ...)
{
	char what[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (syntax)
		fz_st_msg(js->err, js->errlen, "%s: malformed header JSON at byte %zu: %s%s%s%s",
			  js->file, (size_t)(js->p - js->start), what, js->tensor ? " (tensor '" : "",
			  js->tensor ? js->tensor : "", js->tensor ? "')" : "");
	else if (js->tensor)
		fz_st_msg(js->err, js->errlen, "%s: tensor '%s': %s", js->file, js->tensor, what);
	else
		fz_st_msg(js->err, js->errlen, "%s: %s", js->file, what);
	return -EINVAL;
}

static void fz_st_ws(struct fz_st_js *js)
{
	while (js->p < js->end &&
	       (*js->p == ' ' || *js->p == '\t' || *js->p == '\n' || *js->p == '\r'))
		js->p++;
}

/* Skip whitespace, then consume `c`. */
static int fz_st_expect(struct fz_st_js *js, char c)
{
	fz_st_ws(js);
	if (js->p >= js->end)
		return fz_st_fail(js, true, "expected '%c', got end of header", c);
	if (*js->p != c) {
		unsigned char g = (unsigned char)*js->p;

		if (g >= 0x20 && g < 0x7f)
			return fz_st_fail(js, true, "expected '%c', got '%c'", c, g);
		return fz_st_fail(js, true, "expected '%c', got byte 0x%02x", c, g);
	}
	js->p++;
	return 0;
}

static int fz_st_hex4(const char *s, unsigned *v)
{
	*v = 0;
	for (int i = 0; i < 4; i++) {
		char c = s[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return -1;
		*v = *v << 4 | d;
	}
	return 0;
}

/* Length of the well-formed UTF-8 sequence at s (n bytes left), or 0 (RFC 3629 table). */
static size_t fz_st_utf8_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t len;
	unsigned char lo = 0x80, hi = 0xbf;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		len = 2;
	else if (c >= 0xe0 && c <= 0xef)
		len = 3;
	else if (c >= 0xf0 && c <= 0xf4)
		len = 4;
	else
		return 0;
	if (c == 0xe0)
		lo = 0xa0; /* overlong */
	else if (c == 0xed)
		hi = 0x9f; /* surrogates */
	else if (c == 0xf0)
		lo = 0x90; /* overlong */
	else if (c == 0xf4)
		hi = 0x8f; /* above U+10FFFF */
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return len;
}

static char *fz_st_put_utf8(char *o, unsigned cp)
{
	if (cp < 0x80) {
		*o++ = (char)cp;
	} else if (cp < 0x800) {
		*o++ = (char)(0xc0 | cp >> 6);
		*o++ = (char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		*o++ = (char)(0xe0 | cp >> 12);
		*o++ = (char)(0x80 | (cp >> 6 & 0x3f));
		*o++ = (char)(0x80 | (cp & 0x3f));
	} else {
		*o++ = (char)(0xf0 | cp >> 18);
		*o++ = (char)(0x80 | (cp >> 12 & 0x3f));
		*o++ = (char)(0x80 | (cp >> 6 & 0x3f));
		*o++ = (char)(0x80 | (cp & 0x3f));
	}
	return o;
}

/*
 * A JSON string into a new NUL-terminated UTF-8 string. Refuses raw control characters,
 * malformed UTF-8, unknown escapes, lone surrogates and \u0000 (names are C strings).
 */
static int fz_st_string(struct fz_st_js *js, char **out)
{
	const char *q;
	char *s, *o;

	*out = NULL;
	fz_st_ws(js);
	if (js->p >= js->end || *js->p != '"')
		return fz_st_fail(js, true, "expected a string");
	/* Decoding never grows the text: find the closing quote, size the output by the span. */
	for (q = js->p + 1; q < js->end && *q != '"'; q++)
		if (*q == '\\' && ++q == js->end)
			break;
	if (q >= js->end)
		return fz_st_fail(js, true, "unterminated string");
	s = malloc((size_t)(q - js->p));
	if (s == NULL)
		return -ENOMEM;
	o = s;
	js->p++;
	while (*js->p != '"') {
		unsigned char c = (unsigned char)*js->p;
		unsigned cp, lo;
		size_t n;

		if (c < 0x20) {
			fz_st_fail(js, true, "control character 0x%02x in string", c);
			goto bad;
		}
		if (c >= 0x80) {
			n = fz_st_utf8_len((const unsigned char *)js->p, (size_t)(q - js->p));
			if (n == 0) {
				fz_st_fail(js, true, "invalid UTF-8 in string");
				goto bad;
			}
			memcpy(o, js->p, n);
			o += n;
			js->p += n;
			continue;
		}
		if (c != '\\') {
			*o++ = (char)c;
			js->p++;
			continue;
		}
		switch (js->p[1]) {
		case '"': *o++ = '"'; break;
		case '\\': *o++ = '\\'; break;
		case '/': *o++ = '/'; break;
		case 'b': *o++ = '\b'; break;
		case 'f': *o++ = '\f'; break;
		case 'n': *o++ = '\n'; break;
		case 'r': *o++ = '\r'; break;
		case 't': *o++ = '\t'; break;
		case 'u':
			if (q - js->p < 6 || fz_st_hex4(js->p + 2, &cp) < 0) {
				fz_st_fail(js, true, "bad \\u escape");
				goto bad;
			}
			if (cp == 0) {
				fz_st_fail(js, true, "\\u0000 in string");
				goto bad;
			}
			if (cp >= 0xdc00 && cp <= 0xdfff) {
				fz_st_fail(js, true, "lone low surrogate in \\u escape");
				goto bad;
			}
			if (cp >= 0xd800 && cp <= 0xdbff) {
				if (q - js->p < 12 || js->p[6] != '\\' || js->p[7] != 'u' ||
				    fz_st_hex4(js->p + 8, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff) {
					fz_st_fail(js, true, "lone high surrogate in \\u escape");
					goto bad;
				}
				cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				js->p += 6;
			}
			o = fz_st_put_utf8(o, cp);
			js->p += 4;
			break;
		default:
			fz_st_fail(js, true, "bad escape in string");
			goto bad;
		}
		js->p += 2;
	}
	js->p++;
	*o = '\0';
	*out = s;
	return 0;
bad:
	free(s);
	return -EINVAL;
}

/* A non-negative JSON integer (at most INT64_MAX); `what` names it in messages. */
static int fz_st_uint(struct fz_st_js *js, const char *what, uint64_t *v)
{
	const char *d;

	fz_st_ws(js);
	if (js->p < js->end && *js->p == '-') {
		if (js->end - js->p < 2 || js->p[1] < '0' || js->p[1] > '9')
			return fz_st_fail(js, true, "expected a number after '-'");
		return fz_st_fail(js, false, "negative %s", what);
	}
	if (js->p >= js->end || *js->p < '0' || *js->p > '9')
		return fz_st_fail(js, false, "%s is not an integer", what);
	d = js->p;
	*v = 0;
	while (js->p < js->end && *js->p >= '0' && *js->p <= '9') {
		unsigned dig = (unsigned)(*js->p - '0');

		if (*v > ((uint64_t)INT64_MAX - dig) / 10)
			return fz_st_fail(js, false, "%s too large", what);
		*v = *v * 10 + dig;
		js->p++;
	}
	if (*d == '0' && js->p - d > 1)
		return fz_st_fail(js, true, "leading zero in number");
	if (js->p < js->end && (*js->p == '.' || *js->p == 'e' || *js->p == 'E'))
		return fz_st_fail(js, false, "non-integer %s", what);
	return 0;
}

/* After a member: ',' (returns 1, more follow) or `close` (returns 0). */
static int fz_st_next(struct fz_st_js *js, char close)
{
	fz_st_ws(js);
	if (js->p < js->end && *js->p == ',') {
		js->p++;
		fz_st_ws(js);
		if (js->p < js->end && *js->p == close)
			return fz_st_fail(js, true, "trailing comma");
		return 1;
	}
	if (js->p < js->end && *js->p == close) {
		js->p++;
		return 0;
	}
	return fz_st_fail(js, true, "expected ',' or '%c'", close);
}

/* Array `arr` of at most `max` non-negative integers, each called `what` in messages. */
static int fz_st_uint_array(struct fz_st_js *js, const char *arr, const char *what, int max,
			    int64_t *out, int *n)
{
	int rc;
	uint64_t v = 0;

	*n = 0;
	if ((rc = fz_st_expect(js, '[')) < 0)
		return rc;
	fz_st_ws(js);
	if (js->p < js->end && *js->p == ']') {
		js->p++;
		return 0;
	}
	for (;;) {
		if (*n == max)
			return fz_st_fail(js, false, "more than %d values in %s", max, arr);
		if ((rc = fz_st_uint(js, what, &v)) < 0)
			return rc;
		out[(*n)++] = (int64_t)v;
		if ((rc = fz_st_next(js, ']')) <= 0)
			return rc;
	}
}

static const struct fz_st_dtype *fz_st_dtype_find(const char *name)
{
	for (size_t i = 0; i < sizeof(fz_st_dtypes) / sizeof(fz_st_dtypes[0]); i++)
		if (strcmp(fz_st_dtypes[i].name, name) == 0)
			return &fz_st_dtypes[i];
	return NULL;
}

/* {"dtype": "..", "shape": [..], "data_offsets": [b, e]}: all three, nothing else, once. */
static int fz_st_tensor(struct fz_st_js *js, struct fz_st_tensor *t)
{
	bool dtype = false, shape = false, offsets = false;
	int64_t off[2];
	int rc, n;

	if ((rc = fz_st_expect(js, '{')) < 0)
		return rc;
	fz_st_ws(js);
	rc = (js->p < js->end && *js->p == '}') ? (js->p++, 0) : 1;
	while (rc == 1) {
		char *key, *val;

		if ((rc = fz_st_string(js, &key)) < 0)
			return rc;
		if ((rc = fz_st_expect(js, ':')) < 0)
			goto out_key;
		if (strcmp(key, "dtype") == 0 && !dtype) {
			dtype = true;
			if ((rc = fz_st_string(js, &val)) < 0)
				goto out_key;
			t->dt = fz_st_dtype_find(val);
			if (t->dt == NULL)
				rc = fz_st_fail(js, false, "unknown dtype '%.32s'", val);
			free(val);
		} else if (strcmp(key, "shape") == 0 && !shape) {
			shape = true;
			rc = fz_st_uint_array(js, "shape", "dim", FZ_ST_DIMS_MAX, t->dims, &t->ndim);
		} else if (strcmp(key, "data_offsets") == 0 && !offsets) {
			offsets = true;
			rc = fz_st_uint_array(js, "data_offsets", "data offset", 2, off, &n);
			if (rc == 0 && n != 2)
				rc = fz_st_fail(js, false, "data_offsets needs 2 integers, got %d", n);
			if (rc == 0) {
				t->begin = (uint64_t)off[0];
				t->end = (uint64_t)off[1];
			}
		} else if (dtype && strcmp(key, "dtype") == 0) {
			rc = fz_st_fail(js, false, "duplicate field 'dtype'");
		} else if (shape && strcmp(key, "shape") == 0) {
			rc = fz_st_fail(js, false, "duplicate field 'shape'");
		} else if (offsets && strcmp(key, "data_offsets") == 0) {
			rc = fz_st_fail(js, false, "duplicate field 'data_offsets'");
		} else {
			rc = fz_st_fail(js, false, "unknown field '%.32s'", key);
		}
out_key:
		free(key);
		if (rc < 0)
			return rc;
		rc = fz_st_next(js, '}');
	}
	if (rc < 0)
		return rc;
	if (!dtype)
		return fz_st_fail(js, false, "missing dtype");
	if (!shape)
		return fz_st_fail(js, false, "missing shape");
	if (!offsets)
		return fz_st_fail(js, false, "missing data_offsets");
	return 0;
}

/* "__metadata__": {"key": "value", ...}, strings only. */
static int fz_st_metadata(struct fz_st_js *js, struct fz_weights *w)
{
	int rc;

	if ((rc = fz_st_expect(js, '{')) < 0)
		return rc;
	fz_st_ws(js);
	rc = (js->p < js->end && *js->p == '}') ? (js->p++, 0) : 1;
	while (rc == 1) {
		struct fz_st_meta *m = realloc(w->meta, (w->nmeta + 1) * sizeof(*m));

		if (m == NULL)
			return -ENOMEM;
		w->meta = m;
		m = &w->meta[w->nmeta];
		m->val = NULL;
		if ((rc = fz_st_string(js, &m->key)) < 0)
			return rc;
		w->nmeta++;
		if ((rc = fz_st_expect(js, ':')) < 0)
			return rc;
		fz_st_ws(js);
		if (js->p < js->end && *js->p != '"')
			return fz_st_fail(js, false, "__metadata__ value of '%.32s' is not a string",
					  m->key);
		if ((rc = fz_st_string(js, &m->val)) < 0)
			return rc;
		rc = fz_st_next(js, '}');
	}
	return rc;
}

/* The whole header: one object of tensors and at most one "__metadata__", then whitespace. */
static int fz_st_header(struct fz_st_js *js, struct fz_weights *w)
{
	bool meta = false;
	size_t cap = 0;
	int rc;

	if ((rc = fz_st_expect(js, '{')) < 0)
		return rc;
	fz_st_ws(js);
	rc = (js->p < js->end && *js->p == '}') ? (js->p++, 0) : 1;
	while (rc == 1) {
		struct fz_st_tensor *t;
		char *key;

		if ((rc = fz_st_string(js, &key)) < 0)
			return rc;
		if (strcmp(key, "__metadata__") == 0) {
			free(key);
			if (meta)
				return fz_st_fail(js, false, "duplicate __metadata__");
			meta = true;
			if ((rc = fz_st_expect(js, ':')) < 0 || (rc = fz_st_metadata(js, w)) < 0)
				return rc;
			rc = fz_st_next(js, '}');
			continue;
		}
		if (w->n == cap) {
			cap = cap ? 2 * cap : 64;
			t = realloc(w->t, cap * sizeof(*t));
			if (t == NULL) {
				free(key);
				return -ENOMEM;
			}
			w->t = t;
		}
		t = &w->t[w->n++];
		memset(t, 0, sizeof(*t));
		t->name = key;
		js->tensor = key;
		if (key[0] == '\0')
			return fz_st_fail(js, false, "empty tensor name");
		if ((rc = fz_st_expect(js, ':')) < 0 || (rc = fz_st_tensor(js, t)) < 0)
			return rc;
		js->tensor = NULL;
		rc = fz_st_next(js, '}');
	}
	if (rc < 0)
		return rc;
	fz_st_ws(js);
	if (js->p != js->end)
		return fz_st_fail(js, true, "trailing bytes after the header object");
	return 0;
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

/* Sizes, ranges, duplicates and overlaps of the parsed tensors against a data section of dlen. */
static int fz_st_check(struct fz_st_js *js, struct fz_weights *w, uint64_t dlen)
{
	struct fz_st_tensor **by_begin, *prev = NULL;
	char shape[160];

	for (size_t i = 0; i < w->n; i++) {
		struct fz_st_tensor *t = &w->t[i];
		uint64_t bytes = t->dt->size;

		js->tensor = t->name;
		if (t->end < t->begin)
			return fz_st_fail(js, false, "data_offsets [%llu,%llu]: end before begin",
					  (unsigned long long)t->begin, (unsigned long long)t->end);
		if (t->end > dlen)
			return fz_st_fail(js, false,
					  "data_offsets [%llu,%llu] past the end of the data section "
					  "(%llu bytes): truncated file?",
					  (unsigned long long)t->begin, (unsigned long long)t->end,
					  (unsigned long long)dlen);
		for (int d = 0; d < t->ndim && bytes; d++) {
			if (t->dims[d] && bytes > UINT64_MAX / (uint64_t)t->dims[d])
				return fz_st_fail(js, false, "shape %s overflows",
						  fz_st_shape_str(shape, sizeof(shape), t->ndim,
								  t->dims));
			bytes *= (uint64_t)t->dims[d];
		}
		for (int d = 0; d < t->ndim; d++)
			if (t->dims[d] == 0)
				bytes = 0;
		if (t->end - t->begin != bytes)
			return fz_st_fail(js, false,
					  "data_offsets [%llu,%llu] hold %llu bytes, dtype %s shape %s "
					  "needs %llu",
					  (unsigned long long)t->begin, (unsigned long long)t->end,
					  (unsigned long long)(t->end - t->begin), t->dt->name,
					  fz_st_shape_str(shape, sizeof(shape), t->ndim, t->dims),
					  (unsigned long long)bytes);
	}
	js->tensor = NULL;

	if (w->n > 1)
		qsort(w->t, w->n, sizeof(*w->t), fz_st_cmp_name);
	for (size_t i = 1; i < w->n; i++)
		if (strcmp(w->t[i - 1].name, w->t[i].name) == 0) {
			js->tensor = w->t[i].name;
			return fz_st_fail(js, false, "duplicate tensor name");
		}
	if (w->nmeta > 1)
		qsort(w->meta, w->nmeta, sizeof(*w->meta), fz_st_cmp_key);
	for (size_t i = 1; i < w->nmeta; i++)
		if (strcmp(w->meta[i - 1].key, w->meta[i].key) == 0)
			return fz_st_fail(js, false, "duplicate __metadata__ key '%.32s'",
					  w->meta[i].key);

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
			fz_st_fail(js, false, "tensors '%.64s' [%llu,%llu) and '%.64s' [%llu,%llu) overlap",
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
	struct fz_st_js js = {.file = name, .err = err, .errlen = errlen};
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
		rc = fz_st_fail(&js, false, "%zu bytes, shorter than the 8-byte header length", len);
		goto fail;
	}
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | ((const unsigned char *)buf)[i];
	if (hlen > FZ_ST_HEADER_MAX) {
		rc = fz_st_fail(&js, false, "header length %llu is absurd (limit %u bytes)",
				(unsigned long long)hlen, FZ_ST_HEADER_MAX);
		goto fail;
	}
	if (hlen > len - 8) {
		rc = fz_st_fail(&js, false, "header length %llu runs past the end of the file (%zu bytes)",
				(unsigned long long)hlen, len);
		goto fail;
	}
	js.start = js.p = (const char *)buf + 8;
	js.end = js.p + hlen;
	if ((rc = fz_st_header(&js, w)) < 0)
		goto fail;
	if ((rc = fz_st_check(&js, w, len - 8 - hlen)) < 0)
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
