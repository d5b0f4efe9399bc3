/* Freeze cachecore kernel template: pooling, projection, distances and scans, compiled once per ISA level. */
/*
 * Included by kern_portable.c, kern_avx2.c and kern_avx512.c, each after setting the target ISA,
 * FZ_KERN (portable, avx2, avx512) and FZ_KERN_VW (floats per hardware vector: 4, 8, 16): the
 * same source becomes three kernel tables, and cpu.c picks one at run time. A kv16 is 16 float
 * lanes held as 16 / FZ_KERN_VW hardware vectors (GCC/clang vector extensions): one zmm with
 * AVX-512, two ymm with AVX2, four xmm on baseline x86-64.
 *
 * Results are the same bits on every level: every operation is lane by lane, reductions across
 * lanes follow one written-out tree (hsum16), nothing is reassociated, and FMA contraction is
 * off (cachecore/meson.build: -ffp-contract=off; the STDC pragma below for clang), so a product
 * is always rounded before it is added whatever the ISA.
 */
#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "cache_pvt.h"

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#else
/* the vector helpers below are always inlined: no vector crosses a call, whatever the ABI */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#define KCAT2(a, b) a##_##b
#define KCAT(a, b) KCAT2(a, b)
#define KSTR2(a) #a
#define KSTR(a) KSTR2(a)

#ifndef FZ_KERN_VW
#define FZ_KERN_VW 4
#endif
#define VW FZ_KERN_VW
#define NP (FZ_BLK / VW) /* hardware vectors per kv16 */

typedef float kvn __attribute__((vector_size(VW * 4), aligned(4)));
typedef float kvn_mem __attribute__((vector_size(VW * 4), aligned(4), may_alias));
typedef int32_t kin __attribute__((vector_size(VW * 4), aligned(4)));
typedef struct {
	kvn p[NP];
} kv16;

#define KINLINE static inline __attribute__((always_inline))

/* 32 vector registers (AVX-512): wider register blocks */
#define FZ_KERN_WIDE (VW == 16)

KINLINE kv16 v_ld(const float *x)
{
	kv16 r;
	for (int i = 0; i < NP; i++)
		r.p[i] = *(const kvn_mem *)(x + i * VW);
	return r;
}

#if defined(__SANITIZE_THREAD__)
#define FZ_KERN_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FZ_KERN_TSAN 1
#endif
#endif

/*
 * A vector of a cache's shared entries (keys, norms) that the online writer may be storing
 * right now, lane by lane with relaxed atomic stores (online.c fz_cache_write_slot): the
 * reader's data loads of the seqlock, whose seq re-check after an acquire fence (lookup.c)
 * drops what they read if a write overlapped. Each lane must be a relaxed atomic load, and C11
 * has no atomic vector load, so:
 * - x86-64: one asm vector load. The compiler sees a read of that memory it cannot split,
 *   widen, repeat or move across the fence; the CPU reads each aligned 4-byte lane whole, all
 *   a relaxed 32-bit load gives. It cannot be folded into an FMA as a plain load can, so a
 *   kernel loads each vector right before its uses (gemm_tile); then no slower than the plain
 *   loads it replaced (perf/results/2026-12-05-shared-loads).
 * - ThreadSanitizer builds (which cannot see inside asm) and other targets: lane by lane
 *   relaxed atomic loads, so the TSan build checks every such read against the writer.
 */
KINLINE kvn ld_shared(const float *x)
{
#if defined(__x86_64__) && !defined(FZ_KERN_TSAN)
	kvn r;
#if VW > 4 /* the AVX2 and AVX-512 tables: VEX/EVEX, a ymm or zmm */
	__asm__("vmovups %1, %0" : "=v"(r) : "m"(*(const kvn_mem *)x));
#else /* baseline x86-64: SSE */
	__asm__("movups %1, %0" : "=x"(r) : "m"(*(const kvn_mem *)x));
#endif
	return r;
#else
	kvn r;
	for (int l = 0; l < VW; l++) {
		uint32_t b = __atomic_load_n((const uint32_t *)x + l, __ATOMIC_RELAXED);
		float f;
		memcpy(&f, &b, sizeof(f));
		r[l] = f;
	}
	return r;
#endif
}

KINLINE kv16 v_ld_shared(const float *x)
{
	kv16 r;
	for (int i = 0; i < NP; i++)
		r.p[i] = ld_shared(x + i * VW);
	return r;
}

/* Lanes 0-7 from lo, 8-15 from hi. */
KINLINE kv16 v_ld2(const float *lo, const float *hi)
{
	kv16 r;
#if VW == 16 && defined(__x86_64__)
	r.p[0] = (kvn)_mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(lo)),
					 _mm256_loadu_ps(hi), 1);
#else
	for (int i = 0; i < NP / 2; i++) {
		r.p[i] = *(const kvn_mem *)(lo + i * VW);
		r.p[NP / 2 + i] = *(const kvn_mem *)(hi + i * VW);
	}
#endif
	return r;
}

KINLINE void v_st(float *x, kv16 a)
{
	for (int i = 0; i < NP; i++)
		*(kvn_mem *)(x + i * VW) = a.p[i];
}

KINLINE kv16 v_bc(float f)
{
	kv16 r;
	for (int i = 0; i < NP; i++) {
		kvn z = { 0 };
		r.p[i] = z + f;
	}
	return r;
}

KINLINE kv16 v_add(kv16 a, kv16 b)
{
	for (int i = 0; i < NP; i++)
		a.p[i] = a.p[i] + b.p[i];
	return a;
}

KINLINE kv16 v_sub(kv16 a, kv16 b)
{
	for (int i = 0; i < NP; i++)
		a.p[i] = a.p[i] - b.p[i];
	return a;
}

KINLINE kv16 v_mul(kv16 a, kv16 b)
{
	for (int i = 0; i < NP; i++)
		a.p[i] = a.p[i] * b.p[i];
	return a;
}

KINLINE kv16 v_scale(kv16 a, float s)
{
	for (int i = 0; i < NP; i++)
		a.p[i] = a.p[i] * s;
	return a;
}

KINLINE kv16 v_min(kv16 a, kv16 b)
{
	for (int i = 0; i < NP; i++) {
		kin lt = a.p[i] < b.p[i];
		a.p[i] = (kvn)((lt & (kin)a.p[i]) | (~lt & (kin)b.p[i]));
	}
	return a;
}

/* One bit per lane of a hardware vector's comparison result. */
KINLINE unsigned part_bits(kin m)
{
#if defined(__x86_64__) && VW == 16
	return (unsigned)_mm512_movepi32_mask((__m512i)m);
#elif defined(__x86_64__) && VW == 8
	return (unsigned)_mm256_movemask_ps((__m256)m);
#elif defined(__x86_64__) && VW == 4
	return (unsigned)_mm_movemask_ps((__m128)m);
#else
	unsigned b = 0;
	for (int l = 0; l < VW; l++)
		b |= (unsigned)(m[l] & 1) << l;
	return b;
#endif
}

/* Bit l set when lane l of a is <= lim (le) or < lim (!le). */
KINLINE unsigned v_mask(kv16 a, float lim, bool le)
{
	unsigned m = 0;
	for (int i = 0; i < NP; i++) {
		kvn z = { 0 };
		kin c = le ? a.p[i] <= z + lim : a.p[i] < z + lim;
		m |= part_bits(c) << (i * VW);
	}
	return m;
}

/* Sum of the 16 lanes by one tree on every level: t8[l] = a[l] + a[l + 8],
 * t4[l] = t8[l] + t8[l + 4], then (t4[0] + t4[2]) + (t4[1] + t4[3]). */
KINLINE float hsum16(kv16 a)
{
	typedef float f4 __attribute__((vector_size(16), aligned(4)));
	f4 t4;
#if VW == 16 && defined(__x86_64__)
	__m512 z = (__m512)a.p[0];
	__m256 t8 = _mm256_add_ps(_mm512_castps512_ps256(z), _mm512_extractf32x8_ps(z, 1));
	t4 = (f4)_mm_add_ps(_mm256_castps256_ps128(t8), _mm256_extractf128_ps(t8, 1));
#elif VW == 8
	kvn t8 = a.p[0] + a.p[1];
	f4 l4, h4;
	memcpy(&l4, &t8, sizeof(l4));
	memcpy(&h4, (const char *)&t8 + sizeof(l4), sizeof(h4));
	t4 = l4 + h4;
#elif VW == 4
	t4 = (a.p[0] + a.p[2]) + (a.p[1] + a.p[3]);
#else
#error "FZ_KERN_VW must be 4, 8 or 16 (16 only on x86-64)"
#endif
	return (t4[0] + t4[2]) + (t4[1] + t4[3]);
}

KINLINE float hmin16(kv16 a)
{
	float t[FZ_BLK], m;
	v_st(t, a);
	m = t[0];
	for (int l = 1; l < FZ_BLK; l++)
		m = t[l] < m ? t[l] : m;
	return m;
}

/* ---- pooling ---- */

/*
 * The tap streams through once, row after row (the prefetchers see one sequential stream per
 * channel plane; a cell at a time they did not: cold taps pooled at a fifth of the bandwidth).
 * Per band of grid rows, each image row adds its pixels to their cells' sums, so every lane of
 * a cell is the sum of its pixels in row-major order, one rounding per add, on every ISA and
 * whichever of the paths below runs (registers for few cells, memory for many).
 */

/* Segment [x0, x1) of one row of pixels of 16 * NV contiguous floats (pixel x at row + x * ws),
 * added pixel by pixel into acc[16 * NV] (held in registers over the segment). */
KINLINE void seg_v16(const float *row, size_t ws, int x0, int x1, float *acc, const int NV)
{
	kv16 t[4];

	for (int v = 0; v < NV; v++)
		t[v] = v_ld(acc + 16 * v);
	for (int x = x0; x < x1; x++)
		for (int v = 0; v < NV; v++)
			t[v] = v_add(t[v], v_ld(row + (size_t)x * ws + 16 * v));
	for (int v = 0; v < NV; v++)
		v_st(acc + 16 * v, t[v]);
}

/* The same for two 8-channel planes `off` floats apart (nChw8c blocks b and b + 1) read as one
 * 16-lane pixel: lanes 0-7 block b, 8-15 block b + 1. */
KINLINE void seg_v8x2(const float *row, size_t off, int x0, int x1, float *acc)
{
	kv16 t = v_ld(acc);

	for (int x = x0; x < x1; x++)
		t = v_add(t, v_ld2(row + (size_t)x * 8, row + off + (size_t)x * 8));
	v_st(acc, t);
}

/* Any run length L and pixel stride: lane by lane, pixels in order. */
KINLINE void seg_any(const float *row, size_t ws, int x0, int x1, int L, float *acc)
{
	for (int x = x0; x < x1; x++) {
		const float *px = row + (size_t)x * ws;
		for (int k = 0; k < L; k++)
			acc[k] += px[k];
	}
}

/*
 * Register variant for few cells per band (G <= 4) and 16 * NV channels per pixel read (NV kv16,
 * or an nChw8c pair when pair): all G x NV accumulators of a band stay in registers while its
 * rows stream through; pixels go into their cell's sum in row-major order.
 */
KINLINE void band_reg(const float *plane, size_t hs, size_t ws, size_t off, int y0, int y1,
		      const int *x0, const int *x1, float *out, const int G, const int NV,
		      const bool pair)
{
	kv16 a[4][4];

	for (int g = 0; g < G; g++)
		for (int v = 0; v < NV; v++)
			a[g][v] = v_bc(0.0f);
	for (int y = y0; y < y1; y++) {
		const float *row = plane + (size_t)y * hs;
		/* unrolled: constant indices keep a[][] in registers (GCC left it a loop) */
#pragma GCC unroll 4
		for (int g = 0; g < G; g++)
			for (int x = x0[g]; x < x1[g]; x++) {
				const float *px = row + (size_t)x * ws;
				if (pair)
					a[g][0] = v_add(a[g][0], v_ld2(px, px + off));
				else
					for (int v = 0; v < NV; v++)
						a[g][v] = v_add(a[g][v], v_ld(px + 16 * v));
			}
	}
	for (int g = 0; g < G; g++)
		for (int v = 0; v < NV; v++)
			v_st(out + (size_t)g * 16 * NV + 16 * v, a[g][v]);
}

#if VW == 16
#define POOL_ACC 8 /* kv16 accumulators band_reg may hold: 8 zmm */
#elif VW == 8
#define POOL_ACC 4 /* 8 ymm */
#else
#define POOL_ACC 2 /* 8 xmm */
#endif

/* band_reg for this G and NV if they fit the registers; false: use pool_runs' general path */
KINLINE bool band_reg_any(const float *plane, size_t hs, size_t ws, size_t off, int y0, int y1,
			  const int *x0, const int *x1, float *out, int G, int NV, bool pair)
{
#define BR(g, nv, pr)                                                                             \
	case (g) * 16 + (nv) * 2 + (pr):                                                           \
		band_reg(plane, hs, ws, off, y0, y1, x0, x1, out, g, nv, pr);                      \
		return true;
	if (G > 4 || NV > 4 || G * NV > POOL_ACC)
		return false;
	switch (G * 16 + NV * 2 + pair) {
		BR(1, 1, 0) BR(2, 1, 0) BR(3, 1, 0) BR(4, 1, 0)
		BR(1, 1, 1) BR(2, 1, 1) BR(3, 1, 1) BR(4, 1, 1)
		BR(1, 2, 0) BR(2, 2, 0)
#if POOL_ACC >= 8
		BR(3, 2, 0) BR(4, 2, 0) BR(1, 4, 0) BR(2, 4, 0)
#endif
	default:
		return false;
	}
#undef BR
}

#define POOL_MAXW 1024    /* nchw: widest row summed through the column buffer */
#define POOL_MAXBAND 4096 /* channel runs: most accumulators of one band (G x floats/pixel) */

/*
 * Pixels whose channels are runs of L contiguous floats, runs c_stride apart (nhwc: one run of
 * C; nChwXc: runs of X). `pair` reads runs r and r + 1 together (L == 8, pixels back to back).
 */
static void pool_runs(const struct fz_cache *c, const float *x, const struct fz_act_layout *l,
		      int L, int nrun, bool pair, float *o)
{
	const int G = c->p.grid, H = c->h, W = c->w, C = c->c, GG = G * G;
	const int step = pair ? 2 : 1, LA = pair ? 16 : L; /* runs per pass, floats per pixel */
	float acc[POOL_MAXBAND]; /* one band: G cells x LA floats */

	for (int r = 0; r < nrun; r += step) {
		const float *plane = x + (size_t)r * l->c_stride;
		const bool two = pair && r + 1 < nrun;
		const int c0 = r * L, la = two ? 16 : L, nc = C - c0 < la ? C - c0 : la;
		for (int gy = 0; gy < G; gy++) {
			/* adaptive pooling bounds: [floor(i*H/G), ceil((i+1)*H/G)) */
			int y0 = gy * H / G, y1 = ((gy + 1) * H + G - 1) / G;
			int xs0[4], xs1[4];
			for (int gx = 0; gx < G && gx < 4; gx++) {
				xs0[gx] = gx * W / G;
				xs1[gx] = ((gx + 1) * W + G - 1) / G;
			}
			if (!(L % 16) || two) {
				if (band_reg_any(plane, l->h_stride, l->w_stride, l->c_stride, y0, y1, xs0,
						 xs1, acc, G, two ? 1 : L / 16, two))
					goto out;
			}
			memset(acc, 0, (size_t)G * LA * sizeof(float));
			for (int y = y0; y < y1; y++) {
				const float *row = plane + (size_t)y * l->h_stride;
				for (int gx = 0; gx < G; gx++) {
					int x0 = gx * W / G, x1 = ((gx + 1) * W + G - 1) / G;
					float *a = acc + (size_t)gx * LA;
					if (two) {
						seg_v8x2(row, l->c_stride, x0, x1, a);
						continue;
					}
					if (L % 16) {
						seg_any(row, l->w_stride, x0, x1, L, a);
						continue;
					}
					int v = 0; /* 64 channels at a time, then the rest */
					for (; v + 64 <= L; v += 64)
						seg_v16(row + v, l->w_stride, x0, x1, a + v, 4);
					switch ((L - v) / 16) { /* constant counts: registers */
					case 3: seg_v16(row + v, l->w_stride, x0, x1, a + v, 3); break;
					case 2: seg_v16(row + v, l->w_stride, x0, x1, a + v, 2); break;
					case 1: seg_v16(row + v, l->w_stride, x0, x1, a + v, 1); break;
					default: break;
					}
				}
			}
		out:
			for (int gx = 0; gx < G; gx++) {
				int x0 = gx * W / G, x1 = ((gx + 1) * W + G - 1) / G;
				float inv = 1.0f / (float)((y1 - y0) * (x1 - x0));
				for (int k = 0; k < nc; k++)
					o[(size_t)(c0 + k) * GG + gy * G + gx] = acc[(size_t)gx * LA + k] * inv;
			}
		}
	}
}

static void pool_sample(const struct fz_cache *c, const float *x, const struct fz_act_layout *l,
			float *o)
{
	const int G = c->p.grid, H = c->h, W = c->w, C = c->c, GG = G * G;

	if (l->cblock > 1 && l->w_stride >= (size_t)l->cblock &&
	    G * (l->cblock > 16 ? l->cblock : 16) <= POOL_MAXBAND) {
		const int L = l->cblock;
		pool_runs(c, x, l, L, (C + L - 1) / L, L == 8 && l->w_stride == 8, o);
		return;
	}
	if (l->cblock == 1 && l->c_stride == 1 && l->w_stride >= (size_t)C &&
	    G * C <= POOL_MAXBAND) { /* nhwc: one run of C */
		pool_runs(c, x, l, C, 1, false, o);
		return;
	}
	if (l->cblock == 1 && l->w_stride == 1 && W <= POOL_MAXW) {
		/* nchw-like: rows of a band summed column-wise (vector adds along x), then each
		 * cell's columns in order */
		float col[POOL_MAXW];
		for (int ch = 0; ch < C; ch++) {
			const float *plane = x + (size_t)ch * l->c_stride;
			for (int gy = 0; gy < G; gy++) {
				int y0 = gy * H / G, y1 = ((gy + 1) * H + G - 1) / G;
				for (int xx = 0; xx < W; xx++)
					col[xx] = 0.0f;
				for (int y = y0; y < y1; y++) {
					const float *row = plane + (size_t)y * l->h_stride;
					for (int xx = 0; xx < W; xx++)
						col[xx] += row[xx];
				}
				for (int gx = 0; gx < G; gx++) {
					int x0 = gx * W / G, x1 = ((gx + 1) * W + G - 1) / G;
					float s = 0.0f;
					for (int xx = x0; xx < x1; xx++)
						s += col[xx];
					o[(size_t)ch * GG + gy * G + gx] =
						s * (1.0f / (float)((y1 - y0) * (x1 - x0)));
				}
			}
		}
		return;
	}
	/* anything else: element by element */
	for (int gy = 0; gy < G; gy++) {
		int y0 = gy * H / G, y1 = ((gy + 1) * H + G - 1) / G;
		for (int gx = 0; gx < G; gx++) {
			int x0 = gx * W / G, x1 = ((gx + 1) * W + G - 1) / G;
			float inv = 1.0f / (float)((y1 - y0) * (x1 - x0));
			for (int ch = 0; ch < C; ch++) {
				float s = 0.0f;
				for (int y = y0; y < y1; y++)
					for (int xx = x0; xx < x1; xx++)
						s += x[fz_layout_offset(l, ch, y, xx)];
				o[(size_t)ch * GG + gy * G + gx] = s * inv;
			}
		}
	}
}

static void k_pool(const struct fz_cache *c, const float *act, const struct fz_act_layout *lay,
		   int n, float *out)
{
	for (int s = 0; s < n; s++)
		pool_sample(c, act + (size_t)s * lay->sample_stride, lay,
			    out + (size_t)s * (size_t)c->pooled_dim);
}

/* ---- projection ---- */

static void l2_normalise(float *v, int d)
{
	kv16 part = v_bc(0.0f);
	float s = 0.0f, t[FZ_BLK];
	int i = 0;

	for (; i + FZ_BLK <= d; i += FZ_BLK) {
		kv16 x = v_ld(v + i);
		part = v_add(part, v_mul(x, x));
	}
	for (; i < d; i++)
		s += v[i] * v[i];
	v_st(t, part);
	for (int l = 0; l < FZ_BLK; l++)
		s += t[l];
	if (s > 0.0f) {
		float inv = 1.0f / sqrtf(s);
		for (i = 0; i < d; i++)
			v[i] *= inv;
	}
}

/*
 * The projection of Q (1..4) centred samples xc[Q][P] onto output slice [j0, j0 + 16 NV):
 * Q x NV vector accumulators stay in registers while one pass over the rows of the matrix
 * (P x D) loads each row slice once for all Q samples. Per output element the same sum in the
 * same order (i ascending, one rounding per product and per add) whatever Q, NV and the ISA,
 * and as the one-sample loop in k_project.
 */
KINLINE void proj_slice(const float *proj, int P, int D, const float *xc, float *k, int j0,
			const int Q, const int NV)
{
	kv16 a[4][4];

	for (int q = 0; q < 4; q++)
		for (int v = 0; v < 4; v++)
			a[q][v] = v_bc(0.0f);
	for (int i = 0; i < P; i++) {
		const float *row = proj + (size_t)i * D + j0;
		for (int v = 0; v < NV; v++) {
			kv16 r = v_ld(row + v * FZ_BLK);
			for (int q = 0; q < Q; q++)
				a[q][v] = v_add(a[q][v], v_scale(r, xc[(size_t)q * P + i]));
		}
	}
	for (int q = 0; q < Q; q++)
		for (int v = 0; v < NV; v++)
			v_st(k + (size_t)q * D + j0 + v * FZ_BLK, a[q][v]);
}

/* All slices of D (a multiple of 16) for Q samples, NV vectors per slice: as many independent
 * accumulators as the registers hold (AVX-512: 32 zmm; else 16 registers). */
KINLINE void proj_q(const float *proj, int P, int D, const float *xc, float *k, const int Q)
{
	const int NV = FZ_KERN_WIDE || Q == 1 ? 4 : Q == 4 ? 1 : 2;
	int j0 = 0;

	for (; j0 + NV * FZ_BLK <= D; j0 += NV * FZ_BLK)
		proj_slice(proj, P, D, xc, k, j0, Q, NV);
	switch ((D - j0) / FZ_BLK) { /* constant trip counts: registers, no spills */
	case 3: proj_slice(proj, P, D, xc, k, j0, Q, 3); break;
	case 2: proj_slice(proj, P, D, xc, k, j0, Q, 2); break;
	case 1: proj_slice(proj, P, D, xc, k, j0, Q, 1); break;
	default: break;
	}
}

/* ---- learned predictor ---- */

/* Q samples' out_q[0..np16 * 16) = b + sum_i x_q[i] * wt[i][..] over i ascending (one rounding
 * per multiply and per add, on every level; the same for any Q), rows of np16 * 16 floats.
 * Each weight vector loaded serves the Q samples: the weights stream from L2 once per Q. */
KINLINE void head_slice(const float *const *x, int P, const float *wt, const float *b,
			size_t ld, int v0, float *const *out, const int Q, const int NV)
{
	kv16 acc[4][4];

	for (int q = 0; q < Q; q++)
		for (int v = 0; v < NV; v++)
			acc[q][v] = v_ld(b + (size_t)(v0 + v) * FZ_BLK);
	for (int i = 0; i < P; i++) {
		const float *row = wt + (size_t)i * ld + (size_t)v0 * FZ_BLK;
		kv16 w[4];
		for (int v = 0; v < NV; v++)
			w[v] = v_ld(row + (size_t)v * FZ_BLK);
		for (int q = 0; q < Q; q++) {
			const kv16 xi = v_bc(x[q][i]);
			for (int v = 0; v < NV; v++)
				acc[q][v] = v_add(acc[q][v], v_mul(xi, w[v]));
		}
	}
	for (int q = 0; q < Q; q++)
		for (int v = 0; v < NV; v++)
			v_st(out[q] + (size_t)(v0 + v) * FZ_BLK, acc[q][v]);
}

KINLINE void head_layer_q(const float *const *x, int P, const float *wt, const float *b,
			  int np16, float *const *out, const int Q)
{
	const size_t ld = (size_t)np16 * FZ_BLK;
	int v0 = 0;

	for (; v0 + 4 <= np16; v0 += 4) /* four vectors of outputs at a time, in registers */
		head_slice(x, P, wt, b, ld, v0, out, Q, 4);
	for (; v0 < np16; v0++)
		head_slice(x, P, wt, b, ld, v0, out, Q, 1);
}

static void head_layer(const float *const *x, int P, const float *wt, const float *b, int np16,
		       float *const *out, int Q)
{
	switch (Q) { /* constant counts: registers */
	case 4: head_layer_q(x, P, wt, b, np16, out, 4); break;
	case 3: head_layer_q(x, P, wt, b, np16, out, 3); break;
	case 2: head_layer_q(x, P, wt, b, np16, out, 2); break;
	default: head_layer_q(x, P, wt, b, np16, out, 1); break;
	}
}

static void k_project(const struct fz_cache *c, const float *pooled, int n, float *keys);

/* pooled[n][P] -> keys[n][classes + 1 (+ the confirmer's key)]: the predictor's logits, the
 * guard, then the confirming k-means cache's key. */
static void k_head(const struct fz_cache *c, const float *pooled, int n, float *keys)
{
	const int P = c->pooled_dim, C = c->n_classes, D = c->dim;
	_Alignas(64) float h1[4][1024 + FZ_BLK], z[4][FZ_CACHE_MAX_CLASSES + FZ_BLK];

	for (int s = 0; s < n; s += 4) {
		const int Q = n - s < 4 ? n - s : 4;
		const float *x[4];
		float *ho[4], *zo[4];
		for (int q = 0; q < Q; q++) {
			x[q] = pooled + (size_t)(s + q) * P;
			ho[q] = h1[q];
			zo[q] = z[q];
		}
		head_layer(x, P, c->h_w1t, c->h_b1, c->h_n1p / FZ_BLK, c->p.hidden ? ho : zo, Q);
		if (c->p.hidden) {
			for (int q = 0; q < Q; q++)
				for (int j = 0; j < c->h_n1p; j++)
					h1[q][j] = h1[q][j] > 0.0f ? h1[q][j] : 0.0f;
			head_layer((const float *const *)ho, c->h_n1p, c->h_w2t, c->h_b2,
				   c->h_cp / FZ_BLK, zo, Q);
		}
		for (int q = 0; q < Q; q++) {
			/* guard: |(x - mean) * inv_std|^2, sixteen lanes summed in a fixed order */
			kv16 g = v_bc(0.0f);
			int i = 0;
			for (; i + FZ_BLK <= P; i += FZ_BLK) {
				kv16 d = v_mul(v_sub(v_ld(x[q] + i), v_ld(c->h_mean + i)),
					       v_ld(c->h_isd + i));
				g = v_add(g, v_mul(d, d));
			}
			float gs = hsum16(g);
			for (; i < P; i++) {
				float d = (x[q][i] - c->h_mean[i]) * c->h_isd[i];
				gs += d * d;
			}
			float *k = keys + (size_t)(s + q) * D;
			memcpy(k, z[q], (size_t)C * sizeof(float));
			k[C] = gs;
		}
		if (c->sub) {
			_Alignas(64) float sk[4 * FZ_CACHE_MAX_DIM];
			const int SD = c->sub->dim;
			k_project(c->sub, pooled + (size_t)s * P, Q, sk);
			for (int q = 0; q < Q; q++)
				memcpy(keys + (size_t)(s + q) * D + C + 1, sk + (size_t)q * SD,
				       (size_t)SD * sizeof(float));
		}
	}
}

static void k_project(const struct fz_cache *c, const float *pooled, int n, float *keys)
{
	const int P = c->pooled_dim, D = c->dim;
	int s = 0;

	if (c->p.kind == FZ_CACHE_LEARNED) {
		k_head(c, pooled, n, keys);
		return;
	}

	if (c->p.dims && D % FZ_BLK == 0 && keys != pooled) {
		float xc[4 * FZ_CACHE_MAX_POOLED];
		for (; s < n; s += 4) {
			const int Q = n - s < 4 ? n - s : 4;
			float *k = keys + (size_t)s * D;
			for (int q = 0; q < Q; q++) { /* centred once, not once per slice */
				const float *x = pooled + (size_t)(s + q) * P;
				for (int i = 0; i < P; i++)
					xc[(size_t)q * P + i] = x[i] - c->pca_mean[i];
			}
			switch (Q) {
			case 4: proj_q(c->pca_proj, P, D, xc, k, 4); break;
			case 3: proj_q(c->pca_proj, P, D, xc, k, 3); break;
			case 2: proj_q(c->pca_proj, P, D, xc, k, 2); break;
			default: proj_q(c->pca_proj, P, D, xc, k, 1); break;
			}
			if (c->p.l2)
				for (int q = 0; q < Q; q++)
					l2_normalise(k + (size_t)q * D, D);
		}
	}
	for (; s < n; s++) {
		const float *x = pooled + (size_t)s * P;
		float *k = keys + (size_t)s * D;

		if (c->p.dims) {
			/* key = sum_i (x_i - mean_i) * proj[i][0..D): axpy rows, lane-parallel */
			float acc[FZ_CACHE_MAX_DIM] = { 0 };
			for (int i = 0; i < P; i++) {
				const float xi = x[i] - c->pca_mean[i];
				const float *row = c->pca_proj + (size_t)i * D;
				for (int j = 0; j < D; j++)
					acc[j] += xi * row[j];
			}
			memcpy(k, acc, (size_t)D * sizeof(float));
		} else if (k != x) {
			memcpy(k, x, (size_t)P * sizeof(float));
		}
		if (c->p.l2)
			l2_normalise(k, D);
	}
}

/* ---- distances and scans ---- */

/* acc + r * x, one rounding where the ISA has FMA (only for the GEMM's estimates). */
KINLINE kv16 v_fma(kv16 acc, kv16 r, float x)
{
#if defined(__x86_64__) && VW == 16
	acc.p[0] = (kvn)_mm512_fmadd_ps((__m512)r.p[0], _mm512_set1_ps(x), (__m512)acc.p[0]);
#elif defined(__x86_64__) && VW == 8
	for (int i = 0; i < NP; i++)
		acc.p[i] = (kvn)_mm256_fmadd_ps((__m256)r.p[i], _mm256_set1_ps(x), (__m256)acc.p[i]);
#else
	acc = v_add(acc, v_scale(r, x));
#endif
	return acc;
}

/*
 * Accumulators of the GEMM tile, in kv16s: AVX-512 8 of its 32 zmm, AVX2 6 x 2 of its 16 ymm,
 * baseline 2 x 4 of its 16 xmm; the rest hold the loaded keys and the broadcast query value.
 */
#if VW == 16
#define GEMM_ACC 8
#elif VW == 8
#define GEMM_ACC 6
#else
#define GEMM_ACC 2
#endif

/* Q queries x NB blocks of 16 slots: per d one load per block, one broadcast per query and
 * Q x NB multiply-adds; a = |c|^2 - 2 q.c out. Keys and norms: shared loads (v_ld_shared). */
KINLINE void gemm_tile(const float *q, int dim, const float *blk, const float *cn, float *a,
		       int lda, const int Q, const int NB)
{
	kv16 acc[GEMM_ACC][GEMM_ACC];

	for (int i = 0; i < Q; i++)
		for (int j = 0; j < NB; j++)
			acc[i][j] = v_bc(0.0f);
	/* a block's keys are loaded right before their Q multiply-adds: one kv16 of keys live at
	 * a time (an asm load is never folded into the FMA, and NB of them at once spilled the
	 * AVX2 accumulators: +25 % at batch 1) */
	for (int d = 0; d < dim; d++)
		for (int j = 0; j < NB; j++) {
			const kv16 r = v_ld_shared(blk + ((size_t)j * dim + d) * FZ_BLK);
			for (int i = 0; i < Q; i++)
				acc[i][j] = v_fma(acc[i][j], r, q[(size_t)i * dim + d]);
		}
	for (int i = 0; i < Q; i++)
		for (int j = 0; j < NB; j++)
			v_st(a + (size_t)i * lda + FZ_BLK * j,
			     v_sub(v_ld_shared(cn + FZ_BLK * j), v_scale(acc[i][j], 2.0f)));
}

/* Q queries against nb blocks: tiles of Q x NB, NB as large as the accumulators allow. */
KINLINE void gemm_rows(const float *q, int dim, const float *blk, int nb, const float *cn,
		       float *a, int lda, const int Q)
{
	const int NB = GEMM_ACC / Q > 0 ? GEMM_ACC / Q : 1;
	int b = 0;

	for (; b + NB <= nb; b += NB)
		gemm_tile(q, dim, blk + (size_t)b * dim * FZ_BLK, cn + FZ_BLK * b, a + FZ_BLK * b, lda,
			  Q, NB);
	for (; b < nb; b++)
		gemm_tile(q, dim, blk + (size_t)b * dim * FZ_BLK, cn + FZ_BLK * b, a + FZ_BLK * b, lda,
			  Q, 1);
}

static void k_gemm(const float *q, int nq, int dim, const float *blk, int nb, const float *cn,
		   float *a, int lda)
{
	int i = 0;

	for (; i + GEMM_ACC <= nq; i += GEMM_ACC)
		gemm_rows(q + (size_t)i * dim, dim, blk, nb, cn, a + (size_t)i * lda, lda, GEMM_ACC);
	q += (size_t)i * dim;
	a += (size_t)i * lda;
	switch (nq - i) { /* constant tile shapes: registers, no spills */
#if GEMM_ACC > 7
	case 7: gemm_rows(q, dim, blk, nb, cn, a, lda, 7); break;
	case 6: gemm_rows(q, dim, blk, nb, cn, a, lda, 6); break;
#endif
#if GEMM_ACC > 5
	case 5: gemm_rows(q, dim, blk, nb, cn, a, lda, 5); break;
	case 4: gemm_rows(q, dim, blk, nb, cn, a, lda, 4); break;
	case 3: gemm_rows(q, dim, blk, nb, cn, a, lda, 3); break;
	case 2: gemm_rows(q, dim, blk, nb, cn, a, lda, 2); break;
#endif
	case 1: gemm_rows(q, dim, blk, nb, cn, a, lda, 1); break;
	default: break;
	}
}

/* Exact distances of one query to NB (1..4) blocks: lane l of block j gets the sum over d
 * ascending of (q[d] - key[d])^2, each operation rounded; NB independent add chains. Keys:
 * shared loads (v_ld_shared). */
KINLINE void exact_tile(const float *q, const float *blk, int dim, float *out, const int NB)
{
	kv16 acc[4];

	for (int j = 0; j < NB; j++)
		acc[j] = v_bc(0.0f);
	for (int d = 0; d < dim; d++) {
		const kv16 x = v_bc(q[d]);
		for (int j = 0; j < NB; j++) {
			kv16 t = v_sub(x, v_ld_shared(blk + ((size_t)j * dim + d) * FZ_BLK));
			acc[j] = v_add(acc[j], v_mul(t, t));
		}
	}
	for (int j = 0; j < NB; j++)
		v_st(out + FZ_BLK * j, acc[j]);
}

static void k_dist_blocks(const float *q, const float *blk, int nb, int dim, float *out)
{
	int b = 0;

	for (; b + 4 <= nb; b += 4)
		exact_tile(q, blk + (size_t)b * dim * FZ_BLK, dim, out + FZ_BLK * b, 4);
	for (; b < nb; b++)
		exact_tile(q, blk + (size_t)b * dim * FZ_BLK, dim, out + FZ_BLK * b, 1);
}

/* |r|^2 of a key (contiguous): 16 lanes summed along d, then hsum16, then the tail. */
static float k_norm2(const float *r, int dim)
{
	kv16 a = v_bc(0.0f);
	int d = 0;

	for (; d + FZ_BLK <= dim; d += FZ_BLK) {
		kv16 t = v_ld(r + d);
		a = v_add(a, v_mul(t, t));
	}
	float s = hsum16(a);
	for (; d < dim; d++)
		s += r[d] * r[d];
	return s;
}

static float k_scan_min(const float *a, int n)
{
	kv16 m = v_bc(INFINITY);
	int j = 0;

	for (; j + FZ_BLK <= n; j += FZ_BLK)
		m = v_min(v_ld(a + j), m);
	float r = hmin16(m);
	for (; j < n; j++)
		r = a[j] < r ? a[j] : r;
	return r;
}

static int k_scan_le(const float *a, int n, float lim, int *idx, int max)
{
	int cnt = 0, j = 0;

	for (; j + FZ_BLK <= n; j += FZ_BLK) {
		unsigned m = v_mask(v_ld(a + j), lim, true);
		while (m) {
			if (cnt == max)
				return -1;
			idx[cnt++] = j + __builtin_ctz(m);
			m &= m - 1;
		}
	}
	for (; j < n; j++)
		if (a[j] <= lim) {
			if (cnt == max)
				return -1;
			idx[cnt++] = j;
		}
	return cnt;
}

KINLINE void topk_insert(float *best, int k, float x)
{
	int i = k - 1;
	while (i > 0 && best[i - 1] > x) {
		best[i] = best[i - 1];
		i--;
	}
	best[i] = x;
}

static void k_scan_topk(const float *a, int n, float *best, int k)
{
	int j = 0;

	for (; j + FZ_BLK <= n; j += FZ_BLK) {
		unsigned m = v_mask(v_ld(a + j), best[k - 1], false);
		while (m) {
			int l = __builtin_ctz(m);
			m &= m - 1;
			if (a[j + l] < best[k - 1])
				topk_insert(best, k, a[j + l]);
		}
	}
	for (; j < n; j++)
		if (a[j] < best[k - 1])
			topk_insert(best, k, a[j]);
}

const struct fz_cache_kern KCAT(fz_cache_kern, FZ_KERN) = {
	.name = KSTR(FZ_KERN),
	.pool = k_pool,
	.project = k_project,
	.gemm = k_gemm,
	.dist_blocks = k_dist_blocks,
	.norm2 = k_norm2,
	.scan_min = k_scan_min,
	.scan_le = k_scan_le,
	.scan_topk = k_scan_topk,
};
