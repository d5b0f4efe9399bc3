/* Boundary layouts: the memory layout of each value groups hand to each other, as oneDNN's
 * primitives ask for it (format_tag_any), read back from the memory descriptor. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include "net_pvt.h"

/* The batch the layouts are chosen at: a typical stage batch. Plans for other batch sizes use
 * the same per-sample layout and reorder only where a primitive wants another one. */
#define FZ_LAYOUT_BATCH 32

int fz_layout_from_md(const dnnl_memory_desc_t *md, struct fz_act_layout *l, char *err,
		      size_t errlen)
{
	const dnnl_blocking_desc_t *b = &md->format_desc.blocking;
	const char *why = NULL;
	memset(l, 0, sizeof(*l));
	if (md->ndims == 2) { /* N x C (inner product): one channel vector per sample */
		l->c = (int)md->dims[1];
		l->h = l->w = 1;
	} else if (md->ndims == 4) {
		l->c = (int)md->dims[1];
		l->h = (int)md->dims[2];
		l->w = (int)md->dims[3];
	} else {
		why = "not a 2D or 4D tensor";
	}
	if (!why && (md->data_type != dnnl_f32 || md->format_kind != dnnl_blocked))
		why = "not an f32 blocked layout";
	else if (!why && md->offset0 != 0)
		why = "it starts at an offset";
	else if (!why && (b->inner_nblks > 1 || (b->inner_nblks == 1 && b->inner_idxs[0] != 1)))
		why = "it blocks the batch or spatial dimensions, or has nested blocks";
	else if (!why && md->padded_dims[0] != md->dims[0])
		why = "it pads the batch";
	if (why) {
		snprintf(err, errlen, "oneDNN chose a layout Freeze cannot hand between groups: %s",
			 why);
		return -ENOTSUP;
	}
	l->cblock = b->inner_nblks ? (int)b->inner_blks[0] : 1;
	l->c_stride = (size_t)b->strides[1];
	l->h_stride = md->ndims == 4 ? (size_t)b->strides[2] : 0;
	l->w_stride = md->ndims == 4 ? (size_t)b->strides[3] : 0;
	l->sample_stride = (size_t)b->strides[0];
	/* the batch must be outermost: every sample in [0, sample_stride) of its own */
	size_t span = (l->c - 1) / l->cblock * l->c_stride + (size_t)(l->h - 1) * l->h_stride +
		      (size_t)(l->w - 1) * l->w_stride + (size_t)l->cblock;
	if (span > l->sample_stride) {
		snprintf(err, errlen,
			 "oneDNN chose a layout Freeze cannot hand between groups: the batch is "
			 "not outermost");
		return -ENOTSUP;
	}
	if (l->cblock > 1)
		snprintf(l->tag, sizeof(l->tag), "nChw%dc", l->cblock);
	else if (fz_layout_is_nchw(l) || (l->h == 1 && l->w == 1))
		snprintf(l->tag, sizeof(l->tag), "nchw");
	else if (l->c_stride == 1 && l->w_stride == (size_t)l->c)
		snprintf(l->tag, sizeof(l->tag), "nhwc");
	else
		snprintf(l->tag, sizeof(l->tag), "strided");
	return 0;
}

/* Read at each primitive creation (start-up, plan builds), so no state is shared between the
 * stage threads that compile their groups at once. */
static bool winograd_on(void)
{
	const char *e = getenv("FZ_CONV_WINOGRAD");
	return !(e && !strcmp(e, "0"));
}

/* Kernel classes: reference < gemm-based < a direct jit kernel (jit, brgemm, Winograd). */
static int impl_rank(const_dnnl_primitive_desc_t pd)
{
	const char *impl = NULL;
	if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success ||
	    !impl || !strncmp(impl, "ref", 3))
		return 0;
	return strstr(impl, "gemm:") ? 1 : 2;
}

/* Create pd for algorithm `alg` with source `src`; a reference kernel counts as a failure
 * when `no_ref` (another source layout may have a real one). */
static dnnl_status_t conv_try(dnnl_primitive_desc_t *pd, dnnl_alg_kind_t alg,
			      const dnnl_memory_desc_t *src, const dnnl_memory_desc_t *w,
			      const dnnl_memory_desc_t *b, const dnnl_memory_desc_t *dst,
			      const dnnl_dim_t *strides, const dnnl_dim_t *pad,
			      const dnnl_dim_t *padr, const_dnnl_primitive_attr_t attr,
			      dnnl_engine_t eng, bool no_ref)
{
	dnnl_convolution_desc_t cd;
	dnnl_status_t st = dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, alg,
							      src, w, b, dst, strides, pad, padr);
	if (st == dnnl_success)
		st = dnnl_primitive_desc_create(pd, &cd, attr, eng, NULL);
	if (st != dnnl_success || !no_ref)
		return st;
	const char *impl = NULL;
	if (dnnl_primitive_desc_query(*pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success &&
	    impl && !strncmp(impl, "ref", 3)) {
		dnnl_primitive_desc_destroy(*pd);
		*pd = NULL;
		return dnnl_unimplemented;
	}
	return dnnl_success;
}

void fz_pool_pads(const struct fz_node *nd, dnnl_dims_t pl, dnnl_dims_t pr)
{
	const struct fz_shape os = nd->out_shape, is = nd->in_shape;
	/* left pad as given; right pad so that the output is floor((H + 2p - k) / s) + 1 */
	const bool own = nd->op == FZ_NODE_MAXPOOL; /* avg/global pools: nd->pad (0) both sides */
	pl[0] = own ? nd->pad_t : nd->pad;
	pl[1] = own ? nd->pad_l : nd->pad;
	pr[0] = (os.h - 1) * nd->stride + nd->kernel - is.h - pl[0];
	pr[1] = (os.w - 1) * nd->stride + nd->kernel - is.w - pl[1];
	for (int k = 0; k < 2; k++)
		if (pr[k] < 0)
			pr[k] = 0;
}

dnnl_status_t fz_conv_pd_create(dnnl_primitive_desc_t *pd, const struct fz_node *nd, int n,
				const dnnl_memory_desc_t *src_hint,
				const_dnnl_primitive_attr_t attr, dnnl_engine_t eng)
{
	const struct fz_shape os = nd->out_shape, is = nd->in_shape;
	dnnl_memory_desc_t s, w, d, bm, hint;
	dnnl_dims_t sd = {n, is.c, is.h, is.w}, od = {n, os.c, os.h, os.w};
	const int g = nd->groups > 1 ? nd->groups : 1;
	/* grouped: G x OC/G x IC/G x K x K weights, which oneDNN takes as a grouped convolution */
	dnnl_dims_t wd = {os.c, is.c, nd->kernel, nd->kernel}, bd = {os.c};
	dnnl_dims_t wdg = {g, os.c / g, is.c / g, nd->kernel, nd->kernel};
	dnnl_dims_t strides = {nd->stride, nd->stride}, pad = {nd->pad_t, nd->pad_l}, padr;
	dnnl_status_t st;
	/* right padding so that the output size matches floor((H + top + bottom - k)/s) + 1 */
	for (int k = 0; k < 2; k++)
		padr[k] = ((k ? os.w : os.h) - 1) * nd->stride + nd->kernel - (k ? is.w : is.h) -
			  pad[k];
	if ((st = dnnl_memory_desc_init_by_tag(&s, 4, sd, dnnl_f32, dnnl_format_tag_any)) ||
	    (st = g > 1 ? dnnl_memory_desc_init_by_tag(&w, 5, wdg, dnnl_f32, dnnl_format_tag_any)
			: dnnl_memory_desc_init_by_tag(&w, 4, wd, dnnl_f32, dnnl_format_tag_any)) ||
	    (st = dnnl_memory_desc_init_by_tag(&d, 4, od, dnnl_f32, dnnl_format_tag_any)) ||
	    (st = dnnl_memory_desc_init_by_tag(&bm, 1, bd, dnnl_f32, dnnl_a)))
		return st;
	if (src_hint)
		fz_layout_md_batch(src_hint, n, &hint);
	/* Winograd F(4x4, 3x3) where this CPU has a kernel for it (AVX-512 in oneDNN 2.6): 2.25x
	 * fewer multiplies for 3x3 stride-1 convolutions (perf/README). Then the direct
	 * algorithm on the layout oneDNN asks for, or on the one the source already has when a
	 * kernel as good reads it there (no reorder). */
	if (g == 1 && nd->kernel == 3 && nd->stride == 1 && is.c >= 16 && winograd_on() &&
	    ((src_hint && conv_try(pd, dnnl_convolution_winograd, &hint, &w, &bm, &d, strides, pad,
				   padr, attr, eng, true) == dnnl_success) ||
	     conv_try(pd, dnnl_convolution_winograd, &s, &w, &bm, &d, strides, pad, padr, attr, eng,
		      true) == dnnl_success))
		return dnnl_success;
	if ((st = conv_try(pd, dnnl_convolution_direct, &s, &w, &bm, &d, strides, pad, padr, attr,
			   eng, false)) != dnnl_success || !src_hint ||
	    dnnl_memory_desc_equal(dnnl_primitive_desc_query_md(*pd, dnnl_query_src_md, 0), &hint))
		return st;
	dnnl_primitive_desc_t ph = NULL;
	if (conv_try(&ph, dnnl_convolution_direct, &hint, &w, &bm, &d, strides, pad, padr, attr, eng,
		     true) == dnnl_success) {
		if (impl_rank(ph) >= impl_rank(*pd)) { /* as good a kernel, and no reorder */
			dnnl_primitive_desc_destroy(*pd);
			*pd = ph;
		} else {
			dnnl_primitive_desc_destroy(ph);
		}
	}
	return dnnl_success;
}

void fz_layout_md_batch(const dnnl_memory_desc_t *ref, int n, dnnl_memory_desc_t *out)
{
	*out = *ref;
	out->dims[0] = out->padded_dims[0] = n;
}

/* Fill vmd[v] for value v from what its producer picks with format_tag_any. */
static int value_md(struct fz_net *net, dnnl_engine_t eng, int v, char *err, size_t errlen)
{
	const struct fz_node *nd = &net->nodes[v];
	const struct fz_shape os = nd->out_shape;
	dnnl_memory_desc_t *out = &net->vmd[v + 1];
	const dnnl_memory_desc_t *src = &net->vmd[nd->in + 1];
	dnnl_dims_t od = {FZ_LAYOUT_BATCH, os.c, os.h, os.w};
	dnnl_primitive_desc_t pd = NULL;
	dnnl_status_t st = dnnl_success;

	switch (nd->op) {
	case FZ_NODE_CONV:
		st = fz_conv_pd_create(&pd, nd, FZ_LAYOUT_BATCH,
				       nd->in == FZ_VALUE_INPUT ? NULL : src, NULL, eng);
		if (st == dnnl_success) {
			*out = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
			/* the model input takes the layout its first convolution asks for */
			if (nd->in == FZ_VALUE_INPUT && net->vmd[0].ndims == 0)
				net->vmd[0] = *dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
		}
		break;
	case FZ_NODE_AVGPOOL:
	case FZ_NODE_MAXPOOL: {
		dnnl_pooling_desc_t p;
		dnnl_memory_desc_t d;
		dnnl_dims_t st2 = {nd->stride, nd->stride}, kr = {nd->kernel, nd->kernel}, pl, pr;
		fz_pool_pads(nd, pl, pr);
		dnnl_memory_desc_init_by_tag(&d, 4, od, dnnl_f32, dnnl_format_tag_any);
		st = dnnl_pooling_forward_desc_init(&p, dnnl_forward_inference,
						    nd->op == FZ_NODE_MAXPOOL
							    ? dnnl_pooling_max
							    : dnnl_pooling_avg_exclude_padding,
						    src, &d, st2, kr, pl, pr);
		if (st == dnnl_success)
			st = dnnl_primitive_desc_create(&pd, &p, NULL, eng, NULL);
		if (st == dnnl_success)
			*out = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
		break;
	}
	case FZ_NODE_FC: /* plain N x O, seen downstream as N x O x 1 x 1 */
		st = dnnl_memory_desc_init_by_tag(out, 4, od, dnnl_f32, dnnl_abcd);
		break;
	case FZ_NODE_BN:
	case FZ_NODE_RELU:
	case FZ_NODE_ADD: /* element-wise: the output keeps the input's layout */
		*out = *src;
		break;
	}
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	if (st != dnnl_success) {
		snprintf(err, errlen, "%s: oneDNN cannot describe the output of '%s': %s",
			 net->model->path, nd->name, dnnl_status2str(st));
		return -EIO;
	}
	return 0;
}

int fz_net_layouts_init(struct fz_net *net, char *err, size_t errlen)
{
	dnnl_engine_t eng;
	int rc = 0;
	const struct fz_shape is = net->model->input.shape;
	net->vmd = calloc((size_t)net->n_nodes + 1, sizeof(*net->vmd));
	net->vlay = calloc((size_t)net->n_nodes + 1, sizeof(*net->vlay));
	net->vlay_ok = calloc((size_t)net->n_nodes + 1, sizeof(*net->vlay_ok));
	if (!net->vmd || !net->vlay || !net->vlay_ok) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (dnnl_engine_create(&eng, dnnl_cpu, 0) != dnnl_success) {
		snprintf(err, errlen, "oneDNN: cannot create the CPU engine");
		return -EIO;
	}
	for (int v = 0; v < net->n_nodes && !rc; v++)
		rc = value_md(net, eng, v, err, errlen);
	dnnl_engine_destroy(eng);
	if (rc)
		return rc;
	if (net->vmd[0].ndims == 0) { /* no convolution reads the input: plain */
		dnnl_dims_t d = {FZ_LAYOUT_BATCH, is.c, is.h, is.w};
		dnnl_memory_desc_init_by_tag(&net->vmd[0], 4, d, dnnl_f32, dnnl_abcd);
	}
	for (int v = 0; v <= net->n_nodes; v++) {
		char why[256];
		net->vlay_ok[v] = fz_layout_from_md(&net->vmd[v], &net->vlay[v], why,
						    sizeof(why)) == 0;
		if (!net->vlay_ok[v])
			snprintf(net->vlay[v].tag, sizeof(net->vlay[v].tag), "unusable");
	}
	if (!net->vlay_ok[0]) {
		snprintf(err, errlen, "%s: oneDNN chose a layout for the model input that Freeze "
				      "cannot fill", net->model->path);
		return -ENOTSUP;
	}
	return 0;
}

struct fz_act_layout fz_net_layout(const struct fz_net *net, int layer)
{
	int v = layer == FZ_INPUT_TENSOR ? FZ_VALUE_INPUT : net->layer_node[layer];
	return net->vlay[v + 1];
}

size_t fz_net_max_sample_floats(const struct fz_net *net)
{
	size_t m = 0;
	for (int v = 0; v <= net->n_nodes; v++)
		if (net->vlay_ok[v] && net->vlay[v].sample_stride > m)
			m = net->vlay[v].sample_stride;
	return m;
}
