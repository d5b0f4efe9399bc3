/* The freeze binary's subcommands (offline ones run without DPDK). */
#ifndef FZ_CMD_H
#define FZ_CMD_H

#include <stdint.h>

struct fz_command {
	const char *name;
	int (*run)(int argc, char **argv); /* argv[0] is the subcommand; returns an exit code */
	const char *summary;
};

int fz_cmd_infer(int argc, char **argv);

/* Shared by the offline commands. */
double fz_now_s(void);
/* Parse a positive int option value or exit(2) with a message naming the option. */
int fz_opt_int(const char *opt, const char *val, int min, int max);
/* Index of the largest of n floats. */
int fz_argmax(const float *v, int n);

#endif /* FZ_CMD_H */
