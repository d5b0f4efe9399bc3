/* Shared helpers of the config/ tests: cmocka includes and message assertions. */
#ifndef CFG_TEST_H
#define CFG_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* The message contains `needle`. */
#define assert_contains(hay, needle)                                                               \
	do {                                                                                       \
		if (strstr((hay), (needle)) == NULL)                                               \
			fail_msg("message \"%s\" lacks \"%s\"", (hay), (needle));                  \
	} while (0)

/* The message starts with `prefix` (e.g. "m.yaml:3:5: "). */
#define assert_prefix(hay, prefix)                                                                 \
	do {                                                                                       \
		if (strncmp((hay), (prefix), strlen(prefix)) != 0)                                 \
			fail_msg("message \"%s\" does not start with \"%s\"", (hay), (prefix));    \
	} while (0)

/* $FZ_SRCDIR/rel (relative to the current directory when FZ_SRCDIR is unset). */
static inline void cfg_src_path(char *buf, size_t size, const char *rel)
{
	const char *src = getenv("FZ_SRCDIR");
	snprintf(buf, size, "%s/%s", src ? src : ".", rel);
}

#endif /* CFG_TEST_H */
