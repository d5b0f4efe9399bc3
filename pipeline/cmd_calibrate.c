/* freeze calibrate: build each layer's cache from the train split and set thresholds on a held-out split. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "fz_cache.h"
#include "fz_idx.h"
#include "fz_model.h"
#include "fz_stages.h"

#define FMNIST "/usr/share/datasets/fashion-mnist/"
#define PCA_SAMPLE 20000 /* build vectors a PCA is fitted on (spread evenly) */

int fz_chain_create(struct fz_chain *ch, struct fz_net *net, const int *cache_layer, int n_caches,
		    int max_batch, char *err, size_t errlen)
{
	const struct fz_model *m = fz_net_model(net);

	memset(ch, 0, sizeof(*ch));
	for (int i = 0; i < n_caches; i++)
		if (cache_layer[i] < 0 || cache_layer[i] >= m->output ||
		    (i && cache_layer[i] <= cache_layer[i - 1])) {
			snprintf(err, errlen, "cache layers must be distinct, in model order, and "
					      "before the output layer");
			return -EINVAL;
		}
	ch->n = n_caches + 1;
	ch->g = calloc((size_t)ch->n, sizeof(*ch->g));
	ch->first = calloc((size_t)ch->n, sizeof(int));
	ch->last = calloc((size_t)ch->n, sizeof(int));
	if (!ch->g || !ch->first || !ch->last) {
		fz_chain_free(ch);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (int s = 0; s < ch->n; s++) {
		ch->first[s] = s ? cache_layer[s - 1] + 1 : 0;
		ch->last[s] = s < n_caches ? cache_layer[s] : m->n_layers - 1;
		ch->g[s] = fz_group_create(net, ch->first[s], ch->last[s], max_batch, err, errlen);
		if (!ch->g[s]) {
			int rc = -errno;
			fz_chain_free(ch);
			return rc ? rc : -EINVAL;
		}
	}
	return 0;
}

void fz_chain_free(struct fz_chain *ch)
{
	for (int s = 0; ch->g && s < ch->n; s++)
		fz_group_free(ch->g[s]);
	free(ch->g);
	free(ch->first);
	free(ch->last);
	memset(ch, 0, sizeof(*ch));
}

void fz_chain_forward(struct fz_chain *ch, int s, const int *idx, int n)
{
	const size_t ss = fz_group_out_layout(ch->g[s]).sample_stride;
	const float *out = fz_group_output(ch->g[s]);
	float *in = fz_group_input(ch->g[s + 1]);

	if (!idx) {
		memcpy(in, out, (size_t)n * ss * sizeof(float));
		return;
	}
	for (int k = 0; k < n; k++)
		memcpy(in + (size_t)k * ss, out + (size_t)idx[k] * ss, ss * sizeof(float));
}

static void calibrate_usage(FILE *f)
{
	fprintf(f,
		"usage: freeze calibrate --model MODEL.yaml --cache-config CACHES.yaml --out SNAPSHOT\n"
		"                        [--images IDX] [--labels IDX] [--build N] [--validation N]\n"
		"                        [--batch N] [--threads N]\n"
		"  Runs the train images (default Fashion-MNIST train) through the model; the first\n"
		"  `build` of them build each layer's cache (labelled with the full model's answers),\n"
		"  the next `validation` set the thresholds. Prints per cache: entries, threshold,\n"
		"  validation exit rate and disagreement; writes the snapshot durably.\n");
}

/* Cache config items -> model layer indices, sorted into model order (params reordered too). */
static int map_layers(const struct fz_model *m, struct fz_cache_config *cfg, int *layer)
{
	for (int i = 0; i < cfg->n_caches; i++) {
		layer[i] = fz_model_find_layer(m, cfg->caches[i].layer);
		if (layer[i] < 0 || layer[i] >= m->output) {
			fprintf(stderr, "freeze: %s: cache on layer '%s': %s\n", cfg->path,
				cfg->caches[i].layer,
				layer[i] < 0 ? "no such layer in the model" : "it is the output");
			return -EINVAL;
		}
	}
	for (int i = 1; i < cfg->n_caches; i++) /* insertion sort by layer index */
		for (int j = i; j > 0 && layer[j] < layer[j - 1]; j--) {
			int t = layer[j];
			layer[j] = layer[j - 1];
			layer[j - 1] = t;
			struct fz_cache_params p = cfg->caches[j];
			cfg->caches[j] = cfg->caches[j - 1];
			cfg->caches[j - 1] = p;
		}
	return 0;
}

static void key_desc(const struct fz_cache_params *p, char *b, size_t n)
{
	int o = snprintf(b, n, "g%d", p->grid);
	if (p->dims)
		o += snprintf(b + o, n - (size_t)o, "/pca%d", p->dims);
	if (p->l2)
		snprintf(b + o, n - (size_t)o, "/l2");
}

int fz_cmd_calibrate(int argc, char **argv)
{
	static const struct option opts[] = {
		{"model", required_argument, 0, 'm'},	 {"cache-config", required_argument, 0, 'c'},
		{"out", required_argument, 0, 'o'},	 {"images", required_argument, 0, 'i'},
		{"labels", required_argument, 0, 'l'},	 {"build", required_argument, 0, 'B'},
		{"validation", required_argument, 0, 'V'}, {"batch", required_argument, 0, 'b'},
		{"threads", required_argument, 0, 't'},	 {"help", no_argument, 0, 'h'},
		{0, 0, 0, 0}};
	const char *model_path = NULL, *cfg_path = NULL, *out_path = NULL;
	const char *images = FMNIST "train-images-idx3-ubyte.gz";
	const char *labels = FMNIST "train-labels-idx1-ubyte.gz";
	int batch = 64, threads = 1, build = 0, validation = 0, c, rc = 1;
	char err[1024];

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'm': model_path = optarg; break;
		case 'c': cfg_path = optarg; break;
		case 'o': out_path = optarg; break;
		case 'i': images = optarg; break;
		case 'l': labels = optarg; break;
		case 'B': build = fz_opt_int("--build", optarg, 1, 1 << 30); break;
		case 'V': validation = fz_opt_int("--validation", optarg, 1, 1 << 30); break;
		case 'b': batch = fz_opt_int("--batch", optarg, 1, FZ_CACHE_MAX_BURST); break;
		case 't': threads = fz_opt_int("--threads", optarg, 1, 256); break;
		case 'h': calibrate_usage(stdout); return 0;
		default: calibrate_usage(stderr); return 2;
		}
	}
	if (!model_path || !cfg_path || !out_path || optind != argc) {
		calibrate_usage(stderr);
		return 2;
	}

	struct fz_model *m = NULL;
	struct fz_net *net = NULL;
	struct fz_cache_config *cfg = NULL;
	struct fz_cache_set *set = NULL;
	struct fz_chain ch = {0};
	struct fz_idx img = {0}, lab = {0};
	int *layer = NULL, *pred = NULL, *exit = NULL;
	float **pooled = NULL, *keys = NULL, *conf = NULL, *thr = NULL, *fixed = NULL;
	bool *agree = NULL, *enabled = NULL;
	enum fz_cache_thr_mode *mode = NULL;

	if (!(m = fz_model_load(model_path, err, sizeof(err))) ||
	    !(cfg = fz_cache_config_load(cfg_path, err, sizeof(err))) ||
	    fz_idx_load(images, &img, err, sizeof(err)) < 0 ||
	    fz_idx_load(labels, &lab, err, sizeof(err)) < 0) {
		fprintf(stderr, "freeze: %s\n", err);
		goto out;
	}
	if (build)
		cfg->build = build;
	if (validation)
		cfg->validation = validation;
	const int L = cfg->n_caches;
	const size_t nb = (size_t)cfg->build, nv = (size_t)cfg->validation, N = nb + nv;
	if (img.item_size != fz_shape_size(m->input.shape) || lab.count != img.count ||
	    N > img.count) {
		fprintf(stderr,
			"freeze: %s: %zu images of %zu bytes (%zu labels); calibration needs %zu "
			"(build %zu + validation %zu) of %dx%dx%d\n",
			images, img.count, img.item_size, lab.count, N, nb, nv, m->input.shape.c,
			m->input.shape.h, m->input.shape.w);
		goto out;
	}
	layer = calloc((size_t)L, sizeof(int));
	if (!layer || map_layers(m, cfg, layer) < 0)
		goto out;
	if (!(net = fz_net_create(m, err, sizeof(err)))) {
		fprintf(stderr, "freeze: %s\n", err);
		goto out;
	}
	const int classes = m->layers[m->output].out.c;
	set = fz_cache_set_new(fz_net_fingerprint(net), classes, L);
	if (!set)
		goto out;
	for (int i = 0; i < L; i++) {
		struct fz_shape sh = m->layers[layer[i]].out;
		set->caches[i] = fz_cache_create(&cfg->caches[i], sh.c, sh.h, sh.w, classes);
		if (!set->caches[i]) {
			fprintf(stderr, "freeze: %s: cache on '%s' (%dx%dx%d): invalid settings: %s\n",
				cfg_path, cfg->caches[i].layer, sh.c, sh.h, sh.w, strerror(errno));
			goto out;
		}
	}
	omp_set_num_threads(threads);
	if (fz_chain_create(&ch, net, layer, L, batch, err, sizeof(err)) < 0) {
		fprintf(stderr, "freeze: %s\n", err);
		goto out;
	}

	/* 1. forward pass: full-model answers and every cache's pooled tap */
	pooled = calloc((size_t)L, sizeof(*pooled));
	pred = malloc(N * sizeof(int));
	if (!pooled || !pred)
		goto nomem;
	for (int i = 0; i < L; i++)
		if (!(pooled[i] = malloc(N * (size_t)fz_cache_pooled_dim(set->caches[i]) *
					 sizeof(float))))
			goto nomem;
	double t0 = fz_now_s();
	const int classes_ss = (int)fz_group_out_layout(ch.g[ch.n - 1]).sample_stride;
	for (size_t i = 0; i < N; i += (size_t)batch) {
		int n = (int)(N - i < (size_t)batch ? N - i : (size_t)batch);
		fz_net_preprocess_u8(net, img.data + i * img.item_size, (size_t)n,
				     fz_group_input(ch.g[0]));
		for (int s = 0; s < ch.n; s++) {
			if (fz_group_run(ch.g[s], n) < 0) {
				fprintf(stderr, "freeze: inference failed at image %zu\n", i);
				goto out;
			}
			if (s == ch.n - 1)
				break;
			struct fz_act_layout lay = fz_group_out_layout(ch.g[s]);
			size_t P = (size_t)fz_cache_pooled_dim(set->caches[s]);
			fz_cache_pool_burst(set->caches[s], fz_group_output(ch.g[s]), &lay, n,
					    pooled[s] + i * P);
			fz_chain_forward(&ch, s, NULL, n);
		}
		const float *o = fz_group_output(ch.g[ch.n - 1]);
		for (int k = 0; k < n; k++)
			pred[i + (size_t)k] = fz_argmax(o + (size_t)k * classes_ss, classes);
		if ((i / batch) % 50 == 0 || i + n == N) {
			double el = fz_now_s() - t0;
			fprintf(stderr, "\rcalibrate: forward %zu/%zu images (%.0f/s)   ", i + n, N,
				(i + n) / el);
		}
	}
	size_t correct = 0, vcorrect = 0;
	for (size_t j = 0; j < N; j++) {
		correct += pred[j] == lab.data[j];
		vcorrect += j >= nb && pred[j] == lab.data[j];
	}
	fprintf(stderr, "\ncalibrate: full model accuracy %.2f%% on these %zu train images "
			"(%.2f%% on the validation part)\n",
		100.0 * correct / N, N, nv ? 100.0 * vcorrect / nv : 0.0);

	/* 2. per cache: PCA on the build part, keys, entries, validation answers */
	conf = malloc((size_t)L * nv * sizeof(float));
	agree = malloc((size_t)L * nv * sizeof(bool));
	keys = malloc(N * FZ_CACHE_MAX_DIM * sizeof(float));
	if (!conf || !agree || !keys)
		goto nomem;
	for (int i = 0; i < L; i++) {
		struct fz_cache *ca = set->caches[i];
		const struct fz_cache_params *p = fz_cache_params(ca);
		const size_t P = (size_t)fz_cache_pooled_dim(ca), D = (size_t)fz_cache_key_dim(ca);
		double tc = fz_now_s();
		fprintf(stderr, "calibrate: cache %d/%d on %s: ", i + 1, L, p->layer);
		if (p->dims) {
			fprintf(stderr, "PCA %zu->%d, ", P, p->dims);
			if (fz_cache_fit_pca(ca, pooled[i], nb, PCA_SAMPLE) < 0)
				goto nomem;
		}
		for (size_t j = 0; j < N; j += 256) {
			int n = (int)(N - j < 256 ? N - j : 256);
			fz_cache_project_burst(ca, pooled[i] + j * P, n, keys + j * D);
		}
		free(pooled[i]);
		pooled[i] = NULL;
		fprintf(stderr, "%s of %zu points, ", fz_cache_kind_name(p->kind), nb);
		if (fz_cache_build(ca, keys, pred, nb, cfg->seed + (uint64_t)i) < 0)
			goto nomem;
		for (size_t j = 0; j < nv; j += FZ_CACHE_MAX_BURST) {
			int n = (int)(nv - j < FZ_CACHE_MAX_BURST ? nv - j : FZ_CACHE_MAX_BURST);
			struct fz_cache_result res[FZ_CACHE_MAX_BURST];
			fz_cache_lookup_keys(ca, keys + (nb + j) * D, n, res);
			for (int k = 0; k < n; k++) {
				conf[(size_t)i * nv + j + k] = res[k].conf;
				agree[(size_t)i * nv + j + k] = res[k].label == pred[nb + j + k];
			}
		}
		fprintf(stderr, "%d entries (%.1f s)\n", fz_cache_entries(ca), fz_now_s() - tc);
	}

	/* 3. thresholds on the validation part */
	mode = malloc((size_t)L * sizeof(*mode));
	enabled = malloc((size_t)L * sizeof(bool));
	thr = malloc((size_t)L * sizeof(float));
	fixed = malloc((size_t)L * sizeof(float));
	exit = malloc((nv ? nv : 1) * sizeof(int));
	if (!mode || !enabled || !thr || !fixed || !exit)
		goto nomem;
	for (int i = 0; i < L; i++) {
		mode[i] = cfg->caches[i].thr_mode;
		enabled[i] = cfg->caches[i].enabled;
		fixed[i] = cfg->caches[i].threshold;
	}
	if (fz_cache_calibrate_thresholds(mode, enabled, fixed, L, conf, agree, nv, cfg->budget,
					  thr) < 0)
		goto nomem;
	for (int i = 0; i < L; i++)
		fz_cache_set_threshold(set->caches[i], thr[i]);
	size_t wrong = fz_cache_cascade(enabled, thr, L, conf, agree, nv, exit);

	printf("model        %s (fingerprint %016llx)\n", m->name,
	       (unsigned long long)set->model_fp);
	printf("calibration  %s: build %zu, validation %zu (budget %.4f)\n", images, nb, nv,
	       cfg->budget);
	printf("%-8s %-7s %-14s %7s %-10s %10s %8s %8s %8s %9s\n", "layer", "kind", "key",
	       "entries", "mode", "threshold", "alone", "exits", "cumul", "disagree");
	size_t cum = 0;
	for (int i = 0; i < L; i++) {
		const struct fz_cache_params *p = fz_cache_params(set->caches[i]);
		size_t alone = 0, ex = 0, dis = 0;
		for (size_t j = 0; j < nv; j++) {
			alone += enabled[i] && conf[(size_t)i * nv + j] > thr[i];
			if (exit[j] == i) {
				ex++;
				dis += !agree[(size_t)i * nv + j];
			}
		}
		cum += ex;
		char kd[32];
		key_desc(p, kd, sizeof(kd));
		printf("%-8s %-7s %-14s %7d %-10s %10.4g %7.2f%% %7.2f%% %7.2f%% %9zu\n", p->layer,
		       fz_cache_kind_name(p->kind), kd, fz_cache_entries(set->caches[i]),
		       enabled[i] ? fz_cache_thr_name(p->thr_mode) : "disabled", thr[i],
		       100.0 * alone / nv, 100.0 * ex / nv, 100.0 * cum / nv, dis);
	}
	size_t by_mid = 0;
	for (size_t j = 0; j < nv; j++)
		by_mid += exit[j] < L && layer[exit[j]] <= fz_model_find_layer(m, "block4");
	printf("validation   exits %.2f%%, by block4 %.2f%%, agreement %.3f%% (%zu disagree)\n",
	       100.0 * cum / nv, fz_model_find_layer(m, "block4") >= 0 ? 100.0 * by_mid / nv : 0.0,
	       100.0 - 100.0 * wrong / nv, wrong);
	printf("cache bytes  %zu\n", fz_cache_set_bytes(set));

	int wr = fz_cache_set_save(set, out_path);
	if (wr < 0) {
		fprintf(stderr, "freeze: %s: cannot write the snapshot: %s\n", out_path, strerror(-wr));
		goto out;
	}
	printf("snapshot     %s\n", out_path);
	rc = 0;
	goto out;
nomem:
	fprintf(stderr, "freeze: calibrate: out of memory\n");
out:
	for (int i = 0; pooled && cfg && i < cfg->n_caches; i++)
		free(pooled[i]);
	free(pooled);
	free(keys), free(conf), free(agree), free(thr), free(fixed), free(mode), free(enabled);
	free(exit), free(pred), free(layer);
	fz_chain_free(&ch);
	fz_cache_set_free(set);
	fz_cache_config_free(cfg);
	fz_net_free(net);
	fz_model_free(m);
	fz_idx_free(&img);
	fz_idx_free(&lab);
	return rc;
}
