// SPDX-License-Identifier: AGPL-3.0-or-later
/* The load generator's media sink, on its veth end: RTP arriving at a
 * registered leg socket is counted per leg, per SSRC (sequence numbers) and per
 * CSRC, then dropped, except 1 in sample_every per leg that continues to the
 * socket for the sampler. Everything else (STUN, DTLS, SRTCP, signalling)
 * passes. Counting mirrors sftload/native/fastpath.c's receiver. */
#include "sft_internal.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sft_sink_config);
} sft_sink_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SFT_SINK_MAX_LEGS);
	__type(key, struct sft_local_key);
	__type(value, struct sft_sink_leg);
} sft_sink_legs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SFT_SINK_MAX_SLOTS);
	__type(key, struct sft_stream_key);
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
	struct sft_local_key local;
	struct sft_sink_leg leg;
	struct sft_stream_key slot_key;
	struct sft_sink_slot slot;
	struct sft_sink_csrc_key csrc;
};
const volatile struct sft_sink_abi_anchor sft_sink_abi_anchor;

static __always_inline void sft_sink_count_csrc(__u32 leg, __u32 csrc, __u32 kind)
{
	struct sft_sink_csrc_key key = { .leg = leg, .csrc = csrc, .kind = kind };
	__u64 one = 1, *packets;

	packets = bpf_map_lookup_elem(&sft_sink_csrcs, &key);
	if (packets) {
		__sync_fetch_and_add(packets, 1);
		return;
	}
	bpf_map_update_elem(&sft_sink_csrcs, &key, &one, BPF_NOEXIST);
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

SEC("xdp")
int sft_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	const struct sft_sink_config *cfg;
	struct sft_local_key local = {};
	struct sft_stream_key slot_key;
	struct sft_sink_slot *slot;
	struct sft_sink_leg *leg;
	struct ethhdr *eth = data;
	struct iphdr *iph;
	struct udphdr *udp;
	__u32 zero = 0, len, every;
	__u8 *rtp;
	__u64 now, n;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	iph = (void *)(eth + 1);
	/* what the SFT sends has no IP options and is not fragmented */
	if ((void *)(iph + 1) > data_end || iph->version != 4 || iph->ihl != 5 ||
	    iph->protocol != IPPROTO_UDP || (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return XDP_PASS;
	udp = (void *)(iph + 1);
	rtp = (void *)(udp + 1);
	/* the RTP header with one CSRC */
	if ((void *)(rtp + 16) > data_end)
		return XDP_PASS;
	len = bpf_ntohs(udp->len);
	if (len < 8 + 12 || (void *)udp + len > data_end)
		return XDP_PASS;
	len -= 8;
	if (rtp[0] < 128 || rtp[0] > 191 || (rtp[1] >= 192 && rtp[1] <= 223))
		return XDP_PASS; /* STUN, DTLS, SRTCP: the generator's sockets answer them */
	local.local_ip = iph->daddr;
	local.local_port = udp->dest;
	leg = bpf_map_lookup_elem(&sft_sink_legs, &local);
	if (!leg)
		return XDP_PASS;

	now = bpf_ktime_get_ns();
	n = __sync_fetch_and_add(&leg->rx_rtp, 1) + 1;
	__sync_fetch_and_add(&leg->rx_bytes, len);
	slot_key.leg_id = leg->leg;
	slot_key.ssrc = bpf_ntohl(*(__be32 *)(rtp + 8));
	slot = bpf_map_lookup_elem(&sft_sink_slots, &slot_key);
	if (!slot) {
		__sync_fetch_and_add(&leg->rx_unknown_ssrc, 1);
	} else {
		__sync_fetch_and_add(&slot->packets, 1);
		__sync_fetch_and_add(&slot->bytes, len);
		sft_sink_count_seq(slot, (__u16)rtp[2] << 8 | rtp[3]);
		if (slot->kind == SFT_KIND_VIDEO) {
			if (!leg->first_video_ns)
				leg->first_video_ns = now;
		} else if (!leg->first_audio_ns) {
			leg->first_audio_ns = now;
		}
		if ((rtp[0] & 0x0f) >= 1 && len >= 16)
			sft_sink_count_csrc(leg->leg, bpf_ntohl(*(__be32 *)(rtp + 12)), slot->kind);
		else
			__sync_fetch_and_add(&leg->rx_no_csrc, 1);
	}
	cfg = bpf_map_lookup_elem(&sft_sink_config, &zero);
	every = cfg && cfg->sample_every > 1 ? cfg->sample_every : 1;
	return n % every == 0 ? XDP_PASS : XDP_DROP;
}
