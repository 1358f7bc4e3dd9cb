/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* Workers, commands and the per-packet path of the native engine; see engine.h.
 * The per-packet semantics are those of controller/userspace.py, step by step. */
#define _GNU_SOURCE
#include "engine.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include "io.h"
#include "srtp.h"
#include "twcc.h"

#define KIND_AUDIO 0
#define KIND_VIDEO 1
#define LAYER_LOW 0
#define LAYER_HIGH 1
#define MAX_SRTP_BYTES 1500
#define MAX_PROTECT_BYTES (1500 - 144) /* pylibsrtp: 1500-byte buffer less the trailer room */
#define AUDIO_LEVEL_SILENT 127.0
#define LEVEL_SMOOTHING 0.5
#define MAX_VIDEO_LAYERS (2 * SFTE_MAX_SSRCS_PER_LEG)
#define UPCALL_RING 256
#define RECEIVE_ROUNDS 4 /* batches from one socket before the others get a turn */
#define TUPLE_BUCKETS 4096 /* the engine's table of steered 5-tuples */
#define SWITCH_FLOOR_SPAN SRTP_REPLAY_WINDOW /* userspace.py's SWITCH_FLOOR_SPAN */

static const uint32_t CLOCK_RATE[2] = {48000, 90000};

struct slot {
	uint32_t ssrc;
	int kind;
	int has_source;
	uint32_t publisher_id;
	struct sfte_leg *publisher; /* NULL while that leg is not added */
	uint32_t csrc;
	int layer;
	int has_input;
	uint32_t input_ssrc;
	uint16_t seq_offset;
	uint32_t ts_offset;
	uint16_t last_seq;
	uint32_t last_ts;
	int64_t last_time; /* ns, 0: nothing sent yet */
	/* the sequence number past the newest copy when the mapping last moved (a
	 * switch, a padding packet dropped), while a copy before it could still be
	 * protected at an index the slot already used */
	int has_floor;
	uint16_t floor;
	uint64_t tx_index; /* SRTP index of the slot's SSRC */
	uint64_t sent;     /* atomic: read by the controller */
};

struct route {
	struct sfte_leg *subscriber;
	struct slot *slot;
};

struct routes {
	struct route *items;
	uint32_t n, cap;
};

struct rx_stream {
	uint32_t ssrc;
	struct srtp_rx_stream state;
};

struct receive_counter { /* RFC 3550 A.1 / A.8, as userspace.py's _ReceiveCounter */
	uint32_t ssrc;
	int kind;
	uint64_t received;
	int64_t first_seq, highest_seq, jitter_q4, last_transit;
	int has_transit;
};

struct video_layer {
	uint32_t ssrc;
	int layer;
};

struct sfte_leg {
	int epoll_tag; /* IO_EPOLL_LEG; first, as in struct io_xdp_port */
	struct sfte_engine *engine;
	int worker;
	uint32_t id, conference_id;
	int fd;          /* our dup of the leg's socket */
	int take_receive;
	int in_epoll;
	struct sockaddr_storage remote;
	socklen_t remote_len;
	struct srtp_ctx rx, tx;
	uint8_t ext_audio_level, ext_rid, ext_frame_descriptor, ext_transport_cc;
	uint32_t n_slots, audio_slots;
	struct slot slots[SFTE_MAX_SLOTS];
	uint32_t audio_ssrcs[SFTE_MAX_SSRCS_PER_LEG];
	uint32_t n_audio;
	struct video_layer video[MAX_VIDEO_LAYERS];
	uint32_t n_video;
	int64_t layer_media_at[2];
	struct rx_stream streams[SFTE_MAX_SSRCS_PER_LEG];
	uint32_t n_streams;
	struct routes routes[2]; /* slots forwarding this leg, by kind */
	/* read by the controller */
	uint32_t stats_seq; /* seqlock over counters/n_counters */
	struct receive_counter counters[SFTE_MAX_COUNTED_STREAMS];
	uint32_t n_counters;
	uint64_t level_bits; /* double */
	int64_t level_time;
	uint64_t received[2];
	uint16_t *arrival_seq;
	int64_t *arrival_ns;
	uint64_t arrivals_head, arrivals_tail;
	struct sfte_twcc *twcc; /* the controller's: arrivals popped, feedback to write */
	int removed;  /* by its worker; memory still valid */
	int released; /* the worker is done with it: the controller may free it */
	/* AF_XDP receive: the steered 5-tuple, network order, in the engine's table
	 * (written under tuples_lock by the controller, read under it by port workers) */
	struct sfte_leg *tuple_next;
	int tuple_keyed;
	uint32_t tuple_local_ip, tuple_remote_ip;
	uint16_t tuple_local_port, tuple_remote_port;
	/* AF_XDP transmit (the worker's): copies to this leg leave on a port of
	 * tx_ifindex (0: by the socket) behind tx_header */
	uint32_t tx_ifindex;
	struct xsk_udp_template tx_header;
};

enum cmd_type {
	CMD_ADD, CMD_ADDRESS, CMD_REMOVE, CMD_PUBLISHER, CMD_SLOT, CMD_PACKET, CMD_SYNC, CMD_PORT
};

struct cmd {
	struct cmd *next;
	enum cmd_type type;
	struct sfte_leg *leg;
	union {
		struct {
			struct sockaddr_storage remote;
			socklen_t remote_len;
			int fd, take_receive;
			uint32_t tx_ifindex;
			struct xsk_udp_template tx_header;
		} address;
		struct {
			uint32_t audio[SFTE_MAX_SSRCS_PER_LEG], video[SFTE_MAX_SSRCS_PER_LEG];
			uint8_t layers[SFTE_MAX_SSRCS_PER_LEG];
			uint32_t n_audio, n_video;
		} publisher;
		struct {
			int kind, has_source, layer;
			uint32_t index, publisher_id, csrc;
			struct sfte_leg *publisher;
		} slot;
		uint64_t ticket;
		struct io_xdp_port *port;
	} u;
	int from_port; /* CMD_PACKET: received on another worker's AF_XDP port */
	size_t len;
	uint8_t data[];
};

struct worker {
	struct sfte_engine *engine;
	int index;
	pthread_t thread;
	int started;
	int epfd, wakefd;
	pthread_mutex_t lock;
	struct cmd *head, *tail;
	/* single writer (this worker), read by the controller */
	uint64_t counters[SFTE_COUNTERS];
	uint64_t details[SFTE_DETAILS];
	uint64_t *conference_packets;
	uint64_t synced;
	struct sfte_leg **legs;
	uint32_t n_legs, cap_legs;
	struct io_rx rx[IO_BATCH];
	struct io_tx tx[IO_TX_BATCH];
	struct io_tx *txp[IO_TX_BATCH];
	int n_tx;
	/* copies of the packet being forwarded whose tags sha1x computes together
	 * (srtp_protect leaves them); none is left after forward() or a flush */
	struct srtp_untagged untagged[SHA1X_LANES];
	int n_untagged;
	struct io_xdp_port **ports; /* AF_XDP ports this worker drives */
	int n_ports;
	struct xsk_rx_desc xrx[IO_BATCH];
	struct sfte_leg **releasing; /* removed this round, released after its events */
	uint32_t n_releasing, cap_releasing;
	struct sfte_upcall *upcalls; /* SPSC ring: this worker -> controller */
	uint64_t upcall_head, upcall_tail;
	int upcalls_pending;
};

struct sfte_engine {
	int threads; /* 0: inline */
	int n_workers;
	struct worker *workers;
	int64_t layer_paused_ns;
	uint32_t ts_gap[2];
	int dry_run;
	int upcall_fd;
	int stop;
	uint64_t sync_ticket;
	pthread_mutex_t sync_lock;
	pthread_cond_t synced;
	uint32_t upcall_next; /* controller's round-robin over workers */
	pthread_rwlock_t tuples_lock;
	struct sfte_leg **tuples; /* TUPLE_BUCKETS chains of steered legs */
	const struct io_xdp_port **ports; /* every port, for the controller's statistics */
	int n_ports;
};

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* a private reference to a socket, close-on-exec */
static int fcntl_dup(int fd) { return fcntl(fd, F_DUPFD_CLOEXEC, 3); }

static inline int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#define STORE(p, v) __atomic_store_n(p, v, __ATOMIC_RELAXED)
#define LOAD(p) __atomic_load_n(p, __ATOMIC_RELAXED)
static inline void count(struct worker *w, int c, uint64_t n) { STORE(&w->counters[c], w->counters[c] + n); }
static inline void detail(struct worker *w, int d, uint64_t n) { STORE(&w->details[d], w->details[d] + n); }

/* ------------------------------------------------------------------ RTP */

struct rtp_view { /* controller/rtp.py RtpView */
	int padding, extension;
	uint16_t seq;
	uint32_t timestamp, ssrc;
	size_t ext_offset, payload_offset, payload_end;
};

static int rtp_parse(const uint8_t *d, size_t len, struct rtp_view *v)
{
	size_t offset;

	if (len < 12 || d[0] >> 6 != 2)
		return -1;
	offset = 12 + 4 * (size_t)(d[0] & 0x0F);
	v->ext_offset = offset;
	if (d[0] & 0x10) {
		if (len < offset + 4)
			return -1;
		offset += 4 + 4 * (size_t)be16(d + offset + 2);
	}
	if (offset > len)
		return -1;
	v->payload_end = len;
	if (d[0] & 0x20) {
		uint8_t pad = d[len - 1];
		if (pad == 0 || len - pad < offset)
			return -1;
		v->payload_end -= pad;
	}
	v->padding = !!(d[0] & 0x20);
	v->extension = !!(d[0] & 0x10);
	v->seq = be16(d + 2);
	v->timestamp = be32(d + 4);
	v->ssrc = be32(d + 8);
	v->payload_offset = offset;
	return 0;
}

/* RFC 8285 one- or two-byte header extension ``id``; its length, -1 if absent. */
static int find_extension(const uint8_t *d, const struct rtp_view *v, int id, const uint8_t **value)
{
	uint16_t profile;
	size_t pos, end;

	if (!v->extension || id <= 0)
		return -1;
	profile = be16(d + v->ext_offset);
	pos = v->ext_offset + 4;
	end = pos + 4 * (size_t)be16(d + v->ext_offset + 2);
	if (profile == 0xBEDE) {
		while (pos < end) {
			int elem, length;
			if (d[pos] == 0) {
				pos++;
				continue;
			}
			elem = d[pos] >> 4;
			length = (d[pos] & 0x0F) + 1;
			if (elem == 15 || pos + 1 + (size_t)length > end)
				return -1;
			if (elem == id) {
				*value = d + pos + 1;
				return length;
			}
			pos += 1 + (size_t)length;
		}
	} else if (profile >> 4 == 0x100) {
		while (pos + 1 < end) {
			int length;
			if (d[pos] == 0) {
				pos++;
				continue;
			}
			length = d[pos + 1];
			if (pos + 2 + (size_t)length > end)
				return -1;
			if (d[pos] == id) {
				*value = d + pos + 2;
				return length;
			}
			pos += 2 + (size_t)length;
		}
	}
	return -1;
}

static int vp8_keyframe(const uint8_t *p, size_t len)
{
	size_t pos = 1;

	if (len < 2 || !(p[0] & 0x10) || (p[0] & 0x07))
		return 0;
	if (p[0] & 0x80) {
		uint8_t x = p[1];
		pos = 2;
		if (x & 0x80) {
			if (pos >= len)
				return 0;
			pos += p[pos] & 0x80 ? 2 : 1;
		}
		if (x & 0x40)
			pos++;
		if (x & 0x30)
			pos++;
	}
	return pos < len && !(p[pos] & 0x01);
}

static int is_keyframe(const uint8_t *d, const struct rtp_view *v, int frame_descriptor)
{
	const uint8_t *fd;
	int n = find_extension(d, v, frame_descriptor, &fd);

	if (n > 0)
		return (fd[0] & 0x80) && !(fd[0] & 0x08);
	return vp8_keyframe(d + v->payload_offset, v->payload_end - v->payload_offset);
}

/* ---------------------------------------------------------------- routes */

static void route_add(struct sfte_leg *pub, int kind, struct sfte_leg *sub, struct slot *slot)
{
	struct routes *r = &pub->routes[kind];

	if (r->n == r->cap) {
		uint32_t cap = r->cap ? 2 * r->cap : 8;
		struct route *items = realloc(r->items, cap * sizeof(*items));
		if (items == NULL)
			return; /* out of memory: the slot stays unrouted (no media), nothing breaks */
		r->items = items;
		r->cap = cap;
	}
	r->items[r->n++] = (struct route){sub, slot};
}

static void route_remove(struct sfte_leg *pub, int kind, const struct slot *slot)
{
	struct routes *r = &pub->routes[kind];
	uint32_t k = 0;

	for (uint32_t i = 0; i < r->n; i++)
		if (r->items[i].slot != slot)
			r->items[k++] = r->items[i];
	r->n = k;
}

/* ----------------------------------------------------------- per packet */

static void write_tags(struct worker *w)
{
	srtp_write_tags(w->untagged, (size_t)w->n_untagged);
	w->n_untagged = 0;
}

static void flush_tx(struct worker *w)
{
	struct sfte_engine *e = w->engine;
	int n = w->n_tx;

	write_tags(w);
	if (n == 0)
		return;
	/* Stable order by socket, so that one sendmmsg carries a subscriber's copies. */
	for (int i = 0; i < n; i++) {
		struct io_tx *t = &w->tx[i];
		int j = i;
		while (j > 0 && w->txp[j - 1]->fd > t->fd) {
			w->txp[j] = w->txp[j - 1];
			j--;
		}
		w->txp[j] = t;
	}
	if (!e->dry_run) {
		uint64_t calls = 0;
		int refused = io_udp_send(w->txp, n, &calls);
		detail(w, SFTE_DETAIL_TX_BATCHES, calls);
		if (refused)
			detail(w, SFTE_DETAIL_SEND_ERRORS, (uint64_t)refused);
	}
	w->n_tx = 0;
}

static void flush_port(struct worker *w, struct io_xdp_port *p)
{
	uint64_t kicks = 0, errors = 0;

	write_tags(w);
	io_xdp_flush(p, &kicks, &errors);
	if (kicks)
		detail(w, SFTE_DETAIL_XDP_KICKS, kicks);
	if (errors)
		detail(w, SFTE_DETAIL_SEND_ERRORS, errors);
}

/* Everything queued goes out: socket copies in sendmmsg batches, AF_XDP copies
 * in one submit per port. */
static void flush_all(struct worker *w)
{
	flush_tx(w);
	for (int i = 0; i < w->n_ports; i++)
		flush_port(w, w->ports[i]);
}

static struct io_xdp_port *port_towards(struct worker *w, uint32_t ifindex)
{
	for (int i = 0; ifindex && i < w->n_ports; i++)
		if (w->ports[i]->ifindex == ifindex)
			return w->ports[i];
	return NULL;
}

static int64_t switch_gap(struct sfte_engine *e, const struct slot *slot, int64_t now)
{
	int64_t gap;

	if (e->ts_gap[slot->kind])
		return e->ts_gap[slot->kind];
	if (slot->last_time == 0)
		return 1;
	gap = (int64_t)((double)(now - slot->last_time) / 1e9 * CLOCK_RATE[slot->kind]);
	return gap > 1 ? gap : 1;
}

static void switch_source(struct sfte_engine *e, struct slot *slot, const struct rtp_view *v,
			  int64_t now)
{
	int64_t gap = switch_gap(e, slot, now);

	slot->seq_offset = (uint16_t)(slot->last_seq + 1 - v->seq);
	slot->ts_offset = (uint32_t)((int64_t)slot->last_ts + gap - v->timestamp);
	slot->has_input = 1;
	slot->input_ssrc = v->ssrc;
	slot->has_floor = 1;
	slot->floor = (uint16_t)(slot->last_seq + 1);
}

static void send_copy(struct worker *w, struct sfte_leg *sub, struct slot *slot,
		      const uint8_t *plain, size_t plain_len, const struct rtp_view *v, int64_t now)
{
	uint16_t seq = (uint16_t)(v->seq + slot->seq_offset);
	uint32_t ts = v->timestamp + slot->ts_offset;
	size_t len = 16 + (plain_len - v->ext_offset), header, out;
	struct io_xdp_port *port = port_towards(w, sub->tx_ifindex);
	struct xsk_tx_desc *frame = NULL;
	struct io_tx *t = NULL;
	uint8_t *buf;

	/* older than the source's first copy (the previous source's index), or than
	 * srtp_protect takes: as userspace.py's _send */
	if ((slot->has_floor && (uint16_t)(seq - slot->floor) >= 0x8000) ||
	    srtp_protect_too_old(slot->tx_index, seq)) {
		count(w, SFTE_DROP_STALE, 1);
		return;
	}
	if ((uint16_t)(seq - slot->last_seq) < 0x8000) {
		slot->last_seq = seq;
		slot->last_ts = ts;
		slot->last_time = now;
	}
	if (len > MAX_PROTECT_BYTES) { /* grew past a datagram with the CSRC */
		count(w, SFTE_DROP_MALFORMED, 1);
		return;
	}
	if (port != NULL) { /* the copy is written into the frame it leaves in */
		if (port->n_pending == IO_TX_BATCH)
			flush_port(w, port);
		frame = io_xdp_reserve(port);
		if (frame == NULL) {
			/* Every frame is pending or in flight. Sending them (after the socket
			 * copies, which are older) frees frames as the kernel completes them;
			 * a copy that took the socket now would overtake the pending ones. */
			flush_all(w);
			frame = io_xdp_reserve(port);
		}
		if (frame == NULL)
			detail(w, SFTE_DETAIL_XDP_NO_FRAME, 1);
	}
	if (frame != NULL) {
		buf = frame->payload;
	} else {
		if (w->n_tx == IO_TX_BATCH)
			flush_tx(w);
		t = &w->tx[w->n_tx];
		buf = t->data;
	}
	/* the slot's header: CC=1, its SSRC, sequence, timestamp and CSRC */
	buf[0] = (uint8_t)((plain[0] & 0xF0) | 1);
	buf[1] = plain[1];
	put16(buf + 2, seq);
	put32(buf + 4, ts);
	put32(buf + 8, slot->ssrc);
	put32(buf + 12, slot->csrc);
	header = 16 + (v->payload_offset - v->ext_offset);
	/* the header extension; srtp_protect copies the payload as it encrypts it */
	memcpy(buf + 16, plain + v->ext_offset, header - 16);
	out = srtp_protect(&sub->tx, &slot->tx_index, buf, len, header, plain + v->payload_offset,
			   &w->untagged[w->n_untagged]);
	if (out == 0) {
		if (frame != NULL)
			io_xdp_commit(port, frame, 0, NULL); /* the frame goes back unused */
		count(w, SFTE_DROP_MALFORMED, 1);
		return;
	}
	if (slot->has_floor && (uint16_t)(seq - slot->floor) >= SWITCH_FLOOR_SPAN &&
	    (uint16_t)(seq - slot->floor) < 0x8000)
		slot->has_floor = 0; /* srtp_protect refuses whatever is before the floor now */
	if (frame != NULL) {
		io_xdp_commit(port, frame, (uint32_t)out, &sub->tx_header);
		detail(w, SFTE_DETAIL_XDP_TX, 1);
	} else {
		if (sub->fd < 0) {
			count(w, SFTE_DROP_NO_ROUTE, 1);
			return;
		}
		t->fd = sub->fd;
		memcpy(&t->dest, &sub->remote, sub->remote_len);
		t->dest_len = sub->remote_len;
		t->len = out;
		w->n_tx++;
	}
	if (w->untagged[w->n_untagged].ctx != NULL && ++w->n_untagged == SHA1X_LANES)
		write_tags(w); /* the copy is queued: its tag may wait for the next one */
	STORE(&slot->sent, slot->sent + 1);
	count(w, SFTE_TX_PACKETS, 1);
	count(w, SFTE_TX_BYTES, out);
	STORE(&w->conference_packets[sub->conference_id],
	      w->conference_packets[sub->conference_id] + 1);
}

static int is_audio_ssrc(const struct sfte_leg *leg, uint32_t ssrc)
{
	for (uint32_t i = 0; i < leg->n_audio; i++)
		if (leg->audio_ssrcs[i] == ssrc)
			return 1;
	return 0;
}

static int video_layer(const struct sfte_leg *leg, uint32_t ssrc)
{
	for (uint32_t i = 0; i < leg->n_video; i++)
		if (leg->video[i].ssrc == ssrc)
			return leg->video[i].layer;
	return -1;
}

static void set_video_layer(struct sfte_leg *leg, uint32_t ssrc, int layer)
{
	for (uint32_t i = 0; i < leg->n_video; i++)
		if (leg->video[i].ssrc == ssrc) {
			leg->video[i].layer = layer;
			return;
		}
	if (leg->n_video < MAX_VIDEO_LAYERS)
		leg->video[leg->n_video++] = (struct video_layer){ssrc, layer};
}

/* The video SSRC's layer, declared or learned from its RID; -1 if neither. */
static int learn_video_layer(struct sfte_leg *leg, const uint8_t *pkt, const struct rtp_view *v)
{
	const uint8_t *rid;
	int layer = video_layer(leg, v->ssrc);

	if (layer >= 0)
		return layer;
	if (find_extension(pkt, v, leg->ext_rid, &rid) != 1 || (rid[0] != 'l' && rid[0] != 'h'))
		return -1;
	layer = rid[0] == 'l' ? LAYER_LOW : LAYER_HIGH;
	set_video_layer(leg, v->ssrc, layer);
	return layer;
}

static void count_received(struct sfte_leg *leg, const struct rtp_view *v, int64_t now)
{
	int kind = is_audio_ssrc(leg, v->ssrc) ? KIND_AUDIO : KIND_VIDEO;
	struct receive_counter *c = NULL;
	int64_t transit;

	for (uint32_t i = 0; i < leg->n_counters; i++)
		if (leg->counters[i].ssrc == v->ssrc)
			c = &leg->counters[i];
	if (c == NULL && leg->n_counters == SFTE_MAX_COUNTED_STREAMS)
		return;
	STORE(&leg->received[kind], leg->received[kind] + 1);
	STORE(&leg->stats_seq, leg->stats_seq + 1); /* odd: being written */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	if (c == NULL) {
		c = &leg->counters[leg->n_counters];
		memset(c, 0, sizeof(*c));
		c->ssrc = v->ssrc;
		c->received = 1;
		c->first_seq = c->highest_seq = v->seq;
		leg->n_counters++;
	} else {
		int64_t candidate = (c->highest_seq & ~(int64_t)0xFFFF) | v->seq;
		if (candidate - c->highest_seq > 0x8000)
			candidate -= 0x10000;
		else if (c->highest_seq - candidate > 0x8000)
			candidate += 0x10000;
		if (candidate > c->highest_seq)
			c->highest_seq = candidate;
		c->received++;
	}
	c->kind = kind;
	transit = (int64_t)(((int64_t)((double)now / 1e9 * CLOCK_RATE[kind]) - v->timestamp) &
			    0xFFFFFFFF);
	if (c->has_transit) {
		int64_t d = ((transit - c->last_transit + 0x80000000LL) & 0xFFFFFFFFLL) - 0x80000000LL;
		if (d < 0)
			d = -d;
		c->jitter_q4 += d - ((c->jitter_q4 + 8) >> 4);
	}
	c->last_transit = transit;
	c->has_transit = 1;
	__atomic_store_n(&leg->stats_seq, leg->stats_seq + 1, __ATOMIC_RELEASE);
}

static void record_arrival(struct worker *w, struct sfte_leg *leg, const uint8_t *d,
			   const struct rtp_view *v, int64_t now)
{
	const uint8_t *value;
	uint64_t head = leg->arrivals_head;

	if (find_extension(d, v, leg->ext_transport_cc, &value) < 2)
		return;
	if (head - __atomic_load_n(&leg->arrivals_tail, __ATOMIC_ACQUIRE) >= SFTE_ARRIVALS) {
		detail(w, SFTE_DETAIL_TWCC_DROPPED, 1);
		return;
	}
	leg->arrival_seq[head % SFTE_ARRIVALS] = be16(value);
	leg->arrival_ns[head % SFTE_ARRIVALS] = now;
	__atomic_store_n(&leg->arrivals_head, head + 1, __ATOMIC_RELEASE);
}

static int wanted_layer(struct sfte_engine *e, const struct sfte_leg *pub, const struct slot *slot,
			int64_t now)
{
	int preferred = slot->layer, other = preferred == LAYER_HIGH ? LAYER_LOW : LAYER_HIGH;
	int has[2] = {0, 0};

	for (uint32_t i = 0; i < pub->n_video; i++)
		has[pub->video[i].layer] = 1;
	if (!has[preferred])
		return has[other] ? other : preferred;
	if (has[other] && now - pub->layer_media_at[preferred] > e->layer_paused_ns &&
	    now - pub->layer_media_at[other] <= e->layer_paused_ns)
		return other;
	return preferred;
}

static void forward(struct worker *w, struct sfte_leg *leg, int kind, const uint8_t *plain,
		    size_t len, const struct rtp_view *v, int layer, int64_t now)
{
	struct routes *r = &leg->routes[kind];
	int keyframe = -1, sent = 0;

	if (r->n == 0) {
		count(w, SFTE_DROP_NO_ROUTE, 1);
		return;
	}
	for (uint32_t i = 0; i < r->n; i++) {
		struct slot *slot = r->items[i].slot;
		if (!slot->has_input || slot->input_ssrc != v->ssrc) {
			if (kind == KIND_VIDEO) { /* video switches on a keyframe of the wanted layer */
				if (wanted_layer(w->engine, leg, slot, now) != layer)
					continue;
				if (keyframe < 0)
					keyframe = is_keyframe(plain, v, leg->ext_frame_descriptor);
				if (!keyframe)
					continue;
			}
			switch_source(w->engine, slot, v, now);
		}
		send_copy(w, r->items[i].subscriber, slot, plain, len, v, now);
		sent = 1;
	}
	write_tags(w); /* an odd copy out */
	if (kind == KIND_VIDEO && !sent)
		count(w, SFTE_DROP_NOT_READY, 1);
}

/* One SRTP packet from a leg (or for no leg), as UserspaceDataPlane.handle_packet.
 * ``pkt`` is decrypted in place. */
static void handle_media(struct worker *w, struct sfte_leg *leg, uint8_t *pkt, size_t len,
			 int64_t now)
{
	struct rx_stream *stream = NULL;
	struct rtp_view v;
	enum srtp_result result;
	int32_t delta = 0;
	uint32_t ssrc;
	int layer;

	count(w, SFTE_RX_PACKETS, 1);
	count(w, SFTE_RX_BYTES, len);
	if (leg == NULL) {
		count(w, SFTE_DROP_UNKNOWN_LEG, 1);
		return;
	}
	if (len < 12 || len > MAX_SRTP_BYTES || pkt[0] >> 6 != 2) {
		count(w, SFTE_DROP_MALFORMED, 1);
		return;
	}
	ssrc = be32(pkt + 8);
	for (uint32_t i = 0; i < leg->n_streams; i++)
		if (leg->streams[i].ssrc == ssrc)
			stream = &leg->streams[i];
	if (stream == NULL && leg->n_streams >= SFTE_MAX_SSRCS_PER_LEG) {
		count(w, SFTE_DROP_SSRC_LIMIT, 1); /* before any state is made for it */
		return;
	}
	result = srtp_unprotect(&leg->rx, stream ? &stream->state : NULL, pkt, &len, &delta);
	if (result != SRTP_OK) {
		count(w, result == SRTP_FAIL_REPLAY ? SFTE_DROP_REPLAY : SFTE_DROP_AUTH, 1);
		return;
	}
	if (stream == NULL) { /* authentic: the SSRC gets state */
		stream = &leg->streams[leg->n_streams++];
		memset(stream, 0, sizeof(*stream));
		stream->ssrc = ssrc;
	}
	srtp_rx_commit(&stream->state, delta);
	if (rtp_parse(pkt, len, &v) != 0) {
		count(w, SFTE_DROP_MALFORMED, 1);
		return;
	}
	count_received(leg, &v, now);
	record_arrival(w, leg, pkt, &v, now);
	/* padding probes teach the layer too: browsers stop sending the RID once
	 * reports ack the SSRC, which may follow nothing but probes */
	layer = is_audio_ssrc(leg, v.ssrc) ? -1 : learn_video_layer(leg, pkt, &v);
	if (v.padding && v.payload_end == v.payload_offset) {
		/* later packets of the source move down by one: no gap for receivers.
		 * The move maps a packet reordered around the padding onto a number the
		 * slot may have sent: the floor rises past its newest copy, so no copy
		 * reuses an SRTP index (send_copy drops it), as userspace.py's */
		count(w, SFTE_DROP_PADDING, 1);
		for (int kind = 0; kind < 2; kind++)
			for (uint32_t i = 0; i < leg->routes[kind].n; i++) {
				struct slot *slot = leg->routes[kind].items[i].slot;
				if (slot->has_input && slot->input_ssrc == v.ssrc) {
					slot->seq_offset--;
					slot->has_floor = 1;
					slot->floor = (uint16_t)(slot->last_seq + 1);
				}
			}
		return;
	}
	if (is_audio_ssrc(leg, v.ssrc)) {
		const uint8_t *level;
		if (find_extension(pkt, &v, leg->ext_audio_level, &level) > 0) {
			double old, smoothed;
			memcpy(&old, &leg->level_bits, sizeof(old));
			smoothed = LEVEL_SMOOTHING * old + (1 - LEVEL_SMOOTHING) * (level[0] & 0x7F);
			uint64_t bits;
			memcpy(&bits, &smoothed, sizeof(bits));
			STORE(&leg->level_bits, bits);
			STORE(&leg->level_time, now);
		}
		forward(w, leg, KIND_AUDIO, pkt, len, &v, 0, now);
		return;
	}
	if (layer < 0) {
		count(w, SFTE_DROP_UNKNOWN_SSRC, 1);
		return;
	}
	leg->layer_media_at[layer] = now;
	forward(w, leg, KIND_VIDEO, pkt, len, &v, layer, now);
}

static void upcall(struct worker *w, struct sfte_leg *leg, const struct io_rx *rx)
{
	uint64_t head = w->upcall_head;
	struct sfte_upcall *u;

	if (head - __atomic_load_n(&w->upcall_tail, __ATOMIC_ACQUIRE) >= UPCALL_RING) {
		detail(w, SFTE_DETAIL_UPCALLS_DROPPED, 1);
		return;
	}
	u = &w->upcalls[head % UPCALL_RING];
	u->leg_id = leg->id;
	u->len = (uint32_t)rx->len;
	memcpy(u->data, rx->data, rx->len);
	u->host[0] = 0;
	u->port = 0;
	if (rx->source.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)&rx->source;
		inet_ntop(AF_INET, &a->sin_addr, u->host, sizeof(u->host));
		u->port = ntohs(a->sin_port);
	} else if (rx->source.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&rx->source;
		inet_ntop(AF_INET6, &a->sin6_addr, u->host, sizeof(u->host));
		u->port = ntohs(a->sin6_port);
	}
	__atomic_store_n(&w->upcall_head, head + 1, __ATOMIC_RELEASE);
	detail(w, SFTE_DETAIL_UPCALLS, 1);
	w->upcalls_pending = 1;
}

static int same_address(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->ss_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
		return x->sin6_port == y->sin6_port &&
		       memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
	}
	return 0;
}

/* Media (RFC 7983: first byte 128-191, not RTCP) from the validated address is
 * ours; everything else goes to the controller's socket protocol. */
static void receive_leg(struct worker *w, struct sfte_leg *leg)
{
	for (int round = 0; round < RECEIVE_ROUNDS; round++) {
		int n = io_udp_receive(leg->fd, w->rx, IO_BATCH);
		int64_t now;
		if (n == 0)
			return;
		detail(w, SFTE_DETAIL_RX_BATCHES, 1);
		now = now_ns();
		for (int i = 0; i < n; i++) {
			struct io_rx *rx = &w->rx[i];
			uint8_t first = rx->len ? rx->data[0] : 0;
			int rtcp = rx->len > 1 && rx->data[1] > 191 && rx->data[1] < 224;
			if (rx->len == 0)
				continue;
			if (first > 127 && first < 192 && !rtcp && same_address(&rx->source, &leg->remote))
				handle_media(w, leg, rx->data, rx->len, now);
			else
				upcall(w, leg, rx);
		}
		if (n < IO_BATCH)
			return;
	}
}

/* ------------------------------------------------------------- AF_XDP */

static uint32_t tuple_hash(uint32_t local_ip, uint32_t remote_ip, uint16_t local_port,
			   uint16_t remote_port)
{
	uint32_t h = remote_ip * 0x9E3779B1u ^ local_ip;

	h ^= ((uint32_t)remote_port << 16 | local_port) * 0x85EBCA6Bu;
	return (h ^ h >> 15) & (TUPLE_BUCKETS - 1);
}

static struct sfte_leg **tuple_bucket(struct sfte_engine *e, const struct sfte_leg *leg)
{
	return &e->tuples[tuple_hash(leg->tuple_local_ip, leg->tuple_remote_ip,
				     leg->tuple_local_port, leg->tuple_remote_port)];
}

/* The table's writers hold tuples_lock for writing. */
static void tuple_insert(struct sfte_engine *e, struct sfte_leg *leg)
{
	struct sfte_leg **bucket;

	if (!leg->tuple_keyed)
		return;
	bucket = tuple_bucket(e, leg);
	leg->tuple_next = *bucket;
	*bucket = leg;
}

static void tuple_remove(struct sfte_engine *e, struct sfte_leg *leg)
{
	struct sfte_leg **link;

	if (!leg->tuple_keyed)
		return;
	for (link = tuple_bucket(e, leg); *link != NULL; link = &(*link)->tuple_next)
		if (*link == leg) {
			*link = leg->tuple_next;
			return;
		}
}

static struct sfte_leg *tuple_find(struct sfte_engine *e, const struct xsk_rx_desc *d)
{
	struct sfte_leg *leg = e->tuples[tuple_hash(d->daddr, d->saddr, d->dport, d->sport)];

	for (; leg != NULL; leg = leg->tuple_next)
		if (leg->tuple_remote_ip == d->saddr && leg->tuple_local_ip == d->daddr &&
		    leg->tuple_remote_port == d->sport && leg->tuple_local_port == d->dport)
			return leg;
	return NULL;
}

/* The 5-tuple and the copies' header of a leg at ``remote`` on ``path``; an
 * IPv6 leg or one without a path has neither (its media stays on the socket). */
static void xdp_path(const struct sfte_path *path, const struct sockaddr_storage *remote,
		     struct sfte_leg *key, uint32_t *tx_ifindex, struct xsk_udp_template *header)
{
	const struct sockaddr_in *r = (const struct sockaddr_in *)remote;
	struct in_addr local;

	key->tuple_keyed = 0;
	*tx_ifindex = 0;
	if (path == NULL || remote->ss_family != AF_INET ||
	    inet_pton(AF_INET, path->local_host, &local) != 1)
		return;
	key->tuple_keyed = 1;
	key->tuple_local_ip = local.s_addr;
	key->tuple_remote_ip = r->sin_addr.s_addr;
	key->tuple_local_port = htons(path->local_port);
	key->tuple_remote_port = r->sin_port;
	if (path->ifindex == 0)
		return;
	*tx_ifindex = path->ifindex;
	io_xdp_header(header, path->src_mac, path->dst_mac, local.s_addr, r->sin_addr.s_addr,
		      htons(path->local_port), r->sin_port);
}

static struct cmd *new_cmd(enum cmd_type type, struct sfte_leg *leg, size_t data_len);
static void post_chain(struct sfte_engine *e, int worker, struct cmd *head, struct cmd *tail);

struct handoff { /* packets of one receive batch for one other worker */
	int worker;
	struct cmd *head, *tail;
};

/* Steered RTP: every datagram on a port is a registered leg's, unless the leg went
 * since. A leg of another worker gets the packet through that worker's queue (one
 * post per worker and batch), posted under the table's lock so that it comes
 * before the leg's removal. */
static void receive_port(struct worker *w, struct io_xdp_port *p)
{
	struct sfte_engine *e = w->engine;
	struct handoff handoffs[IO_BATCH];

	for (int round = 0; round < RECEIVE_ROUNDS; round++) {
		unsigned n = io_xdp_receive(p, w->xrx, IO_BATCH), n_handoffs = 0;
		int64_t now;
		if (n == 0)
			break;
		detail(w, SFTE_DETAIL_RX_BATCHES, 1);
		detail(w, SFTE_DETAIL_XDP_RX, n);
		now = now_ns();
		pthread_rwlock_rdlock(&e->tuples_lock);
		for (unsigned i = 0; i < n; i++) {
			const struct xsk_rx_desc *d = &w->xrx[i];
			struct sfte_leg *leg = tuple_find(e, d);
			if (leg == NULL || leg->worker == w->index) {
				handle_media(w, leg, d->payload, d->payload_len, now);
			} else {
				struct cmd *c = new_cmd(CMD_PACKET, leg, d->payload_len);
				unsigned k = 0;
				memcpy(c->data, d->payload, d->payload_len);
				c->from_port = 1;
				while (k < n_handoffs && handoffs[k].worker != leg->worker)
					k++;
				if (k == n_handoffs)
					handoffs[n_handoffs++] = (struct handoff){leg->worker, c, c};
				else
					handoffs[k].tail = handoffs[k].tail->next = c;
				detail(w, SFTE_DETAIL_XDP_HANDOFFS, 1);
			}
		}
		for (unsigned k = 0; k < n_handoffs; k++)
			post_chain(e, handoffs[k].worker, handoffs[k].head, handoffs[k].tail);
		pthread_rwlock_unlock(&e->tuples_lock);
		io_xdp_release(p, w->xrx, n);
		if (n < IO_BATCH)
			break;
	}
}

/* -------------------------------------------------------------- commands */

static void apply_port(struct worker *w, struct io_xdp_port *p)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = p};
	struct io_xdp_port **ports = realloc(w->ports, (size_t)(w->n_ports + 1) * sizeof(*ports));

	if (ports == NULL) {
		fprintf(stderr, "sftd engine: out of memory for an AF_XDP port\n");
		abort(); /* the port is in the XSKMAP: its packets would go nowhere */
	}
	w->ports = ports;
	w->ports[w->n_ports++] = p;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, io_xdp_fd(p), &ev) != 0)
		perror("sftd engine: watching an AF_XDP port");
}

static void epoll_watch(struct worker *w, struct sfte_leg *leg)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = leg};

	if (w->epfd < 0 || !leg->take_receive || leg->fd < 0 || leg->in_epoll)
		return;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, leg->fd, &ev) == 0)
		leg->in_epoll = 1;
}

static void epoll_unwatch(struct worker *w, struct sfte_leg *leg)
{
	if (leg->in_epoll)
		epoll_ctl(w->epfd, EPOLL_CTL_DEL, leg->fd, NULL);
	leg->in_epoll = 0;
}

static struct slot *slot_of(struct sfte_leg *leg, int kind, uint32_t index)
{
	uint32_t base = kind == KIND_AUDIO ? 0 : leg->audio_slots;
	uint32_t n = kind == KIND_AUDIO ? leg->audio_slots : leg->n_slots - leg->audio_slots;

	return index < n ? &leg->slots[base + index] : NULL;
}

static void apply_add(struct worker *w, struct sfte_leg *leg)
{
	if (w->n_legs == w->cap_legs) {
		uint32_t cap = w->cap_legs ? 2 * w->cap_legs : 16;
		struct sfte_leg **legs = realloc(w->legs, cap * sizeof(*legs));
		if (legs == NULL)
			return; /* sfte_leg_new reserved room; not reached */
		w->legs = legs;
		w->cap_legs = cap;
	}
	w->legs[w->n_legs++] = leg;
	if (w->cap_releasing < w->cap_legs) {
		struct sfte_leg **releasing = realloc(w->releasing, w->cap_legs * sizeof(*releasing));
		if (releasing != NULL) {
			w->releasing = releasing;
			w->cap_releasing = w->cap_legs;
		}
	}
	epoll_watch(w, leg);
	/* slots pointed at this leg before it was added */
	for (uint32_t i = 0; i < w->n_legs; i++) {
		struct sfte_leg *sub = w->legs[i];
		for (uint32_t s = 0; s < sub->n_slots; s++) {
			struct slot *slot = &sub->slots[s];
			if (slot->has_source && slot->publisher == NULL && slot->publisher_id == leg->id) {
				slot->publisher = leg;
				route_add(leg, slot->kind, sub, slot);
			}
		}
	}
}

static void apply_remove(struct worker *w, struct sfte_leg *leg)
{
	for (int kind = 0; kind < 2; kind++) { /* slots forwarding it go empty */
		for (uint32_t i = 0; i < leg->routes[kind].n; i++) {
			struct slot *slot = leg->routes[kind].items[i].slot;
			slot->has_source = slot->has_input = 0;
			slot->publisher = NULL;
		}
		leg->routes[kind].n = 0;
	}
	for (uint32_t s = 0; s < leg->n_slots; s++) {
		struct slot *slot = &leg->slots[s];
		if (slot->has_source && slot->publisher != NULL)
			route_remove(slot->publisher, slot->kind, slot);
		slot->has_source = 0;
		slot->publisher = NULL;
	}
	for (uint32_t i = 0; i < w->n_legs; i++)
		if (w->legs[i] == leg) {
			w->legs[i] = w->legs[--w->n_legs];
			break;
		}
	epoll_unwatch(w, leg);
	if (leg->fd >= 0)
		close(leg->fd);
	leg->fd = -1;
	leg->removed = 1;
	/* epoll events of this round may still name it: released once they are done */
	if (w->engine->threads && w->n_releasing < w->cap_releasing)
		w->releasing[w->n_releasing++] = leg;
	else
		__atomic_store_n(&leg->released, 1, __ATOMIC_RELEASE);
}

static void release_removed(struct worker *w)
{
	for (uint32_t i = 0; i < w->n_releasing; i++)
		__atomic_store_n(&w->releasing[i]->released, 1, __ATOMIC_RELEASE); /* last touch */
	w->n_releasing = 0;
}

static void apply_slot(struct cmd *c)
{
	struct sfte_leg *sub = c->leg;
	struct slot *slot = slot_of(sub, c->u.slot.kind, c->u.slot.index);

	if (slot == NULL)
		return;
	if (slot->has_source == c->u.slot.has_source &&
	    (!slot->has_source || (slot->publisher_id == c->u.slot.publisher_id &&
				   slot->csrc == c->u.slot.csrc && slot->layer == c->u.slot.layer)))
		return;
	if (slot->has_source && slot->publisher != NULL)
		route_remove(slot->publisher, slot->kind, slot);
	slot->has_source = c->u.slot.has_source;
	slot->publisher_id = c->u.slot.publisher_id;
	slot->publisher = c->u.slot.publisher;
	slot->csrc = c->u.slot.csrc;
	slot->layer = c->u.slot.layer;
	if (slot->kind == KIND_AUDIO || !slot->has_source)
		slot->has_input = 0; /* audio switches at once; video waits for a keyframe */
	if (slot->has_source && slot->publisher != NULL)
		route_add(slot->publisher, slot->kind, sub, slot);
}

static void apply_publisher(struct cmd *c)
{
	struct sfte_leg *leg = c->leg;

	leg->n_audio = c->u.publisher.n_audio;
	memcpy(leg->audio_ssrcs, c->u.publisher.audio, sizeof(uint32_t) * leg->n_audio);
	for (uint32_t i = 0; i < c->u.publisher.n_video; i++)
		set_video_layer(leg, c->u.publisher.video[i], c->u.publisher.layers[i]);
}

static void apply(struct worker *w, struct cmd *c)
{
	struct sfte_engine *e = w->engine;

	switch (c->type) {
	case CMD_ADD:
		apply_add(w, c->leg);
		break;
	case CMD_ADDRESS:
		flush_all(w); /* queued copies leave with the header they were made for */
		memcpy(&c->leg->remote, &c->u.address.remote, sizeof(c->leg->remote));
		c->leg->tx_ifindex = c->u.address.tx_ifindex;
		c->leg->tx_header = c->u.address.tx_header;
		c->leg->remote_len = c->u.address.remote_len;
		if (c->u.address.fd >= 0) {
			epoll_unwatch(w, c->leg);
			if (c->leg->fd >= 0)
				close(c->leg->fd);
			c->leg->fd = c->u.address.fd;
			c->leg->take_receive = c->u.address.take_receive;
			epoll_watch(w, c->leg);
		}
		break;
	case CMD_REMOVE:
		flush_all(w);
		apply_remove(w, c->leg);
		break;
	case CMD_PUBLISHER:
		apply_publisher(c);
		break;
	case CMD_SLOT:
		apply_slot(c);
		break;
	case CMD_PACKET:
		if (!c->from_port)
			detail(w, SFTE_DETAIL_INJECTED, 1);
		handle_media(w, c->leg, c->data, c->len, now_ns());
		break;
	case CMD_SYNC:
		flush_all(w);
		pthread_mutex_lock(&e->sync_lock);
		__atomic_store_n(&w->synced, c->u.ticket, __ATOMIC_RELEASE);
		pthread_cond_broadcast(&e->synced);
		pthread_mutex_unlock(&e->sync_lock);
		break;
	case CMD_PORT:
		apply_port(w, c->u.port);
		break;
	}
}

/* Appends the commands head..tail (linked by next) to a worker's queue, one wake-up. */
static void post_chain(struct sfte_engine *e, int worker, struct cmd *head, struct cmd *tail)
{
	struct worker *w = &e->workers[worker];
	uint64_t one = 1;
	int was_empty;

	tail->next = NULL;
	pthread_mutex_lock(&w->lock);
	was_empty = w->tail == NULL;
	if (w->tail)
		w->tail->next = head;
	else
		w->head = head;
	w->tail = tail;
	pthread_mutex_unlock(&w->lock);
	/* A queue that was not empty has a wake-up pending: the worker reads the
	 * eventfd before it takes the queue (worker_main), so one write per burst
	 * of commands is enough, and a burst costs one system call, not one each. */
	if (was_empty && write(w->wakefd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		perror("sftd engine: waking a worker");
}

static void post(struct sfte_engine *e, int worker, struct cmd *c)
{
	if (!e->threads) { /* inline: the caller is the worker */
		struct worker *w = &e->workers[worker];
		c->next = NULL;
		apply(w, c);
		flush_all(w);
		free(c);
		return;
	}
	post_chain(e, worker, c, c);
}

static struct cmd *new_cmd(enum cmd_type type, struct sfte_leg *leg, size_t data_len)
{
	struct cmd *c = calloc(1, sizeof(*c) + data_len);

	if (c == NULL) {
		fprintf(stderr, "sftd engine: out of memory for a command\n");
		abort(); /* the controller's view and the workers' would part ways */
	}
	c->type = type;
	c->leg = leg;
	c->len = data_len;
	return c;
}

static void run_commands(struct worker *w)
{
	struct cmd *c, *next;

	pthread_mutex_lock(&w->lock);
	c = w->head;
	w->head = w->tail = NULL;
	pthread_mutex_unlock(&w->lock);
	for (; c != NULL; c = next) {
		next = c->next;
		apply(w, c);
		free(c);
	}
}

static void notify_upcalls(struct worker *w)
{
	uint64_t one = 1;

	if (!w->upcalls_pending)
		return;
	w->upcalls_pending = 0;
	if (write(w->engine->upcall_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		perror("sftd engine: notifying the controller");
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct sfte_engine *e = w->engine;
	struct epoll_event events[64];

	while (!__atomic_load_n(&e->stop, __ATOMIC_ACQUIRE)) {
		int n = epoll_wait(w->epfd, events, 64, -1), wake = 0;
		if (n < 0 && errno != EINTR) {
			perror("sftd engine: epoll_wait");
			break;
		}
		/* Commands first: a packet read after remove_leg returned must not be
		 * forwarded. A leg they remove stays allocated until this round's events
		 * are done (release_removed). */
		for (int i = 0; i < n; i++)
			wake |= events[i].data.ptr == w;
		if (wake) {
			uint64_t value;
			if (read(w->wakefd, &value, sizeof(value)) < 0 && errno != EAGAIN)
				perror("sftd engine: reading the wake-up");
			run_commands(w);
		}
		for (int i = 0; i < n; i++) {
			void *source = events[i].data.ptr;
			if (source == w)
				continue;
			if (*(const int *)source == IO_EPOLL_PORT) {
				receive_port(w, source);
			} else {
				struct sfte_leg *leg = source;
				if (!leg->removed)
					receive_leg(w, leg);
			}
		}
		flush_all(w);
		release_removed(w);
		notify_upcalls(w);
	}
	return NULL;
}

/* ------------------------------------------------------------------- API */

static void pin(pthread_t thread, int index)
{
	cpu_set_t allowed, one;
	int n = 0, cpu = -1;

	if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0 || CPU_COUNT(&allowed) == 0)
		return;
	for (int c = 0, k = index % CPU_COUNT(&allowed); c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &allowed) && n++ == k) {
			cpu = c;
			break;
		}
	if (cpu < 0)
		return;
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	pthread_setaffinity_np(thread, sizeof(one), &one);
}

struct sfte_engine *sfte_new(int workers, int64_t layer_paused_ns, uint32_t ts_gap_audio,
			     uint32_t ts_gap_video, int dry_run, char *err, size_t errlen)
{
	struct sfte_engine *e = calloc(1, sizeof(*e));

	if (e == NULL || workers < 0 || workers > 1024) {
		snprintf(err, errlen, "cannot make an engine of %d workers", workers);
		free(e);
		return NULL;
	}
	e->threads = workers;
	e->n_workers = workers ? workers : 1;
	e->layer_paused_ns = layer_paused_ns;
	e->ts_gap[KIND_AUDIO] = ts_gap_audio;
	e->ts_gap[KIND_VIDEO] = ts_gap_video;
	e->dry_run = dry_run;
	e->upcall_fd = -1;
	pthread_mutex_init(&e->sync_lock, NULL);
	pthread_cond_init(&e->synced, NULL);
	pthread_rwlockattr_t writer_first;
	pthread_rwlockattr_init(&writer_first); /* the controller is not starved by the ports */
	pthread_rwlockattr_setkind_np(&writer_first, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&e->tuples_lock, &writer_first);
	pthread_rwlockattr_destroy(&writer_first);
	e->tuples = calloc(TUPLE_BUCKETS, sizeof(*e->tuples));
	e->workers = calloc((size_t)e->n_workers, sizeof(*e->workers));
	if (e->workers == NULL || e->tuples == NULL)
		goto fail;
	if (workers && (e->upcall_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
		goto fail;
	for (int i = 0; i < e->n_workers; i++) {
		struct worker *w = &e->workers[i];
		w->engine = e;
		w->index = i;
		w->epfd = w->wakefd = -1;
		pthread_mutex_init(&w->lock, NULL);
		w->conference_packets = calloc(SFTE_MAX_CONFERENCES, sizeof(uint64_t));
		w->upcalls = calloc(UPCALL_RING, sizeof(*w->upcalls));
		if (w->conference_packets == NULL || w->upcalls == NULL)
			goto fail;
	}
	for (int i = 0; workers && i < e->n_workers; i++) {
		struct worker *w = &e->workers[i];
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = w};
		w->epfd = epoll_create1(EPOLL_CLOEXEC);
		w->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (w->epfd < 0 || w->wakefd < 0 || epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->wakefd, &ev))
			goto fail;
		if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
			goto fail;
		w->started = 1;
		pin(w->thread, i);
	}
	return e;
fail:
	snprintf(err, errlen, "cannot start the engine's workers: %s", strerror(errno));
	sfte_free(e);
	return NULL;
}

void sfte_free(struct sfte_engine *e)
{
	if (e == NULL)
		return;
	__atomic_store_n(&e->stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; e->workers && i < e->n_workers; i++) {
		struct worker *w = &e->workers[i];
		uint64_t one = 1;
		if (w->started) {
			if (write(w->wakefd, &one, sizeof(one)) < 0)
				perror("sftd engine: stopping a worker");
			pthread_join(w->thread, NULL);
		}
	}
	for (int i = 0; e->workers && i < e->n_workers; i++) {
		struct worker *w = &e->workers[i];
		struct cmd *c = w->head, *next;
		for (; c != NULL; c = next) {
			next = c->next;
			if (c->type == CMD_PORT)
				apply_port(w, c->u.port); /* closed below with the others */
			free(c);
		}
		while (w->n_legs > 0) /* legs still added: let go of them */
			apply_remove(w, w->legs[0]);
		release_removed(w);
		free(w->releasing);
		if (w->epfd >= 0)
			close(w->epfd);
		if (w->wakefd >= 0)
			close(w->wakefd);
		for (int p = 0; p < w->n_ports; p++) {
			io_xdp_close(w->ports[p]);
		}
		free(w->ports);
		free(w->legs);
		free(w->conference_packets);
		free(w->upcalls);
	}
	if (e->upcall_fd >= 0)
		close(e->upcall_fd);
	pthread_rwlock_destroy(&e->tuples_lock);
	free(e->tuples);
	free(e->ports);
	free(e->workers);
	free(e);
}

int sfte_workers(struct sfte_engine *e) { return e->threads; }

uint64_t sfte_xdp_rx_dropped(struct sfte_engine *e)
{
	uint64_t sum = 0;

	for (int i = 0; i < e->n_ports; i++)
		sum += io_xdp_rx_dropped(e->ports[i]);
	return sum;
}

int sfte_add_port(struct sfte_engine *e, int worker, uint32_t ifindex, uint32_t queue,
		  uint32_t ring_size, uint32_t mode, int xskmap_fd, char *err, size_t errlen)
{
	const struct io_xdp_port **all;
	struct io_xdp_port *p;
	struct cmd *c;
	int zerocopy;

	if (!e->threads || worker < 0 || worker >= e->n_workers) {
		snprintf(err, errlen, "an AF_XDP port needs a worker thread (worker %d of %d)", worker,
			 e->threads);
		return -1;
	}
	all = realloc(e->ports, (size_t)(e->n_ports + 1) * sizeof(*all));
	if (all == NULL) {
		snprintf(err, errlen, "out of memory for an AF_XDP port");
		return -1;
	}
	e->ports = all;
	p = io_xdp_open(ifindex, queue, ring_size, mode, xskmap_fd, err, errlen);
	if (p == NULL)
		return -1;
	e->ports[e->n_ports++] = p;
	zerocopy = io_xdp_zerocopy(p);
	c = new_cmd(CMD_PORT, NULL, 0);
	c->u.port = p; /* from here the worker's alone */
	post(e, worker, c);
	return zerocopy;
}
int sfte_upcall_fd(struct sfte_engine *e) { return e->upcall_fd; }

int sfte_upcall_pop(struct sfte_engine *e, struct sfte_upcall *out)
{
	for (int k = 0; k < e->n_workers; k++) {
		struct worker *w = &e->workers[(e->upcall_next + (uint32_t)k) % (uint32_t)e->n_workers];
		uint64_t tail = w->upcall_tail;
		if (tail == __atomic_load_n(&w->upcall_head, __ATOMIC_ACQUIRE))
			continue;
		memcpy(out, &w->upcalls[tail % UPCALL_RING], sizeof(*out));
		__atomic_store_n(&w->upcall_tail, tail + 1, __ATOMIC_RELEASE);
		e->upcall_next = (uint32_t)(w->index + 1);
		return 1;
	}
	return 0;
}

static int parse_address(const char *host, uint16_t port, struct sockaddr_storage *out,
			 socklen_t *len, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	struct sockaddr_in *a4 = (struct sockaddr_in *)out;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)out;
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons(port);
		*len = sizeof(*a4);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons(port);
		*len = sizeof(*a6);
		return 0;
	}
	snprintf(err, errlen, "remote address %.64s is not an IP address", host);
	return -1;
}

struct sfte_leg *sfte_leg_new(struct sfte_engine *e, const struct sfte_leg_config *cfg, int worker,
			      char *err, size_t errlen)
{
	struct sfte_leg *leg;

	if (worker < 0 || worker >= e->n_workers) {
		snprintf(err, errlen, "worker %d of %d", worker, e->n_workers);
		return NULL;
	}
	if (cfg->audio_slots + cfg->video_slots > SFTE_MAX_SLOTS ||
	    cfg->conference_id >= SFTE_MAX_CONFERENCES) {
		snprintf(err, errlen, "leg %u: %u audio + %u video slots (at most %d) or conference "
			 "id %u (below %d)", cfg->leg_id, cfg->audio_slots, cfg->video_slots,
			 SFTE_MAX_SLOTS, cfg->conference_id, SFTE_MAX_CONFERENCES);
		return NULL;
	}
	leg = calloc(1, sizeof(*leg));
	if (leg == NULL) {
		snprintf(err, errlen, "out of memory for leg %u", cfg->leg_id);
		return NULL;
	}
	leg->epoll_tag = IO_EPOLL_LEG;
	leg->engine = e;
	leg->worker = worker;
	leg->id = cfg->leg_id;
	leg->conference_id = cfg->conference_id;
	leg->fd = -1;
	leg->arrival_seq = calloc(SFTE_ARRIVALS, sizeof(uint16_t));
	leg->arrival_ns = calloc(SFTE_ARRIVALS, sizeof(int64_t));
	leg->twcc = sfte_twcc_new();
	if (leg->arrival_seq == NULL || leg->arrival_ns == NULL || leg->twcc == NULL) {
		snprintf(err, errlen, "out of memory for leg %u", cfg->leg_id);
		goto fail;
	}
	if (parse_address(cfg->remote_host, cfg->remote_port, &leg->remote, &leg->remote_len, err,
			  errlen) != 0 ||
	    srtp_ctx_init(&leg->rx, cfg->profile, cfg->rx_master, cfg->master_len, 1, err, errlen) ||
	    srtp_ctx_init(&leg->tx, cfg->profile, cfg->tx_master, cfg->master_len, 0, err, errlen))
		goto fail;
	xdp_path(&cfg->path, &leg->remote, leg, &leg->tx_ifindex, &leg->tx_header);
	if (cfg->fd >= 0 && (leg->fd = fcntl_dup(cfg->fd)) < 0) {
		snprintf(err, errlen, "leg %u: cannot keep its socket: %s", cfg->leg_id,
			 strerror(errno));
		goto fail;
	}
	leg->take_receive = cfg->take_receive && e->threads;
	leg->ext_audio_level = cfg->ext_audio_level;
	leg->ext_rid = cfg->ext_rid;
	leg->ext_frame_descriptor = cfg->ext_frame_descriptor;
	leg->ext_transport_cc = cfg->ext_transport_cc;
	leg->audio_slots = cfg->audio_slots;
	leg->n_slots = cfg->audio_slots + cfg->video_slots;
	for (uint32_t i = 0; i < leg->n_slots; i++) {
		struct slot *slot = &leg->slots[i];
		slot->ssrc = cfg->slot_ssrc[i];
		slot->kind = i < cfg->audio_slots ? KIND_AUDIO : KIND_VIDEO;
		slot->last_seq = cfg->slot_last_seq[i];
		slot->last_ts = cfg->slot_last_ts[i];
	}
	double silent = AUDIO_LEVEL_SILENT;
	memcpy(&leg->level_bits, &silent, sizeof(silent));
	return leg;
fail:
	sfte_leg_free(leg);
	return NULL;
}

void sfte_leg_free(struct sfte_leg *leg)
{
	if (leg == NULL)
		return;
	srtp_ctx_free(&leg->rx);
	srtp_ctx_free(&leg->tx);
	if (leg->fd >= 0)
		close(leg->fd);
	free(leg->routes[0].items);
	free(leg->routes[1].items);
	free(leg->arrival_seq);
	free(leg->arrival_ns);
	sfte_twcc_free(leg->twcc);
	free(leg);
}

/* The table changes with the command posted under its lock: a port worker that
 * found the leg posted its packet before the command, one that did not find it
 * posts after. */
void sfte_add_leg(struct sfte_engine *e, struct sfte_leg *leg)
{
	pthread_rwlock_wrlock(&e->tuples_lock);
	post(e, leg->worker, new_cmd(CMD_ADD, leg, 0));
	tuple_insert(e, leg);
	pthread_rwlock_unlock(&e->tuples_lock);
}

int sfte_set_address(struct sfte_engine *e, struct sfte_leg *leg, const char *host, uint16_t port,
		     int fd, int take_receive, const struct sfte_path *path, char *err,
		     size_t errlen)
{
	struct cmd *c = new_cmd(CMD_ADDRESS, leg, 0);

	if (parse_address(host, port, &c->u.address.remote, &c->u.address.remote_len, err,
			  errlen) != 0) {
		free(c);
		return -1;
	}
	c->u.address.fd = -1;
	if (fd >= 0 && (c->u.address.fd = fcntl_dup(fd)) < 0) {
		snprintf(err, errlen, "leg %u: cannot keep its new socket: %s", leg->id,
			 strerror(errno));
		free(c);
		return -1;
	}
	c->u.address.take_receive = take_receive && e->threads;
	pthread_rwlock_wrlock(&e->tuples_lock);
	tuple_remove(e, leg);
	xdp_path(path, &c->u.address.remote, leg, &c->u.address.tx_ifindex,
		 &c->u.address.tx_header);
	post(e, leg->worker, c);
	tuple_insert(e, leg);
	pthread_rwlock_unlock(&e->tuples_lock);
	return 0;
}

void sfte_remove_leg(struct sfte_engine *e, struct sfte_leg *leg)
{
	pthread_rwlock_wrlock(&e->tuples_lock);
	tuple_remove(e, leg);
	post(e, leg->worker, new_cmd(CMD_REMOVE, leg, 0));
	pthread_rwlock_unlock(&e->tuples_lock);
}

int sfte_leg_released(struct sfte_leg *leg)
{
	return __atomic_load_n(&leg->released, __ATOMIC_ACQUIRE);
}

void sfte_set_publisher(struct sfte_engine *e, struct sfte_leg *leg, const uint32_t *audio,
			uint32_t n_audio, const uint32_t *video, const uint8_t *layers,
			uint32_t n_video)
{
	struct cmd *c = new_cmd(CMD_PUBLISHER, leg, 0);

	if (n_audio > SFTE_MAX_SSRCS_PER_LEG)
		n_audio = SFTE_MAX_SSRCS_PER_LEG;
	if (n_video > SFTE_MAX_SSRCS_PER_LEG)
		n_video = SFTE_MAX_SSRCS_PER_LEG;
	memcpy(c->u.publisher.audio, audio, n_audio * sizeof(uint32_t));
	memcpy(c->u.publisher.video, video, n_video * sizeof(uint32_t));
	memcpy(c->u.publisher.layers, layers, n_video);
	c->u.publisher.n_audio = n_audio;
	c->u.publisher.n_video = n_video;
	post(e, leg->worker, c);
}

void sfte_set_slot(struct sfte_engine *e, struct sfte_leg *subscriber, int kind, uint32_t index,
		   int has_source, struct sfte_leg *publisher, uint32_t publisher_id, uint32_t csrc,
		   int layer)
{
	struct cmd *c = new_cmd(CMD_SLOT, subscriber, 0);

	c->u.slot.kind = kind;
	c->u.slot.index = index;
	c->u.slot.has_source = has_source;
	c->u.slot.publisher = publisher;
	c->u.slot.publisher_id = publisher_id;
	c->u.slot.csrc = csrc;
	c->u.slot.layer = layer;
	post(e, subscriber->worker, c);
}

void sfte_packet(struct sfte_engine *e, struct sfte_leg *leg, const uint8_t *data, size_t len)
{
	struct cmd *c;

	if (len > SFTE_MAX_PACKET)
		len = SFTE_MAX_PACKET; /* still past 1500 bytes: counted malformed */
	c = new_cmd(CMD_PACKET, leg, len);
	memcpy(c->data, data, len);
	post(e, leg ? leg->worker : 0, c);
}

void sfte_sync(struct sfte_engine *e)
{
	uint64_t ticket;

	if (!e->threads)
		return;
	ticket = ++e->sync_ticket;
	for (int i = 0; i < e->n_workers; i++) {
		struct cmd *c = new_cmd(CMD_SYNC, NULL, 0);
		c->u.ticket = ticket;
		post(e, i, c);
	}
	pthread_mutex_lock(&e->sync_lock);
	for (int i = 0; i < e->n_workers; i++)
		while (__atomic_load_n(&e->workers[i].synced, __ATOMIC_ACQUIRE) < ticket)
			pthread_cond_wait(&e->synced, &e->sync_lock);
	pthread_mutex_unlock(&e->sync_lock);
}

void sfte_read_counters(struct sfte_engine *e, uint64_t *counters, uint64_t *details)
{
	memset(counters, 0, SFTE_COUNTERS * sizeof(uint64_t));
	memset(details, 0, SFTE_DETAILS * sizeof(uint64_t));
	for (int i = 0; i < e->n_workers; i++) {
		for (int c = 0; c < SFTE_COUNTERS; c++)
			counters[c] += LOAD(&e->workers[i].counters[c]);
		for (int d = 0; d < SFTE_DETAILS; d++)
			details[d] += LOAD(&e->workers[i].details[d]);
	}
}

uint64_t sfte_conference_packets(struct sfte_engine *e, uint32_t conference_id)
{
	uint64_t sum = 0;

	if (conference_id >= SFTE_MAX_CONFERENCES)
		return 0;
	for (int i = 0; i < e->n_workers; i++)
		sum += LOAD(&e->workers[i].conference_packets[conference_id]);
	return sum;
}

int sfte_receive_stats(struct sfte_leg *leg, uint32_t ssrc, struct sfte_receive_stats *out)
{
	uint32_t before, after;
	int found;

	do {
		before = __atomic_load_n(&leg->stats_seq, __ATOMIC_ACQUIRE);
		found = 0;
		if (before & 1)
			continue;
		uint32_t n = LOAD(&leg->n_counters);
		for (uint32_t i = 0; i < n && i < SFTE_MAX_COUNTED_STREAMS; i++) {
			const struct receive_counter *c = &leg->counters[i];
			if (c->ssrc == ssrc) {
				out->received = c->received;
				out->first_seq = c->first_seq;
				out->highest_seq = c->highest_seq;
				out->jitter = c->jitter_q4 >> 4;
				found = 1;
				break;
			}
		}
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		after = LOAD(&leg->stats_seq);
	} while ((before & 1) || before != after);
	return found;
}

double sfte_audio_level(struct sfte_leg *leg, int64_t *updated_ns)
{
	uint64_t bits = LOAD(&leg->level_bits);
	double level;

	memcpy(&level, &bits, sizeof(level));
	*updated_ns = LOAD(&leg->level_time);
	return level;
}

void sfte_leg_media(struct sfte_leg *leg, struct sfte_leg_media *out)
{
	memset(out, 0, sizeof(*out));
	out->received_audio = LOAD(&leg->received[KIND_AUDIO]);
	out->received_video = LOAD(&leg->received[KIND_VIDEO]);
	for (uint32_t i = 0; i < leg->n_slots; i++)
		out->slot_sent[i] = LOAD(&leg->slots[i].sent);
}

int sfte_arrivals(struct sfte_leg *leg, uint16_t *seqs, int64_t *ns, int max)
{
	uint64_t tail = leg->arrivals_tail;
	uint64_t head = __atomic_load_n(&leg->arrivals_head, __ATOMIC_ACQUIRE);
	int n = 0;

	for (; tail != head && n < max; tail++, n++) {
		seqs[n] = leg->arrival_seq[tail % SFTE_ARRIVALS];
		ns[n] = leg->arrival_ns[tail % SFTE_ARRIVALS];
	}
	__atomic_store_n(&leg->arrivals_tail, tail, __ATOMIC_RELEASE);
	return n;
}

/* Every pending arrival into the leg's window (w NULL: dropped), popped as
 * sfte_arrivals pops them for the controller's Python window. */
static void drain_arrivals(struct sfte_leg *leg, struct sfte_twcc *w)
{
	enum { CHUNK = 256 };
	uint16_t seqs[CHUNK];
	int64_t ns[CHUNK];
	int n;

	do {
		n = sfte_arrivals(leg, seqs, ns, CHUNK);
		for (int i = 0; w != NULL && i < n; i++) /* CLOCK_MONOTONIC: no negative ns */
			sfte_twcc_add(w, seqs[i], ns[i] / 1000);
	} while (n == CHUNK);
}

int sfte_twcc_feedback(struct sfte_leg *leg, uint32_t sender_ssrc, uint32_t media_ssrc,
		       uint8_t *out, size_t cap, uint16_t *lens, int max_packets)
{
	/* a write that ran out of room goes on first, with the arrivals it saw */
	if (!sfte_twcc_unfinished(leg->twcc))
		drain_arrivals(leg, leg->twcc);
	return sfte_twcc_write(leg->twcc, sender_ssrc, media_ssrc, out, cap, lens, max_packets);
}

void sfte_twcc_forget(struct sfte_leg *leg)
{
	drain_arrivals(leg, NULL);
	sfte_twcc_reset(leg->twcc);
}

struct sfte_twcc *sfte_leg_twcc(struct sfte_leg *leg) { return leg->twcc; }

int sfte_ssrcs_seen(struct sfte_leg *leg) { return (int)LOAD(&leg->n_streams); }
int sfte_video_layers(struct sfte_leg *leg) { return (int)LOAD(&leg->n_video); }
