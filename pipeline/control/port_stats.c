/* The port's frame account, read live on the control thread: device counters and, for a port
 * on a kernel interface, the kernel's drops that the PMD does not report (port_stats.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/if_packet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <rte_ethdev.h>

#include "app_pvt.h"
#include "port_stats.h"

#define PS_MAX_SOCKETS 16   /* one per queue; RX uses one */
#define PS_POLL_NS 250000000ull        /* the control thread's read: 4 per second */
#define PS_LOG_NS 10000000000ull       /* a loss warning at most every 10 s */

/* What the port sits on, found once; the account, guarded by mu (control and telemetry). */
static struct {
	pthread_mutex_t mu;
	bool ready, closed;
	uint16_t port;
	int sock[PS_MAX_SOCKETS];
	int n_sock;
	int if_dropped_fd, if_missed_fd; /* sysfs attributes, re-read with pread */
	uint64_t if_dropped0, if_missed0;   /* their values at init */
	uint64_t next_poll_ns, next_log_ns, lost_logged;
	struct fz_port_losses acc;
} ps = {.mu = PTHREAD_MUTEX_INITIALIZER, .if_dropped_fd = -1, .if_missed_fd = -1};

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* A sysfs counter by its open fd; false if it cannot be read (the interface went away). */
static bool sysfs_u64(int fd, uint64_t *v)
{
	char buf[32];
	ssize_t n = fd >= 0 ? pread(fd, buf, sizeof(buf) - 1, 0) : -1;
	if (n <= 0)
		return false;
	buf[n] = '\0';
	char *end;
	errno = 0;
	unsigned long long x = strtoull(buf, &end, 10);
	if (errno || end == buf)
		return false;
	*v = x;
	return true;
}

static int sysfs_open(const char *iface, const char *attr)
{
	char path[128];
	snprintf(path, sizeof(path), "/sys/class/net/%s/statistics/%s", iface, attr);
	return open(path, O_RDONLY | O_CLOEXEC);
}

/*
 * net_af_packet (22.11) reports no drops: its stats have no imissed and its xstats only the
 * generic ones. The kernel counts them per socket (PACKET_STATISTICS, tp_drops: the ring was
 * full); DPDK keeps the socket private, so find it among our own descriptors: an AF_PACKET
 * socket bound to the port's interface (nothing else in this process opens one).
 */
static void find_packet_sockets(unsigned if_index)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d) {
		FZ_LOG(WARNING, "port: cannot list /proc/self/fd (%s): kernel socket drops unknown",
		       strerror(errno));
		return;
	}
	struct dirent *e;
	while ((e = readdir(d)) && ps.n_sock < PS_MAX_SOCKETS) {
		char *end;
		long fd = strtol(e->d_name, &end, 10);
		if (*end || end == e->d_name || fd == dirfd(d))
			continue;
		int dom = 0;
		socklen_t len = sizeof(dom);
		if (getsockopt((int)fd, SOL_SOCKET, SO_DOMAIN, &dom, &len) != 0 || dom != AF_PACKET)
			continue;
		struct sockaddr_ll sll;
		len = sizeof(sll);
		if (getsockname((int)fd, (struct sockaddr *)&sll, &len) != 0 ||
		    sll.sll_family != AF_PACKET || (unsigned)sll.sll_ifindex != if_index)
			continue;
		ps.sock[ps.n_sock++] = (int)fd;
	}
	closedir(d);
}

int fz_port_stats_init(uint16_t port)
{
	struct rte_eth_dev_info info;
	int rc = rte_eth_dev_info_get(port, &info);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&ps.mu);
	ps.port = port;
	snprintf(ps.acc.driver, sizeof(ps.acc.driver), "%s", info.driver_name);
	if (info.if_index && if_indextoname(info.if_index, ps.acc.iface)) {
		/* a tap's frames to us are the kernel's transmissions on it */
		const bool tap = !strcmp(info.driver_name, "net_tap");
		ps.acc.iface_counters = tap ? "tx_dropped" : "rx_dropped+rx_missed_errors";
		ps.if_dropped_fd = sysfs_open(ps.acc.iface, tap ? "tx_dropped" : "rx_dropped");
		ps.if_missed_fd = tap ? -1 : sysfs_open(ps.acc.iface, "rx_missed_errors");
		if (!sysfs_u64(ps.if_dropped_fd, &ps.if_dropped0))
			ps.if_dropped0 = 0;
		if (!sysfs_u64(ps.if_missed_fd, &ps.if_missed0))
			ps.if_missed0 = 0;
		if (!strcmp(info.driver_name, "net_af_packet"))
			find_packet_sockets(info.if_index);
	} else {
		ps.acc.iface[0] = '\0';
		ps.acc.iface_counters = "";
	}
	ps.acc.kernel_socket = ps.n_sock > 0;
	ps.ready = true;
	pthread_mutex_unlock(&ps.mu);
	if (!strcmp(info.driver_name, "net_af_packet") && !ps.n_sock)
		FZ_LOG(WARNING, "port %u (net_af_packet on %s): its packet socket not found: frames "
				"the kernel drops for it will not be counted",
		       port, ps.acc.iface[0] ? ps.acc.iface : "?");
	FZ_LOG(INFO, "port %u (%s%s%s): losses read from the device%s%s", port, info.driver_name,
	       ps.acc.iface[0] ? " on " : "", ps.acc.iface,
	       ps.n_sock ? ", the kernel's packet socket" : "",
	       ps.acc.iface[0] ? " and the kernel interface" : "");
	return 0;
}

/* Read everything now into ps.acc; with ps.mu held. */
static void refresh(void)
{
	if (!ps.ready || ps.closed)
		return;
	struct rte_eth_stats es;
	struct fz_port_losses *a = &ps.acc;
	if (rte_eth_stats_get(ps.port, &es) == 0) {
		a->rx_frames = es.ipackets;
		a->tx_frames = es.opackets;
		a->tx_errors = es.oerrors;
		a->imissed = es.imissed;
		a->rx_nombuf = es.rx_nombuf;
		a->ierrors = es.ierrors;
	}
	for (int i = 0; i < ps.n_sock; i++) {
		/* the kernel returns and zeroes the counters; tp_packets includes tp_drops */
		struct tpacket_stats st;
		socklen_t len = sizeof(st);
		if (getsockopt(ps.sock[i], SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0) {
			a->socket_drops += st.tp_drops;
			a->socket_frames += st.tp_packets - st.tp_drops;
		}
	}
	uint64_t v;
	if (sysfs_u64(ps.if_dropped_fd, &v) && v >= ps.if_dropped0)
		a->iface_dropped = v - ps.if_dropped0;
	if (sysfs_u64(ps.if_missed_fd, &v) && v >= ps.if_missed0)
		a->iface_missed = v - ps.if_missed0;
	a->lost = a->imissed + a->socket_drops + a->iface_dropped + a->iface_missed;
	a->unread = a->socket_frames > a->rx_frames ? a->socket_frames - a->rx_frames : 0;
}

void fz_port_stats_read(struct fz_port_losses *l)
{
	pthread_mutex_lock(&ps.mu);
	refresh();
	*l = ps.acc;
	pthread_mutex_unlock(&ps.mu);
}

void fz_port_stats_poll(void)
{
	const uint64_t now = mono_ns();
	if (now < ps.next_poll_ns)
		return;
	ps.next_poll_ns = now + PS_POLL_NS;
	struct fz_port_losses l;
	fz_port_stats_read(&l);
	if (l.lost > ps.lost_logged && now >= ps.next_log_ns) {
		FZ_LOG(WARNING, "port %u: %" PRIu64 " frames lost before RX since the last warning "
				"(%" PRIu64 " in all: imissed %" PRIu64 ", kernel socket %" PRIu64
				", interface %" PRIu64 "): more offered than the appliance takes",
		       ps.port, l.lost - ps.lost_logged, l.lost, l.imissed, l.socket_drops,
		       l.iface_dropped + l.iface_missed);
		ps.lost_logged = l.lost;
		ps.next_log_ns = now + PS_LOG_NS;
	}
}

void fz_port_stats_close(void)
{
	pthread_mutex_lock(&ps.mu);
	refresh();
	ps.closed = true;
	for (int i = 0; i < 2; i++) {
		int *fd = i ? &ps.if_missed_fd : &ps.if_dropped_fd;
		if (*fd >= 0)
			close(*fd);
		*fd = -1;
	}
	ps.n_sock = 0; /* the PMD closes its sockets */
	pthread_mutex_unlock(&ps.mu);
}
