/* Freeze model graph: the YAML description of a network (layers, tensors, input spec). */
#ifndef FZ_MODEL_H
#define FZ_MODEL_H

#include <stdbool.h>
#include <stddef.h>

#define FZ_NAME_MAX 64
#define FZ_PATH_MAX 4096
#define FZ_MAX_CHANNELS_NORM 16 /* most input channels with a per-channel mean/std */
/* Most layers in a model: fz_model_load refuses more (by name). Per-layer counters are sized by
 * it, and a layer index answers on the wire below the protocol's special exit codes. */
#define FZ_MODEL_MAX_LAYERS 1024

/* Layer kinds as an X-macro: enum value and YAML spelling stay together. */
#define FZ_FOREACH_LAYER_KIND(_)                                                                   \
	_(CONV, "conv")                                                                            \
	_(BATCHNORM, "batchnorm")                                                                  \
	_(RELU, "relu")                                                                            \
	_(ADD, "add")                                                                              \
	_(AVGPOOL, "avgpool")                                                                      \
	_(GAP, "global_avgpool")                                                                   \
	_(FC, "fc")                                                                                \
	_(BLOCK, "block")                                                                          \
	_(MAXPOOL, "maxpool")

enum fz_layer_kind {
#define FZ_LK_ENUM(e, s) FZ_LAYER_##e,
	FZ_FOREACH_LAYER_KIND(FZ_LK_ENUM)
#undef FZ_LK_ENUM
	FZ_LAYER__COUNT
};

/* Activation shape of one sample (batch excluded). */
struct fz_shape {
	int c, h, w;
};

#define FZ_INPUT_TENSOR (-1) /* fz_layer.inputs[] value naming the model input */

struct fz_layer {
	char name[FZ_NAME_MAX];
	enum fz_layer_kind kind;
	int inputs[2];       /* layer indices (topological order), or FZ_INPUT_TENSOR */
	int n_inputs;        /* 2 for add, 1 otherwise */
	struct fz_shape in;  /* shape of inputs[0] */
	struct fz_shape out; /* computed output shape (checked against `shape:` when given) */
	/* conv, block */
	int out_channels, kernel, stride, pad;
	int groups; /* conv: groups of channels convolved apart (1; in channels = depthwise) */
	/* conv, maxpool: padding top, left, bottom, right (`pad` sets all four; `pads` as ONNX's
	 * [top, left, bottom, right]) */
	int pads[4];
	bool bias; /* conv: has a "<name>.bias" tensor */
	/* batchnorm (and the batchnorms inside a block) */
	float eps;
	/* avgpool, maxpool (maxpool pads every side by pool_pad; padding never wins the max) */
	int pool_kernel, pool_stride, pool_pad;
	/* fc */
	int out_features;
	/* where it was defined, for messages */
	int line, col;
};

struct fz_model_input {
	char name[FZ_NAME_MAX];
	struct fz_shape shape;
	float mean[FZ_MAX_CHANNELS_NORM]; /* per channel; a single value is copied to every slot */
	float std[FZ_MAX_CHANNELS_NORM];
	float scale; /* raw u8 sample values are divided by this first (1 for none) */
};

struct fz_model {
	char path[FZ_PATH_MAX];         /* the YAML file */
	char name[FZ_NAME_MAX];
	char weights_path[FZ_PATH_MAX]; /* resolved against the YAML file's directory */
	struct fz_model_input input;
	struct fz_layer *layers; /* topological order: every input precedes its consumer */
	int n_layers;
	int output; /* index of the output layer */
};

/*
 * Load and validate a model graph from a YAML file.
 * On failure returns NULL, sets errno (ENOENT, EINVAL, ENOMEM; EISDIR, EACCES, ... from reading
 * the file) and writes a one-line message "FILE:LINE:COLUMN: what was found, what was expected"
 * into err (errlen bytes); a file that cannot be read gives "FILE: cannot read: <strerror>".
 * Checks: unknown layer kind or key, missing or ill-typed field, undefined tensor, duplicate name,
 * cycle, non-positive size, shape mismatch between a declared `shape:` and the computed one or
 * between the operands of an add, bad input spec. Layers may come in any order; they are sorted
 * topologically, keeping file order where the graph allows.
 */
struct fz_model *fz_model_load(const char *path, char *err, size_t errlen);

/* Same, from a buffer in memory; `path` is used for messages and to resolve `weights:`. */
struct fz_model *fz_model_parse(const char *path, const char *buf, size_t len, char *err,
				size_t errlen);

void fz_model_free(struct fz_model *m);

/* Index of the layer called `name`, or -1. */
int fz_model_find_layer(const struct fz_model *m, const char *name);

/* YAML spelling of a layer kind ("conv", ...). */
const char *fz_layer_kind_name(enum fz_layer_kind k);

/* Floats in one sample of the model input. */
static inline size_t fz_shape_size(struct fz_shape s)
{
	return (size_t)s.c * (size_t)s.h * (size_t)s.w;
}

#endif /* FZ_MODEL_H */
