/* The port's frame account, read live: what the device handed to RX and what was lost before
 * RX saw it (device counters, and for a port on a kernel interface the kernel's). Control only. */
#ifndef FZ_PORT_STATS_H
#define FZ_PORT_STATS_H

#include <net/if.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * Every counter counts since the port was set up (a kernel interface's counters since
 * fz_port_stats_init; an af_packet socket's since the PMD opened it), so that
 *   frames sent to the port = rx_frames + lost + unread (+ rx_nombuf, where the PMD drops
 *   the frame on an mbuf shortage: see below)
 * rx_nombuf is not in `lost`: most PMDs leave the frame in the device and count it in
 * imissed if the ring overflows meanwhile; a few (net_pcap) drop it. Our RX takes no more
 * frames than it has requests for, so the mbuf pool does not run dry in practice.
 */
struct fz_port_losses {
	char driver[32];
	char iface[IF_NAMESIZE];  /* the kernel interface the port sits on, "" if none */
	uint64_t rx_frames;       /* rte_eth_stats ipackets: frames the PMD handed to RX */
	uint64_t tx_frames, tx_errors;   /* opackets, oerrors */
	uint64_t imissed, rx_nombuf, ierrors;
	/* net_af_packet: PACKET_STATISTICS of the PMD's sockets, summed (read-and-reset by the
	 * kernel, accumulated here) */
	bool kernel_socket;
	uint64_t socket_frames;   /* frames the kernel put into the sockets' rings */
	uint64_t socket_drops;    /* frames the kernel dropped: a ring was full (tp_drops) */
	/* the kernel interface's drops of frames on their way to us (/sys/class/net/IF/
	 * statistics): for a port reading the interface (net_af_packet) its rx_dropped (the
	 * backlog was full) and rx_missed_errors (a NIC's ring was full); for net_tap, where the
	 * kernel transmits to us, tx_dropped (the tap's queue was full) */
	const char *iface_counters; /* which: "rx_dropped+rx_missed_errors" or "tx_dropped" */
	uint64_t iface_dropped, iface_missed;
	uint64_t lost;   /* imissed + socket_drops + iface_dropped + iface_missed */
	uint64_t unread; /* in the sockets' rings, not yet taken by RX (socket_frames - rx_frames) */
};

/* Find what the port `port` sits on (af_packet sockets, a kernel interface) and take the
 * interface's counters as the baseline. Call after the port started, before privileges drop.
 * Returns 0 (a port with nothing to find is fine) or -errno. */
int fz_port_stats_init(uint16_t port);

/* Read every counter now and copy the account to *l; thread-safe (the control thread polls,
 * telemetry asks). After fz_port_stats_close, the last account. */
void fz_port_stats_read(struct fz_port_losses *l);

/* The control thread's periodic read: keeps the kernel's 32-bit socket counters from wrapping
 * and logs (rate-limited) when frames are being lost before RX. */
void fz_port_stats_poll(void);

/* The final read, before the port closes (its sockets go with it). */
void fz_port_stats_close(void);

#endif /* FZ_PORT_STATS_H */
