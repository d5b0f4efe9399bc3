/* libFuzzer target: frame sequences through fz_proto_classify, the reply builders and fz_reasm. */
/*
 * Input: records [ctl u8][len u16 big-endian][len bytes: one Ethernet frame], to the end.
 * ctl bit 0 fixes the IPv4 header checksum and bit 1 zeroes the UDP checksum before classifying
 * (so mutations get past the checksums), bit 2 skips fz_reasm_release() of a completed request,
 * bit 3 skips fz_reasm_abort() after an answered classifier error, bits 4-7 advance the clock by
 * (ctl >> 4)^3 ms. Every frame is copied to a heap buffer of exactly its length so reads past it
 * trip ASan. Addresses are fzgen.py's defaults, so its frames make the seed corpus
 * (tests/fuzz/corpus/frame, `fzgen.py seeds`).
 *
 * clang -g -O1 -fsanitize=fuzzer,address,undefined -Ipipeline/proto tests/fuzz/fuzz_frame.c \
 *	pipeline/proto/proto.c pipeline/proto/reasm.c -o fuzz_frame
 * ./fuzz_frame -max_total_time=180 tests/fuzz/corpus/frame
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fz_proto.h"

#define FUZZ_CAP 4
#define FUZZ_TIMEOUT_NS 50000000ull

static const struct fz_proto_cfg cfg = {
	.mac = {0x02, 0x70, 0x63, 0x61, 0x70, 0x00},
	.ip = 0xc6120001u, /* 198.18.0.1 */
	.port = 7878,
	.in_c = 1,
	.in_h = 28,
	.in_w = 28,
	.dtype_mask = 1u << FZ_PROTO_DT_U8 | 1u << FZ_PROTO_DT_F32,
	.max_tensor_bytes = 784 * 4,
};

static volatile uint32_t sink;

static void check(int cond)
{
	if (!cond)
		__builtin_trap();
}

static void fix_checksums(uint8_t *f, uint32_t len, uint8_t ctl)
{
	uint32_t ihl;

	if (len < 34 || f[12] != 0x08 || f[13] != 0x00)
		return;
	ihl = (uint32_t)(f[14] & 0xf) * 4;
	if (ihl < 20 || 14 + ihl > len)
		return;
	if (ctl & 1) {
		f[24] = f[25] = 0;
		uint16_t c = fz_proto_cksum(f + 14, ihl);
		f[24] = (uint8_t)(c >> 8);
		f[25] = (uint8_t)c;
	}
	if ((ctl & 2) && f[23] == 17 && 14 + ihl + 8 <= len)
		f[14 + ihl + 6] = f[14 + ihl + 7] = 0;
}

/* An error response for (to, id, why) must decode back to the same id and status. */
static void answer(const struct fz_proto_addr *to, uint64_t id, enum fz_proto_reason why)
{
	uint8_t o[FZ_PROTO_RESP_FRAME_LEN];
	struct fz_proto_resp r;

	check(why > FZ_PROTO_R_OK && why < FZ_PROTO_R__COUNT);
	check(fz_proto_build_error(&cfg, to, id, why, 1, o, sizeof(o)) == FZ_PROTO_RESP_FRAME_LEN);
	check(fz_proto_cksum(o + FZ_ETH_HDR_LEN, FZ_IP4_HDR_LEN) == 0);
	check(fz_proto_resp_decode(o + FZ_PROTO_REQ_OFF, FZ_PROTO_RESP_LEN, &r) == 0);
	check(r.req_id == id && r.status == why);
}

static void one_frame(struct fz_reasm *ra, uint8_t *f, uint32_t len, uint8_t ctl, uint64_t now)
{
	struct fz_proto_pkt p;
	struct fz_reasm_req r;
	uint8_t out[2048];
	int n;

	switch (fz_proto_classify(&cfg, f, len, &p)) {
	case FZ_PROTO_V_DROP:
		check(p.reason > FZ_PROTO_R_OK && p.reason < FZ_PROTO_R__COUNT);
		break;
	case FZ_PROTO_V_ERROR:
		if ((ctl & 8) || fz_reasm_abort(ra, &p, now) != -EALREADY)
			answer(&p.reply, p.hdr.req_id, p.reason);
		break;
	case FZ_PROTO_V_ARP:
		n = fz_proto_build_arp_reply(&cfg, f, len, out, sizeof(out));
		check(n == FZ_PROTO_ARP_FRAME_LEN);
		check(fz_proto_build_arp_reply(&cfg, f, len, f, len) == n); /* in place */
		check(memcmp(out, f, (size_t)n) == 0);
		break;
	case FZ_PROTO_V_ICMP:
		n = fz_proto_build_icmp_reply(&cfg, f, len, out, sizeof(out));
		if (n == -ENOSPC)
			break;
		check(n > 0 && (uint32_t)n <= len);
		check(fz_proto_build_icmp_reply(&cfg, f, len, f, len) == n);
		check(memcmp(out, f, (size_t)n) == 0);
		break;
	case FZ_PROTO_V_REQUEST:
		check(p.frag >= f && p.frag + p.hdr.frag_len <= f + len);
		check(p.hdr.frag_len > 0 && p.hdr.frag_off + p.hdr.frag_len <= p.hdr.tensor_bytes);
		switch (fz_reasm_add(ra, &p, now, &r)) {
		case FZ_REASM_COMPLETE: {
			uint32_t s = 0;

			check(r.len == p.hdr.tensor_bytes && r.reason == FZ_PROTO_R_OK);
			for (uint32_t k = 0; k < r.len; k++)
				s += r.data[k];
			sink = s;
			if (!(ctl & 4))
				fz_reasm_release(ra, &r);
			break;
		}
		case FZ_REASM_ERROR:
			answer(&r.reply, r.req_id, r.reason);
			break;
		case FZ_REASM_DROP:
			check(r.reason > FZ_PROTO_R_OK && r.reason < FZ_PROTO_R__COUNT);
			break;
		case FZ_REASM_STORED:
			break;
		}
		break;
	}
}

static void check_stats(const struct fz_reasm *ra)
{
	struct fz_reasm_stats st;

	fz_reasm_get_stats(ra, &st);
	/* storage slots hold live entries only; tombstones have their own room (fz_proto.h) */
	check(st.live + st.free == FUZZ_CAP);
	check(st.peak_live <= FUZZ_CAP);
	check(st.tombstones <= (FZ_REASM_TOMBS_PER_ENTRY * FUZZ_CAP > FZ_REASM_TOMBS_MIN
					? FZ_REASM_TOMBS_PER_ENTRY * FUZZ_CAP
					: FZ_REASM_TOMBS_MIN));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_reasm_params rp = {.capacity = FUZZ_CAP, .max_tensor_bytes = 784 * 4,
				     .max_frags = 8, .timeout_ns = FUZZ_TIMEOUT_NS};
	struct fz_reasm *ra = fz_reasm_create(&rp);
	struct fz_reasm_req exp[2];
	uint64_t now = 1;
	size_t off = 0;
	unsigned n;

	if (ra == NULL)
		return 0;
	while (off + 3 <= size) {
		uint8_t ctl = data[off];
		uint32_t len = (uint32_t)data[off + 1] << 8 | data[off + 2];
		uint64_t step = ctl >> 4;
		uint8_t *f;

		off += 3;
		if (len > size - off)
			len = (uint32_t)(size - off);
		f = malloc(len ? len : 1);
		if (f == NULL)
			break;
		memcpy(f, data + off, len);
		off += len;
		now += step * step * step * 1000000ull;
		fix_checksums(f, len, ctl);
		while ((n = fz_reasm_expire(ra, now, exp, 2)) > 0)
			for (unsigned k = 0; k < n; k++) {
				check(exp[k].reason == FZ_PROTO_R_REASSEMBLY_TIMEOUT);
				answer(&exp[k].reply, exp[k].req_id, exp[k].reason);
			}
		one_frame(ra, f, len, ctl, now);
		free(f);
		check_stats(ra);
		check(fz_reasm_next_deadline(ra) > now); /* expired above; new ones are later */
	}
	while (fz_reasm_expire(ra, UINT64_MAX, exp, 2) > 0)
		;
	check_stats(ra);
	fz_reasm_free(ra);
	return 0;
}
