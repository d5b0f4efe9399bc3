/* Freeze file I/O: whole-file reads through io_uring (pread fallback) and durable writes. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <liburing.h>

#include "fz_io.h"

#define IO_CHUNK (1u << 20) /* bytes per read request */
#define IO_DEPTH 8          /* read requests in flight (a file of known size) */
#define IO_USE_FALLBACK 1   /* read_uring(): io_uring is not available, use pread */

/*
 * Whether the last fz_file_read (on any thread) used pread. A diagnostic only: relaxed accesses,
 * it orders nothing.
 */
static atomic_int io_fallback;

int fz_io_used_fallback(void)
{
	return atomic_load_explicit(&io_fallback, memory_order_relaxed);
}

static bool force_pread(void)
{
	const char *e = getenv("FZ_IO_FORCE_PREAD");
	return e != NULL && e[0] != '\0' && strcmp(e, "0") != 0;
}

/* A growing read buffer; always keeps one byte free for the final NUL. */
struct rbuf {
	char *p;
	size_t len, cap;
	size_t target; /* bytes to read (the size from fstat), or 0: read until EOF */
};

/* Bytes the next read may ask for, growing the buffer when needed; 0 when done. */
static int rbuf_room(struct rbuf *b, size_t *room)
{
	if (b->target != 0) {
		*room = b->target - b->len;
	} else {
		if (b->cap - b->len <= 1) {
			if (b->cap > SIZE_MAX / 2)
				return -ENOMEM;
			char *p = realloc(b->p, b->cap * 2);
			if (p == NULL)
				return -ENOMEM;
			b->p = p;
			b->cap *= 2;
		}
		*room = b->cap - 1 - b->len;
	}
	if (*room > IO_CHUNK)
		*room = IO_CHUNK;
	return 0;
}

/* Queue a read of [off, off + len) of the file into b at the same offset, tagged with `off`. */
static int queue_read(struct io_uring *ring, int fd, struct rbuf *b, size_t off, size_t len)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
	if (sqe == NULL)
		return -EBUSY;
	io_uring_prep_read(sqe, fd, b->p + off, (unsigned)len, (uint64_t)off);
	io_uring_sqe_set_data64(sqe, ((uint64_t)off << 24) | len); /* len <= IO_CHUNK < 2^24 */
	return 0;
}

/*
 * A file of known size: IO_DEPTH chunk reads in flight at their own offsets (as liburing's
 * io_uring-cp example does), a short read continued where it stopped. The whole file is in the
 * page cache or on a disk that overlaps requests either way; several in flight never wait on
 * each other. The file may shrink meanwhile: its data ends at the first end-of-file seen.
 */
static int read_uring_sized(struct io_uring *ring, int fd, struct rbuf *b)
{
	size_t next = 0, eof = b->target;
	int inflight = 0, r = 0;
	bool first = true;
	while (r == 0 && (next < b->target || inflight > 0)) {
		while (next < eof && inflight < IO_DEPTH && r == 0) {
			size_t len = b->target - next < IO_CHUNK ? b->target - next : IO_CHUNK;
			if ((r = queue_read(ring, fd, b, next, len)) == 0) {
				next += len;
				inflight++;
			}
		}
		if (r)
			break;
		if (next >= eof && inflight == 0)
			break;
		do
			r = io_uring_submit_and_wait(ring, 1);
		while (r == -EINTR);
		if (r < 0)
			break;
		r = 0;
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		io_uring_for_each_cqe(ring, head, cqe) {
			seen++;
			inflight--;
			uint64_t tag = io_uring_cqe_get_data64(cqe);
			size_t off = (size_t)(tag >> 24), len = (size_t)(tag & 0xffffff);
			int res = cqe->res;
			if (first && (res == -EINVAL || res == -EOPNOTSUPP)) {
				r = IO_USE_FALLBACK; /* kernel older than 5.6: no IORING_OP_READ */
				break;
			}
			first = false;
			if (res == -EINTR || res == -EAGAIN) {
				res = 0; /* nothing read: ask again for the whole piece */
			} else if (res < 0) {
				r = res;
				break;
			} else if (res == 0) { /* end of file: the file shrank since fstat */
				if (off < eof)
					eof = off;
				continue;
			}
			if ((size_t)res < len) { /* the rest of the piece, where it stopped */
				if ((r = queue_read(ring, fd, b, off + (size_t)res, len - (size_t)res)))
					break;
				inflight++;
			}
		}
		io_uring_cq_advance(ring, seen);
	}
	/* every byte below eof was read (chunks end only when full or at end of file) */
	b->len = r == 0 ? eof : b->len;
	return r;
}

/*
 * Read through a private ring. Returns 0, a negative errno, or IO_USE_FALLBACK when the ring
 * cannot be set up or the kernel lacks IORING_OP_READ. Size unknown (procfs, devices): one read
 * at a time until end of file.
 */
static int read_uring(int fd, struct rbuf *b)
{
	struct io_uring ring;
	int r = io_uring_queue_init(IO_DEPTH * 2, &ring, 0);
	if (r == -EPERM || r == -ENOSYS || r == -ENOMEM)
		return IO_USE_FALLBACK;
	if (r < 0)
		return r;
	if (b->target) {
		r = read_uring_sized(&ring, fd, b);
		io_uring_queue_exit(&ring);
		return r;
	}
	bool first = true;
	for (;;) {
		size_t room;
		r = rbuf_room(b, &room);
		if (r || room == 0)
			break;
		struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
		if (sqe == NULL) {
			r = -EBUSY;
			break;
		}
		io_uring_prep_read(sqe, fd, b->p + b->len, (unsigned)room, (uint64_t)b->len);
		do
			r = io_uring_submit(&ring);
		while (r == -EINTR);
		if (r < 0)
			break;
		struct io_uring_cqe *cqe;
		do
			r = io_uring_wait_cqe(&ring, &cqe);
		while (r == -EINTR);
		if (r < 0)
			break;
		int res = cqe->res;
		io_uring_cqe_seen(&ring, cqe);
		if (res == -EINTR || res == -EAGAIN)
			continue;
		if (first && (res == -EINVAL || res == -EOPNOTSUPP)) {
			r = IO_USE_FALLBACK; /* kernel older than 5.6: no IORING_OP_READ */
			break;
		}
		first = false;
		if (res < 0) {
			r = res;
			break;
		}
		if (res == 0) /* EOF, or the file shrank since fstat */
			break;
		b->len += (size_t)res;
	}
	io_uring_queue_exit(&ring);
	return r;
}

static int read_pread(int fd, struct rbuf *b)
{
	for (;;) {
		size_t room;
		int r = rbuf_room(b, &room);
		if (r || room == 0)
			return r;
		ssize_t n = pread(fd, b->p + b->len, room, (off_t)b->len);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		if (n == 0)
			return 0;
		b->len += (size_t)n;
	}
}

int fz_file_read(const char *path, void **buf, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) != 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	if (S_ISDIR(st.st_mode)) {
		close(fd);
		return -EISDIR;
	}
	struct rbuf b = {0};
	if (S_ISREG(st.st_mode) && st.st_size > 0) {
		if ((uintmax_t)st.st_size >= SIZE_MAX) {
			close(fd);
			return -EFBIG;
		}
		b.target = (size_t)st.st_size;
		b.cap = b.target + 1;
	} else {
		b.cap = 4096; /* size unknown (procfs, devices): read until EOF */
	}
	b.p = malloc(b.cap);
	if (b.p == NULL) {
		close(fd);
		return -ENOMEM;
	}
	bool fallback = force_pread();
	int r = 0;
	if (!fallback) {
		r = read_uring(fd, &b);
		if (r == IO_USE_FALLBACK) {
			fallback = true;
			b.len = 0;
		}
	}
	if (fallback)
		r = read_pread(fd, &b);
	atomic_store_explicit(&io_fallback, fallback, memory_order_relaxed);
	close(fd);
	if (r < 0) {
		free(b.p);
		return r;
	}
	b.p[b.len] = '\0';
	*buf = b.p;
	*len = b.len;
	return 0;
}

static int write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* fsync the directory holding `path`, so that a rename in it is durable. */
static int fsync_parent(const char *path)
{
	char *copy = strdup(path);
	if (copy == NULL)
		return -ENOMEM;
	int r = 0;
	int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
	} else {
		/* some file systems cannot fsync a directory (EINVAL): nothing more to do there */
		if (fsync(fd) != 0 && errno != EINVAL)
			r = -errno;
		close(fd);
	}
	free(copy);
	return r;
}

int fz_file_write_durable(const char *path, const void *buf, size_t len)
{
	size_t plen = strlen(path);
	if (plen == 0)
		return -EINVAL;
	if (path[plen - 1] == '/')
		return -EISDIR;
	char *tmp = malloc(plen + sizeof(".XXXXXX"));
	if (tmp == NULL)
		return -ENOMEM;
	memcpy(tmp, path, plen);
	memcpy(tmp + plen, ".XXXXXX", sizeof(".XXXXXX"));
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		int r = -errno;
		free(tmp);
		return r;
	}
	/* keep the mode of the file being replaced; a new file gets 0644 (mkstemp made it 0600) */
	struct stat st;
	mode_t mode = stat(path, &st) == 0 ? (st.st_mode & 07777) : 0644;
	int r = 0;
	if (fchmod(fd, mode) != 0)
		r = -errno;
	if (r == 0)
		r = write_all(fd, buf, len);
	if (r == 0 && fsync(fd) != 0)
		r = -errno;
	if (close(fd) != 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) != 0)
		r = -errno;
	if (r != 0)
		unlink(tmp);
	else
		r = fsync_parent(path);
	free(tmp);
	return r;
}
