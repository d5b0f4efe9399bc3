/* freeze: entry point; dispatches offline subcommands, otherwise starts the DPDK appliance
 * (main depends on both; neither calls back into it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#ifdef FZ_HAVE_DPDK
#include "fz_control.h"
#endif

static const struct fz_command commands[] = {
	{"infer", fz_cmd_infer, "classify idx images with the whole model (no caches, no DPDK)"},
	{"calibrate", fz_cmd_calibrate, "build per-layer caches on train data, set thresholds, write a snapshot"},
	{"eval", fz_cmd_eval, "run requests with the caches (exit at the first hit); report exits, agreement"},
	{"plan", fz_cmd_plan, "propose appliance stages of equal expected work from exit rates and costs"},
	{"front-keys", fz_cmd_front_keys, "the near-duplicate tier's input keys of idx images (for calibration)"},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: freeze COMMAND [options]     (offline)\n"
		   "       freeze [EAL options] -- --config stages.yaml [options]  (appliance)\n\n"
		   "commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\n'freeze COMMAND --help' describes a command's options.\n");
#ifdef FZ_FAULT_INJECTION
	fprintf(f, "\nbuilt with fault injection (-Dfault_injection=true, for tests):\n"
		   "  FZ_FAULT_STALL=STAGE:MS  the appliance's stage STAGE stalls MS ms once\n");
#endif
}

int main(int argc, char **argv)
{
	if (argc >= 2) {
		for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
			if (strcmp(argv[1], commands[i].name) == 0)
				return commands[i].run(argc - 1, argv + 1);
		if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
			usage(stdout);
			return 0;
		}
	}
#ifdef FZ_HAVE_DPDK
	return fz_appliance_main(argc, argv);
#else
	usage(stderr);
	fprintf(stderr, "freeze: built without DPDK: only the offline commands are available\n");
	return 2;
#endif
}
