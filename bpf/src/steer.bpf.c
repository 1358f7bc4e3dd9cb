// SPDX-License-Identifier: AGPL-3.0-or-later
/* XDP steering for the native engine's AF_XDP I/O: on each media interface,
 *   STUN, DTLS, RTCP aimed at the media ports  -> the stack (the controller's sockets)
 *   RTP of a registered 5-tuple                -> the AF_XDP socket of the receive queue
 *                                                 (the stack when the queue has none)
 *   RTP of anyone else, junk, fragments        -> counted drop
 * Everything outside the media ports, and all non-IPv4/UDP traffic, passes untouched. */
#include "sft_internal.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sft_steer_config);
} sft_steer_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SFT_STEER_MAX_LEGS);
	__type(key, struct sft_addr_key);
	__type(value, struct sft_steer_leg);
} sft_steer_legs SEC(".maps");

/* receive queue -> AF_XDP socket (written by user space with the socket's fd) */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, SFT_STEER_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} sft_xsks SEC(".maps");

/* enum sft_steer_counter -> packets, per CPU */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SFT_STEER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} sft_steer_counters SEC(".maps");

/* Puts the shared types into the object's BTF for the ABI test. */
struct sft_steer_abi_anchor {
	enum sft_steer_counter counter;
	struct sft_steer_config config;
	struct sft_steer_leg leg;
	struct sft_addr_key key;
};
const volatile struct sft_steer_abi_anchor sft_steer_abi_anchor;

static __always_inline int sft_steer_count(__u32 counter, int verdict)
{
	__u64 *v = bpf_map_lookup_elem(&sft_steer_counters, &counter);

	if (v)
		*v += 1;
	return verdict;
}

SEC("xdp")
int sft_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	const struct sft_steer_config *cfg;
	const struct sft_steer_leg *leg;
	struct sft_addr_key key;
	struct ethhdr *eth = data;
	struct iphdr *iph;
	struct udphdr *udp;
	__u32 zero = 0, queue, ip_len, udp_len, payload_len;
	__u16 dport;
	__u8 *payload, b0, b1;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end || iph->version != 4 || iph->protocol != IPPROTO_UDP)
		return XDP_PASS;
	/* later fragments carry no UDP header: reassembly is the stack's business */
	if (iph->frag_off & bpf_htons(IP_OFFSET))
		return XDP_PASS;
	if (iph->ihl < 5)
		return XDP_PASS;
	/* the UDP header right after 20 bytes, or after the options (ihl <= 15) */
	udp = (void *)iph + (iph->ihl & 0xf) * 4;
	if ((void *)(udp + 1) > data_end)
		return XDP_PASS;
	cfg = bpf_map_lookup_elem(&sft_steer_config, &zero);
	dport = bpf_ntohs(udp->dest);
	if (!cfg || dport < cfg->port_min || dport > cfg->port_max)
		return XDP_PASS;
	if (iph->frag_off & bpf_htons(IP_MF))
		return sft_steer_count(SFT_STEER_DROP_FRAGMENT, XDP_DROP);
	if (iph->ihl != 5)
		return sft_steer_count(SFT_STEER_DROP_IP_OPTIONS, XDP_DROP);

	ip_len = bpf_ntohs(iph->tot_len);
	udp_len = bpf_ntohs(udp->len);
	if (udp_len < 8 || udp_len + 20 > ip_len || (void *)udp + udp_len > data_end)
		return sft_steer_count(SFT_STEER_DROP_BAD_LENGTH, XDP_DROP);
	payload = (void *)(udp + 1);
	payload_len = udp_len - 8;
	if (payload_len < 2 || (void *)(payload + 2) > data_end)
		return sft_steer_count(SFT_STEER_DROP_SHORT, XDP_DROP);
	b0 = payload[0];
	b1 = payload[1];
	if (b0 <= 3)
		return payload_len >= 20 ? sft_steer_count(SFT_STEER_PASS_STUN, XDP_PASS)
					 : sft_steer_count(SFT_STEER_DROP_SHORT, XDP_DROP);
	if (b0 >= 20 && b0 <= 63)
		return payload_len >= 13 ? sft_steer_count(SFT_STEER_PASS_DTLS, XDP_PASS)
					 : sft_steer_count(SFT_STEER_DROP_SHORT, XDP_DROP);
	if (b0 < 128 || b0 > 191)
		return sft_steer_count(SFT_STEER_DROP_JUNK, XDP_DROP);
	if (b1 >= 192 && b1 <= 223) /* RTCP types, as RFC 5761 keeps them apart (XR is 207) */
		return payload_len >= 8 ? sft_steer_count(SFT_STEER_PASS_RTCP, XDP_PASS)
					: sft_steer_count(SFT_STEER_DROP_SHORT, XDP_DROP);
	if (payload_len < 12)
		return sft_steer_count(SFT_STEER_DROP_SHORT, XDP_DROP);

	key.remote_ip = iph->saddr;
	key.local_ip = iph->daddr;
	key.remote_port = udp->source;
	key.local_port = udp->dest;
	leg = bpf_map_lookup_elem(&sft_steer_legs, &key);
	if (!leg)
		return sft_steer_count(SFT_STEER_DROP_UNKNOWN, XDP_DROP);
	queue = ctx->rx_queue_index;
	if (!bpf_map_lookup_elem(&sft_xsks, &queue))
		return sft_steer_count(SFT_STEER_PASS_NO_SOCKET, XDP_PASS);
	sft_steer_count(SFT_STEER_REDIRECT, XDP_PASS);
	return bpf_redirect_map(&sft_xsks, queue, XDP_PASS);
}
