/* Shared fixtures of the protocol tests: an appliance config, a client, frame builders. */
#ifndef FZ_PROTO_TEST_PVT_H
#define FZ_PROTO_TEST_PVT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "fz_proto.h"

#define T_IP(a, b, c, d) ((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (d))
#define T_TENSOR 784u

static const struct fz_proto_cfg t_cfg = {
	.mac = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01},
	.ip = T_IP(10, 0, 0, 1),
	.port = 7878,
	.in_c = 1,
	.in_h = 28,
	.in_w = 28,
	.dtype_mask = 1u << FZ_PROTO_DT_U8 | 1u << FZ_PROTO_DT_F32,
	.max_tensor_bytes = 65536,
	.flags = 0,
};

static const struct fz_proto_addr t_client = {
	.mac = {0x02, 0x00, 0x00, 0x00, 0x00, 0x02},
	.port = 40000,
	.ip = T_IP(10, 0, 0, 2),
};

static inline struct fz_proto_addr t_appliance(void)
{
	struct fz_proto_addr a;

	memcpy(a.mac, t_cfg.mac, 6);
	a.ip = t_cfg.ip;
	a.port = t_cfg.port;
	return a;
}

/* Deterministic tensor bytes: image `id`. */
static inline void t_tensor(uint64_t id, uint8_t *buf, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		buf[i] = (uint8_t)(i * 7 + id * 13);
}

static inline struct fz_proto_req t_hdr(uint64_t id, uint32_t off, uint16_t len)
{
	struct fz_proto_req h = {
		.req_id = id,
		.kind = FZ_PROTO_KIND_REQUEST,
		.dtype = FZ_PROTO_DT_U8,
		.c = 1,
		.h = 28,
		.w = 28,
		.tensor_bytes = T_TENSOR,
		.frag_off = off,
		.frag_len = len,
	};
	return h;
}

/* A request frame from `from` carrying bytes [off, off+len) of image `id`. */
static inline int t_frag_from(const struct fz_proto_addr *from, uint64_t id, uint32_t off, uint16_t len,
		       uint8_t *out, uint32_t cap)
{
	uint8_t img[T_TENSOR];
	struct fz_proto_req h = t_hdr(id, off, len);
	struct fz_proto_addr to = t_appliance();

	t_tensor(id, img, sizeof(img));
	return fz_proto_build_request(from, &to, &h, img + off, len, out, cap);
}

static inline int t_frag(uint64_t id, uint32_t off, uint16_t len, uint8_t *out, uint32_t cap)
{
	return t_frag_from(&t_client, id, off, len, out, cap);
}

static inline uint16_t t_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline void t_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* Recompute the IPv4 header checksum and zero the UDP checksum after editing a frame. */
static inline void t_fix_ip(uint8_t *f)
{
	uint8_t *ip = f + FZ_ETH_HDR_LEN;
	uint32_t ihl = (uint32_t)(ip[0] & 0xf) * 4;

	t_put16(ip + 10, 0);
	t_put16(ip + 10, fz_proto_cksum(ip, ihl));
	if (ip[9] == 17)
		t_put16(ip + ihl + 6, 0);
}

/* Checks every checksum of an Ethernet/IPv4/UDP frame. */
static inline void t_assert_udp_csums(const uint8_t *f, uint32_t len)
{
	const uint8_t *ip = f + FZ_ETH_HDR_LEN;
	uint32_t ihl = (uint32_t)(ip[0] & 0xf) * 4;
	uint32_t tot = t_get16(ip + 2);
	const uint8_t *udp = ip + ihl;
	uint32_t ulen = t_get16(udp + 4);
	uint8_t pseudo[12 + 65536];

	assert_true(len >= FZ_ETH_HDR_LEN + tot);
	assert_int_equal(fz_proto_cksum(ip, ihl), 0);
	assert_int_equal(ulen, tot - ihl);
	assert_int_not_equal(t_get16(udp + 6), 0);
	memcpy(pseudo, ip + 12, 8);
	pseudo[8] = 0;
	pseudo[9] = 17;
	t_put16(pseudo + 10, (uint16_t)ulen);
	memcpy(pseudo + 12, udp, ulen);
	assert_int_equal(fz_proto_cksum(pseudo, 12 + ulen), 0);
}

#endif /* FZ_PROTO_TEST_PVT_H */
