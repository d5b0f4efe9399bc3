/* Telemetry: the /freeze/ commands of DPDK's telemetry socket (usertools/dpdk-telemetry.py), and
 * the summary printed on exit. Counters are read relaxed while lcores write them. */
#include <stdio.h>
#include <unistd.h>
#include <string.h>

#include <rte_ethdev.h>
#include <rte_telemetry.h>

#include "app_pvt.h"
#include "fz_cache.h"
#include "stage_cache.h"
#include "fz_control.h"
#include "fz_proto.h"
#include "fz_selfcheck.h"
#include "port_stats.h"
#include "verify.h"
#include "verify_ctl.h"

static uint64_t rd(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

/* Every request and its fate: received = answered (ok + error) + dropped + in flight. */
struct totals {
	uint64_t received, answered_ok, answered_err, dropped, in_flight, frames, frame_drops;
	uint64_t hits, lat_n, lat_sum;
};

static void totals(struct totals *t)
{
	memset(t, 0, sizeof(*t));
	t->received = rd(&fz_app.rx.requests);
	t->answered_ok = rd(&fz_app.tx.ok);
	t->answered_err = rd(&fz_app.tx.errors);
	for (int d = 0; d < FZ_APP_DROP__COUNT; d++) {
		t->dropped += rd(&fz_app.rx.drop[d]) + rd(&fz_app.tx.drop[d]);
		for (int s = 0; s < fz_app.n_stages; s++)
			t->dropped += rd(&fz_app.stages[s].st.drop[d]);
	}
	t->in_flight = atomic_load_explicit(&fz_app.in_flight, memory_order_relaxed);
	t->frames = rd(&fz_app.rx.frames);
	for (int r = 0; r < FZ_PROTO_R__COUNT; r++)
		t->frame_drops += rd(&fz_app.rx.drop_frame[r]);
	for (int s = 0; s < fz_app.n_stages; s++)
		t->hits += rd(&fz_app.stages[s].st.hits);
	t->lat_n = rd(&fz_app.tx.responses);
	t->lat_sum = rd(&fz_app.tx.latency_ns_sum);
}

static int tel_stats(const char *cmd, const char *params, struct rte_tel_data *d)
{
	(void)cmd;
	(void)params;
	struct totals t;
	totals(&t);
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_u64(d, "frames", t.frames);
	rte_tel_data_add_dict_u64(d, "frames_dropped", t.frame_drops);
	rte_tel_data_add_dict_u64(d, "requests", t.received);
	rte_tel_data_add_dict_u64(d, "answered_ok", t.answered_ok);
	rte_tel_data_add_dict_u64(d, "answered_error", t.answered_err);
	rte_tel_data_add_dict_u64(d, "dropped", t.dropped);
	rte_tel_data_add_dict_u64(d, "in_flight", t.in_flight);
	rte_tel_data_add_dict_u64(d, "cache_hits", t.hits);
	rte_tel_data_add_dict_u64(d, "arp", rd(&fz_app.rx.arp));
	rte_tel_data_add_dict_u64(d, "icmp", rd(&fz_app.rx.icmp));
	rte_tel_data_add_dict_u64(d, "udp_csum_partial", rd(&fz_app.rx.udp_csum_partial));
	rte_tel_data_add_dict_u64(d, "mean_latency_ns", t.lat_n ? t.lat_sum / t.lat_n : 0);
	rte_tel_data_add_dict_u64(d, "reloads", rd(&fz_app.reloads));
	rte_tel_data_add_dict_u64(d, "shadows_sent", rd(&fz_app.tx.shadows_sent));
	rte_tel_data_add_dict_u64(d, "shadows_busy", rd(&fz_app.tx.shadows_busy));
	rte_tel_data_add_dict_u64(d, "shadows_checked", rd(&fz_app.shadows_checked));
	rte_tel_data_add_dict_u64(d, "shadows_failed", rd(&fz_app.shadows_failed));
	struct fz_verify_counters vc;
	fz_verify_counters(&vc);
	rte_tel_data_add_dict_u64(d, "verify_samples_lost", vc.samples_lost);
	rte_tel_data_add_dict_u64(d, "verify_samples_stale", fz_verify_ctl_stale());
	rte_tel_data_add_dict_u64(d, "reload_failures", rd(&fz_app.reload_failures));
	return 0;
}

static int tel_drops(const char *cmd, const char *params, struct rte_tel_data *d)
{
	(void)cmd;
	(void)params;
	rte_tel_data_start_dict(d);
	for (int r = 0; r < FZ_PROTO_R__COUNT; r++)
		rte_tel_data_add_dict_u64(d, fz_proto_reason_name(r), rd(&fz_app.rx.drop_frame[r]));
	for (int a = 0; a < FZ_APP_DROP__COUNT; a++) {
		uint64_t v = rd(&fz_app.rx.drop[a]) + rd(&fz_app.tx.drop[a]);
		for (int s = 0; s < fz_app.n_stages; s++)
			v += rd(&fz_app.stages[s].st.drop[a]);
		rte_tel_data_add_dict_u64(d, fz_app_drop_names[a], v);
	}
	return 0;
}

static int tel_stages(const char *cmd, const char *params, struct rte_tel_data *d)
{
	(void)cmd;
	(void)params;
	rte_tel_data_start_dict(d);
	for (int s = 0; s < fz_app.n_stages; s++) {
		struct fz_stage_rt *rt = &fz_app.stages[s];
		struct rte_tel_data *x = rte_tel_data_alloc();
		if (!x)
			return -1;
		rte_tel_data_start_dict(x);
		rte_tel_data_add_dict_int(x, "lcore", rt->cfg->lcore);
		rte_tel_data_add_dict_string(x, "first_layer", rt->cfg->first);
		rte_tel_data_add_dict_string(x, "last_layer", rt->cfg->last);
		rte_tel_data_add_dict_u64(x, "requests_in", rd(&rt->st.in));
		rte_tel_data_add_dict_u64(x, "requests_next", rd(&rt->st.out_next));
		rte_tel_data_add_dict_u64(x, "answered", rd(&rt->st.answered));
		rte_tel_data_add_dict_u64(x, "cache_hits", rd(&rt->st.hits));
		rte_tel_data_add_dict_u64(x, "batches", rd(&rt->st.batches));
		rte_tel_data_add_dict_u64(x, "busy_cycles", rd(&rt->st.busy_tsc));
		rte_tel_data_add_dict_u64(x, "compute_cycles", rd(&rt->st.compute_tsc));
		rte_tel_data_add_dict_u64(x, "lookup_cycles", rd(&rt->st.lookup_tsc));
		rte_tel_data_add_dict_u64(x, "online_inserts", rd(&rt->st.online_inserts));
		rte_tel_data_add_dict_u64(x, "lookup_errors", rd(&rt->st.lookup_errors));
		/* busy fraction in per mille: busy time over the time since the first frame */
		const uint64_t t0 = rd(&fz_app.rx.first_tsc), now = rte_rdtsc();
		rte_tel_data_add_dict_u64(x, "busy_permille",
					  t0 && now > t0 ? rd(&rt->st.busy_tsc) * 1000 / (now - t0) : 0);
		if (rt->out_pool && rt->out_pool->mp) {
			/* few free: the next stage is behind and this one waits for batches */
			rte_tel_data_add_dict_u64(x, "batches_out", rt->out_pool->mp->size);
			rte_tel_data_add_dict_u64(x, "batches_out_free",
						  rte_mempool_avail_count(rt->out_pool->mp));
		}
		rte_tel_data_add_dict_container(d, rt->cfg->name, x, 0);
	}
	return 0;
}

/* One cache point's counters, summed over the stages (a point sits in one stage). */
struct point {
	const char *layer, *kind;
	int index;
	bool enabled;
	float threshold;
	int entries;
	uint64_t evictions, lookups, hits, macs_saved;
	/* self-checking: samples at the current threshold, agreeing, its interval, changes */
	uint64_t sampled, agreed, checked, disagreed, changes, offs, forgotten;
	double lo, hi;
	float calibrated;
};

/* The current set's points; returns how many (at most max). */
static int points(struct point *p, int max)
{
	int n = 0;
	fz_app_caches_read_lock();
	const struct fz_cache_set *cs = fz_app_caches_current();
	const uint64_t full = fz_app.net ? fz_net_macs(fz_app.net, 0, fz_app.model->n_layers - 1) : 0;
	for (int i = 0; cs && i < cs->n_caches && n < max; i++) {
		const struct fz_cache *c = cs->caches[i];
		const int l = fz_app_cache_layer(c);
		if (l < 0) /* < FZ_MODEL_MAX_LAYERS: the model loader's cap */
			continue;
		struct point *q = &p[n++];
		*q = (struct point){.layer = fz_app.model->layers[l].name,
				    .kind = fz_cache_kind_name(fz_cache_params(c)->kind), .index = l,
				    .enabled = fz_cache_enabled(c), .threshold = fz_cache_threshold(c),
				    .entries = fz_cache_entries(c), .evictions = fz_cache_evictions(c)};
		for (int s = 0; s < fz_app.n_stages; s++) {
			q->lookups += rd(&fz_app.stages[s].st.lookups_by_layer[l]);
			q->hits += rd(&fz_app.stages[s].st.exits_by_layer[l]);
		}
		if (q->hits > q->lookups) /* a batch in between: its exits counted first */
			q->lookups = q->hits;
		q->macs_saved = q->hits * (full - fz_net_macs(fz_app.net, 0, l));
		struct fz_selfcheck_view v;
		if (fz_verify_ctl_view(FZ_SELFCHECK_POINT, i, &v) == 0) {
			struct fz_verify_counters vc;
			fz_verify_counters(&vc);
			q->sampled = v.samples, q->agreed = v.agree;
			q->checked = v.checked, q->disagreed = v.disagreed;
			q->changes = v.changes, q->offs = v.offs;
			q->forgotten = vc.forgotten[i]; /* i < FZ_CACHE_MAX_POINTS = FZ_VERIFY_POINTS */
			q->lo = v.lo, q->hi = v.hi, q->calibrated = v.calibrated.thr;
		}
	}
	fz_app_caches_read_unlock();
	return n;
}

static int tel_layers(const char *cmd, const char *params, struct rte_tel_data *d)
{
	(void)cmd;
	(void)params;
	struct point p[FZ_CACHE_MAX_POINTS];
	int n = points(p, FZ_CACHE_MAX_POINTS);
	rte_tel_data_start_dict(d);
	for (int i = 0; i < n; i++) {
		struct rte_tel_data *x = rte_tel_data_alloc();
		if (!x)
			return -1;
		rte_tel_data_start_dict(x);
		rte_tel_data_add_dict_int(x, "layer_index", p[i].index);
		rte_tel_data_add_dict_string(x, "kind", p[i].kind);
		rte_tel_data_add_dict_int(x, "enabled", p[i].enabled);
		rte_tel_data_add_dict_u64(x, "lookups", p[i].lookups);
		rte_tel_data_add_dict_u64(x, "hits", p[i].hits);
		rte_tel_data_add_dict_u64(x, "misses", p[i].lookups - p[i].hits);
		rte_tel_data_add_dict_int(x, "entries", p[i].entries);
		rte_tel_data_add_dict_u64(x, "evictions", p[i].evictions);
		rte_tel_data_add_dict_u64(x, "macs_saved", p[i].macs_saved);
		char thr[32];
		snprintf(thr, sizeof(thr), "%.9g", (double)p[i].threshold);
		rte_tel_data_add_dict_string(x, "threshold", thr);
		if (fz_app.cfg.verify.sample > 0) {
			rte_tel_data_add_dict_u64(x, "shadow_samples", p[i].checked);
			rte_tel_data_add_dict_u64(x, "sampled", p[i].sampled);
			rte_tel_data_add_dict_u64(x, "sampled_agree", p[i].agreed);
			snprintf(thr, sizeof(thr), "%.6f", p[i].lo);
			rte_tel_data_add_dict_string(x, "agreement_low", thr);
			snprintf(thr, sizeof(thr), "%.6f", p[i].hi);
			rte_tel_data_add_dict_string(x, "agreement_high", thr);
			snprintf(thr, sizeof(thr), "%.9g", (double)p[i].calibrated);
			rte_tel_data_add_dict_string(x, "calibrated_threshold", thr);
			rte_tel_data_add_dict_u64(x, "guard_changes", p[i].changes);
			rte_tel_data_add_dict_u64(x, "guard_offs", p[i].offs);
			rte_tel_data_add_dict_u64(x, "sampled_disagree_total", p[i].disagreed);
			rte_tel_data_add_dict_u64(x, "online_forgotten", p[i].forgotten);
		}
		rte_tel_data_add_dict_container(d, p[i].layer, x, 0);
	}
	/* the front tiers self-checking follows, as "front/<tier>" (kind "front"): whether the
	 * guard left them on, and their sampled agreement with the full model */
	struct fz_verify_counters vc;
	fz_verify_counters(&vc);
	for (int t = 0; fz_app.cfg.front.enabled && t < FZ_SELFCHECK_TIERS; t++) {
		struct fz_selfcheck_view v;
		if (fz_verify_ctl_view(FZ_SELFCHECK_TIER, t, &v) < 0)
			break;
		struct rte_tel_data *x = rte_tel_data_alloc();
		if (!x)
			return -1;
		char key[32], num[32];
		rte_tel_data_start_dict(x);
		rte_tel_data_add_dict_string(x, "kind", "front");
		rte_tel_data_add_dict_int(x, "enabled", v.gate.on);
		rte_tel_data_add_dict_u64(x, "shadow_samples", v.checked);
		rte_tel_data_add_dict_u64(x, "picked", vc.front_picked[t]);
		rte_tel_data_add_dict_u64(x, "sampled", v.samples);
		rte_tel_data_add_dict_u64(x, "sampled_agree", v.agree);
		rte_tel_data_add_dict_u64(x, "sampled_disagree_total", v.disagreed);
		snprintf(num, sizeof(num), "%.6f", v.lo);
		rte_tel_data_add_dict_string(x, "agreement_low", num);
		snprintf(num, sizeof(num), "%.6f", v.hi);
		rte_tel_data_add_dict_string(x, "agreement_high", num);
		rte_tel_data_add_dict_u64(x, "guard_changes", v.changes);
		rte_tel_data_add_dict_u64(x, "guard_offs", v.offs);
		rte_tel_data_add_dict_u64(x, "vetoed", vc.front_vetoed[t]);
		snprintf(key, sizeof(key), "front/%s", fz_selfcheck_tier_name(t));
		rte_tel_data_add_dict_container(d, key, x, 0);
	}
	return 0;
}

static int tel_front(const char *cmd, const char *params, struct rte_tel_data *d)
{
	(void)cmd;
	(void)params;
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_int(d, "enabled", fz_app.cfg.front.enabled);
#define FZ_FS_TEL(f) rte_tel_data_add_dict_u64(d, #f, rd(&fz_app.rx.front.f));
	FZ_FOREACH_FRONT_STAT(FZ_FS_TEL)
#undef FZ_FS_TEL
	rte_tel_data_add_dict_u64(d, "front_cycles", rd(&fz_app.rx.front_tsc));
	rte_tel_data_add_dict_u64(d, "rx_busy_cycles", rd(&fz_app.rx.busy_tsc));
	return 0;
}

/* The front tiers' account: every request they saw answered by one tier, waiting, or run. */
static void front_summary(FILE *f)
{
	const struct fz_front_stats *s = &fz_app.rx.front;
	if (!fz_app.cfg.front.enabled || !rd(&s->requests))
		return;
	uint64_t waiting = rd(&s->followers) - rd(&s->followers_answered) - rd(&s->followers_ran) -
			   rd(&s->followers_expired) - rd(&s->followers_relead);
	fprintf(f, "front tiers        requests %" PRIu64 " = exact %" PRIu64 " + flow %" PRIu64
		   " + near %" PRIu64 " + coalesced %" PRIu64 " + ran %" PRIu64 "\n",
		rd(&s->requests), rd(&s->exact_hits), rd(&s->flow_hits), rd(&s->near_hits),
		rd(&s->followers), rd(&s->ran));
	fprintf(f, "  coalesced        %" PRIu64 " (%" PRIu64 " exact repeats) = answered by the "
		   "request waited for %" PRIu64 " + led again (its answer not sure enough) %" PRIu64
		   " + ran %" PRIu64 " + ran (waited %d us) %" PRIu64 " + waiting %" PRIu64
		   " (waited again %" PRIu64 ")\n",
		rd(&s->followers), rd(&s->exact_followers), rd(&s->followers_answered),
		rd(&s->followers_relead), rd(&s->followers_ran), fz_app.cfg.front.wait_us,
		rd(&s->followers_expired), waiting, rd(&s->followers_rewaited));
	fprintf(f, "  tables           exact: %" PRIu64 " answers kept, %" PRIu64
		   " evicted; near: %" PRIu64 " lookups, %" PRIu64 " kept, %" PRIu64
		   " evicted; flows: %" PRIu64 " lookups, %" PRIu64 " timed out, %" PRIu64
		   " replaced; in flight full %" PRIu64 ", followers full %" PRIu64
		   "; cleared by reloads %" PRIu64 "\n",
		rd(&s->exact_inserts), rd(&s->exact_evictions), rd(&s->near_lookups),
		rd(&s->near_inserts), rd(&s->near_evictions), rd(&s->flow_lookups),
		rd(&s->flow_expired), rd(&s->flow_replaced), rd(&s->pending_full),
		rd(&s->followers_full), rd(&s->clears));
	if (fz_app.tsc_hz)
		fprintf(f, "  rx time          %.3f s in the front tiers of %.3f s busy\n",
			rd(&fz_app.rx.front_tsc) / (double)fz_app.tsc_hz,
			rd(&fz_app.rx.busy_tsc) / (double)fz_app.tsc_hz);
}

/* /freeze/port: the port's frame account, read now (port_stats.h): frames sent to the port =
 * rx_frames + lost (+ unread, still in the kernel socket's ring). */
static int tel_port(const char *cmd, const char *params, struct rte_tel_data *d)
{
	(void)cmd;
	(void)params;
	struct fz_port_losses l;
	fz_port_stats_read(&l);
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_string(d, "driver", l.driver);
	rte_tel_data_add_dict_string(d, "iface", l.iface);
	rte_tel_data_add_dict_u64(d, "rx_frames", l.rx_frames);
	rte_tel_data_add_dict_u64(d, "lost", l.lost);
	rte_tel_data_add_dict_u64(d, "imissed", l.imissed);
	rte_tel_data_add_dict_u64(d, "kernel_socket", l.kernel_socket);
	rte_tel_data_add_dict_u64(d, "kernel_socket_drops", l.socket_drops);
	rte_tel_data_add_dict_u64(d, "kernel_socket_frames", l.socket_frames);
	rte_tel_data_add_dict_string(d, "iface_counters", l.iface_counters ? l.iface_counters : "");
	rte_tel_data_add_dict_u64(d, "iface_dropped", l.iface_dropped);
	rte_tel_data_add_dict_u64(d, "iface_missed", l.iface_missed);
	rte_tel_data_add_dict_u64(d, "unread", l.unread);
	rte_tel_data_add_dict_u64(d, "rx_nombuf", l.rx_nombuf);
	rte_tel_data_add_dict_u64(d, "ierrors", l.ierrors);
	rte_tel_data_add_dict_u64(d, "tx_frames", l.tx_frames);
	rte_tel_data_add_dict_u64(d, "tx_errors", l.tx_errors);
	return 0;
}

/* The port's account at exit, one line: what a sender reconciles its count with. */
static void port_summary(FILE *f)
{
	struct fz_port_losses l;
	fz_port_stats_read(&l);
	char on[IF_NAMESIZE + 8] = "";
	if (l.iface[0])
		snprintf(on, sizeof(on), " on %s", l.iface);
	fprintf(f, "port               received %" PRIu64 ", lost before RX %" PRIu64
		   " (imissed %" PRIu64 ", kernel socket %s%" PRIu64 ", interface %s%" PRIu64
		   "), unread %" PRIu64 ", rx_nombuf %" PRIu64 ", ierrors %" PRIu64 " (%s%s)\n",
		l.rx_frames, l.lost, l.imissed, l.kernel_socket ? "" : "n/a ", l.socket_drops,
		l.iface[0] ? "" : "n/a ", l.iface_dropped + l.iface_missed, l.unread, l.rx_nombuf,
		l.ierrors, l.driver, on);
}

static int tel_reload(const char *cmd, const char *params, struct rte_tel_data *d)
{
	(void)cmd;
	(void)params;
	/* the RX lcore does the work; /freeze/stats shows reloads and reload_failures */
	atomic_store_explicit(&fz_app.reload, true, memory_order_release);
	rte_tel_data_start_dict(d);
	rte_tel_data_add_dict_string(d, "reload", "requested");
	rte_tel_data_add_dict_u64(d, "reloads_so_far", rd(&fz_app.reloads));
	return 0;
}

int fz_app_telemetry_init(void)
{
	int rc = rte_telemetry_register_cmd("/freeze/stats", tel_stats,
					    "Requests, answers, drops, cache hits. No parameters");
	rc |= rte_telemetry_register_cmd("/freeze/drops", tel_drops,
					 "Drop counters by named reason. No parameters");
	rc |= rte_telemetry_register_cmd("/freeze/stages", tel_stages,
					 "Per-stage requests, batches, hits, cycles. No parameters");
	rc |= rte_telemetry_register_cmd("/freeze/layers", tel_layers,
					 "Per cache point and front/<tier>: lookups, hits, threshold, "
					 "self-checking. No parameters");
	rc |= rte_telemetry_register_cmd("/freeze/front", tel_front,
					 "Front tiers: exact, flow, near hits, coalescing, tables. No parameters");
	rc |= rte_telemetry_register_cmd("/freeze/port", tel_port,
					 "Port frames: received, lost before RX (device, kernel socket, "
					 "interface), read now. No parameters");
	rc |= rte_telemetry_register_cmd("/freeze/reload", tel_reload,
					 "Reload the cache snapshot from disk and swap it in. No parameters");
	return rc;
}

void fz_app_summary(FILE *f)
{
	struct totals t;
	totals(&t);
	fprintf(f, "\n== freeze summary ==\n");
	fprintf(f, "frames received    %" PRIu64 " (dropped %" PRIu64 ", arp %" PRIu64
		   ", icmp %" PRIu64 ")\n",
		t.frames, t.frame_drops, rd(&fz_app.rx.arp), rd(&fz_app.rx.icmp));
	port_summary(f);
	if (rd(&fz_app.rx.udp_csum_partial))
		fprintf(f, "udp_csum_partial   %" PRIu64 " (frames whose sender left the UDP checksum "
			   "unfinished: accepted unverified)\n",
			rd(&fz_app.rx.udp_csum_partial));
	fprintf(f, "requests           %" PRIu64 "\n", t.received);
	fprintf(f, "answered           %" PRIu64 " (ok %" PRIu64 ", error %" PRIu64 ")\n",
		t.answered_ok + t.answered_err, t.answered_ok, t.answered_err);
	fprintf(f, "dropped            %" PRIu64 "\n", t.dropped);
	fprintf(f, "in flight at exit  %" PRIu64 "\n", t.in_flight);
	for (int r = 0; r < FZ_PROTO_R__COUNT; r++)
		if (rd(&fz_app.rx.drop_frame[r]))
			fprintf(f, "  frame drop %-24s %" PRIu64 "\n", fz_proto_reason_name(r),
				rd(&fz_app.rx.drop_frame[r]));
	for (int a = 0; a < FZ_APP_DROP__COUNT; a++) {
		uint64_t v = rd(&fz_app.rx.drop[a]) + rd(&fz_app.tx.drop[a]);
		for (int s = 0; s < fz_app.n_stages; s++)
			v += rd(&fz_app.stages[s].st.drop[a]);
		if (v)
			fprintf(f, "  request drop %-22s %" PRIu64 "\n", fz_app_drop_names[a], v);
	}
	fprintf(f, "exit histogram (answers by the layer that gave them):\n");
	for (int s = 0; s < fz_app.n_stages; s++) {
		const struct fz_stage_rt *rt = &fz_app.stages[s];
		uint64_t in = rd(&rt->st.in), ans = rd(&rt->st.answered);
		double busy = fz_app.tsc_hz ? rd(&rt->st.busy_tsc) / (double)fz_app.tsc_hz : 0;
		fprintf(f, "  %-10s %-8s..%-8s in %8" PRIu64 " answered %8" PRIu64 " (%5.1f%%)"
			   "  batches %6" PRIu64 " mean batch %5.1f  busy %.2f s\n",
			rt->cfg->name, rt->cfg->first, rt->cfg->last, in, ans,
			t.received ? 100.0 * ans / t.received : 0, rd(&rt->st.batches),
			rd(&rt->st.batches) ? (double)rd(&rt->st.batch_sum) / rd(&rt->st.batches)
					    : 0,
			busy);
	}
	fprintf(f, "cache hits         %" PRIu64 " (%.1f%% of requests)\n", t.hits,
		t.received ? 100.0 * t.hits / t.received : 0);
	struct point p[FZ_CACHE_MAX_POINTS];
	int np = points(p, FZ_CACHE_MAX_POINTS);
	if (np)
		fprintf(f, "cache points       %-10s %-8s %10s %10s %10s %8s %9s %12s %s\n", "layer",
			"kind", "lookups", "hits", "misses", "entries", "evictions", "GMACs saved",
			"threshold");
	for (int i = 0; i < np; i++)
		fprintf(f, "                   %-10s %-8s %10" PRIu64 " %10" PRIu64 " %10" PRIu64
			   " %8d %9" PRIu64 " %12.2f %.6g%s\n",
			p[i].layer, p[i].kind, p[i].lookups, p[i].hits, p[i].lookups - p[i].hits,
			p[i].entries, p[i].evictions, p[i].macs_saved / 1e9, (double)p[i].threshold,
			p[i].enabled ? "" : " (off)");
	if (fz_app.cfg.verify.sample > 0) {
		fprintf(f, "self-checking      shadows sent %" PRIu64 ", dropped (busy) %" PRIu64
			   ", checked %" PRIu64 ", failed %" PRIu64 "\n",
			rd(&fz_app.tx.shadows_sent), rd(&fz_app.tx.shadows_busy),
			rd(&fz_app.shadows_checked), rd(&fz_app.shadows_failed));
		for (int i = 0; i < np; i++)
			if (p[i].checked)
				fprintf(f, "                   %-10s sampled agreement %6.2f %% [%.2f, %.2f] "
					   "over %" PRIu64 " at threshold %.4g (calibrated %.4g), guard "
					   "changes %" PRIu64 " (off %" PRIu64 ")%s, online entries "
					   "forgotten %" PRIu64 "\n",
					p[i].layer, p[i].sampled ? 100.0 * p[i].agreed / p[i].sampled : 0,
					100 * p[i].lo, 100 * p[i].hi, p[i].sampled,
					(double)p[i].threshold, (double)p[i].calibrated, p[i].changes,
					p[i].offs, p[i].enabled ? "" : ", off now", p[i].forgotten);
		struct fz_verify_counters vc;
		fz_verify_counters(&vc);
		for (int t = 0; fz_app.cfg.front.enabled && t < FZ_SELFCHECK_TIERS; t++) {
			struct fz_selfcheck_view v;
			if (fz_verify_ctl_view(FZ_SELFCHECK_TIER, t, &v) < 0 || !v.checked)
				continue;
			fprintf(f, "                   front %-9s sampled agreement %6.2f %% [%.2f, %.2f] "
				   "over %" PRIu64 " (checked %" PRIu64 "), guard offs %" PRIu64 "%s, "
				   "answers not given (off) %" PRIu64 "\n",
				fz_selfcheck_tier_name(t),
				v.samples ? 100.0 * v.agree / v.samples : 0, 100 * v.lo, 100 * v.hi,
				v.samples, v.checked, v.offs, v.gate.on ? "" : ", off now",
				vc.front_vetoed[t]);
		}
		if (vc.samples_lost || fz_verify_ctl_stale())
			fprintf(f, "                   samples lost (ring full) %" PRIu64 ", stale (a "
				   "reload replaced their snapshot) %" PRIu64 "\n",
				vc.samples_lost, fz_verify_ctl_stale());
	}
	front_summary(f);
	uint64_t lookup_errors = 0;
	for (int s = 0; s < fz_app.n_stages; s++)
		lookup_errors += rd(&fz_app.stages[s].st.lookup_errors);
	if (lookup_errors)
		fprintf(f, "lookup errors      %" PRIu64 " (cache lookups that failed: those requests "
			   "ran on as misses)\n", lookup_errors);
	if (t.hits) {
		fprintf(f, "exits by layer    ");
		for (int l = 0; l < fz_app.model->n_layers; l++) { /* <= FZ_MODEL_MAX_LAYERS */
			uint64_t e = 0;
			for (int s = 0; s < fz_app.n_stages; s++)
				e += rd(&fz_app.stages[s].st.exits_by_layer[l]);
			if (e)
				fprintf(f, " %s %" PRIu64, fz_app.model->layers[l].name, e);
		}
		const struct fz_stage_stats *ls = &fz_app.stages[fz_app.n_stages - 1].st;
		fprintf(f, " full %" PRIu64 "\n", rd(&ls->answered) - rd(&ls->hits));
	}
	if (t.lat_n) {
		/* bucket b holds [2^b, 2^(b+1)) ns (lc_tx.c), so its upper bound is 2^(b+1) */
		uint64_t n = 0;
		double p50 = 0, p99 = 0;
		for (int b = 0; b < 64; b++) {
			n += rd(&fz_app.tx.lat_hist[b]);
			if (!p50 && n * 2 >= t.lat_n)
				p50 = 2.0 * (double)(1ull << b);
			if (!p99 && n * 100 >= t.lat_n * 99)
				p99 = 2.0 * (double)(1ull << b);
		}
		fprintf(f, "latency inside     mean %.1f us, p50 < %.1f us, p99 < %.1f us\n",
			t.lat_sum / 1e3 / t.lat_n, p50 / 1e3, p99 / 1e3);
	}
	if (fz_app.tx.last_tsc > fz_app.rx.first_tsc && fz_app.rx.first_tsc) {
		double secs = (fz_app.tx.last_tsc - fz_app.rx.first_tsc) / (double)fz_app.tsc_hz;
		fprintf(f, "throughput         %.0f answers/s over %.3f s (first frame to last "
			   "answer)\n",
			(t.answered_ok + t.answered_err) / secs, secs);
	}
	if (fz_app.mbufs && fz_app.reqs) {
		/* avail_count adds what the per-lcore caches hold: free, only not shared yet */
		fprintf(f, "pools at exit      mbufs %u/%u free, requests %u/%u free",
			rte_mempool_avail_count(fz_app.mbufs), fz_app.mbufs->size,
			rte_mempool_avail_count(fz_app.reqs), fz_app.reqs->size);
		/* the batches between stages, by boundary */
		for (int s = 0; s + 1 < fz_app.n_stages && fz_app.bpools[s].mp; s++) {
			const struct rte_mempool *mp = fz_app.bpools[s].mp;
			fprintf(f, "%s %s>%s %u/%u", s ? "," : ", batches",
				fz_app.stages[s].cfg->name, fz_app.stages[s + 1].cfg->name,
				rte_mempool_avail_count(mp), mp->size);
		}
		fprintf(f, "%s\n", fz_app.n_stages > 1 && fz_app.bpools[0].mp ? " free" : "");
	}
	long rss_pages = 0;
	FILE *sm = fopen("/proc/self/statm", "r");
	if (sm) {
		if (fscanf(sm, "%*s %ld", &rss_pages) != 1)
			rss_pages = 0;
		fclose(sm);
	}
	if (rss_pages && fz_app.rss_start_kb)
		fprintf(f, "memory             rss %ld kB at exit, %ld kB when serving started\n",
			rss_pages * (sysconf(_SC_PAGESIZE) / 1024), fz_app.rss_start_kb);
	if (fz_app.reloads || fz_app.reload_failures)
		fprintf(f, "cache reloads      %" PRIu64 " (refused %" PRIu64 ")\n", fz_app.reloads,
			fz_app.reload_failures);
	uint64_t acct = t.answered_ok + t.answered_err + t.dropped + t.in_flight;
	fprintf(f, "accounting         %s (requests %" PRIu64 " = answered + dropped + in flight %" PRIu64
		   ")\n",
		acct == t.received ? "ok" : "MISMATCH", t.received, acct);
}
