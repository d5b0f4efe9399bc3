/* Appliance config tests: the shipped example loads; each mistake an operator can make is
 * refused with FILE:LINE:COLUMN and what was expected. */
#include <errno.h>

#include "cfg_test.h"
#include "fz_appcfg.h"
#include "fz_model.h"

static struct fz_model *model;

static int setup(void **state)
{
	char p[4096], err[1024];
	(void)state;
	cfg_src_path(p, sizeof(p), "tests/data/config/resnet18_full.yaml");
	model = fz_model_load(p, err, sizeof(err));
	if (!model)
		fprintf(stderr, "%s\n", err);
	return model ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	fz_model_free(model);
	return 0;
}

#define HEAD "model: m.yaml\n"
#define STAGES4                                                                                    \
	"stages:\n"                                                                                \
	"  - {name: s1, lcore: 2, layers: stem..block2}\n"                                         \
	"  - {name: s2, lcore: 3, layers: block3..block4}\n"                                       \
	"  - {name: s3, lcore: 4, layers: block5..block6}\n"                                       \
	"  - {name: s4, lcore: 5, layers: block7..fc}\n"

/* Load (and resolve) text; return the loader's result, message in err. */
static int load(const char *text, struct fz_appcfg *cfg, char *err, size_t errlen)
{
	int rc = fz_appcfg_load("s.yaml", text, strlen(text), "/cfgdir", cfg, err, errlen);
	if (rc == 0)
		rc = fz_appcfg_resolve(cfg, model, err, errlen);
	return rc;
}

static void expect_error(const char *text, const char *prefix, const char *words)
{
	static struct fz_appcfg cfg;
	char err[1024] = "";
	assert_int_equal(load(text, &cfg, err, sizeof(err)), -EINVAL);
	assert_prefix(err, prefix);
	assert_contains(err, words);
}

static void test_shipped_example_loads(void **state)
{
	(void)state;
	static struct fz_appcfg cfg;
	char p[4096], err[1024];
	cfg_src_path(p, sizeof(p), "config/examples/appliance.yaml");
	assert_int_equal(fz_appcfg_load(p, NULL, 0, NULL, &cfg, err, sizeof(err)), 0);
	assert_int_equal(fz_appcfg_resolve(&cfg, model, err, sizeof(err)), 0);
	assert_int_equal(cfg.n_stages, 4);
	assert_int_equal(cfg.stages[0].first_layer, 0);
	assert_int_equal(cfg.stages[3].last_layer, model->n_layers - 1);
	assert_true(strstr(cfg.model_path, "config/examples/../../models/") != NULL);
	assert_int_equal(cfg.port.ipv4, (198u << 24) | (18u << 16) | 1);
	assert_int_equal(cfg.port.udp_port, 7878);
	/* the front tiers are on, with a calibrated radius */
	assert_true(cfg.front.enabled);
	assert_true(cfg.front.near_radius > 0 && cfg.front.exact_entries > 0);
}

/* no `front:` section: off; a section: on with its defaults, sizes of 0 turn tiers off */
static void test_front_defaults(void **state)
{
	(void)state;
	static struct fz_appcfg cfg;
	char err[1024];
	assert_int_equal(load(HEAD STAGES4, &cfg, err, sizeof(err)), 0);
	assert_false(cfg.front.enabled);
	assert_int_equal(load(HEAD "front: {exact: {entries: 0}, near: {radius: 0.01}}\n" STAGES4,
			      &cfg, err, sizeof(err)), 0);
	assert_true(cfg.front.enabled);
	assert_int_equal(cfg.front.exact_entries, 0);
	assert_float_equal(cfg.front.near_radius, 0.01f, 1e-7);
	assert_float_equal(cfg.front.near_exit_min_confidence, 1.0f, 0);
	assert_int_equal(load(HEAD "front: {enabled: false}\n" STAGES4, &cfg, err, sizeof(err)), 0);
	assert_false(cfg.front.enabled);
}

static void test_front_errors(void **state)
{
	(void)state;
	expect_error(HEAD "front: {near: {radius: 3}}\n" STAGES4, "s.yaml:2:24: ",
		     "expected a root-mean-square pixel difference in 0..1");
	expect_error(HEAD "front: {near: {grid: 65}}\n" STAGES4, "s.yaml:2:22: ",
		     "expected 0 (automatic) or 1..64 cells per axis");
	/* the old |DFT| key's setting is refused by name, not ignored */
	expect_error(HEAD "front: {near: {freqs: 4}}\n" STAGES4, "s.yaml:2:23: ", "`freqs`");
	expect_error(HEAD "front: {near: {exit_min_confidence: 2}}\n" STAGES4, "s.yaml:2:37: ",
		     "expected a probability in 0..1");
	expect_error(HEAD "front: {exact: {entries: 3}}\n" STAGES4, "s.yaml:2:26: ",
		     "expected 0 (off) or at least 8");
	expect_error(HEAD "front: {coalesce: {wait: 5}}\n" STAGES4, "s.yaml:2:20: ",
		     "unknown key 'wait'");
}

/* a follower's wait had no maximum: a typo of a few zeros parked requests for minutes */
static void test_coalesce_wait_above_maximum_refused(void **state)
{
	(void)state;
	static struct fz_appcfg cfg;
	char err[1024];
	expect_error(HEAD "front: {coalesce: {wait_us: 2000000}}\n" STAGES4, "s.yaml:2:29: ",
		     "expected at most 1000000 us");
	assert_int_equal(load(HEAD "front: {coalesce: {wait_us: 1000000}}\n" STAGES4, &cfg, err,
			      sizeof(err)), 0);
	assert_int_equal(cfg.front.wait_us, FZ_FRONT_WAIT_US_MAX);
}

static void test_defaults_and_relative_paths(void **state)
{
	(void)state;
	static struct fz_appcfg cfg;
	char err[1024];
	assert_int_equal(load(HEAD "cache: c.fzc\n" STAGES4, &cfg, err, sizeof(err)), 0);
	assert_string_equal(cfg.model_path, "/cfgdir/m.yaml");
	assert_string_equal(cfg.cache_path, "/cfgdir/c.fzc");
	assert_int_equal(cfg.stages[1].max_batch, 32);
	assert_int_equal(cfg.stages[1].idle, FZ_IDLE_YIELD);
	assert_string_equal(cfg.stages[1].first, "block3");
}

static void test_layer_list_and_single_name(void **state)
{
	(void)state;
	static struct fz_appcfg cfg;
	char err[1024];
	assert_int_equal(load(HEAD "stages:\n"
				   "  - {lcore: 2, layers: [stem, stem_bn, stem_relu, block1]}\n"
				   "  - {lcore: 3, layers: block2}\n"
				   "  - {lcore: 4, layers: block3..fc, idle: sleep, max_batch: 64}\n",
			      &cfg, err, sizeof(err)),
			 0);
	assert_string_equal(cfg.stages[1].name, "stage2");
	assert_int_equal(cfg.stages[2].idle, FZ_IDLE_SLEEP);
	assert_int_equal(cfg.stages[2].max_batch, 64);
}

/* batches travel whole between stages: a later stage cannot take fewer rows */
static void test_max_batch_below_previous(void **state)
{
	(void)state;
	expect_error(HEAD "stages:\n  - {lcore: 2, layers: stem..block2, max_batch: 32}\n"
			  "  - {lcore: 3, layers: block3..fc, max_batch: 16}\n",
		     "s.yaml:4:47: ", "below the 32 of stage 'stage1'");
}

static void test_unknown_key(void **state)
{
	(void)state;
	expect_error(HEAD "rign: {size: 64}\n" STAGES4, "s.yaml:2:1: ", "unknown key 'rign'");
}

static void test_unknown_stage_key(void **state)
{
	(void)state;
	expect_error(HEAD "stages:\n  - {name: a, lcore: 2, layer: stem..fc}\n", "s.yaml:3:25: ",
		     "unknown key 'layer'");
}

static void test_missing_stages(void **state)
{
	(void)state;
	expect_error(HEAD "rings: {size: 64}\n", "s.yaml:1:1: ", "missing required key 'stages'");
}

static void test_missing_layers(void **state)
{
	(void)state;
	expect_error(HEAD "stages:\n  - {name: a, lcore: 2}\n", "s.yaml:3:5: ",
		     "missing required key 'layers'");
}

static void test_bad_ipv4(void **state)
{
	(void)state;
	expect_error(HEAD "port: {ipv4: 10.0.300.1}\n" STAGES4, "s.yaml:2:14: ",
		     "expected a dotted IPv4 address");
}

static void test_bad_udp_port(void **state)
{
	(void)state;
	expect_error(HEAD "port:\n  udp_port: 70000\n" STAGES4, "s.yaml:3:13: ", "1..65535");
}

static void test_ring_not_power_of_two(void **state)
{
	(void)state;
	expect_error(HEAD "rings: {size: 1000}\n" STAGES4, "s.yaml:2:15: ", "power of two");
}

static void test_bad_idle_policy(void **state)
{
	(void)state;
	expect_error(HEAD "stages:\n  - {lcore: 2, layers: stem..fc, idle: nap}\n", "s.yaml:3:40: ",
		     "expected spin, yield or sleep");
}

static void test_lcore_used_twice(void **state)
{
	(void)state;
	expect_error(HEAD "stages:\n"
			  "  - {name: a, lcore: 2, layers: stem..block4}\n"
			  "  - {name: b, lcore: 2, layers: block5..fc}\n",
		     "s.yaml:4:22: ", "lcore 2 of 'b' is already used by 'a'");
}

static void test_stage_on_tx_lcore(void **state)
{
	(void)state;
	expect_error(HEAD "stages:\n  - {name: a, lcore: 1, layers: stem..fc}\n", "s.yaml:3:22: ",
		     "already used by 'tx'");
}

static void test_unknown_layer(void **state)
{
	(void)state;
	expect_error(HEAD "stages:\n  - {name: a, lcore: 2, layers: stem..block9}\n",
		     "s.yaml:3:33: ", "no layer 'block9'");
}

static void test_layer_in_no_stage(void **state)
{
	(void)state;
	expect_error(HEAD "stages:\n"
			  "  - {name: a, lcore: 2, layers: stem..block2}\n"
			  "  - {name: b, lcore: 3, layers: block4..fc}\n",
		     "s.yaml:4:33: ", "layer 'block3' is in no stage");
}

static void test_layer_in_two_stages(void **state)
{
	(void)state;
	expect_error(HEAD "stages:\n"
			  "  - {name: a, lcore: 2, layers: stem..block3}\n"
			  "  - {name: b, lcore: 3, layers: block3..fc}\n",
		     "s.yaml:4:33: ", "layer 'block3' is already in stage 'a'");
}

static void test_stages_out_of_order(void **state)
{
	(void)state;
	expect_error(HEAD "stages:\n"
			  "  - {name: a, lcore: 2, layers: block5..fc}\n"
			  "  - {name: b, lcore: 3, layers: stem..block4}\n",
		     "s.yaml:3:33: ", "out of model order");
}

static void test_range_backwards(void **state)
{
	(void)state;
	expect_error(HEAD "stages:\n  - {name: a, lcore: 2, layers: fc..stem}\n", "s.yaml:3:33: ",
		     "comes after");
}

static void test_last_layers_in_no_stage(void **state)
{
	(void)state;
	expect_error(HEAD "stages:\n  - {name: a, lcore: 2, layers: stem..block8}\n",
		     "s.yaml:3:33: ", "layer 'pool' is in no stage");
}

static void test_duplicate_stage_name(void **state)
{
	(void)state;
	expect_error(HEAD "stages:\n"
			  "  - {name: a, lcore: 2, layers: stem..block4}\n"
			  "  - {name: a, lcore: 3, layers: block5..fc}\n",
		     "s.yaml:4:12: ", "stage name 'a' already used");
}

static void test_max_batch_zero(void **state)
{
	(void)state;
	expect_error(HEAD "stages:\n  - {lcore: 2, layers: stem..fc, max_batch: 0}\n",
		     "s.yaml:3:45: ", "positive");
}

static void test_online_min_confidence_range(void **state)
{
	(void)state;
	expect_error(HEAD "online_min_confidence: 1.5\n" STAGES4, "s.yaml:2:24: ",
		     "expected a probability in 0..1");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_shipped_example_loads),
		cmocka_unit_test(test_defaults_and_relative_paths),
		cmocka_unit_test(test_layer_list_and_single_name),
		cmocka_unit_test(test_unknown_key),
		cmocka_unit_test(test_unknown_stage_key),
		cmocka_unit_test(test_missing_stages),
		cmocka_unit_test(test_missing_layers),
		cmocka_unit_test(test_bad_ipv4),
		cmocka_unit_test(test_bad_udp_port),
		cmocka_unit_test(test_ring_not_power_of_two),
		cmocka_unit_test(test_bad_idle_policy),
		cmocka_unit_test(test_lcore_used_twice),
		cmocka_unit_test(test_stage_on_tx_lcore),
		cmocka_unit_test(test_unknown_layer),
		cmocka_unit_test(test_layer_in_no_stage),
		cmocka_unit_test(test_layer_in_two_stages),
		cmocka_unit_test(test_stages_out_of_order),
		cmocka_unit_test(test_range_backwards),
		cmocka_unit_test(test_last_layers_in_no_stage),
		cmocka_unit_test(test_duplicate_stage_name),
		cmocka_unit_test(test_max_batch_zero),
		cmocka_unit_test(test_max_batch_below_previous),
		cmocka_unit_test(test_online_min_confidence_range),
		cmocka_unit_test(test_front_defaults),
		cmocka_unit_test(test_front_errors),
		cmocka_unit_test(test_coalesce_wait_above_maximum_refused),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
