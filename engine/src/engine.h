/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* The native SRTP fan-out engine behind sftd's DataPlane verbs (engine/dataplane.py).
 *
 * Threads: N workers, each pinned to a CPU, each with an epoll set of the legs it
 * owns. Every leg of a conference belongs to the same worker (the caller picks it
 * in sfte_leg_new), so all per-packet state of a conference -- SRTP windows and
 * ROCs, slot rewrite state, routes -- has exactly one writer and needs no lock.
 *
 * State from the controller: a leg is built whole (keys derived, slots set) by
 * the caller, then handed to its worker through the worker's command queue;
 * every later change (address, publisher SSRCs, slot sources, removal) is a
 * command too, applied by the worker between two packets. A packet therefore
 * never sees a half-written leg: nothing but the owner writes a leg's state once
 * it is published. Figures the controller reads back (counters, stats, levels,
 * arrivals) are single-writer atomics, a seqlock or an SPSC ring.
 *
 * workers = 0: no threads; commands and injected packets run in the caller
 * (benchmarks and deterministic tests).
 *
 * This header is read by cffi (engine/build.py): plain declarations, constants
 * as integer #defines, other #-lines are dropped. */
#ifndef SFTE_ENGINE_H
#define SFTE_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#define SFTE_PROFILE_AES_CM_128_HMAC_SHA1_80 1
#define SFTE_PROFILE_AEAD_AES_128_GCM 2
#define SFTE_PROFILE_AEAD_AES_256_GCM 3

#define SFTE_MAX_SLOTS 32           /* audio + video slots of one leg */
#define SFTE_MAX_SSRCS_PER_LEG 8    /* MAX_SSRCS_PER_LEG of controller/dataplane.py */
#define SFTE_MAX_COUNTED_STREAMS 16 /* receive statistics per leg */
#define SFTE_MAX_CONFERENCES 65536  /* conference ids 0..65535 */
#define SFTE_MAX_PACKET 2048        /* receive buffer; media above 1500 bytes is malformed */
#define SFTE_ARRIVALS 8192          /* MAX_PENDING_ARRIVALS of controller/twcc.py */
#define SFTE_COUNTERS 17            /* enum sfte_counter */

/* Counter of controller/dataplane.py, value for value (a test compares them) */
enum sfte_counter {
	SFTE_RX_PACKETS = 0, SFTE_RX_BYTES = 1, SFTE_TX_PACKETS = 2, SFTE_TX_BYTES = 3,
	SFTE_DROP_AUTH = 4, SFTE_DROP_REPLAY = 5, SFTE_DROP_UNKNOWN_LEG = 6,
	SFTE_DROP_MALFORMED = 7, SFTE_DROP_NO_ROUTE = 8, SFTE_DROP_PADDING = 9,
	SFTE_DROP_NOT_READY = 10, SFTE_DROP_SSRC_LIMIT = 11, SFTE_DROP_LEASE_EXPIRED = 12,
	SFTE_DROP_LEG_REPLACED = 13, SFTE_DROP_ADJUST_FAILED = 14, SFTE_DROP_UNKNOWN_SSRC = 15,
	SFTE_DROP_STALE = 16,
};

enum sfte_detail {
	SFTE_DETAIL_UPCALLS = 0,         /* non-media datagrams handed to the controller */
	SFTE_DETAIL_UPCALLS_DROPPED = 1, /* ... dropped: the controller's queue was full */
	SFTE_DETAIL_SEND_ERRORS = 2,     /* copies the kernel refused (sendmmsg, AF_XDP) */
	SFTE_DETAIL_TWCC_DROPPED = 3,    /* arrivals past SFTE_ARRIVALS between two reads */
	SFTE_DETAIL_RX_BATCHES = 4,      /* recvmmsg calls that returned datagrams */
	SFTE_DETAIL_TX_BATCHES = 5,      /* sendmmsg calls */
	SFTE_DETAIL_INJECTED = 6,        /* media the controller handed in (sfte_packet) */
	SFTE_DETAIL_XDP_RX = 7,          /* media received on an AF_XDP port */
	SFTE_DETAIL_XDP_TX = 8,          /* copies sent from AF_XDP frames (in TX_PACKETS too) */
	SFTE_DETAIL_XDP_KICKS = 9,       /* AF_XDP transmit kicks */
	SFTE_DETAIL_XDP_NO_FRAME = 10,   /* copies that found no free frame: sent by the socket */
	SFTE_DETAIL_XDP_HANDOFFS = 11,   /* media that arrived on another worker's port */
	SFTE_DETAILS = 12,
};

/* A leg's AF_XDP path: the 5-tuple the steering program redirects to the engine's
 * ports (local and remote IPv4), and how copies to the leg are framed. */
struct sfte_path {
	char local_host[64]; /* "" : no AF_XDP path */
	uint16_t local_port;
	uint32_t ifindex;    /* the interface towards the leg; 0: copies go by the socket */
	uint8_t src_mac[6];
	uint8_t dst_mac[6];
};

struct sfte_leg_config {
	uint32_t leg_id;
	uint32_t conference_id;
	int fd;           /* the leg's UDP socket; the engine keeps a dup of it */
	int take_receive; /* the worker reads the socket (the controller stopped) */
	char remote_host[64];
	uint16_t remote_port;
	int profile;
	uint8_t rx_master[64]; /* key || salt the client protects with */
	uint8_t tx_master[64]; /* key || salt the engine protects with */
	uint32_t master_len;
	uint32_t audio_slots;
	uint32_t video_slots;
	uint32_t slot_ssrc[SFTE_MAX_SLOTS];     /* audio slots, then video slots */
	uint16_t slot_last_seq[SFTE_MAX_SLOTS]; /* a slot's first packet gets this + 1 */
	uint32_t slot_last_ts[SFTE_MAX_SLOTS];
	uint8_t ext_audio_level, ext_rid, ext_frame_descriptor, ext_transport_cc;
	struct sfte_path path;
};

struct sfte_receive_stats {
	uint64_t received;
	int64_t first_seq;
	int64_t highest_seq;
	int64_t jitter;
};

struct sfte_leg_media {
	uint64_t received_audio;
	uint64_t received_video;
	uint64_t slot_sent[SFTE_MAX_SLOTS];
};

/* A datagram the engine does not handle (STUN, DTLS, RTCP, media from another
 * address), for the controller's socket protocol. */
struct sfte_upcall {
	uint32_t leg_id;
	uint16_t port;
	char host[64];
	uint32_t len;
	uint8_t data[SFTE_MAX_PACKET];
};

struct sfte_engine;
struct sfte_leg;
struct sfte_twcc;

/* layer_paused_ns: LAYER_PAUSED_AFTER; ts_gap_audio/video: fixed timestamp gap
 * at a source switch, 0 for the wall-clock gap; dry_run: build copies, skip
 * sendmmsg (benchmarks). NULL on failure, with the reason in err. */
struct sfte_engine *sfte_new(int workers, int64_t layer_paused_ns, uint32_t ts_gap_audio,
			     uint32_t ts_gap_video, int dry_run, char *err, size_t errlen);
void sfte_free(struct sfte_engine *e);
int sfte_workers(struct sfte_engine *e);
/* Opens an AF_XDP port on (ifindex, queue) for worker ``worker`` and makes it its
 * queue's target in the XSKMAP ``xskmap_fd``; mode: enum xsk_bind_mode. Returns 1
 * (zero-copy) or 0 (copy mode), or -1 with the reason in err. Needs workers. */
int sfte_add_port(struct sfte_engine *e, int worker, uint32_t ifindex, uint32_t queue,
		  uint32_t ring_size, uint32_t mode, int xskmap_fd, char *err, size_t errlen);
/* Steered packets the kernel dropped at the ports: no free receive frame or the rx
 * ring full (the worker fell behind), summed over the ports (XDP_STATISTICS). */
uint64_t sfte_xdp_rx_dropped(struct sfte_engine *e);

/* Readable when sfte_upcall_pop has something (eventfd; -1 with no workers). */
int sfte_upcall_fd(struct sfte_engine *e);
int sfte_upcall_pop(struct sfte_engine *e, struct sfte_upcall *out);

/* Build a leg for worker ``worker`` (not yet forwarding). NULL on bad input. */
struct sfte_leg *sfte_leg_new(struct sfte_engine *e, const struct sfte_leg_config *config,
			      int worker, char *err, size_t errlen);
void sfte_add_leg(struct sfte_engine *e, struct sfte_leg *leg);
/* New validated address; fd >= 0: a new socket (take_receive as in the config);
 * path: the AF_XDP path from there. */
int sfte_set_address(struct sfte_engine *e, struct sfte_leg *leg, const char *host,
		     uint16_t port, int fd, int take_receive, const struct sfte_path *path,
		     char *err, size_t errlen);
void sfte_remove_leg(struct sfte_engine *e, struct sfte_leg *leg);
/* After sfte_remove_leg: 1 once the worker let go of it; then sfte_leg_free. */
int sfte_leg_released(struct sfte_leg *leg);
void sfte_leg_free(struct sfte_leg *leg);

void sfte_set_publisher(struct sfte_engine *e, struct sfte_leg *leg, const uint32_t *audio,
			uint32_t n_audio, const uint32_t *video, const uint8_t *layers,
			uint32_t n_video);
/* publisher NULL with publisher_id != 0: that leg is not added yet (or gone). */
void sfte_set_slot(struct sfte_engine *e, struct sfte_leg *subscriber, int kind, uint32_t index,
		   int has_source, struct sfte_leg *publisher, uint32_t publisher_id,
		   uint32_t csrc, int layer);
/* An SRTP packet the controller received for ``leg`` (NULL: no such leg). */
void sfte_packet(struct sfte_engine *e, struct sfte_leg *leg, const uint8_t *data, size_t len);
/* Returns once every worker applied all commands and packets given before. */
void sfte_sync(struct sfte_engine *e);

void sfte_read_counters(struct sfte_engine *e, uint64_t *counters, uint64_t *details);
uint64_t sfte_conference_packets(struct sfte_engine *e, uint32_t conference_id);
int sfte_receive_stats(struct sfte_leg *leg, uint32_t ssrc, struct sfte_receive_stats *out);
/* Smoothed audio level and the CLOCK_MONOTONIC ns of its last update (0: never). */
double sfte_audio_level(struct sfte_leg *leg, int64_t *updated_ns);
void sfte_leg_media(struct sfte_leg *leg, struct sfte_leg_media *out);
/* Pop up to ``max`` transport-wide arrivals (sequence number, CLOCK_MONOTONIC ns). */
int sfte_arrivals(struct sfte_leg *leg, uint16_t *seqs, int64_t *ns, int max);
/* Transport-wide feedback (twcc.h) of the arrivals popped from the leg's ring into
 * its window, as sfte_twcc_write; controller thread only, instead of sfte_arrivals. */
int sfte_twcc_feedback(struct sfte_leg *leg, uint32_t sender_ssrc, uint32_t media_ssrc,
		       uint8_t *out, size_t cap, uint16_t *lens, int max_packets);
/* Drops the pending arrivals and starts the window afresh (no feedback target). */
void sfte_twcc_forget(struct sfte_leg *leg);
struct sfte_twcc *sfte_leg_twcc(struct sfte_leg *leg);
/* SSRCs with SRTP state, and SSRCs with a known video layer (for tests). */
int sfte_ssrcs_seen(struct sfte_leg *leg);
int sfte_video_layers(struct sfte_leg *leg);

#endif
