/* Tests of closing a batch up around cache exits (pipeline/cascade: fz_cascade_close_up) and of
 * merging batches between stages (pipeline/datapath/stage_batch.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "fz_cascade.h"
#include "stage_batch.h"

#define STRIDE 7
#define MAXN 64

struct fz_req {
	int id;
};

static struct fz_req reqs[MAXN];
static float rows[MAXN * STRIDE];
static struct fz_cascade_row order[MAXN];
static struct fz_req *exits[MAXN];
static bool hit[MAXN];

/* fz_cascade_close_up's exit callback: the exit sits at its original index, not yet reused. */
struct exit_log {
	unsigned n;
};

static void on_exit_row(void *arg, unsigned idx, const struct fz_cascade_row *row)
{
	struct exit_log *x = arg;
	struct fz_req *rq = row->user;
	assert_int_equal(rq->id, (int)idx);
	exits[x->n++] = rq;
}

static unsigned close_up(unsigned n, unsigned *nexit)
{
	struct exit_log x = {0};
	unsigned nk = fz_cascade_close_up(rows, STRIDE, order, hit, n, on_exit_row, &x);
	*nexit = x.n;
	return nk;
}

/* Row i carries its request's id in every float. */
static void fill(unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		reqs[i].id = (int)i;
		order[i] = (struct fz_cascade_row){.user = &reqs[i]};
		for (unsigned j = 0; j < STRIDE; j++)
			rows[i * STRIDE + j] = (float)i + (float)j / 100.f;
	}
}

/* Survivors keep their rows, every request ends in exactly one place, and a survivor that
 * already sat inside [0, nk) did not move (one row moves per exit at most). */
static void check_close_up(unsigned n)
{
	fill(n);
	unsigned nexit = 0, misses = 0;
	for (unsigned i = 0; i < n; i++)
		misses += !hit[i];
	unsigned nk = close_up(n, &nexit);
	assert_int_equal(nk, misses);
	assert_int_equal(nexit, n - misses);
	int seen[MAXN] = {0};
	unsigned moved = 0;
	for (unsigned i = 0; i < nk; i++) {
		int id = ((struct fz_req *)order[i].user)->id;
		assert_false(hit[id]);
		seen[id]++;
		for (unsigned j = 0; j < STRIDE; j++)
			assert_true(rows[i * STRIDE + j] == (float)id + (float)j / 100.f);
		if ((unsigned)id != i) {
			assert_true((unsigned)id >= nk);
			moved++;
		}
	}
	for (unsigned i = 0; i < nexit; i++) {
		assert_true(hit[exits[i]->id]);
		seen[exits[i]->id]++;
	}
	for (unsigned i = 0; i < n; i++)
		assert_int_equal(seen[i], 1);
	assert_true(moved <= nexit);
}

static void test_close_up_patterns(void **state)
{
	(void)state;
	/* none, all, only the first, only the last, alternate, the first half */
	for (unsigned n = 0; n <= 9; n++) {
		for (int pat = 0; pat < 6; pat++) {
			for (unsigned i = 0; i < n; i++)
				hit[i] = pat == 1 || (pat == 2 && i == 0) ||
					 (pat == 3 && i == n - 1) || (pat == 4 && i % 2) ||
					 (pat == 5 && i < n / 2);
			check_close_up(n);
		}
	}
}

static void test_close_up_random(void **state)
{
	(void)state;
	srand(7);
	for (int round = 0; round < 2000; round++) {
		unsigned n = 1 + (unsigned)rand() % MAXN;
		int pct = rand() % 101;
		for (unsigned i = 0; i < n; i++)
			hit[i] = rand() % 100 < pct;
		check_close_up(n);
	}
}

/* Exits at the end of a batch move nothing: the survivors are already in place. */
static void test_close_up_exits_at_end_move_nothing(void **state)
{
	(void)state;
	for (unsigned i = 0; i < 10; i++)
		hit[i] = i >= 6;
	fill(10);
	unsigned nexit = 0;
	assert_int_equal(close_up(10, &nexit), 6);
	for (unsigned i = 0; i < 6; i++)
		assert_ptr_equal(order[i].user, &reqs[i]);
	assert_int_equal(nexit, 4);
}

static void test_merge(void **state)
{
	(void)state;
	static float act[4][MAXN * STRIDE];
	static struct fz_req *rq[4][MAXN];
	struct fz_batch b[4], *w[4];
	const unsigned sizes[4] = {5, 10, 17, 1};
	int id = 0;
	for (int k = 0; k < 4; k++) {
		b[k] = (struct fz_batch){.n = sizes[k], .act = act[k], .reqs = rq[k]};
		w[k] = &b[k];
		for (unsigned i = 0; i < sizes[k]; i++, id++) {
			reqs[id].id = id;
			rq[k][i] = &reqs[id];
			for (unsigned j = 0; j < STRIDE; j++)
				act[k][i * STRIDE + j] = (float)id;
		}
	}
	/* in order, never split: 5 + 10 fit 16, the 17 does not, so the 1 behind it waits */
	assert_int_equal(fz_batch_merge_count(w, 4, 16), 2);
	assert_int_equal(fz_batch_merge_count(w, 4, 32), 3);
	assert_int_equal(fz_batch_merge_count(w, 4, 33), 4);
	assert_int_equal(fz_batch_merge_count(w, 4, 5), 1);
	assert_int_equal(fz_batch_merge_count(w, 1, 64), 1);
	fz_batch_append(&b[0], &b[1], STRIDE);
	fz_batch_append(&b[0], &b[2], STRIDE);
	assert_int_equal(b[0].n, 32);
	for (unsigned i = 0; i < 32; i++) {
		assert_int_equal(b[0].reqs[i]->id, (int)i);
		for (unsigned j = 0; j < STRIDE; j++)
			assert_true(b[0].act[i * STRIDE + j] == (float)i);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_close_up_patterns),
		cmocka_unit_test(test_close_up_random),
		cmocka_unit_test(test_close_up_exits_at_end_move_nothing),
		cmocka_unit_test(test_merge),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
