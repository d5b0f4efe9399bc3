/* Private to stages/: the model lowered to fused nodes (what layer groups compile). */
#ifndef FZ_NET_PVT_H
#define FZ_NET_PVT_H

#include <stdbool.h>
#include <stdio.h>

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
};

/* Channels rounded up to the boundary layout's block; the layout groups hand to each other. */
struct fz_act_layout fz_boundary_layout(struct fz_shape s);

#endif /* FZ_NET_PVT_H */
