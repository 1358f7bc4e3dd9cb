/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* Busy-polling loops over one AF_XDP port, for benchmarks and tests of the port
 * module without the engine: an echo (what a forwarder does per packet: a
 * received payload copied into a frame towards another destination) and a
 * windowed sender that counts what comes back. Same threading contract as xsk.h. */
#ifndef SFT_XSK_LOOP_H
#define SFT_XSK_LOOP_H

#include "xsk.h"

struct xsk_blast_result {
	uint64_t sent;
	uint64_t received;
	uint64_t elapsed_ns;
};

/* Echoes every received datagram towards tmpl for duration_ns; returns how many.
 * busy_poll 0: sleep in poll() while there is nothing to do (shared CPUs). */
uint64_t xsk_echo_run(struct xsk_port *port, const struct xsk_udp_template *tmpl,
		      uint64_t duration_ns, int busy_poll);
/* Sends RTP-shaped payloads of payload_len (>= 20) bytes towards tmpl for duration_ns,
 * keeping at most window sent and not yet received back. */
void xsk_blast_run(struct xsk_port *port, const struct xsk_udp_template *tmpl,
		   uint32_t payload_len, uint32_t window, uint64_t duration_ns, int busy_poll,
		   struct xsk_blast_result *out);

#endif /* SFT_XSK_LOOP_H */
