/* Freeze activation layouts: how one batch of activations sits in memory, as oneDNN chose it. */
#ifndef FZ_LAYOUT_H
#define FZ_LAYOUT_H

#include <stddef.h>

/*
 * Layout of a batch of activations handed between layer groups, to caches and from RX.
 * The batch is outermost; inside a sample, channels may be cut into blocks of `cblock`
 * (oneDNN's nChw8c, nChw16c, ... : any block size), or not at all (cblock 1: nchw, nhwc, ...).
 * Element (n, c, y, x) sits at
 *   n * sample_stride + (c / cblock) * c_stride + y * h_stride + x * w_stride + c % cblock
 * (all in floats). Channels are padded up to a multiple of cblock; sample_stride counts the
 * padding. It is read off the memory descriptor oneDNN's primitives asked for
 * (stages/: fz_net_layout), never assumed; `tag` names it for messages ("nChw8c", "nchw").
 */
struct fz_act_layout {
	int c, h, w;
	int cblock;
	size_t c_stride, h_stride, w_stride;
	size_t sample_stride; /* floats from one sample to the next */
	char tag[16];
};

/* Offset in floats of element (c, y, x) inside one sample. */
static inline size_t fz_layout_offset(const struct fz_act_layout *l, int c, int y, int x)
{
	return (size_t)(c / l->cblock) * l->c_stride + (size_t)y * l->h_stride +
	       (size_t)x * l->w_stride + (size_t)(c % l->cblock);
}

/* Is it the plain channel-major layout (nchw: one sample is C*H*W floats in CHW order)? */
static inline int fz_layout_is_nchw(const struct fz_act_layout *l)
{
	return l->cblock == 1 && l->w_stride == 1 && l->h_stride == (size_t)l->w &&
	       l->c_stride == (size_t)l->h * l->w && l->sample_stride == (size_t)l->c * l->h * l->w;
}

/* Are two layouts the same placement of the same shape? */
static inline int fz_layout_equal(const struct fz_act_layout *a, const struct fz_act_layout *b)
{
	return a->c == b->c && a->h == b->h && a->w == b->w && a->cblock == b->cblock &&
	       a->c_stride == b->c_stride && a->h_stride == b->h_stride &&
	       a->w_stride == b->w_stride && a->sample_stride == b->sample_stride;
}

#endif /* FZ_LAYOUT_H */
