/* libFuzzer target: fz_weights_parse on arbitrary file images, then every accessor on success. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fz_stages.h"

static size_t fz_fuzz_dtype_size(const char *dtype)
{
	static const struct {
		const char *name;
		size_t size;
	} t[] = {{"F64", 8}, {"I64", 8}, {"U64", 8}, {"F32", 4}, {"I32", 4}, {"U32", 4},
		 {"F16", 2}, {"BF16", 2}, {"I16", 2}, {"U16", 2}};

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (strcmp(t[i].name, dtype) == 0)
			return t[i].size;
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256];
	struct fz_weights *w;
	void *buf = malloc(size ? size : 1);
	volatile uint8_t sink = 0;

	if (buf == NULL)
		return 0;
	memcpy(buf, data, size);
	w = fz_weights_parse("fuzz.safetensors", buf, size, err, sizeof(err));
	if (w == NULL)
		return 0;
	for (size_t i = 0; i < fz_weights_count(w); i++) {
		const char *name = fz_weights_name(w, i), *dtype;
		const int64_t *dims;
		const uint8_t *p;
		size_t bytes;
		int ndim;

		p = fz_weights_find(w, name, &dtype, &ndim, &dims);
		if (p == NULL)
			abort(); /* every listed name must be found */
		bytes = fz_fuzz_dtype_size(dtype);
		for (int d = 0; d < ndim; d++)
			bytes *= (size_t)dims[d];
		if ((uintptr_t)p % fz_fuzz_dtype_size(dtype))
			abort(); /* data is aligned for its dtype */
		for (size_t b = 0; b < bytes; b++) /* ASan checks the whole range is owned */
			sink ^= p[b];
		if (strcmp(dtype, "F32") == 0 &&
		    fz_weights_f32(w, name, ndim, dims, err, sizeof(err)) != (const float *)p)
			abort();
	}
	fz_weights_meta(w, "format");
	fz_weights_f32(w, "stem.weight", 0, NULL, err, sizeof(err));
	fz_weights_free(w);
	(void)sink;
	return 0;
}
