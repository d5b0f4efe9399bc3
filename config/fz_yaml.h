/* Freeze YAML documents: a libyaml-built tree with positions, and checked accessors for loaders. */
#ifndef FZ_YAML_H
#define FZ_YAML_H

#include <stdbool.h>
#include <stddef.h>

enum fz_ynode_type {
	FZ_YNODE_SCALAR,
	FZ_YNODE_SEQ,
	FZ_YNODE_MAP,
};

/*
 * One node. A scalar keeps its text; a sequence its items; a mapping its keys (always scalars,
 * unique) and values, pairwise. line and col are 1-based and point at the node's first character
 * (the '[' or '{' of a flow collection, the first key of a block mapping, the '-' of a block
 * sequence).
 */
struct fz_ynode {
	enum fz_ynode_type type;
	int line, col;
	/* scalar */
	char *str;   /* NUL-terminated */
	size_t len;  /* bytes in str */
	bool quoted; /* written '...' or "..." (or as a block scalar): never a number, bool or null
		      */
	/* sequence (items) and mapping (keys[i] -> items[i]) */
	struct fz_ynode **keys;
	struct fz_ynode **items;
	size_t n;
};

/*
 * A parsed document. Accessors report errors into the caller's buffer given at parse time, as
 * "FILE:LINE:COLUMN: [context: ]message"; the first line of a loader's output is always the cause.
 */
struct fz_ydoc {
	char path[4096];
	struct fz_ynode *root; /* NULL for an empty document */
	char *err;
	size_t errlen;
	char ctx[128]; /* optional message prefix, e.g. "layer 'stem'"; see fz_ydoc_set_context() */
};

/* Flags of the fz_ymap_* getters. */
#define FZ_Y_OPTIONAL 0 /* absent key: return 0 and leave *out as preset (the default) */
#define FZ_Y_REQUIRED 1 /* absent key: error "missing required key" at the mapping */

/*
 * Parse one YAML document from buf[0..len). `path` names it in messages (NULL: "<buffer>").
 * Rejects syntax errors, more than one document, anchors, aliases, tags, non-scalar mapping keys,
 * duplicate keys and nesting deeper than 64; err (errlen bytes) receives the message.
 * Returns the document (free with fz_ydoc_free) or NULL with errno EINVAL or ENOMEM.
 * err stays attached to the document for the accessors below.
 */
struct fz_ydoc *fz_ydoc_parse(const char *path, const char *buf, size_t len, char *err,
			      size_t errlen);

/*
 * Read the file with fz_file_read() and parse it. NULL with errno ENOENT, EISDIR, EIO, ... when
 * the file cannot be read ("FILE: strerror" in err), otherwise as fz_ydoc_parse().
 */
struct fz_ydoc *fz_ydoc_load(const char *path, char *err, size_t errlen);

void fz_ydoc_free(struct fz_ydoc *doc);

/* Set (fmt != NULL) or clear (fmt == NULL) the prefix of later messages, printf-style. */
void fz_ydoc_set_context(struct fz_ydoc *doc, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/*
 * Write "FILE:LINE:COLUMN: [context: ]message" at `node` (node NULL: "FILE: message") into the
 * document's error buffer. Returns -EINVAL, so a loader can `return fz_yerr(...)`.
 */
int fz_yerr(struct fz_ydoc *doc, const struct fz_ynode *node, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* "scalar", "sequence", "mapping" or "null" (an empty or ~/null plain scalar). */
const char *fz_ynode_kind(const struct fz_ynode *node);

/*
 * What a node is, for "found ..." in messages: 'abc' (plain scalar), string "abc" (quoted),
 * null, a sequence, a mapping. Long scalars are cut at 40 bytes. Returns buf or a constant.
 */
const char *fz_ynode_describe(const struct fz_ynode *node, char *buf, size_t size);

/* True for a plain scalar "", "~", "null", "Null" or "NULL". */
bool fz_ynode_is_null(const struct fz_ynode *node);

/* Value of `key` in mapping `map`, or NULL (also when map is NULL or not a mapping). */
struct fz_ynode *fz_ymap_get(const struct fz_ynode *map, const char *key);

/* Key node paired with `key` in `map` (for messages about the key itself), or NULL. */
struct fz_ynode *fz_ymap_key(const struct fz_ynode *map, const char *key);

/*
 * Check that `node` is a mapping whose keys are all in the NULL-terminated list `allowed`.
 * Errors: "expected a mapping, found ..." at node; "unknown key 'k'; expected one of: a, b, c"
 * at the key. Returns 0 or -EINVAL.
 */
int fz_ymap_check_keys(struct fz_ydoc *doc, const struct fz_ynode *node,
		       const char *const *allowed);

/*
 * Look up `key` in `map`; with FZ_Y_REQUIRED a missing key is an error at the mapping
 * ("missing required key 'k'"). Sets *out to the value or NULL. Returns 0 or -EINVAL.
 */
int fz_ymap_find(struct fz_ydoc *doc, const struct fz_ynode *map, const char *key, int flags,
		 struct fz_ynode **out);

/*
 * Typed scalar conversions. Each checks the node and reports "expected <type>, found <what>" at it.
 * Integers are decimal with an optional sign and must fit an int; floats are finite decimals
 * (integers included); booleans are true/false (also True/TRUE/False/FALSE); strings are any
 * non-null scalar and must fit `size` bytes with the NUL. Quoted scalars are only strings.
 * Return 0 or -EINVAL; *out is untouched on error.
 */
int fz_ynode_int(struct fz_ydoc *doc, const struct fz_ynode *node, int *out);
int fz_ynode_float(struct fz_ydoc *doc, const struct fz_ynode *node, double *out);
int fz_ynode_bool(struct fz_ydoc *doc, const struct fz_ynode *node, bool *out);
int fz_ynode_str(struct fz_ydoc *doc, const struct fz_ynode *node, char *out, size_t size);

/*
 * A sequence of at most `max` integers (floats) into out[]; *n receives the count.
 * Errors: not a sequence, more than max items, an ill-typed item (reported at the item).
 */
int fz_ynode_int_list(struct fz_ydoc *doc, const struct fz_ynode *node, int *out, size_t max,
		      size_t *n);
int fz_ynode_float_list(struct fz_ydoc *doc, const struct fz_ynode *node, double *out, size_t max,
			size_t *n);

/*
 * Mapping getters: fz_ymap_find() and then the typed conversion. With FZ_Y_OPTIONAL an absent
 * key returns 0 with *out unchanged, so preset it with the default. Return 0 or -EINVAL.
 */
int fz_ymap_int(struct fz_ydoc *doc, const struct fz_ynode *map, const char *key, int flags,
		int *out);
int fz_ymap_float(struct fz_ydoc *doc, const struct fz_ynode *map, const char *key, int flags,
		  double *out);
int fz_ymap_bool(struct fz_ydoc *doc, const struct fz_ynode *map, const char *key, int flags,
		 bool *out);
int fz_ymap_str(struct fz_ydoc *doc, const struct fz_ynode *map, const char *key, int flags,
		char *out, size_t size);

/*
 * fz_ymap_int() that also requires *out > 0 ("expected a positive integer, found 0") or, with
 * fz_ymap_int_min(), *out >= min.
 */
int fz_ymap_int_pos(struct fz_ydoc *doc, const struct fz_ynode *map, const char *key, int flags,
		    int *out);
int fz_ymap_int_min(struct fz_ydoc *doc, const struct fz_ynode *map, const char *key, int flags,
		    int min, int *out);

#endif /* FZ_YAML_H */
