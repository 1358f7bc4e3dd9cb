// SPDX-License-Identifier: AGPL-3.0-or-later
/* The transmit benchmark's receiving end (bpf/include/txlive.h), attached in
 * driver mode to the veth peer: counts IPv4/UDP frames to the configured port
 * range and drops them; everything else passes. When verifying, it records per
 * sequence number how many copies came, the length, destination and an FNV-1a
 * hash of the frame (or of the UDP payload), for userspace to compare with what
 * was sent. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "txlive.h"

#define ETH_P_IP 0x0800

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct txsink_config);
} txsink_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct txsink_stats);
} txsink_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, TXSINK_MAX_SEQ);
	__type(key, __u32);
	__type(value, struct txsink_record);
} txsink_records SEC(".maps");

struct txsink_scratch {
	__u64 words[TXSINK_SCRATCH / 8];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct txsink_scratch);
} txsink_scratch SEC(".maps");

static __always_inline __u64 txsink_hash(struct xdp_md *ctx, __u32 from, __u32 len)
{
	struct txsink_scratch *s;
	__u64 h = TXSINK_FNV_OFFSET;
	__u32 zero = 0, words, i, k;
	__u8 *bytes;

	s = bpf_map_lookup_elem(&txsink_scratch, &zero);
	if (!s || len == 0 || len > TXSINK_SCRATCH)
		return 0;
	if (bpf_xdp_load_bytes(ctx, from, s->words, len))
		return 0;
	words = len / 8;
	for (i = 0; i < TXSINK_SCRATCH / 8; i++) {
		if (i >= words)
			break;
		h = (h ^ s->words[i]) * TXSINK_FNV_PRIME;
	}
	bytes = (__u8 *)s->words;
	for (i = 0; i < 8; i++) {
		k = words * 8 + i;
		if (k >= len)
			break;
		h = (h ^ bytes[k & (TXSINK_SCRATCH - 1)]) * TXSINK_FNV_PRIME;
	}
	return h ^ len;
}

SEC("xdp")
int txsink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	const struct txsink_config *cfg;
	struct txsink_record *rec;
	struct txsink_stats *st;
	struct ethhdr *eth = data;
	struct iphdr *iph;
	struct udphdr *udp;
	__u32 zero = 0, len, seq;
	__u16 dport;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end || iph->ihl != 5 || iph->protocol != IPPROTO_UDP)
		return XDP_PASS;
	udp = (void *)(iph + 1);
	if ((void *)(udp + 1) > data_end)
		return XDP_PASS;
	cfg = bpf_map_lookup_elem(&txsink_config, &zero);
	st = bpf_map_lookup_elem(&txsink_stats, &zero);
	if (!cfg || !st)
		return XDP_PASS;
	dport = bpf_ntohs(udp->dest);
	if (dport < cfg->dport_lo || dport > cfg->dport_hi)
		return XDP_PASS;
	len = (__u32)(data_end - data);
	__sync_fetch_and_add(&st->packets, 1);
	__sync_fetch_and_add(&st->bytes, len);
	if (!cfg->verify)
		return XDP_DROP;
	if ((void *)udp + 8 + 4 > data_end) {
		__sync_fetch_and_add(&st->short_frames, 1);
		return XDP_DROP;
	}
	seq = bpf_ntohl(*(__be32 *)(udp + 1));
	rec = bpf_map_lookup_elem(&txsink_records, &seq);
	if (!rec) {
		__sync_fetch_and_add(&st->out_of_range, 1);
		return XDP_DROP;
	}
	rec->count++;
	rec->len = len;
	rec->daddr = iph->daddr;
	rec->dport = udp->dest;
	if (cfg->hash_from < len)
		rec->hash = txsink_hash(ctx, cfg->hash_from, len - cfg->hash_from);
	return XDP_DROP;
}
