/* Engine tests: the C logits equal the trainer's reference logits; batch sizes agree; group
 * ranges chain; bad group ranges are refused. Needs the shipped model (skips without it). */
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fz_idx.h"
#include "fz_model.h"
#include "fz_stages.h"

#define MODEL_DIR "models/resnet18-w16-fmnist"

struct fixture {
	struct fz_model *m;
	struct fz_net *net;
	struct fz_weights *ref;
	struct fz_idx img;
	const float *ref_logits;
	int ref_count;
};

static char path_buf[4096];

static const char *src_path(const char *rel)
{
	const char *root = getenv("FZ_SRCDIR");
	snprintf(path_buf, sizeof(path_buf), "%s/%s", root ? root : ".", rel);
	return path_buf;
}

static int setup(void **state)
{
	static struct fixture f;
	char err[1024];
	memset(&f, 0, sizeof(f));
	f.m = fz_model_load(src_path(MODEL_DIR "/model.yaml"), err, sizeof(err));
	if (!f.m) {
		fprintf(stderr, "skip: %s\n", err);
		return -1;
	}
	f.net = fz_net_create(f.m, err, sizeof(err));
	assert_non_null(f.net);
	f.ref = fz_weights_load(src_path(MODEL_DIR "/reference.safetensors"), err, sizeof(err));
	assert_non_null(f.ref);
	const char *dt;
	int nd;
	const int64_t *dims;
	f.ref_logits = fz_weights_find(f.ref, "logits", &dt, &nd, &dims);
	assert_non_null(f.ref_logits);
	assert_int_equal(nd, 2);
	assert_int_equal(dims[1], 10);
	f.ref_count = (int)dims[0];
	const char *dir = getenv("FZ_FMNIST_DIR");
	char p[1024];
	snprintf(p, sizeof(p), "%s/t10k-images-idx3-ubyte.gz",
		 dir ? dir : "/usr/share/datasets/fashion-mnist");
	assert_int_equal(fz_idx_load(p, &f.img, err, sizeof(err)), 0);
	omp_set_num_threads(1);
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	fz_net_free(f->net);
	fz_model_free(f->m);
	fz_weights_free(f->ref);
	fz_idx_free(&f->img);
	return 0;
}

/* Run `count` images from `first` through group g in batches of `batch`; write logits. */
static void run_images(struct fixture *f, struct fz_group *g, int first, int count, int batch,
		       float *logits)
{
	struct fz_act_layout ol = fz_group_out_layout(g);
	for (int i = 0; i < count; i += batch) {
		int n = count - i < batch ? count - i : batch;
		fz_net_preprocess_u8(f->net, f->img.data + (size_t)(first + i) * f->img.item_size, n,
				     fz_group_input(g));
		assert_int_equal(fz_group_run(g, n), 0);
		for (int k = 0; k < n; k++)
			memcpy(logits + (size_t)(i + k) * 10,
			       fz_group_output(g) + k * ol.sample_stride, 10 * sizeof(float));
	}
}

static void test_logits_match_trainer(void **state)
{
	struct fixture *f = *state;
	char err[512];
	struct fz_group *g = fz_group_create(f->net, 0, f->m->n_layers - 1, 64, err, sizeof(err));
	assert_non_null(g);
	float *lg = malloc(sizeof(float) * 10 * f->ref_count);
	run_images(f, g, 0, f->ref_count, 64, lg);
	double maxdiff = 0;
	for (int i = 0; i < f->ref_count * 10; i++)
		maxdiff = fmax(maxdiff, fabs(lg[i] - f->ref_logits[i]));
	printf("max |logit - reference| over %d images: %.3g\n", f->ref_count, maxdiff);
	/* fp32 with other summation orders (and Winograd on AVX-512): ~1e-5 is measured; a
	 * wrong layout, weight or fusion is off by far more */
	assert_true(maxdiff <= 5e-5);
	free(lg);
	fz_group_free(g);
}

static void argmax_all(const float *lg, int n, int *pred)
{
	for (int i = 0; i < n; i++) {
		int b = 0;
		for (int c = 1; c < 10; c++)
			if (lg[i * 10 + c] > lg[i * 10 + b])
				b = c;
		pred[i] = b;
	}
}

static void test_batch_sizes_agree(void **state)
{
	struct fixture *f = *state;
	const int count = 200, sizes[3] = {1, 7, 64};
	int *pred[3];
	float *lg = malloc(sizeof(float) * 10 * count), *lg0 = malloc(sizeof(float) * 10 * count);
	char err[512];
	for (int s = 0; s < 3; s++) {
		struct fz_group *g = fz_group_create(f->net, 0, f->m->n_layers - 1, sizes[s], err,
						     sizeof(err));
		assert_non_null(g);
		run_images(f, g, 1000, count, sizes[s], lg);
		pred[s] = malloc(sizeof(int) * count);
		argmax_all(lg, count, pred[s]);
		fz_group_free(g);
		if (!s)
			memcpy(lg0, lg, sizeof(float) * 10 * count);
		/* the logits themselves agree, not only their argmax */
		double maxdiff = 0;
		for (int i = 0; i < count * 10; i++)
			maxdiff = fmax(maxdiff, fabs(lg[i] - lg0[i]));
		printf("batch %d vs 1: max |logit difference| %.3g\n", sizes[s], maxdiff);
		assert_true(maxdiff <= 5e-5);
	}
	assert_memory_equal(pred[0], pred[1], sizeof(int) * count);
	assert_memory_equal(pred[0], pred[2], sizeof(int) * count);
	for (int s = 0; s < 3; s++)
		free(pred[s]);
	free(lg);
	free(lg0);
}

/* Groups per block, chained by copying each sample's tap, give the whole model's logits. */
static void test_groups_chain(void **state)
{
	struct fixture *f = *state;
	char err[512];
	const int n = 16;
	int cuts[16], ncut = 0;
	for (int i = 0; i < f->m->n_layers; i++)
		if (f->m->layers[i].kind == FZ_LAYER_BLOCK || i == f->m->n_layers - 1)
			cuts[ncut++] = i;
	struct fz_group *whole = fz_group_create(f->net, 0, f->m->n_layers - 1, n, err, sizeof(err));
	assert_non_null(whole);
	float ref[n * 10], got[n * 10];
	run_images(f, whole, 2000, n, n, ref);
	fz_group_free(whole);

	struct fz_group *prev = NULL;
	int first = 0;
	for (int c = 0; c < ncut; c++) {
		struct fz_group *g = fz_group_create(f->net, first, cuts[c], n, err, sizeof(err));
		assert_non_null(g);
		if (!prev)
			fz_net_preprocess_u8(f->net, f->img.data + 2000 * f->img.item_size, n,
					     fz_group_input(g));
		else {
			struct fz_act_layout a = fz_group_out_layout(prev), b = fz_group_in_layout(g);
			/* sample by sample, as a pipeline stage re-forms its batch */
			for (int k = 0; k < n; k++)
				memcpy(fz_group_input(g) + (size_t)k * b.sample_stride,
				       fz_group_output(prev) + (size_t)k * a.sample_stride,
				       a.sample_stride * sizeof(float));
			fz_group_free(prev);
		}
		assert_int_equal(fz_group_run(g, n), 0);
		prev = g;
		first = cuts[c] + 1;
	}
	struct fz_act_layout ol = fz_group_out_layout(prev);
	for (int k = 0; k < n; k++)
		memcpy(got + k * 10, fz_group_output(prev) + k * ol.sample_stride, 40);
	fz_group_free(prev);
	for (int i = 0; i < n * 10; i++)
		assert_float_equal(got[i], ref[i], 1e-4);
}

/* Groups per block bound buffer to buffer (each group's output is the next one's input, as
 * inside a stage) give the whole model's logits, for two batch sizes on the same bindings; and
 * every boundary is in the layout oneDNN chose for it, with no reference kernel. */
static void test_groups_bound(void **state)
{
	struct fixture *f = *state;
	char err[512], impl[4096];
	enum { MB = 16 };
	int cuts[16], ncut = 0;
	for (int i = 0; i < f->m->n_layers; i++)
		if (f->m->layers[i].kind == FZ_LAYER_BLOCK || i == f->m->n_layers - 1)
			cuts[ncut++] = i;
	struct fz_group *whole = fz_group_create(f->net, 0, f->m->n_layers - 1, MB, err, sizeof(err));
	assert_non_null(whole);
	float ref[MB * 10];
	run_images(f, whole, 3000, MB, MB, ref);
	fz_group_free(whole);

	struct fz_group *g[16];
	int first = 0;
	for (int c = 0; c < ncut; c++) {
		g[c] = fz_group_create(f->net, first, cuts[c], MB, err, sizeof(err));
		assert_non_null(g[c]);
		struct fz_act_layout in = fz_group_in_layout(g[c]), out = fz_group_out_layout(g[c]);
		struct fz_act_layout want_in = fz_net_layout(f->net, first ? first - 1 : -1);
		struct fz_act_layout want_out = fz_net_layout(f->net, cuts[c]);
		assert_true(fz_layout_equal(&in, &want_in));
		assert_true(fz_layout_equal(&out, &want_out));
		assert_true(strcmp(out.tag, "unusable") != 0);
		fz_group_describe(g[c], impl, sizeof(impl));
		assert_null(strstr(impl, "convolution ref"));
		assert_null(strstr(impl, "pooling ref"));
		assert_null(strstr(impl, "inner_product ref"));
		if (c)
			assert_int_equal(fz_group_bind(g[c], (float *)fz_group_output(g[c - 1]), NULL), 0);
		first = cuts[c] + 1;
	}
	assert_int_equal(fz_group_bind(g[1], (float *)fz_group_input(g[1]),
				       (float *)fz_group_input(g[1])),
			 -EINVAL);
	for (int pass = 0; pass < 2; pass++) {
		const int n = pass ? 5 : MB; /* a smaller batch builds its plans after the binding */
		fz_net_preprocess_u8(f->net, f->img.data + 3000 * f->img.item_size, (size_t)n,
				     fz_group_input(g[0]));
		for (int c = 0; c < ncut; c++)
			assert_int_equal(fz_group_run(g[c], n), 0);
		struct fz_act_layout ol = fz_group_out_layout(g[ncut - 1]);
		for (int k = 0; k < n; k++)
			for (int j = 0; j < 10; j++)
				assert_float_equal(fz_group_output(g[ncut - 1])[k * ol.sample_stride + j],
						   ref[k * 10 + j], 1e-4);
	}
	for (int c = ncut - 1; c >= 0; c--)
		fz_group_free(g[c]);
}

static void test_group_cutting_fused_node_refused(void **state)
{
	struct fixture *f = *state;
	char err[512] = "";
	int stem = fz_model_find_layer(f->m, "stem");
	assert_true(stem >= 0);
	/* stem's batch norm is folded into it: a group cannot end between them */
	struct fz_group *g = fz_group_create(f->net, 0, stem, 4, err, sizeof(err));
	assert_null(g);
	assert_int_equal(errno, EINVAL);
	assert_non_null(strstr(err, "stem"));
	g = fz_group_create(f->net, 3, 1, 4, err, sizeof(err));
	assert_null(g);
}

static void test_macs(void **state)
{
	struct fixture *f = *state;
	uint64_t macs = fz_net_macs(f->net, 0, f->m->n_layers - 1), want = 0;
	/* counted here from the graph's shapes: conv out*in*k*k per output pixel; a BasicBlock's
	 * two 3x3 convs and, when it changes shape, its 1x1 projection; the FC in*out */
	for (int i = 0; i < f->m->n_layers; i++) {
		const struct fz_layer *l = &f->m->layers[i];
		uint64_t px = (uint64_t)l->out.h * l->out.w;
		if (l->kind == FZ_LAYER_CONV)
			want += px * l->out.c * l->in.c * l->kernel * l->kernel;
		else if (l->kind == FZ_LAYER_BLOCK)
			want += px * l->out.c * (9ull * l->in.c + 9ull * l->out.c +
						 (l->stride != 1 || l->in.c != l->out.c ? l->in.c : 0));
		else if (l->kind == FZ_LAYER_FC)
			want += (uint64_t)l->in.c * l->in.h * l->in.w * l->out_features;
	}
	assert_int_equal(macs, want);
	assert_int_equal(macs, 28573184); /* ResNet-18 w16 on 28x28, as the README states */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_logits_match_trainer),
		cmocka_unit_test(test_batch_sizes_agree),
		cmocka_unit_test(test_groups_chain),
		cmocka_unit_test(test_groups_bound),
		cmocka_unit_test(test_group_cutting_fused_node_refused),
		cmocka_unit_test(test_macs),
	};
	char err[1024];
	struct fz_model *m = fz_model_load(src_path(MODEL_DIR "/model.yaml"), err, sizeof(err));
	if (!m) {
		printf("SKIP: shipped model not loadable: %s\n", err);
		return 77;
	}
	fz_model_free(m);
	return cmocka_run_group_tests(tests, setup, teardown);
}
