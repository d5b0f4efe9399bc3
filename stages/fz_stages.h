/* Freeze stages: a model's weights, and ranges of its layers compiled into oneDNN primitives. */
#ifndef FZ_STAGES_H
#define FZ_STAGES_H

#include <stddef.h>
#include <stdint.h>

#include "fz_layout.h"
#include "fz_model.h"

/* ---- weights (safetensors) ---- */

struct fz_weights;

/*
 * Load a safetensors file (8-byte little-endian header length, JSON header, raw data) with
 * io_uring (pread fallback). The whole file is refused when the header is malformed, lies about
 * sizes or offsets (out of range, overlapping, size != dtype * shape), or the file is truncated.
 * Returns NULL with errno set (ENOENT, EINVAL, ENOMEM) and a message naming the file and tensor.
 */
struct fz_weights *fz_weights_load(const char *path, char *err, size_t errlen);

/*
 * The f32 tensor `name`, checked against the expected shape (ndim dims).
 * Returns its data, or NULL with a message naming the tensor: missing, wrong dtype, wrong shape.
 */
const float *fz_weights_f32(const struct fz_weights *w, const char *name, int ndim,
			    const int64_t *dims, char *err, size_t errlen);

/* Any-dtype lookup: data, dtype string ("F32", "I32", ...), shape. NULL if missing. */
const void *fz_weights_find(const struct fz_weights *w, const char *name, const char **dtype,
			    int *ndim, const int64_t **dims);

size_t fz_weights_count(const struct fz_weights *w);

/* Name of tensor i (0..count-1, sorted by name), NULL past the end. */
const char *fz_weights_name(const struct fz_weights *w, size_t i);

/* The "__metadata__" value of `key`, NULL if absent. */
const char *fz_weights_meta(const struct fz_weights *w, const char *key);

void fz_weights_free(struct fz_weights *w);

/*
 * Internal (fz_weights_load after the read; fuzz target): parse a whole file image `buf` of
 * `len` bytes, a malloc'd buffer that this call owns from then on (freed on failure).
 * `name` names the file in messages. Same results and errors as fz_weights_load.
 */
struct fz_weights *fz_weights_parse(const char *name, void *buf, size_t len, char *err,
				    size_t errlen);

/* ---- network: a model bound to its weights, batch norm folded ---- */

struct fz_net;

/*
 * Bind a loaded model to its weights file (m->weights_path), check every tensor the graph needs
 * (name, dtype, shape) and fold each batch norm into the convolution before it.
 * The net keeps a pointer to `m`; free the net first. NULL with errno and message on failure.
 */
struct fz_net *fz_net_create(const struct fz_model *m, char *err, size_t errlen);
void fz_net_free(struct fz_net *net);
const struct fz_model *fz_net_model(const struct fz_net *net);

/*
 * The layout of the output of model layer `layer` (FZ_INPUT_TENSOR: the model input) where
 * layer groups hand it on: what oneDNN's primitives asked for on this CPU, read back from the
 * memory descriptor. The one source of truth for a sample's size and layout (RX, stages,
 * caches, the offline commands). Only layers that end a fused node have one.
 */
struct fz_act_layout fz_net_layout(const struct fz_net *net, int layer);

/* The largest sample_stride of any boundary layout: a buffer that holds any stage's input. */
size_t fz_net_max_sample_floats(const struct fz_net *net);

/*
 * Raw u8 samples (C*H*W each, channel-major) -> normalised f32 model input, each sample written
 * whole (padding zeroed) in fz_net_layout(net, FZ_INPUT_TENSOR), sample_stride apart.
 */
void fz_net_preprocess_u8(const struct fz_net *net, const uint8_t *px, size_t n, float *out);

/* Same from values on the u8 scale (C*H*W each, channel-major, host byte order). */
void fz_net_preprocess_f32(const struct fz_net *net, const float *v, size_t n, float *out);

/* 64-bit fingerprint of the graph and its weights' bytes: caches built for one net refuse another. */
uint64_t fz_net_fingerprint(const struct fz_net *net);

/* Index of the largest of n floats (the class a row of logits names). */
int fz_argmax(const float *v, int n);

/* Multiply-accumulate count of layers [first, last] for one sample (x2 for FLOPs). */
uint64_t fz_net_macs(const struct fz_net *net, int first, int last);

/* ---- layer groups: what one pipeline stage runs ---- */

struct fz_group;

/*
 * Compile layers [first, last] (model indices, inclusive) into oneDNN primitives for batches of
 * 1..max_batch samples. Call on the thread that will run the group, after that thread's OpenMP
 * thread count is set: primitives are created there (per batch size, on first use).
 * The group's input and output are in the boundary layouts fz_net_layout gives for the value it
 * reads and for layer `last` (fz_group_in_layout / fz_group_out_layout), so a group's output can
 * be copied sample by sample into the next group's input. Inside, every primitive gets the
 * layout it asks for, with a reorder only where two disagree. A reference (`ref`) convolution,
 * pooling or inner product is refused (EOPNOTSUPP, naming the layer and the ISA) unless
 * FZ_ALLOW_REF_KERNELS=1.
 */
struct fz_group *fz_group_create(struct fz_net *net, int first, int last, int max_batch,
				 char *err, size_t errlen);
void fz_group_free(struct fz_group *g);

struct fz_act_layout fz_group_in_layout(const struct fz_group *g);
struct fz_act_layout fz_group_out_layout(const struct fz_group *g);
int fz_group_max_batch(const struct fz_group *g);

/*
 * Run on the caller's buffers from now on: `in` (max_batch * in_layout.sample_stride floats)
 * and `out` (max_batch * out_layout.sample_stride); NULL goes back to the group's own. A group's
 * output can be the next group's input, so a batch passes from group to group unmoved. The
 * input may be overwritten by a run (residual adds in place); in and out must differ.
 * Cheap (a few pointer updates per batch size). Returns 0, -EINVAL or -EIO.
 */
int fz_group_bind(struct fz_group *g, float *in, float *out);

/* Input buffer: max_batch * in_layout.sample_stride floats, filled by the caller. */
float *fz_group_input(struct fz_group *g);

/* Output ("tap") of the last run: n * out_layout.sample_stride floats. Caches read it. */
const float *fz_group_output(const struct fz_group *g);

/*
 * Run the group on the first n (1..max_batch) samples of its input buffer. The input buffer
 * may be overwritten (residual adds run in place). Returns 0, -EINVAL for a bad n, or -EIO when
 * oneDNN fails (logged with the call and status).
 */
int fz_group_run(struct fz_group *g, int n);

/* The ISA oneDNN dispatches to in this process ("avx512_core", "avx2", ...). */
const char *fz_stages_isa(void);

/*
 * One line per primitive kind and implementation the group's largest plan runs, e.g.
 * "block1.conv1: convolution jit:avx2"; written into buf (len bytes). Returns the line count.
 */
int fz_group_describe(const struct fz_group *g, char *buf, size_t len);

/* Build every batch size's primitives now instead of on first use (start-up of a stage). */
int fz_group_prepare_all(struct fz_group *g);

#endif /* FZ_STAGES_H */
