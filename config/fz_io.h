/* Freeze file I/O: whole-file reads through io_uring (pread fallback) and durable writes. */
#ifndef FZ_IO_H
#define FZ_IO_H

#include <stddef.h>

/*
 * Read a whole regular file into a new malloc'd buffer (one extra NUL byte after the data).
 * Uses io_uring; falls back to pread() when the ring cannot be set up (EPERM, ENOSYS, ENOMEM),
 * the kernel lacks IORING_OP_READ, or the environment sets FZ_IO_FORCE_PREAD=1 (for tests).
 * Files whose size stat() does not know (procfs) are read until EOF.
 * Returns 0 and sets *buf and *len, or a negative errno (-ENOENT, -EISDIR, -ENOMEM, -EIO, ...).
 */
int fz_file_read(const char *path, void **buf, size_t *len);

/*
 * Write `len` bytes durably: temp file in the same directory, write, fsync, rename over `path`,
 * fsync of the directory. A reader sees the old file or the new one, never a mix.
 * Returns 0 or a negative errno.
 */
int fz_file_write_durable(const char *path, const void *buf, size_t len);

/* Non-zero when the last fz_file_read used the pread fallback (for logs and tests). */
int fz_io_used_fallback(void);

#endif /* FZ_IO_H */
