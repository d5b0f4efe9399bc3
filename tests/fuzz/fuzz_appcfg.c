/* libFuzzer target: fz_appcfg_load on an arbitrary stages YAML, then resolve it against ResNet-18. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fz_appcfg.h"
#include "fz_model.h"

extern const char fz_fuzz_model_yaml[]; /* tests/data/config/resnet18_full.yaml, embedded */

static struct fz_model *fz_fuzz_model;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char err[512];

	(void)argc;
	(void)argv;
	fz_fuzz_model = fz_model_parse("tests/data/config/resnet18_full.yaml", fz_fuzz_model_yaml,
				       strlen(fz_fuzz_model_yaml), err, sizeof(err));
	if (fz_fuzz_model == NULL) {
		fprintf(stderr, "fuzz_appcfg: the embedded model does not load: %s\n", err);
		abort();
	}
	return 0;
}

/* One input in four gets a short message buffer (0..39 bytes), sized exactly so ASan sees overruns. */
static size_t fz_fuzz_errlen(size_t size)
{
	return size % 4 == 3 ? size / 4 % 40 : 512;
}

/* A refusal's message: terminated within errlen, and not empty when there is room for it. */
static void fz_fuzz_check_msg(const char *err, size_t errlen)
{
	if (errlen > 0 && memchr(err, '\0', errlen) == NULL)
		abort();
	if (errlen > 1 && err[0] == '\0')
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fz_appcfg cfg; /* ~30 KiB: keep it off the stack */
	size_t errlen = fz_fuzz_errlen(size);
	char *err = malloc(errlen ? errlen : 1);
	int rc;

	if (err == NULL)
		return 0;
	err[0] = '\0';
	rc = fz_appcfg_load("fuzz/stages.yaml", (const char *)data, size, "/fuzz", &cfg, err,
			    errlen);
	if (rc > 0)
		abort(); /* 0 or -errno */
	if (rc < 0) {
		fz_fuzz_check_msg(err, errlen); /* every refusal says why */
		free(err);
		return 0;
	}
	if (cfg.n_stages < 0 || cfg.n_stages > FZ_MAX_STAGES)
		abort();
	for (int i = 0; i < cfg.n_stages; i++)
		if (memchr(cfg.stages[i].name, '\0', sizeof(cfg.stages[i].name)) == NULL ||
		    (unsigned)cfg.stages[i].idle > FZ_IDLE_SLEEP)
			abort();
	if (fz_idle_name(cfg.idle) == NULL)
		abort();
	if (errlen)
		err[0] = '\0';
	rc = fz_appcfg_resolve(&cfg, fz_fuzz_model, err, errlen);
	if (rc > 0)
		abort();
	if (rc < 0)
		fz_fuzz_check_msg(err, errlen);
	free(err);
	if (rc == 0) {
		/* resolved: every layer in exactly one stage, in model order */
		int next = 0;

		for (int i = 0; i < cfg.n_stages; i++) {
			if (cfg.stages[i].first_layer != next ||
			    cfg.stages[i].last_layer < cfg.stages[i].first_layer)
				abort();
			next = cfg.stages[i].last_layer + 1;
		}
		if (cfg.n_stages > 0 && next != fz_fuzz_model->n_layers)
			abort();
	}
	return 0;
}
