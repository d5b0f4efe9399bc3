/* Test helper: activation layouts of C x H x W samples as oneDNN may choose them. */
#ifndef FZ_TEST_LAYOUT_UTIL_H
#define FZ_TEST_LAYOUT_UTIL_H

#include <stdbool.h>
#include <stdio.h>

#include "fz_layout.h"

/* Channel blocks of cb (1: none), or channels last when nhwc; `pad` floats after each sample. */
static inline struct fz_act_layout mk_layout(int C, int H, int W, int cb, bool nhwc, size_t pad)
{
	struct fz_act_layout l = { .c = C, .h = H, .w = W, .cblock = cb };
	int cp = (C + cb - 1) / cb * cb;
	if (nhwc) {
		l.c_stride = 1, l.w_stride = (size_t)C, l.h_stride = (size_t)W * C;
		snprintf(l.tag, sizeof(l.tag), "nhwc");
	} else {
		l.w_stride = (size_t)cb, l.h_stride = (size_t)W * cb, l.c_stride = (size_t)H * W * cb;
		snprintf(l.tag, sizeof(l.tag), "nChw%dc", cb);
	}
	l.sample_stride = (size_t)cp * H * W + pad;
	return l;
}

#endif /* FZ_TEST_LAYOUT_UTIL_H */
