/* Freeze cachecore kernels for any CPU: kern.h compiled for the baseline target. */
#define FZ_KERN portable
#define FZ_KERN_VW 4 /* SSE2: every x86-64 has it; elsewhere plain vector code */
#include "kern.h"
