/* libFuzzer target: fz_cache_config_parse (the cache-config YAML loader) on arbitrary input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fz_cache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512];
	struct fz_cache_config *cfg;

	err[0] = '\0';
	cfg = fz_cache_config_parse("fuzz/cache.yaml", (const char *)data, size, err, sizeof(err));
	if (cfg == NULL) {
		if (err[0] == '\0')
			abort(); /* every refusal says why */
		return 0;
	}
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
