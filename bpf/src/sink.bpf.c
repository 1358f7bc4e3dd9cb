// SPDX-License-Identifier: AGPL-3.0-or-later
/* The load generator's media sink, at TC ingress of its veth end: RTP arriving
 * at a registered leg socket is counted per leg, per SSRC (sequence numbers) and
 * per CSRC, then dropped, except 1 in sample_every per leg that continues to the
 * socket for the sampler. Everything else (STUN, DTLS, SRTCP, signalling)
 * passes. Counting mirrors sftload/native/fastpath.c's receiver.
 *
 * TC after RPS, on the generator's core (sftload/netns.py). Not generic XDP,
 * which skips packets a TC program redirected (skb_is_redirected), every copy
 * of the SFT's kernel plane; not driver-mode XDP either, which a veth runs on
 * the sending CPU, the SFT's, and which costs more there (a page and a copy
 * per packet) than handing the packet to the generator's core. Threaded NAPI
 * pinned to the generator's core moved it off the SFT, but the thread's wakeups
 * cost more on both cores of this VM than the program saved.
 *
 * Per packet it reads three arrays and no hash map: the leg and its slot
 * SSRCs by local port, then the slot the SSRC names. (A hash lookup of the slot
 * by (leg, SSRC) was about a tenth of the generator's core at 270 000 packets/s.)
 * The CSRC count is kept as a run in the slot and goes to the hash map only
 * when the slot's CSRC changes (a switch of speaker or of the video in that
 * slot); readers add the open runs (sftload/sink.py). */
#include "sft_internal.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sft_sink_config);
} sft_sink_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SFT_SINK_PORTS);
	__type(key, __u32); /* the leg socket's local port, host order */
	__type(value, struct sft_sink_leg);
} sft_sink_legs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SFT_SINK_PORTS);
	__type(key, __u32); /* the leg socket's local port, host order */
	__type(value, struct sft_sink_leg_slots);
} sft_sink_leg_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SFT_SINK_MAX_SLOTS);
	__type(key, __u32); /* sft_sink_leg_slots.first + the slot's place in the leg */
	__type(value, struct sft_sink_slot);
} sft_sink_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SFT_SINK_MAX_CSRCS);
	__type(key, struct sft_sink_csrc_key);
	__type(value, __u64);
} sft_sink_csrcs SEC(".maps");

/* Puts the shared types into the object's BTF for the ABI test. */
struct sft_sink_abi_anchor {
	struct sft_sink_config config;
	struct sft_sink_leg leg;
	struct sft_sink_leg_slots leg_slots;
	struct sft_sink_slot slot;
	struct sft_sink_csrc_key csrc;
};
const volatile struct sft_sink_abi_anchor sft_sink_abi_anchor;

/* The leg's slot for ``ssrc``, or NULL: a scan of its few SSRCs, which share
 * one or two cache lines. */
static __always_inline struct sft_sink_slot *sft_sink_find_slot(__u32 port, __u32 ssrc)
{
	const struct sft_sink_leg_slots *slots = bpf_map_lookup_elem(&sft_sink_leg_slots, &port);
	__u32 i, index;

	if (!slots)
		return NULL;
	for (i = 0; i < SFT_SINK_LEG_SLOTS && i < slots->count; i++) {
		if (slots->ssrc[i] == ssrc) {
			index = slots->first + i;
			return bpf_map_lookup_elem(&sft_sink_slots, &index);
		}
	}
	return NULL;
}

/* Counts one packet from ``csrc`` in the slot's open run; a new CSRC first adds
 * the run so far to the (leg, CSRC, kind) total. One receive queue: no races. */
static __always_inline void sft_sink_count_csrc(__u32 leg, struct sft_sink_slot *slot,
						__u32 csrc)
{
	struct sft_sink_csrc_key key = { .leg = leg, .csrc = slot->csrc, .kind = slot->kind };
	__u64 *packets;

	if (slot->csrc_packets && slot->csrc == csrc) {
		slot->csrc_packets++;
		return;
	}
	if (slot->csrc_packets) {
		packets = bpf_map_lookup_elem(&sft_sink_csrcs, &key);
		if (packets)
			*packets += slot->csrc_packets;
		else
			bpf_map_update_elem(&sft_sink_csrcs, &key, &slot->csrc_packets,
					    BPF_NOEXIST);
	}
	slot->csrc = csrc;
	slot->csrc_packets = 1;
}

static __always_inline void sft_sink_count_seq(struct sft_sink_slot *slot, __u16 seq)
{
	__u16 delta;

	if (!slot->started) {
		slot->base = seq;
		slot->ext_max = seq;
		slot->started = 1;
		return;
	}
	delta = seq - (__u16)slot->ext_max;
	if (delta != 0 && delta < 0x8000)
		slot->ext_max += delta;
	else
		slot->reordered++;
}

SEC("tc")
int sft_sink(struct __sk_buff *skb)
{
	const struct sft_sink_config *cfg;
	struct sft_sink_slot *slot;
	struct sft_sink_leg *leg;
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph;
	struct udphdr *udp;
	__u32 zero = 0, port, len, every;
	__u8 *rtp;
	__u64 now, n;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	iph = (void *)(eth + 1);
	/* what the SFT sends has no IP options and is not fragmented */
	if ((void *)(iph + 1) > data_end || iph->version != 4 || iph->ihl != 5 ||
	    iph->protocol != IPPROTO_UDP || (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return TC_ACT_OK;
	udp = (void *)(iph + 1);
	rtp = (void *)(udp + 1);
	/* the RTP header with one CSRC, in the linear part (the rest need not be) */
	if ((void *)(rtp + 16) > data_end)
		return TC_ACT_OK;
	len = bpf_ntohs(udp->len);
	if (len < 8 + 12 || sizeof(*eth) + sizeof(*iph) + len > skb->len)
		return TC_ACT_OK;
	len -= 8;
	if (rtp[0] < 128 || rtp[0] > 191 || (rtp[1] >= 192 && rtp[1] <= 223))
		return TC_ACT_OK; /* STUN, DTLS, SRTCP: the generator's sockets answer them */
	port = bpf_ntohs(udp->dest);
	leg = bpf_map_lookup_elem(&sft_sink_legs, &port);
	if (!leg || !leg->local_ip || leg->local_ip != iph->daddr)
		return TC_ACT_OK;

	now = bpf_ktime_get_ns();
	n = ++leg->rx_rtp;
	leg->rx_bytes += len;
	slot = sft_sink_find_slot(port, bpf_ntohl(*(__be32 *)(rtp + 8)));
	if (!slot) {
		leg->rx_unknown_ssrc++;
	} else {
		slot->packets++;
		slot->bytes += len;
		sft_sink_count_seq(slot, (__u16)rtp[2] << 8 | rtp[3]);
		if (slot->kind == SFT_KIND_VIDEO) {
			if (!leg->first_video_ns)
				leg->first_video_ns = now;
		} else if (!leg->first_audio_ns) {
			leg->first_audio_ns = now;
		}
		if ((rtp[0] & 0x0f) >= 1 && len >= 16) /* a CSRC inside the datagram */
			sft_sink_count_csrc(leg->leg, slot, bpf_ntohl(*(__be32 *)(rtp + 12)));
		else
			leg->rx_no_csrc++;
	}
	cfg = bpf_map_lookup_elem(&sft_sink_config, &zero);
	every = cfg && cfg->sample_every > 1 ? cfg->sample_every : 1;
	return n % every == 0 ? TC_ACT_OK : TC_ACT_SHOT;
}
