/* Freeze wire protocol: frame classification, request reassembly and reply builders (no DPDK). */
#ifndef FZ_PROTO_H
#define FZ_PROTO_H

/*
 * Everything here works on plain byte buffers (an rte_pktmbuf_mtod() pointer and data_len will
 * do), allocates nothing per packet and never aborts. Addresses and ports in the structs below
 * are in host byte order; the frames are in network byte order. docs/protocol.md has the byte
 * layouts.
 *
 * RX lcore, per frame:
 *	struct fz_proto_pkt p;
 *	switch (fz_proto_classify(&cfg, data, len, &p)) {
 *	case FZ_PROTO_V_ARP:     n = fz_proto_build_arp_reply(&cfg, data, len, data, cap); ...
 *	case FZ_PROTO_V_ICMP:    n = fz_proto_build_icmp_reply(&cfg, data, len, data, cap); ...
 *	case FZ_PROTO_V_REQUEST: fz_reasm_add(ra, &p, now, &done) -> STORED / COMPLETE / ERROR / DROP
 *	case FZ_PROTO_V_ERROR:   if (fz_reasm_abort(ra, &p, now) == -EALREADY) drops[LATE_FRAGMENT]++;
 *	                         else drops[p.reason]++, answer p.reply / p.hdr.req_id with p.reason
 *	case FZ_PROTO_V_DROP:    drops[p.reason]++;
 *	}
 * and every few milliseconds fz_reasm_expire() to answer timed-out requests.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fz_answer.h"

#define FZ_PROTO_VERSION 1
#define FZ_PROTO_REQ_MAGIC 0x465a5251u  /* "FZRQ" */
#define FZ_PROTO_RESP_MAGIC 0x465a5253u /* "FZRS" */
#define FZ_PROTO_KIND_REQUEST 1
#define FZ_PROTO_KIND_RESPONSE 2
#define FZ_PROTO_REQ_HDR_LEN 32
#define FZ_PROTO_RESP_LEN 32
#define FZ_PROTO_DEFAULT_PORT 7878

#define FZ_ETH_HDR_LEN 14
#define FZ_IP4_HDR_LEN 20 /* without options; we send none */
#define FZ_UDP_HDR_LEN 8
#define FZ_ARP_LEN 28
#define FZ_PROTO_REQ_OFF (FZ_ETH_HDR_LEN + FZ_IP4_HDR_LEN + FZ_UDP_HDR_LEN) /* 42 */
#define FZ_PROTO_RESP_FRAME_LEN (FZ_PROTO_REQ_OFF + FZ_PROTO_RESP_LEN)     /* 74 */
#define FZ_PROTO_ARP_FRAME_LEN (FZ_ETH_HDR_LEN + FZ_ARP_LEN)               /* 42 */
/* Largest fragment payload in one 1500-byte-MTU datagram: 1500 - 20 - 8 - 32. */
#define FZ_PROTO_MTU_FRAG 1440

/* Response exit_layer values that are not a model layer index: the wire's spelling of struct
 * fz_answer_src (config/fz_answer.h), mapped by fz_proto_exit_code alone. A layer index is
 * below FZ_PROTO_EXIT_EXACT (the model loader's FZ_MODEL_MAX_LAYERS is; proto.c asserts it). */
#define FZ_PROTO_EXIT_FULL 0xfffe /* the full model answered (no cache hit) */
#define FZ_PROTO_EXIT_NONE 0xffff /* no answer: an error response */
/* answered before any layer ran, by the front tiers (docs/architecture.md) */
#define FZ_PROTO_EXIT_EXACT 0xfff0     /* an exact repeat of an answered request */
#define FZ_PROTO_EXIT_FLOW 0xfff1      /* near the last request of the same source */
#define FZ_PROTO_EXIT_NEAR 0xfff2      /* near an answered input */
#define FZ_PROTO_EXIT_COALESCED 0xfff3 /* waited for a request alike in flight */
#define FZ_PROTO_LABEL_NONE 0xffff

/* Tensor element types on the wire (request byte 6). */
#define FZ_PROTO_FOREACH_DTYPE(_)                                                                  \
	_(U8, 1, 1, "u8")                                                                          \
	_(F32, 2, 4, "f32")

enum fz_proto_dtype {
#define FZ_PROTO_DT_ENUM(e, v, sz, s) FZ_PROTO_DT_##e = v,
	FZ_PROTO_FOREACH_DTYPE(FZ_PROTO_DT_ENUM)
#undef FZ_PROTO_DT_ENUM
};

/*
 * Drop and error reasons, and the response status on the wire: ONE list, so a counter can never
 * lack a name and a status code can never lack a counter. The value is the wire status byte, so
 * the list is append-only once shipped. Columns: symbol, name (counters, telemetry, tools),
 * description. "answer" reasons are sent back as error responses when the request id is known
 * (fz_proto_classify() says so with FZ_PROTO_V_ERROR); the others are only counted.
 * tools/fzgen.py keeps a copy of this list (checked by the fzgen-header test).
 */
#define FZ_PROTO_FOREACH_REASON(_)                                                                 \
	_(OK, "ok", "answered")                                                                    \
	/* frame level: counted only */                                                            \
	_(TRUNCATED_FRAME, "truncated_frame", "frame shorter than an Ethernet header")            \
	_(WRONG_DST_MAC, "wrong_dst_mac", "Ethernet destination is neither us nor broadcast")     \
	_(NOT_IPV4, "not_ipv4", "EtherType is neither IPv4 nor ARP")                               \
	_(ARP_MALFORMED, "arp_malformed", "ARP packet too short or not Ethernet/IPv4")            \
	_(ARP_IGNORED, "arp_ignored", "ARP that is not a request for our address")                \
	_(IP_TRUNCATED, "ip_truncated", "frame too short for the IPv4 header")                    \
	_(IP_BAD_HEADER, "ip_bad_header", "IPv4 version is not 4 or IHL < 5")                     \
	_(IP_BAD_LENGTH, "ip_bad_length", "IPv4 total length beyond the frame or below IHL")      \
	_(IP_BAD_CHECKSUM, "ip_bad_checksum", "IPv4 header checksum is wrong")                    \
	_(IP_FRAGMENT, "ip_fragment", "IPv4 fragment (MF set or offset != 0)")                    \
	_(WRONG_DST_IP, "wrong_dst_ip", "IPv4 destination is not our address")                    \
	_(BAD_SRC, "bad_src", "source address or port we cannot answer")                          \
	_(NOT_UDP, "not_udp", "IPv4 protocol is neither UDP nor ICMP")                             \
	_(ICMP_MALFORMED, "icmp_malformed", "ICMP message too short or bad checksum")             \
	_(ICMP_IGNORED, "icmp_ignored", "ICMP that is not an echo request")                       \
	_(UDP_BAD_LENGTH, "udp_bad_length", "UDP length below 8 or beyond the IPv4 payload")      \
	_(UDP_BAD_CHECKSUM, "udp_bad_checksum", "UDP checksum is wrong")                          \
	_(WRONG_PORT, "wrong_port", "UDP destination port is not ours")                           \
	_(TRUNCATED_HEADER, "truncated_header", "UDP payload shorter than the request header")    \
	_(BAD_MAGIC, "bad_magic", "request magic is not FZRQ")                                     \
	_(BAD_VERSION, "bad_version", "request version is not ours")                               \
	_(BAD_KIND, "bad_kind", "kind byte is not a request (never answered: no reflections)")    \
	/* request level: answered with an error response */                                      \
	_(UNKNOWN_DTYPE, "unknown_dtype", "dtype is not one the protocol defines")                \
	_(UNSUPPORTED_DTYPE, "unsupported_dtype", "dtype is defined but this appliance refuses it") \
	_(OVERSIZED_TENSOR, "oversized_tensor", "tensor bytes above the appliance's maximum")     \
	_(DIMS_MISMATCH, "dims_mismatch", "C, H, W differ from the model input")                  \
	_(TENSOR_SIZE_MISMATCH, "tensor_size_mismatch", "tensor bytes != C * H * W * dtype size") \
	_(PAYLOAD_LENGTH_MISMATCH, "payload_length_mismatch",                                      \
	  "fragment length != bytes after the header in the datagram")                             \
	_(BAD_FRAGMENT, "bad_fragment", "empty fragment or offset + length beyond the tensor")    \
	_(DUPLICATE_FRAGMENT, "duplicate_fragment", "same fragment received twice")               \
	_(OVERLAPPING_FRAGMENT, "overlapping_fragment", "fragment overlaps another one")          \
	_(FRAGMENT_MISMATCH, "fragment_mismatch", "dtype, dims or size differ between fragments") \
	_(TOO_MANY_FRAGMENTS, "too_many_fragments", "more fragments than a table entry tracks")   \
	_(REASSEMBLY_TIMEOUT, "reassembly_timeout", "fragments missing when the timeout expired") \
	_(REASSEMBLY_TABLE_FULL, "reassembly_table_full", "no free reassembly entry")             \
	/* reassembly, counted only */                                                             \
	_(LATE_FRAGMENT, "late_fragment", "fragment of a request already answered")               \
	/* runtime (pipeline/): statuses the appliance may answer with */                          \
	_(OVERLOADED, "overloaded", "no room in a ring or pool for the request")                  \
	_(SHUTTING_DOWN, "shutting_down", "the appliance is stopping")                            \
	_(INTERNAL, "internal", "internal error while serving the request")                     \
	_(NONFINITE_INPUT, "nonfinite_input", "an f32 tensor element is NaN or infinite")

enum fz_proto_reason {
#define FZ_PROTO_R_ENUM(e, s, d) FZ_PROTO_R_##e,
	FZ_PROTO_FOREACH_REASON(FZ_PROTO_R_ENUM)
#undef FZ_PROTO_R_ENUM
	FZ_PROTO_R__COUNT
};

/* What fz_proto_classify() found. */
enum fz_proto_verdict {
	FZ_PROTO_V_DROP,    /* count pkt.reason, send nothing */
	FZ_PROTO_V_ERROR,   /* count pkt.reason, answer pkt.reply / pkt.hdr.req_id with status reason */
	FZ_PROTO_V_ARP,     /* ARP request for our IPv4: fz_proto_build_arp_reply() */
	FZ_PROTO_V_ICMP,    /* ICMP echo request to us: fz_proto_build_icmp_reply() */
	FZ_PROTO_V_REQUEST, /* valid request fragment: fz_reasm_add() */
};

#define FZ_PROTO_F_PROMISC 0x1u       /* accept any unicast Ethernet destination */
#define FZ_PROTO_F_NO_UDP_CSUM 0x2u   /* do not verify UDP checksums (trust the sender) */
#define FZ_PROTO_F_NO_UDP_CSUM_TX 0x4u /* send responses with UDP checksum 0 */

/* What the NIC found of one frame's L4 checksum (DPDK: mbuf ol_flags RTE_MBUF_F_RX_L4_CKSUM_*). */
enum fz_proto_l4csum {
	FZ_PROTO_L4CSUM_UNKNOWN, /* nothing: verify it in software */
	FZ_PROTO_L4CSUM_GOOD,    /* the datagram is intact (GOOD, or NONE: intact, field unfinished) */
	FZ_PROTO_L4CSUM_BAD,     /* the checksum is wrong: udp_bad_checksum */
};

/* The appliance's side: addresses and what its model accepts. Filled once at start-up. */
struct fz_proto_cfg {
	uint8_t mac[6];
	uint32_t ip;   /* host order */
	uint16_t port; /* host order */
	uint16_t in_c, in_h, in_w;  /* model input dims; requests must match exactly */
	uint32_t dtype_mask;        /* accepted dtypes: bit (1u << FZ_PROTO_DT_*) */
	uint32_t max_tensor_bytes;  /* larger requests get oversized_tensor */
	uint32_t flags;             /* FZ_PROTO_F_* */
};

/* Where a response goes: the request's Ethernet/IPv4/UDP source. Host order. */
struct fz_proto_addr {
	uint8_t mac[6];
	uint16_t port;
	uint32_t ip;
};

/* A request header (one per datagram), host order. */
struct fz_proto_req {
	uint64_t req_id;
	uint8_t kind;  /* FZ_PROTO_KIND_REQUEST */
	uint8_t dtype; /* FZ_PROTO_DT_* */
	uint8_t flags; /* reserved: sent 0, ignored */
	uint16_t c, h, w;
	uint32_t tensor_bytes; /* whole tensor */
	uint32_t frag_off;     /* this fragment's first byte within the tensor */
	uint16_t frag_len;     /* bytes after the header in this datagram */
};

/* A response (one datagram), host order. */
struct fz_proto_resp {
	uint64_t req_id;
	uint8_t status;      /* enum fz_proto_reason; FZ_PROTO_R_OK for an answer */
	uint16_t label;      /* FZ_PROTO_LABEL_NONE on errors */
	uint16_t exit_layer; /* model layer index whose cache answered, or FZ_PROTO_EXIT_* */
	float confidence;    /* 0 on errors */
	uint64_t time_ns;    /* from RX to TX inside the appliance */
};

/* fz_proto_classify()'s findings. Fields are valid as far as parsing got (see verdict). */
struct fz_proto_pkt {
	enum fz_proto_verdict verdict;
	enum fz_proto_reason reason; /* DROP, ERROR; FZ_PROTO_R_OK otherwise */
	struct fz_proto_addr reply;  /* REQUEST, ERROR (and ICMP: the pinger) */
	struct fz_proto_req hdr;     /* REQUEST, ERROR (req_id at least) */
	const uint8_t *frag;         /* REQUEST: hdr.frag_len tensor bytes inside the frame */
	/* The UDP checksum was left unfinished by the sender (the pseudo-header sum, what Linux
	 * puts there for a device with tx checksum offload: veth, tap, virtio) and accepted
	 * unverified. Set as soon as the checksum step passed, whatever the verdict. */
	bool udp_csum_partial;
};

/* Bytes per element of a dtype, 0 when the protocol does not define it. */
unsigned fz_proto_dtype_size(unsigned dtype);

/* Name of a dtype ("u8"), "?" when unknown. */
const char *fz_proto_dtype_name(unsigned dtype);

/* The response's exit_layer for an answer from `a` (FZ_PROTO_EXIT_NONE for an error, or for a
 * layer outside 0..FZ_MODEL_MAX_LAYERS-1, which no loaded model has). */
uint16_t fz_proto_exit_code(struct fz_answer_src a);
/* The answer a response's exit_layer says: 0, or -EINVAL for a code no answer maps to. */
int fz_proto_exit_answer(uint16_t code, struct fz_answer_src *a);

/* Name of a reason / status ("dims_mismatch"); "?" when out of range. */
const char *fz_proto_reason_name(unsigned reason);

/* One-line description of a reason; "?" when out of range. */
const char *fz_proto_reason_desc(unsigned reason);

/* Reason with this name, or -ENOENT. */
int fz_proto_reason_lookup(const char *name);

/*
 * Classify one Ethernet frame of `len` bytes (no FCS) addressed to the appliance `cfg`.
 * Reads only; never writes the frame. Fills *pkt and returns pkt->verdict (enum fz_proto_verdict).
 * A UDP request is checked in this order: Ethernet destination, EtherType, IPv4 version/IHL,
 * total length vs frame, header checksum, fragment bits, destination IP, source, protocol, UDP
 * length, port, checksum (when non-zero), request header length, magic, version, kind; from here
 * the request id is known and failures are ERROR: dtype, size limit, dims, tensor size,
 * payload length, fragment range.
 * A non-zero UDP checksum that fails verification but equals the folded pseudo-header sum is an
 * unfinished one (Linux CHECKSUM_PARTIAL: the sender's device was to complete it): accepted,
 * with pkt->udp_csum_partial set.
 */
enum fz_proto_verdict fz_proto_classify(const struct fz_proto_cfg *cfg, const uint8_t *frame,
					uint32_t len, struct fz_proto_pkt *pkt);

/*
 * fz_proto_classify() with the NIC's verdict on the frame's L4 checksum: GOOD skips the
 * software check, BAD drops a datagram to us as udp_bad_checksum, UNKNOWN checks in software.
 * A zero checksum (none sent) is accepted whatever the NIC says.
 */
enum fz_proto_verdict fz_proto_classify_hw(const struct fz_proto_cfg *cfg, const uint8_t *frame,
					   uint32_t len, enum fz_proto_l4csum l4csum,
					   struct fz_proto_pkt *pkt);

/*
 * Build the ARP reply to the ARP request `req` (classified FZ_PROTO_V_ARP) into `out`, which may
 * be `req` itself (in place). Returns the frame length (FZ_PROTO_ARP_FRAME_LEN, unpadded), or
 * -EINVAL (not an ARP request for cfg->ip), -ENOSPC (cap too small).
 */
int fz_proto_build_arp_reply(const struct fz_proto_cfg *cfg, const uint8_t *req, uint32_t len,
			     uint8_t *out, uint32_t cap);

/*
 * Build the ICMP echo reply to the echo request `req` (classified FZ_PROTO_V_ICMP) into `out`,
 * which may be `req` (in place). Same IP options and payload, TTL 64, fresh checksums; Ethernet
 * padding dropped. Returns the frame length, or -EINVAL (not an echo request to cfg->ip),
 * -ENOSPC (cap too small).
 */
int fz_proto_build_icmp_reply(const struct fz_proto_cfg *cfg, const uint8_t *req, uint32_t len,
			      uint8_t *out, uint32_t cap);

/*
 * Build the response frame (Ethernet + IPv4 + UDP + response, checksums filled) from cfg to `to`.
 * Returns FZ_PROTO_RESP_FRAME_LEN, or -ENOSPC when cap is smaller.
 */
int fz_proto_build_response(const struct fz_proto_cfg *cfg, const struct fz_proto_addr *to,
			    const struct fz_proto_resp *resp, uint8_t *out, uint32_t cap);

/* Shorthand: an error response (status `reason`, no label, no exit layer, time_ns). */
int fz_proto_build_error(const struct fz_proto_cfg *cfg, const struct fz_proto_addr *to,
			 uint64_t req_id, enum fz_proto_reason reason, uint64_t time_ns,
			 uint8_t *out, uint32_t cap);

/*
 * Build a request datagram frame from `from` to `to` (tests, fuzz seeds, load generators):
 * header `req` (frag_len taken as given, so it may lie) followed by `frag_bytes` bytes of
 * `frag`. Returns the frame length, or -ENOSPC.
 */
int fz_proto_build_request(const struct fz_proto_addr *from, const struct fz_proto_addr *to,
			   const struct fz_proto_req *req, const void *frag, uint32_t frag_bytes,
			   uint8_t *out, uint32_t cap);

/* Encode / decode the 32-byte request header (UDP payload start). decode: 0 or -EINVAL (short,
 * bad magic, bad version). */
void fz_proto_req_encode(const struct fz_proto_req *req, uint8_t *out);
int fz_proto_req_decode(const uint8_t *buf, uint32_t len, struct fz_proto_req *req);

/* Encode / decode the 32-byte response (UDP payload). decode: 0 or -EINVAL (short, bad magic,
 * bad version, not a response). */
void fz_proto_resp_encode(const struct fz_proto_resp *resp, uint8_t *out);
int fz_proto_resp_decode(const uint8_t *buf, uint32_t len, struct fz_proto_resp *resp);

/* Internet checksum (RFC 1071) of `len` bytes, folded and complemented, host order. */
uint16_t fz_proto_cksum(const void *buf, uint32_t len);

/*
 * ---- Reassembly (pipeline/proto/reasm.c) ----------------------------------------------------------
 * A bounded table of requests whose tensor comes in several fragments, keyed by (source IP,
 * source port, request id). Fixed capacity, all memory allocated at creation, single-threaded
 * (owned by the RX lcore). Each entry tracks the byte ranges it got: a repeat of one is
 * duplicate_fragment, a partial cover overlapping_fragment; either answers the request with that
 * error once, and the entry stays as a tombstone so later fragments of it are dropped as
 * late_fragment instead of starting a second request. Completed and timed-out requests leave the
 * same tombstone. A request's deadline is its first fragment's arrival + timeout; a tombstone's
 * is its answer + timeout.
 * One answer per request: a tombstone keeps only the key (no tensor storage), the table has
 * room for `tombstones` of them beyond `capacity`, and none is evicted before its deadline. A
 * request that finds every storage slot busy is answered reassembly_table_full once, by
 * whichever of its fragments came first, and leaves a tombstone. Only when even the tombstones'
 * room is used up is a fragment dropped unanswered (counted: stats.unanswered), so that no
 * request is ever answered twice.
 */
/* Default tombstone room: per storage slot, and at least enough for every request a busy
 * appliance answers in one timeout (16384 x ~70 bytes). */
#define FZ_REASM_TOMBS_PER_ENTRY 4
#define FZ_REASM_TOMBS_MIN 16384
struct fz_reasm;

struct fz_reasm_params {
	uint32_t capacity;         /* concurrent requests (entries), >= 1 */
	uint32_t max_tensor_bytes; /* bytes of storage per entry, >= 1 */
	uint16_t max_frags;        /* fragments tracked per request, >= 1 (e.g. 64) */
	uint64_t timeout_ns;       /* first fragment to complete, > 0 */
	/* answered requests remembered beyond capacity (key only, no storage); 0: the default,
	 * FZ_REASM_TOMBS_PER_ENTRY * capacity and at least FZ_REASM_TOMBS_MIN */
	uint32_t tombstones;
};

/* A whole request (COMPLETE) or a timed-out / failed one (ERROR, expire). */
struct fz_reasm_req {
	struct fz_proto_addr reply;
	uint64_t req_id;
	enum fz_proto_reason reason; /* FZ_PROTO_R_OK when complete */
	uint8_t dtype;
	uint16_t c, h, w;
	uint32_t len;        /* tensor bytes */
	const uint8_t *data; /* COMPLETE: len contiguous bytes, valid until fz_reasm_release() */
	uint32_t slot;       /* for fz_reasm_release(); UINT32_MAX when data points into the frame */
	uint32_t gen;
};

enum fz_reasm_result {
	FZ_REASM_STORED,   /* kept; more fragments to come */
	FZ_REASM_COMPLETE, /* *out is the whole request: copy out->data, then fz_reasm_release() */
	FZ_REASM_ERROR,    /* answer out->reply / out->req_id with out->reason (once per request) */
	FZ_REASM_DROP,     /* count out->reason, send nothing */
};

struct fz_reasm_stats {
	uint32_t live;       /* entries collecting fragments (or complete, not yet released) */
	uint32_t tombstones; /* answered entries kept until their deadline */
	uint32_t free;       /* storage slots free */
	uint32_t peak_live;
	uint64_t completed, expired;
	uint64_t unanswered; /* refused fragments not answered: no room to remember the answer */
};

/*
 * Create a table. Returns NULL with errno EINVAL (a zero parameter, or capacity * storage too
 * large) or ENOMEM.
 */
struct fz_reasm *fz_reasm_create(const struct fz_reasm_params *p);

void fz_reasm_free(struct fz_reasm *r);

/*
 * Add the fragment that fz_proto_classify() returned as FZ_PROTO_V_REQUEST at time `now` (ns,
 * monotonic). A request in one datagram (offset 0, whole tensor) with no entry under its key
 * completes at once with out->data pointing into the frame (nothing stored). Returns:
 *   FZ_REASM_STORED    fragment copied into its entry;
 *   FZ_REASM_COMPLETE  *out describes the whole tensor;
 *   FZ_REASM_ERROR     oversized_tensor, bad_fragment, duplicate_fragment,
 *                      overlapping_fragment, fragment_mismatch, too_many_fragments, or
 *                      reassembly_table_full (every storage slot busy) for the first fragment
 *                      of a request refused; the request's key is kept as a tombstone, so its
 *                      other fragments are DROP late_fragment and it is answered once;
 *   FZ_REASM_DROP      late_fragment (its request was answered), or out->reason refused
 *                      with no room left to remember the answer (stats.unanswered).
 * Never allocates, never evicts a tombstone.
 */
enum fz_reasm_result fz_reasm_add(struct fz_reasm *r, const struct fz_proto_pkt *pkt,
				  uint64_t now, struct fz_reasm_req *out);

/*
 * Call before answering a fragment that fz_proto_classify() refused with FZ_PROTO_V_ERROR: the
 * error is recorded under the request's key as a tombstone, so the request is answered once
 * however many of its fragments are refused, and its good fragments, before or after, are dropped
 * as late_fragment instead of timing out into a second response. Needs no storage slot; never
 * displaces a live entry or a tombstone. Returns:
 *   0          answer the error (first refusal of this request; a live entry was closed, or a
 *              whole request in one datagram, which needs no record);
 *   -EALREADY  this request was already answered: count late_fragment, send nothing;
 *   -ENOSPC    no room to remember the answer (stats.unanswered): count the reason, send
 *              nothing (another fragment of it may be answered later, and only once);
 *   -EINVAL    pkt has no usable key (source port 0): answer anyway.
 */
int fz_reasm_abort(struct fz_reasm *r, const struct fz_proto_pkt *pkt, uint64_t now);

/* Done with a COMPLETE request's data: its entry becomes a tombstone. Stale or frame-backed
 * `req`s are ignored. */
void fz_reasm_release(struct fz_reasm *r, const struct fz_reasm_req *req);

/*
 * Expire entries whose deadline is <= now. Requests still collecting fragments are written to
 * out[] (reason reassembly_timeout) for error responses and leave a tombstone (none when now is
 * UINT64_MAX: a stop); tombstones go silently. Returns the number written (<= n); call again
 * while it returns n.
 */
unsigned fz_reasm_expire(struct fz_reasm *r, uint64_t now, struct fz_reasm_req *out, unsigned n);

/* Earliest deadline in the table, or UINT64_MAX when empty (for a poll timer). */
uint64_t fz_reasm_next_deadline(const struct fz_reasm *r);

void fz_reasm_get_stats(const struct fz_reasm *r, struct fz_reasm_stats *st);

#endif /* FZ_PROTO_H */
