/* Private helpers of the wire protocol: unaligned big-endian loads and stores, header offsets. */
#ifndef FZ_PROTO_PVT_H
#define FZ_PROTO_PVT_H

#include <stdint.h>

/* Frame data comes at any alignment (the request header sits at frame offset 42), so every
 * multi-byte field goes through these; compilers turn them into a load and a bswap. */
static inline uint16_t fz_get16(const uint8_t *p)
{
	return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}

static inline uint32_t fz_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t fz_get64(const uint8_t *p)
{
	return (uint64_t)fz_get32(p) << 32 | fz_get32(p + 4);
}

static inline void fz_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void fz_put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline void fz_put64(uint8_t *p, uint64_t v)
{
	fz_put32(p, (uint32_t)(v >> 32));
	fz_put32(p + 4, (uint32_t)v);
}

#define FZ_ETHERTYPE_IPV4 0x0800
#define FZ_ETHERTYPE_ARP 0x0806
#define FZ_IPPROTO_ICMP 1
#define FZ_IPPROTO_UDP 17

/* Ethernet */
#define FZ_ETH_DST 0
#define FZ_ETH_SRC 6
#define FZ_ETH_TYPE 12
/* IPv4, from the IP header start */
#define FZ_IP_VIHL 0
#define FZ_IP_TOS 1
#define FZ_IP_TOTLEN 2
#define FZ_IP_ID 4
#define FZ_IP_FRAG 6
#define FZ_IP_TTL 8
#define FZ_IP_PROTO 9
#define FZ_IP_CSUM 10
#define FZ_IP_SRC 12
#define FZ_IP_DST 16
#define FZ_IP_DF 0x4000
#define FZ_IP_MF 0x2000
#define FZ_IP_OFFMASK 0x1fff
/* ARP, from the ARP header start */
#define FZ_ARP_HTYPE 0
#define FZ_ARP_PTYPE 2
#define FZ_ARP_HLEN 4
#define FZ_ARP_PLEN 5
#define FZ_ARP_OP 6
#define FZ_ARP_SHA 8
#define FZ_ARP_SPA 14
#define FZ_ARP_THA 18
#define FZ_ARP_TPA 24
/* request header, from the UDP payload start */
#define FZ_RQ_MAGIC 0
#define FZ_RQ_VERSION 4
#define FZ_RQ_KIND 5
#define FZ_RQ_DTYPE 6
#define FZ_RQ_FLAGS 7
#define FZ_RQ_ID 8
#define FZ_RQ_C 16
#define FZ_RQ_H 18
#define FZ_RQ_W 20
#define FZ_RQ_FRAGLEN 22
#define FZ_RQ_TOTAL 24
#define FZ_RQ_FRAGOFF 28
/* response, from the UDP payload start */
#define FZ_RS_MAGIC 0
#define FZ_RS_VERSION 4
#define FZ_RS_KIND 5
#define FZ_RS_STATUS 6
#define FZ_RS_FLAGS 7
#define FZ_RS_ID 8
#define FZ_RS_LABEL 16
#define FZ_RS_EXIT 18
#define FZ_RS_CONF 20
#define FZ_RS_TIME 24

#define FZ_IP_TTL_OUT 64

/* Unfolded one's-complement sum of `len` bytes as big-endian 16-bit words, added to `sum`. */
uint32_t fz_proto_sum(const uint8_t *p, uint32_t len, uint32_t sum);
/* Fold a sum to 16 bits and complement it. */
uint16_t fz_proto_fold(uint32_t sum);

#endif /* FZ_PROTO_PVT_H */
