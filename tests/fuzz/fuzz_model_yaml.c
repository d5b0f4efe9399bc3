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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];
	struct fz_model *m;

	err[0] = '\0';
	m = fz_model_parse("fuzz/model.yaml", (const char *)data, size, err, sizeof(err));
	if (m == NULL) {
		if (err[0] == '\0' || memchr(err, '\0', sizeof(err)) == NULL)
			abort(); /* every refusal says why, in a terminated message */
		return 0;
	}
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
