/* Freeze idx reader: unsigned-byte idx files (MNIST, Fashion-MNIST), plain or gzipped. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "fz_idx.h"
#include "fz_io.h"

#define IDX_DTYPE_U8 0x08
#define IDX_GZ_CHUNK (1u << 20)

static int idx_err(char *err, size_t errlen, int r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int idx_err(char *err, size_t errlen, int r, const char *fmt, ...)
{
	if (err != NULL && errlen > 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return r;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && strcmp(s + n - m, suffix) == 0;
}

static const char *dtype_name(unsigned t)
{
	switch (t) {
	case 0x08:
		return "unsigned byte";
	case 0x09:
		return "signed byte";
	case 0x0b:
		return "short";
	case 0x0c:
		return "int";
	case 0x0d:
		return "float";
	case 0x0e:
		return "double";
	default:
		return "unknown";
	}
}

/*
 * Check the magic, then read the dimensions from hdr (at least 4 + 4 * ndim bytes available,
 * hlen in total). Fills out's shape fields; returns the header size or a negative errno.
 */
static int parse_header(const char *path, const uint8_t *hdr, size_t hlen, struct fz_idx *out,
			char *err, size_t errlen)
{
	if (hlen < 4)
		return idx_err(err, errlen, -EINVAL, "%s: truncated idx header (%zu bytes)", path,
			       hlen);
	if (hdr[0] != 0 || hdr[1] != 0)
		return idx_err(err, errlen, -EINVAL,
			       "%s: not an idx file (magic %02x %02x, expected 00 00)", path,
			       hdr[0], hdr[1]);
	if (hdr[2] != IDX_DTYPE_U8)
		return idx_err(
			err, errlen, -EINVAL,
			"%s: idx dtype 0x%02x (%s) is not supported; expected 0x08 (unsigned "
			"byte)",
			path, hdr[2], dtype_name(hdr[2]));
	int ndim = hdr[3];
	if (ndim < 1 || ndim > 4)
		return idx_err(err, errlen, -EINVAL,
			       "%s: idx file has %d dimensions; expected 1 to 4", path, ndim);
	size_t need = 4 + 4 * (size_t)ndim;
	if (hlen < need)
		return idx_err(err, errlen, -EINVAL,
			       "%s: truncated idx header (%zu bytes, expected %zu)", path, hlen,
			       need);
	out->ndim = ndim;
	out->item_size = 1;
	for (int i = 0; i < ndim; i++) {
		const uint8_t *d = hdr + 4 + 4 * i;
		uint32_t v =
			(uint32_t)d[0] << 24 | (uint32_t)d[1] << 16 | (uint32_t)d[2] << 8 | d[3];
		if (v == 0)
			return idx_err(err, errlen, -EINVAL, "%s: idx dimension %d is zero", path,
				       i);
		out->dims[i] = v;
		if (i > 0 && __builtin_mul_overflow(out->item_size, (size_t)v, &out->item_size))
			return idx_err(err, errlen, -EINVAL, "%s: idx item size overflows", path);
	}
	out->count = out->dims[0];
	size_t total;
	if (__builtin_mul_overflow(out->count, out->item_size, &total))
		return idx_err(err, errlen, -EINVAL, "%s: idx data size overflows", path);
	return (int)need;
}

static int load_plain(const char *path, struct fz_idx *out, char *err, size_t errlen)
{
	void *buf;
	size_t len;
	int r = fz_file_read(path, &buf, &len);
	if (r)
		return idx_err(err, errlen, r, "%s: cannot read: %s", path, strerror(-r));
	r = parse_header(path, buf, len < 20 ? len : 20, out, err, errlen);
	if (r < 0) {
		free(buf);
		return r;
	}
	size_t hdr = (size_t)r, data = out->count * out->item_size;
	if (len - hdr < data) {
		free(buf);
		return idx_err(err, errlen, -EINVAL,
			       "%s: truncated idx file (%zu data bytes, expected %zu)", path,
			       len - hdr, data);
	}
	if (len - hdr > data) {
		free(buf);
		return idx_err(err, errlen, -EINVAL,
			       "%s: %zu bytes of trailing garbage after the idx data", path,
			       len - hdr - data);
	}
	/* keep the one buffer: move the data to its start */
	memmove(buf, (char *)buf + hdr, data);
	out->data = buf;
	return 0;
}

/* Read up to len bytes; returns the count (short only at the end) or -1 with gzerror set. */
static long gz_read_full(gzFile gz, void *p, size_t len)
{
	size_t done = 0;
	while (done < len) {
		size_t want = len - done;
		if (want > IDX_GZ_CHUNK)
			want = IDX_GZ_CHUNK;
		int n = gzread(gz, (char *)p + done, (unsigned)want);
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (long)done;
}

static int gz_fail(gzFile gz, const char *path, char *err, size_t errlen)
{
	int zerr;
	const char *msg = gzerror(gz, &zerr);
	if (zerr == Z_MEM_ERROR)
		return idx_err(err, errlen, -ENOMEM, "%s: out of memory", path);
	if (zerr == Z_BUF_ERROR) /* zlib's "unexpected end of file" */
		return idx_err(err, errlen, -EINVAL, "%s: truncated gzip data: %s", path, msg);
	if (zerr == Z_ERRNO)
		return idx_err(err, errlen, -EIO, "%s: read error: %s", path, strerror(errno));
	return idx_err(err, errlen, -EINVAL, "%s: corrupt gzip data: %s", path, msg);
}

static int load_gz(const char *path, struct fz_idx *out, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int r = -errno;
		return idx_err(err, errlen, r, "%s: cannot open: %s", path, strerror(-r));
	}
	gzFile gz = gzdopen(fd, "rb");
	if (gz == NULL) {
		close(fd);
		return idx_err(err, errlen, -ENOMEM, "%s: out of memory", path);
	}
	uint8_t hdr[20];
	int r;
	long n = gz_read_full(gz, hdr, 4);
	if (n < 0) {
		r = gz_fail(gz, path, err, errlen);
		goto out;
	}
	if (gzdirect(gz)) {
		r = idx_err(err, errlen, -EINVAL, "%s: not gzip data (name ends in .gz)", path);
		goto out;
	}
	if (n == 4 && hdr[3] >= 1 && hdr[3] <= 4) {
		long m = gz_read_full(gz, hdr + 4, 4 * (size_t)hdr[3]);
		if (m < 0) {
			r = gz_fail(gz, path, err, errlen);
			goto out;
		}
		n += m;
	}
	r = parse_header(path, hdr, (size_t)n, out, err, errlen);
	if (r < 0)
		goto out;
	/*
	 * Grow the buffer as the data arrives instead of trusting the header's size: a corrupt
	 * header must not allocate gigabytes.
	 */
	size_t data = out->count * out->item_size, len = 0, cap = 0;
	uint8_t *buf = NULL;
	while (len < data) {
		if (len == cap) {
			size_t ncap = cap ? cap * 2 : IDX_GZ_CHUNK;
			if (ncap > data)
				ncap = data;
			uint8_t *p = realloc(buf, ncap);
			if (p == NULL) {
				free(buf);
				r = idx_err(err, errlen, -ENOMEM, "%s: out of memory", path);
				goto out;
			}
			buf = p;
			cap = ncap;
		}
		size_t want = cap - len;
		long m = gz_read_full(gz, buf + len, want);
		if (m < 0) {
			free(buf);
			r = gz_fail(gz, path, err, errlen);
			goto out;
		}
		len += (size_t)m;
		if ((size_t)m < want)
			break; /* end of stream */
	}
	if (len < data) {
		free(buf);
		r = idx_err(err, errlen, -EINVAL,
			    "%s: truncated idx file (%zu data bytes, expected %zu)", path, len,
			    data);
		goto out;
	}
	char extra;
	n = gz_read_full(gz, &extra, 1);
	if (n != 0) {
		free(buf);
		r = n < 0 ? gz_fail(gz, path, err, errlen)
			  : idx_err(err, errlen, -EINVAL,
				    "%s: trailing garbage after the idx data", path);
		goto out;
	}
	out->data = buf;
	r = 0;
out:
	gzclose(gz); /* closes fd */
	return r;
}

int fz_idx_load(const char *path, struct fz_idx *out, char *err, size_t errlen)
{
	struct fz_idx idx = {0};
	if (err != NULL && errlen > 0)
		err[0] = '\0';
	int r = ends_with(path, ".gz") ? load_gz(path, &idx, err, errlen)
				       : load_plain(path, &idx, err, errlen);
	if (r < 0)
		return r;
	*out = idx;
	return 0;
}

void fz_idx_free(struct fz_idx *idx)
{
	if (idx == NULL)
		return;
	free(idx->data);
	memset(idx, 0, sizeof(*idx));
}
