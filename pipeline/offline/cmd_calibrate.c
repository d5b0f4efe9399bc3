/* freeze calibrate: build each layer's cache from the train split and set thresholds on a held-out split. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "fz_cascade.h"
#include "fz_cache.h"
#include "fz_idx.h"
#include "fz_model.h"
#include "fz_stages.h"

#define FMNIST "/usr/share/datasets/fashion-mnist/"
#define PCA_SAMPLE 20000 /* build vectors a PCA is fitted on (spread evenly) */

static void calibrate_usage(FILE *f)
{
	fprintf(f,
		"usage: freeze calibrate --model MODEL.yaml --cache-config CACHES.yaml --out SNAPSHOT\n"
		"                        [--cache-config C2 --out S2 ...] [--images IDX] [--labels IDX]\n"
		"                        [--build N] [--validation N] [--heldout N] [--batch N]\n"
		"                        [--threads N]\n"
		"  Runs the train images (default Fashion-MNIST train) through the model; the first\n"
		"  `build` of them build each layer's cache (labelled with the full model's answers),\n"
		"  the next `validation` set the thresholds, and the next `heldout` (default 0) only\n"
		"  measure the result. Prints per cache: entries, threshold, validation exit rate and\n"
		"  disagreement; writes the snapshot durably. Several configs (pairs of --cache-config\n"
		"  and --out) share one pass through the model: a sweep of cache settings.\n");
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

#define MAX_CFG 32

/* Pooled taps of one (layer, grid), shared by every config that keys a cache on them. */
struct feat {
	int layer, grid;
	struct fz_cache *pool; /* a cache used only for its pooling */
	float *data;           /* N x P */
	size_t P;
	double pool_s;         /* time spent pooling these taps */
};

struct cal {
	const struct fz_model *m;
	const struct fz_net *net;
	uint64_t fp;
	int classes;
	size_t nb, nv, nh, N; /* build, validation, held-out, all */
	const int *pred;      /* full-model answers */
	struct feat *f;
	int nf;
	const int *cut; /* the layer each group but the last ends at */
	int ncut;
	bool tap_failed;
	const double *rest_ns; /* per layer: full-model time per request after it */
	int batch;
};

/* The cascade's tap hook: pool group g's output for every feature keyed on its layer. */
static void cal_tap(void *arg, int g, const float *tap, const struct fz_act_layout *lay,
		    const struct fz_cascade_row *rows, unsigned n)
{
	struct cal *k = arg;
	const size_t i = (uintptr_t)rows[0].user; /* rows in image order: no exits */
	for (int q = 0; q < k->nf; q++) {
		if (g >= k->ncut || k->f[q].layer != k->cut[g])
			continue;
		double t0 = fz_now_s();
		if (fz_cache_pool_burst(k->f[q].pool, tap, lay, (int)n,
					k->f[q].data + i * k->f[q].P) < 0)
			k->tap_failed = true;
		k->f[q].pool_s += fz_now_s() - t0;
	}
}

static struct feat *feat_find(struct cal *k, int layer, int grid)
{
	for (int i = 0; i < k->nf; i++)
		if (k->f[i].layer == layer && k->f[i].grid == grid)
			return &k->f[i];
	return NULL;
}

/* Validation (or held-out) answers of cache i for samples [from, from + n). 0 or -errno. */
static int answers(struct fz_cache *ca, const float *keys, const int *pred, size_t from,
		   size_t n, float *conf, bool *agree)
{
	const size_t D = (size_t)fz_cache_key_dim(ca);

	for (size_t j = 0; j < n; j += FZ_CACHE_MAX_BURST) {
		int c = (int)(n - j < FZ_CACHE_MAX_BURST ? n - j : FZ_CACHE_MAX_BURST);
		struct fz_cache_result res[FZ_CACHE_MAX_BURST];
		int rc = fz_cache_lookup_keys(ca, keys + (from + j) * D, c, res);
		if (rc < 0)
			return rc;
		for (int q = 0; q < c; q++) {
			conf[j + (size_t)q] = res[q].conf;
			agree[j + (size_t)q] = res[q].label == pred[from + j + (size_t)q];
		}
	}
	return 0;
}

/* Tensor `layer`.`what` of a heads file: f32 with the given dims (-1: any), or NULL with a
 * message. *got receives the dims. */
static const float *head_tensor(const struct fz_weights *hw, const char *file, const char *layer,
				const char *what, int ndim, const int64_t *want, int64_t *got,
				bool optional)
{
	char name[FZ_NAME_MAX + 16];
	const char *dt;
	const int64_t *dims;
	int nd;
	snprintf(name, sizeof(name), "%s.%s", layer, what);
	const float *d = fz_weights_find(hw, name, &dt, &nd, &dims);
	if (!d) {
		if (!optional)
			fprintf(stderr, "freeze: %s: no tensor '%s' (train the predictors with "
					"tools/train_caches.py for this model and points)\n", file, name);
		return NULL;
	}
	bool ok = !strcmp(dt, "F32") && nd == ndim;
	for (int i = 0; ok && i < nd; i++) {
		ok = want[i] < 0 || dims[i] == want[i];
		got[i] = dims[i];
	}
	if (!ok) {
		fprintf(stderr, "freeze: %s: tensor '%s' is %s of %d dims, expected F32 [", file, name,
			dt, nd);
		for (int i = 0; i < ndim; i++)
			fprintf(stderr, "%s%lld", i ? ", " : "", (long long)want[i]);
		fprintf(stderr, "] (-1: any; pooled = channels x grid x grid of the config)\n");
		return NULL;
	}
	return d;
}

/* A learned cache's predictor from the heads file: *p gets its hidden units. 0 or -EINVAL. */
static int head_load(const struct fz_weights *hw, const char *file, struct fz_cache_params *p,
		     int pooled, int classes, struct fz_cache_head *h)
{
	int64_t g1[2], g2[2], one = 1, P = pooled, C = classes, any = -1;
	float *t;
	memset(h, 0, sizeof(*h));
	if (!hw) {
		fprintf(stderr, "freeze: cache on '%s': kind learned needs 'heads:'\n", p->layer);
		return -EINVAL;
	}
	int64_t w1d[2] = {any, P};
	h->w1 = head_tensor(hw, file, p->layer, "w1", 2, w1d, g1, false);
	h->w2 = head_tensor(hw, file, p->layer, "w2", 2, (int64_t[]){C, any}, g2, true);
	if (!h->w1)
		return -EINVAL;
	h->hidden = h->w2 ? (int)g2[1] : 0;
	if ((h->w2 && g1[0] != g2[1]) || (!h->w2 && g1[0] != C)) {
		fprintf(stderr, "freeze: %s: '%s': w1 has %lld rows; expected %s\n", file, p->layer,
			(long long)g1[0], h->w2 ? "w2's columns" : "one per class (no w2)");
		return -EINVAL;
	}
	int64_t n1 = g1[0];
	if (!(h->b1 = head_tensor(hw, file, p->layer, "b1", 1, &n1, g1, false)) ||
	    !(h->mean = head_tensor(hw, file, p->layer, "mean", 1, &P, g1, false)) ||
	    !(h->inv_std = head_tensor(hw, file, p->layer, "inv_std", 1, &P, g1, false)) ||
	    (h->w2 && !(h->b2 = head_tensor(hw, file, p->layer, "b2", 1, &C, g1, false))) ||
	    !(t = (float *)head_tensor(hw, file, p->layer, "temperature", 1, &one, g1, false)))
		return -EINVAL;
	h->temperature = t[0];
	if (!(t = (float *)head_tensor(hw, file, p->layer, "radius", 1, &one, g1, false)))
		return -EINVAL;
	h->radius = t[0];
	p->hidden = h->hidden;
	return 0;
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}


/* A learned cache's confirmer: its threshold passes `keep` of the validation requests
 * whose nearest centroid gives the full model's answer (so in-distribution requests are
 * rarely held back, and requests far from every centroid are). 0 or -errno. */
static int confirm_threshold(struct fz_cache *ca, const float *keys, const int *pred,
			     size_t from, size_t n, double keep)
{
	struct fz_cache *sub = fz_cache_confirmer(ca);
	const size_t D = (size_t)fz_cache_key_dim(ca), SD = (size_t)fz_cache_key_dim(sub);
	const size_t off = D - SD;
	float *tail = malloc(n * SD * sizeof(float)), *ok = malloc(n * sizeof(float));
	size_t m = 0;
	int rc = -ENOMEM;
	if (!tail || !ok)
		goto out;
	for (size_t j = 0; j < n; j++)
		memcpy(tail + j * SD, keys + (from + j) * D + off, SD * sizeof(float));
	for (size_t j = 0; j < n; j += FZ_CACHE_MAX_BURST) {
		int c = (int)(n - j < FZ_CACHE_MAX_BURST ? n - j : FZ_CACHE_MAX_BURST);
		struct fz_cache_result res[FZ_CACHE_MAX_BURST];
		if ((rc = fz_cache_lookup_keys(sub, tail + j * SD, c, res)) < 0)
			goto out;
		for (int q = 0; q < c; q++)
			if (res[q].label == pred[from + j + (size_t)q])
				ok[m++] = res[q].conf;
	}
	qsort(ok, m, sizeof(float), cmp_float);
	fz_cache_set_threshold(sub, m ? ok[(size_t)((1.0 - keep) * (double)m)] : 0.0f);
	rc = 0;
out:
	free(tail);
	free(ok);
	return rc;
}

/* Build one config's caches from the pooled taps, set thresholds, report, save. */
static int calibrate_one(struct cal *k, struct fz_cache_config *cfg, const int *layer,
			 const char *out_path)
{
	const int L = cfg->n_caches;
	const size_t nb = k->nb, nv = k->nv, nh = k->nh;
	struct fz_cache_set *set = fz_cache_set_new(k->fp, k->classes, L);
	float *keys = malloc(k->N * FZ_CACHE_MAX_DIM * sizeof(float));
	float *conf = malloc((size_t)L * (nv + nh + 1) * sizeof(float));
	bool *agree = malloc((size_t)L * (nv + nh + 1) * sizeof(bool));
	float *thr = malloc((size_t)L * sizeof(float)), *fixed = malloc((size_t)L * sizeof(float));
	bool *enabled = malloc((size_t)L * sizeof(bool));
	enum fz_cache_thr_mode *mode = malloc((size_t)L * sizeof(*mode));
	int *exit = malloc((nv + nh + 1) * sizeof(int));
	double gain[FZ_CACHE_MAX_BURST], cost_ns[FZ_CACHE_MAX_BURST], payoff[FZ_CACHE_MAX_BURST];
	bool off_by_payoff[FZ_CACHE_MAX_BURST] = {0};
	char err[1024];
	struct fz_weights *hw = NULL;
	int rc = -ENOMEM;

	if (cfg->heads[0] && !(hw = fz_weights_load(cfg->heads, err, sizeof(err)))) {
		fprintf(stderr, "freeze: %s: %s\n", cfg->path, err);
		rc = -EINVAL;
		goto out;
	}

	if (!set || !keys || !conf || !agree || !thr || !fixed || !enabled || !mode || !exit)
		goto out;
	float *hconf = conf + (size_t)L * nv;
	bool *hagree = agree + (size_t)L * nv;
	for (int i = 0; i < L; i++) {
		const struct fz_cache_params *p = &cfg->caches[i];
		struct fz_shape sh = k->m->layers[layer[i]].out;
		struct feat *f = feat_find(k, layer[i], p->grid);
		struct fz_cache_params pc = *p;
		struct fz_cache_head head;
		if (p->kind == FZ_CACHE_LEARNED &&
		    head_load(hw, cfg->heads, &pc, sh.c * p->grid * p->grid, k->classes, &head) < 0) {
			rc = -EINVAL;
			goto out;
		}
		struct fz_cache *ca = fz_cache_create(&pc, sh.c, sh.h, sh.w, k->classes);
		double tc = fz_now_s();
		if (!ca || !f) {
			fprintf(stderr, "freeze: %s: cache on '%s' (%dx%dx%d): invalid settings (a key "
					"holds at most %d floats: c*grid*grid, or dims with PCA)\n",
				cfg->path, p->layer, sh.c, sh.h, sh.w, FZ_CACHE_MAX_DIM);
			rc = -EINVAL;
			goto out;
		}
		set->caches[i] = ca;
		if (p->kind == FZ_CACHE_LEARNED && fz_cache_set_head(ca, &head) < 0) {
			fprintf(stderr, "freeze: %s: the predictor for '%s' is invalid (hidden units, "
					"a non-finite weight, temperature <= 0 or radius < 0)\n",
				cfg->heads, p->layer);
			rc = -EINVAL;
			goto out;
		}
		const size_t D = (size_t)fz_cache_key_dim(ca);
		fprintf(stderr, "calibrate: %s: cache %d/%d on %s: ", cfg->path, i + 1, L, p->layer);
		const struct fz_cache *pcs = fz_cache_confirmer(ca) ? fz_cache_confirmer(ca) : ca;
		if (fz_cache_params(pcs)->dims) { /* the cache's: dims >= pooled means none */
			fprintf(stderr, "PCA %zu->%d, ", f->P, fz_cache_params(pcs)->dims);
			if (fz_cache_fit_pca(ca, f->data, nb, PCA_SAMPLE) < 0)
				goto out;
		}
		const double tp = fz_now_s(); /* projection: part of a lookup's cost */
		for (size_t j = 0; j < k->N; j += 256) {
			int n = (int)(k->N - j < 256 ? k->N - j : 256);
			if (fz_cache_project_burst(ca, f->data + j * f->P, n, keys + j * D) < 0) {
				fprintf(stderr, "\nfreeze: %s: cache on '%s': key projection failed\n",
					cfg->path, p->layer);
				goto out;
			}
		}
		const double proj_s = fz_now_s() - tp;
		if (p->kind == FZ_CACHE_LEARNED)
			fprintf(stderr, "learned (hidden %d), ", pc.hidden);
		else
			fprintf(stderr, "%s of %zu points, ", fz_cache_kind_name(p->kind), nb);
		if (fz_cache_build(ca, keys, k->pred, nb, cfg->seed + (uint64_t)i) < 0 ||
		    (fz_cache_confirmer(ca) &&
		     confirm_threshold(ca, keys, k->pred, nb, nv, cfg->confirm_keep) < 0))
			goto out;
		/* a lookup's cost per request: pooling (timed in the forward pass), projection and
		 * the validation lookups (timed here) */
		const double tl = fz_now_s();
		int arc = answers(ca, keys, k->pred, nb, nv, conf + (size_t)i * nv,
				  agree + (size_t)i * nv);
		cost_ns[i] = 1e9 * ((f->pool_s + proj_s) / (double)k->N +
				    (fz_now_s() - tl) / (double)(nv ? nv : 1));
		if (arc < 0 ||
		    answers(ca, keys, k->pred, nb + nv, nh, hconf + (size_t)i * nh,
			    hagree + (size_t)i * nh) < 0) {
			fprintf(stderr, "\nfreeze: %s: cache on '%s': lookups failed\n", cfg->path,
				p->layer);
			goto out;
		}
		fprintf(stderr, "%d entries (%.1f s)\n", fz_cache_entries(ca), fz_now_s() - tc);
		mode[i] = p->thr_mode;
		enabled[i] = p->enabled;
		/* objective: compute: an exit here is worth the share of MACs it skips */
		gain[i] = 1.0 - (double)fz_net_macs(k->net, 0, layer[i]) /
				       (double)fz_net_macs(k->net, 0, k->m->n_layers - 1);
		fixed[i] = p->threshold;
	}
	/* Thresholds, then payoff: a point whose exits save less full-model time than its lookups
	 * cost the requests reaching it is switched off, and the thresholds set again without it
	 * (its share of the budget goes to the others); until every point left pays. */
	size_t wrong;
	for (;;) {
		if ((rc = fz_cache_calibrate_thresholds(mode, enabled, fixed, L, conf, agree, nv,
							cfg->budget,
							cfg->objective_compute ? gain : NULL,
							thr)) < 0)
			goto out;
		wrong = fz_cache_cascade(enabled, thr, L, conf, agree, nv, exit);
		int worst = -1;
		for (int i = 0; i < L; i++) {
			size_t reach = 0, ex = 0;
			for (size_t j = 0; j < nv; j++) {
				reach += exit[j] >= i;
				ex += exit[j] == i;
			}
			payoff[i] = ((double)ex * k->rest_ns[layer[i]] - (double)reach * cost_ns[i]) /
				    (double)nv;
			if (enabled[i] && mode[i] == FZ_CACHE_THR_BUDGET && payoff[i] <= 0.0 &&
			    (worst < 0 || payoff[i] < payoff[worst]))
				worst = i;
		}
		if (worst < 0)
			break;
		enabled[worst] = false;
		off_by_payoff[worst] = true;
		fz_cache_set_enabled(set->caches[worst], false);
		fprintf(stderr, "calibrate: %s: %s switched off: its exits save %.0f ns per request "
				"less than its lookups cost\n",
			cfg->path, cfg->caches[worst].layer, -payoff[worst]);
	}
	for (int i = 0; i < L; i++)
		fz_cache_set_threshold(set->caches[i], thr[i]);

	const int mid = fz_model_find_layer(k->m, "block4");
	printf("config       %s (budget %.4f for %s; build %zu, validation %zu, held-out %zu)\n",
	       cfg->path, cfg->budget, cfg->objective_compute ? "compute" : "exits", nb, nv, nh);
	printf("%-9s %-7s %-14s %7s %-10s %10s %8s %8s %8s %9s %9s %10s\n", "layer", "kind",
	       "key", "entries", "mode", "threshold", "alone", "exits", "cumul", "disagree",
	       "lookup", "payoff");
	size_t cum = 0, by_mid = 0;
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
		if (mid >= 0 && layer[i] <= mid)
			by_mid += ex;
		char kd[32];
		key_desc(p, kd, sizeof(kd));
		if (p->kind == FZ_CACHE_LEARNED)
			snprintf(kd, sizeof(kd), "g%d/mlp%d", p->grid, p->hidden);
		printf("%-9s %-7s %-14s %7d %-10s %10.4g %7.2f%% %7.2f%% %7.2f%% %9zu %7.0fns "
		       "%8.0fns\n",
		       p->layer, fz_cache_kind_name(p->kind), kd, fz_cache_entries(set->caches[i]),
		       enabled[i] ? fz_cache_thr_name(p->thr_mode)
				  : off_by_payoff[i] ? "no-payoff" : "disabled",
		       thr[i], 100.0 * alone / nv, 100.0 * ex / nv, 100.0 * cum / nv, dis,
		       cost_ns[i], payoff[i]);
	}
	printf("validation   exits %.2f%%, by block4 %.2f%%, agreement %.3f%% (%zu disagree)\n",
	       100.0 * cum / nv, 100.0 * by_mid / nv, 100.0 - 100.0 * wrong / nv, wrong);
	if (nh) {
		size_t hw = fz_cache_cascade(enabled, thr, L, hconf, hagree, nh, exit), hx = 0, hm = 0;
		for (size_t j = 0; j < nh; j++) {
			hx += exit[j] < L;
			hm += exit[j] < L && mid >= 0 && layer[exit[j]] <= mid;
		}
		printf("held-out     exits %.2f%%, by block4 %.2f%%, agreement %.3f%% (%zu disagree)\n",
		       100.0 * hx / nh, 100.0 * hm / nh, 100.0 - 100.0 * hw / nh, hw);
	}
	printf("cache bytes  %zu\n", fz_cache_set_bytes(set));
	printf("payoff       per validation request: full-model time its exits skip minus its "
	       "lookups' (pooling, key, lookup) at batch %d\n", k->batch);
	if ((rc = fz_cache_set_save(set, out_path)) < 0) {
		fprintf(stderr, "freeze: %s: cannot write the snapshot: %s\n", out_path, strerror(-rc));
		goto out;
	}
	printf("snapshot     %s\n\n", out_path);
	rc = 0;
out:
	if (rc == -ENOMEM)
		fprintf(stderr, "freeze: calibrate: out of memory\n");
	free(keys), free(conf), free(agree), free(thr), free(fixed), free(enabled), free(mode);
	free(exit);
	fz_cache_set_free(set);
	fz_weights_free(hw);
	return rc;
}

int fz_cmd_calibrate(int argc, char **argv)
{
	static const struct option opts[] = {
		{"model", required_argument, 0, 'm'},	 {"cache-config", required_argument, 0, 'c'},
		{"out", required_argument, 0, 'o'},	 {"images", required_argument, 0, 'i'},
		{"labels", required_argument, 0, 'l'},	 {"build", required_argument, 0, 'B'},
		{"validation", required_argument, 0, 'V'}, {"heldout", required_argument, 0, 'H'},
		{"batch", required_argument, 0, 'b'},	 {"threads", required_argument, 0, 't'},
		{"help", no_argument, 0, 'h'},		 {0, 0, 0, 0}};
	const char *model_path = NULL, *cfg_path[MAX_CFG], *out_path[MAX_CFG];
	const char *images = FMNIST "train-images-idx3-ubyte.gz";
	const char *labels = FMNIST "train-labels-idx1-ubyte.gz";
	int batch = 64, threads = 1, build = 0, validation = 0, heldout = 0, n_cfg = 0, n_out = 0;
	int c, rc = 1;
	char err[1024];

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'm': model_path = optarg; break;
		case 'c':
			if (n_cfg == MAX_CFG) {
				fprintf(stderr, "freeze: at most %d --cache-config\n", MAX_CFG);
				return 2;
			}
			cfg_path[n_cfg++] = optarg;
			break;
		case 'o':
			if (n_out == MAX_CFG) {
				fprintf(stderr, "freeze: at most %d --out\n", MAX_CFG);
				return 2;
			}
			out_path[n_out++] = optarg;
			break;
		case 'i': images = optarg; break;
		case 'l': labels = optarg; break;
		case 'B': build = fz_opt_int("--build", optarg, 1, 1 << 30); break;
		case 'V': validation = fz_opt_int("--validation", optarg, 1, 1 << 30); break;
		case 'H': heldout = fz_opt_int("--heldout", optarg, 0, 1 << 30); break;
		case 'b': batch = fz_opt_int("--batch", optarg, 1, FZ_CACHE_MAX_BURST); break;
		case 't': threads = fz_opt_int("--threads", optarg, 1, 256); break;
		case 'h': calibrate_usage(stdout); return 0;
		default: calibrate_usage(stderr); return 2;
		}
	}
	if (!model_path || !n_cfg || n_cfg != n_out || optind != argc) {
		calibrate_usage(stderr);
		return 2;
	}

	struct fz_model *m = NULL;
	struct fz_net *net = NULL;
	struct fz_cache_config *cfg[MAX_CFG] = {0};
	int *layer[MAX_CFG] = {0};
	struct fz_cascade *cc = NULL;
	struct fz_cascade_row *rows = NULL;
	struct fz_cascade_answer *ans = NULL;
	struct fz_idx img = {0}, lab = {0};
	struct cal k = {0};
	int *pred = NULL, cut[FZ_CACHE_MAX_BURST], ncut = 0;
	double *rest_ns = NULL;

	if (!(m = fz_model_load(model_path, err, sizeof(err))) ||
	    fz_idx_load(images, &img, err, sizeof(err)) < 0 ||
	    fz_idx_load(labels, &lab, err, sizeof(err)) < 0) {
		fprintf(stderr, "freeze: %s\n", err);
		goto out;
	}
	for (int i = 0; i < n_cfg; i++) {
		if (!(cfg[i] = fz_cache_config_load(cfg_path[i], err, sizeof(err)))) {
			fprintf(stderr, "freeze: %s\n", err);
			goto out;
		}
		if (build)
			cfg[i]->build = build;
		if (validation)
			cfg[i]->validation = validation;
		if (cfg[i]->build != cfg[0]->build || cfg[i]->validation != cfg[0]->validation) {
			fprintf(stderr, "freeze: %s: build/validation differ from %s's: one pass "
					"serves them all (or set --build/--validation)\n",
				cfg_path[i], cfg_path[0]);
			goto out;
		}
		if (!(layer[i] = calloc((size_t)cfg[i]->n_caches, sizeof(int))) ||
		    map_layers(m, cfg[i], layer[i]) < 0)
			goto out;
	}
	k.m = m;
	k.nb = (size_t)cfg[0]->build;
	k.nv = (size_t)cfg[0]->validation;
	k.nh = (size_t)heldout;
	k.N = k.nb + k.nv + k.nh;
	const size_t N = k.N;
	if (img.item_size != fz_shape_size(m->input.shape) || lab.count != img.count ||
	    N > img.count) {
		fprintf(stderr,
			"freeze: %s: %zu images of %zu bytes (%zu labels); calibration needs %zu "
			"(build %zu + validation %zu + held-out %zu) of %dx%dx%d\n",
			images, img.count, img.item_size, lab.count, N, k.nb, k.nv, k.nh,
			m->input.shape.c, m->input.shape.h, m->input.shape.w);
		goto out;
	}
	if (!(net = fz_net_create(m, err, sizeof(err)))) {
		fprintf(stderr, "freeze: %s\n", err);
		goto out;
	}
	k.fp = fz_net_fingerprint(net);
	k.net = net;
	k.classes = m->layers[m->output].out.c;

	/* the (layer, grid) taps every config needs, and the layers the model is cut after */
	for (int i = 0; i < n_cfg; i++)
		for (int j = 0; j < cfg[i]->n_caches; j++) {
			const struct fz_cache_params *p = &cfg[i]->caches[j];
			if (!feat_find(&k, layer[i][j], p->grid)) {
				struct feat *nf = realloc(k.f, (size_t)(k.nf + 1) * sizeof(*nf));
				if (!nf)
					goto nomem;
				k.f = nf;
				struct fz_shape sh = m->layers[layer[i][j]].out;
				struct fz_cache_params pp;
				fz_cache_params_default(&pp);
				pp.grid = p->grid;
				pp.dims = 1; /* pooling only: no key-size limit */
				pp.size = 1;
				struct feat *f = &k.f[k.nf];
				memset(f, 0, sizeof(*f));
				f->layer = layer[i][j];
				f->grid = p->grid;
				if (!(f->pool = fz_cache_create(&pp, sh.c, sh.h, sh.w, k.classes))) {
					fprintf(stderr, "freeze: %s: grid %d does not fit '%s' (%dx%d)\n",
						cfg_path[i], p->grid, p->layer, sh.h, sh.w);
					goto out;
				}
				struct fz_act_layout lay = fz_net_layout(net, f->layer);
				if (fz_cache_layout_check(f->pool, &lay, err, sizeof(err)) < 0) {
					fprintf(stderr, "freeze: %s: cache on '%s': %s\n", cfg_path[i],
						p->layer, err);
					goto out;
				}
				k.nf++;
				f->P = (size_t)fz_cache_pooled_dim(f->pool);
				if (!(f->data = malloc(N * f->P * sizeof(float))))
					goto nomem;
				/* touched now, so page faults are not timed as pooling */
				memset(f->data, 0, N * f->P * sizeof(float));
			}
			int seen = 0;
			for (int q = 0; q < ncut; q++)
				seen |= cut[q] == layer[i][j];
			if (!seen && ncut < FZ_CACHE_MAX_BURST)
				cut[ncut++] = layer[i][j];
		}
	for (int i = 1; i < ncut; i++)
		for (int j = i; j > 0 && cut[j] < cut[j - 1]; j--) {
			int t = cut[j];
			cut[j] = cut[j - 1];
			cut[j - 1] = t;
		}
	omp_set_num_threads(threads);
	if (!(cc = fz_cascade_create(net, 0, m->n_layers - 1, cut, ncut, batch, err,
				     sizeof(err)))) {
		fprintf(stderr, "freeze: %s\n", err);
		goto out;
	}

	/* 1. one forward pass through the cascade without caches: full-model answers and every
	 *    needed pooled tap (each group's output, rows in image order: nothing exits) */
	if (!(pred = malloc(N * sizeof(int))) || !(rows = malloc((size_t)batch * sizeof(*rows))) ||
	    !(ans = malloc((size_t)batch * sizeof(*ans))))
		goto nomem;
	k.pred = pred;
	k.cut = cut;
	k.ncut = ncut;
	const struct fz_cascade_run taps = {.no_exit = true, .tap = cal_tap, .arg = &k};
	fz_cascade_timing(cc, true); /* per group: what an exit before it saves */
	double t0 = fz_now_s();
	for (size_t i = 0; i < N; i += (size_t)batch) {
		unsigned n = (unsigned)(N - i < (size_t)batch ? N - i : (size_t)batch), na = 0;
		fz_net_preprocess_u8(net, img.data + i * img.item_size, n, fz_cascade_input(cc));
		for (unsigned q = 0; q < n; q++)
			rows[q] = (struct fz_cascade_row){.user = (void *)(uintptr_t)(i + q)};
		if (fz_cascade_run(cc, &taps, rows, &n, ans, &na) < 0 || k.tap_failed) {
			fprintf(stderr, "freeze: inference failed at image %zu\n", i);
			goto out;
		}
		for (unsigned q = 0; q < na; q++)
			pred[(uintptr_t)ans[q].user] = ans[q].label;
		if ((i / batch) % 50 == 0 || i + na == N)
			fprintf(stderr, "\rcalibrate: forward %zu/%zu images (%.0f/s)   ", i + na, N,
				(i + na) / (fz_now_s() - t0));
	}
	size_t correct = 0, vcorrect = 0;
	for (size_t j = 0; j < N; j++) {
		correct += pred[j] == lab.data[j];
		vcorrect += j >= k.nb && j < k.nb + k.nv && pred[j] == lab.data[j];
	}
	fprintf(stderr, "\ncalibrate: full model accuracy %.2f%% on these %zu train images "
			"(%.2f%% on the validation part)\n",
		100.0 * correct / N, N, k.nv ? 100.0 * vcorrect / k.nv : 0.0);
	printf("model        %s (fingerprint %016llx), %s\n", m->name, (unsigned long long)k.fp,
	       images);
	if (!(rest_ns = calloc((size_t)m->n_layers, sizeof(double))))
		goto nomem;
	const struct fz_cascade_stats *cst = fz_cascade_stats(cc);
	for (int g = 0; g < fz_cascade_groups(cc); g++)
		for (int l = 0; l < fz_cascade_group_first(cc, g); l++)
			rest_ns[l] += (double)cst->group_ns[g] / (double)N;
	k.rest_ns = rest_ns;
	k.batch = batch;

	/* 2. each config: caches, thresholds, report, snapshot */
	rc = 0;
	for (int i = 0; i < n_cfg; i++)
		if (calibrate_one(&k, cfg[i], layer[i], out_path[i]) < 0)
			rc = 1;
	goto out;
nomem:
	fprintf(stderr, "freeze: calibrate: out of memory\n");
out:
	for (int i = 0; i < k.nf; i++) {
		fz_cache_free(k.f[i].pool);
		free(k.f[i].data);
	}
	free(k.f);
	for (int i = 0; i < n_cfg; i++) {
		fz_cache_config_free(cfg[i]);
		free(layer[i]);
	}
	free(pred);
	free(rest_ns);
	fz_cascade_free(cc);
	free(rows), free(ans);
	fz_net_free(net);
	fz_model_free(m);
	fz_idx_free(&img);
	fz_idx_free(&lab);
	return rc;
}
