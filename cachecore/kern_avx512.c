/* Freeze cachecore kernels for AVX-512 F/VL/BW/DQ (AMD Zen 4 on, Intel Skylake-SP on): kern.h for that target. */
#if defined(__x86_64__)
/* system and project headers first, so only the kernels below take the target */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "cache_pvt.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma"))), \
			     apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")
#endif

#define FZ_KERN avx512
#define FZ_KERN_VW 16
#include "kern.h"

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
