/* Freeze cachecore kernels for AVX2 + FMA (AMD Zen 1-3, Intel Haswell on): kern.h for that target. */
#if defined(__x86_64__)
/* system and project headers first, so only the kernels below take the target */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "cache_pvt.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

#define FZ_KERN avx2
#define FZ_KERN_VW 8
#include "kern.h"

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
