/* Freeze cachecore CPU dispatch: the AVX-512, AVX2 or portable kernels, chosen once at run time. */
#include <errno.h>
#include <stdlib.h>
#include <strings.h>

#include "cache_pvt.h"

enum isa_level { LVL_PORTABLE, LVL_AVX2, LVL_AVX512, LVL__COUNT };

static const char *const level_names[LVL__COUNT] = { "portable", "avx2", "avx512" };

/* The table in use; NULL until the first lookup (or fz_cache_isa_set) chooses one. Relaxed
 * atomics: the tables are constant data, so any thread that sees a pointer sees its table. */
static _Atomic(const struct fz_cache_kern *) cur;
/* CRC32C with the SSE4.2 crc32 instruction (crc32c.c): the CPU has it and nothing capped the
 * ISA to portable. -1 = not decided yet. */
static _Atomic int crc_hw = -1;

static const struct fz_cache_kern *table(enum isa_level l)
{
#if defined(__x86_64__)
	if (l == LVL_AVX512)
		return &fz_cache_kern_avx512;
	if (l == LVL_AVX2)
		return &fz_cache_kern_avx2;
#endif
	(void)l;
	return &fz_cache_kern_portable;
}

/* What this CPU (and its OS: the zmm/ymm state) runs. */
static enum isa_level hw_level(void)
{
#if defined(__x86_64__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
	    __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
		return LVL_AVX512;
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		return LVL_AVX2;
#endif
	return LVL_PORTABLE;
}

static bool hw_crc32(void)
{
#if defined(__x86_64__)
	__builtin_cpu_init();
	return __builtin_cpu_supports("sse4.2");
#else
	return false;
#endif
}

static int level_by_name(const char *s)
{
	for (int l = 0; l < LVL__COUNT; l++)
		if (!strcasecmp(s, level_names[l]))
			return l;
	return -1;
}

/*
 * oneDNN's cap (ONEDNN_MAX_CPU_ISA, or its old name DNNL_MAX_CPU_ISA) read the way oneDNN
 * reads it, so one variable caps both: AVX2* caps at avx2, SSE41 and AVX at portable; the
 * AVX-512/AMX/AVX10 levels, ALL, DEFAULT and anything unknown leave no cap.
 */
static enum isa_level onednn_cap(void)
{
	const char *e = getenv("ONEDNN_MAX_CPU_ISA");

	if (!e || !*e)
		e = getenv("DNNL_MAX_CPU_ISA");
	if (!e || !*e)
		return LVL_AVX512;
	if (!strncasecmp(e, "AVX2", 4))
		return LVL_AVX2;
	if (!strcasecmp(e, "SSE41") || !strcasecmp(e, "AVX"))
		return LVL_PORTABLE;
	return LVL_AVX512;
}

/* The default choice: the CPU's best level, capped by FZ_CPU_ISA and ONEDNN_MAX_CPU_ISA. */
static enum isa_level default_level(enum isa_level *cap_out)
{
	enum isa_level cap = onednn_cap();
	const char *e = getenv("FZ_CPU_ISA");
	int l = e && *e ? level_by_name(e) : -1;

	if (l >= 0 && (enum isa_level)l < cap)
		cap = (enum isa_level)l;
	*cap_out = cap;
	enum isa_level hw = hw_level();
	return hw < cap ? hw : cap;
}

static const struct fz_cache_kern *choose_default(void)
{
	enum isa_level cap;
	enum isa_level l = default_level(&cap);

	atomic_store_explicit(&crc_hw, cap > LVL_PORTABLE && hw_crc32(), memory_order_relaxed);
	atomic_store_explicit(&cur, table(l), memory_order_relaxed);
	return table(l);
}

const struct fz_cache_kern *fz_cache_kern_get(void)
{
	const struct fz_cache_kern *k = atomic_load_explicit(&cur, memory_order_relaxed);

	return k ? k : choose_default();
}

bool fz_cache_crc32_hw(void)
{
	int h = atomic_load_explicit(&crc_hw, memory_order_relaxed);

	if (h < 0) {
		choose_default();
		h = atomic_load_explicit(&crc_hw, memory_order_relaxed);
	}
	return h > 0;
}

const char *fz_cache_isa(void)
{
	return fz_cache_kern_get()->name;
}

int fz_cache_isa_set(const char *name)
{
	if (!name) {
		choose_default();
		return 0;
	}
	int l = level_by_name(name);
	if (l < 0)
		return -EINVAL;
	if ((enum isa_level)l > hw_level())
		return -ENOTSUP;
	atomic_store_explicit(&crc_hw, l > LVL_PORTABLE && hw_crc32(), memory_order_relaxed);
	atomic_store_explicit(&cur, table((enum isa_level)l), memory_order_relaxed);
	return 0;
}
