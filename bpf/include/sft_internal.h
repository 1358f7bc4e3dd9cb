/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* BPF-only types and constants: working memory, never seen by Python. */
#ifndef SFT_INTERNAL_H
#define SFT_INTERNAL_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include "sft_abi.h"

#define ETH_P_IP 0x0800
#define ETH_HLEN 14
#define IPPROTO_UDP 17
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define SFT_CHECKSUM_PARTIAL 3 /* skb->ip_summed */
#define SFT_IFF_LOOPBACK 0x8
#define SFT_L3_OFF ETH_HLEN
#define SFT_L4_OFF (ETH_HLEN + 20) /* IPv4 without options only */
#define SFT_RTP_OFF (SFT_L4_OFF + 8)
#define SFT_RTP_MIN (12 + SFT_AUTH_TAG_LEN)

/* Scratch buffers are indexed with `& SFT_BUF_MASK`; the slack keeps every
 * multi-byte access at a masked offset inside the buffer. */
#define SFT_BUF 2048
#define SFT_BUF_MASK (SFT_BUF - 1)
#define SFT_BUF_SLACK 128
#define SFT_SHA1_MAX_BLOCKS ((SFT_MAX_RTP + 8 + 4 + 9 + 63) / 64)

#define SFT_TS_STEP_AUDIO 960  /* 20 ms at 48 kHz: gap left when a slot switches source */
#define SFT_TS_STEP_VIDEO 3000 /* 33 ms at 90 kHz */

/* Stops clang from merging range checks into one compare whose bounds the
 * verifier (6.18) cannot map back onto the variable. */
#define sft_barrier_var(v) asm volatile("" : "+r"(v))

/* Global-function pointer arguments the verifier (6.8+) treats as non-NULL. */
#define __arg_nonnull __attribute__((btf_decl_tag("arg:nonnull")))
#define __arg_ctx __attribute__((btf_decl_tag("arg:ctx")))

struct sft_buf {
	__u8 b[SFT_BUF + SFT_BUF_SLACK];
};

/* One SHA-1 block; callers pass 4-byte aligned offsets so the words load whole. */
struct sft_block {
	union {
		__u8 b[64];
		__u32 w[16];
	};
};

struct sft_sha1_work {
	__u32 w[16]; /* message schedule ring */
	struct sft_sha1_state st;
	__u32 pad;
	struct sft_block block; /* outer HMAC block */
	__u8 digest[24];
};

/* One received packet, parsed once; the fan-out re-reads it from here. */
struct sft_packet {
	__u64 now_ns;        /* bpf_ktime_get_ns() read once per packet, for every use */
	__u64 index;         /* SRTP index of the received packet */
	__u64 seq_index;     /* index less the stream's dropped padding-only packets */
	__u32 padding_dropped; /* the stream's count of them, for the slots' floors */
	__u32 leg_id;
	__u32 conference_id;
	__u32 ssrc;
	__u32 timestamp;
	__u32 rtp_len;       /* received SRTP length incl. tag */
	__u32 out_rtp_len;   /* forwarded SRTP length incl. tag (CC = 1) */
	__u32 ext_off;       /* header extension (incl. its 4-byte header) in `in` */
	__u32 ext_len;
	__u32 payload_off;
	__u32 payload_len;
	__u8 byte0;
	__u8 byte1;
	__u8 kind;
	__u8 keyframe;
	/* header extensions found */
	__u8 rid;            /* SFT_LAYER_UNKNOWN when absent */
	__u8 audio_level;    /* 0xff when absent */
	__u8 has_fd;
	__u8 fd0;            /* generic frame descriptor, first byte */
	__u8 iph[20];        /* received IPv4 header */
	__u8 csum_partial;   /* sent locally (loopback): the UDP checksum is left to
			      * whoever completes CHECKSUM_PARTIAL */
	__u8 has_twcc;
	__u16 twcc_seq;      /* transport-wide sequence number, when has_twcc */
	__u8 stale;          /* a copy was dropped as older than its slot's source */
};

struct sft_scratch {
	struct sft_buf in;  /* received RTP, payload decrypted in place */
	struct sft_buf out; /* UDP header + SRTP for one subscriber */
	struct sft_sha1_work sha;
	struct sft_packet pkt;
	struct sft_stream_state fresh; /* a new stream's first state; off the 512-byte stack */
};

#endif /* SFT_INTERNAL_H */
