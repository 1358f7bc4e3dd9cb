/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* Transmit through BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES (prototype,
 * measured by benchmarks/tx_bench.py): userspace writes complete Ethernet/IPv4/UDP
 * frames into the slots of an mmapped array, then one test run with repeat = n
 * runs bpf/src/txlive.bpf.c n times; run i copies slot base + i into a fresh
 * page_pool frame and redirects it (ndo_xdp_xmit, in bulk).
 *
 * And the receiving end's checker, bpf/src/txsink.bpf.c: counts and drops, and
 * when verifying records per sequence number (the first 4 bytes of the UDP
 * payload, big endian) how often it arrived, its length, destination and a hash
 * of its bytes.
 *
 * Shared by BPF C (vmlinux.h) and the userspace C of bpf/native/txpaths.c.
 */
#ifndef SFT_TXLIVE_H
#define SFT_TXLIVE_H

#if !defined(__VMLINUX_H__)
#include <linux/types.h>
#endif

#define TXLIVE_SLOT_SIZE 2048
#define TXLIVE_FRAME_MAX 2040       /* TXLIVE_SLOT_SIZE - the 8-byte slot header */
#define TXLIVE_SLOTS 1024           /* slots of the array: disjoint regions per sender */
#define TXLIVE_CTL_ENTRIES 64       /* one control block per CPU (bpf_get_smp_processor_id) */

struct txlive_slot {
	__u32 len;                  /* frame bytes, 14..TXLIVE_FRAME_MAX */
	__u32 reserved;
	__u8 frame[TXLIVE_FRAME_MAX];
};

/* Written by the sender on its CPU before each test run, read and advanced by the
 * program on the same CPU (the run cannot migrate). */
struct txlive_ctl {
	__u32 base;                 /* first slot of this run */
	__u32 count;                /* slots prepared: runs past it drop */
	__u32 next;                 /* runs so far (the program increments) */
	__u32 ifindex;              /* the test run's ingress device, redirected to; runs
				     * with another ingress (the attachment) pass */
	__u64 sent;                 /* frames handed to the redirect */
	__u64 bad;                  /* slot with a bad length or a failed helper */
	__u64 overrun;              /* runs past count */
};

#define TXSINK_MAX_SEQ 131072
#define TXSINK_SCRATCH 2048
#define TXSINK_FNV_OFFSET 0xcbf29ce484222325ULL
#define TXSINK_FNV_PRIME 0x100000001b3ULL

struct txsink_config {
	__u32 verify;               /* 1: record each sequence number (costs a hash) */
	__u32 hash_from;            /* 0: hash the whole frame; 42: the UDP payload */
	__u16 dport_lo;             /* host order: UDP ports counted, the rest passes */
	__u16 dport_hi;
	__u32 reserved;
};

struct txsink_stats {
	__u64 packets;
	__u64 bytes;                /* frame bytes */
	__u64 out_of_range;         /* verifying: sequence number >= TXSINK_MAX_SEQ */
	__u64 short_frames;         /* shorter than headers + 4 */
};

/* Per sequence number: what arrived (the last copy, and how many copies). */
struct txsink_record {
	__u32 count;
	__u32 len;                  /* frame bytes */
	__u32 daddr;                /* network order */
	__u16 dport;                /* network order */
	__u16 reserved;
	__u64 hash;                 /* FNV-1a over 8-byte little-endian words, then tail bytes, ^ length */
};

#endif /* SFT_TXLIVE_H */
