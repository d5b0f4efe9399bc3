/* Skips in cmocka tests that meson sees: a case that cannot run here says why and is counted,
 * and the test exits 77 (meson: SKIP) when nothing failed but a case was skipped. cmocka's own
 * skip() marks the case and lets the program exit 0, which meson counts as a pass. */
#ifndef FZ_TEST_SKIP_H
#define FZ_TEST_SKIP_H

#include <stdio.h>

/* Cases skipped so far (one program, one counter: a header-only helper for single-file tests). */
static int fz_test_skipped;

/* Skip the current case: print why (the case's name comes from cmocka's own [ SKIPPED ] line). */
#define FZ_SKIP(...)                                                                               \
	do {                                                                                       \
		fz_test_skipped++;                                                                 \
		printf("skipped: ");                                                               \
		printf(__VA_ARGS__);                                                               \
		printf("\n");                                                                      \
		fflush(stdout);                                                                    \
		skip();                                                                            \
	} while (0)

/* main's exit code from cmocka_run_group_tests' `failed`: failures first, then 77 if a case
 * could not run here. */
static inline int fz_test_exit(int failed)
{
	if (failed)
		return failed;
	if (fz_test_skipped) {
		printf("SKIP: %d case(s) could not run here (see \"skipped:\" above); the others "
		       "passed\n",
		       fz_test_skipped);
		return 77;
	}
	return 0;
}

#endif /* FZ_TEST_SKIP_H */
