/* libFuzzer target: fz_cache_set_parse (cache snapshots) as read, and with length and CRC fixed up. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fz_cache.h"

#define FZ_FUZZ_SNAP_HDR 40    /* magic, version, counts, fingerprint, classes, length */
#define FZ_FUZZ_SNAP_TRAILER 8 /* CRC32C, reserved */

/* Use a loaded set the way the appliance does: entries, a lookup, the memory figure. */
static void fz_fuzz_use(struct fz_cache_set *s, const uint8_t *data, size_t size)
{
	float key[FZ_CACHE_MAX_DIM];
	struct fz_cache_result res;

	if (s->n_classes < 2 || s->n_classes > FZ_CACHE_MAX_CLASSES || s->n_caches < 0)
		abort();
	(void)fz_cache_set_bytes(s);
	for (int i = 0; i < s->n_caches; i++) {
		struct fz_cache *c = s->caches[i];
		int dim = fz_cache_key_dim(c), label;

		if (c == NULL || dim < 1 || dim > FZ_CACHE_MAX_DIM ||
		    fz_cache_entries(c) > fz_cache_slots(c))
			abort();
		for (int slot = 0; slot < fz_cache_slots(c) && slot < 64; slot++)
			if (fz_cache_read_entry(c, slot, key, &label) == 0 &&
			    (label < 0 || label >= s->n_classes))
				abort();
		for (int d = 0; d < dim; d++)
			key[d] = size ? (float)data[(size_t)d % size] / 255.0f : 0.0f;
		if (fz_cache_lookup_keys(c, key, 1, &res) != 0)
			abort();
		if (res.label != FZ_CACHE_LABEL_NONE && (res.label < 0 || res.label >= s->n_classes))
			abort();
	}
}

/*
 * Seed maker: FZ_FUZZ_MAKE_SEEDS=DIR ./fuzz_snapshot writes small valid snapshots into DIR with
 * the cachecore API (knn with online entries; kmeans with PCA; both in one set) and exits.
 */
static struct fz_cache *fz_fuzz_seed_cache(enum fz_cache_kind kind, int grid, int dims, int c,
					   int hw, int size, int capacity, int online)
{
	struct fz_cache_params p;
	struct fz_cache *ca;
	float pooled[64 * FZ_CACHE_MAX_DIM], keys[64 * FZ_CACHE_MAX_DIM];
	int labels[64], n = 64;
	uint32_t x = 12345;

	fz_cache_params_default(&p);
	snprintf(p.layer, sizeof(p.layer), "block%d", c);
	p.kind = kind;
	p.grid = grid;
	p.dims = dims;
	p.k = 3;
	p.size = size;
	p.capacity = capacity;
	p.online = capacity > 0;
	ca = fz_cache_create(&p, c, hw, hw, 3);
	if (ca == NULL)
		return NULL;
	int pd = fz_cache_pooled_dim(ca), kd = fz_cache_key_dim(ca);
	for (int i = 0; i < n; i++) {
		labels[i] = i % 3;
		for (int d = 0; d < pd; d++) {
			x = x * 1103515245u + 12345u;
			pooled[i * pd + d] = (float)(x >> 16 & 0xff) / 64.0f + (float)labels[i];
		}
	}
	if ((dims && fz_cache_fit_pca(ca, pooled, (size_t)n, 0)) ||
	    fz_cache_project_burst(ca, pooled, n, keys) ||
	    fz_cache_build(ca, keys, labels, (size_t)n, 1))
		goto fail;
	for (int i = 0; i < online; i++)
		if (fz_cache_insert(ca, &keys[i * kd], labels[i]))
			goto fail;
	fz_cache_set_threshold(ca, 0.5f);
	return ca;
fail:
	fz_cache_free(ca);
	return NULL;
}

static void fz_fuzz_make_seeds(const char *dir)
{
	static const struct {
		const char *name;
		int n;
		int kind[2], grid[2], dims[2], c[2], hw[2], size[2], capacity[2], online[2];
	} seeds[] = {
		{"knn_online.fzc", 1, {FZ_CACHE_KNN}, {1}, {0}, {4}, {2}, {8}, {4}, {6}},
		{"kmeans_pca.fzc", 1, {FZ_CACHE_KMEANS}, {2}, {4}, {8}, {4}, {4}, {0}, {0}},
		{"two_caches.fzc", 2, {FZ_CACHE_KMEANS, FZ_CACHE_KNN}, {1, 2}, {0, 3}, {4, 2},
		 {2, 2}, {3, 6}, {2, 0}, {1, 0}},
	};
	char path[4096];

	for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
		struct fz_cache_set *s = fz_cache_set_new(0x5eedf00dULL + i, 3, seeds[i].n);

		if (s == NULL)
			abort();
		for (int j = 0; j < seeds[i].n; j++) {
			s->caches[j] = fz_fuzz_seed_cache(
				(enum fz_cache_kind)seeds[i].kind[j], seeds[i].grid[j],
				seeds[i].dims[j], seeds[i].c[j], seeds[i].hw[j], seeds[i].size[j],
				seeds[i].capacity[j], seeds[i].online[j]);
			if (s->caches[j] == NULL) {
				fprintf(stderr, "seed %s: cache %d cannot be built\n", seeds[i].name, j);
				exit(1);
			}
		}
		snprintf(path, sizeof(path), "%s/%s", dir, seeds[i].name);
		if (fz_cache_set_save(s, path)) {
			fprintf(stderr, "seed %s: cannot write %s\n", seeds[i].name, path);
			exit(1);
		}
		fz_cache_set_free(s);
		printf("wrote %s\n", path);
	}
	exit(0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("FZ_FUZZ_MAKE_SEEDS");

	(void)argc;
	(void)argv;
	if (dir != NULL && dir[0] != '\0')
		fz_fuzz_make_seeds(dir);
	return 0;
}

static void fz_fuzz_parse(const void *buf, size_t len, const uint8_t *data, size_t size)
{
	char err[512];
	struct fz_cache_set *s;

	err[0] = '\0';
	s = fz_cache_set_parse("fuzz/cache.fzc", buf, len, 0, err, sizeof(err));
	if (s == NULL) {
		if (err[0] == '\0')
			abort(); /* every refusal says why */
		return;
	}
	fz_fuzz_use(s, data, size);
	fz_cache_set_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *fixed;
	uint64_t total = size;
	uint32_t crc;

	/* As read: the header, length and checksum checks. */
	fz_fuzz_parse(data, size, data, size);
	if (size < FZ_FUZZ_SNAP_HDR + FZ_FUZZ_SNAP_TRAILER)
		return 0;
	/* Length and CRC32C made right, so mutations reach the cache records behind them. */
	fixed = malloc(size);
	if (fixed == NULL)
		return 0;
	memcpy(fixed, data, size);
	memcpy(fixed + 32, &total, sizeof(total));
	crc = fz_crc32c(0, fixed, size - FZ_FUZZ_SNAP_TRAILER);
	memcpy(fixed + size - FZ_FUZZ_SNAP_TRAILER, &crc, sizeof(crc));
	fz_fuzz_parse(fixed, size, data, size);
	free(fixed);
	return 0;
}
