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

#include "fz_cli.h" /* fz_now_s, fz_opt_int */

/*
 * The model cut into layer groups after each cache layer (cmd_calibrate.c; calibrate, eval).
 * Stage s runs model layers [first[s], last[s]]; stage s < n - 1 ends at cache s's layer, whose
 * output (the tap) feeds the cache and the next stage.
 */
struct fz_group;
struct fz_net;
struct fz_chain {
	int n;
	struct fz_group **g;
	int *first, *last;
};
/* cache_layer[]: increasing model layer indices, none the output layer. 0 or -errno + err. */
int fz_chain_create(struct fz_chain *ch, struct fz_net *net, const int *cache_layer, int n_caches,
		    int max_batch, char *err, size_t errlen);
void fz_chain_free(struct fz_chain *ch);
/* Copy samples idx[0..n) (all of 0..n-1 when idx is NULL) of stage s's output, in that order,
 * into stage s + 1's input. */
void fz_chain_forward(struct fz_chain *ch, int s, const int *idx, int n);

#endif /* FZ_CMD_H */
