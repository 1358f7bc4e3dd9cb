/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* The one contract between the BPF programs and Python (bpf/abi.py reads this
 * file through cffi; tests/kernel/test_abi.py compares it with the object's BTF).
 *
 * Rules for this file, so that cffi can take its preprocessed form:
 *   - integer constants are plain `#define NAME <integer>` or enum members;
 *   - only the types __u8 __u16 __u32 __u64 __be16 __be32 (given by vmlinux.h
 *     in BPF C and by abi.py in Python);
 *   - every struct is padded explicitly, no implicit holes, size % 8 == 0.
 * Ownership: "controller-owned" maps are written only by Python, on state
 * changes; "kernel-owned" values are written by the programs, and by Python
 * only when it creates the entry.
 */
#ifndef SFT_ABI_H
#define SFT_ABI_H

#if !defined(__VMLINUX_H__) && !defined(SFT_ABI_CFFI)
#include <linux/types.h>
#endif

/* ---- limits (compile-time, the verifier needs them) ---- */
#define SFT_MAX_LEGS 4096
#define SFT_MAX_STREAMS 16384
#define SFT_MAX_SLOTS 32768
#define SFT_MAX_FANOUT 64          /* slots fed by one publisher */
/* SSRCs one leg may publish (receive state each): 1 audio + simulcast layers
 * + their RTX with room to spare; a new SSRC past it is dropped, never stored */
#define SFT_MAX_SSRCS_PER_LEG 8
#define SFT_MAX_CONFERENCES 4096  /* = legs: a conference that forwards has legs */
#define SFT_KEYSTREAM_ENTRIES 8192 /* shared by all rings; 12 MB */
#define SFT_MAX_RTP 1472           /* SRTP packet incl. tag: 1500 MTU - IPv4 - UDP */
#define SFT_KEYSTREAM_BYTES 1456   /* >= SFT_MAX_RTP - 12 - 10, multiple of 16 */
#define SFT_AUTH_TAG_LEN 10        /* HMAC-SHA1-80 */
#define SFT_REPLAY_WINDOW 64
#define SFT_LAYERS 2
#define SFT_LAYER_UNKNOWN 255
#define SFT_LEASE_TIMEOUT_NS 30000000000ULL
/* A simulcast layer with no media for this long counts as paused (senders
 * pause their higher layers when the estimate drops): slots fall back. */
#define SFT_LAYER_STALE_NS 500000000ULL
#define SFT_TWCC_RINGS 4096          /* = SFT_MAX_LEGS: one arrival-record ring per leg */
#define SFT_TWCC_RECORDS 256         /* per ring, a power of two; read every 100 ms */
#define SFT_TWCC_LAP_VALID 0x8000    /* set in every written record's lap */

/* Names and values identical to controller.dataplane.Counter. */
enum sft_counter {
	SFT_CTR_RX_PACKETS = 0,
	SFT_CTR_RX_BYTES = 1,
	SFT_CTR_TX_PACKETS = 2,
	SFT_CTR_TX_BYTES = 3,
	SFT_CTR_DROP_AUTH = 4,
	SFT_CTR_DROP_REPLAY = 5,
	SFT_CTR_DROP_UNKNOWN_LEG = 6,
	SFT_CTR_DROP_MALFORMED = 7,
	SFT_CTR_DROP_NO_ROUTE = 8,
	SFT_CTR_DROP_PADDING = 9,
	SFT_CTR_DROP_NOT_READY = 10,
	SFT_CTR_DROP_SSRC_LIMIT = 11, /* a new SSRC past SFT_MAX_SSRCS_PER_LEG */
	SFT_CTR_DROP_LEASE_EXPIRED = 12, /* the controller stopped renewing the leg */
	SFT_CTR_DROP_LEG_REPLACED = 13,  /* the leg changed hands while the packet was read */
	SFT_CTR_DROP_ADJUST_FAILED = 14, /* the packet could not be grown for the CSRC */
	SFT_CTR_DROP_UNKNOWN_SSRC = 15,  /* a leg's SSRC neither declared nor named by a RID */
	SFT_CTR_DROP_STALE = 16,         /* a copy older than its slot's floor */
	SFT_CTR_MAX = 17,
};

/* Kernel-only detail behind the counters above (reasons, misses, errors). */
enum sft_kcounter {
	SFT_K_XDP_PASS_STUN = 0,
	SFT_K_XDP_PASS_DTLS = 1,
	SFT_K_XDP_PASS_RTCP = 2,
	SFT_K_XDP_PASS_RTP = 3,
	SFT_K_XDP_DROP_SHORT = 4,      /* UDP payload too short for any protocol we speak */
	SFT_K_XDP_DROP_JUNK = 5,       /* first byte is no STUN/DTLS/RTP/RTCP */
	SFT_K_XDP_DROP_UNKNOWN = 6,    /* RTP from an address no leg validated */
	SFT_K_XDP_DROP_FRAGMENT = 7,   /* IP fragment aimed at the media ports */
	SFT_K_TC_PASS_CONTROL = 8,     /* STUN/DTLS/RTCP of a leg, to its socket */
	SFT_K_TC_BAD_VERSION = 9,
	SFT_K_TC_TRUNCATED = 10,
	SFT_K_TC_OVERSIZE = 11,
	SFT_K_TC_LEASE_EXPIRED = 12,
	SFT_K_TC_RX_KEYSTREAM_MISS = 13,
	SFT_K_TC_TX_KEYSTREAM_MISS = 14,
	SFT_K_TC_WAIT_KEYFRAME = 15,   /* a slot waits for a keyframe of its new source */
	SFT_K_TC_NO_ROUTE_TO_LEG = 16, /* subscriber leg has no ifindex/MACs */
	SFT_K_TC_CLONE_FAILED = 17,
	SFT_K_TC_ADJUST_FAILED = 18,
	SFT_K_TC_STORE_FAILED = 19,
	SFT_K_TC_GSO_PASSED = 20,
	SFT_K_TC_UNKNOWN_SSRC = 21,    /* no stream entry and no RID to learn it from */
	SFT_K_TC_LEG_REPLACED = 22,    /* the sft_legs element changed hands mid-packet */
	SFT_K_TC_CONF_COUNTER_FULL = 23, /* sft_conf_packets full: forwarded, not counted */
	SFT_K_TWCC_RECORDS_DROPPED = 24, /* transport-wide arrival not recorded: ring full */
	SFT_K_TC_RX_KEYSTREAM_OVERWRITTEN = 25, /* refilled while XORed: the packet is dropped */
	SFT_K_TC_TX_KEYSTREAM_OVERWRITTEN = 26, /* refilled while XORed: the copy is dropped */
	SFT_K_TC_EVENT_LOST = 27,          /* sft_events full: a refill request or new stream lost */
	SFT_K_TC_STREAM_STATE_FAILED = 28, /* a new SSRC's receive state could not be stored */
	SFT_K_MAX = 29,
};

enum sft_stream_kind {
	SFT_KIND_AUDIO = 0,
	SFT_KIND_VIDEO = 1,
};

enum sft_event_type {
	SFT_EV_STREAM_KEYSTREAM = 1, /* an ingress stream needs keystream from .index on */
	SFT_EV_SLOT_KEYSTREAM = 2,   /* a slot needs keystream from .index on */
	SFT_EV_NEW_STREAM = 3,       /* a video SSRC was learned from its RID */
};

enum sft_leg_flags {
	SFT_LEG_ACTIVE = 1,
};

enum sft_slot_flags {
	SFT_SLOT_ACTIVE = 1,
	/* this generation moved to another layer of the same publisher: the
	 * current layer flows on until the new one's keyframe */
	SFT_SLOT_LAYER_MOVE = 2,
};

/* sft_config[0], controller-owned. */
struct sft_config {
	__u16 port_min; /* media port range, host order, inclusive */
	__u16 port_max;
	__u32 flags;
	__u64 lease_timeout_ns;
	__u64 layer_pause_ns; /* 0: SFT_LAYER_STALE_NS */
};

/* sft_leg_by_addr key: the ICE-validated 5-tuple as it arrives. */
struct sft_addr_key {
	__be32 remote_ip;
	__be32 local_ip;
	__be16 remote_port;
	__be16 local_port;
};

/* sft_leg_by_local key: a leg's own socket (the host candidate ICE chose).
 * Traffic to any other local address/port is not the data plane's business. */
struct sft_local_key {
	__be32 local_ip;
	__be16 local_port;
	__u16 pad;
};

/* SHA-1 chaining values after hashing one 64-byte block. */
struct sft_sha1_state {
	__u32 h[5];
};

/* HMAC-SHA1 key as the states after (key ^ ipad) and (key ^ opad). */
struct sft_hmac_key {
	struct sft_sha1_state inner;
	struct sft_sha1_state outer;
};

/* sft_legs[leg_id], controller-owned, written only when the leg changes: a
 * preallocated hash map hands a replaced element to the next update at once,
 * so a program still reading it would see another leg (hence sft_leases). */
struct sft_leg {
	__u32 leg_id; /* == the key: programs re-check it after long reads */
	__u32 conference_id;
	__be32 local_ip;
	__be32 remote_ip;
	__be16 local_port;
	__be16 remote_port;
	__u32 ifindex; /* egress towards remote_ip */
	__u8 src_mac[6];
	__u8 dst_mac[6];
	__u8 ext_audio_level; /* one/two-byte header extension ids, 0 = none */
	__u8 ext_rid;
	__u8 ext_frame_descriptor;
	__u8 flags;
	__u8 ext_transport_cc;
	__u8 pad[3];
	__u32 twcc_ring; /* sft_twcc_rings index of this leg */
	struct sft_hmac_key rx_auth; /* verifies what the leg publishes */
	struct sft_hmac_key tx_auth; /* signs what the leg receives */
};

/* sft_leg_state[leg_id], kernel-owned. */
struct sft_leg_state {
	__u32 audio_level_fp;            /* smoothed -dBov x 256, k = 0.5 */
	__u32 video_ssrc[SFT_LAYERS];    /* publisher SSRC last seen per layer */
	__u32 ssrc_count;                /* sft_stream_state entries made for the leg */
	__u64 rx_packets;
	__u64 video_media_ns[SFT_LAYERS]; /* last non-padding packet per layer */
};

struct sft_stream_key {
	__u32 leg_id;
	__u32 ssrc;
};

/* sft_streams[leg, ssrc], controller-owned: a publisher's SSRC. */
struct sft_stream {
	__u32 ks_base; /* first entry of this stream's keystream ring */
	__u32 ks_size; /* ring entries, a power of two; 0 = none yet */
	__u8 kind;     /* enum sft_stream_kind */
	__u8 layer;    /* declared layer or SFT_LAYER_UNKNOWN */
	__u16 pad;
	__u32 pad2;
};

/* sft_stream_state[leg, ssrc], kernel-owned: SRTP receive state. */
struct sft_stream_state {
	__u64 highest_index; /* ROC << 16 | SEQ of the newest authentic packet */
	__u64 replay_window; /* bit i set: highest_index - i was received */
	__u64 packets;
	__u8 layer_learned; /* from the RID extension, or SFT_LAYER_UNKNOWN */
	__u8 kind;
	__u16 pad;
	__u32 padding_dropped; /* padding-only packets dropped: later ones move down */
	/* RFC 3550 receive statistics, for the controller's receiver reports */
	__u64 first_index;   /* SRTP index of the stream's first authentic packet */
	__u32 jitter_q4;     /* interarrival jitter x 16, RTP timestamp units */
	__u32 last_transit;  /* arrival (RTP clock) - RTP timestamp of the last packet */
};

/* sft_slots[slot_id], controller-owned: one sendonly m-line of a subscriber. */
struct sft_slot {
	__u32 subscriber; /* leg_id */
	__u32 ssrc;       /* the SFT-chosen SSRC of the slot */
	__u32 publisher;  /* leg_id, meaningful when SFT_SLOT_ACTIVE */
	__u32 csrc;
	__u32 generation; /* changes with every set_slot */
	__u32 ks_base;
	__u32 ks_size;
	__u8 kind;
	__u8 layer; /* preferred video layer */
	__u8 flags;
	__u8 pad;
};

/* sft_slot_state[slot_id], kernel-owned rewrite state (created by Python). */
struct sft_slot_state {
	__u64 next_index;    /* SRTP index (ROC << 16 | SEQ) past the newest packet sent */
	__u64 index_offset;  /* out index = source's sft_packet.seq_index + index_offset */
	__u32 generation;    /* the sft_slot generation this state follows */
	__u32 source_ssrc;   /* publisher SSRC being forwarded, 0 = none yet */
	__u32 ts_offset;     /* out timestamp = in timestamp + ts_offset */
	__u32 last_out_ts;
	__u64 packets;
	__u32 publisher;     /* the leg source_ssrc belongs to */
	/* the source stream's padding_dropped when floor_index was last set: a
	 * padding packet dropped since has moved the mapping down by one */
	__u32 padding_seen;
	/* next_index when the mapping last moved (the current source's first copy, a
	 * padding packet dropped): a copy before it would be protected at an index
	 * the slot already used */
	__u64 floor_index;
};

/* sft_fanout[publisher leg_id], controller-owned: slots fed by the publisher. */
struct sft_fanout {
	__u32 count;
	__u32 slot_ids[SFT_MAX_FANOUT];
	__u32 pad;
};

/* sft_keystream[i], mmapable, filled ahead by Python: AES-CM keystream of one
 * (SSRC, index). Rings of entries belong to one stream or slot each. */
struct sft_keystream {
	__u64 index_tag; /* SRTP index + 1 this entry holds, 0 = empty */
	__u32 ssrc;
	__u16 valid_len; /* bytes of keystream written */
	__u16 pad;
	__u8 bytes[SFT_KEYSTREAM_BYTES];
};

/* One authentic packet's transport-wide sequence number and arrival, written
 * by the programs as one 8-byte store. */
struct sft_twcc_record {
	__u32 arrival_us; /* bpf_ktime_get_ns() / 1000, truncated */
	__u16 seq;
	__u16 lap; /* SFT_TWCC_LAP_VALID | (position / SFT_TWCC_RECORDS) & 0x7fff */
};

/* sft_twcc_rings[leg's twcc_ring], mmapable: the controller reads the records
 * in [tail, head) every 100 ms and advances tail; the programs reserve a
 * position with an atomic add on head and drop (counted) when the ring is full.
 * Reset by the controller when a leg takes the ring. */
struct sft_twcc_ring {
	__u64 head; /* kernel-owned: records reserved */
	__u64 tail; /* controller-owned: records read */
	struct sft_twcc_record records[SFT_TWCC_RECORDS];
};

/* sft_events ring buffer records: what the keystream refill task must do. */
struct sft_event {
	__u32 type; /* enum sft_event_type */
	__u32 leg_id;
	__u32 ssrc;
	__u32 owner; /* slot id for SFT_EV_SLOT_KEYSTREAM */
	__u64 index;
};

/* ---- XDP steering into AF_XDP (bpf/src/steer.bpf.c, bpf/steer.py) ----
 * RTP of a registered 5-tuple goes to the AF_XDP socket of its receive queue;
 * STUN, DTLS and RTCP go to the stack; junk aimed at the media ports is dropped. */
#define SFT_STEER_MAX_LEGS 16384
#define SFT_STEER_MAX_QUEUES 64 /* XSKMAP entries: one socket per receive queue */

/* Names and values identical to bpf.steer.SteerCounter. */
enum sft_steer_counter {
	SFT_STEER_PASS_STUN = 0,
	SFT_STEER_PASS_DTLS = 1,
	SFT_STEER_PASS_RTCP = 2,
	SFT_STEER_REDIRECT = 3,          /* RTP of a leg, into its queue's AF_XDP socket */
	SFT_STEER_PASS_NO_SOCKET = 4,    /* RTP of a leg, but no socket on its queue: stack */
	SFT_STEER_DROP_SHORT = 5,        /* UDP payload too short for what its first byte says */
	SFT_STEER_DROP_JUNK = 6,         /* first byte is no STUN/DTLS/RTP/RTCP */
	SFT_STEER_DROP_UNKNOWN = 7,      /* RTP from a 5-tuple no leg validated */
	SFT_STEER_DROP_FRAGMENT = 8,     /* IP fragment aimed at the media ports */
	SFT_STEER_DROP_IP_OPTIONS = 9,   /* IPv4 header with options aimed at the media ports */
	SFT_STEER_DROP_BAD_LENGTH = 10,  /* UDP length beyond the IP packet or the frame */
	SFT_STEER_MAX = 11,
};

/* sft_steer_config[0], controller-owned. */
struct sft_steer_config {
	__u16 port_min; /* media port range, host order, inclusive; 0..0 = steer nothing */
	__u16 port_max;
	__u32 pad;
};

/* sft_steer_legs[struct sft_addr_key], controller-owned: a live leg's 5-tuple
 * (UDP; addresses as they arrive). */
struct sft_steer_leg {
	__u32 leg_id;
	__u32 queue; /* receive queue / worker the leg's RTP is expected on (a hint) */
};

/* ---- load generator's XDP sink (bpf/src/sink.bpf.c, sftload/sink.py) ----
 * On the generator's veth end: media to a registered leg socket is counted as
 * the generator's C receiver counts it, then dropped, except 1 packet in
 * sample_every per leg, which goes on to the socket (the sampler decrypts it).
 * The veth end has one receive queue, so updates of one leg never race. */
#define SFT_SINK_PORTS 65536 /* sft_sink_legs is indexed by the leg socket's port */
#define SFT_SINK_MAX_SLOTS 65536 /* (leg, SSRC) pairs the generator subscribes to */
#define SFT_SINK_LEG_SLOTS 32 /* slots of one leg, at most (14 at the Wire mix) */
#define SFT_SINK_MAX_CSRCS 131072 /* (leg, CSRC, kind) triples heard */

/* sft_sink_config[0], controller-owned. */
struct sft_sink_config {
	__u32 sample_every; /* 0 or 1: pass every packet */
	__u32 pad;
};

/* sft_sink_legs[local port]: created by Python, counted by the program. */
struct sft_sink_leg {
	__u32 leg;
	__be32 local_ip; /* 0: no leg on this port */
	__u64 rx_rtp;
	__u64 rx_bytes;       /* RTP datagram bytes */
	__u64 rx_unknown_ssrc;
	__u64 rx_no_csrc;
	__u64 first_audio_ns; /* bpf_ktime_get_ns() = CLOCK_MONOTONIC */
	__u64 first_video_ns;
};

/* sft_sink_leg_slots[local port]: the leg's slot SSRCs; slot i of the leg is
 * sft_sink_slots[first + i]. Written by Python before the leg's media, only
 * read by the program (the counters stay in sft_sink_leg). */
struct sft_sink_leg_slots {
	__u32 first;
	__u32 count;
	__u32 ssrc[SFT_SINK_LEG_SLOTS];
};

/* sft_sink_slots[index]: created by Python with kind, counted by the program. */
struct sft_sink_slot {
	__u64 packets;
	__u64 bytes;
	__u64 ext_max;   /* extended highest sequence number */
	__u64 base;      /* first sequence number */
	__u64 reordered; /* older than the highest (duplicate or reordered) */
	__u32 kind;      /* enum sft_stream_kind */
	__u32 started;
	__u32 csrc;      /* of the open run */
	__u32 pad;
	__u64 csrc_packets; /* in the open run, not yet in sft_sink_csrcs */
};

/* sft_sink_csrcs key; the value is a packet count (__u64), made by the program. */
struct sft_sink_csrc_key {
	__u32 leg;
	__u32 csrc;
	__u32 kind;
	__u32 pad;
};

#endif /* SFT_ABI_H */
