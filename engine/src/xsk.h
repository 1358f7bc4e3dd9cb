/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* AF_XDP I/O for the native engine: one port = one AF_XDP socket bound to one
 * (interface, receive queue), with its own UMEM, fill/completion and rx/tx rings,
 * made with raw socket(AF_XDP)/setsockopt/mmap (no libxdp).
 *
 * Threading contract: a port is single-threaded. Every call on a port comes from
 * the one worker thread that owns it (single producer and single consumer of each
 * of its rings); ports share nothing, so N workers run N ports without locks.
 *
 * Frames: the UMEM holds 2 x ring_size frames of frame_size bytes. The first half
 * receives (fill ring -> rx ring -> caller -> xsk_rx_release -> fill ring); the
 * second half transmits (free list -> xsk_tx_reserve -> caller writes the UDP
 * payload -> xsk_tx_submit -> tx ring -> completion ring -> free list). Since
 * every ring holds ring_size entries, no ring can overflow, provided the caller
 * releases each received frame once and submits each reserved frame once.
 *
 * Addresses and ports in descriptors and templates are in network byte order.
 * This header is also read by cffi (engine/xsk_build.py): plain declarations,
 * no macros with expressions, #-lines are dropped.
 */
#ifndef SFT_XSK_H
#define SFT_XSK_H

#include <stddef.h>
#include <stdint.h>

#define XSK_DEFAULT_RING_SIZE 2048
#define XSK_DEFAULT_FRAME_SIZE 2048
#define XSK_UDP_HEADERS_LEN 42 /* Ethernet 14 + IPv4 20 + UDP 8 */

enum xsk_bind_mode {
	XSK_MODE_AUTO = 0,     /* zero-copy when the driver offers it, else copy */
	XSK_MODE_COPY = 1,
	XSK_MODE_ZEROCOPY = 2, /* fail if the driver cannot */
};

struct xsk_config {
	uint32_t ifindex;
	uint32_t queue_id;
	uint32_t ring_size;  /* entries of each ring, a power of two; 0: XSK_DEFAULT_RING_SIZE */
	uint32_t frame_size; /* 2048 or 4096; 0: XSK_DEFAULT_FRAME_SIZE */
	uint32_t mode;       /* enum xsk_bind_mode */
	uint32_t need_wakeup; /* 1: the kernel asks for kicks only when it sleeps (default) */
};

struct xsk_port;

/* One received UDP datagram, in place in the UMEM: valid, and writable (SRTP
 * decrypts in place), until its frame is released. */
struct xsk_rx_desc {
	uint8_t *payload;     /* UDP payload */
	uint64_t handle;      /* the frame, for xsk_rx_release */
	uint32_t payload_len;
	uint32_t saddr;       /* remote */
	uint32_t daddr;       /* local */
	uint16_t sport;
	uint16_t dport;
};

/* Ethernet/IPv4/UDP headers towards one destination, built once per
 * destination (MACs from the neighbour table), copied in front of each payload. */
struct xsk_udp_template {
	uint8_t headers[XSK_UDP_HEADERS_LEN]; /* lengths and IPv4 checksum zero */
	uint16_t pad;
	uint32_t ip_sum;      /* ones'-complement sum of the IPv4 header without tot_len */
};

/* One frame to transmit: xsk_tx_reserve sets payload and handle; the caller
 * writes payload_len bytes at payload and sets payload_len and template. */
struct xsk_tx_desc {
	uint8_t *payload;
	uint64_t handle;
	uint32_t payload_len;
	uint32_t pad;
	const struct xsk_udp_template *tmpl;
};

struct xsk_port_stats {
	uint64_t rx_packets;
	uint64_t rx_bytes;    /* UDP payload bytes */
	uint64_t rx_invalid;  /* frames that were not IPv4/UDP: released at once */
	uint64_t tx_packets;
	uint64_t tx_bytes;
	uint64_t tx_invalid;  /* descriptors without template or too long: not sent */
	uint64_t tx_kicks;    /* sendto() wakeups of the kernel's transmit */
	uint64_t tx_kick_again; /* kicks answered EAGAIN/EBUSY/ENOBUFS (copy mode: more than
				* one 32-frame batch was queued); the next kick goes on */
	uint64_t fill_wakeups; /* recvfrom() wakeups of the fill ring */
	/* the kernel's XDP_STATISTICS */
	uint64_t k_rx_dropped;
	uint64_t k_rx_invalid_descs;
	uint64_t k_tx_invalid_descs;
	uint64_t k_rx_ring_full;
	uint64_t k_rx_fill_ring_empty;
	uint64_t k_tx_ring_empty;
};

/* Creates the socket, UMEM and rings and binds them. Returns 0, or -errno with
 * what failed and what to do in err. */
int xsk_port_open(const struct xsk_config *cfg, struct xsk_port **out, char *err, size_t err_len);
void xsk_port_close(struct xsk_port *port);
int xsk_port_fd(const struct xsk_port *port);           /* poll() it for POLLIN */
int xsk_port_zerocopy(const struct xsk_port *port);     /* 1: zero-copy, 0: copy mode */
uint32_t xsk_port_tx_capacity(const struct xsk_port *port); /* max payload_len */
/* Makes the port the target of its queue in an XSKMAP (BPF map fd). 0 or -errno. */
int xsk_port_attach_map(const struct xsk_port *port, int xskmap_fd);
int xsk_port_stats(const struct xsk_port *port, struct xsk_port_stats *out);

/* Up to max received datagrams. Frames that are no IPv4/UDP are released and counted. */
unsigned xsk_rx_batch(struct xsk_port *port, struct xsk_rx_desc *descs, unsigned max);
/* Gives the frames of n descriptors back to the kernel (any order). */
void xsk_rx_release(struct xsk_port *port, const struct xsk_rx_desc *descs, unsigned n);

/* Up to n free transmit frames (reaps completions first). */
unsigned xsk_tx_reserve(struct xsk_port *port, struct xsk_tx_desc *descs, unsigned n);
/* Writes headers and queues n reserved descriptors; payload_len 0 returns the
 * frame unused. Returns how many were queued. */
unsigned xsk_tx_submit(struct xsk_port *port, const struct xsk_tx_desc *descs, unsigned n);
/* Tells the kernel about queued frames and refilled receive frames, when it
 * needs telling. Copy mode sends a bounded batch (32 frames) per kick: call it
 * every loop iteration while xsk_tx_unsent() is not 0. Returns 0, or -errno of
 * a real failure (a busy kernel is not one). */
int xsk_kick(struct xsk_port *port);
/* Frames queued in the tx ring that the kernel has not taken yet. */
unsigned xsk_tx_unsent(const struct xsk_port *port);
/* Moves finished transmissions back to the free list; returns how many. */
unsigned xsk_complete(struct xsk_port *port);
/* Frames queued to the kernel and not yet completed. */
unsigned xsk_tx_in_flight(const struct xsk_port *port);

/* Headers from (src MAC, dst MAC, saddr, daddr, sport, dport), network order;
 * DF set, TTL 64, UDP checksum 0 (allowed for IPv4). */
void xsk_udp_template_build(struct xsk_udp_template *tmpl, const uint8_t src_mac[6],
			    const uint8_t dst_mac[6], uint32_t saddr, uint32_t daddr,
			    uint16_t sport, uint16_t dport, uint8_t dscp);

#endif /* SFT_XSK_H */
