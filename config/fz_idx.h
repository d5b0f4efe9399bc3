/* Freeze idx reader: the (optionally gzipped) idx files of MNIST-style data sets. */
#ifndef FZ_IDX_H
#define FZ_IDX_H

#include <stddef.h>
#include <stdint.h>

struct fz_idx {
	uint8_t *data; /* count * item_size bytes */
	int ndim;
	uint32_t dims[4]; /* dims[0] is the item count */
	size_t count;
	size_t item_size; /* bytes per item (product of dims[1..]) */
};

/*
 * Load an unsigned-byte idx file, gzipped (by name ending ".gz") or not.
 * Returns 0, or a negative errno with a message in err: -ENOENT, -EINVAL (not idx, wrong dtype,
 * truncated), -ENOMEM.
 */
int fz_idx_load(const char *path, struct fz_idx *out, char *err, size_t errlen);
void fz_idx_free(struct fz_idx *idx);

#endif /* FZ_IDX_H */
