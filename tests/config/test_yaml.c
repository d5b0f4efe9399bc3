/* Tests of config/yaml_doc.c: tree positions, typed getters, key checks and error messages. */
#include <errno.h>
#include <stdbool.h>

#include "cfg_test.h"
#include "fz_yaml.h"

static char err[512];

static struct fz_ydoc *parse(const char *text)
{
	return fz_ydoc_parse("t.yaml", text, strlen(text), err, sizeof(err));
}

/* Parsing must fail with EINVAL and a message starting with `prefix`. */
static void parse_fails(const char *text, const char *prefix, const char *words)
{
	errno = 0;
	struct fz_ydoc *doc = parse(text);
	assert_null(doc);
	assert_int_equal(errno, EINVAL);
	assert_prefix(err, prefix);
	assert_contains(err, words);
}

static void test_positions_block_and_flow(void **state)
{
	(void)state;
	struct fz_ydoc *doc = parse("a: 1\n"
				    "b:\n"
				    "  c: [x, {d: 2}]\n"
				    "  e:\n"
				    "    - 7\n");
	assert_non_null(doc);
	const struct fz_ynode *root = doc->root;
	assert_int_equal(root->type, FZ_YNODE_MAP);
	assert_int_equal(root->line, 1);
	assert_int_equal(root->col, 1);
	assert_int_equal(root->n, 2);
	const struct fz_ynode *a = fz_ymap_get(root, "a");
	assert_int_equal(a->line, 1);
	assert_int_equal(a->col, 4);
	const struct fz_ynode *b = fz_ymap_get(root, "b");
	assert_int_equal(b->type, FZ_YNODE_MAP);
	assert_int_equal(b->line, 3);
	assert_int_equal(b->col, 3);
	const struct fz_ynode *c = fz_ymap_get(b, "c");
	assert_int_equal(c->type, FZ_YNODE_SEQ);
	assert_int_equal(c->line, 3);
	assert_int_equal(c->col, 6);
	assert_int_equal(c->n, 2);
	assert_string_equal(c->items[0]->str, "x");
	const struct fz_ynode *d = fz_ymap_get(c->items[1], "d");
	assert_int_equal(d->line, 3);
	assert_int_equal(d->col, 14);
	const struct fz_ynode *e = fz_ymap_get(b, "e");
	assert_int_equal(e->type, FZ_YNODE_SEQ);
	assert_int_equal(e->line, 5);
	assert_int_equal(e->col, 5);
	assert_int_equal(e->items[0]->col, 7);
	const struct fz_ynode *kb = fz_ymap_key(root, "b");
	assert_int_equal(kb->line, 2);
	assert_int_equal(kb->col, 1);
	assert_null(fz_ymap_get(root, "zz"));
	assert_null(fz_ymap_get(a, "a")); /* not a mapping */
	fz_ydoc_free(doc);
}

static void test_getters_typed(void **state)
{
	(void)state;
	struct fz_ydoc *doc = parse("i: -42\n"
				    "f: 2.5e-1\n"
				    "fi: 3\n"
				    "t: true\n"
				    "F: FALSE\n"
				    "s: hello\n"
				    "q: '12'\n"
				    "l: [1, 2, 3]\n"
				    "fl: [0.5, 1, -2e3]\n"
				    "n: ~\n");
	assert_non_null(doc);
	const struct fz_ynode *r = doc->root;
	int i = 0;
	double f = 0;
	bool b = false;
	char s[16];
	assert_int_equal(fz_ymap_int(doc, r, "i", FZ_Y_REQUIRED, &i), 0);
	assert_int_equal(i, -42);
	assert_int_equal(fz_ymap_float(doc, r, "f", FZ_Y_REQUIRED, &f), 0);
	assert_true(f == 0.25);
	assert_int_equal(fz_ymap_float(doc, r, "fi", FZ_Y_REQUIRED, &f), 0);
	assert_true(f == 3.0);
	assert_int_equal(fz_ymap_bool(doc, r, "t", FZ_Y_REQUIRED, &b), 0);
	assert_true(b);
	assert_int_equal(fz_ymap_bool(doc, r, "F", FZ_Y_REQUIRED, &b), 0);
	assert_false(b);
	assert_int_equal(fz_ymap_str(doc, r, "s", FZ_Y_REQUIRED, s, sizeof(s)), 0);
	assert_string_equal(s, "hello");
	assert_int_equal(fz_ymap_str(doc, r, "q", FZ_Y_REQUIRED, s, sizeof(s)), 0);
	assert_string_equal(s, "12");
	int l[4];
	size_t n = 0;
	assert_int_equal(fz_ynode_int_list(doc, fz_ymap_get(r, "l"), l, 4, &n), 0);
	assert_int_equal(n, 3);
	assert_int_equal(l[2], 3);
	double fl[3];
	assert_int_equal(fz_ynode_float_list(doc, fz_ymap_get(r, "fl"), fl, 3, &n), 0);
	assert_int_equal(n, 3);
	assert_true(fl[2] == -2000.0);
	assert_true(fz_ynode_is_null(fz_ymap_get(r, "n")));
	assert_string_equal(fz_ynode_kind(fz_ymap_get(r, "n")), "null");
	assert_string_equal(fz_ynode_kind(fz_ymap_get(r, "l")), "sequence");

	/* optional and absent: the preset default stays */
	i = 7;
	assert_int_equal(fz_ymap_int(doc, r, "absent", FZ_Y_OPTIONAL, &i), 0);
	assert_int_equal(i, 7);
	fz_ydoc_free(doc);
}

static void test_getters_reject_wrong_types(void **state)
{
	(void)state;
	struct fz_ydoc *doc = parse("q: '12'\n"
				    "w: 12abc\n"
				    "big: 99999999999\n"
				    "inf: .inf\n"
				    "nan: nan\n"
				    "hex: 0x10\n"
				    "b: 1\n"
				    "n:\n"
				    "l: [1, x, 3]\n"
				    "m: {a: 1}\n"
				    "neg: -3\n");
	assert_non_null(doc);
	const struct fz_ynode *r = doc->root;
	int i = 5;
	double f;
	bool b;
	char s[4];
	assert_int_equal(fz_ymap_int(doc, r, "q", FZ_Y_REQUIRED, &i), -EINVAL);
	assert_string_equal(err, "t.yaml:1:4: expected an integer, found string \"12\"");
	assert_int_equal(i, 5);
	assert_int_equal(fz_ymap_int(doc, r, "w", FZ_Y_REQUIRED, &i), -EINVAL);
	assert_string_equal(err, "t.yaml:2:4: expected an integer, found '12abc'");
	assert_int_equal(fz_ymap_int(doc, r, "big", FZ_Y_REQUIRED, &i), -EINVAL);
	assert_prefix(err, "t.yaml:3:6: integer 99999999999 is out of range");
	assert_int_equal(fz_ymap_float(doc, r, "inf", FZ_Y_REQUIRED, &f), -EINVAL);
	assert_string_equal(err, "t.yaml:4:6: expected a number, found '.inf'");
	assert_int_equal(fz_ymap_float(doc, r, "nan", FZ_Y_REQUIRED, &f), -EINVAL);
	assert_prefix(err, "t.yaml:5:6: expected a number");
	assert_int_equal(fz_ymap_float(doc, r, "hex", FZ_Y_REQUIRED, &f), -EINVAL);
	assert_prefix(err, "t.yaml:6:6: expected a number");
	assert_int_equal(fz_ymap_bool(doc, r, "b", FZ_Y_REQUIRED, &b), -EINVAL);
	assert_string_equal(err, "t.yaml:7:4: expected true or false, found '1'");
	assert_int_equal(fz_ymap_str(doc, r, "n", FZ_Y_REQUIRED, s, sizeof(s)), -EINVAL);
	assert_prefix(err, "t.yaml:8:");
	assert_contains(err, "expected a string, found null");
	assert_int_equal(fz_ymap_str(doc, r, "w", FZ_Y_REQUIRED, s, sizeof(s)), -EINVAL);
	assert_string_equal(err, "t.yaml:2:4: string too long (5 bytes, at most 3)");
	int l[3];
	size_t n;
	assert_int_equal(fz_ynode_int_list(doc, fz_ymap_get(r, "l"), l, 3, &n), -EINVAL);
	assert_string_equal(err, "t.yaml:9:8: expected an integer, found 'x'");
	assert_int_equal(fz_ynode_int_list(doc, fz_ymap_get(r, "l"), l, 2, &n), -EINVAL);
	assert_string_equal(err, "t.yaml:9:4: expected at most 2 integers, found 3");
	assert_int_equal(fz_ynode_int_list(doc, fz_ymap_get(r, "m"), l, 2, &n), -EINVAL);
	assert_string_equal(err, "t.yaml:10:4: expected a sequence of integers, found a mapping");
	assert_int_equal(fz_ymap_int_pos(doc, r, "neg", FZ_Y_REQUIRED, &i), -EINVAL);
	assert_string_equal(err, "t.yaml:11:6: neg: expected a positive integer, found -3");
	assert_int_equal(fz_ymap_int_min(doc, r, "neg", FZ_Y_REQUIRED, 0, &i), -EINVAL);
	assert_string_equal(err, "t.yaml:11:6: neg: expected an integer >= 0, found -3");
	assert_int_equal(fz_ymap_int(doc, r, "absent", FZ_Y_REQUIRED, &i), -EINVAL);
	assert_string_equal(err, "t.yaml:1:1: missing required key 'absent'");
	fz_ydoc_free(doc);
}

static void test_check_keys_names_unknown_and_expected(void **state)
{
	(void)state;
	struct fz_ydoc *doc = parse("name: a\n"
				    "colour: red\n");
	assert_non_null(doc);
	static const char *const allowed[] = {"name", "size", NULL};
	assert_int_equal(fz_ymap_check_keys(doc, doc->root, allowed), -EINVAL);
	assert_string_equal(err, "t.yaml:2:1: unknown key 'colour'; expected one of: name, size");
	static const char *const all[] = {"name", "colour", NULL};
	assert_int_equal(fz_ymap_check_keys(doc, doc->root, all), 0);
	assert_int_equal(fz_ymap_check_keys(doc, fz_ymap_get(doc->root, "name"), all), -EINVAL);
	assert_string_equal(err, "t.yaml:1:7: expected a mapping, found 'a'");
	fz_ydoc_free(doc);
}

static void test_context_prefix(void **state)
{
	(void)state;
	struct fz_ydoc *doc = parse("k: v\n");
	assert_non_null(doc);
	fz_ydoc_set_context(doc, "layer '%s'", "stem");
	assert_int_equal(fz_yerr(doc, fz_ymap_get(doc->root, "k"), "bad %d", 3), -EINVAL);
	assert_string_equal(err, "t.yaml:1:4: layer 'stem': bad 3");
	fz_ydoc_set_context(doc, NULL);
	assert_int_equal(fz_yerr(doc, NULL, "whole file"), -EINVAL);
	assert_string_equal(err, "t.yaml: whole file");
	fz_ydoc_free(doc);
}

static void test_duplicate_key_rejected(void **state)
{
	(void)state;
	parse_fails("a: 1\n"
		    "b:\n"
		    "  x: 1\n"
		    "  x: 2\n",
		    "t.yaml:4:3: ", "duplicate key 'x' (first at line 3, column 3)");
	parse_fails("{a: 1, a: 2}", "t.yaml:1:8: ", "duplicate key 'a'");
}

static void test_syntax_error_has_position(void **state)
{
	(void)state;
	parse_fails("a: 1\n"
		    "b: [1, 2\n"
		    "c: 3\n",
		    "t.yaml:", "YAML syntax error");
	/* a tab where indentation is expected */
	parse_fails("a:\n"
		    "\tb: 1\n",
		    "t.yaml:2:1: ", "YAML syntax error");
	parse_fails("a: b: c\n", "t.yaml:1:5: ", "mapping values are not allowed");
}

static void test_bad_utf8_has_position(void **state)
{
	(void)state;
	parse_fails("a: 1\nb: \xff\xfe\n", "t.yaml:2:4: ", "YAML syntax error: invalid");
}

static void test_anchors_aliases_tags_rejected(void **state)
{
	(void)state;
	parse_fails("a: &x 1\nb: *x\n", "t.yaml:1:4: ", "anchors are not supported");
	parse_fails("a: [*x]\n", "t.yaml:1:5: ", "aliases are not supported (*x)");
	parse_fails("a: !!str 1\n", "t.yaml:1:4: ", "tags are not supported");
	parse_fails("[1, 2]: 3\n", "t.yaml:1:1: ", "mapping keys must be scalars");
}

static void test_one_document_only(void **state)
{
	(void)state;
	parse_fails("a: 1\n---\nb: 2\n", "t.yaml:2:1: ", "more than one YAML document");
	struct fz_ydoc *doc = parse("# only a comment\n");
	assert_non_null(doc);
	assert_null(doc->root);
	fz_ydoc_free(doc);
	doc = parse("");
	assert_non_null(doc);
	assert_null(doc->root);
	fz_ydoc_free(doc);
}

static void test_deep_nesting_rejected(void **state)
{
	(void)state;
	char text[400];
	memset(text, '[', 200);
	text[200] = '\0';
	parse_fails(text, "t.yaml:1:", "nesting deeper than 64 levels");
}

static void test_load_missing_file(void **state)
{
	(void)state;
	errno = 0;
	assert_null(fz_ydoc_load("/nonexistent/x.yaml", err, sizeof(err)));
	assert_int_equal(errno, ENOENT);
	assert_string_equal(err, "/nonexistent/x.yaml: cannot read: No such file or directory");
}

static void test_null_path_named_buffer(void **state)
{
	(void)state;
	assert_null(fz_ydoc_parse(NULL, "[", 1, err, sizeof(err)));
	assert_prefix(err, "<buffer>:");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_positions_block_and_flow),
		cmocka_unit_test(test_getters_typed),
		cmocka_unit_test(test_getters_reject_wrong_types),
		cmocka_unit_test(test_check_keys_names_unknown_and_expected),
		cmocka_unit_test(test_context_prefix),
		cmocka_unit_test(test_duplicate_key_rejected),
		cmocka_unit_test(test_syntax_error_has_position),
		cmocka_unit_test(test_bad_utf8_has_position),
		cmocka_unit_test(test_anchors_aliases_tags_rejected),
		cmocka_unit_test(test_one_document_only),
		cmocka_unit_test(test_deep_nesting_rejected),
		cmocka_unit_test(test_load_missing_file),
		cmocka_unit_test(test_null_path_named_buffer),
	};
	return cmocka_run_group_tests_name("config/yaml", tests, NULL, NULL);
}
