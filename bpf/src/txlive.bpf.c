// SPDX-License-Identifier: AGPL-3.0-or-later
/* Transmit prototype (bpf/include/txlive.h): run by BPF_PROG_TEST_RUN with
 * BPF_F_TEST_XDP_LIVE_FRAMES, never attached. Each run gets a fresh page_pool
 * frame holding the test run's data_in (copied once per page) and turns it into
 * the next prepared slot: grow or shrink the tail to the slot's length, copy the
 * slot's bytes over it, redirect to ctl->ifindex, the test run's ingress device.
 *
 * It is also attached, in generic mode, to an interface whose packets it lets
 * pass (their ingress is not ctl->ifindex): a test run with repeat > 1 puts the
 * program into the XDP dispatcher and takes it out again, and taking it out
 * waits for an RCU grace period (~25 ms here) unless another user (the attachment)
 * holds it there. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "txlive.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, TXLIVE_SLOTS);
	__type(key, __u32);
	__type(value, struct txlive_slot);
} txlive_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, TXLIVE_CTL_ENTRIES);
	__type(key, __u32);
	__type(value, struct txlive_ctl);
} txlive_ctl SEC(".maps");

SEC("xdp")
int txlive_tx(struct xdp_md *ctx)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct txlive_slot *slot;
	struct txlive_ctl *c;
	__u32 i, idx, len;
	int have;

	c = bpf_map_lookup_elem(&txlive_ctl, &cpu);
	if (!c)
		return XDP_ABORTED;
	/* attached only to keep it in the XDP dispatcher (see txlive.h): passes */
	if (ctx->ingress_ifindex != c->ifindex)
		return XDP_PASS;
	i = c->next;
	if (i >= c->count) {
		c->overrun++;
		return XDP_DROP;
	}
	c->next = i + 1;
	idx = c->base + i;
	slot = bpf_map_lookup_elem(&txlive_slots, &idx);
	if (!slot)
		goto bad;
	len = slot->len;
	if (len < 14 || len > TXLIVE_FRAME_MAX)
		goto bad;
	have = (int)(ctx->data_end - ctx->data);
	if (have != (int)len && bpf_xdp_adjust_tail(ctx, (int)len - have))
		goto bad;
	if (bpf_xdp_store_bytes(ctx, 0, slot->frame, len))
		goto bad;
	c->sent++;
	return bpf_redirect(c->ifindex, 0);
bad:
	c->bad++;
	return XDP_DROP;
}
