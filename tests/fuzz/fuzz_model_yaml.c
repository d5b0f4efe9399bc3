/* libFuzzer target: fz_model_parse on arbitrary YAML, then the loaded graph's invariants. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fz_model.h"

static void fz_fuzz_check_shape(struct fz_shape s)
{
	if (s.c < 1 || s.h < 1 || s.w < 1)
		abort(); /* the loader refuses non-positive sizes */
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
	size_t errlen = fz_fuzz_errlen(size);
	char *err = malloc(errlen ? errlen : 1);
	struct fz_model *m;

	if (err == NULL)
		return 0;
	err[0] = '\0';
	m = fz_model_parse("fuzz/model.yaml", (const char *)data, size, err, errlen);
	if (m == NULL) {
		fz_fuzz_check_msg(err, errlen); /* every refusal says why */
		free(err);
		return 0;
	}
	free(err);
	if (m->n_layers < 1 || m->output < 0 || m->output >= m->n_layers)
		abort();
	fz_fuzz_check_shape(m->input.shape);
	for (int i = 0; i < m->n_layers; i++) {
		const struct fz_layer *l = &m->layers[i];

		if (memchr(l->name, '\0', sizeof(l->name)) == NULL)
			abort();
		if ((unsigned)l->kind >= FZ_LAYER__COUNT ||
		    strcmp(fz_layer_kind_name(l->kind), "unknown") == 0)
			abort();
		if (fz_model_find_layer(m, l->name) != i)
			abort(); /* names are unique */
		if (l->n_inputs < 1 || l->n_inputs > 2)
			abort();
		for (int k = 0; k < l->n_inputs; k++)
			if (l->inputs[k] != FZ_INPUT_TENSOR && (l->inputs[k] < 0 || l->inputs[k] >= i))
				abort(); /* topological order: inputs come first */
		fz_fuzz_check_shape(l->in);
		fz_fuzz_check_shape(l->out);
	}
	fz_model_free(m);
	return 0;
}
