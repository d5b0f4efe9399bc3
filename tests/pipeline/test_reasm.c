/* Tests of pipeline/proto/reasm.c: out-of-order, duplicate, overlapping, missing fragments, table full. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "proto_test_pvt.h"

#define CAP 2048
#define MS 1000000ull
#define TIMEOUT (50 * MS)

static struct fz_reasm *ra;
static uint8_t frame[CAP];
static struct fz_proto_pkt pkt;
static struct fz_reasm_req out;

static int setup_n(uint32_t capacity, uint16_t max_frags, uint32_t max_bytes)
{
	struct fz_reasm_params p = {
		.capacity = capacity,
		.max_tensor_bytes = max_bytes,
		.max_frags = max_frags,
		.timeout_ns = TIMEOUT,
	};

	ra = fz_reasm_create(&p);
	return ra == NULL ? -1 : 0;
}

static int setup(void **state)
{
	(void)state;
	return setup_n(16, 64, 4096);
}

static int setup_small(void **state)
{
	(void)state;
	return setup_n(2, 2, 4096);
}

static int teardown(void **state)
{
	(void)state;
	fz_reasm_free(ra);
	ra = NULL;
	return 0;
}

/* Classify a fragment of image `id` from `from` and add it at time `now`. */
static enum fz_reasm_result add_from(const struct fz_proto_addr *from, uint64_t id, uint32_t off,
				     uint16_t len, uint64_t now)
{
	int n = t_frag_from(from, id, off, len, frame, CAP);

	assert_true(n > 0);
	assert_int_equal(fz_proto_classify(&t_cfg, frame, (uint32_t)n, &pkt), FZ_PROTO_V_REQUEST);
	return fz_reasm_add(ra, &pkt, now, &out);
}

static enum fz_reasm_result add(uint64_t id, uint32_t off, uint16_t len, uint64_t now)
{
	return add_from(&t_client, id, off, len, now);
}

static void assert_complete(uint64_t id)
{
	uint8_t img[T_TENSOR];

	assert_true(out.req_id == id);
	assert_int_equal(out.reason, FZ_PROTO_R_OK);
	assert_int_equal(out.len, T_TENSOR);
	assert_int_equal(out.dtype, FZ_PROTO_DT_U8);
	assert_int_equal(out.c * out.h * out.w, T_TENSOR);
	t_tensor(id, img, sizeof(img));
	assert_memory_equal(out.data, img, T_TENSOR);
}

/* out is an error for `id` with `why`, and makes a well-formed error response to the client. */
static void assert_answered(uint64_t id, enum fz_proto_reason why)
{
	uint8_t resp[128];
	struct fz_proto_resp r;

	if (out.reason != why)
		fail_msg("reason %s, expected %s", fz_proto_reason_name(out.reason),
			 fz_proto_reason_name(why));
	assert_true(out.req_id == id);
	assert_int_equal(fz_proto_build_error(&t_cfg, &out.reply, out.req_id, out.reason, 0, resp,
					      sizeof(resp)),
			 FZ_PROTO_RESP_FRAME_LEN);
	t_assert_udp_csums(resp, FZ_PROTO_RESP_FRAME_LEN);
	assert_memory_equal(resp, t_client.mac, 6);
	assert_int_equal(t_get16(resp + FZ_ETH_HDR_LEN + 20 + 2), t_client.port);
	assert_int_equal(fz_proto_resp_decode(resp + FZ_PROTO_REQ_OFF, FZ_PROTO_RESP_LEN, &r), 0);
	assert_true(r.req_id == id);
	assert_int_equal(r.status, why);
}

static void test_create_rejects_bad_params(void **state)
{
	(void)state;
	struct fz_reasm_params p = {.capacity = 4, .max_tensor_bytes = 784, .max_frags = 8,
				    .timeout_ns = 1};
	struct fz_reasm_params q;
	struct fz_reasm *r;

	q = p, q.capacity = 0;
	errno = 0;
	assert_null(fz_reasm_create(&q));
	assert_int_equal(errno, EINVAL);
	q = p, q.max_frags = 0;
	assert_null(fz_reasm_create(&q));
	q = p, q.timeout_ns = 0;
	assert_null(fz_reasm_create(&q));
	q = p, q.max_tensor_bytes = 0;
	assert_null(fz_reasm_create(&q));
	r = fz_reasm_create(&p);
	assert_non_null(r);
	fz_reasm_free(r);
	fz_reasm_free(NULL);
}

static void test_single_datagram_is_not_stored(void **state)
{
	(void)state;
	struct fz_reasm_stats st;

	assert_int_equal(add(1, 0, T_TENSOR, 0), FZ_REASM_COMPLETE);
	assert_complete(1);
	assert_ptr_equal(out.data, pkt.frag);
	assert_int_equal(out.slot, UINT32_MAX);
	fz_reasm_release(ra, &out); /* harmless */
	fz_reasm_get_stats(ra, &st);
	assert_int_equal(st.live, 0);
	assert_int_equal(st.tombstones, 0);
	assert_int_equal(st.free, 16);
	assert_true(fz_reasm_next_deadline(ra) == UINT64_MAX);
}

static void test_out_of_order_fragments(void **state)
{
	(void)state;
	struct fz_reasm_stats st;
	struct fz_reasm_req exp[4];

	assert_int_equal(add(5, 600, 184, 10), FZ_REASM_STORED);
	assert_int_equal(add(5, 0, 300, 11), FZ_REASM_STORED);
	assert_true(fz_reasm_next_deadline(ra) == 10 + TIMEOUT);
	assert_int_equal(add(5, 300, 300, 12), FZ_REASM_COMPLETE);
	assert_complete(5);
	assert_memory_equal(out.reply.mac, t_client.mac, 6);
	assert_int_equal(out.reply.ip, t_client.ip);
	assert_int_equal(out.reply.port, t_client.port);
	fz_reasm_get_stats(ra, &st);
	assert_int_equal(st.live, 1);
	fz_reasm_release(ra, &out);
	fz_reasm_get_stats(ra, &st);
	assert_int_equal(st.live, 0);
	assert_int_equal(st.tombstones, 1);
	/* A straggling copy is dropped, not a second request. */
	assert_int_equal(add(5, 300, 300, 13), FZ_REASM_DROP);
	assert_int_equal(out.reason, FZ_PROTO_R_LATE_FRAGMENT);
	assert_int_equal(add(5, 0, T_TENSOR, 14), FZ_REASM_DROP);
	assert_int_equal(out.reason, FZ_PROTO_R_LATE_FRAGMENT);
	/* The tombstone goes silently a timeout after the answer. */
	assert_int_equal(fz_reasm_expire(ra, 12 + TIMEOUT - 1, exp, 4), 0);
	fz_reasm_get_stats(ra, &st);
	assert_int_equal(st.tombstones, 1);
	assert_int_equal(fz_reasm_expire(ra, 12 + TIMEOUT, exp, 4), 0);
	fz_reasm_get_stats(ra, &st);
	assert_int_equal(st.tombstones, 0);
	assert_int_equal(st.free, 16);
	assert_int_equal(add(5, 0, T_TENSOR, 20 + TIMEOUT), FZ_REASM_COMPLETE);
}

static void test_many_fragments_every_order(void **state)
{
	(void)state;
	/* 784 bytes in 8 fragments of 98, sent in 40 pseudo-random orders, interleaved by 2. */
	uint32_t order[8];
	uint64_t now = 0;

	srand(7);
	for (uint64_t id = 100; id < 140; id += 2) {
		for (int i = 0; i < 8; i++)
			order[i] = (uint32_t)i;
		for (int i = 7; i > 0; i--) {
			int j = rand() % (i + 1);
			uint32_t t = order[i];

			order[i] = order[j];
			order[j] = t;
		}
		for (int i = 0; i < 8; i++) {
			enum fz_reasm_result want = i == 7 ? FZ_REASM_COMPLETE : FZ_REASM_STORED;

			assert_int_equal(add(id, order[i] * 98, 98, now++), want);
			if (want == FZ_REASM_COMPLETE) {
				assert_complete(id);
				fz_reasm_release(ra, &out);
			}
			assert_int_equal(add(id + 1, order[7 - i] * 98, 98, now++), want);
			if (want == FZ_REASM_COMPLETE) {
				assert_complete(id + 1);
				fz_reasm_release(ra, &out);
			}
		}
	}
}

static void test_duplicate_fragment(void **state)
{
	(void)state;
	struct fz_reasm_req exp[4];

	assert_int_equal(add(9, 0, 300, 0), FZ_REASM_STORED);
	assert_int_equal(add(9, 0, 300, 1), FZ_REASM_ERROR);
	assert_answered(9, FZ_PROTO_R_DUPLICATE_FRAGMENT);
	/* Answered once: the rest of the request is absorbed and the timeout says nothing. */
	assert_int_equal(add(9, 300, 300, 2), FZ_REASM_DROP);
	assert_int_equal(out.reason, FZ_PROTO_R_LATE_FRAGMENT);
	assert_int_equal(add(9, 600, 184, 3), FZ_REASM_DROP);
	assert_int_equal(fz_reasm_expire(ra, TIMEOUT + 10, exp, 4), 0);
}

static void test_overlapping_fragment(void **state)
{
	(void)state;
	assert_int_equal(add(10, 0, 300, 0), FZ_REASM_STORED);
	assert_int_equal(add(10, 299, 300, 1), FZ_REASM_ERROR); /* overlaps the end */
	assert_answered(10, FZ_PROTO_R_OVERLAPPING_FRAGMENT);

	assert_int_equal(add(11, 300, 300, 0), FZ_REASM_STORED);
	assert_int_equal(add(11, 0, 301, 1), FZ_REASM_ERROR); /* overlaps the start */
	assert_answered(11, FZ_PROTO_R_OVERLAPPING_FRAGMENT);

	assert_int_equal(add(12, 300, 300, 0), FZ_REASM_STORED);
	assert_int_equal(add(12, 300, 100, 1), FZ_REASM_ERROR); /* same offset, other length */
	assert_answered(12, FZ_PROTO_R_OVERLAPPING_FRAGMENT);

	assert_int_equal(add(13, 100, 100, 0), FZ_REASM_STORED);
	assert_int_equal(add(13, 0, 300, 1), FZ_REASM_ERROR); /* covers it */
	assert_answered(13, FZ_PROTO_R_OVERLAPPING_FRAGMENT);

	/* A whole-tensor datagram for a request already collecting fragments overlaps too. */
	assert_int_equal(add(14, 300, 300, 0), FZ_REASM_STORED);
	assert_int_equal(add(14, 0, T_TENSOR, 1), FZ_REASM_ERROR);
	assert_answered(14, FZ_PROTO_R_OVERLAPPING_FRAGMENT);

	/* Adjacent is not overlapping. */
	assert_int_equal(add(15, 300, 300, 0), FZ_REASM_STORED);
	assert_int_equal(add(15, 600, 184, 0), FZ_REASM_STORED);
	assert_int_equal(add(15, 0, 300, 0), FZ_REASM_COMPLETE);
	assert_complete(15);
}

static void test_missing_fragment_times_out(void **state)
{
	(void)state;
	struct fz_reasm_req exp[4];
	struct fz_reasm_stats st;

	assert_int_equal(add(20, 0, 300, 1000), FZ_REASM_STORED);
	assert_int_equal(add(20, 600, 184, 2000), FZ_REASM_STORED);
	assert_int_equal(add(21, 0, 300, 3000), FZ_REASM_STORED);
	assert_int_equal(fz_reasm_expire(ra, 1000 + TIMEOUT - 1, exp, 4), 0);
	assert_int_equal(fz_reasm_expire(ra, 1000 + TIMEOUT, exp, 4), 1);
	out = exp[0];
	assert_answered(20, FZ_PROTO_R_REASSEMBLY_TIMEOUT);
	assert_int_equal(exp[0].reply.port, t_client.port);
	assert_int_equal(exp[0].len, T_TENSOR);
	assert_true(fz_reasm_next_deadline(ra) == 3000 + TIMEOUT);
	/* The missing piece arrives too late: absorbed by the answer's tombstone. */
	assert_int_equal(add(20, 300, 300, 1000 + TIMEOUT + 1), FZ_REASM_DROP);
	assert_int_equal(out.reason, FZ_PROTO_R_LATE_FRAGMENT);
	assert_int_equal(fz_reasm_expire(ra, UINT64_MAX - 1, exp, 4), 1);
	assert_true(exp[0].req_id == 21);
	fz_reasm_get_stats(ra, &st);
	assert_int_equal(st.expired, 2);
	assert_int_equal(st.free, 16);
}

static void test_expire_in_batches(void **state)
{
	(void)state;
	struct fz_reasm_req exp[2];

	for (uint64_t id = 30; id < 35; id++)
		assert_int_equal(add(id, 0, 100, id), FZ_REASM_STORED);
	assert_int_equal(fz_reasm_expire(ra, 1000 * MS, exp, 2), 2);
	assert_true(exp[0].req_id == 30 && exp[1].req_id == 31);
	assert_int_equal(fz_reasm_expire(ra, 1000 * MS, exp, 2), 2);
	assert_true(exp[0].req_id == 32 && exp[1].req_id == 33);
	assert_int_equal(fz_reasm_expire(ra, 1000 * MS, exp, 2), 1);
	assert_true(exp[0].req_id == 34);
	assert_int_equal(fz_reasm_expire(ra, 1000 * MS, exp, 2), 0);
}

static void test_keys_separate_sources(void **state)
{
	(void)state;
	struct fz_proto_addr other = t_client;

	other.port = 40001;
	assert_int_equal(add(50, 0, 300, 0), FZ_REASM_STORED);
	assert_int_equal(add_from(&other, 50, 0, 300, 0), FZ_REASM_STORED); /* not a duplicate */
	other.port = 40000;
	other.ip = T_IP(10, 0, 0, 3);
	assert_int_equal(add_from(&other, 50, 0, 300, 0), FZ_REASM_STORED);
	assert_int_equal(add_from(&other, 50, 300, 484, 0), FZ_REASM_COMPLETE);
	assert_complete(50);
	assert_int_equal(out.reply.ip, T_IP(10, 0, 0, 3));
}

static void test_fragment_mismatch(void **state)
{
	(void)state;
	struct fz_proto_req h = t_hdr(60, 300, 300);
	struct fz_proto_addr to = t_appliance();
	uint8_t junk[300] = {0};
	int n;

	assert_int_equal(add(60, 0, 300, 0), FZ_REASM_STORED);
	/* Second fragment claims an f32 tensor of the same dims. */
	h.dtype = FZ_PROTO_DT_F32;
	h.tensor_bytes = T_TENSOR * 4;
	n = fz_proto_build_request(&t_client, &to, &h, junk, 300, frame, CAP);
	assert_int_equal(fz_proto_classify(&t_cfg, frame, (uint32_t)n, &pkt), FZ_PROTO_V_REQUEST);
	assert_int_equal(fz_reasm_add(ra, &pkt, 1, &out), FZ_REASM_ERROR);
	assert_answered(60, FZ_PROTO_R_FRAGMENT_MISMATCH);
	assert_int_equal(out.dtype, FZ_PROTO_DT_U8); /* the entry's header, not the intruder's */
}

static void test_oversized_for_table(void **state)
{
	(void)state;
	struct fz_reasm_params p = {.capacity = 4, .max_tensor_bytes = 700, .max_frags = 8,
				    .timeout_ns = TIMEOUT};

	fz_reasm_free(ra);
	ra = fz_reasm_create(&p);
	assert_non_null(ra);
	assert_int_equal(add(70, 0, 300, 0), FZ_REASM_ERROR);
	assert_answered(70, FZ_PROTO_R_OVERSIZED_TENSOR);
	assert_int_equal(add(71, 0, T_TENSOR, 0), FZ_REASM_ERROR);
	assert_answered(71, FZ_PROTO_R_OVERSIZED_TENSOR);
}

static void test_too_many_fragments(void **state)
{
	(void)state;
	/* setup_small: max_frags 2 */
	assert_int_equal(add(80, 0, 100, 0), FZ_REASM_STORED);
	assert_int_equal(add(80, 100, 100, 0), FZ_REASM_STORED);
	assert_int_equal(add(80, 200, 100, 0), FZ_REASM_ERROR);
	assert_answered(80, FZ_PROTO_R_TOO_MANY_FRAGMENTS);
}

static void test_table_full(void **state)
{
	(void)state;
	struct fz_reasm_stats st;
	struct fz_reasm_req exp[4];

	/* setup_small: capacity 2 */
	assert_int_equal(add(90, 0, 400, 0), FZ_REASM_STORED);
	assert_int_equal(add(91, 0, 400, 1), FZ_REASM_STORED);
	/* Single datagrams still get through: they need no entry. */
	assert_int_equal(add(92, 0, T_TENSOR, 2), FZ_REASM_COMPLETE);
	assert_complete(92);
	/* The first fragment of a third request is answered... */
	assert_int_equal(add(93, 0, 400, 3), FZ_REASM_ERROR);
	assert_answered(93, FZ_PROTO_R_REASSEMBLY_TABLE_FULL);
	/* ...and remembered: its other fragment is late, so the request is answered once. */
	assert_int_equal(add(93, 400, 384, 4), FZ_REASM_DROP);
	assert_int_equal(out.reason, FZ_PROTO_R_LATE_FRAGMENT);
	/* A completed request gives its storage back at once; its key stays. */
	assert_int_equal(add(90, 400, 384, 5), FZ_REASM_COMPLETE);
	assert_complete(90);
	fz_reasm_release(ra, &out);
	assert_int_equal(add(94, 0, 400, 6), FZ_REASM_STORED);
	fz_reasm_get_stats(ra, &st);
	assert_int_equal(st.live, 2);
	assert_int_equal(st.tombstones, 2);
	assert_int_equal(st.unanswered, 0);
	assert_int_equal(st.peak_live, 2);
	/* Expiry answers both live ones; the tombstones go silently. */
	assert_int_equal(fz_reasm_expire(ra, UINT64_MAX, exp, 4), 2);
	assert_true(exp[0].req_id == 91 && exp[1].req_id == 94);
}

static void test_release_stale_is_ignored(void **state)
{
	(void)state;
	struct fz_reasm_req first, exp[2];
	struct fz_reasm_stats st;

	assert_int_equal(add(95, 0, 400, 0), FZ_REASM_STORED);
	assert_int_equal(add(95, 400, 384, 0), FZ_REASM_COMPLETE);
	first = out;
	/* Never released: the deadline frees the entry anyway, without an error. */
	assert_int_equal(fz_reasm_expire(ra, TIMEOUT, exp, 2), 0);
	assert_int_equal(add(96, 0, 400, TIMEOUT), FZ_REASM_STORED);
	fz_reasm_release(ra, &first); /* stale: must not touch request 96 */
	fz_reasm_get_stats(ra, &st);
	assert_int_equal(st.live, 1);
	assert_int_equal(st.tombstones, 0);
	assert_int_equal(add(96, 400, 384, TIMEOUT), FZ_REASM_COMPLETE);
	assert_complete(96);
}

/* A fragment the classifier answered (here: a lying payload length) must not leave the rest of its
 * request to time out into a second response for the same id. */
static void test_classifier_error_answers_once(void **state)
{
	(void)state;
	struct fz_proto_req h = t_hdr(97, 300, 300);
	struct fz_proto_addr to = t_appliance();
	struct fz_reasm_req exp[4];
	uint8_t junk[300] = {0};
	struct fz_proto_pkt bad;
	int n;

	/* Good first fragment, then a bad second one, then the good third one. */
	assert_int_equal(add(97, 0, 300, 0), FZ_REASM_STORED);
	n = fz_proto_build_request(&t_client, &to, &h, junk, 299, frame, CAP);
	assert_int_equal(fz_proto_classify(&t_cfg, frame, (uint32_t)n, &bad), FZ_PROTO_V_ERROR);
	assert_int_equal(bad.reason, FZ_PROTO_R_PAYLOAD_LENGTH_MISMATCH);
	assert_int_equal(fz_reasm_abort(ra, &bad, 1), 0);
	assert_int_equal(add(97, 600, 184, 2), FZ_REASM_DROP);
	assert_int_equal(out.reason, FZ_PROTO_R_LATE_FRAGMENT);
	/* The bad fragment first: the good ones that follow are absorbed too. */
	h.req_id = 98;
	n = fz_proto_build_request(&t_client, &to, &h, junk, 299, frame, CAP);
	assert_int_equal(fz_proto_classify(&t_cfg, frame, (uint32_t)n, &bad), FZ_PROTO_V_ERROR);
	assert_int_equal(fz_reasm_abort(ra, &bad, 3), 0);
	assert_int_equal(add(98, 0, 300, 4), FZ_REASM_DROP);
	assert_int_equal(add(98, 600, 184, 5), FZ_REASM_DROP);
	/* Neither times out. */
	assert_int_equal(fz_reasm_expire(ra, UINT64_MAX, exp, 4), 0);
}

/* Every fragment refused (here: f32 on a u8-only appliance): one answer, the rest late. */
static void test_every_fragment_refused_answers_once(void **state)
{
	(void)state;
	struct fz_proto_cfg u8only = t_cfg;
	struct fz_proto_addr to = t_appliance();
	uint8_t junk[1100] = {0};
	struct fz_proto_pkt bad;
	int answered = 0, late = 0;

	u8only.dtype_mask = 1u << FZ_PROTO_DT_U8;
	for (uint32_t off = 0; off < T_TENSOR * 4; off += 1100) {
		struct fz_proto_req h = t_hdr(61, off, 0);
		uint16_t len = (uint16_t)(T_TENSOR * 4 - off < 1100 ? T_TENSOR * 4 - off : 1100);
		int n;

		h.dtype = FZ_PROTO_DT_F32;
		h.tensor_bytes = T_TENSOR * 4;
		h.frag_len = len;
		n = fz_proto_build_request(&t_client, &to, &h, junk, len, frame, CAP);
		assert_int_equal(fz_proto_classify(&u8only, frame, (uint32_t)n, &bad), FZ_PROTO_V_ERROR);
		assert_int_equal(bad.reason, FZ_PROTO_R_UNSUPPORTED_DTYPE);
		switch (fz_reasm_abort(ra, &bad, off)) {
		case 0:
			answered++;
			break;
		case -EALREADY:
			late++;
			break;
		default:
			fail();
		}
	}
	assert_int_equal(answered, 1);
	assert_int_equal(late, 2);
}

/* A stray refused copy of a completed request is not answered again. */
static void test_refused_after_complete_is_late(void **state)
{
	(void)state;
	struct fz_proto_req h = t_hdr(62, 0, 300);
	struct fz_proto_addr to = t_appliance();
	uint8_t junk[300] = {0};
	struct fz_proto_pkt bad;
	int n;

	assert_int_equal(add(62, 0, 400, 0), FZ_REASM_STORED);
	assert_int_equal(add(62, 400, 384, 1), FZ_REASM_COMPLETE);
	fz_reasm_release(ra, &out);
	n = fz_proto_build_request(&t_client, &to, &h, junk, 299, frame, CAP);
	assert_int_equal(fz_proto_classify(&t_cfg, frame, (uint32_t)n, &bad), FZ_PROTO_V_ERROR);
	assert_int_equal(fz_reasm_abort(ra, &bad, 2), -EALREADY);
}

static void test_abort_never_displaces_live(void **state)
{
	(void)state;
	struct fz_proto_pkt bad;
	struct fz_proto_req h = t_hdr(99, 0, T_TENSOR);
	struct fz_proto_addr to = t_appliance();
	uint8_t img[T_TENSOR] = {0};
	int n;

	/* setup_small: both entries live */
	assert_int_equal(add(90, 0, 400, 0), FZ_REASM_STORED);
	assert_int_equal(add(91, 0, 400, 0), FZ_REASM_STORED);
	h.h = 27;
	n = fz_proto_build_request(&t_client, &to, &h, img, T_TENSOR, frame, CAP);
	assert_int_equal(fz_proto_classify(&t_cfg, frame, (uint32_t)n, &bad), FZ_PROTO_V_ERROR);
	assert_int_equal(bad.reason, FZ_PROTO_R_DIMS_MISMATCH);
	/* a whole request in one datagram needs no record: answered, nothing displaced */
	assert_int_equal(fz_reasm_abort(ra, &bad, 1), 0);
	assert_int_equal(add(90, 400, 384, 2), FZ_REASM_COMPLETE);
	assert_complete(90);
}

/* Count the answers (error results and expiries) each id of [0, n) got while `steps` ran. */
static unsigned answers_of(uint64_t id, unsigned *errors, struct fz_reasm_req *exp, unsigned n_exp)
{
	unsigned k = errors[id];

	for (unsigned i = 0; i < n_exp; i++)
		k += exp[i].req_id == id;
	return k;
}

/* Fragment 0 refused as reassembly_table_full, then a slot frees and a later fragment of the
 * same request found room: it started an entry that timed out into a second answer. */
static void test_table_full_refused_then_later_fragment_times_out_twice(void **state)
{
	(void)state;
	struct fz_reasm_req exp[8];
	unsigned errors[200] = {0}, n;

	/* setup_small: 2 slots */
	assert_int_equal(add(100, 0, 400, 0), FZ_REASM_STORED);
	assert_int_equal(add(101, 0, 400, 0), FZ_REASM_STORED);
	assert_int_equal(add(102, 0, 400, 1), FZ_REASM_ERROR);
	assert_answered(102, FZ_PROTO_R_REASSEMBLY_TABLE_FULL);
	errors[102]++;
	assert_int_equal(add(100, 400, 384, 2), FZ_REASM_COMPLETE); /* a slot frees */
	fz_reasm_release(ra, &out);
	assert_int_equal(add(102, 400, 384, 3), FZ_REASM_DROP);
	assert_int_equal(out.reason, FZ_PROTO_R_LATE_FRAGMENT);
	n = fz_reasm_expire(ra, UINT64_MAX - 1, exp, 8);
	assert_int_equal(answers_of(102, errors, exp, n), 1);
	assert_int_equal(answers_of(101, errors, exp, n), 1);
	assert_int_equal(answers_of(100, errors, exp, n), 0); /* answered ok */
}

/* The same with the fragments the other way round: whichever is refused first answers. */
static void test_table_full_refused_later_fragment_first_answers_once(void **state)
{
	(void)state;
	struct fz_reasm_req exp[8];

	assert_int_equal(add(110, 0, 400, 0), FZ_REASM_STORED);
	assert_int_equal(add(111, 0, 400, 0), FZ_REASM_STORED);
	assert_int_equal(add(112, 400, 384, 1), FZ_REASM_ERROR);
	assert_answered(112, FZ_PROTO_R_REASSEMBLY_TABLE_FULL);
	assert_int_equal(add(110, 400, 384, 2), FZ_REASM_COMPLETE);
	fz_reasm_release(ra, &out);
	assert_int_equal(add(112, 0, 400, 3), FZ_REASM_DROP);
	assert_int_equal(out.reason, FZ_PROTO_R_LATE_FRAGMENT);
	assert_int_equal(fz_reasm_expire(ra, UINT64_MAX - 1, exp, 8), 1);
	assert_true(exp[0].req_id == 111);
}

/* A full table evicted the oldest tombstone for a new request; a stray fragment of the evicted
 * request then started a new entry and timed out into a second answer. */
static void test_evicted_tombstone_lets_stray_fragment_answer_twice(void **state)
{
	(void)state;
	struct fz_reasm_req exp[8];
	struct fz_reasm_stats st;

	/* setup_small: 2 slots; 120 answered (ok), then 121 and 122 take both slots */
	assert_int_equal(add(120, 0, 400, 0), FZ_REASM_STORED);
	assert_int_equal(add(120, 400, 384, 1), FZ_REASM_COMPLETE);
	fz_reasm_release(ra, &out);
	assert_int_equal(add(121, 0, 400, 2), FZ_REASM_STORED);
	assert_int_equal(add(122, 0, 400, 3), FZ_REASM_STORED);
	/* a duplicate of 120's last fragment, late in the network */
	assert_int_equal(add(120, 400, 384, 4), FZ_REASM_DROP);
	assert_int_equal(out.reason, FZ_PROTO_R_LATE_FRAGMENT);
	fz_reasm_get_stats(ra, &st);
	assert_int_equal(st.tombstones, 1);
	assert_int_equal(fz_reasm_expire(ra, UINT64_MAX - 1, exp, 8), 2);
	assert_true(exp[0].req_id == 121 && exp[1].req_id == 122);
}

/* With the tombstones' room used up too, a refused request is dropped unanswered (counted),
 * never answered without a record that would keep a second answer away. */
static void test_tombstone_room_used_up_drops_unanswered(void **state)
{
	(void)state;
	struct fz_reasm_params p = {.capacity = 1, .max_tensor_bytes = 4096, .max_frags = 8,
				    .timeout_ns = TIMEOUT, .tombstones = 1};
	struct fz_reasm_req exp[4];
	struct fz_reasm_stats st;

	fz_reasm_free(ra);
	assert_non_null(ra = fz_reasm_create(&p));
	assert_int_equal(add(130, 0, 400, 0), FZ_REASM_STORED);
	assert_int_equal(add(131, 0, 400, 1), FZ_REASM_ERROR); /* remembered: the one tombstone */
	assert_answered(131, FZ_PROTO_R_REASSEMBLY_TABLE_FULL);
	assert_int_equal(add(132, 0, 400, 2), FZ_REASM_DROP);
	assert_int_equal(out.reason, FZ_PROTO_R_REASSEMBLY_TABLE_FULL);
	assert_int_equal(add(132, 400, 384, 3), FZ_REASM_DROP);
	assert_int_equal(add(131, 400, 384, 4), FZ_REASM_DROP);
	assert_int_equal(out.reason, FZ_PROTO_R_LATE_FRAGMENT);
	fz_reasm_get_stats(ra, &st);
	assert_int_equal(st.unanswered, 2);
	/* 130 times out once; its tombstone keeps its own entry */
	assert_int_equal(fz_reasm_expire(ra, TIMEOUT, exp, 4), 1);
	assert_true(exp[0].req_id == 130);
	assert_int_equal(add(130, 400, 384, TIMEOUT + 1), FZ_REASM_DROP);
	assert_int_equal(out.reason, FZ_PROTO_R_LATE_FRAGMENT);
}

/*
 * Loopback mode (`test_reasm --loopback REQ.pcap RESP.pcap`), driven by `fzgen.py selftest`: an
 * appliance without DPDK or a model. Every frame of a request pcap written by fzgen.py (default
 * addresses) goes through fz_proto_classify and fz_reasm in pcap-timestamp time; complete requests
 * are answered ok with label = (sum of the tensor bytes) & 0xffff so the generator can check that
 * reassembly put every byte in place; errors, ARP and ICMP are answered as the runtime would.
 * Prints the drop/error counters as JSON on stdout.
 */
static FILE *lb_out;
static uint64_t lb_count[FZ_PROTO_R__COUNT];

static void lb_write(const uint8_t *fr, int len, uint64_t ts_ns)
{
	uint32_t rec[4] = {(uint32_t)(ts_ns / 1000000000u), (uint32_t)(ts_ns % 1000000000u / 1000u),
			   (uint32_t)len, (uint32_t)len};

	if (len <= 0) {
		fprintf(stderr, "loopback: builder failed (%d)\n", len);
		exit(1);
	}
	fwrite(rec, sizeof(rec), 1, lb_out);
	fwrite(fr, 1, (size_t)len, lb_out);
}

static void lb_error(const struct fz_proto_cfg *cfg, const struct fz_proto_addr *to, uint64_t id,
		     enum fz_proto_reason why, uint64_t ts)
{
	uint8_t o[128];

	lb_count[why]++;
	lb_write(o, fz_proto_build_error(cfg, to, id, why, 0, o, sizeof(o)), ts);
}

static int loopback(const char *in_path, const char *out_path)
{
	struct fz_proto_cfg cfg = {
		.mac = {0x02, 0x70, 0x63, 0x61, 0x70, 0x00},
		.ip = T_IP(198, 18, 0, 1),
		.port = 7878,
		.in_c = 1, .in_h = 28, .in_w = 28,
		.dtype_mask = 1u << FZ_PROTO_DT_U8,
		.max_tensor_bytes = 65536,
	};
	struct fz_reasm_params rp = {.capacity = 64, .max_tensor_bytes = 784, .max_frags = 64,
				     .timeout_ns = 100 * MS};
	static uint8_t fr[65536 + 64], o[65536 + 64];
	struct fz_reasm_req r, exp[16];
	struct fz_proto_pkt p;
	uint32_t gh[6], rec[4];
	uint64_t ts = 0, complete = 0, arp = 0, icmp = 0;
	FILE *in = fopen(in_path, "rb");
	unsigned n;
	int len;

	lb_out = fopen(out_path, "wb");
	ra = fz_reasm_create(&rp);
	if (in == NULL || lb_out == NULL || ra == NULL || fread(gh, 4, 6, in) != 6 ||
	    gh[0] != 0xa1b2c3d4u || gh[5] != 1) {
		fprintf(stderr, "loopback: cannot read %s or write %s\n", in_path, out_path);
		return 1;
	}
	fwrite(gh, 4, 6, lb_out);
	while (fread(rec, 4, 4, in) == 4) {
		if (rec[2] > sizeof(fr) || fread(fr, 1, rec[2], in) != rec[2]) {
			fprintf(stderr, "loopback: truncated record\n");
			return 1;
		}
		ts = (uint64_t)rec[0] * 1000000000u + (uint64_t)rec[1] * 1000u;
		while ((n = fz_reasm_expire(ra, ts, exp, 16)) > 0)
			for (unsigned k = 0; k < n; k++)
				lb_error(&cfg, &exp[k].reply, exp[k].req_id, exp[k].reason, ts);
		switch (fz_proto_classify(&cfg, fr, rec[2], &p)) {
		case FZ_PROTO_V_ARP:
			arp++;
			lb_write(o, fz_proto_build_arp_reply(&cfg, fr, rec[2], o, sizeof(o)), ts);
			break;
		case FZ_PROTO_V_ICMP:
			icmp++;
			lb_write(o, fz_proto_build_icmp_reply(&cfg, fr, rec[2], o, sizeof(o)), ts);
			break;
		case FZ_PROTO_V_ERROR:
			if (fz_reasm_abort(ra, &p, ts) == -EALREADY)
				lb_count[FZ_PROTO_R_LATE_FRAGMENT]++;
			else
				lb_error(&cfg, &p.reply, p.hdr.req_id, p.reason, ts);
			break;
		case FZ_PROTO_V_DROP:
			lb_count[p.reason]++;
			break;
		case FZ_PROTO_V_REQUEST:
			switch (fz_reasm_add(ra, &p, ts, &r)) {
			case FZ_REASM_COMPLETE: {
				struct fz_proto_resp resp = {.req_id = r.req_id,
							     .status = FZ_PROTO_R_OK,
							     .exit_layer = FZ_PROTO_EXIT_FULL,
							     .confidence = 1.0f};
				uint32_t sum = 0;

				for (uint32_t k = 0; k < r.len; k++)
					sum += r.data[k];
				resp.label = (uint16_t)sum;
				complete++;
				fz_reasm_release(ra, &r);
				len = fz_proto_build_response(&cfg, &r.reply, &resp, o, sizeof(o));
				lb_write(o, len, ts);
				break;
			}
			case FZ_REASM_ERROR:
				lb_error(&cfg, &r.reply, r.req_id, r.reason, ts);
				break;
			case FZ_REASM_DROP:
				lb_count[r.reason]++;
				break;
			case FZ_REASM_STORED:
				break;
			}
			break;
		}
	}
	while ((n = fz_reasm_expire(ra, UINT64_MAX, exp, 16)) > 0)
		for (unsigned k = 0; k < n; k++)
			lb_error(&cfg, &exp[k].reply, exp[k].req_id, exp[k].reason, ts);
	printf("{\"complete\": %llu, \"arp\": %llu, \"icmp\": %llu, \"reasons\": {",
	       (unsigned long long)complete, (unsigned long long)arp, (unsigned long long)icmp);
	for (unsigned k = 1, first = 1; k < FZ_PROTO_R__COUNT; k++) {
		if (lb_count[k] == 0)
			continue;
		printf("%s\"%s\": %llu", first ? "" : ", ", fz_proto_reason_name(k),
		       (unsigned long long)lb_count[k]);
		first = 0;
	}
	printf("}}\n");
	fz_reasm_free(ra);
	fclose(in);
	return fclose(lb_out) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "--loopback") == 0)
		return loopback(argv[2], argv[3]);

	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_rejects_bad_params),
		cmocka_unit_test_setup_teardown(test_single_datagram_is_not_stored, setup, teardown),
		cmocka_unit_test_setup_teardown(test_out_of_order_fragments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_fragments_every_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_duplicate_fragment, setup, teardown),
		cmocka_unit_test_setup_teardown(test_overlapping_fragment, setup, teardown),
		cmocka_unit_test_setup_teardown(test_missing_fragment_times_out, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expire_in_batches, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keys_separate_sources, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fragment_mismatch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oversized_for_table, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_many_fragments, setup_small, teardown),
		cmocka_unit_test_setup_teardown(test_table_full, setup_small, teardown),
		cmocka_unit_test_setup_teardown(test_release_stale_is_ignored, setup_small, teardown),
		cmocka_unit_test_setup_teardown(test_classifier_error_answers_once, setup, teardown),
		cmocka_unit_test_setup_teardown(test_abort_never_displaces_live, setup_small, teardown),
		cmocka_unit_test_setup_teardown(test_every_fragment_refused_answers_once, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_refused_after_complete_is_late, setup, teardown),
		cmocka_unit_test_setup_teardown(
			test_table_full_refused_then_later_fragment_times_out_twice, setup_small,
			teardown),
		cmocka_unit_test_setup_teardown(
			test_table_full_refused_later_fragment_first_answers_once, setup_small,
			teardown),
		cmocka_unit_test_setup_teardown(test_evicted_tombstone_lets_stray_fragment_answer_twice,
						setup_small, teardown),
		cmocka_unit_test_setup_teardown(test_tombstone_room_used_up_drops_unanswered, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
