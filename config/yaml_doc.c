/* Freeze YAML documents: build a positioned node tree with libyaml's event API; typed accessors. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <yaml.h>

#include "fz_io.h"
#include "fz_yaml.h"

#define YDOC_MAX_DEPTH 64

/* ---- messages ---- */

static int yerr_va(struct fz_ydoc *doc, int line, int col, const char *fmt, va_list ap)
{
	if (doc->err == NULL || doc->errlen == 0)
		return -EINVAL;
	size_t off;
	int r;
	if (line > 0)
		r = snprintf(doc->err, doc->errlen, "%s:%d:%d: ", doc->path, line, col);
	else
		r = snprintf(doc->err, doc->errlen, "%s: ", doc->path);
	off = r < 0 ? 0 : (size_t)r;
	if (doc->ctx[0] != '\0' && off < doc->errlen) {
		r = snprintf(doc->err + off, doc->errlen - off, "%s: ", doc->ctx);
		off += r < 0 ? 0 : (size_t)r;
	}
	if (off < doc->errlen)
		vsnprintf(doc->err + off, doc->errlen - off, fmt, ap);
	return -EINVAL;
}

static int yerr_at(struct fz_ydoc *doc, int line, int col, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int yerr_at(struct fz_ydoc *doc, int line, int col, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = yerr_va(doc, line, col, fmt, ap);
	va_end(ap);
	return r;
}

int fz_yerr(struct fz_ydoc *doc, const struct fz_ynode *node, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = yerr_va(doc, node ? node->line : 0, node ? node->col : 0, fmt, ap);
	va_end(ap);
	return r;
}

void fz_ydoc_set_context(struct fz_ydoc *doc, const char *fmt, ...)
{
	if (fmt == NULL) {
		doc->ctx[0] = '\0';
		return;
	}
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(doc->ctx, sizeof(doc->ctx), fmt, ap);
	va_end(ap);
}

bool fz_ynode_is_null(const struct fz_ynode *node)
{
	if (node == NULL || node->type != FZ_YNODE_SCALAR || node->quoted)
		return false;
	static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
	for (size_t i = 0; i < sizeof(nulls) / sizeof(nulls[0]); i++)
		if (strcmp(node->str, nulls[i]) == 0)
			return true;
	return false;
}

const char *fz_ynode_kind(const struct fz_ynode *node)
{
	if (node == NULL || fz_ynode_is_null(node))
		return "null";
	switch (node->type) {
	case FZ_YNODE_SEQ:
		return "sequence";
	case FZ_YNODE_MAP:
		return "mapping";
	default:
		return "scalar";
	}
}

const char *fz_ynode_describe(const struct fz_ynode *node, char *buf, size_t size)
{
	if (node == NULL || fz_ynode_is_null(node))
		return "null";
	if (node->type == FZ_YNODE_SEQ)
		return "a sequence";
	if (node->type == FZ_YNODE_MAP)
		return "a mapping";
	const char *dots = node->len > 40 ? "..." : "";
	if (node->quoted)
		snprintf(buf, size, "string \"%.40s%s\"", node->str, dots);
	else
		snprintf(buf, size, "'%.40s%s'", node->str, dots);
	return buf;
}

/* ---- tree ---- */

static void node_free(struct fz_ynode *n)
{
	if (n == NULL)
		return;
	for (size_t i = 0; i < n->n; i++) {
		if (n->keys)
			node_free(n->keys[i]);
		node_free(n->items[i]);
	}
	free(n->keys);
	free(n->items);
	free(n->str);
	free(n);
}

void fz_ydoc_free(struct fz_ydoc *doc)
{
	if (doc == NULL)
		return;
	node_free(doc->root);
	free(doc);
}

struct builder {
	yaml_parser_t parser;
	struct fz_ydoc *doc;
	const char *buf;
	size_t len;
	int err; /* first error: -EINVAL or -ENOMEM */
};

/* Line and column (1-based, in characters) of a byte offset, for reader errors. */
static void offset_to_pos(const char *buf, size_t len, size_t off, int *line, int *col)
{
	int l = 1, c = 1;
	for (size_t i = 0; i < off && i < len; i++) {
		unsigned char ch = (unsigned char)buf[i];
		if (ch == '\n') {
			l++;
			c = 1;
		} else if ((ch & 0xc0) != 0x80) {
			c++;
		}
	}
	*line = l;
	*col = c;
}

static int parse_event(struct builder *b, yaml_event_t *ev)
{
	if (yaml_parser_parse(&b->parser, ev))
		return 0;
	yaml_parser_t *p = &b->parser;
	const char *problem = p->problem ? p->problem : "unknown error";
	int line, col;
	switch (p->error) {
	case YAML_MEMORY_ERROR:
		yerr_at(b->doc, 0, 0, "out of memory while parsing YAML");
		return -ENOMEM;
	case YAML_READER_ERROR:
		offset_to_pos(b->buf, b->len, p->problem_offset, &line, &col);
		return yerr_at(b->doc, line, col, "YAML syntax error: %s", problem);
	default:
		line = (int)p->problem_mark.line + 1;
		col = (int)p->problem_mark.column + 1;
		if (p->context)
			return yerr_at(b->doc, line, col, "YAML syntax error: %s (%s at line %d)",
				       problem, p->context, (int)p->context_mark.line + 1);
		return yerr_at(b->doc, line, col, "YAML syntax error: %s", problem);
	}
}

static struct fz_ynode *node_new(enum fz_ynode_type type, yaml_mark_t mark)
{
	struct fz_ynode *n = calloc(1, sizeof(*n));
	if (n == NULL)
		return NULL;
	n->type = type;
	n->line = (int)mark.line + 1;
	n->col = (int)mark.column + 1;
	return n;
}

/* Append (key, item) to a collection; key is NULL for sequences. Takes ownership on success. */
static int node_push(struct fz_ynode *n, struct fz_ynode *key, struct fz_ynode *item, size_t *cap)
{
	if (n->n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 4;
		struct fz_ynode **items = realloc(n->items, ncap * sizeof(*items));
		if (items == NULL)
			return -ENOMEM;
		n->items = items;
		if (n->type == FZ_YNODE_MAP) {
			struct fz_ynode **keys = realloc(n->keys, ncap * sizeof(*keys));
			if (keys == NULL)
				return -ENOMEM;
			n->keys = keys;
		}
		*cap = ncap;
	}
	if (n->type == FZ_YNODE_MAP)
		n->keys[n->n] = key;
	n->items[n->n++] = item;
	return 0;
}

static int check_props(struct builder *b, const yaml_event_t *ev, const unsigned char *anchor,
		       const unsigned char *tag, bool implicit_tag)
{
	int line = (int)ev->start_mark.line + 1, col = (int)ev->start_mark.column + 1;
	if (anchor)
		return yerr_at(b->doc, line, col, "anchors are not supported (&%s)", anchor);
	if (tag && !implicit_tag)
		return yerr_at(b->doc, line, col, "tags are not supported (%s)", tag);
	return 0;
}

static int build_node(struct builder *b, yaml_event_t *ev, int depth, struct fz_ynode **out);

/* Build the children of a collection until its end event. */
static int build_children(struct builder *b, struct fz_ynode *n, int depth)
{
	size_t cap = 0;
	yaml_event_type_t end = n->type == FZ_YNODE_MAP ? YAML_MAPPING_END_EVENT
						       : YAML_SEQUENCE_END_EVENT;
	for (;;) {
		yaml_event_t ev;
		int r = parse_event(b, &ev);
		if (r)
			return r;
		if (ev.type == end) {
			yaml_event_delete(&ev);
			return 0;
		}
		struct fz_ynode *key = NULL, *item = NULL;
		if (n->type == FZ_YNODE_MAP) {
			r = build_node(b, &ev, depth + 1, &key);
			if (r)
				return r;
			if (key->type != FZ_YNODE_SCALAR) {
				r = yerr_at(b->doc, key->line, key->col,
					    "mapping keys must be scalars, found a %s",
					    fz_ynode_kind(key));
				node_free(key);
				return r;
			}
			for (size_t i = 0; i < n->n; i++) {
				const struct fz_ynode *k = n->keys[i];
				if (k->len == key->len && memcmp(k->str, key->str, k->len) == 0) {
					r = yerr_at(
						b->doc, key->line, key->col,
						"duplicate key '%s' (first at line %d, column %d)",
						key->str, k->line, k->col);
					node_free(key);
					return r;
				}
			}
			r = parse_event(b, &ev);
			if (r) {
				node_free(key);
				return r;
			}
		}
		r = build_node(b, &ev, depth + 1, &item);
		if (r == 0 && node_push(n, key, item, &cap) != 0)
			r = -ENOMEM;
		if (r) {
			node_free(key);
			node_free(item);
			if (r == -ENOMEM)
				yerr_at(b->doc, 0, 0, "out of memory while parsing YAML");
			return r;
		}
	}
}

/* Build the node that starts with event *ev (consumed here) into *out. */
static int build_node(struct builder *b, yaml_event_t *ev, int depth, struct fz_ynode **out)
{
	int r = 0;
	struct fz_ynode *n = NULL;
	*out = NULL;
	if (depth > YDOC_MAX_DEPTH) {
		r = yerr_at(b->doc, (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1,
			    "nesting deeper than %d levels", YDOC_MAX_DEPTH);
		goto out;
	}
	switch (ev->type) {
	case YAML_ALIAS_EVENT:
		r = yerr_at(b->doc, (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1,
			    "aliases are not supported (*%s)", ev->data.alias.anchor);
		goto out;
	case YAML_SCALAR_EVENT:
		r = check_props(b, ev, ev->data.scalar.anchor, ev->data.scalar.tag, false);
		if (r)
			goto out;
		n = node_new(FZ_YNODE_SCALAR, ev->start_mark);
		if (n == NULL)
			goto nomem;
		n->len = ev->data.scalar.length;
		n->str = malloc(n->len + 1);
		if (n->str == NULL)
			goto nomem;
		memcpy(n->str, ev->data.scalar.value, n->len);
		n->str[n->len] = '\0';
		n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
		break;
	case YAML_SEQUENCE_START_EVENT:
	case YAML_MAPPING_START_EVENT: {
		bool seq = ev->type == YAML_SEQUENCE_START_EVENT;
		r = seq ? check_props(b, ev, ev->data.sequence_start.anchor,
				      ev->data.sequence_start.tag,
				      ev->data.sequence_start.implicit)
			: check_props(b, ev, ev->data.mapping_start.anchor,
				      ev->data.mapping_start.tag, ev->data.mapping_start.implicit);
		if (r)
			goto out;
		n = node_new(seq ? FZ_YNODE_SEQ : FZ_YNODE_MAP, ev->start_mark);
		if (n == NULL)
			goto nomem;
		yaml_event_delete(ev);
		r = build_children(b, n, depth);
		if (r) {
			node_free(n);
			return r;
		}
		*out = n;
		return 0;
	}
	default:
		r = yerr_at(b->doc, (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1,
			    "unexpected YAML event %d", (int)ev->type);
		goto out;
	}
	*out = n;
	yaml_event_delete(ev);
	return 0;
nomem:
	r = -ENOMEM;
	yerr_at(b->doc, 0, 0, "out of memory while parsing YAML");
out:
	node_free(n);
	yaml_event_delete(ev);
	return r;
}

/* Expect an event of `type` (stream/document framing). */
static int expect_event(struct builder *b, yaml_event_type_t type, yaml_event_t *ev)
{
	int r = parse_event(b, ev);
	if (r)
		return r;
	if (ev->type != type) {
		r = yerr_at(b->doc, (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1,
			    "unexpected YAML event %d", (int)ev->type);
		yaml_event_delete(ev);
	}
	return r;
}

static int build_doc(struct builder *b)
{
	yaml_event_t ev;
	int r = expect_event(b, YAML_STREAM_START_EVENT, &ev);
	if (r)
		return r;
	yaml_event_delete(&ev);
	r = parse_event(b, &ev);
	if (r)
		return r;
	if (ev.type == YAML_STREAM_END_EVENT) { /* empty stream */
		yaml_event_delete(&ev);
		return 0;
	}
	if (ev.type != YAML_DOCUMENT_START_EVENT) {
		yaml_event_delete(&ev);
		return yerr_at(b->doc, 0, 0, "malformed YAML stream");
	}
	yaml_event_delete(&ev);
	r = parse_event(b, &ev);
	if (r)
		return r;
	r = build_node(b, &ev, 0, &b->doc->root);
	if (r)
		return r;
	r = expect_event(b, YAML_DOCUMENT_END_EVENT, &ev);
	if (r)
		return r;
	yaml_event_delete(&ev);
	r = parse_event(b, &ev);
	if (r)
		return r;
	if (ev.type != YAML_STREAM_END_EVENT) {
		r = yerr_at(b->doc, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
			    "more than one YAML document; expected exactly one");
		yaml_event_delete(&ev);
		return r;
	}
	yaml_event_delete(&ev);
	return 0;
}

static struct fz_ydoc *ydoc_new(const char *path, char *err, size_t errlen)
{
	struct fz_ydoc *doc = calloc(1, sizeof(*doc));
	if (doc == NULL) {
		if (err && errlen)
			snprintf(err, errlen, "%s: out of memory", path ? path : "<buffer>");
		errno = ENOMEM;
		return NULL;
	}
	snprintf(doc->path, sizeof(doc->path), "%s", path ? path : "<buffer>");
	doc->err = err;
	doc->errlen = errlen;
	if (err && errlen)
		err[0] = '\0';
	return doc;
}

struct fz_ydoc *fz_ydoc_parse(const char *path, const char *buf, size_t len, char *err,
			      size_t errlen)
{
	struct fz_ydoc *doc = ydoc_new(path, err, errlen);
	if (doc == NULL)
		return NULL;
	struct builder b = {.doc = doc, .buf = buf, .len = len};
	if (!yaml_parser_initialize(&b.parser)) {
		fz_ydoc_free(doc);
		errno = ENOMEM;
		return NULL;
	}
	yaml_parser_set_input_string(&b.parser, (const unsigned char *)buf, len);
	int r = build_doc(&b);
	yaml_parser_delete(&b.parser);
	if (r) {
		fz_ydoc_free(doc);
		errno = -r;
		return NULL;
	}
	return doc;
}

struct fz_ydoc *fz_ydoc_load(const char *path, char *err, size_t errlen)
{
	void *buf;
	size_t len;
	int r = fz_file_read(path, &buf, &len);
	if (r) {
		if (err && errlen)
			snprintf(err, errlen, "%s: cannot read: %s", path, strerror(-r));
		errno = -r;
		return NULL;
	}
	struct fz_ydoc *doc = fz_ydoc_parse(path, buf, len, err, errlen);
	int saved = errno;
	free(buf);
	errno = saved;
	return doc;
}

/* ---- lookups ---- */

static ssize_t map_index(const struct fz_ynode *map, const char *key)
{
	if (map == NULL || map->type != FZ_YNODE_MAP)
		return -1;
	size_t klen = strlen(key);
	for (size_t i = 0; i < map->n; i++)
		if (map->keys[i]->len == klen && memcmp(map->keys[i]->str, key, klen) == 0)
			return (ssize_t)i;
	return -1;
}

struct fz_ynode *fz_ymap_get(const struct fz_ynode *map, const char *key)
{
	ssize_t i = map_index(map, key);
	return i < 0 ? NULL : map->items[i];
}

struct fz_ynode *fz_ymap_key(const struct fz_ynode *map, const char *key)
{
	ssize_t i = map_index(map, key);
	return i < 0 ? NULL : map->keys[i];
}

int fz_ymap_check_keys(struct fz_ydoc *doc, const struct fz_ynode *node,
		       const char *const *allowed)
{
	char fbuf[64];
	if (node == NULL || node->type != FZ_YNODE_MAP)
		return fz_yerr(doc, node, "expected a mapping, found %s",
			       fz_ynode_describe(node, fbuf, sizeof(fbuf)));
	for (size_t i = 0; i < node->n; i++) {
		const struct fz_ynode *k = node->keys[i];
		bool ok = false;
		for (const char *const *a = allowed; *a && !ok; a++)
			ok = strcmp(k->str, *a) == 0;
		if (ok)
			continue;
		char list[512];
		size_t off = 0;
		list[0] = '\0';
		for (const char *const *a = allowed; *a && off < sizeof(list); a++) {
			int w = snprintf(list + off, sizeof(list) - off, "%s%s",
					 a == allowed ? "" : ", ", *a);
			off += w < 0 ? 0 : (size_t)w;
		}
		return fz_yerr(doc, k, "unknown key '%s'; expected one of: %s", k->str, list);
	}
	return 0;
}

int fz_ymap_find(struct fz_ydoc *doc, const struct fz_ynode *map, const char *key, int flags,
		 struct fz_ynode **out)
{
	char fbuf[64];
	*out = NULL;
	if (map == NULL || map->type != FZ_YNODE_MAP)
		return fz_yerr(doc, map, "expected a mapping, found %s",
			       fz_ynode_describe(map, fbuf, sizeof(fbuf)));
	*out = fz_ymap_get(map, key);
	if (*out == NULL && (flags & FZ_Y_REQUIRED))
		return fz_yerr(doc, map, "missing required key '%s'", key);
	return 0;
}

/* ---- scalar conversions ---- */

static bool plain_scalar(const struct fz_ynode *node)
{
	return node && node->type == FZ_YNODE_SCALAR && !node->quoted && !fz_ynode_is_null(node);
}

int fz_ynode_int(struct fz_ydoc *doc, const struct fz_ynode *node, int *out)
{
	char fbuf[64];
	if (!plain_scalar(node))
		goto bad;
	const char *s = node->str;
	if (!(s[0] == '-' || s[0] == '+' || (s[0] >= '0' && s[0] <= '9')))
		goto bad;
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (end == s || *end != '\0')
		goto bad;
	if (errno == ERANGE || v < INT_MIN || v > INT_MAX)
		return fz_yerr(doc, node, "integer %s is out of range", s);
	*out = (int)v;
	return 0;
bad:
	return fz_yerr(doc, node, "expected an integer, found %s",
		       fz_ynode_describe(node, fbuf, sizeof(fbuf)));
}

int fz_ynode_float(struct fz_ydoc *doc, const struct fz_ynode *node, double *out)
{
	char fbuf[64];
	if (!plain_scalar(node))
		goto bad;
	const char *s = node->str;
	/* strtod also takes inf, nan and hex floats; a config number is a plain decimal */
	bool digit = false;
	for (const char *p = s; *p; p++) {
		if (*p >= '0' && *p <= '9')
			digit = true;
		else if (!strchr("+-.eE", *p))
			goto bad;
	}
	if (!digit)
		goto bad;
	char *end;
	double v = strtod(s, &end);
	if (end == s || *end != '\0')
		goto bad;
	if (!isfinite(v))
		return fz_yerr(doc, node, "number %s is out of range", s);
	*out = v;
	return 0;
bad:
	return fz_yerr(doc, node, "expected a number, found %s",
		       fz_ynode_describe(node, fbuf, sizeof(fbuf)));
}

int fz_ynode_bool(struct fz_ydoc *doc, const struct fz_ynode *node, bool *out)
{
	char fbuf[64];
	if (plain_scalar(node)) {
		const char *s = node->str;
		if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) {
			*out = true;
			return 0;
		}
		if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) {
			*out = false;
			return 0;
		}
	}
	return fz_yerr(doc, node, "expected true or false, found %s",
		       fz_ynode_describe(node, fbuf, sizeof(fbuf)));
}

int fz_ynode_str(struct fz_ydoc *doc, const struct fz_ynode *node, char *out, size_t size)
{
	char fbuf[64];
	if (node == NULL || node->type != FZ_YNODE_SCALAR || fz_ynode_is_null(node))
		return fz_yerr(doc, node, "expected a string, found %s",
			       fz_ynode_describe(node, fbuf, sizeof(fbuf)));
	if (strlen(node->str) != node->len)
		return fz_yerr(doc, node, "string contains a NUL character");
	if (node->len >= size)
		return fz_yerr(doc, node, "string too long (%zu bytes, at most %zu)", node->len,
			       size ? size - 1 : 0);
	memcpy(out, node->str, node->len + 1);
	return 0;
}

int fz_ynode_int_list(struct fz_ydoc *doc, const struct fz_ynode *node, int *out, size_t max,
		      size_t *n)
{
	char fbuf[64];
	if (node == NULL || node->type != FZ_YNODE_SEQ)
		return fz_yerr(doc, node, "expected a sequence of integers, found %s",
			       fz_ynode_describe(node, fbuf, sizeof(fbuf)));
	if (node->n > max)
		return fz_yerr(doc, node, "expected at most %zu integers, found %zu", max, node->n);
	for (size_t i = 0; i < node->n; i++) {
		int r = fz_ynode_int(doc, node->items[i], &out[i]);
		if (r)
			return r;
	}
	*n = node->n;
	return 0;
}

int fz_ynode_float_list(struct fz_ydoc *doc, const struct fz_ynode *node, double *out, size_t max,
			size_t *n)
{
	char fbuf[64];
	if (node == NULL || node->type != FZ_YNODE_SEQ)
		return fz_yerr(doc, node, "expected a sequence of numbers, found %s",
			       fz_ynode_describe(node, fbuf, sizeof(fbuf)));
	if (node->n > max)
		return fz_yerr(doc, node, "expected at most %zu numbers, found %zu", max, node->n);
	for (size_t i = 0; i < node->n; i++) {
		int r = fz_ynode_float(doc, node->items[i], &out[i]);
		if (r)
			return r;
	}
	*n = node->n;
	return 0;
}

/* ---- mapping getters ---- */

int fz_ymap_int(struct fz_ydoc *doc, const struct fz_ynode *map, const char *key, int flags,
		int *out)
{
	struct fz_ynode *v;
	int r = fz_ymap_find(doc, map, key, flags, &v);
	if (r || v == NULL)
		return r;
	return fz_ynode_int(doc, v, out);
}

int fz_ymap_float(struct fz_ydoc *doc, const struct fz_ynode *map, const char *key, int flags,
		  double *out)
{
	struct fz_ynode *v;
	int r = fz_ymap_find(doc, map, key, flags, &v);
	if (r || v == NULL)
		return r;
	return fz_ynode_float(doc, v, out);
}

int fz_ymap_bool(struct fz_ydoc *doc, const struct fz_ynode *map, const char *key, int flags,
		 bool *out)
{
	struct fz_ynode *v;
	int r = fz_ymap_find(doc, map, key, flags, &v);
	if (r || v == NULL)
		return r;
	return fz_ynode_bool(doc, v, out);
}

int fz_ymap_str(struct fz_ydoc *doc, const struct fz_ynode *map, const char *key, int flags,
		char *out, size_t size)
{
	struct fz_ynode *v;
	int r = fz_ymap_find(doc, map, key, flags, &v);
	if (r || v == NULL)
		return r;
	return fz_ynode_str(doc, v, out, size);
}

int fz_ymap_int_min(struct fz_ydoc *doc, const struct fz_ynode *map, const char *key, int flags,
		    int min, int *out)
{
	struct fz_ynode *v;
	int r = fz_ymap_find(doc, map, key, flags, &v);
	if (r || v == NULL)
		return r;
	int x;
	r = fz_ynode_int(doc, v, &x);
	if (r)
		return r;
	if (x < min) {
		if (min == 1)
			return fz_yerr(doc, v, "%s: expected a positive integer, found %d", key, x);
		return fz_yerr(doc, v, "%s: expected an integer >= %d, found %d", key, min, x);
	}
	*out = x;
	return 0;
}

int fz_ymap_int_pos(struct fz_ydoc *doc, const struct fz_ynode *map, const char *key, int flags,
		    int *out)
{
	return fz_ymap_int_min(doc, map, key, flags, 1, out);
}
