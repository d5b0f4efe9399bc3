/* Private to stages/: the model lowered to fused nodes (what layer groups compile). */
#ifndef FZ_NET_PVT_H
#define FZ_NET_PVT_H

#include <stdbool.h>
#include <stdio.h>

#include <oneapi/dnnl/dnnl.h>

#include "fz_stages.h"

#define FZ_STAGES_LOG(...)                                                                         \
	do {                                                                                       \
		fprintf(stderr, "freeze: stages: " __VA_ARGS__);                                   \
		fputc('\n', stderr);                                                               \
	} while (0)

/* Node operations after lowering: convolutions carry their folded batch norm and fused
 * post-ops; the rest map one-to-one onto oneDNN primitives. */
enum fz_node_op {
	FZ_NODE_CONV,   /* conv (+ folded bn) (+ relu) (+ sum with `sum_in`) (+ relu) */
	FZ_NODE_BN,     /* batch norm that could not be folded: y = x * scale + shift */
	FZ_NODE_RELU,
	FZ_NODE_ADD,
	FZ_NODE_AVGPOOL,
	FZ_NODE_FC,
	FZ_NODE_MAXPOOL,
};

#define FZ_VALUE_INPUT (-1) /* value id of the model input; other ids are node indices */
#define FZ_VALUE_NONE (-2)

struct fz_node {
	enum fz_node_op op;
	int first_layer, layer; /* model layers this node covers (it produces `layer`'s output
				   when `layer_out` is set) */
	bool layer_out;
	int in, in2;            /* value ids (in2: second add operand) */
	struct fz_shape in_shape, out_shape;
	/* conv / pool */
	int kernel, stride, pad;
	int groups; /* conv: 0 or 1 = an ordinary convolution */
	int pad_t, pad_l; /* conv, maxpool: top and left padding (bottom and right follow from
			   * the output shape) */
	/* conv: folded weights OIHW and bias; post-ops in order: relu_pre, sum(sum_in), relu */
	float *w, *b;
	bool relu_pre;
	int sum_in;
	bool relu;
	/* bn: per-channel scale and shift (gamma/sqrt(var+eps), beta - mean*scale) */
	float *scale, *shift;
	char name[FZ_NAME_MAX + 16]; /* for logs: "block3.conv2" */
};

struct fz_net {
	const struct fz_model *model;
	struct fz_weights *weights;
	struct fz_node *nodes;
	int n_nodes;
	int *layer_node; /* model layer -> node producing its output */
	uint64_t fingerprint;
	/* boundary layouts, per value (slot 0: the model input, slot i + 1: node i's output):
	 * what oneDNN's primitives ask for (layout.c), and whether groups can hand it on */
	dnnl_memory_desc_t *vmd;
	struct fz_act_layout *vlay;
	bool *vlay_ok;
};

/* Read a layout off a memory descriptor (2D N x C, or 4D with the batch outermost and at most
 * one block, over channels). 0, or -ENOTSUP with the reason in err. */
int fz_layout_from_md(const dnnl_memory_desc_t *md, struct fz_act_layout *l, char *err,
		      size_t errlen);
/*
 * The primitive descriptor of convolution node `nd` for a batch of n, source, weights and
 * destination as format_tag_any (oneDNN chooses), post-ops and scratchpad mode from `attr`
 * (may be NULL). Winograd where oneDNN has it for this CPU (off with FZ_CONV_WINOGRAD=0),
 * direct otherwise; each tried first with the source in `src_hint`'s layout (where the value
 * already lives; may be NULL) so that no reorder is needed where a real kernel reads it. One function for both the boundary layouts and the groups, so they agree.
 */
/* Input channels one output channel of a convolution reads (all of them, or its group's). */
static inline int fz_conv_ic_per_group(const struct fz_node *n)
{
	return n->groups > 1 ? n->in_shape.c / n->groups : n->in_shape.c;
}

/* Pooling pads: left as the node says, right so the output size is floor((H + 2p - k) / s) + 1. */
void fz_pool_pads(const struct fz_node *nd, dnnl_dims_t pl, dnnl_dims_t pr);
dnnl_status_t fz_conv_pd_create(dnnl_primitive_desc_t *pd, const struct fz_node *nd, int n,
				const dnnl_memory_desc_t *src_hint,
				const_dnnl_primitive_attr_t attr, dnnl_engine_t eng);
/* `ref` (a boundary descriptor) for a batch of n. */
void fz_layout_md_batch(const dnnl_memory_desc_t *ref, int n, dnnl_memory_desc_t *out);
/* Choose every value's boundary layout (fz_net_create). 0 or -errno with a message. */
int fz_net_layouts_init(struct fz_net *net, char *err, size_t errlen);

#endif /* FZ_NET_PVT_H */
