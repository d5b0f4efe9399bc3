/* Lowers a model graph into fused nodes: batch norm folded into convolutions, ReLU and residual
 * adds attached as post-ops; checks every weight tensor's name, dtype and shape. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "net_pvt.h"

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static uint64_t fnv1a(uint64_t h, const void *p, size_t n)
{
	const unsigned char *c = p;
	for (size_t i = 0; i < n; i++) {
		h ^= c[i];
		h *= FNV_PRIME;
	}
	return h;
}

struct lower {
	struct fz_net *net;
	int *consumers; /* per model layer: how many layers (and the output) read it */
	char *err;
	size_t errlen;
};

static void set_err(struct lower *L, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(L->err, L->errlen, "%s: ", L->net->model->path);
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < L->errlen)
		vsnprintf(L->err + n, L->errlen - n, fmt, ap);
	va_end(ap);
}

/* Fetch an f32 tensor of the given shape and fold it into the fingerprint. */
static const float *tensor(struct lower *L, const char *name, int ndim, const int64_t *dims)
{
	char msg[512];
	const float *p = fz_weights_f32(L->net->weights, name, ndim, dims, msg, sizeof(msg));
	if (!p) {
		set_err(L, "%s", msg);
		return NULL;
	}
	size_t n = 1;
	for (int i = 0; i < ndim; i++)
		n *= (size_t)dims[i];
	L->net->fingerprint = fnv1a(L->net->fingerprint, name, strlen(name));
	L->net->fingerprint = fnv1a(L->net->fingerprint, p, n * sizeof(float));
	return p;
}

static struct fz_node *new_node(struct lower *L, enum fz_node_op op, int layer, const char *name)
{
	struct fz_net *net = L->net;
	struct fz_node *n = &net->nodes[net->n_nodes++];
	memset(n, 0, sizeof(*n));
	n->op = op;
	n->first_layer = n->layer = layer;
	n->in = n->in2 = FZ_VALUE_NONE;
	n->sum_in = FZ_VALUE_NONE;
	snprintf(n->name, sizeof(n->name), "%s", name);
	return n;
}

static int value_of(const struct fz_net *net, int layer_idx)
{
	return layer_idx == FZ_INPUT_TENSOR ? FZ_VALUE_INPUT : net->layer_node[layer_idx];
}

/* A convolution with `prefix`.weight [oc, ic / groups, k, k] (and bias when `bias`). */
static struct fz_node *lower_conv(struct lower *L, int layer, const char *prefix, int in_value,
				  struct fz_shape in, int oc, int k, int stride, const int *pads,
				  bool bias, int groups)
{
	char name[FZ_NAME_MAX * 2 + 16];
	struct fz_node *n = new_node(L, FZ_NODE_CONV, layer, prefix);
	n->in = in_value;
	n->in_shape = in;
	n->kernel = k;
	n->stride = stride;
	n->pad = pads[0];
	n->pad_t = pads[0], n->pad_l = pads[1];
	n->groups = groups;
	n->out_shape = (struct fz_shape){oc, (in.h + pads[0] + pads[2] - k) / stride + 1,
					 (in.w + pads[1] + pads[3] - k) / stride + 1};
	const int icg = fz_conv_ic_per_group(n);
	int64_t wd[4] = {oc, icg, k, k};
	snprintf(name, sizeof(name), "%s.weight", prefix);
	const float *w = tensor(L, name, 4, wd);
	if (!w)
		return NULL;
	size_t wn = (size_t)oc * icg * k * k;
	n->w = malloc(wn * sizeof(float));
	n->b = calloc(oc, sizeof(float));
	if (!n->w || !n->b) {
		set_err(L, "out of memory");
		return NULL;
	}
	memcpy(n->w, w, wn * sizeof(float));
	if (bias) {
		int64_t bd[1] = {oc};
		snprintf(name, sizeof(name), "%s.bias", prefix);
		const float *b = tensor(L, name, 1, bd);
		if (!b)
			return NULL;
		memcpy(n->b, b, oc * sizeof(float));
	}
	return n;
}

/* Batch norm parameters `prefix`.{weight,bias,running_mean,running_var} as scale and shift. */
static int bn_params(struct lower *L, const char *prefix, int c, float eps, float *scale,
		     float *shift)
{
	static const char *const part[4] = {"weight", "bias", "running_mean", "running_var"};
	const float *p[4];
	char name[FZ_NAME_MAX * 2 + 32];
	int64_t d[1] = {c};
	for (int i = 0; i < 4; i++) {
		snprintf(name, sizeof(name), "%s.%s", prefix, part[i]);
		if (!(p[i] = tensor(L, name, 1, d)))
			return -EINVAL;
	}
	for (int i = 0; i < c; i++) {
		scale[i] = p[0][i] / sqrtf(p[3][i] + eps);
		shift[i] = p[1][i] - p[2][i] * scale[i];
	}
	return 0;
}

/* Fold y = conv(x) * scale + shift into the convolution's weights and bias. */
static int fold_bn(struct lower *L, struct fz_node *n, const char *prefix, float eps)
{
	int oc = n->out_shape.c;
	float *scale = malloc(oc * sizeof(float)), *shift = malloc(oc * sizeof(float));
	int rc = -ENOMEM;
	if (!scale || !shift) {
		set_err(L, "out of memory");
		goto out;
	}
	if ((rc = bn_params(L, prefix, oc, eps, scale, shift)) < 0)
		goto out;
	size_t per_oc = (size_t)fz_conv_ic_per_group(n) * n->kernel * n->kernel;
	for (int o = 0; o < oc; o++) {
		for (size_t j = 0; j < per_oc; j++)
			n->w[o * per_oc + j] *= scale[o];
		n->b[o] = n->b[o] * scale[o] + shift[o];
	}
out:
	free(scale);
	free(shift);
	return rc;
}

/* The node producing layer `li`'s output when it is a bare convolution read by nobody else. */
static struct fz_node *fusable_conv(struct lower *L, int li)
{
	if (li == FZ_INPUT_TENSOR || L->consumers[li] != 1)
		return NULL;
	struct fz_node *n = &L->net->nodes[L->net->layer_node[li]];
	return n->op == FZ_NODE_CONV ? n : NULL;
}

static int lower_block(struct lower *L, int i, const struct fz_layer *ly)
{
	char p[FZ_NAME_MAX * 2 + 16], q[FZ_NAME_MAX * 2 + 16];
	int in = value_of(L->net, ly->inputs[0]);
	int oc = ly->out_channels, s = ly->stride;
	snprintf(p, sizeof(p), "%s.conv1", ly->name);
	static const int one[4] = {1, 1, 1, 1}, zero[4] = {0, 0, 0, 0};
	struct fz_node *c1 = lower_conv(L, i, p, in, ly->in, oc, 3, s, one, false, 1);
	snprintf(q, sizeof(q), "%s.bn1", ly->name);
	if (!c1 || fold_bn(L, c1, q, ly->eps) < 0)
		return -EINVAL;
	c1->relu_pre = true;
	int c1v = L->net->n_nodes - 1;
	int short_v = in;
	if (s != 1 || ly->in.c != oc) {
		snprintf(p, sizeof(p), "%s.down", ly->name);
		struct fz_node *d = lower_conv(L, i, p, in, ly->in, oc, 1, s, zero, false, 1);
		snprintf(q, sizeof(q), "%s.down_bn", ly->name);
		if (!d || fold_bn(L, d, q, ly->eps) < 0)
			return -EINVAL;
		short_v = L->net->n_nodes - 1;
	}
	snprintf(p, sizeof(p), "%s.conv2", ly->name);
	struct fz_node *c2 = lower_conv(L, i, p, c1v, c1->out_shape, oc, 3, 1, one, false, 1);
	snprintf(q, sizeof(q), "%s.bn2", ly->name);
	if (!c2 || fold_bn(L, c2, q, ly->eps) < 0)
		return -EINVAL;
	c2->sum_in = short_v;
	c2->relu = true;
	c2->layer_out = true;
	snprintf(c2->name, sizeof(c2->name), "%s", ly->name);
	L->net->layer_node[i] = L->net->n_nodes - 1;
	return 0;
}

static int lower_layer(struct lower *L, int i)
{
	struct fz_net *net = L->net;
	const struct fz_layer *ly = &net->model->layers[i];
	int in = value_of(net, ly->inputs[0]);
	struct fz_node *n, *c;
	char p[FZ_NAME_MAX + 16];

	switch (ly->kind) {
	case FZ_LAYER_CONV:
		n = lower_conv(L, i, ly->name, in, ly->in, ly->out_channels, ly->kernel, ly->stride,
			       ly->pads, ly->bias, ly->groups);
		if (!n)
			return -EINVAL;
		break;
	case FZ_LAYER_BATCHNORM:
		c = fusable_conv(L, ly->inputs[0]);
		if (c && !c->relu_pre && c->sum_in == FZ_VALUE_NONE && !c->relu) {
			if (fold_bn(L, c, ly->name, ly->eps) < 0)
				return -EINVAL;
			c->layer = i;
			net->layer_node[i] = (int)(c - net->nodes);
			return 0;
		}
		n = new_node(L, FZ_NODE_BN, i, ly->name);
		n->in = in;
		n->scale = malloc(ly->in.c * sizeof(float));
		n->shift = malloc(ly->in.c * sizeof(float));
		if (!n->scale || !n->shift)
			return -ENOMEM;
		if (bn_params(L, ly->name, ly->in.c, ly->eps, n->scale, n->shift) < 0)
			return -EINVAL;
		break;
	case FZ_LAYER_RELU:
		c = fusable_conv(L, ly->inputs[0]);
		if (c && !c->relu) {
			if (c->sum_in == FZ_VALUE_NONE)
				c->relu_pre = true;
			else
				c->relu = true;
			c->layer = i;
			net->layer_node[i] = (int)(c - net->nodes);
			return 0;
		}
		n = new_node(L, FZ_NODE_RELU, i, ly->name);
		n->in = in;
		break;
	case FZ_LAYER_ADD:
		for (int k = 0; k < 2; k++) {
			c = fusable_conv(L, ly->inputs[k]);
			if (c && !c->relu_pre && c->sum_in == FZ_VALUE_NONE) {
				c->sum_in = value_of(net, ly->inputs[1 - k]);
				c->layer = i;
				net->layer_node[i] = (int)(c - net->nodes);
				return 0;
			}
		}
		n = new_node(L, FZ_NODE_ADD, i, ly->name);
		n->in = in;
		n->in2 = value_of(net, ly->inputs[1]);
		break;
	case FZ_LAYER_AVGPOOL:
	case FZ_LAYER_GAP:
		n = new_node(L, FZ_NODE_AVGPOOL, i, ly->name);
		n->in = in;
		n->kernel = ly->kind == FZ_LAYER_GAP ? ly->in.h : ly->pool_kernel;
		n->stride = ly->kind == FZ_LAYER_GAP ? ly->in.h : ly->pool_stride;
		n->pad = 0;
		break;
	case FZ_LAYER_MAXPOOL:
		n = new_node(L, FZ_NODE_MAXPOOL, i, ly->name);
		n->in = in;
		n->kernel = ly->pool_kernel;
		n->stride = ly->pool_stride;
		n->pad = ly->pool_pad;
		n->pad_t = ly->pads[0], n->pad_l = ly->pads[1];
		break;
	case FZ_LAYER_FC: {
		n = new_node(L, FZ_NODE_FC, i, ly->name);
		n->in = in;
		int o = ly->out_features;
		size_t k = fz_shape_size(ly->in);
		int64_t wd[2] = {o, (int64_t)k}, bd[1] = {o};
		snprintf(p, sizeof(p), "%s.weight", ly->name);
		const float *w = tensor(L, p, 2, wd);
		snprintf(p, sizeof(p), "%s.bias", ly->name);
		const float *b = w ? tensor(L, p, 1, bd) : NULL;
		if (!w || !b)
			return -EINVAL;
		n->w = malloc(o * k * sizeof(float));
		n->b = malloc(o * sizeof(float));
		if (!n->w || !n->b)
			return -ENOMEM;
		memcpy(n->w, w, o * k * sizeof(float));
		memcpy(n->b, b, o * sizeof(float));
		break;
	}
	case FZ_LAYER_BLOCK:
		return lower_block(L, i, ly);
	default:
		set_err(L, "layer '%s': kind %d not supported by the engine", ly->name, ly->kind);
		return -EINVAL;
	}
	n->in_shape = ly->in;
	n->out_shape = ly->out;
	n->layer_out = true;
	net->layer_node[i] = (int)(n - net->nodes);
	return 0;
}

struct fz_net *fz_net_create(const struct fz_model *m, char *err, size_t errlen)
{
	struct fz_net *net = calloc(1, sizeof(*net));
	struct lower L = {.net = net, .err = err, .errlen = errlen};
	int rc = -ENOMEM;
	if (!net)
		goto fail;
	net->model = m;
	net->fingerprint = FNV_OFFSET;
	net->weights = fz_weights_load(m->weights_path, err, errlen);
	if (!net->weights) {
		rc = -errno;
		goto fail;
	}
	/* a block lowers to at most 3 nodes */
	net->nodes = calloc((size_t)m->n_layers * 3, sizeof(*net->nodes));
	net->layer_node = calloc(m->n_layers, sizeof(int));
	L.consumers = calloc(m->n_layers, sizeof(int));
	if (!net->nodes || !net->layer_node || !L.consumers) {
		set_err(&L, "out of memory");
		goto fail;
	}
	for (int i = 0; i < m->n_layers; i++) {
		const struct fz_layer *ly = &m->layers[i];
		for (int k = 0; k < ly->n_inputs; k++)
			if (ly->inputs[k] >= 0)
				L.consumers[ly->inputs[k]]++;
		net->fingerprint = fnv1a(net->fingerprint, &ly->kind, sizeof(ly->kind));
		net->fingerprint = fnv1a(net->fingerprint, &ly->out, sizeof(ly->out));
	}
	L.consumers[m->output]++;
	for (int i = 0; i < m->n_layers; i++) {
		if ((rc = lower_layer(&L, i)) < 0) {
			rc = -EINVAL;
			goto fail;
		}
	}
	free(L.consumers);
	L.consumers = NULL;
	if ((rc = fz_net_layouts_init(net, err, errlen)) < 0)
		goto fail;
	return net;
fail:
	if (L.consumers)
		free(L.consumers);
	fz_net_free(net);
	errno = -rc;
	return NULL;
}

void fz_net_free(struct fz_net *net)
{
	if (!net)
		return;
	for (int i = 0; i < net->n_nodes; i++) {
		free(net->nodes[i].w);
		free(net->nodes[i].b);
		free(net->nodes[i].scale);
		free(net->nodes[i].shift);
	}
	free(net->nodes);
	free(net->layer_node);
	free(net->vmd);
	free(net->vlay);
	free(net->vlay_ok);
	fz_weights_free(net->weights);
	free(net);
}

const struct fz_model *fz_net_model(const struct fz_net *net)
{
	return net->model;
}

uint64_t fz_net_fingerprint(const struct fz_net *net)
{
	return net->fingerprint;
}

/* One macro body for both input types: raw value -> normalised, at the layout's offsets. */
#define FZ_PREPROCESS(net, src, n, out)                                                            \
	do {                                                                                       \
		const struct fz_model_input *in_ = &(net)->model->input;                           \
		const struct fz_act_layout l_ = (net)->vlay[0];                                    \
		const int C_ = in_->shape.c, H_ = in_->shape.h, W_ = in_->shape.w;                 \
		const float inv_scale_ = 1.0f / in_->scale;                                        \
		const bool plain_ = fz_layout_is_nchw(&l_);                                        \
		for (size_t s_ = 0; s_ < (n); s_++) {                                              \
			float *o_ = (out) + s_ * l_.sample_stride;                                 \
			if (!plain_)                                                               \
				memset(o_, 0, l_.sample_stride * sizeof(float));                   \
			for (int c_ = 0; c_ < C_; c_++) {                                          \
				float mean_ = in_->mean[c_], inv_std_ = 1.0f / in_->std[c_];       \
				for (int y_ = 0; y_ < H_; y_++)                                    \
					for (int x_ = 0; x_ < W_; x_++) {                          \
						size_t i_ = ((s_ * C_ + c_) * H_ + y_) * W_ + x_;   \
						size_t j_ = plain_ ? (size_t)(c_ * H_ + y_) * W_ + x_ \
								   : fz_layout_offset(&l_, c_, y_, \
										      x_);  \
						o_[j_] = ((src)[i_] * inv_scale_ - mean_) * inv_std_; \
					}                                                          \
			}                                                                          \
		}                                                                                  \
	} while (0)

void fz_net_preprocess_u8(const struct fz_net *net, const uint8_t *px, size_t n, float *out)
{
	FZ_PREPROCESS(net, px, n, out);
}

void fz_net_preprocess_f32(const struct fz_net *net, const float *v, size_t n, float *out)
{
	FZ_PREPROCESS(net, v, n, out);
}

uint64_t fz_net_macs(const struct fz_net *net, int first, int last)
{
	uint64_t macs = 0;
	for (int i = 0; i < net->n_nodes; i++) {
		const struct fz_node *n = &net->nodes[i];
		if (n->first_layer < first || n->layer > last)
			continue;
		const struct fz_shape o = n->out_shape;
		if (n->op == FZ_NODE_CONV)
			macs += (uint64_t)o.c * o.h * o.w * fz_conv_ic_per_group(n) * n->kernel *
				n->kernel;
		else if (n->op == FZ_NODE_FC)
			macs += (uint64_t)o.c * fz_shape_size(n->in_shape);
	}
	return macs;
}

int fz_argmax(const float *v, int n)
{
	int best = 0;
	for (int i = 1; i < n; i++)
		if (v[i] > v[best])
			best = i;
	return best;
}
