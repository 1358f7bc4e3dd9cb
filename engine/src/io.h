/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* The engine's I/O boundary. Two backends; each of a worker's sockets and ports
 * is driven by that worker alone.
 *
 * udp (io_udp.c): recvmmsg/sendmmsg on the legs' own sockets. Everything a leg
 *     receives arrives here unless it is steered away.
 * xdp (io_xdp.c): AF_XDP ports (xsk.c), one per (interface, receive queue). The
 *     steering program (bpf/src/steer.bpf.c) redirects the RTP of registered
 *     5-tuples into them; STUN, DTLS and RTCP still reach the legs' sockets. A
 *     copy is written straight into a UMEM frame and framed with its subscriber's
 *     pre-built Ethernet/IPv4/UDP header; a flush submits the batch and kicks once
 *     per batch the kernel takes (copy mode takes 32 frames per kick). */
#ifndef SFTE_IO_H
#define SFTE_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "engine.h"
#include "xsk.h"

#define IO_BATCH 32   /* datagrams per receive call */
#define IO_TX_BATCH 256 /* copies queued before they go out */

struct io_rx {
	uint8_t data[SFTE_MAX_PACKET];
	size_t len;
	struct sockaddr_storage source;
	socklen_t source_len;
};

struct io_tx {
	int fd; /* the subscriber leg's socket */
	struct sockaddr_storage dest;
	socklen_t dest_len;
	size_t len;
	uint8_t data[SFTE_MAX_PACKET];
};

/* Receive up to ``max`` datagrams from ``fd`` without blocking; the count, or 0. */
int io_udp_receive(int fd, struct io_rx *rx, int max);
/* Send ``n`` copies (ordered by socket by the caller), consecutive copies on one
 * socket in one sendmmsg. Returns the
 * number the kernel refused; *calls counts the sendmmsg calls. */
int io_udp_send(struct io_tx *const *tx, int n, uint64_t *calls);

/* One AF_XDP port as a worker drives it: the copies reserved since the last flush. */
struct io_xdp_port {
	int epoll_tag; /* IO_EPOLL_PORT: what the worker's epoll data points at */
	struct xsk_port *port;
	uint32_t ifindex;
	uint32_t queue;
	unsigned n_pending;
	struct xsk_tx_desc pending[IO_TX_BATCH];
};

#define IO_EPOLL_LEG 1
#define IO_EPOLL_PORT 2

/* Opens a port on (ifindex, queue) (mode: enum xsk_bind_mode) and makes it its
 * queue's target in the XSKMAP ``xskmap_fd``; NULL with the reason in err. */
struct io_xdp_port *io_xdp_open(uint32_t ifindex, uint32_t queue, uint32_t ring_size,
				uint32_t mode, int xskmap_fd, char *err, size_t errlen);
void io_xdp_close(struct io_xdp_port *p);
int io_xdp_fd(const struct io_xdp_port *p); /* readable: steered datagrams wait */
int io_xdp_zerocopy(const struct io_xdp_port *p);
/* Steered datagrams the kernel dropped at the port (no free frame, rx ring full);
 * any thread may ask. */
uint64_t io_xdp_rx_dropped(const struct io_xdp_port *p);
/* Up to ``max`` received datagrams, in place in their frames (writable); every one
 * goes back with io_xdp_release, which also wakes the kernel if it asks. */
unsigned io_xdp_receive(struct io_xdp_port *p, struct xsk_rx_desc *rx, unsigned max);
void io_xdp_release(struct io_xdp_port *p, const struct xsk_rx_desc *rx, unsigned n);
/* The Ethernet/IPv4/UDP header of copies from local to remote (network order). */
void io_xdp_header(struct xsk_udp_template *header, const uint8_t src_mac[6],
		   const uint8_t dst_mac[6], uint32_t local_ip, uint32_t remote_ip,
		   uint16_t local_port, uint16_t remote_port);

/* A free frame for the next copy (its payload pointer), or NULL when the port has
 * none; the caller flushes first when n_pending is IO_TX_BATCH. The frame is
 * pending until io_xdp_commit gives its length (0: unused, returned). */
struct xsk_tx_desc *io_xdp_reserve(struct io_xdp_port *p);
void io_xdp_commit(struct io_xdp_port *p, struct xsk_tx_desc *d, uint32_t len,
		   const struct xsk_udp_template *tmpl);
/* Submits the pending copies and kicks until the kernel took them. Returns the
 * copies queued; *kicks counts the kicks, *errors the copies not sent. */
unsigned io_xdp_flush(struct io_xdp_port *p, uint64_t *kicks, uint64_t *errors);

#endif
