/* freeze front-keys: the near-duplicate tier's input keys of idx images (fz_front_key_u8), for
 * tools/calibrate_front.py, so the calibration searches with the appliance's own keys. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd.h"
#include "fz_front.h"
#include "fz_idx.h"
#include "fz_model.h"

static void front_keys_usage(FILE *f)
{
	fprintf(f, "usage: freeze front-keys --model MODEL.yaml --images IDX[.gz] --out FILE\n"
		   "                         [--grid N]\n"
		   "  Writes each image's near-duplicate key (the front tiers' `near: grid`; 0 or\n"
		   "  left out: automatic) as float32 values in host order, one row of DIM floats\n"
		   "  per image, and prints \"IMAGES DIM GRID\".\n");
}

int fz_cmd_front_keys(int argc, char **argv)
{
	static const struct option opts[] = {
		{"model", required_argument, 0, 'm'}, {"images", required_argument, 0, 'i'},
		{"out", required_argument, 0, 'o'},   {"grid", required_argument, 0, 'g'},
		{"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
	const char *model_path = NULL, *images = NULL, *out = NULL;
	int grid = 0, c, rc = 1;
	char err[1024];

	optind = 1;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'm': model_path = optarg; break;
		case 'i': images = optarg; break;
		case 'o': out = optarg; break;
		case 'g': grid = fz_opt_int("--grid", optarg, 0, 64); break;
		case 'h': front_keys_usage(stdout); return 0;
		default: front_keys_usage(stderr); return 2;
		}
	}
	if (!model_path || !images || !out || optind != argc) {
		front_keys_usage(stderr);
		return 2;
	}
	struct fz_model *m = NULL;
	struct fz_idx img = {0};
	struct fz_front_keyer *k = NULL;
	FILE *f = NULL;
	if (!(m = fz_model_load(model_path, err, sizeof(err)))) {
		fprintf(stderr, "freeze: %s\n", err);
		goto out;
	}
	const struct fz_shape s = m->input.shape;
	if (!grid)
		grid = fz_front_grid_auto(s.c, s.h, s.w);
	if (!(k = fz_front_keyer_create(s.c, s.h, s.w, grid))) {
		fprintf(stderr, "freeze: no key of %dx%d cells for %dx%dx%d inputs (at most %d "
				"floats, at most one cell per pixel)\n",
			grid, grid, s.c, s.h, s.w, FZ_FRONT_MAX_DIM);
		goto out;
	}
	if (fz_idx_load(images, &img, err, sizeof(err)) < 0) {
		fprintf(stderr, "freeze: %s\n", err);
		goto out;
	}
	if (img.item_size != fz_front_key_pixels(k)) {
		fprintf(stderr, "freeze: %s: items of %zu bytes, the model takes %dx%dx%d\n", images,
			img.item_size, s.c, s.h, s.w);
		goto out;
	}
	if (!(f = fopen(out, "wb"))) {
		fprintf(stderr, "freeze: %s: %s\n", out, strerror(errno));
		goto out;
	}
	const int dim = fz_front_key_dim(k);
	float key[FZ_FRONT_MAX_DIM];
	for (size_t i = 0; i < img.count; i++) {
		fz_front_key_u8(k, img.data + i * img.item_size, key);
		if (fwrite(key, sizeof(float), (size_t)dim, f) != (size_t)dim) {
			fprintf(stderr, "freeze: %s: %s\n", out, strerror(errno));
			goto out;
		}
	}
	if (fclose(f) != 0) {
		f = NULL;
		fprintf(stderr, "freeze: %s: %s\n", out, strerror(errno));
		goto out;
	}
	f = NULL;
	printf("%zu %d %d\n", img.count, dim, grid);
	rc = 0;
out:
	if (f)
		fclose(f);
	fz_front_keyer_free(k);
	fz_idx_free(&img);
	fz_model_free(m);
	return rc;
}
