/* Layer groups: a range of fused nodes compiled into oneDNN 2.6 primitives, one plan per batch
 * size, with activation buffers shared between plans and reused by liveness. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include "net_pvt.h"

/* Every oneDNN call goes through here: log the call and its status, then jump to `out`. */
#define FZ_DNNL(call)                                                                              \
	do {                                                                                       \
		dnnl_status_t st_ = (call);                                                        \
		if (st_ != dnnl_success) {                                                         \
			FZ_STAGES_LOG("%s:%d: %s failed: %s", __FILE__, __LINE__, #call,           \
				      dnnl_status2str(st_));                                       \
			rc = -EIO;                                                                 \
			goto out;                                                                  \
		}                                                                                  \
	} while (0)

#define FZ_MAX_ARGS 6

struct fz_prim {
	dnnl_primitive_t p;
	int nargs;
	dnnl_exec_arg_t args[FZ_MAX_ARGS];
};

struct fz_plan {
	int n;
	int nprims, cap_prims;
	struct fz_prim *prims;
	int nmems, cap_mems;
	dnnl_memory_t *mems;
	/* memories over the group's input and output buffers, re-pointed by fz_group_bind */
	int n_io, cap_io;
	dnnl_memory_t *io_mems;
	bool *io_is_out;
};

/* A node's weights reordered into a layout some primitive asked for. */
struct fz_wlayout {
	dnnl_memory_desc_t md;
	void *buf;
	struct fz_wlayout *next;
};

struct fz_buf {
	void *p;
	size_t size;
	int owner; /* value id living in it during a plan build, or FZ_VALUE_NONE when free */
};

struct fz_group {
	struct fz_net *net;
	int first, last, max_batch;
	int *nodes; /* node indices, in order */
	int n_nodes;
	int in_value;         /* value the group reads (FZ_VALUE_INPUT or a node index) */
	int *last_use;        /* per group position: position of last consumer */
	struct fz_shape in_shape, out_shape;
	struct fz_act_layout in_l, out_l;
	float *in_buf, *out_buf; /* where the plans read and write now (fz_group_bind) */
	float *own_in, *own_out; /* the group's own buffers */
	dnnl_engine_t eng;
	dnnl_stream_t stream;
	struct fz_plan **plans; /* [max_batch + 1] */
	struct fz_wlayout **wl; /* per group position */
	struct fz_wlayout **bl; /* bias/scale-shift of each position (plain layout) */
	struct fz_buf *bufs;
	int nbufs, cap_bufs;
	/* one user-managed scratchpad for every primitive of every plan (they never run at the
	 * same time): no allocation, no page faults on the data path */
	dnnl_primitive_attr_t attr; /* scratchpad mode user, no post-ops */
	void *scratch;
	size_t scratch_size;
	dnnl_memory_t *scratch_mems; /* re-pointed when the scratchpad grows */
	int n_scratch, cap_scratch;
	/* per group position: the implementation oneDNN picked (largest plan), for logs */
	char (*impl)[64];
	char refused[384]; /* why the last plan build was refused (a reference kernel) */
};

/* FZ_ALLOW_REF_KERNELS, read at each check (plan builds only, on several stage threads at
 * once: nothing is cached between them) */
static bool ref_allowed(void)
{
	const char *e = getenv("FZ_ALLOW_REF_KERNELS");
	return e && *e && strcmp(e, "0") != 0;
}

const char *fz_stages_isa(void)
{
	switch (dnnl_get_effective_cpu_isa()) {
	case dnnl_cpu_isa_sse41: return "sse41";
	case dnnl_cpu_isa_avx: return "avx";
	case dnnl_cpu_isa_avx2: return "avx2";
	case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
	case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
	case dnnl_cpu_isa_avx512_core: return "avx512_core";
	case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
	case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
	case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
	case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
	default: return "all";
	}
}

/*
 * Record which implementation oneDNN picked for group position `pos` and refuse a reference
 * one for the kinds that carry the compute (they run 100-1000x slower than a jit kernel).
 * Returns 0, or -EOPNOTSUPP with g->refused set.
 */
static int check_impl(struct fz_group *g, int pos, const char *kind, const_dnnl_primitive_desc_t pd,
		      bool heavy, int n)
{
	const char *impl = NULL;
	if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success ||
	    !impl)
		impl = "?";
	if (n == g->max_batch)
		snprintf(g->impl[pos], sizeof(g->impl[pos]), "%s %s", kind, impl);
	if (heavy && !strncmp(impl, "ref", 3) && !ref_allowed()) {
		snprintf(g->refused, sizeof(g->refused),
			 "'%s': oneDNN picked the reference %s kernel '%s' (batch %d, ISA %s): "
			 "about 1000x slower; set FZ_ALLOW_REF_KERNELS=1 to run it anyway",
			 g->net->nodes[g->nodes[pos]].name, kind, impl, n, fz_stages_isa());
		FZ_STAGES_LOG("%s", g->refused);
		return -EOPNOTSUPP;
	}
	return 0;
}

static void *aligned(size_t size)
{
	size = (size + 63) & ~(size_t)63;
	void *p = aligned_alloc(64, size ? size : 64);
	if (p)
		memset(p, 0, size);
	return p;
}

static int plan_add_mem(struct fz_plan *pl, dnnl_memory_t m)
{
	if (pl->nmems == pl->cap_mems) {
		int cap = pl->cap_mems ? pl->cap_mems * 2 : 16;
		dnnl_memory_t *nm = realloc(pl->mems, cap * sizeof(*nm));
		if (!nm)
			return -ENOMEM;
		pl->mems = nm;
		pl->cap_mems = cap;
	}
	pl->mems[pl->nmems++] = m;
	return 0;
}

static struct fz_prim *plan_add_prim(struct fz_plan *pl)
{
	if (pl->nprims == pl->cap_prims) {
		int cap = pl->cap_prims ? pl->cap_prims * 2 : 16;
		struct fz_prim *np = realloc(pl->prims, cap * sizeof(*np));
		if (!np)
			return NULL;
		pl->prims = np;
		pl->cap_prims = cap;
	}
	struct fz_prim *p = &pl->prims[pl->nprims++];
	memset(p, 0, sizeof(*p));
	return p;
}

static void plan_free(struct fz_plan *pl)
{
	if (!pl)
		return;
	for (int i = 0; i < pl->nprims; i++)
		dnnl_primitive_destroy(pl->prims[i].p);
	for (int i = 0; i < pl->nmems; i++)
		dnnl_memory_destroy(pl->mems[i]);
	free(pl->prims);
	free(pl->mems);
	free(pl->io_mems);
	free(pl->io_is_out);
	free(pl);
}

/* A memory object over `ptr` owned by the plan; NULL on failure. */
static dnnl_memory_t plan_mem(struct fz_group *g, struct fz_plan *pl, const dnnl_memory_desc_t *md,
			      void *ptr)
{
	dnnl_memory_t m;
	if (dnnl_memory_create(&m, md, g->eng, ptr) != dnnl_success)
		return NULL;
	if (plan_add_mem(pl, m) < 0) {
		dnnl_memory_destroy(m);
		return NULL;
	}
	if (ptr && (ptr == g->in_buf || ptr == g->out_buf)) {
		if (pl->n_io == pl->cap_io) {
			int cap = pl->cap_io ? 2 * pl->cap_io : 8;
			dnnl_memory_t *nm = realloc(pl->io_mems, cap * sizeof(*nm));
			if (nm)
				pl->io_mems = nm;
			bool *no = realloc(pl->io_is_out, cap * sizeof(*no));
			if (no)
				pl->io_is_out = no;
			if (!nm || !no)
				return NULL; /* the memory stays in pl->mems: freed with the plan */
			pl->cap_io = cap;
		}
		pl->io_mems[pl->n_io] = m;
		pl->io_is_out[pl->n_io++] = ptr == g->out_buf;
	}
	return m;
}

/* Take a free pooled buffer of at least `size` bytes for value `owner`. */
static void *buf_take(struct fz_group *g, size_t size, int owner)
{
	int best = -1;
	for (int i = 0; i < g->nbufs; i++)
		if (g->bufs[i].owner == FZ_VALUE_NONE && g->bufs[i].size >= size &&
		    (best < 0 || g->bufs[i].size < g->bufs[best].size))
			best = i;
	if (best < 0) {
		if (g->nbufs == g->cap_bufs) {
			int cap = g->cap_bufs ? g->cap_bufs * 2 : 8;
			struct fz_buf *nb = realloc(g->bufs, cap * sizeof(*nb));
			if (!nb)
				return NULL;
			g->bufs = nb;
			g->cap_bufs = cap;
		}
		void *p = aligned(size);
		if (!p)
			return NULL;
		best = g->nbufs++;
		g->bufs[best] = (struct fz_buf){.p = p, .size = size};
	}
	g->bufs[best].owner = owner;
	return g->bufs[best].p;
}

static void buf_release(struct fz_group *g, void *p)
{
	for (int i = 0; i < g->nbufs; i++)
		if (g->bufs[i].p == p)
			g->bufs[i].owner = FZ_VALUE_NONE;
}

static void buf_retag(struct fz_group *g, void *p, int owner)
{
	for (int i = 0; i < g->nbufs; i++)
		if (g->bufs[i].p == p)
			g->bufs[i].owner = owner;
}

static int md_plain(dnnl_memory_desc_t *md, int ndims, const dnnl_dim_t *dims)
{
	static const dnnl_format_tag_t tag[5] = {dnnl_format_tag_undef, dnnl_a, dnnl_ab, dnnl_abc,
						  dnnl_abcd};
	return dnnl_memory_desc_init_by_tag(md, ndims, dims, dnnl_f32, tag[ndims]) == dnnl_success
		       ? 0
		       : -EINVAL;
}

/* oneDNN descriptor of value `v`'s boundary layout (fz_net_layout) for a batch of n. */
static void md_boundary(const struct fz_group *g, dnnl_memory_desc_t *md, int v, int n)
{
	fz_layout_md_batch(&g->net->vmd[v + 1], n, md);
}

/* Run one reorder now (weights at plan build time). */
static int reorder_now(struct fz_group *g, const dnnl_memory_desc_t *src_md, void *src,
		       const dnnl_memory_desc_t *dst_md, void *dst)
{
	int rc = 0;
	dnnl_primitive_desc_t pd = NULL;
	dnnl_primitive_t p = NULL;
	dnnl_memory_t ms = NULL, md = NULL;
	FZ_DNNL(dnnl_reorder_primitive_desc_create(&pd, src_md, g->eng, dst_md, g->eng, NULL));
	FZ_DNNL(dnnl_primitive_create(&p, pd));
	FZ_DNNL(dnnl_memory_create(&ms, src_md, g->eng, src));
	FZ_DNNL(dnnl_memory_create(&md, dst_md, g->eng, dst));
	dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, ms}, {DNNL_ARG_TO, md}};
	FZ_DNNL(dnnl_primitive_execute(p, g->stream, 2, args));
	FZ_DNNL(dnnl_stream_wait(g->stream));
out:
	if (ms)
		dnnl_memory_destroy(ms);
	if (md)
		dnnl_memory_destroy(md);
	if (p)
		dnnl_primitive_destroy(p);
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	return rc;
}

/* Weights of group position `pos` in layout `want` (reordered once per distinct layout). */
static void *weights_in(struct fz_group *g, int pos, const dnnl_memory_desc_t *want,
			const dnnl_memory_desc_t *plain, const float *w)
{
	for (struct fz_wlayout *l = g->wl[pos]; l; l = l->next)
		if (dnnl_memory_desc_equal(&l->md, want))
			return l->buf;
	struct fz_wlayout *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->md = *want;
	l->buf = aligned(dnnl_memory_desc_get_size(want));
	if (!l->buf || reorder_now(g, plain, (void *)w, want, l->buf) < 0) {
		free(l->buf);
		free(l);
		return NULL;
	}
	l->next = g->wl[pos];
	g->wl[pos] = l;
	return l->buf;
}

/* Create the primitive of `pd` into pr and give it the group's scratchpad. */
static int prim_create(struct fz_group *g, struct fz_plan *pl, struct fz_prim *pr,
		       const_dnnl_primitive_desc_t pd)
{
	int rc = 0;
	FZ_DNNL(dnnl_primitive_create(&pr->p, pd));
	const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
	size_t size = smd ? dnnl_memory_desc_get_size(smd) : 0;
	if (!size)
		return 0;
	if (size > g->scratch_size) {
		void *nb = aligned(size);
		if (!nb)
			return -ENOMEM;
		for (int i = 0; i < g->n_scratch; i++)
			FZ_DNNL(dnnl_memory_set_data_handle(g->scratch_mems[i], nb));
		free(g->scratch);
		g->scratch = nb;
		g->scratch_size = size;
	}
	if (g->n_scratch == g->cap_scratch) {
		int cap = g->cap_scratch ? 2 * g->cap_scratch : 32;
		dnnl_memory_t *nm = realloc(g->scratch_mems, cap * sizeof(*nm));
		if (!nm)
			return -ENOMEM;
		g->scratch_mems = nm;
		g->cap_scratch = cap;
	}
	dnnl_memory_t m = plan_mem(g, pl, smd, g->scratch);
	if (!m)
		return -ENOMEM;
	g->scratch_mems[g->n_scratch++] = m;
	pr->args[pr->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, m};
out:
	return rc;
}

/* Append a reorder primitive (src -> dst) to the plan. */
static int plan_reorder(struct fz_group *g, struct fz_plan *pl, const dnnl_memory_desc_t *smd,
			void *s, const dnnl_memory_desc_t *dmd, void *d)
{
	int rc = 0;
	dnnl_primitive_desc_t pd = NULL;
	struct fz_prim *pr = plan_add_prim(pl);
	dnnl_memory_t ms = plan_mem(g, pl, smd, s), md = plan_mem(g, pl, dmd, d);
	if (!pr || !ms || !md)
		return -ENOMEM;
	FZ_DNNL(dnnl_reorder_primitive_desc_create(&pd, smd, g->eng, dmd, g->eng, g->attr));
	pr->nargs = 2;
	pr->args[0] = (dnnl_exec_arg_t){DNNL_ARG_FROM, ms};
	pr->args[1] = (dnnl_exec_arg_t){DNNL_ARG_TO, md};
	if ((rc = prim_create(g, pl, pr, pd)) < 0)
		goto out;
out:
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	if (rc < 0)
		pl->nprims--;
	return rc;
}

/* A primitive reading src, weights and bias into dst (convolution, inner product). */
static int plan_weighted(struct fz_group *g, struct fz_plan *pl, const_dnnl_primitive_desc_t pd,
			 const dnnl_memory_desc_t *smd, void *src, const dnnl_memory_desc_t *wmd,
			 void *w, const dnnl_memory_desc_t *bmd, void *b,
			 const dnnl_memory_desc_t *dmd, void *dst)
{
	struct fz_prim *pr;
	dnnl_memory_t ms = plan_mem(g, pl, smd, src);
	dnnl_memory_t mw = w ? plan_mem(g, pl, wmd, w) : NULL;
	dnnl_memory_t mb = plan_mem(g, pl, bmd, b);
	dnnl_memory_t md = dst ? plan_mem(g, pl, dmd, dst) : NULL;
	if (!ms || !mw || !mb || !md || !(pr = plan_add_prim(pl)))
		return -ENOMEM;
	pr->nargs = 4;
	pr->args[0] = (dnnl_exec_arg_t){DNNL_ARG_SRC, ms};
	pr->args[1] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, mw};
	pr->args[2] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, mb};
	pr->args[3] = (dnnl_exec_arg_t){DNNL_ARG_DST, md};
	return prim_create(g, pl, pr, pd);
}

/* Per-value state while building one plan. */
struct vstate {
	dnnl_memory_desc_t md;
	void *buf;
};

static struct vstate *vs_of(struct fz_group *g, struct vstate *vs, int value)
{
	/* slot 0 holds the group input; slot pos+1 the node at group position pos */
	if (value == g->in_value)
		return &vs[0];
	for (int p = 0; p < g->n_nodes; p++)
		if (g->nodes[p] == value)
			return &vs[p + 1];
	return NULL;
}

static int pos_of(const struct fz_group *g, int value)
{
	for (int p = 0; p < g->n_nodes; p++)
		if (g->nodes[p] == value)
			return p;
	return -1; /* the group input */
}

/* Is `value` still read after group position `pos`? */
static bool live_after(const struct fz_group *g, int value, int pos)
{
	int vp = pos_of(g, value);
	int lu = g->last_use[vp + 1];
	return lu > pos;
}

/*
 * The primitive `pd` was created with its source as format_tag_any: if the layout it asked for
 * differs from where the source value lives, reorder the value into a fresh buffer first and
 * point *src at `copy`, which describes it (*tmp: the buffer, released after the node).
 */
static int src_as_asked(struct fz_group *g, struct fz_plan *pl, const_dnnl_primitive_desc_t pd,
			int pos, struct vstate **src, struct vstate *copy, void **tmp)
{
	const dnnl_memory_desc_t *want = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
	if (dnnl_memory_desc_equal(want, &(*src)->md))
		return 0;
	void *b = buf_take(g, dnnl_memory_desc_get_size(want), -3 - pos);
	if (!b)
		return -ENOMEM;
	int rc = plan_reorder(g, pl, &(*src)->md, (*src)->buf, want, b);
	if (rc < 0) {
		buf_release(g, b);
		return rc;
	}
	copy->md = *want;
	copy->buf = b;
	*src = copy;
	*tmp = b;
	return 0;
}

static int build_node(struct fz_group *g, struct fz_plan *pl, struct vstate *vs, int pos)
{
	const struct fz_node *nd = &g->net->nodes[g->nodes[pos]];
	const int n = pl->n;
	const bool is_out = pos == g->n_nodes - 1;
	struct vstate *src = vs_of(g, vs, nd->in), *dst = &vs[pos + 1];
	dnnl_primitive_desc_t pd = NULL;
	dnnl_primitive_attr_t attr = NULL;
	dnnl_post_ops_t po = NULL;
	dnnl_memory_desc_t out_md, dst_md;
	int rc = 0;
	struct fz_prim *pr;
	const struct fz_shape os = nd->out_shape;
	dnnl_dims_t odims = {n, os.c, os.h, os.w};

	void *tmp_src = NULL; /* the input reordered into the layout the primitive asked for */
	struct vstate src_copy; /* describes tmp_src */
	md_boundary(g, &out_md, g->nodes[g->n_nodes - 1], n);

	switch (nd->op) {
	case FZ_NODE_CONV: {
		dnnl_memory_desc_t wmd, bmd, wplain;
		dnnl_dims_t wd = {os.c, nd->in_shape.c, nd->kernel, nd->kernel}, bd = {os.c};
		const int ng = nd->groups > 1 ? nd->groups : 1;
		dnnl_dims_t wdg = {ng, os.c / ng, nd->in_shape.c / ng, nd->kernel, nd->kernel};
		/* the file's [oc, ic / g, k, k] is the plain G x OC/G x IC/G x K x K of a grouped one */
		if (ng > 1)
			FZ_DNNL(dnnl_memory_desc_init_by_tag(&wplain, 5, wdg, dnnl_f32, dnnl_abcde));
		else
			md_plain(&wplain, 4, wd);
		md_plain(&bmd, 1, bd);
		FZ_DNNL(dnnl_post_ops_create(&po));
		if (nd->relu_pre)
			FZ_DNNL(dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_relu, 0.f, 0.f));
		if (nd->sum_in != FZ_VALUE_NONE)
			FZ_DNNL(dnnl_post_ops_append_sum(po, 1.f));
		if (nd->relu)
			FZ_DNNL(dnnl_post_ops_append_eltwise(po, 1.f, dnnl_eltwise_relu, 0.f, 0.f));
		FZ_DNNL(dnnl_primitive_attr_create(&attr));
		FZ_DNNL(dnnl_primitive_attr_set_post_ops(attr, po));
		FZ_DNNL(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
		FZ_DNNL(fz_conv_pd_create(&pd, nd, n, &src->md, attr, g->eng));
		if ((rc = check_impl(g, pos, "convolution", pd, true, n)) < 0 ||
		    (rc = src_as_asked(g, pl, pd, pos, &src, &src_copy, &tmp_src)) < 0)
			goto out;
		dst_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
		wmd = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
		void *wbuf = weights_in(g, pos, &wmd, &wplain, nd->w);
		if (!wbuf) {
			rc = -ENOMEM;
			goto out;
		}
		/* destination: the output buffer, the shortcut's buffer in place, or a fresh one */
		bool out_direct = is_out && dnnl_memory_desc_equal(&dst_md, &out_md);
		if (nd->sum_in != FZ_VALUE_NONE) {
			struct vstate *sc = vs_of(g, vs, nd->sum_in);
			bool same = dnnl_memory_desc_equal(&sc->md, &dst_md);
			/* in place only when the convolution does not read that buffer too
			 * (y + conv(y): writing the sum over y while reading y is wrong) */
			if (!out_direct && same && !live_after(g, nd->sum_in, pos) &&
			    sc->buf != g->out_buf && sc->buf != src->buf) {
				dst->buf = sc->buf;
				buf_retag(g, sc->buf, g->nodes[pos]);
			} else {
				dst->buf = out_direct ? g->out_buf
						      : buf_take(g, dnnl_memory_desc_get_size(&dst_md),
								 g->nodes[pos]);
				if (!dst->buf || (rc = plan_reorder(g, pl, &sc->md, sc->buf, &dst_md,
								    dst->buf)) < 0)
					goto out;
			}
		} else {
			dst->buf = out_direct ? g->out_buf
					      : buf_take(g, dnnl_memory_desc_get_size(&dst_md),
							 g->nodes[pos]);
		}
		dst->md = dst_md;
		rc = plan_weighted(g, pl, pd, &src->md, src->buf, &wmd, wbuf, &bmd, nd->b, &dst_md,
				   dst->buf);
		break;
	}
	case FZ_NODE_FC: {
		dnnl_inner_product_desc_t ipd;
		int k = nd->in_shape.c;
		dnnl_dims_t wd = {os.c, k, nd->in_shape.h, nd->in_shape.w}, bd = {os.c};
		dnnl_dims_t dd = {n, os.c};
		dnnl_memory_desc_t wmd, wplain, bmd, d2;
		dnnl_memory_desc_t src_any;
		dnnl_dims_t sdims = {n, k, nd->in_shape.h, nd->in_shape.w};
		FZ_DNNL(dnnl_memory_desc_init_by_tag(&src_any, 4, sdims, dnnl_f32,
						     dnnl_format_tag_any));
		FZ_DNNL(dnnl_memory_desc_init_by_tag(&wmd, 4, wd, dnnl_f32, dnnl_format_tag_any));
		md_plain(&wplain, 4, wd);
		md_plain(&bmd, 1, bd);
		md_plain(&d2, 2, dd);
		FZ_DNNL(dnnl_inner_product_forward_desc_init(&ipd, dnnl_forward_inference, &src_any,
							     &wmd, &bmd, &d2));
		FZ_DNNL(dnnl_primitive_desc_create(&pd, &ipd, g->attr, g->eng, NULL));
		if ((rc = check_impl(g, pos, "inner_product", pd, true, n)) < 0 ||
		    (rc = src_as_asked(g, pl, pd, pos, &src, &src_copy, &tmp_src)) < 0)
			goto out;
		wmd = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
		void *wbuf = weights_in(g, pos, &wmd, &wplain, nd->w);
		if (!wbuf) {
			rc = -ENOMEM;
			goto out;
		}
		/* downstream sees the plain 2D result as N x O x 1 x 1 */
		md_plain(&dst_md, 4, odims);
		bool out_direct = is_out && dnnl_memory_desc_equal(&dst_md, &out_md);
		dst->buf = out_direct ? g->out_buf
				      : buf_take(g, dnnl_memory_desc_get_size(&dst_md), g->nodes[pos]);
		dst->md = dst_md;
		rc = plan_weighted(g, pl, pd, &src->md, src->buf, &wmd, wbuf, &bmd, nd->b, &d2,
				   dst->buf);
		break;
	}
	case FZ_NODE_AVGPOOL:
	case FZ_NODE_MAXPOOL: {
		dnnl_pooling_desc_t pdsc;
		dnnl_dims_t st = {nd->stride, nd->stride}, kr = {nd->kernel, nd->kernel}, pl, pr;
		fz_pool_pads(nd, pl, pr);
		FZ_DNNL(dnnl_memory_desc_init_by_tag(&dst_md, 4, odims, dnnl_f32,
						     dnnl_format_tag_any));
		FZ_DNNL(dnnl_pooling_forward_desc_init(&pdsc, dnnl_forward_inference,
						       nd->op == FZ_NODE_MAXPOOL
							       ? dnnl_pooling_max
							       : dnnl_pooling_avg_exclude_padding,
						       &src->md, &dst_md, st, kr, pl, pr));
		FZ_DNNL(dnnl_primitive_desc_create(&pd, &pdsc, g->attr, g->eng, NULL));
		if ((rc = check_impl(g, pos, "pooling", pd, true, n)) < 0)
			goto out;
		goto unary;
	}
	case FZ_NODE_RELU: {
		dnnl_eltwise_desc_t ed;
		FZ_DNNL(dnnl_eltwise_forward_desc_init(&ed, dnnl_forward_inference,
						       dnnl_eltwise_relu, &src->md, 0.f, 0.f));
		FZ_DNNL(dnnl_primitive_desc_create(&pd, &ed, g->attr, g->eng, NULL));
		check_impl(g, pos, "eltwise", pd, false, n);
		goto unary;
	}
	case FZ_NODE_BN: {
		dnnl_batch_normalization_desc_t bd;
		const struct fz_layer *ly = &g->net->model->layers[nd->layer];
		FZ_DNNL(dnnl_batch_normalization_forward_desc_init(
			&bd, dnnl_forward_inference, &src->md, ly->eps,
			dnnl_use_global_stats | dnnl_use_scaleshift));
		FZ_DNNL(dnnl_primitive_desc_create(&pd, &bd, g->attr, g->eng, NULL));
		check_impl(g, pos, "batch_normalization", pd, false, n);
		goto unary;
	}
	case FZ_NODE_ADD: {
		dnnl_binary_desc_t bd;
		struct vstate *s2 = vs_of(g, vs, nd->in2);
		FZ_DNNL(dnnl_binary_desc_init(&bd, dnnl_binary_add, &src->md, &s2->md, &src->md));
		FZ_DNNL(dnnl_primitive_desc_create(&pd, &bd, g->attr, g->eng, NULL));
		check_impl(g, pos, "binary", pd, false, n);
		goto unary;
	}
	}
	goto out;

unary:
	/* single-output primitives: pooling, eltwise, batch norm, binary */
	dst_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
	{
		bool out_direct = is_out && dnnl_memory_desc_equal(&dst_md, &out_md);
		bool inplace = nd->op != FZ_NODE_AVGPOOL && nd->op != FZ_NODE_MAXPOOL &&
			       !out_direct &&
			       !live_after(g, nd->in, pos) && src->buf != g->out_buf &&
			       dnnl_memory_desc_equal(&src->md, &dst_md);
		if (out_direct)
			dst->buf = g->out_buf;
		else if (inplace) {
			dst->buf = src->buf;
			buf_retag(g, src->buf, g->nodes[pos]);
		} else
			dst->buf = buf_take(g, dnnl_memory_desc_get_size(&dst_md), g->nodes[pos]);
		dst->md = dst_md;
		dnnl_memory_t ms = plan_mem(g, pl, &src->md, src->buf);
		dnnl_memory_t md = dst->buf ? plan_mem(g, pl, &dst_md, dst->buf) : NULL;
		if (!(pr = plan_add_prim(pl)) || !ms || !md) {
			rc = -ENOMEM;
			goto out;
		}
		if ((rc = prim_create(g, pl, pr, pd)) < 0)
			goto out;
		pr->args[pr->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST, md};
		if (nd->op == FZ_NODE_ADD) {
			struct vstate *s2 = vs_of(g, vs, nd->in2);
			dnnl_memory_t m2 = plan_mem(g, pl, &s2->md, s2->buf);
			if (!m2) {
				rc = -ENOMEM;
				goto out;
			}
			pr->args[pr->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC_0, ms};
			pr->args[pr->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC_1, m2};
		} else {
			pr->args[pr->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, ms};
		}
		if (nd->op == FZ_NODE_BN) {
			/* scale/shift are pre-folded: mean 0 and variance 1 - eps make
			 * (x - mean) / sqrt(var + eps) the identity */
			int c = nd->in_shape.c;
			if (!g->bl[pos]) {
				const struct fz_layer *ly = &g->net->model->layers[nd->layer];
				struct fz_wlayout *l = calloc(1, sizeof(*l));
				float *b = l ? aligned(4 * c * sizeof(float)) : NULL;
				if (!b) {
					free(l);
					rc = -ENOMEM;
					goto out;
				}
				memcpy(b, nd->scale, c * sizeof(float));
				memcpy(b + c, nd->shift, c * sizeof(float));
				for (int i = 0; i < c; i++)
					b[3 * c + i] = 1.f - ly->eps;
				l->buf = b;
				g->bl[pos] = l;
			}
			float *b = g->bl[pos]->buf;
			dnnl_memory_desc_t ss, mv;
			dnnl_dims_t ssd = {2, c}, mvd = {c};
			md_plain(&ss, 2, ssd);
			md_plain(&mv, 1, mvd);
			dnnl_memory_t mss = plan_mem(g, pl, &ss, b);
			dnnl_memory_t mm = plan_mem(g, pl, &mv, b + 2 * c);
			dnnl_memory_t mvv = plan_mem(g, pl, &mv, b + 3 * c);
			if (!mss || !mm || !mvv) {
				rc = -ENOMEM;
				goto out;
			}
			pr->args[pr->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCALE_SHIFT, mss};
			pr->args[pr->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_MEAN, mm};
			pr->args[pr->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_VARIANCE, mvv};
		}
	}
out:
	if (tmp_src)
		buf_release(g, tmp_src);
	if (po)
		dnnl_post_ops_destroy(po);
	if (attr)
		dnnl_primitive_attr_destroy(attr);
	if (pd)
		dnnl_primitive_desc_destroy(pd);
	return rc;
}

static int build_plan(struct fz_group *g, int n)
{
	struct fz_plan *pl = calloc(1, sizeof(*pl));
	struct vstate *vs = calloc(g->n_nodes + 1, sizeof(*vs));
	int rc = -ENOMEM;
	const int n_scratch = g->n_scratch;
	if (!pl || !vs)
		goto fail;
	pl->n = n;
	for (int i = 0; i < g->nbufs; i++)
		g->bufs[i].owner = FZ_VALUE_NONE;
	md_boundary(g, &vs[0].md, g->in_value, n);
	vs[0].buf = g->in_buf;
	for (int pos = 0; pos < g->n_nodes; pos++) {
		if ((rc = build_node(g, pl, vs, pos)) < 0)
			goto fail;
		/* free what no later node reads */
		for (int v = 0; v <= g->n_nodes; v++) {
			if (g->last_use[v] == pos && vs[v].buf && vs[v].buf != g->in_buf &&
			    vs[v].buf != g->out_buf && vs[v].buf != vs[pos + 1].buf)
				buf_release(g, vs[v].buf);
		}
	}
	struct vstate *last = &vs[g->n_nodes];
	if (last->buf != g->out_buf) {
		dnnl_memory_desc_t out_md;
		md_boundary(g, &out_md, g->nodes[g->n_nodes - 1], n);
		if ((rc = plan_reorder(g, pl, &last->md, last->buf, &out_md, g->out_buf)) < 0)
			goto fail;
	}
	g->plans[n] = pl;
	free(vs);
	return 0;
fail:
	if (rc != -EOPNOTSUPP)
		FZ_STAGES_LOG("layers %s..%s: cannot build the plan for batch %d (%d)",
			      g->net->model->layers[g->first].name,
			      g->net->model->layers[g->last].name, n, rc);
	g->n_scratch = n_scratch; /* the failed plan's scratchpad memories go with it */
	plan_free(pl);
	free(vs);
	return rc < 0 ? rc : -EIO;
}

struct fz_group *fz_group_create(struct fz_net *net, int first, int last, int max_batch,
				 char *err, size_t errlen)
{
	const struct fz_model *m = net->model;
	struct fz_group *g = NULL;
	int rc = -EINVAL;

	if (first < 0 || last >= m->n_layers || first > last || max_batch < 1) {
		snprintf(err, errlen, "layer range %d..%d or max batch %d out of range", first,
			 last, max_batch);
		goto fail;
	}
	if (!(g = calloc(1, sizeof(*g)))) {
		rc = -ENOMEM;
		goto fail;
	}
	g->net = net;
	g->first = first;
	g->last = last;
	g->max_batch = max_batch;
	g->nodes = calloc(net->n_nodes, sizeof(int));
	g->last_use = calloc(net->n_nodes + 1, sizeof(int));
	if (!g->nodes || !g->last_use) {
		rc = -ENOMEM;
		goto fail;
	}
	/* the group's input: what layer `first` reads */
	const struct fz_layer *fl = &m->layers[first];
	g->in_value = fl->inputs[0] == FZ_INPUT_TENSOR ? FZ_VALUE_INPUT
						       : net->layer_node[fl->inputs[0]];
	g->in_shape = fl->in;
	g->out_shape = m->layers[last].out;
	for (int i = 0; i < net->n_nodes; i++) {
		const struct fz_node *nd = &net->nodes[i];
		bool inside = nd->layer >= first && nd->layer <= last;
		bool starts_inside = nd->first_layer >= first && nd->first_layer <= last;
		if (inside != starts_inside) {
			snprintf(err, errlen,
				 "layers %s..%s cut the fused node '%s' (layers %s..%s): a group must "
				 "start and end on fused-node boundaries",
				 fl->name, m->layers[last].name, nd->name,
				 m->layers[nd->first_layer].name, m->layers[nd->layer].name);
			goto fail;
		}
		if (inside)
			g->nodes[g->n_nodes++] = i;
	}
	if (net->nodes[g->nodes[g->n_nodes - 1]].layer != last ||
	    net->layer_node[last] != g->nodes[g->n_nodes - 1]) {
		snprintf(err, errlen, "layer '%s' is fused into a later layer; end the group there",
			 m->layers[last].name);
		goto fail;
	}
	/* liveness; every value read must come from inside or be the group input, and nothing
	 * but the last layer's output may be read after the group */
	for (int v = 0; v <= g->n_nodes; v++)
		g->last_use[v] = -1;
	g->last_use[g->n_nodes] = g->n_nodes; /* the output outlives the group */
	for (int pos = 0; pos < g->n_nodes; pos++) {
		const struct fz_node *nd = &net->nodes[g->nodes[pos]];
		int reads[3] = {nd->in, nd->in2, nd->sum_in};
		for (int r = 0; r < 3; r++) {
			if (reads[r] == FZ_VALUE_NONE)
				continue;
			int vp = reads[r] == g->in_value ? -1 : pos_of(g, reads[r]);
			if (vp < 0 && reads[r] != g->in_value) {
				snprintf(err, errlen,
					 "'%s' reads a tensor from before layer '%s' other than the "
					 "group's input; start the group earlier",
					 nd->name, fl->name);
				goto fail;
			}
			g->last_use[vp + 1] = pos;
		}
	}
	for (int i = 0; i < net->n_nodes; i++) {
		const struct fz_node *nd = &net->nodes[i];
		if (nd->first_layer <= last)
			continue;
		int reads[3] = {nd->in, nd->in2, nd->sum_in};
		for (int r = 0; r < 3; r++)
			if (reads[r] >= 0 && pos_of(g, reads[r]) >= 0 &&
			    reads[r] != g->nodes[g->n_nodes - 1]) {
				snprintf(err, errlen,
					 "'%s' reads a tensor from inside layers %s..%s; end the group "
					 "later",
					 nd->name, fl->name, m->layers[last].name);
				goto fail;
			}
	}
	if (!net->vlay_ok[g->in_value + 1] || !net->vlay_ok[g->nodes[g->n_nodes - 1] + 1]) {
		snprintf(err, errlen,
			 "layers %s..%s: oneDNN's layout at the group's %s cannot be handed between "
			 "groups; cut the model elsewhere",
			 fl->name, m->layers[last].name,
			 net->vlay_ok[g->in_value + 1] ? "output" : "input");
		rc = -ENOTSUP;
		goto fail;
	}
	g->in_l = net->vlay[g->in_value + 1];
	g->out_l = net->vlay[g->nodes[g->n_nodes - 1] + 1];
	g->impl = calloc(g->n_nodes, sizeof(*g->impl));
	g->in_buf = g->own_in = aligned(g->in_l.sample_stride * max_batch * sizeof(float));
	g->out_buf = g->own_out = aligned(g->out_l.sample_stride * max_batch * sizeof(float));
	g->plans = calloc(max_batch + 1, sizeof(*g->plans));
	g->wl = calloc(g->n_nodes, sizeof(*g->wl));
	g->bl = calloc(g->n_nodes, sizeof(*g->bl));
	if (!g->in_buf || !g->out_buf || !g->plans || !g->wl || !g->bl || !g->impl) {
		rc = -ENOMEM;
		goto fail;
	}
	if (dnnl_engine_create(&g->eng, dnnl_cpu, 0) != dnnl_success ||
	    dnnl_stream_create(&g->stream, g->eng, dnnl_stream_default_flags) != dnnl_success ||
	    dnnl_primitive_attr_create(&g->attr) != dnnl_success ||
	    dnnl_primitive_attr_set_scratchpad_mode(g->attr, dnnl_scratchpad_mode_user) !=
		    dnnl_success) {
		snprintf(err, errlen, "oneDNN: cannot create the CPU engine or stream");
		rc = -EIO;
		goto fail;
	}
	/* the largest batch first: it sizes the shared activation buffers */
	if ((rc = build_plan(g, max_batch)) < 0) {
		if (rc == -EOPNOTSUPP)
			snprintf(err, errlen, "layers %s..%s: %s", fl->name, m->layers[last].name,
				 g->refused);
		else
			snprintf(err, errlen, "layers %s..%s: oneDNN refused to compile batch %d",
				 fl->name, m->layers[last].name, max_batch);
		goto fail;
	}
	return g;
fail:
	fz_group_free(g);
	errno = -rc;
	return NULL;
}

int fz_group_prepare_all(struct fz_group *g)
{
	for (int n = 1; n <= g->max_batch; n++)
		if (!g->plans[n]) {
			int rc = build_plan(g, n);
			if (rc < 0)
				return rc;
		}
	return 0;
}

int fz_group_bind(struct fz_group *g, float *in, float *out)
{
	float *ni = in ? in : g->own_in, *no = out ? out : g->own_out;
	if (ni == no)
		return -EINVAL;
	g->in_buf = ni; /* fz_group_run points the plan it runs at them */
	g->out_buf = no;
	return 0;
}

/* Point plan pl's input and output memories at the buffers bound now. */
static int plan_point(struct fz_group *g, const struct fz_plan *pl)
{
	int rc = 0;
	for (int i = 0; i < pl->n_io; i++)
		FZ_DNNL(dnnl_memory_set_data_handle(pl->io_mems[i],
						    pl->io_is_out[i] ? g->out_buf : g->in_buf));
out:
	return rc;
}

int fz_group_run(struct fz_group *g, int n)
{
	int rc = 0;
	if (n < 1 || n > g->max_batch)
		return -EINVAL;
	if (!g->plans[n] && (rc = build_plan(g, n)) < 0)
		return rc;
	const struct fz_plan *pl = g->plans[n];
	if ((rc = plan_point(g, pl)) < 0)
		return rc;
	for (int i = 0; i < pl->nprims; i++)
		FZ_DNNL(dnnl_primitive_execute(pl->prims[i].p, g->stream, pl->prims[i].nargs,
					       pl->prims[i].args));
	FZ_DNNL(dnnl_stream_wait(g->stream));
out:
	return rc;
}

void fz_group_free(struct fz_group *g)
{
	if (!g)
		return;
	if (g->plans)
		for (int n = 0; n <= g->max_batch; n++)
			plan_free(g->plans[n]);
	for (int p = 0; g->wl && p < g->n_nodes; p++)
		for (struct fz_wlayout *l = g->wl[p], *nx; l; l = nx) {
			nx = l->next;
			free(l->buf);
			free(l);
		}
	for (int p = 0; g->bl && p < g->n_nodes; p++)
		if (g->bl[p]) {
			free(g->bl[p]->buf);
			free(g->bl[p]);
		}
	for (int i = 0; i < g->nbufs; i++)
		free(g->bufs[i].p);
	if (g->attr)
		dnnl_primitive_attr_destroy(g->attr);
	free(g->scratch);
	free(g->scratch_mems);
	if (g->stream)
		dnnl_stream_destroy(g->stream);
	if (g->eng)
		dnnl_engine_destroy(g->eng);
	free(g->bufs);
	free(g->plans);
	free(g->wl);
	free(g->bl);
	free(g->own_in);
	free(g->own_out);
	free(g->nodes);
	free(g->last_use);
	free(g->impl);
	free(g);
}

int fz_group_describe(const struct fz_group *g, char *buf, size_t len)
{
	int lines = 0;
	size_t off = 0;
	if (len)
		buf[0] = 0;
	for (int p = 0; p < g->n_nodes; p++) {
		if (!g->impl[p][0])
			continue;
		int w = snprintf(buf + off, off < len ? len - off : 0, "%s%s: %s", lines ? "\n" : "",
				 g->net->nodes[g->nodes[p]].name, g->impl[p]);
		if (w > 0)
			off += (size_t)w;
		lines++;
	}
	return lines;
}

struct fz_act_layout fz_group_in_layout(const struct fz_group *g)
{
	return g->in_l;
}

struct fz_act_layout fz_group_out_layout(const struct fz_group *g)
{
	return g->out_l;
}

int fz_group_max_batch(const struct fz_group *g)
{
	return g->max_batch;
}

float *fz_group_input(struct fz_group *g)
{
	return g->in_buf;
}

const float *fz_group_output(const struct fz_group *g)
{
	return g->out_buf;
}
