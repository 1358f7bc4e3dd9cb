/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* The AF_XDP backend of io.h on the ports of xsk.c. */
#include "io.h"

#define KICKS_PER_FLUSH 64 /* copy mode: 32 frames a kick; what is left goes with the next */

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
