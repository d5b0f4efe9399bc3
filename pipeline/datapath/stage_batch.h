/* Private to the appliance's data path: a batch of requests with one activation row each, handed
 * between stages and merged when small ones queue up (the close-up around cache exits is the
 * cascade's, fz_cascade_close_up). Plain C, no DPDK (tests/pipeline drive it directly); the
 * pools that carry batches between stages are in app_pvt.h. */
#ifndef FZ_STAGE_BATCH_H
#define FZ_STAGE_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

struct fz_req;

/*
 * A batch handed from one stage to the next: row i of `act` (`stride` floats, the boundary
 * layout: the last group's output layout of one stage = the first group's input layout of the
 * next) is the activation of reqs[i]. The producer's last group writes the rows in place, the
 * consumer's first group reads them in place.
 */
struct fz_batch {
	unsigned n;           /* requests, and rows, in it */
	float *act;           /* cap rows */
	struct fz_req **reqs; /* cap */
};

/* Append src's requests and rows to dst, which must have room for them (one copy per row). */
static inline void fz_batch_append(struct fz_batch *dst, const struct fz_batch *src,
				   size_t stride)
{
	memcpy(dst->act + dst->n * stride, src->act, src->n * stride * sizeof(float));
	memcpy(dst->reqs + dst->n, src->reqs, src->n * sizeof(*src->reqs));
	dst->n += src->n;
}

/*
 * How many of the waiting batches b[0..nb) the first one takes in: the following ones, in
 * order, as long as the total stays within max (a batch is never split). Returns 1..nb.
 */
static inline unsigned fz_batch_merge_count(struct fz_batch *const *b, unsigned nb, unsigned max)
{
	unsigned used = 1, total = b[0]->n;
	while (used < nb && total + b[used]->n <= max)
		total += b[used++]->n;
	return used;
}

#endif /* FZ_STAGE_BATCH_H */
