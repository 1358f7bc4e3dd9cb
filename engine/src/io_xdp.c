/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* The AF_XDP backend of io.h on the ports of xsk.c. */
#include "io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KICKS_PER_FLUSH 64 /* copy mode: 32 frames a kick; what is left goes with the next */

struct io_xdp_port *io_xdp_open(uint32_t ifindex, uint32_t queue, uint32_t ring_size,
				uint32_t mode, int xskmap_fd, char *err, size_t errlen)
{
	struct xsk_config cfg = {.ifindex = ifindex, .queue_id = queue, .ring_size = ring_size,
				 .mode = mode, .need_wakeup = 1};
	struct io_xdp_port *p = calloc(1, sizeof(*p));
	int ret;

	if (p == NULL) {
		snprintf(err, errlen, "out of memory for an AF_XDP port");
		return NULL;
	}
	p->epoll_tag = IO_EPOLL_PORT;
	p->ifindex = ifindex;
	p->queue = queue;
	if (xsk_port_open(&cfg, &p->port, err, errlen) < 0) {
		free(p);
		return NULL;
	}
	ret = xsk_port_attach_map(p->port, xskmap_fd);
	if (ret < 0) {
		snprintf(err, errlen, "AF_XDP port on ifindex %u queue %u: the XSKMAP refused it: %s",
			 ifindex, queue, strerror(-ret));
		io_xdp_close(p);
		return NULL;
	}
	return p;
}

void io_xdp_close(struct io_xdp_port *p)
{
	xsk_port_close(p->port);
	free(p);
}

int io_xdp_fd(const struct io_xdp_port *p) { return xsk_port_fd(p->port); }
int io_xdp_zerocopy(const struct io_xdp_port *p) { return xsk_port_zerocopy(p->port); }

uint64_t io_xdp_rx_dropped(const struct io_xdp_port *p)
{
	struct xsk_port_stats stats;

	if (xsk_port_stats(p->port, &stats) != 0) /* the kernel's figures: thread-safe */
		return 0;
	return stats.k_rx_dropped + stats.k_rx_ring_full; /* fill ring empty: in dropped */
}

unsigned io_xdp_receive(struct io_xdp_port *p, struct xsk_rx_desc *rx, unsigned max)
{
	return xsk_rx_batch(p->port, rx, max);
}

void io_xdp_release(struct io_xdp_port *p, const struct xsk_rx_desc *rx, unsigned n)
{
	xsk_rx_release(p->port, rx, n);
	xsk_kick(p->port); /* the fill ring's wake-up, if the kernel asks for one */
}

void io_xdp_header(struct xsk_udp_template *header, const uint8_t src_mac[6],
		   const uint8_t dst_mac[6], uint32_t local_ip, uint32_t remote_ip,
		   uint16_t local_port, uint16_t remote_port)
{
	xsk_udp_template_build(header, src_mac, dst_mac, local_ip, remote_ip, local_port,
			       remote_port, 0);
}

struct xsk_tx_desc *io_xdp_reserve(struct io_xdp_port *p)
{
	struct xsk_tx_desc *d = &p->pending[p->n_pending];

	if (p->n_pending == IO_TX_BATCH || xsk_tx_reserve(p->port, d, 1) != 1)
		return NULL;
	p->n_pending++;
	return d;
}

void io_xdp_commit(struct io_xdp_port *p, struct xsk_tx_desc *d, uint32_t len,
		   const struct xsk_udp_template *tmpl)
{
	d->payload_len = len;
	d->tmpl = tmpl;
}

unsigned io_xdp_flush(struct io_xdp_port *p, uint64_t *kicks, uint64_t *errors)
{
	unsigned wanted = 0, queued = 0;

	if (p->n_pending == 0 && xsk_tx_unsent(p->port) == 0)
		return 0;
	for (unsigned i = 0; i < p->n_pending; i++)
		wanted += p->pending[i].payload_len != 0;
	if (p->n_pending)
		queued = xsk_tx_submit(p->port, p->pending, p->n_pending);
	*errors += wanted - queued;
	p->n_pending = 0;
	for (int k = 0; k < KICKS_PER_FLUSH && xsk_tx_unsent(p->port); k++) {
		(*kicks)++;
		if (xsk_kick(p->port) < 0) {
			(*errors)++;
			break;
		}
	}
	return queued;
}
