/* Command-line helpers: option values checked with messages that name the option. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "fz_cli.h"

double fz_now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int fz_opt_int(const char *opt, const char *val, int min, int max)
{
	char *end;
	long v = strtol(val, &end, 10);
	if (*val == '\0' || *end != '\0' || v < min || v > max) {
		fprintf(stderr, "freeze: %s: expected an integer in %d..%d, got '%s'\n", opt, min,
			max, val);
		exit(2);
	}
	return (int)v;
}
