/* TX lcore: answered requests become response frames; ARP/ICMP replies go out as they are. */
#include <string.h>

#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include "app_pvt.h"
#include "front.h"
#include "verify.h"
#include "fz_proto.h"

#define TX_BURST 32
#define TX_RETRIES 64

/* Send n frames; what the queue will not take after some retries is freed and returned. */
static uint16_t send_all(struct rte_mbuf **m, uint16_t n)
{
	uint16_t sent = 0;
	for (int tries = 0; sent < n && tries < TX_RETRIES; tries++) {
		sent += rte_eth_tx_burst(fz_app.port, 0, m + sent, n - sent);
		if (sent < n)
			rte_pause();
	}
	for (uint16_t i = sent; i < n; i++)
		rte_pktmbuf_free(m[i]);
	return sent;
}

static void release(struct fz_req *rq)
{
	if (rq->shadow) { /* never answered: a shadow that failed on its way */
		fz_verify_release(rq);
		return;
	}
	/* a front leader goes back to RX, which answers what waits for it and frees it; the
	 * ring has room for every request */
	if ((rq->fr.flags & FZ_TIERS_F_LEADER) && rte_ring_sp_enqueue(fz_app.learn_ring, rq) == 0)
		return;
	fz_req_free(rq);
}

int fz_lcore_tx(void *arg)
{
	(void)arg;
	const struct fz_appcfg *c = &fz_app.cfg;
	struct fz_proto_cfg pc = {0};
	struct fz_req *reqs[TX_BURST];
	struct rte_mbuf *m[TX_BURST];
	unsigned empty = 0;
	const double ns_per_tsc = 1e9 / fz_app.tsc_hz;

	memcpy(pc.mac, fz_app.mac.addr_bytes, 6);
	pc.ip = c->port.ipv4;
	pc.port = c->port.udp_port;

	for (;;) {
		unsigned nc = rte_ring_sc_dequeue_burst(fz_app.ctl_ring, (void **)m, TX_BURST, NULL);
		if (nc)
			fz_app.tx.control += send_all(m, (uint16_t)nc);

		unsigned n = rte_ring_sc_dequeue_burst(fz_app.tx_ring, (void **)reqs, TX_BURST, NULL);
		if (n == 0 && nc == 0) {
			if (atomic_load_explicit(&fz_app.stop_all, memory_order_acquire) &&
			    rte_ring_empty(fz_app.tx_ring) && rte_ring_empty(fz_app.ctl_ring))
				break;
			fz_idle(c->idle, &empty);
			continue;
		}
		empty = 0;
		if (n == 0)
			continue;
		uint64_t t0 = rte_rdtsc();
		unsigned nb = 0;
		if (rte_pktmbuf_alloc_bulk(fz_app.mbufs, m, n) < 0) {
			for (unsigned i = 0; i < n; i++)
				release(reqs[i]);
			fz_app.tx.drop[FZ_APP_DROP_MBUF_POOL_EMPTY] += n;
			continue;
		}
		uint64_t now = rte_rdtsc();
		uint64_t lat[TX_BURST];
		bool ok[TX_BURST];
		for (unsigned i = 0; i < n; i++) {
			struct fz_req *rq = reqs[i];
			struct fz_proto_resp resp = {
				.req_id = rq->id,
				.status = (uint8_t)rq->status,
				.label = rq->status ? FZ_PROTO_LABEL_NONE : (uint16_t)rq->label,
				.exit_layer = fz_proto_exit_code(
					rq->status ? fz_answer_of(FZ_ANSWERED_ERROR) : rq->answer),
				.confidence = rq->status ? 0.f : rq->confidence,
				.time_ns = (uint64_t)((now - rq->t_rx) * ns_per_tsc),
			};
			struct fz_proto_addr to;
			memcpy(&to, rq->reply, sizeof(to));
			int len = fz_proto_build_response(&pc, &to, &resp,
							  rte_pktmbuf_mtod(m[nb], uint8_t *),
							  rte_pktmbuf_tailroom(m[nb]));
			if (len < 0) {
				fz_app.tx.drop[FZ_APP_DROP_RESPONSE_BUILD]++;
				release(rq);
				continue;
			}
			m[nb]->data_len = m[nb]->pkt_len = (uint32_t)len;
			lat[nb] = resp.time_ns;
			ok[nb] = rq->status == 0;
			nb++;
			fz_verify_tx(rq); /* a share of the early answers is checked */
			release(rq);
		}
		uint16_t sent = send_all(m, (uint16_t)nb);
		for (unsigned i = nb; i < n; i++)
			rte_pktmbuf_free(m[i]); /* allocated for responses that failed to build */
		for (uint16_t i = 0; i < sent; i++) {
			fz_app.tx.responses++;
			if (ok[i])
				fz_app.tx.ok++;
			else
				fz_app.tx.errors++;
			fz_app.tx.latency_ns_sum += lat[i];
			fz_app.tx.lat_hist[lat[i] ? 63 - __builtin_clzll(lat[i]) : 0]++;
		}
		fz_app.tx.drop[FZ_APP_DROP_TX_QUEUE_FULL] += nb - sent;
		fz_app.tx.frames += sent;
		if (sent)
			fz_app.tx.last_tsc = rte_rdtsc();
		fz_app.tx.bursts++;
		fz_app.tx.busy_tsc += rte_rdtsc() - t0;
	}
	return 0;
}
