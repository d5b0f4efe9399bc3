/* RX lcore: frames in, classified; ARP and ICMP answered; requests reassembled, normalised and
 * handed to the first stage; bad frames counted by reason and answered when their id is known. */
#include <errno.h>
#include <string.h>

#include <rte_byteorder.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include "app_pvt.h"
#include "front.h"
#include "fz_proto.h"
#include "stage_cache.h"
#include "verify.h"

#define RX_BURST 32
#define EXPIRE_BATCH 32

static_assert(sizeof(struct fz_proto_addr) <= sizeof(((struct fz_req *)0)->reply),
	      "a request's reply area holds a protocol address");

struct rx_ctx {
	struct fz_proto_cfg pc;
	struct fz_reasm *reasm;
	struct fz_req *out[RX_BURST * 2]; /* requests for stage 1, flushed per burst */
	unsigned n_out;
	size_t key_floats;
	float *f32; /* one f32 sample in host byte order (load_tensor), allocated at start */
	/* reassembly's clock (ns): it stands still while RX holds frames back (back-pressure),
	 * so a request is not timed out, nor its tombstone forgotten, while the fragments that
	 * complete it wait in the port's queue */
	uint64_t reasm_ns;
};

/*
 * Free requests RX holds, taken from the pool before a burst: a frame makes at most one
 * request, so RX takes no more frames than it holds requests, and a request the frames then
 * ask for is always there (what is left over waits for the next burst). TX's per-lcore cache
 * may keep some requests out of RX's reach for a while; the stash counts only what RX has.
 */
static struct {
	struct fz_req *r[RX_BURST];
	unsigned n;
} stash;

/* Fill the stash from the pool (through RX's per-lcore cache); returns how many it holds. */
static unsigned stash_fill(void)
{
	unsigned want = RX_BURST - stash.n;
	if (want && rte_mempool_get_bulk(fz_app.reqs, (void **)stash.r + stash.n, want) == 0)
		return stash.n = RX_BURST;
	/* all or nothing above: a nearly empty pool gives what it has one by one */
	while (stash.n < RX_BURST && rte_mempool_get(fz_app.reqs, (void **)&stash.r[stash.n]) == 0)
		stash.n++;
	return stash.n;
}

/*
 * Requests kept for error answers only (expired reassemblies, refused fragments): however many
 * requests the pipeline holds, RX can still answer an error, and it expires no more
 * reassemblies than it holds requests to answer them with (the rest wait for the next round).
 * Refilled from the pool before the stash; a few, so a small pool still serves requests.
 */
#define RESERVE_MAX RX_BURST
static struct {
	struct fz_req *r[RESERVE_MAX];
	unsigned n, want;
} reserve;

static void reserve_fill(void)
{
	while (reserve.n < reserve.want &&
	       rte_mempool_get(fz_app.reqs, (void **)&reserve.r[reserve.n]) == 0)
		reserve.n++;
}

/* Requests RX holds for error answers: the reserve, then the stash. */
static unsigned err_room(void)
{
	return reserve.n + stash.n;
}

/* A free request from the stash, else from the pool, or NULL: the caller counts
 * req_pool_empty (it cannot happen to a frame: RX takes no more frames than the stash holds). */
static struct fz_req *req_take(void)
{
	struct fz_req *rq;
	if (stash.n)
		rq = stash.r[--stash.n];
	else if (rte_mempool_get(fz_app.reqs, (void **)&rq) < 0)
		return NULL;
	/* paired with TX's decrement when it returns the request */
	atomic_fetch_add_explicit(&fz_app.in_flight, 1, memory_order_relaxed);
	return rq;
}

/* A request RX took but could not hand on goes back to the stash. */
static void req_untake(struct fz_req *rq)
{
	if (stash.n < RX_BURST)
		stash.r[stash.n++] = rq;
	else
		rte_mempool_put(fz_app.reqs, rq);
	atomic_fetch_sub_explicit(&fz_app.in_flight, 1, memory_order_relaxed);
}

/* Send an error answer for a request whose id is known, or count why it could not be sent.
 * It takes a request from the reserve first, so it needs none from the pool. */
static void answer_error(const struct fz_proto_addr *to, uint64_t id, enum fz_proto_reason why,
			 uint64_t t_rx)
{
	fz_app.rx.requests++;
	struct fz_req *rq;
	if (reserve.n) {
		rq = reserve.r[--reserve.n];
		/* paired with TX's decrement when it returns the request */
		atomic_fetch_add_explicit(&fz_app.in_flight, 1, memory_order_relaxed);
	} else {
		rq = req_take();
	}
	if (!rq) {
		fz_app.rx.drop[FZ_APP_DROP_REQ_POOL_EMPTY]++;
		return;
	}
	memcpy(rq->reply, to, sizeof(*to));
	rq->id = id;
	rq->t_rx = t_rx;
	rq->status = (uint16_t)why;
	rq->label = -1;
	rq->answer = fz_answer_of(FZ_ANSWERED_ERROR);
	rq->confidence = 0;
	if (rte_ring_mp_enqueue(fz_app.tx_ring, rq) < 0) {
		fz_app.rx.drop[FZ_APP_DROP_TX_RING_FULL]++;
		req_untake(rq);
		return;
	}
	fz_app.rx.errors_answered++;
}

/* The tensor in host order: u8 bytes as they came, f32 (big-endian binary32 values on the u8
 * scale, docs/protocol.md) converted into x->f32; NULL when an f32 element is NaN or infinite
 * (exponent bits all ones). */
static const void *host_tensor(struct rx_ctx *x, const struct fz_reasm_req *r)
{
	if (r->dtype == FZ_PROTO_DT_U8)
		return r->data;
	float *v = x->f32;
	const size_t count = fz_shape_size(fz_app.model->input.shape);
	uint32_t nonfinite = 0;
	for (size_t j = 0; j < count; j++) {
		uint32_t bits;
		memcpy(&bits, r->data + 4 * j, 4);
		bits = rte_be_to_cpu_32(bits);
		nonfinite |= (bits & 0x7f800000u) == 0x7f800000u;
		memcpy(&v[j], &bits, 4);
	}
	return nonfinite ? NULL : v;
}

/* Host-order tensor -> normalised model input in the request's activation buffer. */
static void load_tensor(struct fz_req *rq, unsigned dtype, const void *host)
{
	if (dtype == FZ_PROTO_DT_U8)
		fz_net_preprocess_u8(fz_app.net, host, 1, rq->act);
	else
		fz_net_preprocess_f32(fz_app.net, host, 1, rq->act);
}

static struct rx_ctx *rx_x; /* the front tiers' callbacks reach RX's context through it */
static void flush_out(struct rx_ctx *x);
static uint64_t tsc_to_ns(uint64_t tsc);

/* An answer from the front tiers goes to TX. */
static void front_answer(struct fz_req *rq)
{
	rq->stage = UINT16_MAX;
	if (rte_ring_mp_enqueue(fz_app.tx_ring, rq) < 0) {
		fz_app.rx.drop[FZ_APP_DROP_TX_RING_FULL]++;
		req_untake(rq);
	}
}

/* A follower runs itself: into the next flush to stage 1. */
static void front_run(struct fz_req *rq)
{
	struct rx_ctx *x = rx_x;
	if (x->n_out == RTE_DIM(x->out))
		flush_out(x);
	x->out[x->n_out++] = rq;
}

/* A follower answered by the request it waited for (its input is loaded: it may have had to
 * run itself); unless self-checking switched that tier off, then it runs. */
static void front_answer_follower(struct fz_req *rq)
{
	if (fz_verify_rx_veto(rq)) {
		front_run(rq);
		return;
	}
	fz_verify_rx_pick(rq);
	front_answer(rq);
}

/* A leader back from TX, done with: to the pool (TX's release, done here instead). */
static void front_release(struct fz_req *rq)
{
	fz_req_free(rq);
}

/* Answered leaders from TX: the front tables learn, their followers are answered or run.
 * Returns how many: work that frees requests, so RX does not idle after it. */
static unsigned front_learn(struct rx_ctx *x, uint64_t now_ns)
{
	struct fz_req *rq[RX_BURST];
	unsigned n, all = 0;
	do {
		n = rte_ring_sc_dequeue_burst(fz_app.learn_ring, (void **)rq, RX_BURST, NULL);
		for (unsigned i = 0; i < n; i++)
			fz_front_learn(rq[i], now_ns);
		all += n;
	} while (n == RX_BURST);
	if (all)
		flush_out(x);
	return all;
}

static void submit(struct rx_ctx *x, const struct fz_reasm_req *r, uint64_t t_rx,
		   uint64_t now_ns)
{
	struct fz_req *rq;
	if (fz_app.stop_rx) {
		answer_error(&r->reply, r->req_id, FZ_PROTO_R_SHUTTING_DOWN, t_rx);
		return;
	}
	const void *host = host_tensor(x, r);
	if (!host) { /* NaN or infinity: no model answer would mean anything */
		fz_app.rx.drop_frame[FZ_PROTO_R_NONFINITE_INPUT]++;
		answer_error(&r->reply, r->req_id, FZ_PROTO_R_NONFINITE_INPUT, t_rx);
		return;
	}
	fz_app.rx.requests++;
	if (!(rq = req_take())) {
		fz_app.rx.drop[FZ_APP_DROP_REQ_POOL_EMPTY]++;
		return;
	}
	memcpy(rq->reply, &r->reply, sizeof(r->reply));
	rq->id = r->req_id;
	rq->t_rx = t_rx;
	rq->status = 0;
	rq->label = -1;
	rq->answer = fz_answer_of(FZ_ANSWERED_ERROR); /* none yet: the stage or a tier sets it */
	rq->confidence = 0;
	rq->keys = x->key_floats ? rq->act + fz_app.act_floats - x->key_floats : NULL;
	rq->keys_set = NULL;
	rq->fr.flags = 0;
	rq->sh_want = 0;
	if (fz_front_on()) {
		uint64_t t0 = rte_rdtsc();
		enum fz_front_verdict v = fz_front_submit(rq, r, host, now_ns);
		fz_app.rx.front_tsc += rte_rdtsc() - t0;
		/* a tier self-checking switched off does not answer: the request runs */
		if (v == FZ_FRONT_ANSWERED && !fz_verify_rx_veto(rq)) {
			/* a share is checked against the full model: its shadow needs the input */
			if (fz_verify_rx_pick(rq))
				load_tensor(rq, r->dtype, host);
			front_answer(rq);
			return;
		}
		load_tensor(rq, r->dtype, host); /* a follower too: it may have to run itself */
		if (v == FZ_FRONT_WAITING)
			return;
	} else {
		load_tensor(rq, r->dtype, host);
	}
	x->out[x->n_out++] = rq;
}

/* Hand the burst's requests to stage 1; what does not fit is answered "overloaded". */
static void flush_out(struct rx_ctx *x)
{
	if (!x->n_out)
		return;
	unsigned sent = rte_ring_sp_enqueue_burst(fz_app.stages[0].in, (void **)x->out, x->n_out,
						  NULL);
	for (unsigned i = sent; i < x->n_out; i++) {
		struct fz_req *rq = x->out[i];
		rq->status = FZ_PROTO_R_OVERLOADED;
		if (rte_ring_mp_enqueue(fz_app.tx_ring, rq) < 0) {
			fz_app.rx.drop[FZ_APP_DROP_STAGE_RING_FULL]++;
			fz_front_abandon(rq, tsc_to_ns(rte_rdtsc())); /* what waits for it runs */
			req_untake(rq);
		} else {
			fz_app.rx.errors_answered++;
		}
	}
	x->n_out = 0;
}

static void control_reply(struct rte_mbuf *m, int len)
{
	if (len <= 0) {
		rte_pktmbuf_free(m);
		return;
	}
	m->data_len = m->pkt_len = (uint32_t)len;
	if (rte_ring_sp_enqueue(fz_app.ctl_ring, m) < 0) {
		fz_app.rx.control_tx_full++;
		rte_pktmbuf_free(m);
	}
}

/* The device's verdict on the L4 checksum (port_init() enables the offload when offered). */
static enum fz_proto_l4csum l4csum(const struct rte_mbuf *m)
{
	switch (m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK) {
	case RTE_MBUF_F_RX_L4_CKSUM_GOOD:
	case RTE_MBUF_F_RX_L4_CKSUM_NONE: /* data verified, the field left unfinished (virtio) */
		return FZ_PROTO_L4CSUM_GOOD;
	case RTE_MBUF_F_RX_L4_CKSUM_BAD:
		return FZ_PROTO_L4CSUM_BAD;
	default:
		return FZ_PROTO_L4CSUM_UNKNOWN;
	}
}

/* A peer with tx checksum offload sends unfinished UDP checksums: count them, say so once. */
static void note_partial_csum(const struct fz_proto_pkt *p)
{
	if (fz_app.rx.udp_csum_partial++)
		return;
	uint32_t a = p->reply.ip;
	FZ_LOG(WARNING, "%u.%u.%u.%u (" RTE_ETHER_ADDR_PRT_FMT ") sends unfinished UDP "
			"checksums (tx checksum offload on a veth/tap/virtio peer): accepted "
			"unverified and counted as udp_csum_partial; 'ethtool -K <peer> tx off' on "
			"the sender makes them verifiable",
	       a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255, p->reply.mac[0], p->reply.mac[1],
	       p->reply.mac[2], p->reply.mac[3], p->reply.mac[4], p->reply.mac[5]);
}

static void handle(struct rx_ctx *x, struct rte_mbuf *m, uint64_t now_ns, uint64_t tsc)
{
	struct fz_proto_pkt p;
	struct fz_reasm_req r;
	if (m->nb_segs > 1 && rte_pktmbuf_linearize(m) < 0) {
		fz_app.rx.drop_frame[FZ_PROTO_R_TRUNCATED_FRAME]++;
		rte_pktmbuf_free(m);
		return;
	}
	uint8_t *data = rte_pktmbuf_mtod(m, uint8_t *);
	uint32_t len = rte_pktmbuf_data_len(m);
	uint32_t cap = rte_pktmbuf_data_len(m) + rte_pktmbuf_tailroom(m);

	enum fz_proto_verdict v = fz_proto_classify_hw(&x->pc, data, len, l4csum(m), &p);
	if (unlikely(p.udp_csum_partial))
		note_partial_csum(&p);
	switch (v) {
	case FZ_PROTO_V_ARP:
		fz_app.rx.arp++;
		control_reply(m, fz_proto_build_arp_reply(&x->pc, data, len, data, cap));
		return;
	case FZ_PROTO_V_ICMP:
		fz_app.rx.icmp++;
		control_reply(m, fz_proto_build_icmp_reply(&x->pc, data, len, data, cap));
		return;
	case FZ_PROTO_V_REQUEST:
		switch (fz_reasm_add(x->reasm, &p, x->reasm_ns, &r)) {
		case FZ_REASM_COMPLETE:
			submit(x, &r, tsc, now_ns);
			fz_reasm_release(x->reasm, &r);
			break;
		case FZ_REASM_ERROR:
			fz_app.rx.drop_frame[r.reason]++;
			answer_error(&r.reply, r.req_id, r.reason, tsc);
			break;
		case FZ_REASM_DROP:
			fz_app.rx.drop_frame[r.reason]++;
			break;
		case FZ_REASM_STORED:
			break;
		}
		break;
	case FZ_PROTO_V_ERROR:
		/* one answer per request however many of its fragments are refused */
		switch (fz_reasm_abort(x->reasm, &p, x->reasm_ns)) {
		case -EALREADY:
			fz_app.rx.drop_frame[FZ_PROTO_R_LATE_FRAGMENT]++;
			goto done;
		case -ENOSPC: /* no room to remember an answer: none, so never two */
			fz_app.rx.drop_frame[p.reason]++;
			goto done;
		default:
			break;
		}
		fz_app.rx.drop_frame[p.reason]++;
		answer_error(&p.reply, p.hdr.req_id, p.reason, tsc);
		break;
	case FZ_PROTO_V_DROP:
		fz_app.rx.drop_frame[p.reason]++;
		break;
	}
done:
	rte_pktmbuf_free(m);
}

/* Answer the reassemblies due by now_ns, as many as RX holds requests for (the others stay in
 * the table, due, for the next round). Returns true when none is left due. */
static bool expire(struct rx_ctx *x, uint64_t now_ns, enum fz_proto_reason why)
{
	struct fz_reasm_req r[EXPIRE_BATCH];
	unsigned n, want;
	do {
		reserve_fill();
		want = RTE_MIN((unsigned)EXPIRE_BATCH, err_room());
		if (!want)
			return fz_reasm_next_deadline(x->reasm) > now_ns;
		n = fz_reasm_expire(x->reasm, now_ns, r, want);
		for (unsigned i = 0; i < n; i++) {
			fz_app.rx.drop_frame[why]++;
			answer_error(&r[i].reply, r[i].req_id, why, rte_rdtsc());
		}
	} while (n == want);
	return true;
}

static uint64_t tsc_to_ns(uint64_t tsc)
{
	return (uint64_t)((double)tsc * 1e9 / fz_app.tsc_hz);
}

int fz_lcore_rx(void *arg)
{
	(void)arg;
	const struct fz_appcfg *c = &fz_app.cfg;
	const struct fz_model_input *in = &fz_app.model->input;
	static struct rx_ctx x;
	struct rte_mbuf *pkts[RX_BURST];

	memcpy(x.pc.mac, fz_app.mac.addr_bytes, 6);
	x.pc.ip = c->port.ipv4;
	x.pc.port = c->port.udp_port;
	x.pc.in_c = (uint16_t)in->shape.c;
	x.pc.in_h = (uint16_t)in->shape.h;
	x.pc.in_w = (uint16_t)in->shape.w;
	x.pc.dtype_mask = (1u << FZ_PROTO_DT_U8) | (1u << FZ_PROTO_DT_F32);
	x.pc.max_tensor_bytes = (uint32_t)(fz_shape_size(in->shape) * 4);
	x.key_floats = fz_app_key_floats();
	rx_x = &x;
	reserve.want = RTE_MIN((unsigned)RESERVE_MAX, (unsigned)c->requests / 8);
	const struct fz_front_io fio = {.answer = front_answer_follower, .run = front_run,
					.release = front_release};
	struct fz_reasm_params rp = {.capacity = (uint32_t)c->reasm_entries,
				     .max_tensor_bytes = x.pc.max_tensor_bytes,
				     .max_frags = 64,
				     .timeout_ns = (uint64_t)c->reasm_timeout_ms * 1000000ull};
	x.reasm = fz_reasm_create(&rp);
	x.f32 = malloc(fz_shape_size(in->shape) * sizeof(float));
	if (!x.reasm || !x.f32 || fz_front_init(&fio) < 0) {
		FZ_LOG(ERR, "cannot create the reassembly table (%d entries) or the f32 input buffer",
		       c->reasm_entries);
		fz_reasm_free(x.reasm);
		free(x.f32);
		atomic_store(&fz_app.stop_all, true);
		return -1;
	}
	uint64_t t0 = rte_rdtsc(), last_rx = t0, next_expire = t0;
	const uint64_t expire_every = fz_app.tsc_hz / 1000; /* 1 ms */
	const uint64_t idle_exit = c->exit_idle_ms * (fz_app.tsc_hz / 1000);
	bool draining = false;
	/* the last poll had room and found the port empty: only then can "no traffic for
	 * exit_idle_ms" be told from this lcore not having run for a while */
	bool port_empty = false;
	uint64_t drain_deadline = 0;
	unsigned empty = 0;
	uint64_t reasm_tsc = t0;
	bool held_back = false;
	x.reasm_ns = tsc_to_ns(t0);

	for (;;) {
		uint64_t tsc = rte_rdtsc();
		if (!draining && (atomic_load_explicit(&fz_app.stop_rx, memory_order_acquire) ||
				  (idle_exit && port_empty && tsc - last_rx > idle_exit &&
				   atomic_load(&fz_app.in_flight) == 0))) {
			/* stop taking frames; answer what is half-reassembled; let the
			 * pipeline empty before the ports stop */
			atomic_store(&fz_app.stop_rx, true);
			draining = true;
			drain_deadline = tsc + 10 * fz_app.tsc_hz;
		}
		/* leaders answered: their requests go back to the pool here, so a pool that ran
		 * dry under load refills without waiting for RX's idle back-off */
		const unsigned learned = fz_front_on() ? front_learn(&x, tsc_to_ns(tsc)) : 0;
		if (draining) {
			if (fz_front_on())
				fz_front_expire(tsc_to_ns(tsc));
			/* what is half-reassembled is answered, as requests come back to answer
			 * it with */
			const bool reasm_done = expire(&x, UINT64_MAX, FZ_PROTO_R_SHUTTING_DOWN);
			if ((reasm_done && atomic_load(&fz_app.in_flight) == 0) ||
			    tsc > drain_deadline) {
				/* pairs with the acquire loads in the stage and TX loops */
				atomic_store_explicit(&fz_app.stop_all, true, memory_order_release);
				break;
			}
			rte_delay_us_sleep(100);
			continue;
		}
		/* back-pressure: frames the pipeline cannot take wait in the port's queue (a NIC
		 * counts what overflows there as imissed, reported with the drops) */
		/* a frame makes at most one request (or one error answer): take no more frames
		 * than there are free requests and room in the first stage's ring */
		/* the followers the front tiers hold will each want a place in the ring when they
		 * run (answered leaders, expiry): keep it for them, so no request RX took in finds
		 * the ring full (flush_out's "overloaded") */
		reserve_fill();
		unsigned ring = rte_ring_free_count(fz_app.stages[0].in);
		const unsigned waiting = fz_front_on() ? fz_front_waiting() : 0;
		ring = ring > waiting ? ring - waiting : 0;
		unsigned room = RTE_MIN(ring, stash_fill());
		if (room && !held_back)
			x.reasm_ns += tsc_to_ns(tsc - reasm_tsc);
		reasm_tsc = tsc;
		held_back = !room;
		uint16_t n = 0;
		if (room)
			n = rte_eth_rx_burst(fz_app.port, 0, pkts, (uint16_t)RTE_MIN(room, (unsigned)RX_BURST));
		else
			fz_app.rx.backpressure_polls++;
		port_empty = room && n == 0;
		if (n) {
			uint64_t now_ns = tsc_to_ns(tsc);
			if (!fz_app.rx.first_tsc)
				fz_app.rx.first_tsc = tsc;
			fz_app.rx.frames += n;
			fz_app.rx.bursts++;
			for (uint16_t i = 0; i < n; i++)
				handle(&x, pkts[i], now_ns, tsc);
			flush_out(&x);
			last_rx = tsc;
			empty = 0;
			fz_app.rx.busy_tsc += rte_rdtsc() - tsc;
		}
		if (tsc >= next_expire) {
			expire(&x, x.reasm_ns, FZ_PROTO_R_REASSEMBLY_TIMEOUT);
			if (fz_front_on()) {
				fz_front_expire(tsc_to_ns(tsc));
				flush_out(&x);
			}
			next_expire = tsc + expire_every;
		}
		if (!n && !learned) {
			fz_app.rx.idle_polls++;
			fz_idle(c->idle, &empty);
		} else if (!n) {
			empty = 0;
		}
	}
	/* what RX still holds goes back, before the summary counts the pool */
	rte_mempool_put_bulk(fz_app.reqs, (void **)stash.r, stash.n);
	stash.n = 0;
	rte_mempool_put_bulk(fz_app.reqs, (void **)reserve.r, reserve.n);
	reserve.n = 0;
	fz_reasm_free(x.reasm);
	free(x.f32);
	fz_front_fini();
	return 0;
}
