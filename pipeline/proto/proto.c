/* Freeze wire protocol: classify Ethernet frames, build ARP/ICMP/response frames (no DPDK). */
#include <errno.h>
#include <string.h>

#include "fz_model.h"
#include "fz_proto.h"
#include "proto_pvt.h"

static const char *const fz_reason_names[FZ_PROTO_R__COUNT] = {
#define FZ_PROTO_R_NAME(e, s, d) [FZ_PROTO_R_##e] = s,
	FZ_PROTO_FOREACH_REASON(FZ_PROTO_R_NAME)
#undef FZ_PROTO_R_NAME
};

static const char *const fz_reason_descs[FZ_PROTO_R__COUNT] = {
#define FZ_PROTO_R_DESC(e, s, d) [FZ_PROTO_R_##e] = d,
	FZ_PROTO_FOREACH_REASON(FZ_PROTO_R_DESC)
#undef FZ_PROTO_R_DESC
};

_Static_assert(FZ_PROTO_R__COUNT <= 256, "status is one byte on the wire");

unsigned fz_proto_dtype_size(unsigned dtype)
{
	switch (dtype) {
#define FZ_PROTO_DT_SIZE(e, v, sz, s)                                                              \
	case v:                                                                                    \
		return sz;
		FZ_PROTO_FOREACH_DTYPE(FZ_PROTO_DT_SIZE)
#undef FZ_PROTO_DT_SIZE
	}
	return 0;
}

const char *fz_proto_dtype_name(unsigned dtype)
{
	switch (dtype) {
#define FZ_PROTO_DT_NAME(e, v, sz, s)                                                              \
	case v:                                                                                    \
		return s;
		FZ_PROTO_FOREACH_DTYPE(FZ_PROTO_DT_NAME)
#undef FZ_PROTO_DT_NAME
	}
	return "?";
}

/* Every layer index a loaded model can answer with is below the special codes. */
_Static_assert(FZ_MODEL_MAX_LAYERS <= FZ_PROTO_EXIT_EXACT, "layer indices meet the exit codes");

/* The wire's code for each kind but FZ_ANSWERED_LAYER (whose code is the layer index). */
static const uint16_t fz_exit_codes[FZ_ANSWERED__COUNT] = {
	[FZ_ANSWERED_ERROR] = FZ_PROTO_EXIT_NONE,
	[FZ_ANSWERED_LAYER] = FZ_PROTO_EXIT_NONE,
	[FZ_ANSWERED_FULL] = FZ_PROTO_EXIT_FULL,
	[FZ_ANSWERED_EXACT] = FZ_PROTO_EXIT_EXACT,
	[FZ_ANSWERED_FLOW] = FZ_PROTO_EXIT_FLOW,
	[FZ_ANSWERED_NEAR] = FZ_PROTO_EXIT_NEAR,
	[FZ_ANSWERED_COALESCED] = FZ_PROTO_EXIT_COALESCED,
};

uint16_t fz_proto_exit_code(struct fz_answer_src a)
{
	if (a.kind == FZ_ANSWERED_LAYER)
		return a.layer >= 0 && a.layer < FZ_MODEL_MAX_LAYERS ? (uint16_t)a.layer
								     : FZ_PROTO_EXIT_NONE;
	return a.kind < FZ_ANSWERED__COUNT ? fz_exit_codes[a.kind] : FZ_PROTO_EXIT_NONE;
}

int fz_proto_exit_answer(uint16_t code, struct fz_answer_src *a)
{
	if (code < FZ_MODEL_MAX_LAYERS) {
		*a = fz_answer_layer(code);
		return 0;
	}
	for (unsigned k = 0; k < FZ_ANSWERED__COUNT; k++)
		if (k != FZ_ANSWERED_LAYER && fz_exit_codes[k] == code) {
			*a = fz_answer_of((enum fz_answered)k);
			return 0;
		}
	return -EINVAL;
}

const char *fz_proto_reason_name(unsigned reason)
{
	return reason < FZ_PROTO_R__COUNT ? fz_reason_names[reason] : "?";
}

const char *fz_proto_reason_desc(unsigned reason)
{
	return reason < FZ_PROTO_R__COUNT ? fz_reason_descs[reason] : "?";
}

int fz_proto_reason_lookup(const char *name)
{
	for (unsigned i = 0; i < FZ_PROTO_R__COUNT; i++)
		if (strcmp(fz_reason_names[i], name) == 0)
			return (int)i;
	return -ENOENT;
}

/* The 16-bit word (hi, lo) as it lies in memory, read natively; and back to host order. */
static inline uint16_t fz_native16(uint8_t hi, uint8_t lo)
{
	uint8_t b[2] = {hi, lo};
	uint16_t v;

	memcpy(&v, b, 2);
	return v;
}

static inline uint16_t fz_from_native16(uint16_t v)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return (uint16_t)(v >> 8 | v << 8);
#else
	return v;
#endif
}

uint32_t fz_proto_sum(const uint8_t *p, uint32_t len, uint32_t sum)
{
	/* Sum native-endian 32-bit words and swap the folded result once (RFC 1071 section 2(B):
	 * the one's-complement sum is byte-order independent). ~4x the byte-pair loop. */
	uint64_t s = 0;
	uint32_t w;
	uint16_t h;

	for (; len >= 4; p += 4, len -= 4) {
		memcpy(&w, p, 4);
		s += w;
	}
	if (len >= 2) {
		memcpy(&h, p, 2);
		s += h;
		p += 2;
		len -= 2;
	}
	if (len)
		s += fz_native16(p[0], 0);
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	s = fz_from_native16((uint16_t)s) + (uint64_t)sum;
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint32_t)s;
}

uint16_t fz_proto_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

uint16_t fz_proto_cksum(const void *buf, uint32_t len)
{
	return fz_proto_fold(fz_proto_sum(buf, len, 0));
}

/* Pseudo-header sum for UDP over IPv4 (addresses host order). */
static uint32_t fz_udp_pseudo(uint32_t src, uint32_t dst, uint16_t udp_len)
{
	return (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + FZ_IPPROTO_UDP +
	       udp_len;
}

void fz_proto_req_encode(const struct fz_proto_req *req, uint8_t *out)
{
	fz_put32(out + FZ_RQ_MAGIC, FZ_PROTO_REQ_MAGIC);
	out[FZ_RQ_VERSION] = FZ_PROTO_VERSION;
	out[FZ_RQ_KIND] = req->kind;
	out[FZ_RQ_DTYPE] = req->dtype;
	out[FZ_RQ_FLAGS] = req->flags;
	fz_put64(out + FZ_RQ_ID, req->req_id);
	fz_put16(out + FZ_RQ_C, req->c);
	fz_put16(out + FZ_RQ_H, req->h);
	fz_put16(out + FZ_RQ_W, req->w);
	fz_put16(out + FZ_RQ_FRAGLEN, req->frag_len);
	fz_put32(out + FZ_RQ_TOTAL, req->tensor_bytes);
	fz_put32(out + FZ_RQ_FRAGOFF, req->frag_off);
}

int fz_proto_req_decode(const uint8_t *buf, uint32_t len, struct fz_proto_req *req)
{
	if (len < FZ_PROTO_REQ_HDR_LEN || fz_get32(buf + FZ_RQ_MAGIC) != FZ_PROTO_REQ_MAGIC ||
	    buf[FZ_RQ_VERSION] != FZ_PROTO_VERSION)
		return -EINVAL;
	req->kind = buf[FZ_RQ_KIND];
	req->dtype = buf[FZ_RQ_DTYPE];
	req->flags = buf[FZ_RQ_FLAGS];
	req->req_id = fz_get64(buf + FZ_RQ_ID);
	req->c = fz_get16(buf + FZ_RQ_C);
	req->h = fz_get16(buf + FZ_RQ_H);
	req->w = fz_get16(buf + FZ_RQ_W);
	req->frag_len = fz_get16(buf + FZ_RQ_FRAGLEN);
	req->tensor_bytes = fz_get32(buf + FZ_RQ_TOTAL);
	req->frag_off = fz_get32(buf + FZ_RQ_FRAGOFF);
	return 0;
}

void fz_proto_resp_encode(const struct fz_proto_resp *resp, uint8_t *out)
{
	uint32_t conf;

	memcpy(&conf, &resp->confidence, sizeof(conf));
	fz_put32(out + FZ_RS_MAGIC, FZ_PROTO_RESP_MAGIC);
	out[FZ_RS_VERSION] = FZ_PROTO_VERSION;
	out[FZ_RS_KIND] = FZ_PROTO_KIND_RESPONSE;
	out[FZ_RS_STATUS] = resp->status;
	out[FZ_RS_FLAGS] = 0;
	fz_put64(out + FZ_RS_ID, resp->req_id);
	fz_put16(out + FZ_RS_LABEL, resp->label);
	fz_put16(out + FZ_RS_EXIT, resp->exit_layer);
	fz_put32(out + FZ_RS_CONF, conf);
	fz_put64(out + FZ_RS_TIME, resp->time_ns);
}

int fz_proto_resp_decode(const uint8_t *buf, uint32_t len, struct fz_proto_resp *resp)
{
	uint32_t conf;

	if (len < FZ_PROTO_RESP_LEN || fz_get32(buf + FZ_RS_MAGIC) != FZ_PROTO_RESP_MAGIC ||
	    buf[FZ_RS_VERSION] != FZ_PROTO_VERSION || buf[FZ_RS_KIND] != FZ_PROTO_KIND_RESPONSE)
		return -EINVAL;
	resp->status = buf[FZ_RS_STATUS];
	resp->req_id = fz_get64(buf + FZ_RS_ID);
	resp->label = fz_get16(buf + FZ_RS_LABEL);
	resp->exit_layer = fz_get16(buf + FZ_RS_EXIT);
	conf = fz_get32(buf + FZ_RS_CONF);
	memcpy(&resp->confidence, &conf, sizeof(conf));
	resp->time_ns = fz_get64(buf + FZ_RS_TIME);
	return 0;
}

static enum fz_proto_verdict fz_drop(struct fz_proto_pkt *pkt, enum fz_proto_reason reason)
{
	pkt->verdict = FZ_PROTO_V_DROP;
	pkt->reason = reason;
	return FZ_PROTO_V_DROP;
}

static enum fz_proto_verdict fz_error(struct fz_proto_pkt *pkt, enum fz_proto_reason reason)
{
	pkt->verdict = FZ_PROTO_V_ERROR;
	pkt->reason = reason;
	return FZ_PROTO_V_ERROR;
}

static bool fz_mac_is_bcast(const uint8_t *m)
{
	return (m[0] & m[1] & m[2] & m[3] & m[4] & m[5]) == 0xff;
}

/* A source we can send a unicast reply to. */
static bool fz_ip_src_ok(uint32_t ip)
{
	return ip != 0 && ip != 0xffffffffu && (ip >> 28) != 0xe && (ip >> 24) != 127;
}

static enum fz_proto_verdict fz_classify_arp(const struct fz_proto_cfg *cfg, const uint8_t *f,
					     uint32_t len, struct fz_proto_pkt *pkt)
{
	const uint8_t *a = f + FZ_ETH_HDR_LEN;

	if (len < FZ_ETH_HDR_LEN + FZ_ARP_LEN || fz_get16(a + FZ_ARP_HTYPE) != 1 ||
	    fz_get16(a + FZ_ARP_PTYPE) != FZ_ETHERTYPE_IPV4 || a[FZ_ARP_HLEN] != 6 ||
	    a[FZ_ARP_PLEN] != 4)
		return fz_drop(pkt, FZ_PROTO_R_ARP_MALFORMED);
	if (fz_get16(a + FZ_ARP_OP) != 1 || fz_get32(a + FZ_ARP_TPA) != cfg->ip ||
	    fz_get32(a + FZ_ARP_SPA) == cfg->ip)
		return fz_drop(pkt, FZ_PROTO_R_ARP_IGNORED);
	memcpy(pkt->reply.mac, a + FZ_ARP_SHA, 6);
	pkt->reply.ip = fz_get32(a + FZ_ARP_SPA);
	pkt->verdict = FZ_PROTO_V_ARP;
	return FZ_PROTO_V_ARP;
}

static enum fz_proto_verdict fz_classify_icmp(const uint8_t *icmp, uint32_t len,
					      struct fz_proto_pkt *pkt)
{
	if (len < 8 || fz_proto_cksum(icmp, len) != 0)
		return fz_drop(pkt, FZ_PROTO_R_ICMP_MALFORMED);
	if (icmp[0] != 8 || icmp[1] != 0)
		return fz_drop(pkt, FZ_PROTO_R_ICMP_IGNORED);
	pkt->verdict = FZ_PROTO_V_ICMP;
	return FZ_PROTO_V_ICMP;
}

/* The request header, from magic on; `u` is the UDP payload of `ulen` bytes. */
static enum fz_proto_verdict fz_classify_req(const struct fz_proto_cfg *cfg, const uint8_t *u,
					     uint32_t ulen, struct fz_proto_pkt *pkt)
{
	struct fz_proto_req *h = &pkt->hdr;
	unsigned esz;
	uint64_t want;

	if (ulen < FZ_PROTO_REQ_HDR_LEN)
		return fz_drop(pkt, FZ_PROTO_R_TRUNCATED_HEADER);
	if (fz_get32(u + FZ_RQ_MAGIC) != FZ_PROTO_REQ_MAGIC)
		return fz_drop(pkt, FZ_PROTO_R_BAD_MAGIC);
	if (u[FZ_RQ_VERSION] != FZ_PROTO_VERSION)
		return fz_drop(pkt, FZ_PROTO_R_BAD_VERSION);
	fz_proto_req_decode(u, ulen, h);
	if (h->kind != FZ_PROTO_KIND_REQUEST)
		return fz_drop(pkt, FZ_PROTO_R_BAD_KIND);
	/* From here the request id is known: failures are answered. */
	esz = fz_proto_dtype_size(h->dtype);
	if (esz == 0)
		return fz_error(pkt, FZ_PROTO_R_UNKNOWN_DTYPE);
	if (!(cfg->dtype_mask & (1u << h->dtype)))
		return fz_error(pkt, FZ_PROTO_R_UNSUPPORTED_DTYPE);
	if (h->tensor_bytes > cfg->max_tensor_bytes)
		return fz_error(pkt, FZ_PROTO_R_OVERSIZED_TENSOR);
	if (h->c != cfg->in_c || h->h != cfg->in_h || h->w != cfg->in_w)
		return fz_error(pkt, FZ_PROTO_R_DIMS_MISMATCH);
	want = (uint64_t)h->c * h->h * h->w * esz;
	if (want != h->tensor_bytes)
		return fz_error(pkt, FZ_PROTO_R_TENSOR_SIZE_MISMATCH);
	if (h->frag_len != ulen - FZ_PROTO_REQ_HDR_LEN)
		return fz_error(pkt, FZ_PROTO_R_PAYLOAD_LENGTH_MISMATCH);
	if (h->frag_len == 0 || (uint64_t)h->frag_off + h->frag_len > h->tensor_bytes)
		return fz_error(pkt, FZ_PROTO_R_BAD_FRAGMENT);
	pkt->frag = u + FZ_PROTO_REQ_HDR_LEN;
	pkt->verdict = FZ_PROTO_V_REQUEST;
	return FZ_PROTO_V_REQUEST;
}

/* The UDP checksum step: 0 to go on (pkt->udp_csum_partial may be set), or the drop. */
static int fz_check_udp_csum(const struct fz_proto_cfg *cfg, const uint8_t *l4, uint32_t ulen,
			     enum fz_proto_l4csum l4csum, struct fz_proto_pkt *pkt)
{
	uint16_t field = fz_get16(l4 + 6), partial;
	uint32_t s;

	if (field == 0) /* none sent (RFC 768) */
		return 0;
	if (l4csum == FZ_PROTO_L4CSUM_BAD)
		return -1;
	if (l4csum == FZ_PROTO_L4CSUM_GOOD || (cfg->flags & FZ_PROTO_F_NO_UDP_CSUM))
		return 0;
	s = fz_udp_pseudo(pkt->reply.ip, cfg->ip, (uint16_t)ulen);
	if (fz_proto_fold(fz_proto_sum(l4, ulen, s)) == 0)
		return 0;
	/* Linux with tx checksum offload (CHECKSUM_PARTIAL, udp4_hwcsum()) stores
	 * ~csum_tcpudp_magic(src, dst, len, UDP, 0): the pseudo-header sum folded, not
	 * complemented, for the device to finish. Over veth/tap/virtio nobody does. */
	partial = (uint16_t)~fz_proto_fold(s);
	if (field == partial) {
		pkt->udp_csum_partial = true;
		return 0;
	}
	return -1;
}

enum fz_proto_verdict fz_proto_classify(const struct fz_proto_cfg *cfg, const uint8_t *f,
					uint32_t len, struct fz_proto_pkt *pkt)
{
	return fz_proto_classify_hw(cfg, f, len, FZ_PROTO_L4CSUM_UNKNOWN, pkt);
}

enum fz_proto_verdict fz_proto_classify_hw(const struct fz_proto_cfg *cfg, const uint8_t *f,
					   uint32_t len, enum fz_proto_l4csum l4csum,
					   struct fz_proto_pkt *pkt)
{
	const uint8_t *ip, *l4;
	uint32_t ihl, totlen, l4len, ulen;
	uint16_t type, frag;

	memset(pkt, 0, sizeof(*pkt));
	if (len < FZ_ETH_HDR_LEN)
		return fz_drop(pkt, FZ_PROTO_R_TRUNCATED_FRAME);
	if (memcmp(f + FZ_ETH_DST, cfg->mac, 6) != 0 && !fz_mac_is_bcast(f + FZ_ETH_DST) &&
	    (!(cfg->flags & FZ_PROTO_F_PROMISC) || (f[FZ_ETH_DST] & 1)))
		return fz_drop(pkt, FZ_PROTO_R_WRONG_DST_MAC);
	type = fz_get16(f + FZ_ETH_TYPE);
	if (type == FZ_ETHERTYPE_ARP)
		return fz_classify_arp(cfg, f, len, pkt);
	if (type != FZ_ETHERTYPE_IPV4)
		return fz_drop(pkt, FZ_PROTO_R_NOT_IPV4);

	ip = f + FZ_ETH_HDR_LEN;
	if (len < FZ_ETH_HDR_LEN + FZ_IP4_HDR_LEN)
		return fz_drop(pkt, FZ_PROTO_R_IP_TRUNCATED);
	ihl = (uint32_t)(ip[FZ_IP_VIHL] & 0xf) * 4;
	if ((ip[FZ_IP_VIHL] >> 4) != 4 || ihl < FZ_IP4_HDR_LEN)
		return fz_drop(pkt, FZ_PROTO_R_IP_BAD_HEADER);
	totlen = fz_get16(ip + FZ_IP_TOTLEN);
	if (totlen < ihl || totlen > len - FZ_ETH_HDR_LEN)
		return fz_drop(pkt, FZ_PROTO_R_IP_BAD_LENGTH);
	if (fz_proto_cksum(ip, ihl) != 0)
		return fz_drop(pkt, FZ_PROTO_R_IP_BAD_CHECKSUM);
	frag = fz_get16(ip + FZ_IP_FRAG);
	if (frag & (FZ_IP_MF | FZ_IP_OFFMASK))
		return fz_drop(pkt, FZ_PROTO_R_IP_FRAGMENT);
	if (fz_get32(ip + FZ_IP_DST) != cfg->ip)
		return fz_drop(pkt, FZ_PROTO_R_WRONG_DST_IP);
	memcpy(pkt->reply.mac, f + FZ_ETH_SRC, 6);
	pkt->reply.ip = fz_get32(ip + FZ_IP_SRC);
	if (!fz_ip_src_ok(pkt->reply.ip) || (pkt->reply.mac[0] & 1))
		return fz_drop(pkt, FZ_PROTO_R_BAD_SRC);

	l4 = ip + ihl;
	l4len = totlen - ihl;
	if (ip[FZ_IP_PROTO] == FZ_IPPROTO_ICMP)
		return fz_classify_icmp(l4, l4len, pkt);
	if (ip[FZ_IP_PROTO] != FZ_IPPROTO_UDP)
		return fz_drop(pkt, FZ_PROTO_R_NOT_UDP);

	if (l4len < FZ_UDP_HDR_LEN)
		return fz_drop(pkt, FZ_PROTO_R_UDP_BAD_LENGTH);
	ulen = fz_get16(l4 + 4);
	if (ulen < FZ_UDP_HDR_LEN || ulen > l4len)
		return fz_drop(pkt, FZ_PROTO_R_UDP_BAD_LENGTH);
	if (fz_get16(l4 + 2) != cfg->port)
		return fz_drop(pkt, FZ_PROTO_R_WRONG_PORT);
	pkt->reply.port = fz_get16(l4);
	if (pkt->reply.port == 0)
		return fz_drop(pkt, FZ_PROTO_R_BAD_SRC);
	if (fz_check_udp_csum(cfg, l4, ulen, l4csum, pkt) < 0)
		return fz_drop(pkt, FZ_PROTO_R_UDP_BAD_CHECKSUM);
	return fz_classify_req(cfg, l4 + FZ_UDP_HDR_LEN, ulen - FZ_UDP_HDR_LEN, pkt);
}

int fz_proto_build_arp_reply(const struct fz_proto_cfg *cfg, const uint8_t *req, uint32_t len,
			     uint8_t *out, uint32_t cap)
{
	struct fz_proto_pkt pkt;
	uint8_t sha[6], spa[4];
	uint8_t *a = out + FZ_ETH_HDR_LEN;

	if (fz_proto_classify(cfg, req, len, &pkt) != FZ_PROTO_V_ARP)
		return -EINVAL;
	if (cap < FZ_PROTO_ARP_FRAME_LEN)
		return -ENOSPC;
	/* Read the requester's addresses before writing: out may be req. */
	memcpy(sha, req + FZ_ETH_HDR_LEN + FZ_ARP_SHA, 6);
	memcpy(spa, req + FZ_ETH_HDR_LEN + FZ_ARP_SPA, 4);
	memcpy(out + FZ_ETH_DST, sha, 6);
	memcpy(out + FZ_ETH_SRC, cfg->mac, 6);
	fz_put16(out + FZ_ETH_TYPE, FZ_ETHERTYPE_ARP);
	fz_put16(a + FZ_ARP_HTYPE, 1);
	fz_put16(a + FZ_ARP_PTYPE, FZ_ETHERTYPE_IPV4);
	a[FZ_ARP_HLEN] = 6;
	a[FZ_ARP_PLEN] = 4;
	fz_put16(a + FZ_ARP_OP, 2);
	memcpy(a + FZ_ARP_SHA, cfg->mac, 6);
	fz_put32(a + FZ_ARP_SPA, cfg->ip);
	memcpy(a + FZ_ARP_THA, sha, 6);
	memcpy(a + FZ_ARP_TPA, spa, 4);
	return FZ_PROTO_ARP_FRAME_LEN;
}

int fz_proto_build_icmp_reply(const struct fz_proto_cfg *cfg, const uint8_t *req, uint32_t len,
			      uint8_t *out, uint32_t cap)
{
	struct fz_proto_pkt pkt;
	uint32_t ihl, totlen, flen;
	uint8_t *ip, *icmp;

	if (fz_proto_classify(cfg, req, len, &pkt) != FZ_PROTO_V_ICMP)
		return -EINVAL;
	ihl = (uint32_t)(req[FZ_ETH_HDR_LEN] & 0xf) * 4;
	totlen = fz_get16(req + FZ_ETH_HDR_LEN + FZ_IP_TOTLEN);
	flen = FZ_ETH_HDR_LEN + totlen;
	if (cap < flen)
		return -ENOSPC;
	if (out != req)
		memmove(out, req, flen);
	ip = out + FZ_ETH_HDR_LEN;
	icmp = ip + ihl;
	memcpy(out + FZ_ETH_DST, pkt.reply.mac, 6);
	memcpy(out + FZ_ETH_SRC, cfg->mac, 6);
	fz_put32(ip + FZ_IP_DST, pkt.reply.ip);
	fz_put32(ip + FZ_IP_SRC, cfg->ip);
	ip[FZ_IP_TTL] = FZ_IP_TTL_OUT;
	fz_put16(ip + FZ_IP_CSUM, 0);
	fz_put16(ip + FZ_IP_CSUM, fz_proto_cksum(ip, ihl));
	icmp[0] = 0; /* echo reply */
	icmp[1] = 0;
	fz_put16(icmp + 2, 0);
	fz_put16(icmp + 2, fz_proto_cksum(icmp, totlen - ihl));
	return (int)flen;
}

/* Ethernet + IPv4 + UDP headers for `plen` bytes of UDP payload already at out + 42. */
static void fz_put_udp_frame(const uint8_t smac[6], uint32_t sip, uint16_t sport,
			     const struct fz_proto_addr *to, uint32_t plen, bool udp_csum,
			     uint8_t *out)
{
	uint8_t *ip = out + FZ_ETH_HDR_LEN;
	uint8_t *udp = ip + FZ_IP4_HDR_LEN;
	uint16_t ulen = (uint16_t)(FZ_UDP_HDR_LEN + plen);

	memcpy(out + FZ_ETH_DST, to->mac, 6);
	memcpy(out + FZ_ETH_SRC, smac, 6);
	fz_put16(out + FZ_ETH_TYPE, FZ_ETHERTYPE_IPV4);
	ip[FZ_IP_VIHL] = 0x45;
	ip[FZ_IP_TOS] = 0;
	fz_put16(ip + FZ_IP_TOTLEN, (uint16_t)(FZ_IP4_HDR_LEN + ulen));
	fz_put16(ip + FZ_IP_ID, 0); /* atomic datagram (DF, RFC 6864) */
	fz_put16(ip + FZ_IP_FRAG, FZ_IP_DF);
	ip[FZ_IP_TTL] = FZ_IP_TTL_OUT;
	ip[FZ_IP_PROTO] = FZ_IPPROTO_UDP;
	fz_put16(ip + FZ_IP_CSUM, 0);
	fz_put32(ip + FZ_IP_SRC, sip);
	fz_put32(ip + FZ_IP_DST, to->ip);
	fz_put16(ip + FZ_IP_CSUM, fz_proto_cksum(ip, FZ_IP4_HDR_LEN));
	fz_put16(udp, sport);
	fz_put16(udp + 2, to->port);
	fz_put16(udp + 4, ulen);
	fz_put16(udp + 6, 0);
	if (udp_csum) {
		uint16_t c = fz_proto_fold(fz_proto_sum(udp, ulen, fz_udp_pseudo(sip, to->ip, ulen)));

		fz_put16(udp + 6, c == 0 ? 0xffff : c);
	}
}

int fz_proto_build_response(const struct fz_proto_cfg *cfg, const struct fz_proto_addr *to,
			    const struct fz_proto_resp *resp, uint8_t *out, uint32_t cap)
{
	if (cap < FZ_PROTO_RESP_FRAME_LEN)
		return -ENOSPC;
	fz_proto_resp_encode(resp, out + FZ_PROTO_REQ_OFF);
	fz_put_udp_frame(cfg->mac, cfg->ip, cfg->port, to, FZ_PROTO_RESP_LEN,
			 !(cfg->flags & FZ_PROTO_F_NO_UDP_CSUM_TX), out);
	return FZ_PROTO_RESP_FRAME_LEN;
}

int fz_proto_build_error(const struct fz_proto_cfg *cfg, const struct fz_proto_addr *to,
			 uint64_t req_id, enum fz_proto_reason reason, uint64_t time_ns,
			 uint8_t *out, uint32_t cap)
{
	struct fz_proto_resp r = {
		.req_id = req_id,
		.status = (uint8_t)reason,
		.label = FZ_PROTO_LABEL_NONE,
		.exit_layer = FZ_PROTO_EXIT_NONE,
		.confidence = 0.0f,
		.time_ns = time_ns,
	};

	return fz_proto_build_response(cfg, to, &r, out, cap);
}

int fz_proto_build_request(const struct fz_proto_addr *from, const struct fz_proto_addr *to,
			   const struct fz_proto_req *req, const void *frag, uint32_t frag_bytes,
			   uint8_t *out, uint32_t cap)
{
	uint32_t plen = FZ_PROTO_REQ_HDR_LEN + frag_bytes;

	if (plen > 0xffff - FZ_IP4_HDR_LEN - FZ_UDP_HDR_LEN || cap < FZ_PROTO_REQ_OFF + plen)
		return -ENOSPC;
	fz_proto_req_encode(req, out + FZ_PROTO_REQ_OFF);
	if (frag_bytes)
		memcpy(out + FZ_PROTO_REQ_OFF + FZ_PROTO_REQ_HDR_LEN, frag, frag_bytes);
	fz_put_udp_frame(from->mac, from->ip, from->port, to, plen, true, out);
	return (int)(FZ_PROTO_REQ_OFF + plen);
}
