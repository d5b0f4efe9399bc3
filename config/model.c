/* Freeze model graph loader: YAML -> validated, topologically sorted layers with shapes. */
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fz_model.h"
#include "fz_yaml.h"

#define BN_EPS_DEFAULT 1e-5f

static const char *const kind_names[] = {
#define FZ_LK_NAME(e, s) [FZ_LAYER_##e] = s,
	FZ_FOREACH_LAYER_KIND(FZ_LK_NAME)
#undef FZ_LK_NAME
};

const char *fz_layer_kind_name(enum fz_layer_kind k)
{
	if ((unsigned)k >= FZ_LAYER__COUNT)
		return "unknown";
	return kind_names[k];
}

int fz_model_find_layer(const struct fz_model *m, const char *name)
{
	for (int i = 0; i < m->n_layers; i++)
		if (strcmp(m->layers[i].name, name) == 0)
			return i;
	return -1;
}

void fz_model_free(struct fz_model *m)
{
	if (m == NULL)
		return;
	free(m->layers);
	free(m);
}

/* Allowed keys, per layer kind (the add layer reads `inputs`, the others `input`). */
#define LAYER_KEYS_COMMON "name", "kind", "shape"
static const char *const *const layer_keys[FZ_LAYER__COUNT] = {
	[FZ_LAYER_CONV] = (const char *const[]){LAYER_KEYS_COMMON, "input", "out_channels",
						 "kernel", "stride", "pad", "pads", "bias", "groups",
						 NULL},
	[FZ_LAYER_BATCHNORM] = (const char *const[]){LAYER_KEYS_COMMON, "input", "eps", NULL},
	[FZ_LAYER_RELU] = (const char *const[]){LAYER_KEYS_COMMON, "input", NULL},
	[FZ_LAYER_ADD] = (const char *const[]){LAYER_KEYS_COMMON, "inputs", NULL},
	[FZ_LAYER_AVGPOOL] = (const char *const[]){LAYER_KEYS_COMMON, "input", "kernel", "stride",
						    NULL},
	[FZ_LAYER_GAP] = (const char *const[]){LAYER_KEYS_COMMON, "input", NULL},
	[FZ_LAYER_FC] = (const char *const[]){LAYER_KEYS_COMMON, "input", "out_features", NULL},
	[FZ_LAYER_BLOCK] = (const char *const[]){LAYER_KEYS_COMMON, "input", "out_channels",
						  "stride", "eps", NULL},
	[FZ_LAYER_MAXPOOL] = (const char *const[]){LAYER_KEYS_COMMON, "input", "kernel", "stride",
						    "pad", "pads", NULL},
};

static const char *const top_keys[] = {"name", "weights", "input", "layers", "output", NULL};
static const char *const input_keys[] = {"name", "dtype", "shape", "mean", "std", "scale", NULL};

/* A layer while loading: its nodes (for messages) and its inputs as indices in file order. */
struct ldef {
	struct fz_layer l;
	const struct fz_ynode *map;
	const struct fz_ynode *name_node;
	const struct fz_ynode *in_node[2]; /* the tensor names */
	const struct fz_ynode *inputs_node; /* add: the [a, b] sequence */
	const struct fz_ynode *shape_node;  /* declared `shape:`, or NULL */
	const struct fz_ynode *kernel_node;
	const struct fz_ynode *groups_node;
	struct fz_shape declared;
	int in_file[2]; /* file index of each input layer, or FZ_INPUT_TENSOR */
	int topo;       /* position in topological order */
};

struct loader {
	struct fz_ydoc *doc;
	struct fz_model *m;
	struct ldef *defs;
	int n;
};

static void shape_str(struct fz_shape s, char *buf, size_t size)
{
	snprintf(buf, size, "[%d, %d, %d]", s.c, s.h, s.w);
}

/* A finite float; positive when `positive`. */
static int node_float(struct fz_ydoc *doc, const struct fz_ynode *node, const char *what,
		      bool positive, float *out)
{
	double v;
	int r = fz_ynode_float(doc, node, &v);
	if (r)
		return r;
	if (fabs(v) > FLT_MAX)
		return fz_yerr(doc, node, "%s: %g is out of range for f32", what, v);
	if (positive && !(v > 0))
		return fz_yerr(doc, node, "%s: expected a positive number, found %g", what, v);
	*out = (float)v;
	return 0;
}

/* A [C, H, W] sequence of positive integers. */
static int node_shape(struct fz_ydoc *doc, const struct fz_ynode *node, struct fz_shape *out)
{
	int v[3];
	size_t n = 0;
	if (node->type == FZ_YNODE_SEQ && node->n != 3)
		return fz_yerr(doc, node, "shape: expected [C, H, W] (3 integers), found %zu items",
			       node->n);
	int r = fz_ynode_int_list(doc, node, v, 3, &n);
	if (r)
		return r;
	for (int i = 0; i < 3; i++)
		if (v[i] <= 0)
			return fz_yerr(doc, node->items[i],
				       "shape: expected positive sizes, found %d", v[i]);
	*out = (struct fz_shape){v[0], v[1], v[2]};
	return 0;
}

/* A name: a non-empty string that fits FZ_NAME_MAX. */
static int node_name(struct fz_ydoc *doc, const struct fz_ynode *node, char *out)
{
	int r = fz_ynode_str(doc, node, out, FZ_NAME_MAX);
	if (r == 0 && out[0] == '\0')
		r = fz_yerr(doc, node, "expected a non-empty name");
	return r;
}

static int parse_input(struct loader *ld, const struct fz_ynode *map)
{
	struct fz_ydoc *doc = ld->doc;
	struct fz_model_input *in = &ld->m->input;
	struct fz_ynode *v;
	int r;
	fz_ydoc_set_context(doc, "input");
	if ((r = fz_ymap_check_keys(doc, map, input_keys)))
		return r;
	if ((r = fz_ymap_find(doc, map, "name", FZ_Y_REQUIRED, &v)) ||
	    (r = node_name(doc, v, in->name)))
		return r;

	char dtype[16];
	if ((r = fz_ymap_find(doc, map, "dtype", FZ_Y_REQUIRED, &v)))
		return r;
	if ((r = fz_ynode_str(doc, v, dtype, sizeof(dtype))) == 0 && strcmp(dtype, "f32") != 0)
		r = fz_yerr(doc, v, "unsupported dtype '%s'; expected f32", dtype);
	if (r)
		return r;

	if ((r = fz_ymap_find(doc, map, "shape", FZ_Y_REQUIRED, &v)) ||
	    (r = node_shape(doc, v, &in->shape)))
		return r;
	int c = in->shape.c;

	static const char *const norm_keys[] = {"mean", "std"};
	for (int k = 0; k < 2; k++) {
		float *dst = k == 0 ? in->mean : in->std;
		if ((r = fz_ymap_find(doc, map, norm_keys[k], FZ_Y_REQUIRED, &v)))
			return r;
		if (v->type == FZ_YNODE_SEQ && v->n != 1 && v->n != (size_t)c)
			return fz_yerr(doc, v,
				       "%s has %zu values; expected 1 or %d (one per channel)",
				       norm_keys[k], v->n, c);
		if (v->type == FZ_YNODE_SEQ && v->n > FZ_MAX_CHANNELS_NORM)
			return fz_yerr(doc, v, "%s: per-channel values support at most %d channels",
				       norm_keys[k], FZ_MAX_CHANNELS_NORM);
		double vals[FZ_MAX_CHANNELS_NORM];
		size_t n = 0;
		if ((r = fz_ynode_float_list(doc, v, vals, FZ_MAX_CHANNELS_NORM, &n)))
			return r;
		if (n == 0)
			return fz_yerr(doc, v, "%s has no values; expected 1 or %d", norm_keys[k],
				       c);
		for (size_t i = 0; i < n; i++)
			if ((r = node_float(doc, v->items[i], norm_keys[k], k == 1, &dst[i])))
				return r;
		for (size_t i = n; i < FZ_MAX_CHANNELS_NORM; i++) /* one value: every channel */
			dst[i] = n == 1 ? dst[0] : 0.0f;
	}

	in->scale = 1.0f;
	if ((r = fz_ymap_find(doc, map, "scale", FZ_Y_OPTIONAL, &v)))
		return r;
	if (v != NULL && (r = node_float(doc, v, "scale", true, &in->scale)))
		return r;
	fz_ydoc_set_context(doc, NULL);
	return 0;
}

/* `pads: [top, left, bottom, right]` (when given; `pad` must not be) over *pads. */
static int parse_pads(struct fz_ydoc *doc, const struct fz_ynode *map, int kernel, int *pads)
{
	const struct fz_ynode *v = fz_ymap_get(map, "pads");
	int p[4];
	size_t n = 0;
	if (!v)
		return 0;
	if (fz_ymap_get(map, "pad"))
		return fz_yerr(doc, v, "give 'pad' or 'pads', not both");
	int r = fz_ynode_int_list(doc, v, p, 4, &n);
	if (r)
		return r;
	if (n != 4)
		return fz_yerr(doc, v, "expected [top, left, bottom, right], found %zu values", n);
	for (int i = 0; i < 4; i++)
		if (p[i] < 0 || p[i] >= kernel)
			return fz_yerr(doc, v, "expected pads in 0..%d (below the kernel), found %d",
				       kernel - 1, p[i]);
	memcpy(pads, p, sizeof(p));
	return 0;
}

static int parse_kind(struct fz_ydoc *doc, const struct fz_ynode *node, enum fz_layer_kind *out)
{
	char kind[FZ_NAME_MAX];
	int r = fz_ynode_str(doc, node, kind, sizeof(kind));
	if (r)
		return r;
	for (int k = 0; k < FZ_LAYER__COUNT; k++) {
		if (strcmp(kind, kind_names[k]) == 0) {
			*out = (enum fz_layer_kind)k;
			return 0;
		}
	}
	char list[256];
	size_t off = 0;
	for (int k = 0; k < FZ_LAYER__COUNT; k++)
		off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s", k ? ", " : "",
					kind_names[k]);
	return fz_yerr(doc, node, "unknown layer kind '%s'; expected one of: %s", kind, list);
}

static int parse_layer(struct loader *ld, int idx, const struct fz_ynode *map)
{
	struct fz_ydoc *doc = ld->doc;
	struct ldef *d = &ld->defs[idx];
	struct fz_layer *l = &d->l;
	struct fz_ynode *v;
	char fbuf[64];
	int r;

	d->map = map;
	l->line = map->line;
	l->col = map->col;
	fz_ydoc_set_context(doc, "layer %d", idx + 1);
	if (map->type != FZ_YNODE_MAP)
		return fz_yerr(doc, map, "expected a mapping with name, kind and input, found %s",
			       fz_ynode_describe(map, fbuf, sizeof(fbuf)));
	if ((r = fz_ymap_find(doc, map, "name", FZ_Y_REQUIRED, &v)) ||
	    (r = node_name(doc, v, l->name)))
		return r;
	d->name_node = v;
	fz_ydoc_set_context(doc, "layer '%s'", l->name);
	if ((r = fz_ymap_find(doc, map, "kind", FZ_Y_REQUIRED, &v)) ||
	    (r = parse_kind(doc, v, &l->kind)))
		return r;
	if ((r = fz_ymap_check_keys(doc, map, layer_keys[l->kind])))
		return r;

	if (l->kind == FZ_LAYER_ADD) {
		if ((r = fz_ymap_find(doc, map, "inputs", FZ_Y_REQUIRED, &v)))
			return r;
		if (v->type != FZ_YNODE_SEQ)
			return fz_yerr(doc, v,
				       "inputs: expected a sequence of 2 tensor names, found %s",
				       fz_ynode_describe(v, fbuf, sizeof(fbuf)));
		if (v->n != 2)
			return fz_yerr(doc, v,
				       "inputs: add takes exactly 2 tensor names, found %zu", v->n);
		d->inputs_node = v;
		d->in_node[0] = v->items[0];
		d->in_node[1] = v->items[1];
		l->n_inputs = 2;
	} else {
		if ((r = fz_ymap_find(doc, map, "input", FZ_Y_REQUIRED, &v)))
			return r;
		d->in_node[0] = v;
		l->n_inputs = 1;
	}
	for (int i = 0; i < l->n_inputs; i++) {
		char name[FZ_NAME_MAX];
		if ((r = node_name(doc, d->in_node[i], name)))
			return r;
	}

	if ((r = fz_ymap_find(doc, map, "shape", FZ_Y_OPTIONAL, &v)))
		return r;
	if (v != NULL && (r = node_shape(doc, v, &d->declared)))
		return r;
	d->shape_node = v;

	l->eps = BN_EPS_DEFAULT;
	switch (l->kind) {
	case FZ_LAYER_CONV:
		if ((r = fz_ymap_int_pos(doc, map, "out_channels", FZ_Y_REQUIRED,
					 &l->out_channels)) ||
		    (r = fz_ymap_int_pos(doc, map, "kernel", FZ_Y_REQUIRED, &l->kernel)))
			return r;
		d->kernel_node = fz_ymap_get(map, "kernel");
		l->stride = 1;
		l->pad = l->kernel / 2;
		l->bias = false;
		l->groups = 1;
		if ((r = fz_ymap_int_pos(doc, map, "stride", FZ_Y_OPTIONAL, &l->stride)) ||
		    (r = fz_ymap_int_min(doc, map, "pad", FZ_Y_OPTIONAL, 0, &l->pad)) ||
		    (r = fz_ymap_bool(doc, map, "bias", FZ_Y_OPTIONAL, &l->bias)) ||
		    (r = fz_ymap_int_pos(doc, map, "groups", FZ_Y_OPTIONAL, &l->groups)))
			return r;
		d->groups_node = fz_ymap_get(map, "groups");
		for (int i = 0; i < 4; i++)
			l->pads[i] = l->pad;
		if ((r = parse_pads(doc, map, l->kernel, l->pads)))
			return r;
		break;
	case FZ_LAYER_BLOCK:
		if ((r = fz_ymap_int_pos(doc, map, "out_channels", FZ_Y_REQUIRED,
					 &l->out_channels)))
			return r;
		l->kernel = 3;
		l->pad = 1;
		l->stride = 1;
		if ((r = fz_ymap_int_pos(doc, map, "stride", FZ_Y_OPTIONAL, &l->stride)))
			return r;
		/* a block's batchnorms take `eps` too */
		__attribute__((fallthrough));
	case FZ_LAYER_BATCHNORM:
		if ((r = fz_ymap_find(doc, map, "eps", FZ_Y_OPTIONAL, &v)))
			return r;
		if (v != NULL && (r = node_float(doc, v, "eps", true, &l->eps)))
			return r;
		break;
	case FZ_LAYER_AVGPOOL:
	case FZ_LAYER_MAXPOOL:
		if ((r = fz_ymap_int_pos(doc, map, "kernel", FZ_Y_REQUIRED, &l->pool_kernel)))
			return r;
		d->kernel_node = fz_ymap_get(map, "kernel");
		l->pool_stride = l->pool_kernel;
		l->pool_pad = 0;
		if ((r = fz_ymap_int_pos(doc, map, "stride", FZ_Y_OPTIONAL, &l->pool_stride)))
			return r;
		if (l->kind == FZ_LAYER_MAXPOOL &&
		    (r = fz_ymap_int_min(doc, map, "pad", FZ_Y_OPTIONAL, 0, &l->pool_pad)))
			return r;
		if (l->pool_pad >= l->pool_kernel)
			return fz_yerr(doc, fz_ymap_get(map, "pad"),
				       "expected a pad below the kernel (%d), found %d", l->pool_kernel,
				       l->pool_pad);
		for (int i = 0; i < 4; i++)
			l->pads[i] = l->pool_pad;
		if (l->kind == FZ_LAYER_MAXPOOL && (r = parse_pads(doc, map, l->pool_kernel, l->pads)))
			return r;
		break;
	case FZ_LAYER_FC:
		if ((r = fz_ymap_int_pos(doc, map, "out_features", FZ_Y_REQUIRED,
					 &l->out_features)))
			return r;
		break;
	default:
		break;
	}
	fz_ydoc_set_context(doc, NULL);
	return 0;
}

/* Names: unique among the layers and the input; then each input reference resolved. */
static int resolve_names(struct loader *ld)
{
	struct fz_ydoc *doc = ld->doc;
	const char *input = ld->m->input.name;
	for (int i = 0; i < ld->n; i++) {
		struct ldef *d = &ld->defs[i];
		if (strcmp(d->l.name, input) == 0)
			return fz_yerr(doc, d->name_node,
				       "duplicate name '%s': it already names the model input",
				       d->l.name);
		for (int j = 0; j < i; j++)
			if (strcmp(d->l.name, ld->defs[j].l.name) == 0)
				return fz_yerr(
					doc, d->name_node,
					"duplicate layer name '%s' (first defined at line %d, "
					"column %d)",
					d->l.name, ld->defs[j].name_node->line,
					ld->defs[j].name_node->col);
	}
	for (int i = 0; i < ld->n; i++) {
		struct ldef *d = &ld->defs[i];
		for (int k = 0; k < d->l.n_inputs; k++) {
			const char *ref = d->in_node[k]->str;
			int found = -2;
			if (strcmp(ref, input) == 0)
				found = FZ_INPUT_TENSOR;
			for (int j = 0; j < ld->n && found == -2; j++)
				if (strcmp(ref, ld->defs[j].l.name) == 0)
					found = j;
			if (found == -2)
				return fz_yerr(
					doc, d->in_node[k],
					"layer '%s': undefined tensor '%s'; expected the input "
					"'%s' or a layer name",
					d->l.name, ref, input);
			d->in_file[k] = found;
		}
	}
	return 0;
}

/* Report a cycle through the unplaced layers, starting the walk at `start`. */
static int report_cycle(struct loader *ld, const bool *placed, int start)
{
	int n = ld->n;
	int *step = malloc((size_t)n * sizeof(*step)); /* visit order, -1: not visited */
	int *path = malloc((size_t)n * sizeof(*path));
	if (step == NULL || path == NULL) {
		free(step);
		free(path);
		fz_yerr(ld->doc, NULL, "out of memory");
		return -ENOMEM;
	}
	for (int i = 0; i < n; i++)
		step[i] = -1;
	/* walk against the data flow: every unplaced layer has an unplaced input */
	int len = 0, v = start;
	while (step[v] < 0) {
		step[v] = len;
		path[len++] = v;
		const struct ldef *d = &ld->defs[v];
		int next = -1;
		for (int k = 0; k < d->l.n_inputs && next < 0; k++)
			if (d->in_file[k] >= 0 && !placed[d->in_file[k]])
				next = d->in_file[k];
		v = next;
	}
	/* the cycle is path[step[v] .. len); start it at its layer that comes first in the file */
	int first = step[v], clen = len - first, lead = 0;
	for (int i = 1; i < clen; i++)
		if (path[first + i] < path[first + lead])
			lead = i;
	/* path runs consumer -> producer; print producer -> consumer ("a -> b": a feeds b) */
	char list[512];
	size_t off = 0;
	for (int i = 0; i <= clen && off < sizeof(list); i++) {
		int idx = path[first + ((lead - i) % clen + clen) % clen];
		off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s", i ? " -> " : "",
					ld->defs[idx].l.name);
	}
	/* point at the lead layer's reference to its producer in the cycle */
	const struct ldef *d = &ld->defs[path[first + lead]];
	int producer = path[first + (lead + 1) % clen];
	const struct fz_ynode *at = d->in_node[0];
	for (int k = 0; k < d->l.n_inputs; k++)
		if (d->in_file[k] == producer)
			at = d->in_node[k];
	int r = fz_yerr(ld->doc, at, "cycle between layers: %s", list);
	free(step);
	free(path);
	return r;
}

/*
 * Kahn's algorithm, always taking the ready layer that comes first in the file, so a file
 * already in order keeps its order. Sets defs[].topo.
 */
static int topo_sort(struct loader *ld)
{
	int n = ld->n, r = 0;
	int *pending = calloc((size_t)n, sizeof(*pending)); /* unplaced layer inputs */
	bool *placed = calloc((size_t)n, sizeof(*placed));
	if (pending == NULL || placed == NULL) {
		r = -ENOMEM;
		fz_yerr(ld->doc, NULL, "out of memory");
		goto out;
	}
	for (int i = 0; i < n; i++)
		for (int k = 0; k < ld->defs[i].l.n_inputs; k++)
			pending[i] += ld->defs[i].in_file[k] >= 0;
	for (int pos = 0; pos < n; pos++) {
		int next = -1;
		for (int i = 0; i < n && next < 0; i++)
			if (!placed[i] && pending[i] == 0)
				next = i;
		if (next < 0) {
			for (int i = 0; i < n && next < 0; i++)
				if (!placed[i])
					next = i;
			r = report_cycle(ld, placed, next);
			goto out;
		}
		placed[next] = true;
		ld->defs[next].topo = pos;
		for (int i = 0; i < n; i++)
			for (int k = 0; k < ld->defs[i].l.n_inputs; k++)
				pending[i] -= ld->defs[i].in_file[k] == next;
	}
out:
	free(pending);
	free(placed);
	return r;
}

static struct fz_shape tensor_shape(const struct loader *ld, int file_idx)
{
	return file_idx == FZ_INPUT_TENSOR ? ld->m->input.shape : ld->defs[file_idx].l.out;
}

static const char *tensor_name(const struct loader *ld, int file_idx)
{
	return file_idx == FZ_INPUT_TENSOR ? ld->m->input.name : ld->defs[file_idx].l.name;
}

/* Output size of a window of `k` at `stride` over `in` padded by `pad`; 0 when it does not fit. */
static long long window_out(int in, int k, int stride, int pad)
{
	long long span = (long long)in + 2LL * pad;
	if (span < k)
		return 0;
	return (span - k) / stride + 1;
}

static int layer_shape(struct loader *ld, struct ldef *d)
{
	struct fz_ydoc *doc = ld->doc;
	struct fz_layer *l = &d->l;
	struct fz_shape in = tensor_shape(ld, d->in_file[0]);
	long long oh = in.h, ow = in.w;
	char a[48], b[48];
	l->in = in;
	l->out = in;
	switch (l->kind) {
	case FZ_LAYER_CONV:
	case FZ_LAYER_AVGPOOL:
	case FZ_LAYER_MAXPOOL: {
		bool conv = l->kind == FZ_LAYER_CONV;
		int k = conv ? l->kernel : l->pool_kernel, s = conv ? l->stride : l->pool_stride;
		int pad = conv ? l->pad : l->pool_pad;
		const bool padded = l->kind != FZ_LAYER_AVGPOOL;
		/* window_out pads both sides by its argument: the two sides' sum, halved */
		oh = padded ? window_out(in.h + l->pads[0] + l->pads[2] - 2 * pad, k, s, pad)
			    : window_out(in.h, k, s, 0);
		ow = padded ? window_out(in.w + l->pads[1] + l->pads[3] - 2 * pad, k, s, pad)
			    : window_out(in.w, k, s, 0);
		if (oh == 0 || ow == 0)
			return fz_yerr(doc, d->kernel_node,
				       "layer '%s': kernel %d is larger than its input %dx%d "
				       "(padded by %d)",
				       l->name, k, in.h, in.w, pad);
		if (conv && (in.c % l->groups || l->out_channels % l->groups))
			return fz_yerr(doc, d->groups_node,
				       "layer '%s': %d groups do not divide its %d input and %d output "
				       "channels",
				       l->name, l->groups, in.c, l->out_channels);
		if (conv)
			l->out.c = l->out_channels;
		break;
	}
	case FZ_LAYER_BLOCK:
		oh = window_out(in.h, 3, l->stride, 1);
		ow = window_out(in.w, 3, l->stride, 1);
		l->out.c = l->out_channels;
		break;
	case FZ_LAYER_ADD: {
		struct fz_shape other = tensor_shape(ld, d->in_file[1]);
		if (memcmp(&in, &other, sizeof(in)) != 0) {
			shape_str(in, a, sizeof(a));
			shape_str(other, b, sizeof(b));
			return fz_yerr(
				doc, d->inputs_node,
				"layer '%s': add operands differ in shape: '%s' is %s, '%s' is "
				"%s",
				l->name, tensor_name(ld, d->in_file[0]), a,
				tensor_name(ld, d->in_file[1]), b);
		}
		break;
	}
	case FZ_LAYER_GAP:
		oh = ow = 1;
		break;
	case FZ_LAYER_FC:
		l->out.c = l->out_features;
		oh = ow = 1;
		break;
	default: /* batchnorm, relu: same shape */
		break;
	}
	if (oh > INT_MAX || ow > INT_MAX)
		return fz_yerr(doc, d->map, "layer '%s': output is too large", l->name);
	l->out.h = (int)oh;
	l->out.w = (int)ow;
	if (d->shape_node && memcmp(&d->declared, &l->out, sizeof(l->out)) != 0) {
		shape_str(d->declared, a, sizeof(a));
		shape_str(l->out, b, sizeof(b));
		return fz_yerr(
			doc, d->shape_node,
			"layer '%s': shape mismatch: declared %s, computed %s from input %dx%dx%d",
			l->name, a, b, in.c, in.h, in.w);
	}
	return 0;
}

static int resolve_weights(struct loader *ld, const struct fz_ynode *node, const char *weights)
{
	struct fz_model *m = ld->m;
	const char *slash = weights[0] == '/' ? NULL : strrchr(m->path, '/');
	int dirlen = slash ? (int)(slash - m->path) + 1 : 0;
	int w = snprintf(m->weights_path, sizeof(m->weights_path), "%.*s%s", dirlen, m->path,
			 weights);
	if (w < 0 || (size_t)w >= sizeof(m->weights_path))
		return fz_yerr(ld->doc, node, "weights: path is too long (at most %d bytes)",
			       FZ_PATH_MAX - 1);
	return 0;
}

static int parse_model(struct loader *ld)
{
	struct fz_ydoc *doc = ld->doc;
	struct fz_model *m = ld->m;
	const struct fz_ynode *root = doc->root;
	struct fz_ynode *v;
	char fbuf[64];
	int r;

	if (root == NULL) {
		const struct fz_ynode top = {.line = 1, .col = 1};
		return fz_yerr(doc, &top, "empty document; expected a mapping with name, weights, "
					  "input and layers");
	}
	if ((r = fz_ymap_check_keys(doc, root, top_keys)))
		return r;
	if ((r = fz_ymap_find(doc, root, "name", FZ_Y_REQUIRED, &v)) ||
	    (r = node_name(doc, v, m->name)))
		return r;

	char weights[FZ_PATH_MAX];
	if ((r = fz_ymap_str(doc, root, "weights", FZ_Y_REQUIRED, weights, sizeof(weights))))
		return r;
	v = fz_ymap_get(root, "weights");
	if (weights[0] == '\0')
		return fz_yerr(doc, v, "weights: expected a file name, found an empty string");
	if ((r = resolve_weights(ld, v, weights)))
		return r;

	if ((r = fz_ymap_find(doc, root, "input", FZ_Y_REQUIRED, &v)) || (r = parse_input(ld, v)))
		return r;

	if ((r = fz_ymap_find(doc, root, "layers", FZ_Y_REQUIRED, &v)))
		return r;
	if (v->type != FZ_YNODE_SEQ || v->n == 0)
		return fz_yerr(doc, v, "layers: expected a non-empty sequence of layers, found %s",
			       v->type == FZ_YNODE_SEQ ? "an empty one"
						       : fz_ynode_describe(v, fbuf, sizeof(fbuf)));
	if (v->n > FZ_MODEL_MAX_LAYERS)
		return fz_yerr(doc, v,
			       "layers: %zu layers, more than FZ_MODEL_MAX_LAYERS (%d): the appliance "
			       "counts exits per layer and answers with a layer index below it",
			       (size_t)v->n, FZ_MODEL_MAX_LAYERS);
	ld->n = (int)v->n;
	ld->defs = calloc(v->n, sizeof(*ld->defs));
	if (ld->defs == NULL) {
		fz_yerr(doc, NULL, "out of memory");
		return -ENOMEM;
	}
	for (int i = 0; i < ld->n; i++)
		if ((r = parse_layer(ld, i, v->items[i])))
			return r;
	if ((r = resolve_names(ld)) || (r = topo_sort(ld)))
		return r;

	/* shapes, in topological order */
	int *order = malloc((size_t)ld->n * sizeof(*order));
	if (order == NULL) {
		fz_yerr(doc, NULL, "out of memory");
		return -ENOMEM;
	}
	for (int i = 0; i < ld->n; i++)
		order[ld->defs[i].topo] = i;
	for (int p = 0; p < ld->n && r == 0; p++)
		r = layer_shape(ld, &ld->defs[order[p]]);
	free(order);
	if (r)
		return r;

	int out = ld->n - 1; /* default: the last layer in the file */
	if ((r = fz_ymap_find(doc, root, "output", FZ_Y_OPTIONAL, &v)))
		return r;
	if (v != NULL) {
		char name[FZ_NAME_MAX];
		if ((r = node_name(doc, v, name)))
			return r;
		for (out = 0; out < ld->n; out++)
			if (strcmp(ld->defs[out].l.name, name) == 0)
				break;
		if (out == ld->n)
			return fz_yerr(doc, v,
				       "output: undefined layer '%s'; expected a layer name", name);
	}

	m->layers = calloc((size_t)ld->n, sizeof(*m->layers));
	if (m->layers == NULL) {
		fz_yerr(doc, NULL, "out of memory");
		return -ENOMEM;
	}
	m->n_layers = ld->n;
	for (int i = 0; i < ld->n; i++) {
		const struct ldef *d = &ld->defs[i];
		struct fz_layer *l = &m->layers[d->topo];
		*l = d->l;
		l->inputs[0] = l->inputs[1] = FZ_INPUT_TENSOR;
		for (int k = 0; k < l->n_inputs; k++)
			l->inputs[k] =
				d->in_file[k] < 0 ? FZ_INPUT_TENSOR : ld->defs[d->in_file[k]].topo;
	}
	m->output = ld->defs[out].topo;
	return 0;
}

static struct fz_model *model_from_doc(struct fz_ydoc *doc, const char *path)
{
	struct fz_model *m = calloc(1, sizeof(*m));
	if (m == NULL) {
		fz_yerr(doc, NULL, "out of memory");
		fz_ydoc_free(doc);
		errno = ENOMEM;
		return NULL;
	}
	struct loader ld = {.doc = doc, .m = m};
	int r = 0;
	size_t plen = strlen(path);
	if (plen >= sizeof(m->path))
		r = fz_yerr(doc, NULL, "path is too long (at most %d bytes)", FZ_PATH_MAX - 1);
	else
		memcpy(m->path, path, plen + 1);
	if (r == 0)
		r = parse_model(&ld);
	free(ld.defs);
	fz_ydoc_free(doc);
	if (r) {
		fz_model_free(m);
		errno = -r;
		return NULL;
	}
	return m;
}

struct fz_model *fz_model_parse(const char *path, const char *buf, size_t len, char *err,
				size_t errlen)
{
	struct fz_ydoc *doc = fz_ydoc_parse(path, buf, len, err, errlen);
	if (doc == NULL)
		return NULL;
	return model_from_doc(doc, path ? path : "");
}

struct fz_model *fz_model_load(const char *path, char *err, size_t errlen)
{
	struct fz_ydoc *doc = fz_ydoc_load(path, err, errlen);
	if (doc == NULL)
		return NULL;
	return model_from_doc(doc, path);
}
