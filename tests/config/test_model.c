/* Tests of config/model.c: the shipped graph, shapes, topological order and every load error. */
#include <errno.h>
#include <stdbool.h>

#include "cfg_test.h"
#include "fz_model.h"

static char err[512];

static struct fz_model *parse(const char *text)
{
	return fz_model_parse("dir/m.yaml", text, strlen(text), err, sizeof(err));
}

/* The load must fail with EINVAL at `pos` ("dir/m.yaml:L:C: ") and mention each of `words`. */
static void refused(const char *text, const char *pos, const char *const *words)
{
	errno = 0;
	struct fz_model *m = parse(text);
	if (m != NULL) {
		fz_model_free(m);
		fail_msg("model accepted; expected an error at %s", pos);
	}
	assert_int_equal(errno, EINVAL);
	assert_prefix(err, pos);
	for (; *words; words++)
		assert_contains(err, *words);
}
#define REFUSED(text, pos, ...) refused(text, pos, (const char *const[]){__VA_ARGS__, NULL})

/* The input and head shared by the inline models (lines 1-4); layers start on line 5. */
#define HEAD                                                                                       \
	"name: t\n"                                                                                \
	"weights: w.safetensors\n"                                                                 \
	"input: {name: x, dtype: f32, shape: [3, 8, 8], mean: [0.5], std: [0.25]}\n"               \
	"layers:\n"

static void check_shape(struct fz_shape s, int c, int h, int w)
{
	assert_int_equal(s.c, c);
	assert_int_equal(s.h, h);
	assert_int_equal(s.w, w);
}

static void test_shipped_model_loads(void **state)
{
	(void)state;
	char path[4096], weights[4096];
	cfg_src_path(path, sizeof(path), "tests/data/config/resnet18_w16.yaml");
	cfg_src_path(weights, sizeof(weights), "tests/data/config/weights.safetensors");
	struct fz_model *m = fz_model_load(path, err, sizeof(err));
	if (m == NULL)
		fail_msg("%s", err);
	assert_string_equal(m->path, path);
	assert_string_equal(m->name, "resnet18-w16-fmnist");
	assert_string_equal(m->weights_path, weights);
	assert_string_equal(m->input.name, "input");
	check_shape(m->input.shape, 1, 28, 28);
	assert_float_equal(m->input.mean[0], 0.286f, 1e-7);
	assert_float_equal(m->input.std[0], 0.353f, 1e-7);
	assert_float_equal(m->input.std[FZ_MAX_CHANNELS_NORM - 1], 0.353f, 1e-7);
	assert_float_equal(m->input.scale, 255.0f, 0);
	assert_int_equal(m->n_layers, 7);
	static const char *const names[] = {"stem",   "stem_bn", "stem_relu", "block1",
					    "block3", "pool",    "fc"};
	for (int i = 0; i < 7; i++)
		assert_string_equal(m->layers[i].name, names[i]);
	const struct fz_layer *stem = &m->layers[0];
	assert_int_equal(stem->kind, FZ_LAYER_CONV);
	assert_int_equal(stem->inputs[0], FZ_INPUT_TENSOR);
	assert_int_equal(stem->n_inputs, 1);
	assert_int_equal(stem->kernel, 3);
	assert_int_equal(stem->pad, 1);
	assert_int_equal(stem->stride, 1);
	assert_false(stem->bias);
	check_shape(stem->in, 1, 28, 28);
	check_shape(stem->out, 16, 28, 28);
	assert_int_equal(stem->line, 12);
	assert_int_equal(stem->col, 5);
	assert_int_equal(m->layers[1].kind, FZ_LAYER_BATCHNORM);
	assert_float_equal(m->layers[1].eps, 1e-5f, 0);
	assert_int_equal(m->layers[1].inputs[0], 0);
	const struct fz_layer *b3 = &m->layers[4];
	assert_int_equal(b3->kind, FZ_LAYER_BLOCK);
	assert_int_equal(b3->stride, 2);
	assert_int_equal(b3->out_channels, 32);
	check_shape(b3->in, 16, 28, 28);
	check_shape(b3->out, 32, 14, 14);
	check_shape(m->layers[5].out, 32, 1, 1);
	assert_int_equal(m->layers[6].out_features, 10);
	check_shape(m->layers[6].out, 10, 1, 1);
	assert_int_equal(m->output, 6);
	assert_int_equal(fz_model_find_layer(m, "block3"), 4);
	assert_int_equal(fz_model_find_layer(m, "nope"), -1);
	assert_string_equal(fz_layer_kind_name(m->layers[5].kind), "global_avgpool");
	fz_model_free(m);
}

static void test_full_resnet18_shapes(void **state)
{
	(void)state;
	char path[4096];
	cfg_src_path(path, sizeof(path), "tests/data/config/resnet18_full.yaml");
	struct fz_model *m = fz_model_load(path, err, sizeof(err));
	if (m == NULL)
		fail_msg("%s", err);
	assert_int_equal(m->n_layers, 13);
	check_shape(m->layers[fz_model_find_layer(m, "block5")].out, 64, 7, 7);
	check_shape(m->layers[fz_model_find_layer(m, "block7")].out, 128, 4, 4); /* 7 -> 4 */
	check_shape(m->layers[fz_model_find_layer(m, "pool")].out, 128, 1, 1);
	assert_int_equal(m->output, fz_model_find_layer(m, "fc"));
	fz_model_free(m);
}

static void test_defaults(void **state)
{
	(void)state;
	struct fz_model *m =
		parse("name: t\n"
		      "weights: /abs/w.safetensors\n"
		      "input: {name: x, dtype: f32, shape: [3, 9, 9], mean: [1, 2, 3], "
		      "std: [0.5]}\n"
		      "layers:\n"
		      "  - {name: c, kind: conv, input: x, out_channels: 4, kernel: 5}\n"
		      "  - {name: p, kind: avgpool, input: c, kernel: 2}\n"
		      "  - {name: q, kind: avgpool, input: c, kernel: 3, stride: 1}\n"
		      "  - {name: f, kind: fc, input: p, out_features: 7}\n"
		      "  - {name: k, kind: conv, input: x, out_channels: 2, kernel: 3, "
		      "stride: 2, pad: 0, bias: true}\n"
		      "  - {name: b, kind: block, input: x, out_channels: 3, eps: 0.001}\n");
	if (m == NULL)
		fail_msg("%s", err);
	assert_string_equal(m->weights_path, "/abs/w.safetensors");
	assert_float_equal(m->input.scale, 1.0f, 0);
	assert_float_equal(m->input.mean[2], 3.0f, 0);
	assert_float_equal(m->input.std[2], 0.5f, 0);
	const struct fz_layer *c = &m->layers[fz_model_find_layer(m, "c")];
	assert_int_equal(c->stride, 1);
	assert_int_equal(c->pad, 2);
	check_shape(c->out, 4, 9, 9);
	const struct fz_layer *p = &m->layers[fz_model_find_layer(m, "p")];
	assert_int_equal(p->pool_kernel, 2);
	assert_int_equal(p->pool_stride, 2);
	check_shape(p->out, 4, 4, 4);
	check_shape(m->layers[fz_model_find_layer(m, "q")].out, 4, 7, 7);
	check_shape(m->layers[fz_model_find_layer(m, "f")].out, 7, 1, 1);
	check_shape(m->layers[fz_model_find_layer(m, "f")].in, 4, 4, 4);
	const struct fz_layer *k = &m->layers[fz_model_find_layer(m, "k")];
	assert_true(k->bias);
	check_shape(k->out, 2, 4, 4);
	const struct fz_layer *b = &m->layers[fz_model_find_layer(m, "b")];
	assert_int_equal(b->stride, 1);
	assert_float_equal(b->eps, 0.001f, 0);
	check_shape(b->out, 3, 9, 9);
	/* no `output:`: the last layer of the file */
	assert_int_equal(m->output, fz_model_find_layer(m, "b"));
	fz_model_free(m);
}

static void test_relative_weights_without_dir(void **state)
{
	(void)state;
	const char *text = HEAD "  - {name: r, kind: relu, input: x}\n";
	struct fz_model *m = fz_model_parse("m.yaml", text, strlen(text), err, sizeof(err));
	if (m == NULL)
		fail_msg("%s", err);
	assert_string_equal(m->weights_path, "w.safetensors");
	fz_model_free(m);
	m = parse(text);
	assert_string_equal(m->weights_path, "dir/w.safetensors");
	fz_model_free(m);
}

/* A model of n relu layers in a chain (input x, then r0, r1, ...). */
static char *relu_chain(int n)
{
	const size_t cap = sizeof(HEAD) + (size_t)n * 64;
	char *text = malloc(cap);
	assert_non_null(text);
	size_t len = (size_t)snprintf(text, cap, "%s", HEAD);
	for (int i = 0; i < n; i++) {
		char in[16] = "x";
		if (i)
			snprintf(in, sizeof(in), "r%d", i - 1);
		len += (size_t)snprintf(text + len, cap - len,
					"  - {name: r%d, kind: relu, input: %s}\n", i, in);
	}
	return text;
}

/* More layers than FZ_MODEL_MAX_LAYERS (per-layer counters, wire layer indices) is refused by
 * the cap's name at `layers:`; exactly the cap loads. */
static void test_err_layers_over_cap(void **state)
{
	(void)state;
	char *text = relu_chain(FZ_MODEL_MAX_LAYERS);
	struct fz_model *m = parse(text);
	if (m == NULL)
		fail_msg("%s", err);
	assert_int_equal(m->n_layers, FZ_MODEL_MAX_LAYERS);
	fz_model_free(m);
	free(text);
	text = relu_chain(FZ_MODEL_MAX_LAYERS + 1);
	char count[32];
	snprintf(count, sizeof(count), "%d layers", FZ_MODEL_MAX_LAYERS + 1);
	REFUSED(text, "dir/m.yaml:5:3: ", "FZ_MODEL_MAX_LAYERS", count);
	free(text);
}

static void test_topological_sort_stable(void **state)
{
	(void)state;
	/* a residual graph listed out of order: consumers before producers */
	struct fz_model *m =
		parse(HEAD "  - {name: sum, kind: add, inputs: [a, b]}\n"
			   "  - {name: out, kind: relu, input: sum}\n"
			   "  - {name: a, kind: conv, input: x, out_channels: 3, kernel: 3}\n"
			   "  - {name: b, kind: batchnorm, input: a}\n"
			   "  - {name: side, kind: relu, input: x}\n"
			   "output: out\n");
	if (m == NULL)
		fail_msg("%s", err);
	static const char *const order[] = {"a", "b", "sum", "out", "side"};
	assert_int_equal(m->n_layers, 5);
	for (int i = 0; i < 5; i++)
		assert_string_equal(m->layers[i].name, order[i]);
	const struct fz_layer *sum = &m->layers[2];
	assert_int_equal(sum->n_inputs, 2);
	assert_int_equal(sum->inputs[0], 0);
	assert_int_equal(sum->inputs[1], 1);
	assert_int_equal(m->layers[3].inputs[0], 2);
	assert_int_equal(m->output, 3);
	/* every input precedes its consumer */
	for (int i = 0; i < m->n_layers; i++)
		for (int k = 0; k < m->layers[i].n_inputs; k++)
			assert_true(m->layers[i].inputs[k] < i);
	assert_int_equal(sum->line, 5);
	fz_model_free(m);
}

static void test_add_of_input_twice(void **state)
{
	(void)state;
	struct fz_model *m = parse(HEAD "  - {name: d, kind: add, inputs: [x, x]}\n");
	if (m == NULL)
		fail_msg("%s", err);
	assert_int_equal(m->layers[0].inputs[0], FZ_INPUT_TENSOR);
	assert_int_equal(m->layers[0].inputs[1], FZ_INPUT_TENSOR);
	fz_model_free(m);
}

/* ---- errors ---- */

/* grouped convolutions and max pooling: shapes, and the errors that name where */
static void test_groups_and_maxpool(void **state)
{
	(void)state;
	char err[512];
	const char *ok = HEAD "  - {name: c, kind: conv, input: x, out_channels: 6, kernel: 3, "
			      "groups: 3}\n"
			      "  - {name: p, kind: maxpool, input: c, kernel: 3, stride: 2, pad: 1}\n"
			      "output: p\n";
	struct fz_model *m = fz_model_parse("dir/m.yaml", ok, strlen(ok), err, sizeof(err));
	assert_non_null(m);
	assert_int_equal(m->layers[0].groups, 3);
	check_shape(m->layers[1].out, 6, 4, 4);
	fz_model_free(m);
	REFUSED(HEAD "  - {name: c, kind: conv, input: x, out_channels: 6, kernel: 3, groups: 2}\n"
		     "output: c\n",
		"dir/m.yaml:5:", "2 groups do not divide its 3 input and 6 output channels");
	REFUSED(HEAD "  - {name: p, kind: maxpool, input: x, kernel: 2, pad: 2}\n"
		     "output: p\n",
		"dir/m.yaml:5:", "expected a pad below the kernel (2), found 2");
	/* ONNX-style pads [top, left, bottom, right] */
	const char *asym = HEAD "  - {name: c, kind: conv, input: x, out_channels: 4, kernel: 3, "
				"stride: 2, pads: [2, 0, 1, 2]}\n"
				"output: c\n";
	m = fz_model_parse("dir/m.yaml", asym, strlen(asym), err, sizeof(err));
	assert_non_null(m);
	check_shape(m->layers[0].out, 4, 5, 4); /* (8 + 3 - 3) / 2 + 1, (8 + 2 - 3) / 2 + 1 */
	fz_model_free(m);
	REFUSED(HEAD "  - {name: c, kind: conv, input: x, out_channels: 4, kernel: 3, pad: 1, "
		     "pads: [1, 1, 1, 1]}\noutput: c\n",
		"dir/m.yaml:5:", "give 'pad' or 'pads', not both");
	REFUSED(HEAD "  - {name: c, kind: conv, input: x, out_channels: 4, kernel: 3, pads: [1, 1]}\n"
		     "output: c\n",
		"dir/m.yaml:5:", "expected [top, left, bottom, right], found 2 values");
}

static void test_err_unknown_layer_kind(void **state)
{
	(void)state;
	REFUSED(HEAD "  - {name: c, kind: convolution, input: x}\n", "dir/m.yaml:5:21: ",
		"unknown layer kind 'convolution'",
		"conv, batchnorm, relu, add, avgpool, global_avgpool, fc, block");
	/* the same from a file, in block style */
	char path[4096];
	cfg_src_path(path, sizeof(path), "tests/data/config/bad_kind.yaml");
	errno = 0;
	assert_null(fz_model_load(path, err, sizeof(err)));
	assert_int_equal(errno, EINVAL);
	char pos[4200];
	snprintf(pos, sizeof(pos), "%s:6:11: layer 'c1': unknown layer kind 'convolution'", path);
	assert_prefix(err, pos);
}

static void test_err_missing_layer_field(void **state)
{
	(void)state;
	REFUSED(HEAD "  - {name: c, kind: conv, input: x, out_channels: 4}\n", "dir/m.yaml:5:5: ",
		"layer 'c'", "missing required key 'kernel'");
	REFUSED(HEAD "  - {name: c, kind: relu}\n", "dir/m.yaml:5:5: ",
		"missing required key 'input'");
	REFUSED(HEAD "  - {kind: relu, input: x}\n", "dir/m.yaml:5:5: ", "layer 1",
		"missing required key 'name'");
	REFUSED(HEAD "  - {name: f, kind: fc, input: x}\n", "dir/m.yaml:5:5: ",
		"missing required key 'out_features'");
}

static void test_err_missing_top_field(void **state)
{
	(void)state;
	REFUSED("name: t\n"
		"weights: w\n"
		"input: {name: x, dtype: f32, shape: [3, 8, 8], mean: [0.5], std: [0.25]}\n",
		"dir/m.yaml:1:1: ", "missing required key 'layers'");
	REFUSED("name: t\n"
		"input: {name: x, dtype: f32, shape: [3, 8, 8], mean: [0.5], std: [0.25]}\n",
		"dir/m.yaml:1:1: ", "missing required key 'weights'");
	REFUSED("name: t\n"
		"weights: w\n"
		"input: {name: x, shape: [3, 8, 8], mean: [0.5], std: [0.25]}\n"
		"layers: [{name: r, kind: relu, input: x}]\n",
		"dir/m.yaml:3:8: ", "input: missing required key 'dtype'");
}

static void test_err_wrong_type(void **state)
{
	(void)state;
	REFUSED(HEAD "  - {name: c, kind: conv, input: x, out_channels: 4, kernel: three}\n",
		"dir/m.yaml:5:62: ", "layer 'c'", "expected an integer, found 'three'");
	REFUSED(HEAD "  - {name: c, kind: conv, input: x, out_channels: 4, kernel: [3]}\n",
		"dir/m.yaml:5:62: ", "expected an integer, found a sequence");
	REFUSED(HEAD "  - {name: c, kind: conv, input: x, out_channels: 4, kernel: 3, bias: 1}\n",
		"dir/m.yaml:5:71: ", "expected true or false, found '1'");
	REFUSED(HEAD "  - {name: c, kind: batchnorm, input: x, eps: small}\n", "dir/m.yaml:5:47: ",
		"expected a number, found 'small'");
	REFUSED(HEAD "  - {name: c, kind: relu, input: [x]}\n", "dir/m.yaml:5:34: ",
		"expected a string, found a sequence");
	REFUSED(HEAD "  - [name, c]\n", "dir/m.yaml:5:5: ", "expected a mapping",
		"found a sequence");
	REFUSED(HEAD "  {name: c}\n", "dir/m.yaml:5:3: ", "layers: expected a non-empty sequence");
	REFUSED("- 1\n", "dir/m.yaml:1:1: ", "expected a mapping, found a sequence");
}

static void test_err_undefined_tensor(void **state)
{
	(void)state;
	REFUSED(HEAD "  - {name: r, kind: relu, input: x}\n"
		     "  - {name: s, kind: relu, input: rr}\n",
		"dir/m.yaml:6:34: ", "undefined tensor 'rr'", "the input 'x' or a layer name");
}

static void test_err_undefined_tensor_in_add(void **state)
{
	(void)state;
	REFUSED(HEAD "  - {name: s, kind: add, inputs: [x, y]}\n", "dir/m.yaml:5:38: ",
		"undefined tensor 'y'");
}

static void test_err_duplicate_layer_name(void **state)
{
	(void)state;
	REFUSED(HEAD "  - {name: r, kind: relu, input: x}\n"
		     "  - {name: r, kind: relu, input: r}\n",
		"dir/m.yaml:6:12: ", "duplicate layer name 'r'",
		"first defined at line 5, column 12");
	REFUSED(HEAD "  - {name: x, kind: relu, input: x}\n", "dir/m.yaml:5:12: ",
		"duplicate name 'x'", "model input");
}

static void test_err_cycle(void **state)
{
	(void)state;
	REFUSED(HEAD "  - {name: a, kind: relu, input: x}\n"
		     "  - {name: b, kind: relu, input: d}\n"
		     "  - {name: c, kind: relu, input: b}\n"
		     "  - {name: d, kind: relu, input: c}\n"
		     "  - {name: e, kind: relu, input: d}\n",
		"dir/m.yaml:6:34: ", "cycle between layers: b -> c -> d -> b");
	REFUSED(HEAD "  - {name: a, kind: add, inputs: [x, a]}\n", "dir/m.yaml:5:38: ",
		"cycle between layers: a -> a");
}

static void test_err_declared_shape_mismatch(void **state)
{
	(void)state;
	REFUSED(HEAD "  - {name: c, kind: conv, input: x, out_channels: 4, kernel: 3, stride: 2, "
		     "shape: [4, 3, 3]}\n",
		"dir/m.yaml:5:83: ", "layer 'c'", "shape mismatch", "declared [4, 3, 3]",
		"computed [4, 4, 4]");
	REFUSED(HEAD "  - {name: b, kind: block, input: x, out_channels: 8, stride: 2, "
		     "shape: [8, 8, 8]}\n",
		"dir/m.yaml:5:73: ", "declared [8, 8, 8], computed [8, 4, 4]");
	REFUSED(HEAD "  - {name: r, kind: relu, input: x, shape: [3, 8]}\n", "dir/m.yaml:5:44: ",
		"expected [C, H, W]");
}

static void test_err_add_operand_shapes(void **state)
{
	(void)state;
	REFUSED(HEAD "  - {name: c, kind: conv, input: x, out_channels: 4, kernel: 3}\n"
		     "  - {name: s, kind: add, inputs: [x, c]}\n",
		"dir/m.yaml:6:34: ", "add operands differ in shape", "'x' is [3, 8, 8]",
		"'c' is [4, 8, 8]");
	REFUSED(HEAD "  - {name: s, kind: add, inputs: [x]}\n", "dir/m.yaml:5:34: ",
		"add takes exactly 2 tensor names, found 1");
	REFUSED(HEAD "  - {name: s, kind: add, inputs: x}\n", "dir/m.yaml:5:34: ",
		"expected a sequence of 2 tensor names, found 'x'");
}

static void test_err_non_positive_sizes(void **state)
{
	(void)state;
	REFUSED(HEAD "  - {name: c, kind: conv, input: x, out_channels: 0, kernel: 3}\n",
		"dir/m.yaml:5:51: ", "out_channels: expected a positive integer, found 0");
	REFUSED(HEAD "  - {name: c, kind: conv, input: x, out_channels: 2, kernel: 3, stride: 0}\n",
		"dir/m.yaml:5:73: ", "stride: expected a positive integer, found 0");
	REFUSED(HEAD "  - {name: c, kind: conv, input: x, out_channels: 2, kernel: 3, pad: -1}\n",
		"dir/m.yaml:5:70: ", "pad: expected an integer >= 0, found -1");
	REFUSED(HEAD "  - {name: f, kind: fc, input: x, out_features: -10}\n", "dir/m.yaml:5:49: ",
		"out_features: expected a positive integer");
	REFUSED(HEAD "  - {name: c, kind: relu, input: x, shape: [3, 0, 8]}\n", "dir/m.yaml:5:48: ",
		"expected positive sizes, found 0");
	REFUSED(HEAD "  - {name: c, kind: batchnorm, input: x, eps: 0}\n", "dir/m.yaml:5:47: ",
		"eps: expected a positive number");
	/* a window larger than its (padded) input */
	REFUSED(HEAD "  - {name: p, kind: avgpool, input: x, kernel: 9}\n", "dir/m.yaml:5:48: ",
		"kernel 9 is larger than its input 8x8");
	REFUSED(HEAD "  - {name: c, kind: conv, input: x, out_channels: 2, kernel: 11, pad: 1}\n",
		"dir/m.yaml:5:62: ", "kernel 11 is larger than its input 8x8 (padded by 1)");
}

static void test_err_bad_input_spec(void **state)
{
	(void)state;
	const char *L = "layers: [{name: r, kind: relu, input: x}]\n";
	char text[512];
#define INPUT_CASE(spec, pos, ...)                                                                 \
	snprintf(text, sizeof(text), "name: t\nweights: w\ninput: %s\n%s", spec, L);               \
	REFUSED(text, pos, __VA_ARGS__)
	INPUT_CASE("{name: x, dtype: f32, shape: [3, 8, 8], mean: [1, 2], std: [1]}",
		   "dir/m.yaml:3:54: ", "input: mean has 2 values; expected 1 or 3");
	INPUT_CASE("{name: x, dtype: f32, shape: [3, 8, 8], mean: [1], std: [1, 2, 3, 4]}",
		   "dir/m.yaml:3:64: ", "std has 4 values; expected 1 or 3");
	INPUT_CASE("{name: x, dtype: f32, shape: [3, 8, 8], mean: [1], std: [1, 0, 1]}",
		   "dir/m.yaml:3:68: ", "std: expected a positive number, found 0");
	INPUT_CASE("{name: x, dtype: f32, shape: [3, 8, 8], mean: [1], std: []}",
		   "dir/m.yaml:3:64: ", "std has 0 values");
	INPUT_CASE("{name: x, dtype: u8, shape: [3, 8, 8], mean: [1], std: [1]}",
		   "dir/m.yaml:3:25: ", "unsupported dtype 'u8'; expected f32");
	INPUT_CASE("{name: x, dtype: f32, shape: [8, 8], mean: [1], std: [1]}", "dir/m.yaml:3:37: ",
		   "expected [C, H, W] (3 integers), found 2");
	INPUT_CASE("{name: x, dtype: f32, shape: [3, -8, 8], mean: [1], std: [1]}",
		   "dir/m.yaml:3:41: ", "expected positive sizes, found -8");
	INPUT_CASE("{name: x, dtype: f32, shape: [3, 8, 8], mean: [1], std: [1], scale: -1}",
		   "dir/m.yaml:3:76: ", "scale: expected a positive number");
	INPUT_CASE("{name: x, dtype: f32, shape: [3, 8, 8], mean: 0.5, std: [1]}",
		   "dir/m.yaml:3:54: ", "expected a sequence of numbers, found '0.5'");
	INPUT_CASE("{name: x, dtype: f32, shape: [3, 8, 8], mean: [1], std: [1], colour: red}",
		   "dir/m.yaml:3:69: ", "unknown key 'colour'",
		   "expected one of: name, dtype, shape, mean, std, scale");
#undef INPUT_CASE
}

static void test_wide_input_single_norm_accepted(void **state)
{
	(void)state;
	/* more channels than FZ_MAX_CHANNELS_NORM is fine with a single mean/std */
	struct fz_model *m =
		parse("name: t\nweights: w\n"
		      "input: {name: x, dtype: f32, shape: [17, 8, 8], mean: [1], std: [2]}\n"
		      "layers: [{name: r, kind: relu, input: x}]\n");
	if (m == NULL)
		fail_msg("%s", err);
	fz_model_free(m);
}

static void test_err_unknown_keys(void **state)
{
	(void)state;
	REFUSED(HEAD "  - {name: r, kind: relu, input: x, kernel: 3}\n", "dir/m.yaml:5:37: ",
		"layer 'r'", "unknown key 'kernel'", "expected one of: name, kind, shape, input");
	REFUSED(HEAD "  - {name: s, kind: add, input: x}\n", "dir/m.yaml:5:26: ",
		"unknown key 'input'", "inputs");
	REFUSED(HEAD "  - {name: r, kind: relu, input: x}\nouput: r\n", "dir/m.yaml:6:1: ",
		"unknown key 'ouput'", "name, weights, input, layers, output");
}

static void test_err_duplicate_yaml_key(void **state)
{
	(void)state;
	REFUSED(HEAD "  - {name: r, kind: relu, input: x, input: x}\n", "dir/m.yaml:5:37: ",
		"duplicate key 'input'");
}

static void test_err_yaml_syntax(void **state)
{
	(void)state;
	REFUSED(HEAD "  - {name: r, kind: relu, input: x\n"
		     "output: r\n",
		"dir/m.yaml:6:", "YAML syntax error");
	REFUSED(HEAD "  - {name: &n r, kind: relu, input: x}\n", "dir/m.yaml:5:12: ",
		"anchors are not supported");
}

static void test_err_output_undefined(void **state)
{
	(void)state;
	REFUSED(HEAD "  - {name: r, kind: relu, input: x}\noutput: logits\n", "dir/m.yaml:6:9: ",
		"output: undefined layer 'logits'");
	REFUSED(HEAD "  - {name: r, kind: relu, input: x}\noutput: x\n", "dir/m.yaml:6:9: ",
		"undefined layer 'x'");
}

static void test_err_empty(void **state)
{
	(void)state;
	REFUSED("", "dir/m.yaml:1:1: ", "empty document");
	REFUSED(HEAD "  []\n", "dir/m.yaml:5:3: ", "non-empty sequence of layers", "an empty one");
	REFUSED("name: ''\nweights: w\n", "dir/m.yaml:1:7: ", "expected a non-empty name");
	REFUSED("name: t\nweights: ''\n", "dir/m.yaml:2:10: ", "weights: expected a file name");
}

static void test_err_missing_file(void **state)
{
	(void)state;
	errno = 0;
	assert_null(fz_model_load("/nonexistent/model.yaml", err, sizeof(err)));
	assert_int_equal(errno, ENOENT);
	assert_string_equal(err, "/nonexistent/model.yaml: cannot read: No such file or directory");
}

static void test_kind_names(void **state)
{
	(void)state;
	assert_string_equal(fz_layer_kind_name(FZ_LAYER_CONV), "conv");
	assert_string_equal(fz_layer_kind_name(FZ_LAYER_BLOCK), "block");
	assert_string_equal(fz_layer_kind_name(FZ_LAYER__COUNT), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shipped_model_loads),
		cmocka_unit_test(test_full_resnet18_shapes),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_relative_weights_without_dir),
		cmocka_unit_test(test_topological_sort_stable),
		cmocka_unit_test(test_add_of_input_twice),
		cmocka_unit_test(test_groups_and_maxpool),
		cmocka_unit_test(test_err_unknown_layer_kind),
		cmocka_unit_test(test_err_missing_layer_field),
		cmocka_unit_test(test_err_missing_top_field),
		cmocka_unit_test(test_err_wrong_type),
		cmocka_unit_test(test_err_undefined_tensor),
		cmocka_unit_test(test_err_undefined_tensor_in_add),
		cmocka_unit_test(test_err_duplicate_layer_name),
		cmocka_unit_test(test_err_cycle),
		cmocka_unit_test(test_err_layers_over_cap),
		cmocka_unit_test(test_err_declared_shape_mismatch),
		cmocka_unit_test(test_err_add_operand_shapes),
		cmocka_unit_test(test_err_non_positive_sizes),
		cmocka_unit_test(test_err_bad_input_spec),
		cmocka_unit_test(test_wide_input_single_norm_accepted),
		cmocka_unit_test(test_err_unknown_keys),
		cmocka_unit_test(test_err_duplicate_yaml_key),
		cmocka_unit_test(test_err_yaml_syntax),
		cmocka_unit_test(test_err_output_undefined),
		cmocka_unit_test(test_err_empty),
		cmocka_unit_test(test_err_missing_file),
		cmocka_unit_test(test_kind_names),
	};
	return cmocka_run_group_tests_name("config/model", tests, NULL, NULL);
}
