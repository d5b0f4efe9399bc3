/* The freeze binary's subcommands (offline ones run without DPDK). */
#ifndef FZ_CMD_H
#define FZ_CMD_H

#include <stddef.h>
#include <stdint.h>

struct fz_command {
	const char *name;
	int (*run)(int argc, char **argv); /* argv[0] is the subcommand; returns an exit code */
	const char *summary;
};

int fz_cmd_infer(int argc, char **argv);
int fz_cmd_calibrate(int argc, char **argv);
int fz_cmd_eval(int argc, char **argv);
int fz_cmd_plan(int argc, char **argv);
int fz_cmd_front_keys(int argc, char **argv);

#include "fz_cli.h" /* fz_now_s, fz_opt_int */

#endif /* FZ_CMD_H */
