/* Tests of config/io.c: durable write then read, through io_uring and the forced pread path. */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/filter.h>
#include <linux/seccomp.h>

#include <liburing.h>

#include "cfg_test.h"
#include "../fz_test_skip.h"
#include "fz_io.h"

static char dir[256];

static int setup(void **state)
{
	(void)state;
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, sizeof(dir), "%s/fz-io-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	DIR *d = opendir(dir);
	if (d == NULL)
		return -1;
	struct dirent *e;
	char p[512];
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
	return rmdir(dir);
}

/* Does this kernel let us set up a ring? (containers often forbid io_uring) */
static bool uring_available(void)
{
	struct io_uring ring;
	if (io_uring_queue_init(2, &ring, 0) != 0)
		return false;
	io_uring_queue_exit(&ring);
	return true;
}

static void use_pread(bool on)
{
	if (on)
		setenv("FZ_IO_FORCE_PREAD", "1", 1);
	else
		unsetenv("FZ_IO_FORCE_PREAD");
}

static void round_trip(size_t len, bool pread_path)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/data-%zu.bin", dir, len);
	unsigned char *data = malloc(len ? len : 1);
	assert_non_null(data);
	for (size_t i = 0; i < len; i++)
		data[i] = (unsigned char)(i * 131u + (i >> 11));
	assert_int_equal(fz_file_write_durable(path, data, len), 0);

	use_pread(pread_path);
	void *buf = NULL;
	size_t got = 12345;
	assert_int_equal(fz_file_read(path, &buf, &got), 0);
	use_pread(false);
	assert_int_equal(got, len);
	assert_memory_equal(buf, data, len);
	assert_int_equal(((char *)buf)[len], '\0');
	if (pread_path)
		assert_true(fz_io_used_fallback());
	else
		assert_int_equal(fz_io_used_fallback(), !uring_available());
	free(buf);
	free(data);
}

static void test_round_trip_uring(void **state)
{
	(void)state;
	round_trip(1000, false);
	round_trip(3u * 1024 * 1024 + 17, false); /* several 1 MiB chunks in flight */
	round_trip(19u * 1024 * 1024 + 5, false); /* more chunks than requests in flight */
}

static void test_round_trip_forced_pread(void **state)
{
	(void)state;
	round_trip(1000, true);
	round_trip(3u * 1024 * 1024 + 17, true);
}

static void test_empty_file(void **state)
{
	(void)state;
	round_trip(0, false);
	round_trip(0, true);
}

/* stat() says 0 bytes, but the file has content: read until EOF. */
static void test_procfs_file_size_unknown(void **state)
{
	(void)state;
	for (int p = 0; p < 2; p++) {
		use_pread(p);
		void *buf;
		size_t len;
		assert_int_equal(fz_file_read("/proc/self/status", &buf, &len), 0);
		use_pread(false);
		assert_true(len > 0);
		assert_int_equal(strlen(buf), len);
		assert_contains((char *)buf, "Name:");
		free(buf);
	}
}

static void test_replace_keeps_mode_and_leaves_no_temp(void **state)
{
	(void)state;
	char path[512];
	snprintf(path, sizeof(path), "%s/conf.yaml", dir);
	assert_int_equal(fz_file_write_durable(path, "old\n", 4), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0644);
	assert_int_equal(chmod(path, 0600), 0);
	assert_int_equal(fz_file_write_durable(path, "new contents\n", 13), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	void *buf;
	size_t len;
	assert_int_equal(fz_file_read(path, &buf, &len), 0);
	assert_int_equal(len, 13);
	assert_string_equal(buf, "new contents\n");
	free(buf);

	int entries = 0;
	DIR *d = opendir(dir);
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		entries += e->d_name[0] != '.';
	closedir(d);
	assert_int_equal(entries, 1);
}

/* In a child: make io_uring_setup fail with `err` (as container seccomp profiles do), read. */
static int child_read_without_uring(int err, const char *path)
{
	struct sock_filter filter[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (unsigned)err),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = sizeof(filter) / sizeof(filter[0]), .filter = filter};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
	    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
		return 77;
	void *buf;
	size_t len;
	if (fz_file_read(path, &buf, &len) != 0)
		return 1;
	int r = len == 5 && memcmp(buf, "hello", 5) == 0 ? 0 : 2;
	free(buf);
	if (r == 0 && !fz_io_used_fallback())
		r = 3;
	return r;
}

static void test_uring_forbidden_falls_back_to_pread(void **state)
{
	(void)state;
	char path[512];
	snprintf(path, sizeof(path), "%s/small", dir);
	assert_int_equal(fz_file_write_durable(path, "hello", 5), 0);
	static const int errs[] = {EPERM, ENOSYS};
	for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0)
			_exit(child_read_without_uring(errs[i], path));
		int status;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status));
		if (WEXITSTATUS(status) == 77)
			FZ_SKIP("seccomp filters are not allowed here: cannot forbid io_uring_setup");
		assert_int_equal(WEXITSTATUS(status), 0);
	}
}

static void test_read_errors(void **state)
{
	(void)state;
	void *buf = NULL;
	size_t len;
	char path[512];
	snprintf(path, sizeof(path), "%s/missing", dir);
	assert_int_equal(fz_file_read(path, &buf, &len), -ENOENT);
	assert_int_equal(fz_file_read(dir, &buf, &len), -EISDIR);
	assert_null(buf);
}

static void test_write_errors(void **state)
{
	(void)state;
	char path[512];
	snprintf(path, sizeof(path), "%s/no/such/dir/f", dir);
	assert_int_equal(fz_file_write_durable(path, "x", 1), -ENOENT);
	assert_int_equal(fz_file_write_durable("", "x", 1), -EINVAL);
	snprintf(path, sizeof(path), "%s/", dir);
	assert_int_equal(fz_file_write_durable(path, "x", 1), -EISDIR);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip_uring, setup, teardown),
		cmocka_unit_test_setup_teardown(test_round_trip_forced_pread, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_file, setup, teardown),
		cmocka_unit_test(test_procfs_file_size_unknown),
		cmocka_unit_test_setup_teardown(test_uring_forbidden_falls_back_to_pread, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_replace_keeps_mode_and_leaves_no_temp, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_read_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_errors, setup, teardown),
	};
	return fz_test_exit(cmocka_run_group_tests_name("config/io", tests, NULL, NULL));
}
