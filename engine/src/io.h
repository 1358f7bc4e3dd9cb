/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* The engine's I/O boundary: a backend receives batches of (leg, payload, source)
 * and sends batches of (payload, destination, leg socket). Stage 1 is UDP
 * sockets (io_udp.c: recvmmsg/sendmmsg on the legs' own sockets); AF_XDP
 * (xsk.c) plugs in here later. Backends are called by one worker thread only. */
#ifndef SFTE_IO_H
#define SFTE_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "engine.h"

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

#endif
