/* Tests of pipeline/proto/proto.c: frame classification by named reason, ARP/ICMP replies, responses. */
#include <errno.h>
#include <stdbool.h>

#include "fz_model.h"
#include "proto_test_pvt.h"

#define CAP 2048

static uint8_t f[CAP];
static struct fz_proto_pkt pkt;

static enum fz_proto_verdict classify(uint32_t len)
{
	return fz_proto_classify(&t_cfg, f, len, &pkt);
}

static void assert_drop(uint32_t len, enum fz_proto_reason why)
{
	enum fz_proto_verdict v = classify(len);

	if (v != FZ_PROTO_V_DROP || pkt.reason != why)
		fail_msg("verdict %d reason %s, expected drop %s", v, fz_proto_reason_name(pkt.reason),
			 fz_proto_reason_name(why));
}

/* The verdict is ERROR with `why`, and the error response carries the request id. */
static void assert_error(uint32_t len, enum fz_proto_reason why, uint64_t id)
{
	uint8_t out[128];
	struct fz_proto_resp r;
	enum fz_proto_verdict v = classify(len);
	int n;

	if (v != FZ_PROTO_V_ERROR || pkt.reason != why)
		fail_msg("verdict %d reason %s, expected error %s", v, fz_proto_reason_name(pkt.reason),
			 fz_proto_reason_name(why));
	assert_true(pkt.hdr.req_id == id);
	assert_memory_equal(pkt.reply.mac, t_client.mac, 6);
	assert_int_equal(pkt.reply.ip, t_client.ip);
	assert_int_equal(pkt.reply.port, t_client.port);
	n = fz_proto_build_error(&t_cfg, &pkt.reply, pkt.hdr.req_id, pkt.reason, 5, out, sizeof(out));
	assert_int_equal(n, FZ_PROTO_RESP_FRAME_LEN);
	t_assert_udp_csums(out, (uint32_t)n);
	assert_int_equal(fz_proto_resp_decode(out + FZ_PROTO_REQ_OFF, FZ_PROTO_RESP_LEN, &r), 0);
	assert_true(r.req_id == id);
	assert_int_equal(r.status, why);
	assert_int_equal(r.label, FZ_PROTO_LABEL_NONE);
	assert_int_equal(r.exit_layer, FZ_PROTO_EXIT_NONE);
	assert_memory_equal(out, t_client.mac, 6);
}

/* A whole 784-byte request (id 42), its length. */
static uint32_t good(void)
{
	int n = t_frag(42, 0, T_TENSOR, f, CAP);

	assert_int_equal(n, FZ_PROTO_REQ_OFF + FZ_PROTO_REQ_HDR_LEN + T_TENSOR);
	return (uint32_t)n;
}

/* Rewrites the request header of the frame in f (id 42) and fixes checksums. */
static void rehdr(const struct fz_proto_req *h)
{
	fz_proto_req_encode(h, f + FZ_PROTO_REQ_OFF);
	t_fix_ip(f);
}

static void test_reason_table(void **state)
{
	(void)state;
	for (unsigned i = 0; i < FZ_PROTO_R__COUNT; i++) {
		const char *n = fz_proto_reason_name(i);

		assert_non_null(n);
		assert_true(strlen(n) > 0);
		assert_true(strlen(fz_proto_reason_desc(i)) > 0);
		assert_int_equal(fz_proto_reason_lookup(n), (int)i);
	}
	assert_int_equal(FZ_PROTO_R_OK, 0);
	assert_string_equal(fz_proto_reason_name(FZ_PROTO_R_DIMS_MISMATCH), "dims_mismatch");
	assert_string_equal(fz_proto_reason_name(FZ_PROTO_R__COUNT), "?");
	assert_int_equal(fz_proto_reason_lookup("no_such_reason"), -ENOENT);
	assert_int_equal(fz_proto_dtype_size(FZ_PROTO_DT_U8), 1);
	assert_int_equal(fz_proto_dtype_size(FZ_PROTO_DT_F32), 4);
	assert_int_equal(fz_proto_dtype_size(0), 0);
	assert_int_equal(fz_proto_dtype_size(3), 0);
	assert_string_equal(fz_proto_dtype_name(FZ_PROTO_DT_F32), "f32");
}

static void test_good_request(void **state)
{
	(void)state;
	uint32_t n = good();
	uint8_t img[T_TENSOR];

	assert_int_equal(classify(n), FZ_PROTO_V_REQUEST);
	assert_int_equal(pkt.reason, FZ_PROTO_R_OK);
	assert_true(pkt.hdr.req_id == 42);
	assert_int_equal(pkt.hdr.dtype, FZ_PROTO_DT_U8);
	assert_int_equal(pkt.hdr.tensor_bytes, T_TENSOR);
	assert_int_equal(pkt.hdr.frag_len, T_TENSOR);
	assert_ptr_equal(pkt.frag, f + FZ_PROTO_REQ_OFF + FZ_PROTO_REQ_HDR_LEN);
	t_tensor(42, img, sizeof(img));
	assert_memory_equal(pkt.frag, img, T_TENSOR);
	assert_memory_equal(pkt.reply.mac, t_client.mac, 6);
	assert_int_equal(pkt.reply.ip, t_client.ip);
	assert_int_equal(pkt.reply.port, t_client.port);
	t_assert_udp_csums(f, n);

	/* Ethernet padding after the datagram is fine. */
	memset(f + n, 0, 10);
	assert_int_equal(classify(n + 10), FZ_PROTO_V_REQUEST);
	/* UDP checksum 0 means none. */
	t_put16(f + 40, 0);
	assert_int_equal(classify(n), FZ_PROTO_V_REQUEST);
}

static void test_request_header_roundtrip(void **state)
{
	(void)state;
	struct fz_proto_req a = t_hdr(0x0102030405060708ull, 300, 184), b;
	uint8_t buf[FZ_PROTO_REQ_HDR_LEN];
	static const uint8_t want[FZ_PROTO_REQ_HDR_LEN] = {
		'F', 'Z', 'R', 'Q', 1, 1, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8,
		0,   1,   0,   28,  0, 28, 0, 184, 0, 0, 3, 16, 0, 0, 1, 44,
	};

	fz_proto_req_encode(&a, buf);
	assert_memory_equal(buf, want, sizeof(want));
	assert_int_equal(fz_proto_req_decode(buf, sizeof(buf), &b), 0);
	assert_true(b.req_id == a.req_id);
	assert_int_equal(b.kind, a.kind);
	assert_int_equal(b.dtype, a.dtype);
	assert_int_equal(b.c, a.c);
	assert_int_equal(b.h, a.h);
	assert_int_equal(b.w, a.w);
	assert_int_equal(b.tensor_bytes, a.tensor_bytes);
	assert_int_equal(b.frag_off, a.frag_off);
	assert_int_equal(b.frag_len, a.frag_len);
	assert_int_equal(fz_proto_req_decode(buf, sizeof(buf) - 1, &b), -EINVAL);
}

/* ---- drops: counted, never answered --------------------------------------------------------- */

static void test_truncated_frame(void **state)
{
	(void)state;
	good();
	assert_drop(13, FZ_PROTO_R_TRUNCATED_FRAME);
	assert_drop(0, FZ_PROTO_R_TRUNCATED_FRAME);
	assert_drop(20, FZ_PROTO_R_IP_TRUNCATED);
}

static void test_not_ipv4(void **state)
{
	(void)state;
	uint32_t n = good();

	t_put16(f + 12, 0x86dd); /* IPv6 */
	assert_drop(n, FZ_PROTO_R_NOT_IPV4);
	t_put16(f + 12, 0x8100); /* VLAN tag */
	assert_drop(n, FZ_PROTO_R_NOT_IPV4);
}

static void test_not_udp(void **state)
{
	(void)state;
	uint32_t n = good();

	f[FZ_ETH_HDR_LEN + 9] = 6; /* TCP */
	t_fix_ip(f);
	assert_drop(n, FZ_PROTO_R_NOT_UDP);
}

static void test_wrong_dst_mac(void **state)
{
	(void)state;
	uint32_t n = good();
	struct fz_proto_cfg promisc = t_cfg;

	f[5] = 0x99;
	assert_drop(n, FZ_PROTO_R_WRONG_DST_MAC);
	promisc.flags |= FZ_PROTO_F_PROMISC;
	assert_int_equal(fz_proto_classify(&promisc, f, n, &pkt), FZ_PROTO_V_REQUEST);
	f[0] = 0x01; /* multicast: never ours, even in promiscuous mode */
	assert_int_equal(fz_proto_classify(&promisc, f, n, &pkt), FZ_PROTO_V_DROP);
	assert_int_equal(pkt.reason, FZ_PROTO_R_WRONG_DST_MAC);
}

static void test_ip_header_checks(void **state)
{
	(void)state;
	uint32_t n = good();
	uint8_t *ip = f + FZ_ETH_HDR_LEN;

	ip[10] ^= 1;
	assert_drop(n, FZ_PROTO_R_IP_BAD_CHECKSUM);
	n = good();
	ip[0] = 0x44; /* IHL 4 */
	t_fix_ip(f);
	assert_drop(n, FZ_PROTO_R_IP_BAD_HEADER);
	n = good();
	ip[0] = 0x65; /* version 6 */
	t_fix_ip(f);
	assert_drop(n, FZ_PROTO_R_IP_BAD_HEADER);
	n = good();
	assert_drop(n - 1, FZ_PROTO_R_IP_BAD_LENGTH); /* total length beyond the frame */
	t_put16(ip + 2, 19);
	t_fix_ip(f);
	assert_drop(n, FZ_PROTO_R_IP_BAD_LENGTH);
	n = good();
	ip[19] = 9; /* 10.0.0.9 */
	t_fix_ip(f);
	assert_drop(n, FZ_PROTO_R_WRONG_DST_IP);
	n = good();
	ip[12] = 224; /* multicast source */
	t_fix_ip(f);
	assert_drop(n, FZ_PROTO_R_BAD_SRC);
}

static void test_ip_fragment(void **state)
{
	(void)state;
	uint32_t n = good();
	uint8_t *ip = f + FZ_ETH_HDR_LEN;

	t_put16(ip + 6, 0x2000); /* MF */
	t_fix_ip(f);
	assert_drop(n, FZ_PROTO_R_IP_FRAGMENT);
	t_put16(ip + 6, 0x0010); /* offset 128 */
	t_fix_ip(f);
	assert_drop(n, FZ_PROTO_R_IP_FRAGMENT);
	t_put16(ip + 6, 0x4000); /* DF alone is fine */
	t_fix_ip(f);
	assert_int_equal(classify(n), FZ_PROTO_V_REQUEST);
}

static void test_ip_options_accepted(void **state)
{
	(void)state;
	uint32_t n = good();
	uint8_t g[CAP];
	uint8_t *ip;

	/* Insert 4 bytes of options (NOPs) after the 20-byte header. */
	memcpy(g, f, FZ_ETH_HDR_LEN + 20);
	memset(g + FZ_ETH_HDR_LEN + 20, 1, 4);
	memcpy(g + FZ_ETH_HDR_LEN + 24, f + FZ_ETH_HDR_LEN + 20, n - FZ_ETH_HDR_LEN - 20);
	ip = g + FZ_ETH_HDR_LEN;
	ip[0] = 0x46;
	t_put16(ip + 2, (uint16_t)(t_get16(ip + 2) + 4));
	memcpy(f, g, n + 4);
	t_fix_ip(f);
	assert_int_equal(classify(n + 4), FZ_PROTO_V_REQUEST);
	assert_ptr_equal(pkt.frag, f + FZ_PROTO_REQ_OFF + 4 + FZ_PROTO_REQ_HDR_LEN);
}

static void test_udp_checks(void **state)
{
	(void)state;
	uint32_t n = good();
	uint8_t *udp = f + FZ_ETH_HDR_LEN + 20;
	struct fz_proto_cfg nocsum = t_cfg;

	udp[8 + 40] ^= 0xff; /* a tensor byte */
	assert_drop(n, FZ_PROTO_R_UDP_BAD_CHECKSUM);
	nocsum.flags |= FZ_PROTO_F_NO_UDP_CSUM;
	assert_int_equal(fz_proto_classify(&nocsum, f, n, &pkt), FZ_PROTO_V_REQUEST);
	n = good();
	t_put16(udp + 4, 7);
	assert_drop(n, FZ_PROTO_R_UDP_BAD_LENGTH);
	t_put16(udp + 4, (uint16_t)(n - FZ_ETH_HDR_LEN - 20 + 1));
	assert_drop(n, FZ_PROTO_R_UDP_BAD_LENGTH);
	n = good();
	t_put16(udp + 2, 7879);
	assert_drop(n, FZ_PROTO_R_WRONG_PORT);
	n = good();
	t_put16(udp, 0);
	t_fix_ip(f);
	assert_drop(n, FZ_PROTO_R_BAD_SRC);
}

/* ~csum_tcpudp_magic() of the frame in f: its pseudo-header sum, folded, not complemented. */
static uint16_t partial_csum(void)
{
	const uint8_t *ip = f + FZ_ETH_HDR_LEN;
	uint8_t ph[12];

	memcpy(ph, ip + 12, 8);
	ph[8] = 0;
	ph[9] = 17;
	memcpy(ph + 10, ip + 20 + 4, 2);
	return (uint16_t)~fz_proto_cksum(ph, 12);
}

/* What Linux sends over a veth with tx checksum offload on (CHECKSUM_PARTIAL): captured from a
 * UDP socket on 10.0.0.2:40000 (02:..:02) to 10.0.0.1:7878 by AF_PACKET on the veth peer.
 * UDP checksum 0x144c = 0a00 + 0002 + 0a00 + 0001 + 0011 + 0038 (the pseudo-header only). */
static const uint8_t linux_partial[] = {
	0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x00, 0x45,
	0x00, 0x00, 0x4c, 0xea, 0xdd, 0x40, 0x00, 0x40, 0x11, 0x3b, 0xc1, 0x0a, 0x00, 0x00, 0x02,
	0x0a, 0x00, 0x00, 0x01, 0x9c, 0x40, 0x1e, 0xc6, 0x00, 0x38, 0x14, 0x4c, 0x46, 0x5a, 0x52,
	0x51, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x00, 0x01,
	0x00, 0x1c, 0x00, 0x1c, 0x00, 0x10, 0x00, 0x00, 0x03, 0x10, 0x00, 0x00, 0x00, 0x00, 0x22,
	0x29, 0x30, 0x37, 0x3e, 0x45, 0x4c, 0x53, 0x5a, 0x61, 0x68, 0x6f, 0x76, 0x7d, 0x84, 0x8b,
};

/* Regression: over a veth peer with default offloads every request was udp_bad_checksum. */
static void test_udp_csum_partial_accepted(void **state)
{
	(void)state;
	uint32_t n = sizeof(linux_partial);
	uint8_t *csum = f + FZ_ETH_HDR_LEN + 20 + 6;

	memcpy(f, linux_partial, n);
	assert_int_equal(classify(n), FZ_PROTO_V_REQUEST);
	assert_true(pkt.udp_csum_partial);
	assert_true(pkt.hdr.req_id == 42);
	assert_int_equal(pkt.hdr.frag_len, 16);
	assert_int_equal(t_get16(csum), partial_csum());
	/* the NIC vouched for it: not examined; the NIC says bad: dropped */
	assert_int_equal(fz_proto_classify_hw(&t_cfg, f, n, FZ_PROTO_L4CSUM_GOOD, &pkt),
			 FZ_PROTO_V_REQUEST);
	assert_false(pkt.udp_csum_partial);
	assert_int_equal(fz_proto_classify_hw(&t_cfg, f, n, FZ_PROTO_L4CSUM_BAD, &pkt),
			 FZ_PROTO_V_DROP);
	assert_int_equal(pkt.reason, FZ_PROTO_R_UDP_BAD_CHECKSUM);

	/* a whole request with its checksum left partial, as Linux would for it */
	n = good();
	assert_int_equal(classify(n), FZ_PROTO_V_REQUEST);
	assert_false(pkt.udp_csum_partial); /* a finished checksum is verified, not "partial" */
	t_put16(csum, partial_csum());
	assert_int_equal(classify(n), FZ_PROTO_V_REQUEST);
	assert_true(pkt.udp_csum_partial);
	/* flagged as soon as the checksum passed, whatever follows */
	f[FZ_PROTO_REQ_OFF] = 'X';
	assert_drop(n, FZ_PROTO_R_BAD_MAGIC);
	assert_true(pkt.udp_csum_partial);
}

static void test_udp_csum_wrong_dropped(void **state)
{
	(void)state;
	uint32_t n = good();
	uint8_t *csum = f + FZ_ETH_HDR_LEN + 20 + 6;
	uint16_t fin = t_get16(csum), part = partial_csum();

	/* off by one from the finished checksum, or from the partial one; their complements */
	t_put16(csum, (uint16_t)(fin + 1));
	assert_drop(n, FZ_PROTO_R_UDP_BAD_CHECKSUM);
	t_put16(csum, (uint16_t)(part + 1));
	assert_drop(n, FZ_PROTO_R_UDP_BAD_CHECKSUM);
	t_put16(csum, (uint16_t)~part);
	assert_drop(n, FZ_PROTO_R_UDP_BAD_CHECKSUM);
	assert_false(pkt.udp_csum_partial);
	/* a partial checksum over a different pseudo-header (another UDP length) is wrong too */
	t_put16(csum, (uint16_t)(part + 0x10));
	assert_drop(n, FZ_PROTO_R_UDP_BAD_CHECKSUM);
	/* right checksum, payload changed after it was computed */
	t_put16(csum, fin);
	assert_int_equal(classify(n), FZ_PROTO_V_REQUEST);
	f[FZ_PROTO_REQ_OFF + FZ_PROTO_REQ_HDR_LEN + 5] ^= 0x40;
	assert_drop(n, FZ_PROTO_R_UDP_BAD_CHECKSUM);
	/* the NIC's verdict wins over the software check, both ways */
	assert_int_equal(fz_proto_classify_hw(&t_cfg, f, n, FZ_PROTO_L4CSUM_GOOD, &pkt),
			 FZ_PROTO_V_REQUEST);
	n = good();
	assert_int_equal(fz_proto_classify_hw(&t_cfg, f, n, FZ_PROTO_L4CSUM_BAD, &pkt),
			 FZ_PROTO_V_DROP);
	assert_int_equal(pkt.reason, FZ_PROTO_R_UDP_BAD_CHECKSUM);
}

static void test_udp_csum_zero_accepted(void **state)
{
	(void)state;
	uint32_t n = good();

	t_put16(f + FZ_ETH_HDR_LEN + 20 + 6, 0); /* none sent (RFC 768) */
	f[FZ_PROTO_REQ_OFF + FZ_PROTO_REQ_HDR_LEN] ^= 1;
	for (int hw = FZ_PROTO_L4CSUM_UNKNOWN; hw <= FZ_PROTO_L4CSUM_BAD; hw++) {
		assert_int_equal(fz_proto_classify_hw(&t_cfg, f, n, (enum fz_proto_l4csum)hw, &pkt),
				 FZ_PROTO_V_REQUEST);
		assert_false(pkt.udp_csum_partial);
	}
}

static void test_truncated_header(void **state)
{
	(void)state;
	struct fz_proto_req h = t_hdr(42, 0, 0);
	struct fz_proto_addr to = t_appliance();
	int n = fz_proto_build_request(&t_client, &to, &h, NULL, 0, f, CAP);
	uint8_t *ip = f + FZ_ETH_HDR_LEN;

	/* Cut the datagram to 31 bytes of request header; lengths stay consistent. */
	n -= 1;
	t_put16(ip + 2, (uint16_t)(t_get16(ip + 2) - 1));
	t_put16(ip + 24, (uint16_t)(t_get16(ip + 24) - 1));
	t_fix_ip(f);
	assert_drop((uint32_t)n, FZ_PROTO_R_TRUNCATED_HEADER);
}

static void test_bad_magic(void **state)
{
	(void)state;
	uint32_t n = good();

	f[FZ_PROTO_REQ_OFF + 3] = 'S'; /* a response's magic */
	t_fix_ip(f);
	assert_drop(n, FZ_PROTO_R_BAD_MAGIC);
}

static void test_bad_version(void **state)
{
	(void)state;
	uint32_t n = good();

	f[FZ_PROTO_REQ_OFF + 4] = 2;
	t_fix_ip(f);
	assert_drop(n, FZ_PROTO_R_BAD_VERSION);
}

static void test_bad_kind_not_answered(void **state)
{
	(void)state;
	uint32_t n = good();
	struct fz_proto_req h = t_hdr(42, 0, T_TENSOR);

	h.kind = FZ_PROTO_KIND_RESPONSE;
	rehdr(&h);
	assert_drop(n, FZ_PROTO_R_BAD_KIND);
}

/* ---- errors: the request id is known, so they are answered ---------------------------------- */

static void test_unknown_dtype(void **state)
{
	(void)state;
	uint32_t n = good();
	struct fz_proto_req h = t_hdr(42, 0, T_TENSOR);

	h.dtype = 9;
	rehdr(&h);
	assert_error(n, FZ_PROTO_R_UNKNOWN_DTYPE, 42);
	h.dtype = 0;
	rehdr(&h);
	assert_error(n, FZ_PROTO_R_UNKNOWN_DTYPE, 42);
}

static void test_unsupported_dtype(void **state)
{
	(void)state;
	uint32_t n = good();
	struct fz_proto_cfg u8only = t_cfg;
	struct fz_proto_req h = t_hdr(42, 0, T_TENSOR);

	h.dtype = FZ_PROTO_DT_F32;
	h.tensor_bytes = T_TENSOR * 4;
	rehdr(&h);
	u8only.dtype_mask = 1u << FZ_PROTO_DT_U8;
	assert_int_equal(fz_proto_classify(&u8only, f, n, &pkt), FZ_PROTO_V_ERROR);
	assert_int_equal(pkt.reason, FZ_PROTO_R_UNSUPPORTED_DTYPE);
	assert_true(pkt.hdr.req_id == 42);
	/* The full config takes f32: this first fragment (784 of 3136 bytes) is fine. */
	assert_int_equal(classify(n), FZ_PROTO_V_REQUEST);
}

static void test_oversized_tensor(void **state)
{
	(void)state;
	uint32_t n = good();
	struct fz_proto_req h = t_hdr(42, 0, T_TENSOR);

	h.tensor_bytes = 65537;
	rehdr(&h);
	assert_error(n, FZ_PROTO_R_OVERSIZED_TENSOR, 42);
	h.tensor_bytes = 0xffffffffu;
	rehdr(&h);
	assert_error(n, FZ_PROTO_R_OVERSIZED_TENSOR, 42);
}

static void test_dims_mismatch(void **state)
{
	(void)state;
	uint32_t n = good();
	struct fz_proto_req h = t_hdr(42, 0, T_TENSOR);

	h.c = 3;
	h.h = 28;
	h.w = 28;
	h.tensor_bytes = 3 * 784;
	rehdr(&h);
	assert_error(n, FZ_PROTO_R_DIMS_MISMATCH, 42);
	h = t_hdr(42, 0, T_TENSOR);
	h.h = 784;
	h.w = 1; /* same size, other shape */
	rehdr(&h);
	assert_error(n, FZ_PROTO_R_DIMS_MISMATCH, 42);
}

static void test_tensor_size_mismatch(void **state)
{
	(void)state;
	uint32_t n = good();
	struct fz_proto_req h = t_hdr(42, 0, T_TENSOR);

	h.tensor_bytes = 1000;
	rehdr(&h);
	assert_error(n, FZ_PROTO_R_TENSOR_SIZE_MISMATCH, 42);
}

static void test_payload_length_mismatch(void **state)
{
	(void)state;
	struct fz_proto_req h = t_hdr(7, 0, 300);
	struct fz_proto_addr to = t_appliance();
	uint8_t img[T_TENSOR] = {0};
	int n;

	/* Header says 300 bytes follow, the datagram carries 299. */
	n = fz_proto_build_request(&t_client, &to, &h, img, 299, f, CAP);
	assert_error((uint32_t)n, FZ_PROTO_R_PAYLOAD_LENGTH_MISMATCH, 7);
	/* ... or 301. */
	n = fz_proto_build_request(&t_client, &to, &h, img, 301, f, CAP);
	assert_error((uint32_t)n, FZ_PROTO_R_PAYLOAD_LENGTH_MISMATCH, 7);
}

static void test_bad_fragment(void **state)
{
	(void)state;
	struct fz_proto_req h = t_hdr(8, 700, 100); /* ends at 800 > 784 */
	struct fz_proto_addr to = t_appliance();
	uint8_t img[100] = {0};
	int n = fz_proto_build_request(&t_client, &to, &h, img, 100, f, CAP);

	assert_error((uint32_t)n, FZ_PROTO_R_BAD_FRAGMENT, 8);
	h = t_hdr(8, 0, 0);
	n = fz_proto_build_request(&t_client, &to, &h, img, 0, f, CAP);
	assert_error((uint32_t)n, FZ_PROTO_R_BAD_FRAGMENT, 8);
	h = t_hdr(8, 0xffffff00u, 100); /* offset + length wraps in 32 bits */
	n = fz_proto_build_request(&t_client, &to, &h, img, 100, f, CAP);
	assert_error((uint32_t)n, FZ_PROTO_R_BAD_FRAGMENT, 8);
}

/* ---- ARP ------------------------------------------------------------------------------------ */

static const uint8_t arp_req[42] = {
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x06, /* Ethernet */
	0, 1, 0x08, 0x00, 6, 4, 0, 1,                                           /* request */
	0x02, 0, 0, 0, 0, 0x02, 10, 0, 0, 2,                                    /* sender */
	0, 0, 0, 0, 0, 0, 10, 0, 0, 1,                                          /* target: us */
};

static const uint8_t arp_rep[42] = {
	0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x06, /* Ethernet */
	0, 1, 0x08, 0x00, 6, 4, 0, 2,                               /* reply */
	0x02, 0, 0, 0, 0, 0x01, 10, 0, 0, 1,                        /* sender: us */
	0x02, 0, 0, 0, 0, 0x02, 10, 0, 0, 2,                        /* target: requester */
};

static void test_arp_reply_bytes(void **state)
{
	(void)state;
	uint8_t out[64];

	memset(f, 0, 60);
	memcpy(f, arp_req, sizeof(arp_req));
	assert_int_equal(classify(60), FZ_PROTO_V_ARP); /* padded to the minimum frame */
	assert_int_equal(pkt.reply.ip, t_client.ip);
	assert_int_equal(fz_proto_build_arp_reply(&t_cfg, f, 60, out, sizeof(out)),
			 FZ_PROTO_ARP_FRAME_LEN);
	assert_memory_equal(out, arp_rep, sizeof(arp_rep));
	/* In place. */
	assert_int_equal(fz_proto_build_arp_reply(&t_cfg, f, 60, f, CAP), FZ_PROTO_ARP_FRAME_LEN);
	assert_memory_equal(f, arp_rep, sizeof(arp_rep));
	/* Our own reply is not a request: not answered again. */
	assert_drop(42, FZ_PROTO_R_WRONG_DST_MAC);
	memcpy(f, arp_req, sizeof(arp_req));
	assert_int_equal(fz_proto_build_arp_reply(&t_cfg, f, 42, out, 41), -ENOSPC);
}

static void test_arp_ignored_and_malformed(void **state)
{
	(void)state;
	uint8_t out[64];

	memcpy(f, arp_req, sizeof(arp_req));
	f[41] = 7; /* for 10.0.0.7 */
	assert_drop(42, FZ_PROTO_R_ARP_IGNORED);
	assert_int_equal(fz_proto_build_arp_reply(&t_cfg, f, 42, out, sizeof(out)), -EINVAL);
	memcpy(f, arp_req, sizeof(arp_req));
	f[21] = 2; /* a reply */
	assert_drop(42, FZ_PROTO_R_ARP_IGNORED);
	memcpy(f, arp_req, sizeof(arp_req));
	memcpy(f + 28, f + 38, 4); /* gratuitous/conflict: sender claims our address */
	assert_drop(42, FZ_PROTO_R_ARP_IGNORED);
	memcpy(f, arp_req, sizeof(arp_req));
	assert_drop(41, FZ_PROTO_R_ARP_MALFORMED);
	f[18] = 8; /* hlen */
	assert_drop(42, FZ_PROTO_R_ARP_MALFORMED);
}

/* ---- ICMP ----------------------------------------------------------------------------------- */

/* Echo request from the client with `plen` payload bytes, padded to `pad` frame bytes. */
static uint32_t icmp_echo(uint32_t plen, uint32_t pad)
{
	uint8_t *ip = f + FZ_ETH_HDR_LEN, *icmp = ip + 20;
	uint32_t n = FZ_ETH_HDR_LEN + 20 + 8 + plen;

	memset(f, 0, CAP);
	memcpy(f, t_cfg.mac, 6);
	memcpy(f + 6, t_client.mac, 6);
	t_put16(f + 12, 0x0800);
	ip[0] = 0x45;
	t_put16(ip + 2, (uint16_t)(20 + 8 + plen));
	t_put16(ip + 4, 0x1234);
	ip[8] = 17; /* TTL */
	ip[9] = 1;
	memcpy(ip + 12, (uint8_t[]){10, 0, 0, 2, 10, 0, 0, 1}, 8);
	t_fix_ip(f);
	icmp[0] = 8;
	t_put16(icmp + 4, 0xbeef); /* identifier */
	t_put16(icmp + 6, 3);      /* sequence */
	for (uint32_t i = 0; i < plen; i++)
		icmp[8 + i] = (uint8_t)(i + 1);
	t_put16(icmp + 2, fz_proto_cksum(icmp, 8 + plen));
	return n > pad ? n : pad;
}

static void check_echo_reply(const uint8_t *r, int n, uint32_t plen)
{
	const uint8_t *ip = r + FZ_ETH_HDR_LEN, *icmp = ip + 20;

	assert_int_equal(n, FZ_ETH_HDR_LEN + 20 + 8 + plen);
	assert_memory_equal(r, t_client.mac, 6);
	assert_memory_equal(r + 6, t_cfg.mac, 6);
	assert_memory_equal(ip + 12, ((uint8_t[]){10, 0, 0, 1, 10, 0, 0, 2}), 8);
	assert_int_equal(ip[8], 64);
	assert_int_equal(t_get16(ip + 4), 0x1234);
	assert_int_equal(fz_proto_cksum(ip, 20), 0);
	assert_int_equal(icmp[0], 0);
	assert_int_equal(icmp[1], 0);
	assert_int_equal(t_get16(icmp + 4), 0xbeef);
	assert_int_equal(t_get16(icmp + 6), 3);
	for (uint32_t i = 0; i < plen; i++)
		assert_int_equal(icmp[8 + i], (uint8_t)(i + 1));
	assert_int_equal(fz_proto_cksum(icmp, 8 + plen), 0);
}

static void test_icmp_echo_reply(void **state)
{
	(void)state;
	uint8_t out[CAP];
	uint32_t plens[] = {56, 7, 0, 1400};

	for (unsigned k = 0; k < sizeof(plens) / sizeof(plens[0]); k++) {
		uint32_t n = icmp_echo(plens[k], 60);
		int m;

		assert_int_equal(classify(n), FZ_PROTO_V_ICMP);
		m = fz_proto_build_icmp_reply(&t_cfg, f, n, out, sizeof(out));
		check_echo_reply(out, m, plens[k]);
		m = fz_proto_build_icmp_reply(&t_cfg, f, n, f, CAP); /* in place */
		check_echo_reply(f, m, plens[k]);
		assert_drop(n, FZ_PROTO_R_WRONG_DST_MAC); /* the reply is not for us */
	}
	assert_int_equal(fz_proto_build_icmp_reply(&t_cfg, f, icmp_echo(56, 0), out, 97), -ENOSPC);
}

static void test_icmp_ignored_and_malformed(void **state)
{
	(void)state;
	uint32_t n = icmp_echo(56, 0);
	uint8_t *icmp = f + FZ_ETH_HDR_LEN + 20;
	uint8_t out[CAP];

	icmp[8] ^= 1;
	assert_drop(n, FZ_PROTO_R_ICMP_MALFORMED);
	assert_int_equal(fz_proto_build_icmp_reply(&t_cfg, f, n, out, sizeof(out)), -EINVAL);
	n = icmp_echo(56, 0);
	icmp[0] = 0; /* an echo reply */
	t_put16(icmp + 2, 0);
	t_put16(icmp + 2, fz_proto_cksum(icmp, 64));
	assert_drop(n, FZ_PROTO_R_ICMP_IGNORED);
}

/* ---- checksum ------------------------------------------------------------------------------- */

/* RFC 1071 byte pair by byte pair: the reference for the word-at-a-time fz_proto_cksum. */
static uint16_t ref_cksum(const uint8_t *p, uint32_t len)
{
	uint64_t s = 0;

	for (uint32_t i = 0; i + 1 < len; i += 2)
		s += (uint32_t)p[i] << 8 | p[i + 1];
	if (len & 1)
		s += (uint32_t)p[len - 1] << 8;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

static void test_checksum_matches_reference(void **state)
{
	(void)state;
	static uint8_t buf[1700];
	uint32_t x = 12345;

	for (int t = 0; t < 20000; t++) {
		uint32_t off = (uint32_t)t % 8, len = (uint32_t)(t * 7919) % 1600;

		for (uint32_t i = 0; i < off + len; i++) {
			x = x * 1103515245u + 12345u;
			buf[i] = t % 5 == 0 ? 0xff : (uint8_t)(x >> 16); /* all-ones: carry heavy */
		}
		if (fz_proto_cksum(buf + off, len) != ref_cksum(buf + off, len))
			fail_msg("len %u off %u", len, off);
	}
	assert_int_equal(fz_proto_cksum(buf, 0), 0xffff);
}

/* ---- responses ------------------------------------------------------------------------------ */

static void test_response_frame(void **state)
{
	(void)state;
	struct fz_proto_resp r = {
		.req_id = 0xfeedfacecafebeefull,
		.status = FZ_PROTO_R_OK,
		.label = 7,
		.exit_layer = 12,
		.confidence = 0.875f,
		.time_ns = 123456789,
	}, d;
	uint8_t out[128];
	const uint8_t *ip = out + FZ_ETH_HDR_LEN, *udp = ip + 20, *p = udp + 8;
	static const uint8_t want[FZ_PROTO_RESP_LEN] = {
		'F',  'Z',  'R',  'S',  1,    2,    0,    0,    0xfe, 0xed, 0xfa,
		0xce, 0xca, 0xfe, 0xbe, 0xef, 0,    7,    0,    12,   0x3f, 0x60,
		0,    0,    0,    0,    0,    0,    0x07, 0x5b, 0xcd, 0x15,
	};

	assert_int_equal(fz_proto_build_response(&t_cfg, &t_client, &r, out, 73), -ENOSPC);
	assert_int_equal(fz_proto_build_response(&t_cfg, &t_client, &r, out, sizeof(out)),
			 FZ_PROTO_RESP_FRAME_LEN);
	t_assert_udp_csums(out, FZ_PROTO_RESP_FRAME_LEN);
	assert_memory_equal(out, t_client.mac, 6);
	assert_memory_equal(out + 6, t_cfg.mac, 6);
	assert_int_equal(t_get16(out + 12), 0x0800);
	assert_int_equal(ip[0], 0x45);
	assert_int_equal(t_get16(ip + 2), 20 + 8 + 32);
	assert_int_equal(ip[9], 17);
	assert_memory_equal(ip + 12, ((uint8_t[]){10, 0, 0, 1, 10, 0, 0, 2}), 8);
	assert_int_equal(t_get16(udp), 7878);
	assert_int_equal(t_get16(udp + 2), 40000);
	assert_memory_equal(p, want, sizeof(want));
	assert_int_equal(fz_proto_resp_decode(p, FZ_PROTO_RESP_LEN, &d), 0);
	assert_true(d.req_id == r.req_id);
	assert_int_equal(d.label, 7);
	assert_int_equal(d.exit_layer, 12);
	assert_true(d.confidence == 0.875f);
	assert_true(d.time_ns == 123456789);
	assert_int_equal(fz_proto_resp_decode(p, FZ_PROTO_RESP_LEN - 1, &d), -EINVAL);
}

/* Every way of answering has one wire code and back: layers are their index, the full model,
 * each front tier and an error the FZ_PROTO_EXIT_* codes; nothing else maps to a layer. */
static void test_exit_codes(void **state)
{
	(void)state;
	static const struct {
		enum fz_answered kind;
		uint16_t code;
	} k[] = {
		{FZ_ANSWERED_ERROR, FZ_PROTO_EXIT_NONE},
		{FZ_ANSWERED_FULL, FZ_PROTO_EXIT_FULL},
		{FZ_ANSWERED_EXACT, FZ_PROTO_EXIT_EXACT},
		{FZ_ANSWERED_FLOW, FZ_PROTO_EXIT_FLOW},
		{FZ_ANSWERED_NEAR, FZ_PROTO_EXIT_NEAR},
		{FZ_ANSWERED_COALESCED, FZ_PROTO_EXIT_COALESCED},
	};
	assert_int_equal(sizeof(k) / sizeof(k[0]) + 1, FZ_ANSWERED__COUNT); /* + LAYER */
	struct fz_answer_src a;
	for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
		assert_int_equal(fz_proto_exit_code(fz_answer_of(k[i].kind)), k[i].code);
		assert_int_equal(fz_proto_exit_answer(k[i].code, &a), 0);
		assert_int_equal(a.kind, k[i].kind);
		assert_int_equal(fz_answer_exit_layer(a), -1);
	}
	for (int l = 0; l < FZ_MODEL_MAX_LAYERS; l += 7) {
		assert_int_equal(fz_proto_exit_code(fz_answer_layer(l)), l);
		assert_int_equal(fz_proto_exit_answer((uint16_t)l, &a), 0);
		assert_int_equal(fz_answer_exit_layer(a), l);
	}
	/* a layer no loaded model has is no answer at all; codes between mean nothing */
	assert_int_equal(fz_proto_exit_code(fz_answer_layer(FZ_MODEL_MAX_LAYERS)), FZ_PROTO_EXIT_NONE);
	assert_int_equal(fz_proto_exit_code(fz_answer_layer(-1)), FZ_PROTO_EXIT_NONE);
	assert_int_equal(fz_proto_exit_answer(FZ_MODEL_MAX_LAYERS, &a), -EINVAL);
	assert_int_equal(fz_proto_exit_answer(0xfff4, &a), -EINVAL);
}

static void test_response_no_udp_csum(void **state)
{
	(void)state;
	struct fz_proto_cfg c = t_cfg;
	uint8_t out[128];

	c.flags |= FZ_PROTO_F_NO_UDP_CSUM_TX;
	assert_int_equal(fz_proto_build_error(&c, &t_client, 1, FZ_PROTO_R_OVERLOADED, 0, out,
					      sizeof(out)),
			 FZ_PROTO_RESP_FRAME_LEN);
	assert_int_equal(t_get16(out + FZ_ETH_HDR_LEN + 20 + 6), 0);
	assert_int_equal(fz_proto_cksum(out + FZ_ETH_HDR_LEN, 20), 0);
}

/* The appliance's own responses looped back (a reflection) are never answered. */
static void test_response_looped_back_is_dropped(void **state)
{
	(void)state;
	struct fz_proto_addr self = t_appliance();
	struct fz_proto_addr from = t_client;
	uint8_t out[128];

	from.port = 7878; /* a second appliance on the same port */
	assert_int_equal(fz_proto_build_error(&t_cfg, &self, 1, FZ_PROTO_R_DIMS_MISMATCH, 0, out,
					      sizeof(out)),
			 FZ_PROTO_RESP_FRAME_LEN);
	memcpy(out + 6, from.mac, 6);
	out[FZ_ETH_HDR_LEN + 15] = 2; /* from 10.0.0.2 */
	t_fix_ip(out);
	assert_int_equal(fz_proto_classify(&t_cfg, out, FZ_PROTO_RESP_FRAME_LEN, &pkt),
			 FZ_PROTO_V_DROP);
	assert_int_equal(pkt.reason, FZ_PROTO_R_BAD_MAGIC);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reason_table),
		cmocka_unit_test(test_good_request),
		cmocka_unit_test(test_request_header_roundtrip),
		cmocka_unit_test(test_truncated_frame),
		cmocka_unit_test(test_not_ipv4),
		cmocka_unit_test(test_not_udp),
		cmocka_unit_test(test_wrong_dst_mac),
		cmocka_unit_test(test_ip_header_checks),
		cmocka_unit_test(test_ip_fragment),
		cmocka_unit_test(test_ip_options_accepted),
		cmocka_unit_test(test_udp_checks),
		cmocka_unit_test(test_udp_csum_partial_accepted),
		cmocka_unit_test(test_udp_csum_wrong_dropped),
		cmocka_unit_test(test_udp_csum_zero_accepted),
		cmocka_unit_test(test_truncated_header),
		cmocka_unit_test(test_bad_magic),
		cmocka_unit_test(test_bad_version),
		cmocka_unit_test(test_bad_kind_not_answered),
		cmocka_unit_test(test_unknown_dtype),
		cmocka_unit_test(test_unsupported_dtype),
		cmocka_unit_test(test_oversized_tensor),
		cmocka_unit_test(test_dims_mismatch),
		cmocka_unit_test(test_tensor_size_mismatch),
		cmocka_unit_test(test_payload_length_mismatch),
		cmocka_unit_test(test_bad_fragment),
		cmocka_unit_test(test_arp_reply_bytes),
		cmocka_unit_test(test_arp_ignored_and_malformed),
		cmocka_unit_test(test_icmp_echo_reply),
		cmocka_unit_test(test_icmp_ignored_and_malformed),
		cmocka_unit_test(test_checksum_matches_reference),
		cmocka_unit_test(test_response_frame),
		cmocka_unit_test(test_exit_codes),
		cmocka_unit_test(test_response_no_udp_csum),
		cmocka_unit_test(test_response_looped_back_is_dropped),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
