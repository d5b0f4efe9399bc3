/* freeze infer: the whole model over idx images through oneDNN, without caches or DPDK. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cmd.h"
#include "fz_idx.h"
#include "fz_model.h"
#include "fz_cache.h"
#include "fz_stages.h"

/* A JSON number, or null where there is none (jansson has no NaN or infinity). */
static json_t *infer_json_real(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

static void infer_usage(FILE *f)
{
	fprintf(f, "usage: freeze infer --model MODEL.yaml --images IDX[.gz] [--labels IDX[.gz]]\n"
		   "                    [--batch N] [--threads N] [--limit N] [--json]\n"
		   "                    [--answers FILE] [--logits FILE]\n"
		   "  Runs every image through the whole model; prints images, accuracy (with\n"
		   "  --labels) and images/s. --json prints one JSON object instead.\n"
		   "  --answers FILE writes each image's answer and softmax probability, one\n"
		   "  line \"LABEL PROBABILITY\" per image; --logits FILE the model's outputs,\n"
		   "  one line of floats per image.\n");
}

int fz_cmd_infer(int argc, char **argv)
{
	static const struct option opts[] = {
		{"model", required_argument, 0, 'm'}, {"images", required_argument, 0, 'i'},
		{"labels", required_argument, 0, 'l'}, {"batch", required_argument, 0, 'b'},
		{"threads", required_argument, 0, 't'}, {"limit", required_argument, 0, 'n'},
		{"json", no_argument, 0, 'j'},         {"help", no_argument, 0, 'h'},
		{"answers", required_argument, 0, 'a'}, {"logits", required_argument, 0, 'L'},
		{0, 0, 0, 0}};
	const char *model_path = NULL, *images = NULL, *labels = NULL, *answers = NULL;
	const char *logits = NULL;
	FILE *af = NULL, *lf = NULL;
	int batch = 64, threads = 1, limit = 0, json = 0, c;
	char err[1024];
	int rc = 1;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'm': model_path = optarg; break;
		case 'i': images = optarg; break;
		case 'l': labels = optarg; break;
		case 'b': batch = fz_opt_int("--batch", optarg, 1, 4096); break;
		case 't': threads = fz_opt_int("--threads", optarg, 1, 256); break;
		case 'n': limit = fz_opt_int("--limit", optarg, 1, 1 << 30); break;
		case 'j': json = 1; break;
		case 'a': answers = optarg; break;
		case 'L': logits = optarg; break;
		case 'h': infer_usage(stdout); return 0;
		default: infer_usage(stderr); return 2;
		}
	}
	if (!model_path || !images || optind != argc) {
		infer_usage(stderr);
		return 2;
	}

	struct fz_model *m = NULL;
	struct fz_net *net = NULL;
	struct fz_group *g = NULL;
	struct fz_idx img = {0}, lab = {0};
	int *pred = NULL;

	if (!(m = fz_model_load(model_path, err, sizeof(err)))) {
		fprintf(stderr, "freeze: %s\n", err);
		goto out;
	}
	if (fz_idx_load(images, &img, err, sizeof(err)) < 0) {
		fprintf(stderr, "freeze: %s\n", err);
		goto out;
	}
	if (img.item_size != fz_shape_size(m->input.shape)) {
		fprintf(stderr, "freeze: %s: items of %zu bytes, the model takes %dx%dx%d\n", images,
			img.item_size, m->input.shape.c, m->input.shape.h, m->input.shape.w);
		goto out;
	}
	if (labels) {
		if (fz_idx_load(labels, &lab, err, sizeof(err)) < 0) {
			fprintf(stderr, "freeze: %s\n", err);
			goto out;
		}
		if (lab.count != img.count || lab.item_size != 1) {
			fprintf(stderr, "freeze: %s: %zu labels for %zu images\n", labels, lab.count,
				img.count);
			goto out;
		}
	}
	size_t count = img.count;
	if (limit && (size_t)limit < count)
		count = limit;
	if (!(net = fz_net_create(m, err, sizeof(err)))) {
		fprintf(stderr, "freeze: %s\n", err);
		goto out;
	}
	/* OpenMP thread count first, then primitives on this thread (oneDNN 2.6 rule) */
	omp_set_num_threads(threads);
	if (!(g = fz_group_create(net, 0, m->n_layers - 1, batch, err, sizeof(err)))) {
		fprintf(stderr, "freeze: %s\n", err);
		goto out;
	}
	const struct fz_act_layout ol = fz_group_out_layout(g);
	const size_t in_floats = fz_group_in_layout(g).sample_stride;
	const int classes = ol.c;
	pred = malloc(count * sizeof(int));
	if (!pred)
		goto out;
	if (answers && !(af = fopen(answers, "w"))) {
		fprintf(stderr, "freeze: %s: %s\n", answers, strerror(errno));
		goto out;
	}
	if (logits && !(lf = fopen(logits, "w"))) {
		fprintf(stderr, "freeze: %s: %s\n", logits, strerror(errno));
		goto out;
	}
	/* warm up the plans this run uses (full batches and the tail) outside the timing */
	size_t tail = count % (size_t)batch;
	fz_net_preprocess_u8(net, img.data, 1, fz_group_input(g));
	if (fz_group_run(g, count >= (size_t)batch ? batch : (int)count) < 0 ||
	    (tail && fz_group_run(g, (int)tail) < 0)) {
		fprintf(stderr, "freeze: inference failed\n");
		goto out;
	}
	double t0 = fz_now_s();
	for (size_t i = 0; i < count; i += batch) {
		int n = (int)(count - i < (size_t)batch ? count - i : (size_t)batch);
		fz_net_preprocess_u8(net, img.data + i * img.item_size, n, fz_group_input(g));
		(void)in_floats;
		if (fz_group_run(g, n) < 0) {
			fprintf(stderr, "freeze: inference failed at image %zu\n", i);
			goto out;
		}
		const float *out = fz_group_output(g);
		for (int k = 0; k < n; k++) {
			const float *z = out + k * ol.sample_stride;
			pred[i + k] = fz_argmax(z, classes);
			if (af) { /* the answer and its softmax probability, one line per image */
				double sum = 0;
				for (int j = 0; j < classes; j++)
					sum += exp((double)z[j] - z[pred[i + k]]);
				fprintf(af, "%d %.6f\n", pred[i + k], 1.0 / sum);
			}
			for (int j = 0; lf && j < classes; j++) /* the model's raw outputs */
				fprintf(lf, "%.9g%c", (double)z[j], j + 1 < classes ? ' ' : '\n');
		}
	}
	double secs = fz_now_s() - t0;
	size_t correct = 0;
	if (labels)
		for (size_t i = 0; i < count; i++)
			correct += pred[i] == lab.data[i];
	double acc = labels ? (double)correct / count : -1;
	double ips = count / secs;
	if (json) {
		/* "correct" only with labels (o*: left out when NULL), "accuracy" null without */
		json_error_t je;
		json_t *o = json_pack_ex(&je, 0, "{s:s, s:I, s:o*, s:o, s:o, s:o, s:i, s:i, s:I}",
					 "model", m->name, "images", (json_int_t)count, "correct",
					 labels ? json_integer((json_int_t)correct) : NULL,
					 "accuracy", labels ? infer_json_real(acc) : json_null(),
					 "images_per_s", infer_json_real(ips), "seconds",
					 infer_json_real(secs), "batch", batch, "threads", threads,
					 "macs_per_image",
					 (json_int_t)fz_net_macs(net, 0, m->n_layers - 1));
		if (o && (json_object_set_new(o, "isa", json_string(fz_stages_isa())) < 0 ||
			  json_object_set_new(o, "cache_isa", json_string(fz_cache_isa())) < 0)) {
			json_decref(o);
			o = NULL;
		}
		if (o == NULL || json_dumpf(o, stdout, JSON_REAL_PRECISION(10)) < 0) {
			fprintf(stderr, "freeze: --json: cannot write the report: %s\n",
				o ? strerror(errno) : je.text);
			json_decref(o);
			goto out;
		}
		putchar('\n');
		json_decref(o);
	} else {
		printf("model      %s\nimages     %zu\n", m->name, count);
		if (labels)
			printf("accuracy   %.2f%% (%zu/%zu)\n", acc * 100, correct, count);
		printf("images/s   %.1f (batch %d, %d thread%s, %.3f s)\n", ips, batch, threads,
		       threads == 1 ? "" : "s", secs);
	}
	rc = 0;
out:
	if (af && fclose(af) != 0 && rc == 0) {
		fprintf(stderr, "freeze: %s: %s\n", answers, strerror(errno));
		rc = 1;
	}
	if (lf && fclose(lf) != 0 && rc == 0) {
		fprintf(stderr, "freeze: %s: %s\n", logits, strerror(errno));
		rc = 1;
	}
	free(pred);
	fz_group_free(g);
	fz_net_free(net);
	fz_model_free(m);
	fz_idx_free(&img);
	fz_idx_free(&lab);
	return rc;
}
