// SPDX-License-Identifier: AGPL-3.0-or-later
/* Echo and windowed sender over one AF_XDP port; see xsk_loop.h. */
#include "xsk_loop.h"

#include <poll.h>
#include <string.h>
#include <time.h>

#define BATCH 64

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Sleeps in poll() until the rx ring has something, for 1 ms at most. */
static void wait_rx(struct xsk_port *port)
{
	struct pollfd pfd = { .fd = xsk_port_fd(port), .events = POLLIN };

	poll(&pfd, 1, 1);
}

uint64_t xsk_echo_run(struct xsk_port *port, const struct xsk_udp_template *tmpl,
		      uint64_t duration_ns, int busy_poll)
{
	struct xsk_rx_desc rx[BATCH];
	struct xsk_tx_desc tx[BATCH];
	uint64_t deadline = now_ns() + duration_ns, echoed = 0;
	unsigned n, m, i;

	while (now_ns() < deadline) {
		n = xsk_rx_batch(port, rx, BATCH);
		if (n) {
			m = xsk_tx_reserve(port, tx, n);
			for (i = 0; i < m; i++) {
				memcpy(tx[i].payload, rx[i].payload, rx[i].payload_len);
				tx[i].payload_len = rx[i].payload_len;
				tx[i].tmpl = tmpl;
			}
			echoed += xsk_tx_submit(port, tx, m);
			xsk_rx_release(port, rx, n);
		}
		xsk_kick(port);
		if (!n && !busy_poll && !xsk_tx_unsent(port))
			wait_rx(port);
	}
	return echoed;
}

void xsk_blast_run(struct xsk_port *port, const struct xsk_udp_template *tmpl,
		   uint32_t payload_len, uint32_t window, uint64_t duration_ns, int busy_poll,
		   struct xsk_blast_result *out)
{
	struct xsk_rx_desc rx[BATCH];
	struct xsk_tx_desc tx[BATCH];
	uint64_t start = now_ns(), deadline = start + duration_ns, t;
	unsigned n, i, want;

	if (payload_len < 20) /* RTP header and an 8-byte sequence number */
		payload_len = 20;
	if (payload_len > xsk_port_tx_capacity(port))
		payload_len = xsk_port_tx_capacity(port);
	memset(out, 0, sizeof(*out));
	while ((t = now_ns()) < deadline) {
		want = out->sent - out->received < window ?
			(unsigned)(window - (out->sent - out->received)) : 0;
		if (want > BATCH)
			want = BATCH;
		n = want ? xsk_tx_reserve(port, tx, want) : 0;
		for (i = 0; i < n; i++) {
			uint64_t seq = out->sent + i;

			memset(tx[i].payload, 0, payload_len);
			tx[i].payload[0] = 0x80; /* RTP version 2, payload type 111 */
			tx[i].payload[1] = 111;
			memcpy(tx[i].payload + 12, &seq, 8);
			tx[i].payload_len = payload_len;
			tx[i].tmpl = tmpl;
		}
		out->sent += xsk_tx_submit(port, tx, n);
		xsk_kick(port);
		n = xsk_rx_batch(port, rx, BATCH);
		out->received += n;
		xsk_rx_release(port, rx, n);
		if (!n && !busy_poll && !want && !xsk_tx_unsent(port))
			wait_rx(port);
	}
	/* what is still on its way comes back within a moment */
	deadline = now_ns() + 100000000ull;
	while (out->received < out->sent && now_ns() < deadline) {
		xsk_kick(port);
		n = xsk_rx_batch(port, rx, BATCH);
		out->received += n;
		xsk_rx_release(port, rx, n);
	}
	out->elapsed_ns = t - start;
}
