/* libFuzzer target: fz_cache_config_parse (the cache-config YAML loader) on arbitrary input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fz_cache.h"

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
	struct fz_cache_config *cfg;

	if (err == NULL)
		return 0;
	err[0] = '\0';
	cfg = fz_cache_config_parse("fuzz/cache.yaml", (const char *)data, size, err, errlen);
	if (cfg == NULL)
		fz_fuzz_check_msg(err, errlen); /* every refusal says why */
	free(err);
	if (cfg == NULL)
		return 0;
	if (cfg->n_caches < 1 || cfg->budget < 0.0 || cfg->budget > 1.0)
		abort();
	for (int i = 0; i < cfg->n_caches; i++) {
		const struct fz_cache_params *p = &cfg->caches[i];

		if (memchr(p->layer, '\0', sizeof(p->layer)) == NULL)
			abort();
		if ((unsigned)p->kind >= FZ_CACHE_KIND__COUNT ||
		    (unsigned)p->evict >= FZ_CACHE_EVICT__COUNT ||
		    (unsigned)p->thr_mode >= FZ_CACHE_THR__COUNT)
			abort();
		if (p->k < 1 || p->k > FZ_CACHE_MAX_K || p->dims < 0 || p->dims > FZ_CACHE_MAX_DIM ||
		    p->grid < 1 || p->size < 1 || p->capacity < 0 || (p->online && p->capacity < 1))
			abort();
		for (int j = 0; j < i; j++)
			if (strcmp(cfg->caches[j].layer, p->layer) == 0)
				abort(); /* one cache per layer */
	}
	fz_cache_config_free(cfg);
	return 0;
}
