/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* Transmit loops of benchmarks/tx_bench.py, one per way of sending many small
 * UDP datagrams to distinct destinations out of one interface: UDP sockets
 * (sendmmsg on one unconnected socket, send() on connected sockets, sendto() on
 * one unconnected socket per destination), AF_PACKET's TX ring with
 * PACKET_QDISC_BYPASS, an AF_XDP port (engine/src/xsk.c) and BPF_PROG_TEST_RUN
 * with live frames (bpf/src/txlive.bpf.c).
 *
 * Every loop does the same per-packet userspace work: write the payload of
 * sequence number s (payload_len bytes from pattern + (s & 255), s stamped big
 * endian in its first 4 bytes) into the path's transmit buffer, for destination
 * s % ndest, and the raw paths write the Ethernet/IPv4/UDP headers. No crypto.
 * Loops run on the calling thread; they return 0 or -errno. Read by cffi
 * (bpf/native/txpaths_build.py): plain declarations only.
 */
#ifndef SFT_TXPATHS_H
#define SFT_TXPATHS_H

#include <stddef.h>
#include <stdint.h>

#define TXP_UDP_ONE_SOCKET 0   /* sendmmsg(batch) with a msg_name each, on fds[0] */
#define TXP_UDP_CONNECTED 1    /* send() on fds[d], connected to destination d */
#define TXP_UDP_PER_DEST 2     /* sendto() on fds[d], unconnected (a socket per leg) */

struct txp_config {
	uint32_t payload_len;  /* UDP payload bytes, >= 4 */
	uint32_t batch;        /* packets per system call or flush */
	uint32_t ndest;        /* destinations, round robin by sequence number */
	uint32_t seq_start;
	uint64_t packets;      /* stop after this many; 0: after duration_ns */
	uint64_t duration_ns;
	uint32_t saddr;        /* network order (raw paths) */
	uint32_t daddr_base;   /* host order: destination d is daddr_base + d */
	uint16_t sport;        /* host order */
	uint16_t dport_base;   /* host order: destination d is dport_base + d */
	uint8_t src_mac[6];
	uint8_t dst_mac[6];
	const uint8_t *pattern; /* >= 256 + payload_len bytes */
	uint32_t payload_len_odd; /* odd sequence numbers' payload bytes; 0: payload_len */
	uint32_t reserved;
};

struct txp_result {
	uint64_t sent;         /* packets the kernel accepted */
	uint64_t syscalls;
	uint64_t errors;       /* packets refused, calls failed */
	uint64_t elapsed_ns;
	uint64_t thread_ns;    /* CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID) */
	int32_t last_errno;
	uint32_t pad;
};

int txp_udp(const struct txp_config *cfg, const int *fds, uint32_t nfds, int mode,
	    struct txp_result *res);
/* frame_nr: frames of the TX ring (>= batch), 2048 bytes each */
int txp_packet_ring(const struct txp_config *cfg, int ifindex, uint32_t frame_nr,
		    struct txp_result *res);
/* An AF_XDP port on (ifindex, queue 0) in copy mode, transmit only. */
int txp_xsk(const struct txp_config *cfg, int ifindex, uint32_t ring_size,
	    struct txp_result *res, char *err, size_t err_len);
/* slots, ctl: the mmapped txlive_slots and txlive_ctl arrays; slot_base: first
 * slot this thread uses (batch slots from there); ifindex: the device the test
 * run's frames enter (its namespace is the caller's) and are redirected to;
 * kernel_batch: bpf_test_run_opts.batch_size (<= 256). */
int txp_live(const struct txp_config *cfg, int prog_fd, void *slots, void *ctl,
	     uint32_t slot_base, int ifindex, uint32_t kernel_batch, struct txp_result *res);

#endif /* SFT_TXPATHS_H */
