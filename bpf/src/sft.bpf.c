// SPDX-License-Identifier: AGPL-3.0-or-later
/* SFT media data plane: two entry programs sharing one set of maps.
 *   sft_xdp_ingress  NIC, XDP: passes STUN/DTLS/RTCP, drops junk aimed at the
 *                    media ports, lets SRTP of known legs through to TC.
 *   sft_tc_ingress   clsact ingress: SRTP of a known leg is verified and
 *                    decrypted once, then rewritten, re-protected and cloned to
 *                    every subscribed slot; the original is dropped. */
#include "sft_internal.h"
#include "sft_maps.h"
#include "sft_crypto.h"
#include "sft_rtp.h"

char LICENSE[] SEC("license") = "GPL";

/* Makes every type of sft_abi.h land in the object's BTF, where the ABI test
 * compares it with Python's view, even those only used on the stack. */
struct sft_abi_anchor {
	enum sft_counter counter;
	enum sft_kcounter kcounter;
	enum sft_event_type event_type;
	enum sft_stream_kind kind;
	struct sft_event event;
};
const volatile struct sft_abi_anchor sft_abi_anchor;

static __always_inline int sft_in_port_range(const struct sft_config *cfg, __u16 port)
{
	return port >= cfg->port_min && port <= cfg->port_max;
}

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

/* Whether (daddr, dport) is a leg's own socket: everything else in the port
 * range (DNS replies, a TURN server on this host, our own copies re-entering
 * loopback) is another socket's traffic and passes untouched. */
static __always_inline int sft_to_a_leg(__be32 daddr, __be16 dport)
{
	struct sft_local_key key = { .local_ip = daddr, .local_port = dport };

	return bpf_map_lookup_elem(&sft_leg_by_local, &key) != NULL;
}

static __always_inline __u64 sft_lease_timeout(const struct sft_config *cfg)
{
	return cfg->lease_timeout_ns ? cfg->lease_timeout_ns : SFT_LEASE_TIMEOUT_NS;
}

static __always_inline int sft_lease_valid(const struct sft_leg *leg, const struct sft_config *cfg,
					   __u64 now)
{
	const __u64 *lease = bpf_map_lookup_elem(&sft_leases, &leg->leg_id);

	return lease && (leg->flags & SFT_LEG_ACTIVE) && now - *lease <= sft_lease_timeout(cfg);
}

/* The SSRC a video slot preferring ``layer`` takes next: that layer's, unless
 * it is paused while the other flows (senders pause their high layer when
 * their estimate drops). A subprogram: inlined, it overflows the fan-out's stack. */
__noinline int sft_wanted_video_ssrc(__u32 leg_id, __u32 layer, __u64 now)
{
	const struct sft_config *cfg;
	struct sft_leg_state *ls;
	__u32 zero = 0;
	__u64 pause;

	cfg = bpf_map_lookup_elem(&sft_config, &zero);
	ls = bpf_map_lookup_elem(&sft_leg_state, &leg_id);
	if (!cfg || !ls)
		return 0;
	layer &= 1;
	if (!ls->video_ssrc[layer])
		return ls->video_ssrc[layer ^ 1];
	if (!ls->video_ssrc[layer ^ 1])
		return ls->video_ssrc[layer];
	pause = cfg->layer_pause_ns ? cfg->layer_pause_ns : SFT_LAYER_STALE_NS;
	if (now - ls->video_media_ns[layer] > pause && now - ls->video_media_ns[layer ^ 1] <= pause)
		return ls->video_ssrc[layer ^ 1];
	return ls->video_ssrc[layer];
}

/* RFC 3550 A.8 interarrival jitter, integer form (x 16), in RTP clock units.
 * A subprogram of its own: inlined, its locals overflow the receive path's stack. */
__noinline int sft_update_jitter(struct sft_stream_state *rs __arg_nonnull, __u32 timestamp,
				 __u32 kind, __u64 now)
{
	__u32 arrival = kind == SFT_KIND_AUDIO ? now * 48 / 1000000 : now * 9 / 100000;
	__u32 transit = arrival - timestamp;
	__s32 d = (__s32)(transit - rs->last_transit);

	if (d < 0)
		d = -d;
	if (rs->packets > 1)
		rs->jitter_q4 += (__u32)d - ((rs->jitter_q4 + 8) >> 4);
	rs->last_transit = transit;
	return 0;
}

static __always_inline void sft_emit(__u32 type, __u32 leg_id, __u32 ssrc, __u32 owner, __u64 index)
{
	struct sft_event ev = {
		.type = type, .leg_id = leg_id, .ssrc = ssrc, .owner = owner, .index = index,
	};

	if (bpf_ringbuf_output(&sft_events, &ev, sizeof(ev), 0))
		sft_kcount(SFT_K_TC_EVENT_LOST);
}

static __always_inline __u16 sft_csum_fold(__s64 sum)
{
	__u64 s = (__u32)sum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return ~s & 0xffff;
}

static __always_inline const struct sft_keystream *
sft_keystream_for(__u32 base, __u32 size, __u32 ssrc, __u64 index, __u32 len)
{
	const struct sft_keystream *ks;
	__u32 entry;

	if (!size)
		return NULL;
	entry = base + (__u32)(index & (size - 1));
	ks = bpf_map_lookup_elem(&sft_keystream, &entry);
	if (!ks || ks->index_tag != index + 1 || ks->ssrc != ssrc || ks->valid_len < len)
		return NULL;
	return ks;
}

struct sft_pseudo_hdr {
	__be32 saddr;
	__be32 daddr;
	__u8 zero;
	__u8 proto;
	__be16 len;
};

/* What the stack writes into a CHECKSUM_PARTIAL UDP header: the folded pseudo
 * header, not inverted; the device (or the receiver's trust) does the rest. */
static __always_inline __u16 sft_udp_csum_partial(__u32 udp_len, __be32 saddr, __be32 daddr)
{
	struct sft_pseudo_hdr ph = { .saddr = saddr, .daddr = daddr, .proto = IPPROTO_UDP,
				     .len = bpf_htons(udp_len) };

	return ~sft_csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0)) & 0xffff;
}

/* After the XOR: whether the entry still holds what sft_keystream_for checked.
 * The filler clears the tag before it touches the bytes and writes it last, so
 * an entry refilled under the reader fails here (the SSRC catches a ring given
 * to another owner and refilled at the same index meanwhile). */
static __always_inline int sft_keystream_intact(const struct sft_keystream *ks, __u32 ssrc,
						__u64 index)
{
	asm volatile("" ::: "memory");
	return *(const volatile __u64 *)&ks->index_tag == index + 1 &&
	       *(const volatile __u32 *)&ks->ssrc == ssrc;
}

/* UDP checksum of out[0, udp_len) with the IPv4 pseudo header. */
static __always_inline __u16 sft_udp_csum(struct sft_buf *out, __u32 udp_len, __be32 saddr,
					  __be32 daddr)
{
	struct sft_pseudo_hdr ph = { .saddr = saddr, .daddr = daddr, .proto = IPPROTO_UDP,
				     .len = bpf_htons(udp_len) };
	__u32 padded = (udp_len + 3) & ~3U, off, n, c;
	__s64 sum;
	__u16 csum;

	/* bpf_csum_diff takes multiples of 4 bytes and at most 512 at once */
	*(__u32 *)&out->b[udp_len & SFT_BUF_MASK] = 0;
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
	for (c = 0; c < 3; c++) {
		off = c * 512;
		if (off >= padded)
			break;
		n = padded - off;
		sft_barrier_var(n);
		if (n > 512)
			n = 512;
		sum = bpf_csum_diff(NULL, 0, (__be32 *)&out->b[off], n, (__u32)sum);
	}
	csum = sft_csum_fold(sum);
	return csum ? csum : 0xffff;
}

/* Rewrites the packet for one slot, protects it with the subscriber's keys and
 * clones it out. Returns 1 when a copy was sent. */
__noinline int sft_forward_to_slot(struct __sk_buff *skb, __u32 slot_id)
{
	const struct sft_keystream *ks;
	struct sft_slot_state *state;
	const struct sft_config *cfg;
	const struct sft_slot *slot;
	const struct sft_leg *sub;
	struct sft_scratch *s;
	struct sft_packet *p;
	struct iphdr iph;
	struct {
		__u8 dst[6];
		__u8 src[6];
	} eth;
	__u32 zero = 0, desired, udp_len, auth_len, out_ts, tag_off, ifindex;
	__u64 index;
	__u8 *o;

	if (!skb)
		return 0;
	s = bpf_map_lookup_elem(&sft_scratch, &zero);
	cfg = bpf_map_lookup_elem(&sft_config, &zero);
	slot = bpf_map_lookup_elem(&sft_slots, &slot_id);
	state = bpf_map_lookup_elem(&sft_slot_state, &slot_id);
	if (!s || !cfg || !slot || !state)
		return 0;
	p = &s->pkt;
	if (!(slot->flags & SFT_SLOT_ACTIVE) || slot->publisher != p->leg_id || slot->kind != p->kind)
		return 0;
	if (state->generation != slot->generation) {
		/* A new source starts afresh (video at its keyframe). A layer move
		 * keeps the current layer until the new one's keyframe (no stall),
		 * if this state still follows that publisher. */
		if (!(slot->flags & SFT_SLOT_LAYER_MOVE) || state->publisher != slot->publisher)
			state->source_ssrc = 0;
		state->generation = slot->generation;
		state->publisher = slot->publisher;
	}
	if (p->ssrc != state->source_ssrc) {
		if (p->kind == SFT_KIND_VIDEO) {
			desired = (__u32)sft_wanted_video_ssrc(p->leg_id, slot->layer, p->now_ns);
			if (p->ssrc != desired)
				return 0;
			if (!p->keyframe) {
				sft_kcount(SFT_K_TC_WAIT_KEYFRAME);
				return 0;
			}
		}
		state->ts_offset = state->last_out_ts - p->timestamp +
				   (p->kind == SFT_KIND_VIDEO ? SFT_TS_STEP_VIDEO : SFT_TS_STEP_AUDIO);
		state->index_offset = state->next_index - p->seq_index;
		state->source_ssrc = p->ssrc;
		state->floor_index = state->next_index;
		state->padding_seen = p->padding_dropped;
	} else if (state->padding_seen != p->padding_dropped) {
		/* the stream dropped padding since this slot's last copy: its packets moved
		 * down, so one reordered around the padding may map onto an index the slot
		 * sent. The floor rises past the newest copy, as userspace.py's on the drop
		 * (no copy of the source went out since, so next_index is the same). */
		state->floor_index = state->next_index;
		state->padding_seen = p->padding_dropped;
	}

	sub = bpf_map_lookup_elem(&sft_legs, &slot->subscriber);
	if (!sub)
		return 0;
	if (!sft_lease_valid(sub, cfg, p->now_ns)) {
		sft_kcount(SFT_K_TC_LEASE_EXPIRED);
		return 0;
	}
	if (!sub->ifindex) {
		sft_kcount(SFT_K_TC_NO_ROUTE_TO_LEG);
		return 0;
	}
	/* the source's sequence, gaps (loss upstream) included: receivers NACK them */
	index = p->seq_index + state->index_offset;
	if ((__s64)(index - state->floor_index) < 0) {
		/* older than the source's first copy: an index the previous source used */
		p->stale = 1;
		sft_count(SFT_CTR_DROP_STALE, 1);
		return 0;
	}
	ks = sft_keystream_for(slot->ks_base, slot->ks_size, slot->ssrc, index, p->payload_len);
	if (!ks) {
		sft_kcount(SFT_K_TC_TX_KEYSTREAM_MISS);
		if (index >= state->next_index) { /* not a late one: refill from here on */
			state->next_index = index;
			sft_emit(SFT_EV_SLOT_KEYSTREAM, slot->subscriber, slot->ssrc, slot_id, index);
		}
		return 0;
	}
	out_ts = p->timestamp + state->ts_offset;
	if (index >= state->next_index) {
		state->next_index = index + 1;
		state->last_out_ts = out_ts;
	}

	/* UDP header, then RTP with CC = 1, the slot's SSRC/seq/timestamp, the CSRC */
	udp_len = 8 + p->out_rtp_len;
	if (udp_len > 8 + SFT_MAX_RTP)
		return 0;
	o = s->out.b;
	*(__be16 *)&o[0] = sub->local_port;
	*(__be16 *)&o[2] = sub->remote_port;
	*(__be16 *)&o[4] = bpf_htons(udp_len);
	*(__u16 *)&o[6] = 0;
	o[8] = (p->byte0 & 0xf0) | 1;
	o[9] = p->byte1;
	o[10] = index >> 8;
	o[11] = index;
	sft_put_be32(&o[12], out_ts);
	sft_put_be32(&o[16], slot->ssrc);
	sft_put_be32(&o[20], slot->csrc);
	sft_copy_words(&s->out, &s->in, SFT_PAIR(24, p->ext_off), p->ext_len);
	sft_xor_keystream(&s->out, &s->in, SFT_PAIR(24 + p->ext_len, p->payload_off), ks,
			  p->payload_len);
	if (!sft_keystream_intact(ks, slot->ssrc, index)) {
		sft_kcount(SFT_K_TC_TX_KEYSTREAM_OVERWRITTEN);
		return 0;
	}
	auth_len = p->out_rtp_len - SFT_AUTH_TAG_LEN;
	if (sft_hmac_sha1_80(&s->out, SFT_PAIR(8, auth_len), index >> 16, &sub->tx_auth, &s->sha))
		return 0;
	tag_off = (8 + auth_len) & SFT_BUF_MASK;
	*(__u64 *)&o[tag_off] = *(__u64 *)&s->sha.digest[0];
	*(__u16 *)&o[(tag_off + 8) & SFT_BUF_MASK] = *(__u16 *)&s->sha.digest[8];
	if (p->csum_partial)
		*(__u16 *)&o[6] = sft_udp_csum_partial(udp_len, sub->local_ip, sub->remote_ip);
	else
		*(__u16 *)&o[6] = sft_udp_csum(&s->out, udp_len, sub->local_ip, sub->remote_ip);

	__builtin_memcpy(&iph, p->iph, sizeof(iph));
	iph.tot_len = bpf_htons(20 + udp_len);
	iph.ttl = 64;
	iph.saddr = sub->local_ip;
	iph.daddr = sub->remote_ip;
	iph.check = 0;
	iph.check = sft_csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)&iph, sizeof(iph), 0));
	__builtin_memcpy(eth.dst, sub->dst_mac, 6);
	__builtin_memcpy(eth.src, sub->src_mac, 6);
	ifindex = sub->ifindex;
	/* after the last read of sub: had its element been reused (sft_abi.h),
	 * this copy would carry another leg's keys to another leg's address */
	if (sub->leg_id != slot->subscriber) {
		sft_kcount(SFT_K_TC_LEG_REPLACED);
		return 0;
	}

	sft_barrier_var(udp_len);
	if (udp_len < 8 + SFT_RTP_MIN)
		return 0;
	if (bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), BPF_F_RECOMPUTE_CSUM) ||
	    bpf_skb_store_bytes(skb, SFT_L3_OFF, &iph, sizeof(iph), BPF_F_RECOMPUTE_CSUM) ||
	    bpf_skb_store_bytes(skb, SFT_L4_OFF, o, udp_len, BPF_F_RECOMPUTE_CSUM)) {
		sft_kcount(SFT_K_TC_STORE_FAILED);
		return 0;
	}
	if (bpf_clone_redirect(skb, ifindex, 0)) {
		sft_kcount(SFT_K_TC_CLONE_FAILED);
		return 0;
	}
	state->packets++;
	sft_count(SFT_CTR_TX_PACKETS, 1);
	sft_count(SFT_CTR_TX_BYTES, p->out_rtp_len);
	return 1;
}

static __always_inline int sft_drop(__u32 counter, int kcounter)
{
	sft_count(counter, 1);
	if (kcounter >= 0)
		sft_kcount(kcounter);
	return TC_ACT_SHOT;
}

/* Keeps an authentic packet's transport-wide sequence number and arrival time
 * for the controller's congestion-control feedback (controller/twcc.py). */
static __always_inline void sft_record_arrival(__u32 ring_id, const struct sft_packet *p)
{
	struct sft_twcc_ring *ring;
	struct sft_twcc_record rec;
	__u64 pos;

	if (!p->has_twcc)
		return;
	ring = bpf_map_lookup_elem(&sft_twcc_rings, &ring_id);
	if (!ring)
		return;
	if (ring->head - ring->tail >= SFT_TWCC_RECORDS) {
		sft_kcount(SFT_K_TWCC_RECORDS_DROPPED);
		return;
	}
	pos = __sync_fetch_and_add(&ring->head, 1);
	rec.arrival_us = p->now_ns / 1000;
	rec.seq = p->twcc_seq;
	rec.lap = SFT_TWCC_LAP_VALID | ((pos / SFT_TWCC_RECORDS) & 0x7fff);
	/* one store: the reader sees the old record or the new one, never a mix */
	*(__u64 *)&ring->records[pos & (SFT_TWCC_RECORDS - 1)] = *(__u64 *)&rec;
}

/* Replay window update for an authentic packet (RFC 3711 §3.3.2). */
static __always_inline void sft_replay_accept(struct sft_stream_state *rs, __u64 index)
{
	__u64 delta;

	if (index > rs->highest_index) {
		delta = index - rs->highest_index;
		rs->replay_window = delta >= SFT_REPLAY_WINDOW ? 1 : (rs->replay_window << delta) | 1;
		rs->highest_index = index;
	} else {
		rs->replay_window |= 1ULL << ((rs->highest_index - index) & 63);
	}
}

/* Verifies, decrypts and fans out one SRTP packet of leg_id. Returns the TC verdict. */
__noinline int sft_srtp_receive(struct __sk_buff *skb, __u32 leg_id, __u32 csum_partial)
{
	struct sft_stream_key key = { .leg_id = leg_id };
	struct sft_stream_state *rs;
	const struct sft_keystream *ks;
	const struct sft_stream *stream;
	const struct sft_config *cfg;
	const struct sft_fanout *fanout;
	struct sft_leg_state *ls;
	const struct sft_leg *leg;
	struct sft_scratch *s;
	struct sft_packet *p;
	__u32 zero = 0, rtp_len, layer, pad_len, count, slot_id, i, sent = 0, video_layer = 0;
	__u32 twcc_ring;
	__u64 index, tag_lo, *conf_packets, sent_total;
	__u16 tag_hi;
	__s32 grow;
	int ret;

	if (!skb)
		return TC_ACT_SHOT;
	s = bpf_map_lookup_elem(&sft_scratch, &zero);
	cfg = bpf_map_lookup_elem(&sft_config, &zero);
	leg = bpf_map_lookup_elem(&sft_legs, &leg_id);
	if (!s || !cfg || !leg)
		return sft_drop(SFT_CTR_DROP_UNKNOWN_LEG, -1);
	p = &s->pkt;
	/* the packet's one clock read: lease checks, arrival, jitter and layer activity;
	 * kept in the scratch map, not in a local live across calls (512-byte stack) */
	p->now_ns = bpf_ktime_get_ns();
	if (!sft_lease_valid(leg, cfg, p->now_ns))
		return sft_drop(SFT_CTR_DROP_LEASE_EXPIRED, SFT_K_TC_LEASE_EXPIRED);
	if (bpf_skb_load_bytes(skb, SFT_L3_OFF, p->iph, sizeof(p->iph)))
		return sft_drop(SFT_CTR_DROP_MALFORMED, SFT_K_TC_TRUNCATED);
	rtp_len = sft_get_be16(&p->iph[2]) - 28;
	sft_count(SFT_CTR_RX_PACKETS, 1);
	/* the bytes that arrived, not the IP header's claim (< 28 would wrap) */
	sft_count(SFT_CTR_RX_BYTES, skb->len - SFT_RTP_OFF);
	if (rtp_len > SFT_MAX_RTP && rtp_len < 0x10000)
		return sft_drop(SFT_CTR_DROP_MALFORMED, SFT_K_TC_OVERSIZE);
	if (rtp_len > SFT_MAX_RTP || rtp_len + SFT_RTP_OFF > skb->len)
		return sft_drop(SFT_CTR_DROP_MALFORMED, SFT_K_TC_TRUNCATED);
	sft_barrier_var(rtp_len);
	if (rtp_len < SFT_RTP_MIN)
		return sft_drop(SFT_CTR_DROP_MALFORMED, SFT_K_TC_TRUNCATED);
	if (bpf_skb_load_bytes(skb, SFT_RTP_OFF, s->in.b, rtp_len))
		return sft_drop(SFT_CTR_DROP_MALFORMED, SFT_K_TC_TRUNCATED);
	ret = sft_parse_rtp(s, rtp_len, leg->ext_audio_level | (leg->ext_rid << 8) |
					       ((__u32)leg->ext_frame_descriptor << 16) |
					       ((__u32)leg->ext_transport_cc << 24));
	if (ret)
		return sft_drop(SFT_CTR_DROP_MALFORMED, ret);
	p->leg_id = leg_id;
	p->conference_id = leg->conference_id;
	p->csum_partial = csum_partial;
	key.ssrc = p->ssrc;

	/* SRTP index and replay check, then authenticate before any state changes */
	rs = bpf_map_lookup_elem(&sft_stream_state, &key);
	index = p->index;
	if (rs) {
		index = sft_estimate_index(rs->highest_index, (__u32)p->index);
		if (index <= rs->highest_index &&
		    (rs->highest_index - index >= SFT_REPLAY_WINDOW ||
		     (rs->replay_window >> ((rs->highest_index - index) & 63)) & 1))
			return sft_drop(SFT_CTR_DROP_REPLAY, -1);
	}
	p->index = index;
	tag_lo = *(__u64 *)&s->in.b[(rtp_len - SFT_AUTH_TAG_LEN) & SFT_BUF_MASK];
	tag_hi = *(__u16 *)&s->in.b[(rtp_len - 2) & SFT_BUF_MASK];
	if (sft_hmac_sha1_80(&s->in, SFT_PAIR(0, rtp_len - SFT_AUTH_TAG_LEN), index >> 16,
			     &leg->rx_auth, &s->sha))
		return sft_drop(SFT_CTR_DROP_AUTH, -1);
	twcc_ring = leg->twcc_ring;
	if (leg->leg_id != leg_id) /* its element was reused while we hashed (sft_abi.h) */
		return sft_drop(SFT_CTR_DROP_LEG_REPLACED, SFT_K_TC_LEG_REPLACED);
	if (*(__u64 *)&s->sha.digest[0] != tag_lo || *(__u16 *)&s->sha.digest[8] != tag_hi)
		return sft_drop(SFT_CTR_DROP_AUTH, -1);
	if (!rs) {
		/* a leg cannot fill the node's stream map with made-up SSRCs; two CPUs
		 * racing past the first test are stopped by the second */
		ls = bpf_map_lookup_elem(&sft_leg_state, &leg_id);
		if (!ls)
			return sft_drop(SFT_CTR_DROP_NOT_READY, -1);
		if (ls->ssrc_count >= SFT_MAX_SSRCS_PER_LEG ||
		    __sync_fetch_and_add(&ls->ssrc_count, 1) >= SFT_MAX_SSRCS_PER_LEG)
			return sft_drop(SFT_CTR_DROP_SSRC_LIMIT, -1);
		__builtin_memset(&s->fresh, 0, sizeof(s->fresh));
		s->fresh.highest_index = index;
		s->fresh.first_index = index;
		s->fresh.replay_window = 1;
		s->fresh.layer_learned = SFT_LAYER_UNKNOWN;
		/* EEXIST: another CPU made it meanwhile, the lookup finds it */
		bpf_map_update_elem(&sft_stream_state, &key, &s->fresh, BPF_NOEXIST);
		rs = bpf_map_lookup_elem(&sft_stream_state, &key);
		if (!rs)
			return sft_drop(SFT_CTR_DROP_NOT_READY, SFT_K_TC_STREAM_STATE_FAILED);
		if (p->rid != SFT_LAYER_UNKNOWN)
			sft_emit(SFT_EV_NEW_STREAM, leg_id, p->ssrc, p->rid, index);
	} else {
		sft_replay_accept(rs, index);
	}
	/* every authentic packet counts for the sender's estimate, padding probes too */
	sft_record_arrival(twcc_ring, p);
	rs->packets++;
	if (p->rid != SFT_LAYER_UNKNOWN) {
		rs->layer_learned = p->rid;
		rs->kind = SFT_KIND_VIDEO;
	}

	stream = bpf_map_lookup_elem(&sft_streams, &key);
	if (!stream) {
		if (p->rid != SFT_LAYER_UNKNOWN)
			return sft_drop(SFT_CTR_DROP_NOT_READY, -1);
		return sft_drop(SFT_CTR_DROP_UNKNOWN_SSRC, SFT_K_TC_UNKNOWN_SSRC);
	}
	p->kind = stream->kind;
	sft_update_jitter(rs, p->timestamp, p->kind, p->now_ns);
	ls = bpf_map_lookup_elem(&sft_leg_state, &leg_id);
	if (!ls)
		return sft_drop(SFT_CTR_DROP_NOT_READY, -1);
	if (p->kind == SFT_KIND_AUDIO) {
		if (p->audio_level != 0xff)
			ls->audio_level_fp = (ls->audio_level_fp + ((__u32)p->audio_level << 8)) >> 1;
	} else {
		layer = stream->layer != SFT_LAYER_UNKNOWN ? stream->layer : rs->layer_learned;
		if (layer == SFT_LAYER_UNKNOWN)
			return sft_drop(SFT_CTR_DROP_NOT_READY, -1);
		video_layer = layer & 1;
		ls->video_ssrc[video_layer] = p->ssrc;
		/* a layer counts as flowing from its first packet, even one dropped
		 * below while its keystream is made (user space forwards that one) */
		if (!ls->video_media_ns[video_layer])
			ls->video_media_ns[video_layer] = p->now_ns;
	}
	ls->rx_packets++;

	ks = sft_keystream_for(stream->ks_base, stream->ks_size, p->ssrc, index, p->payload_len);
	if (!ks) {
		sft_emit(SFT_EV_STREAM_KEYSTREAM, leg_id, p->ssrc, 0, index);
		return sft_drop(SFT_CTR_DROP_NOT_READY, SFT_K_TC_RX_KEYSTREAM_MISS);
	}
	sft_xor_keystream(&s->in, &s->in, SFT_PAIR(p->payload_off, p->payload_off), ks,
			  p->payload_len);
	if (!sft_keystream_intact(ks, p->ssrc, index))
		return sft_drop(SFT_CTR_DROP_NOT_READY, SFT_K_TC_RX_KEYSTREAM_OVERWRITTEN);
	pad_len = 0;
	if (p->byte0 & 0x20)
		pad_len = s->in.b[(p->payload_off + p->payload_len - 1) & SFT_BUF_MASK];
	if (!p->payload_len || pad_len >= p->payload_len) {
		rs->padding_dropped++; /* no gap for receivers to wait for */
		return sft_drop(SFT_CTR_DROP_PADDING, -1);
	}
	p->seq_index = index - rs->padding_dropped;
	p->padding_dropped = rs->padding_dropped;
	p->keyframe = 0;
	if (p->kind == SFT_KIND_VIDEO) {
		ls->video_media_ns[video_layer & 1] = p->now_ns;
		if (p->has_fd)
			p->keyframe = (p->fd0 & SFT_FD_BEGIN_OF_FRAME) &&
				      !(p->fd0 & SFT_FD_HAS_DEPENDENCIES);
		else
			p->keyframe = sft_vp8_keyframe(&s->in, p->payload_off, p->payload_len);
	}

	fanout = bpf_map_lookup_elem(&sft_fanout, &leg_id);
	count = fanout ? fanout->count : 0;
	if (!count)
		return sft_drop(SFT_CTR_DROP_NO_ROUTE, -1);
	/* every copy carries exactly one CSRC: resize once for all of them, at the
	 * tail (every byte from L4 on is rewritten per copy), so a CHECKSUM_PARTIAL
	 * packet's csum_start still points at its UDP header */
	grow = (__s32)p->out_rtp_len - (__s32)p->rtp_len;
	if (grow && bpf_skb_change_tail(skb, SFT_RTP_OFF + p->out_rtp_len, 0))
		return sft_drop(SFT_CTR_DROP_ADJUST_FAILED, SFT_K_TC_ADJUST_FAILED);
	bpf_csum_level(skb, BPF_CSUM_LEVEL_RESET);
	p->stale = 0;
	for (i = 0; i < SFT_MAX_FANOUT; i++) {
		if (i >= count)
			break;
		fanout = bpf_map_lookup_elem(&sft_fanout, &leg_id);
		if (!fanout)
			break;
		slot_id = fanout->slot_ids[i];
		sent += sft_forward_to_slot(skb, slot_id);
	}
	if (!sent) /* a stale copy is counted as such */
		return p->stale ? TC_ACT_SHOT : sft_drop(SFT_CTR_DROP_NO_ROUTE, -1);
	conf_packets = bpf_map_lookup_elem(&sft_conf_packets, &p->conference_id);
	if (conf_packets) {
		*conf_packets += sent;
	} else {
		sent_total = sent;
		if (bpf_map_update_elem(&sft_conf_packets, &p->conference_id, &sent_total,
					BPF_NOEXIST)) {
			conf_packets = bpf_map_lookup_elem(&sft_conf_packets, &p->conference_id);
			if (conf_packets) /* another CPU made it meanwhile: this CPU's value */
				*conf_packets += sent;
			else
				sft_kcount(SFT_K_TC_CONF_COUNTER_FULL);
		}
	}
	/* the original never reaches a socket */
	return TC_ACT_SHOT;
}

/* Sent on this host over lo: copies keep CHECKSUM_PARTIAL, so a NIC they go
 * out of completes the UDP checksum from the pseudo-header sum we leave. A
 * subprogram: its CO-RE reads would otherwise take the entry's stack. */
__noinline int sft_partial_on_lo(struct __sk_buff *skb)
{
	struct sk_buff *kskb = bpf_cast_to_kern_ctx(skb);

	return BPF_CORE_READ_BITFIELD(kskb, ip_summed) == SFT_CHECKSUM_PARTIAL &&
	       (BPF_CORE_READ(kskb, dev, flags) & SFT_IFF_LOOPBACK);
}

SEC("tc")
int sft_tc_ingress(struct __sk_buff *skb)
{
	struct sft_addr_key key;
	const struct sft_config *cfg;
	void *data, *data_end;
	struct ethhdr *eth;
	struct iphdr *iph;
	struct udphdr *udp;
	__u32 zero = 0, *leg_id;
	__u8 b0, b1;

	if (skb->len < SFT_RTP_OFF + 2)
		return TC_ACT_OK;
	if (bpf_skb_pull_data(skb, SFT_RTP_OFF + 2))
		return TC_ACT_OK;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	iph = data + SFT_L3_OFF;
	udp = data + SFT_L4_OFF;
	if (data + SFT_RTP_OFF + 2 > data_end)
		return TC_ACT_OK;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || iph->version != 4 || iph->ihl != 5 ||
	    iph->protocol != IPPROTO_UDP ||
	    (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return TC_ACT_OK;
	cfg = bpf_map_lookup_elem(&sft_config, &zero);
	if (!cfg || !sft_in_port_range(cfg, bpf_ntohs(udp->dest)) ||
	    !sft_to_a_leg(iph->daddr, udp->dest))
		return TC_ACT_OK;
	b0 = ((__u8 *)data)[SFT_RTP_OFF];
	b1 = ((__u8 *)data)[SFT_RTP_OFF + 1];
	if (b0 < 128 || b0 > 191) {
		if (b0 <= 3 || (b0 >= 20 && b0 <= 63)) { /* STUN, DTLS (RFC 7983) */
			sft_kcount(SFT_K_TC_PASS_CONTROL);
			return TC_ACT_OK;
		}
		return sft_drop(SFT_CTR_DROP_MALFORMED, SFT_K_TC_BAD_VERSION);
	}
	if (b1 >= 192 && b1 <= 223) { /* RTCP, muxed */
		sft_kcount(SFT_K_TC_PASS_CONTROL);
		return TC_ACT_OK;
	}
	key.remote_ip = iph->saddr;
	key.local_ip = iph->daddr;
	key.remote_port = udp->source;
	key.local_port = udp->dest;
	leg_id = bpf_map_lookup_elem(&sft_leg_by_addr, &key);
	if (!leg_id)
		return sft_drop(SFT_CTR_DROP_UNKNOWN_LEG, -1);
	if (skb->gso_segs > 1) {
		sft_kcount(SFT_K_TC_GSO_PASSED);
		return TC_ACT_OK;
	}
	return sft_srtp_receive(skb, *leg_id, sft_partial_on_lo(skb));
}

SEC("xdp")
int sft_xdp_ingress(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	const struct sft_config *cfg;
	struct sft_addr_key key;
	struct ethhdr *eth = data;
	struct iphdr *iph;
	struct udphdr *udp;
	__u32 zero = 0, ihl, payload_len;
	__u8 *payload, b0, b1;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end || iph->protocol != IPPROTO_UDP)
		return XDP_PASS;
	/* later fragments carry no UDP header: reassembly is the stack's business */
	if (iph->frag_off & bpf_htons(IP_OFFSET))
		return XDP_PASS;
	ihl = iph->ihl * 4;
	if (ihl < 20 || ihl > 60 || iph->version != 4)
		return XDP_PASS;
	udp = (void *)iph + ihl;
	if ((void *)(udp + 1) > data_end)
		return XDP_PASS;
	cfg = bpf_map_lookup_elem(&sft_config, &zero);
	if (!cfg || !sft_in_port_range(cfg, bpf_ntohs(udp->dest)) ||
	    !sft_to_a_leg(iph->daddr, udp->dest))
		return XDP_PASS;
	if (iph->frag_off & bpf_htons(IP_MF)) {
		sft_kcount(SFT_K_XDP_DROP_FRAGMENT);
		return XDP_DROP;
	}
	payload = (void *)(udp + 1);
	payload_len = bpf_ntohs(udp->len);
	if (payload_len < 8 + 2 || (void *)(payload + 2) > data_end) {
		sft_kcount(SFT_K_XDP_DROP_SHORT);
		return XDP_DROP;
	}
	payload_len -= 8;
	b0 = payload[0];
	b1 = payload[1];
	if (b0 <= 3) {
		sft_kcount(payload_len >= 20 ? SFT_K_XDP_PASS_STUN : SFT_K_XDP_DROP_SHORT);
		return payload_len >= 20 ? XDP_PASS : XDP_DROP;
	}
	if (b0 >= 20 && b0 <= 63) {
		sft_kcount(payload_len >= 13 ? SFT_K_XDP_PASS_DTLS : SFT_K_XDP_DROP_SHORT);
		return payload_len >= 13 ? XDP_PASS : XDP_DROP;
	}
	if (b0 < 128 || b0 > 191) {
		sft_kcount(SFT_K_XDP_DROP_JUNK);
		return XDP_DROP;
	}
	if (b1 >= 192 && b1 <= 223) {
		sft_kcount(payload_len >= 8 ? SFT_K_XDP_PASS_RTCP : SFT_K_XDP_DROP_SHORT);
		return payload_len >= 8 ? XDP_PASS : XDP_DROP;
	}
	if (payload_len < SFT_RTP_MIN) {
		sft_kcount(SFT_K_XDP_DROP_SHORT);
		return XDP_DROP;
	}
	key.remote_ip = iph->saddr;
	key.local_ip = iph->daddr;
	key.remote_port = udp->source;
	key.local_port = udp->dest;
	if (!bpf_map_lookup_elem(&sft_leg_by_addr, &key)) {
		sft_count(SFT_CTR_DROP_UNKNOWN_LEG, 1);
		sft_kcount(SFT_K_XDP_DROP_UNKNOWN);
		return XDP_DROP;
	}
	sft_kcount(SFT_K_XDP_PASS_RTP);
	return XDP_PASS;
}
