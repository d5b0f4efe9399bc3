/* freeze eval: run requests through the model with the caches (exit at the first hit) and report the paper's measures. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cmd.h"
#include "fz_cascade.h"
#include "fz_cache.h"
#include "fz_idx.h"
#include "fz_model.h"
#include "fz_stages.h"

/* A JSON number, or null where there is none (jansson has no NaN or infinity). */
static json_t *eval_json_real(double v)
{
	return isfinite(v) ? json_real(v) : json_null();
}

static void eval_usage(FILE *f)
{
	fprintf(f,
		"usage: freeze eval --model MODEL.yaml --cache SNAPSHOT --images IDX --labels IDX\n"
		"                   [--json] [--oracle] [--online [--online-min-confidence P]]\n"
		"                   [--passes N] [--batch N]\n"
		"                   [--threads N] [--offset N] [--limit N] [--dump CSV] [--plan N]\n"
		"  Runs each request through the model with the caches, exiting at the first hit.\n"
		"  --plan N proposes N appliance stages of near-equal expected work from the\n"
		"  measured exit rates and layer-group costs (see `freeze plan`).\n"
		"  Reports the exit histogram, exits at or before block4, effective layers,\n"
		"  agreement with the full model, accuracy (and the full model's), cache bytes,\n"
		"  and mean lookup ns next to mean layer-group ns. --oracle reports the paper's\n"
		"  upper bound: exit at the first cache whose answer is the full model's.\n"
		"  --passes N sends the images N times; --online inserts the full model's answers\n"
		"  into the caches configured online, so repeated frames can exit early; only\n"
		"  answers of softmax confidence >= P (default 0: all), the appliance's\n"
		"  online_min_confidence rule.\n"
		"  --offset/--limit select images [offset, offset + limit) (e.g. a held-out part\n"
		"  of the train set for tuning: never tune on the test set).\n"
		"  --dump writes one line per request of the first pass: image index, answer,\n"
		"  exit layer (model layer index, -1 for the full model), the answer's\n"
		"  confidence (the cache's; the softmax probability for the full model), and\n"
		"  the full model's answer and probability.\n");
}

/* Weight layers (ResNet counting: conv 1, fc 1, a BasicBlock 2) of layers [0, last]. */
static int weight_layers(const struct fz_model *m, int last)
{
	int n = 0;

	for (int i = 0; i <= last; i++)
		n += m->layers[i].kind == FZ_LAYER_CONV || m->layers[i].kind == FZ_LAYER_FC ? 1
		     : m->layers[i].kind == FZ_LAYER_BLOCK				       ? 2
												       : 0;
	return n;
}

/* The per-group pass: every cache's result for every image (user = the image's index). */
struct pass1 {
	struct fz_cache_result *res; /* [cache][N] */
	size_t N;
};

static void pass1_lookup(void *arg, int cache, const struct fz_cascade_row *rows,
			 const struct fz_cache_result *r, unsigned n)
{
	struct pass1 *p = arg;
	for (unsigned k = 0; k < n; k++)
		p->res[(size_t)cache * p->N + (uintptr_t)rows[k].user] = r[k];
}

#define FZ_PLAN_MAX 16
#define FMNIST_DIR "/usr/share/datasets/fashion-mnist/"

/*
 * Stages balanced by survival (freeze plan): group s costs t_s per request that runs it
 * (layers and lookup, measured on the pass without exits) and runs for the share r_s of
 * requests that reach it (measured exits), so its expected work per request is r_s * t_s.
 * Contiguous groups are split into `n` stages minimising the largest stage's work (dynamic
 * programming over cut points). Batches travel whole between stages, so every stage's max_batch
 * is the batch; the mean batch a stage sees is the batch times the share reaching it.
 */
static void print_plan(const struct fz_cascade *cc, const struct fz_model *m, int n, int batch,
		       const int *exit, size_t NR, int L, const double *layer_t,
		       const double *lookup_t, size_t N)
{
	const int ng = fz_cascade_groups(cc);
	double w[FZ_CASCADE_MAX_GROUPS], reach[FZ_CASCADE_MAX_GROUPS], pre[FZ_CASCADE_MAX_GROUPS + 1];
	double best[FZ_PLAN_MAX + 1][FZ_CASCADE_MAX_GROUPS + 1];
	int cut[FZ_PLAN_MAX + 1][FZ_CASCADE_MAX_GROUPS + 1];
	if (n > ng)
		n = ng;
	pre[0] = 0;
	for (int s = 0; s < ng; s++) {
		size_t r = 0;
		for (size_t j = 0; j < NR; j++)
			r += exit[j] >= (s < L ? s : L);
		reach[s] = (double)r / (double)NR;
		w[s] = reach[s] * (layer_t[s] + lookup_t[s]) / (double)N * 1e9; /* ns per request */
		pre[s + 1] = pre[s] + w[s];
	}
	/* best[k][g]: the largest stage of groups [0, g) split into k stages, at its least */
	for (int g = 0; g <= ng; g++)
		best[1][g] = pre[g], cut[1][g] = 0;
	for (int k = 2; k <= n; k++)
		for (int g = k; g <= ng; g++) {
			best[k][g] = INFINITY;
			for (int c = k - 1; c < g; c++) {
				double v = fmax(best[k - 1][c], pre[g] - pre[c]);
				if (v < best[k][g])
					best[k][g] = v, cut[k][g] = c;
			}
		}
	int start[FZ_PLAN_MAX + 1];
	start[n] = ng;
	for (int k = n, g = ng; k >= 1; k--)
		g = start[k - 1] = cut[k][g];
	printf("plan         %d stages balanced by survival (expected ns per request; total %.0f)\n",
	       n, pre[ng]);
	printf("%-6s %-22s %9s %8s %10s %10s\n", "stage", "layers", "reached", "work", "share",
	       "mean batch");
	for (int k = 0; k < n; k++) {
		int a = start[k], b = start[k + 1] - 1;
		double work = pre[b + 1] - pre[a];
		char lr[2 * FZ_NAME_MAX + 4];
		snprintf(lr, sizeof(lr), "%s..%s", m->layers[fz_cascade_group_first(cc, a)].name,
			 m->layers[fz_cascade_group_last(cc, b)].name);
		printf("s%-5d %-22s %8.1f%% %6.0fns %9.1f%% %10.1f\n", k + 1, lr, 100.0 * reach[a],
		       work, 100.0 * work / pre[ng], reach[a] * batch);
	}
	printf("stages:      # for the appliance's config (lcores from 2: rx 0, tx 1)\n");
	for (int k = 0; k < n; k++) {
		int a = start[k], b = start[k + 1] - 1;
		const int fl = fz_cascade_group_first(cc, a), ll = fz_cascade_group_last(cc, b);
		printf("  - {name: s%d, lcore: %d, layers: %s%s%s, max_batch: %d}\n", k + 1, k + 2,
		       m->layers[fl].name, fl == ll ? "" : "..", fl == ll ? "" : m->layers[ll].name,
		       batch);
	}
}

int fz_cmd_eval(int argc, char **argv)
{
	static const struct option opts[] = {
		{"model", required_argument, 0, 'm'}, {"cache", required_argument, 0, 'c'},
		{"images", required_argument, 0, 'i'}, {"labels", required_argument, 0, 'l'},
		{"json", no_argument, 0, 'j'},	       {"oracle", no_argument, 0, 'O'},
		{"batch", required_argument, 0, 'b'}, {"threads", required_argument, 0, 't'},
		{"limit", required_argument, 0, 'n'}, {"online", no_argument, 0, 'o'},
		{"passes", required_argument, 0, 'p'}, {"offset", required_argument, 0, 's'},
		{"dump", required_argument, 0, 'd'}, {"help", no_argument, 0, 'h'},
		{"online-min-confidence", required_argument, 0, 'M'},
		{"plan", required_argument, 0, 'P'},
		{0, 0, 0, 0}};
	const char *model_path = NULL, *snap_path = NULL, *images = NULL, *labels = NULL;
	const char *dump = NULL;
	int batch = 64, threads = 1, limit = 0, offset = 0, json = 0, oracle = 0, online = 0, plan = 0;
	int passes = 1, c;
	double min_conf = 0;
	int rc = 1;
	char err[1024];

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'm': model_path = optarg; break;
		case 'c': snap_path = optarg; break;
		case 'i': images = optarg; break;
		case 'l': labels = optarg; break;
		case 'j': json = 1; break;
		case 'O': oracle = 1; break;
		case 'b': batch = fz_opt_int("--batch", optarg, 1, FZ_CACHE_MAX_BURST); break;
		case 't': threads = fz_opt_int("--threads", optarg, 1, 256); break;
		case 'n': limit = fz_opt_int("--limit", optarg, 1, 1 << 30); break;
		case 'o': online = 1; break;
		case 'p': passes = fz_opt_int("--passes", optarg, 1, 1000); break;
		case 's': offset = fz_opt_int("--offset", optarg, 0, 1 << 30); break;
		case 'd': dump = optarg; break;
		case 'P': plan = fz_opt_int("--plan", optarg, 1, FZ_PLAN_MAX); break;
		case 'M': {
			char *end;
			min_conf = strtod(optarg, &end);
			if (end == optarg || *end || !(min_conf >= 0 && min_conf <= 1)) {
				fprintf(stderr, "freeze: --online-min-confidence %s: not a number in "
						"[0, 1]\n", optarg);
				return 2;
			}
			break;
		}
		case 'h': eval_usage(stdout); return 0;
		default: eval_usage(stderr); return 2;
		}
	}
	if (!model_path || !snap_path || !images || !labels || optind != argc) {
		eval_usage(stderr);
		return 2;
	}

	struct fz_model *m = NULL;
	struct fz_net *net = NULL;
	struct fz_cache_set *set = NULL;
	struct fz_cascade *cc = NULL;
	struct fz_cascade_row *rows = NULL;
	struct fz_cascade_answer *ans = NULL;
	struct fz_idx img = {0}, lab = {0};
	int *layer = NULL, *pred = NULL, *exit = NULL, *answer = NULL;
	float *pconf = NULL, *aconf = NULL; /* the full model's and the answer's confidence */
	struct fz_cache_result *res = NULL;
	double *layer_t = NULL, *lookup_t = NULL;
	float *kbuf = NULL;
	const struct fz_cache_set **kset = NULL;

	if (!(m = fz_model_load(model_path, err, sizeof(err))) ||
	    fz_idx_load(images, &img, err, sizeof(err)) < 0 ||
	    fz_idx_load(labels, &lab, err, sizeof(err)) < 0) {
		fprintf(stderr, "freeze: %s\n", err);
		goto out;
	}
	if (img.item_size != fz_shape_size(m->input.shape) || lab.count != img.count ||
	    lab.item_size != 1) {
		fprintf(stderr, "freeze: %s: %zu images of %zu bytes, %zu labels: not this model's "
				"input\n", images, img.count, img.item_size, lab.count);
		goto out;
	}
	if (!(net = fz_net_create(m, err, sizeof(err))) ||
	    !(set = fz_cache_set_load(snap_path, fz_net_fingerprint(net), err, sizeof(err)))) {
		fprintf(stderr, "freeze: %s\n", err);
		goto out;
	}
	const int L = set->n_caches, classes = m->layers[m->output].out.c;
	if ((size_t)offset >= img.count) {
		fprintf(stderr, "freeze: --offset %d: %s holds %zu images\n", offset, images,
			img.count);
		goto out;
	}
	const size_t avail = img.count - (size_t)offset;
	const size_t N = limit && (size_t)limit < avail ? (size_t)limit : avail;
	const uint8_t *px = img.data + (size_t)offset * img.item_size, *gt = lab.data + offset;
	layer = calloc((size_t)L + 1, sizeof(int));
	if (!layer)
		goto nomem;
	for (int i = 0; i < L; i++) {
		const char *name = fz_cache_params(set->caches[i])->layer;
		int ch_, h, w;
		layer[i] = fz_model_find_layer(m, name);
		fz_cache_tap_shape(set->caches[i], &ch_, &h, &w);
		if (layer[i] < 0 || (i && layer[i] <= layer[i - 1]) ||
		    m->layers[layer[i]].out.c != ch_ || m->layers[layer[i]].out.h != h ||
		    m->layers[layer[i]].out.w != w) {
			fprintf(stderr, "freeze: %s: cache %d on '%s' (%dx%dx%d) does not fit this "
					"model\n", snap_path, i, name, ch_, h, w);
			goto out;
		}
		struct fz_act_layout lay = fz_net_layout(net, layer[i]);
		if (fz_cache_layout_check(set->caches[i], &lay, err, sizeof(err)) < 0) {
			fprintf(stderr, "freeze: %s: cache on '%s': %s\n", snap_path, name, err);
			goto out;
		}
	}
	if (set->n_classes != classes) {
		fprintf(stderr, "freeze: %s: %d classes, the model has %d\n", snap_path,
			set->n_classes, classes);
		goto out;
	}
	omp_set_num_threads(threads);
	if (!(cc = fz_cascade_create(net, 0, m->n_layers - 1, layer, L, batch, err,
				     sizeof(err))) ||
	    fz_cascade_use_caches(cc, set, err, sizeof(err)) < 0) {
		fprintf(stderr, "freeze: %s\n", err);
		goto out;
	}
	layer[L] = m->n_layers - 1;
	const int ng = fz_cascade_groups(cc);
	if (oracle && (online || passes > 1)) {
		fprintf(stderr, "freeze: --oracle is a bound on one pass without online updates\n");
		goto out;
	}
	const size_t KF = fz_cascade_key_floats(set);
	res = malloc((size_t)L * N * sizeof(*res));
	pred = malloc(N * sizeof(int));
	answer = malloc(N * (size_t)passes * sizeof(int));
	pconf = malloc(N * sizeof(float));
	aconf = malloc(N * (size_t)passes * sizeof(float));
	exit = malloc(N * (size_t)passes * sizeof(int));
	kbuf = malloc(((size_t)batch * KF + 1) * sizeof(float));
	kset = malloc((size_t)batch * sizeof(*kset));
	rows = malloc((size_t)batch * sizeof(*rows));
	ans = malloc((size_t)batch * sizeof(*ans));
	layer_t = calloc((size_t)ng, sizeof(double));
	lookup_t = calloc((size_t)ng, sizeof(double));
	if (!res || !pred || !answer || !pconf || !aconf || !exit || !kbuf || !kset || !rows || !ans || !layer_t ||
	    !lookup_t)
		goto nomem;

	/* warm-up: every group's plans for a full batch, outside the timings */
	struct pass1 p1 = {.res = res, .N = N};
	const struct fz_cascade_run all = {.no_exit = true, .lookup = pass1_lookup, .arg = &p1};
	unsigned nr, na;
	{
		nr = N < (size_t)batch ? (unsigned)N : (unsigned)batch, na = 0;
		fz_net_preprocess_u8(net, px, nr, fz_cascade_input(cc));
		for (unsigned k = 0; k < nr; k++)
			rows[k] = (struct fz_cascade_row){.user = (void *)(uintptr_t)k};
		if (fz_cascade_run(cc, &all, rows, &nr, ans, &na) < 0)
			goto fail_run;
	}

	/* 1. every request through every group: full-model answers, every cache's answer,
	 *    mean ns per sample of each layer group and of each lookup */
	struct fz_cascade_stats st0 = *fz_cascade_stats(cc);
	fz_cascade_timing(cc, true);
	double t_full = fz_now_s();
	for (size_t i = 0; i < N; i += (size_t)batch) {
		nr = (unsigned)(N - i < (size_t)batch ? N - i : (size_t)batch), na = 0;
		fz_net_preprocess_u8(net, px + i * img.item_size, nr, fz_cascade_input(cc));
		for (unsigned k = 0; k < nr; k++)
			rows[k] = (struct fz_cascade_row){.user = (void *)(uintptr_t)(i + k)};
		if (fz_cascade_run(cc, &all, rows, &nr, ans, &na) < 0)
			goto fail_run;
		for (unsigned k = 0; k < na; k++) {
			pred[(uintptr_t)ans[k].user] = ans[k].label;
			pconf[(uintptr_t)ans[k].user] = ans[k].confidence;
		}
	}
	t_full = fz_now_s() - t_full;
	fz_cascade_timing(cc, false);
	const struct fz_cascade_stats *st = fz_cascade_stats(cc);
	if (st->lookup_errors != st0.lookup_errors) {
		fprintf(stderr, "freeze: %llu cache lookups failed\n",
			(unsigned long long)(st->lookup_errors - st0.lookup_errors));
		goto out;
	}
	for (int s = 0; s < ng; s++) {
		layer_t[s] = (double)(st->group_ns[s] - st0.group_ns[s]) * 1e-9;
		lookup_t[s] = (double)(st->lookup_ns[s] - st0.lookup_ns[s]) * 1e-9;
	}
	/* the full model's time: the pass without its lookups */
	for (int s = 0; s < ng; s++)
		t_full -= lookup_t[s];

	/* 2. exits: the first hit (or, --oracle, the first cache answering the full model) */
	for (size_t j = 0; j < N; j++) {
		exit[j] = L;
		answer[j] = pred[j];
		aconf[j] = pconf[j];
		for (int s = 0; s < L; s++) {
			const struct fz_cache_result *r = &res[(size_t)s * N + j];
			if (oracle ? r->label == pred[j] : r->hit) {
				exit[j] = s;
				answer[j] = r->label;
				aconf[j] = r->conf;
				break;
			}
		}
	}

	/* 3. the requests (passes x the images) through the cascade, as the appliance runs them:
	 *    the batch closes up after each exit. With --online, the full model's answers of at
	 *    least --online-min-confidence are inserted into the online caches (the appliance's
	 *    rule), and this run's exits are the ones reported. */
	const size_t NR = N * (size_t)passes;
	size_t mismatch = 0, inserts = 0;
	double t_casc = 0;
	if (!oracle) {
		for (size_t j = N; j < NR && !online; j++) {
			exit[j] = exit[j % N];
			answer[j] = answer[j % N];
			aconf[j] = aconf[j % N];
		}
		fz_cascade_online(cc, online, (float)min_conf);
		const uint64_t ins0 = fz_cascade_stats(cc)->online_inserts;
		const uint64_t err0 = fz_cascade_stats(cc)->lookup_errors;
		for (size_t i = 0, n0; i < NR; i += n0) {
			/* a batch never wraps around the image set: cut it at the end of a pass */
			n0 = NR - i < (size_t)batch ? NR - i : (size_t)batch;
			if (i % N + n0 > N)
				n0 = N - i % N;
			nr = (unsigned)n0, na = 0;
			double t0 = fz_now_s();
			fz_net_preprocess_u8(net, px + (i % N) * img.item_size, nr,
					     fz_cascade_input(cc));
			for (unsigned k = 0; k < nr; k++) {
				kset[k] = NULL;
				rows[k] = (struct fz_cascade_row){.user = (void *)(uintptr_t)(i + k),
					.keys = online ? kbuf + k * KF : NULL, .keys_set = &kset[k]};
			}
			if (fz_cascade_run(cc, NULL, rows, &nr, ans, &na) < 0)
				goto fail_run;
			t_casc += fz_now_s() - t0;
			for (unsigned k = 0; k < na; k++) {
				size_t rq = (uintptr_t)ans[k].user;
				int e = ans[k].cache < 0 ? L : ans[k].cache;
				if (online) {
					exit[rq] = e;
					answer[rq] = ans[k].label;
					aconf[rq] = ans[k].confidence;
				}
				mismatch += e != exit[rq] || (e == L && ans[k].label != pred[rq % N]);
			}
		}
		inserts = fz_cascade_stats(cc)->online_inserts - ins0;
		if (fz_cascade_stats(cc)->lookup_errors != err0) {
			fprintf(stderr, "freeze: cache lookups failed\n");
			goto out;
		}
	}
	if (plan && !oracle)
		print_plan(cc, m, plan, batch, exit, NR, L, layer_t, lookup_t, N);
	/* 4. report */
	const int mid = fz_model_find_layer(m, "block4");
	const int wl_all = weight_layers(m, m->n_layers - 1);
	const double macs_all = (double)fz_net_macs(net, 0, m->n_layers - 1);
	size_t agree = 0, correct = 0, full_correct = 0, by_mid = 0;
	size_t *hist = calloc((size_t)L + 1, sizeof(size_t));
	if (!hist)
		goto nomem;
	double eff_layers = 0, eff_macs = 0;
	for (size_t j = 0; j < NR; j++) {
		hist[exit[j]]++;
		agree += answer[j] == pred[j % N];
		correct += answer[j] == gt[j % N];
		full_correct += pred[j % N] == gt[j % N];
		by_mid += exit[j] < L && mid >= 0 && layer[exit[j]] <= mid;
		eff_layers += (double)weight_layers(m, layer[exit[j]]) / wl_all;
		eff_macs += (double)fz_net_macs(net, 0, layer[exit[j]]) / macs_all;
	}
	if (dump) {
		/* per request of pass 1, to compare with the appliance's answers */
		FILE *df = fopen(dump, "w");
		if (!df) {
			fprintf(stderr, "freeze: %s: %s\n", dump, strerror(errno));
			free(hist);
			goto out;
		}
		fprintf(df, "index,label,exit_layer,confidence,full_label,full_confidence\n");
		for (size_t j = 0; j < N; j++)
			fprintf(df, "%zu,%d,%d,%.6g,%d,%.6g\n", (size_t)offset + j, answer[j],
				exit[j] < L ? layer[exit[j]] : -1, aconf[j], pred[j], pconf[j]);
		if (fclose(df) != 0) {
			fprintf(stderr, "freeze: %s: %s\n", dump, strerror(errno));
			free(hist);
			goto out;
		}
	}
	double lookup_sum = 0, layer_sum = 0;
	for (int s = 0; s < ng; s++) {
		layer_sum += layer_t[s];
		lookup_sum += lookup_t[s];
	}
	const double nsd = 1e9 / (double)N; /* pass 1: every image once */
	/* per point: precision of its exits, and payoff per request: the full-model time its
	 * exits skip minus its lookups' cost for every request reaching it (a point switched off
	 * runs none) */
	double *prec = calloc((size_t)L + 1, sizeof(double));
	double *payoff = calloc((size_t)L + 1, sizeof(double));
	if (!prec || !payoff) {
		free(prec), free(payoff), free(hist);
		goto nomem;
	}
	for (int s = 0; s < L; s++) {
		size_t ex = 0, ok = 0, reach = 0;
		for (size_t j = 0; j < NR; j++) {
			reach += exit[j] >= s;
			ex += exit[j] == s;
			ok += exit[j] == s && answer[j] == pred[j % N];
		}
		double rest = 0;
		for (int s2 = s + 1; s2 < ng; s2++)
			rest += layer_t[s2] * nsd;
		prec[s] = ex ? (double)ok / (double)ex : NAN;
		payoff[s] = fz_cache_enabled(set->caches[s])
				    ? ((double)ex * rest - (double)reach * lookup_t[s] * nsd) / (double)NR
				    : 0.0;
	}
	if (json) {
		/* per-layer objects first (keys are layer names, as in the table), then the report */
		json_t *hist_o = json_object(), *lookup_o = json_object(), *layer_o = json_object();
		json_t *lol_o = json_object(), *los_o = json_object(), *o = NULL;
		json_t *pts_o = json_object();
		json_error_t je;
		int bad = !hist_o || !lookup_o || !layer_o || !lol_o || !los_o || !pts_o;
		for (int s = 0; !bad && s < L; s++)
			bad |= json_object_set_new(
				pts_o, fz_cache_params(set->caches[s])->layer,
				json_pack("{s:s, s:b, s:o, s:o, s:o}", "kind",
					  fz_cache_kind_name(fz_cache_params(set->caches[s])->kind),
					  "enabled", fz_cache_enabled(set->caches[s]), "hit_rate",
					  eval_json_real((double)hist[s] / NR), "precision",
					  eval_json_real(prec[s]), "payoff_ns", eval_json_real(payoff[s]))) < 0;
		for (int s = 0; !bad && s <= L; s++)
			bad |= json_object_set_new(hist_o,
						   s < L ? fz_cache_params(set->caches[s])->layer
							 : "full",
						   json_integer((json_int_t)hist[s])) < 0;
		for (int s = 0; !bad && s < ng; s++)
			bad |= json_object_set_new(layer_o, m->layers[fz_cascade_group_last(cc, s)].name,
						   eval_json_real(layer_t[s] * nsd)) < 0;
		for (int s = 0; !bad && s < L; s++) {
			const char *name = fz_cache_params(set->caches[s])->layer;
			double rest = 0;
			for (int s2 = s + 1; s2 < ng; s2++)
				rest += layer_t[s2];
			bad |= json_object_set_new(lookup_o, name,
						   eval_json_real(lookup_t[s] * nsd)) < 0 ||
			       json_object_set_new(lol_o, name,
						   eval_json_real(lookup_t[s] / layer_t[s])) < 0 ||
			       json_object_set_new(los_o, name,
						   eval_json_real(lookup_t[s] / rest)) < 0;
		}
		snprintf(je.text, sizeof(je.text), "a layer name is not UTF-8, or out of memory");
		if (!bad) {
			/* o: the per-layer objects and the numbers are stolen, released on error */
			o = json_pack_ex(&je, 0,
					 "{s:s, s:s, s:s, s:s, s:I, s:i, s:i,"
					 " s:o, s:o, s:o, s:o,"
					 " s:o, s:o, s:o, s:I,"
					 " s:o, s:o, s:o, s:o, s:o, s:o, s:o}",
					 "model", m->name, "snapshot", snap_path, "images", images,
					 "mode", oracle ? "oracle" : online ? "cache+online" : "cache",
					 "requests", (json_int_t)NR, "batch", batch, "threads", threads,
					 "exit_histogram", hist_o,
					 "exit_by_mid", eval_json_real((double)by_mid / NR),
					 "effective_layers", eval_json_real(eff_layers / NR),
					 "effective_macs", eval_json_real(eff_macs / NR),
					 "agreement", eval_json_real((double)agree / NR),
					 "accuracy", eval_json_real((double)correct / NR),
					 "full_model_accuracy", eval_json_real((double)full_correct / NR),
					 "cache_bytes", (json_int_t)fz_cache_set_bytes(set),
					 "lookup_ns", lookup_o,
					 "lookup_ns_total", eval_json_real(lookup_sum * nsd),
					 "layer_ns", layer_o,
					 "layer_ns_total", eval_json_real(layer_sum * nsd),
					 "lookup_over_layer", lol_o, "lookup_over_saved", los_o,
					 "images_per_s_full", eval_json_real(N / t_full));
			hist_o = lookup_o = layer_o = lol_o = los_o = NULL;
		}
		if (o)
			bad |= json_object_set_new(o, "points", pts_o) < 0 ||
			       json_object_set_new(o, "isa", json_string(fz_stages_isa())) < 0 ||
			       json_object_set_new(o, "cache_isa", json_string(fz_cache_isa())) < 0;
		if (o && !oracle)
			bad |= json_object_set_new(o, "images_per_s_cascade",
						   eval_json_real(NR / t_casc)) < 0 ||
			       json_object_set_new(o, "cascade_mismatch",
						   json_integer((json_int_t)mismatch)) < 0 ||
			       json_object_set_new(o, "passes", json_integer(passes)) < 0 ||
			       json_object_set_new(o, "online_inserts",
						   json_integer((json_int_t)inserts)) < 0 ||
			       json_object_set_new(o, "online_min_confidence",
						   json_real(online ? min_conf : 0)) < 0;
		json_decref(hist_o), json_decref(lookup_o), json_decref(layer_o);
		json_decref(lol_o), json_decref(los_o);
		if (!o)
			json_decref(pts_o);
		if (o == NULL || bad || json_dumpf(o, stdout, JSON_REAL_PRECISION(10)) < 0) {
			fprintf(stderr, "freeze: --json: cannot write the report: %s\n",
				o == NULL || bad ? je.text : strerror(errno));
			json_decref(o);
			free(hist), free(prec), free(payoff);
			goto out;
		}
		putchar('\n');
		json_decref(o);
	} else {
		printf("model        %s, snapshot %s%s\n", m->name, snap_path,
		       oracle ? " (ORACLE: exit where the cache's answer is the full model's)" : "");
		printf("requests     %zu from %s (%d pass%s%s, batch %d, %d thread%s)\n", NR, images,
		       passes, passes == 1 ? "" : "es", online ? ", online updates" : "", batch,
		       threads, threads == 1 ? "" : "s");
		printf("%-9s %-7s %9s %8s %8s %9s %9s %11s %11s %7s %9s\n", "exit at", "kind",
		       "threshold", "exits", "cumul", "disagree", "precision", "lookup ns",
		       "layer ns", "ratio", "payoff");
		size_t cum = 0;
		for (int s = 0; s <= L; s++) {
			size_t dis = 0;
			for (size_t j = 0; j < NR; j++)
				dis += exit[j] == s && answer[j] != pred[j % N];
			cum += hist[s];
			if (s < L) {
				const struct fz_cache *ca = set->caches[s];
				printf("%-9s %-7s %9.4g %7.2f%% %7.2f%% %9zu %8.2f%% %11.0f %11.0f "
				       "%6.2f%% %7.0fns%s\n",
				       fz_cache_params(ca)->layer,
				       fz_cache_kind_name(fz_cache_params(ca)->kind),
				       fz_cache_threshold(ca), 100.0 * hist[s] / NR, 100.0 * cum / NR,
				       dis, 100.0 * prec[s], lookup_t[s] * nsd, layer_t[s] * nsd,
				       100.0 * lookup_t[s] / layer_t[s], payoff[s],
				       fz_cache_enabled(ca) ? "" : " (off)");
			} else {
				printf("%-9s %-7s %9s %7.2f%% %7.2f%% %9s %9s %11s %11.0f\n", "full", "-",
				       "-", 100.0 * hist[s] / NR, 100.0 * cum / NR, "-", "-", "-",
				       layer_t[s] * nsd);
			}
		}
		printf("exit_by_mid  %.2f%% of requests exit at or before block4\n",
		       100.0 * by_mid / NR);
		printf("effective    %.3f of the layers (%.3f of the MACs)\n", eff_layers / NR,
		       eff_macs / NR);
		printf("agreement    %.3f%% with the full model (%zu disagree)\n", 100.0 * agree / NR,
		       NR - agree);
		printf("accuracy     %.2f%% (full model %.2f%%)\n", 100.0 * correct / NR,
		       100.0 * full_correct / NR);
		printf("cache bytes  %zu\n", fz_cache_set_bytes(set));
		printf("ns/request   lookups %.0f, layer groups %.0f (lookups %.2f%% of compute)\n",
		       lookup_sum * nsd, layer_sum * nsd, 100.0 * lookup_sum / layer_sum);
		if (!oracle)
			printf("images/s     full model %.0f, cascade %.0f (%.2fx)%s\n", N / t_full,
			       NR / t_casc, (NR / t_casc) / (N / t_full),
			       mismatch ? " -- cascade differed from the per-stage pass" : "");
		if (online)
			printf("online       %zu inserts (full-model answers of confidence >= %g)\n",
			       inserts, min_conf);
	}
	free(hist), free(prec), free(payoff);
	rc = 0;
	goto out;
fail_run:
	fprintf(stderr, "freeze: inference failed\n");
	goto out;
nomem:
	fprintf(stderr, "freeze: eval: out of memory\n");
out:
	free(res), free(pred), free(answer), free(pconf), free(aconf), free(exit), free(layer_t), free(lookup_t);
	free(kbuf), free(kset), free(rows), free(ans);
	free(layer);
	fz_cascade_free(cc);
	fz_cache_set_free(set);
	fz_net_free(net);
	fz_model_free(m);
	fz_idx_free(&img);
	fz_idx_free(&lab);
	return rc;
}

/* freeze plan: eval --plan on the validation split of the train set (never the test set). */
int fz_cmd_plan(int argc, char **argv)
{
	char *av[64];
	int ac = 0, lcores = 0, images = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			printf("usage: freeze plan --model MODEL.yaml --cache SNAPSHOT --stages N\n"
			       "                   [--batch N] [eval options]\n"
			       "  Proposes N appliance stages (layer ranges and max_batch) with near-equal\n"
			       "  expected work per request: each layer group's measured cost times the\n"
			       "  share of requests that reach it (E3's insight). Runs on train[50k, 60k),\n"
			       "  the split thresholds were set on, unless --images is given.\n");
			return 0;
		}
		images |= !strcmp(argv[i], "--images");
		if (!strcmp(argv[i], "--stages") && i + 1 < argc) {
			lcores = fz_opt_int("--stages", argv[++i], 1, FZ_PLAN_MAX);
			continue;
		}
	}
	if (!lcores || argc > 48) {
		fprintf(stderr, "freeze plan: --stages N is required (freeze plan --help)\n");
		return 2;
	}
	static char plan[16];
	snprintf(plan, sizeof(plan), "%d", lcores);
	av[ac++] = argv[0];
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--stages")) {
			i++;
			continue;
		}
		av[ac++] = argv[i];
	}
	if (!images) {
		av[ac++] = "--images";
		av[ac++] = FMNIST_DIR "train-images-idx3-ubyte.gz";
		av[ac++] = "--labels";
		av[ac++] = FMNIST_DIR "train-labels-idx1-ubyte.gz";
		av[ac++] = "--offset";
		av[ac++] = "50000";
		av[ac++] = "--limit";
		av[ac++] = "10000";
	}
	av[ac++] = "--plan";
	av[ac++] = plan;
	av[ac] = NULL;
	return fz_cmd_eval(ac, av);
}
