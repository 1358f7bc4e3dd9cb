/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* Every map of the SFT data plane, declared once. Value layouts: sft_abi.h. */
#ifndef SFT_MAPS_H
#define SFT_MAPS_H

#include "sft_internal.h"

/* [0] -> media port range and lease timeout. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sft_config);
} sft_config SEC(".maps");

/* ICE-validated 5-tuple -> leg_id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SFT_MAX_LEGS);
	__type(key, struct sft_addr_key);
	__type(value, __u32);
} sft_leg_by_addr SEC(".maps");

/* a leg's local socket -> leg_id (controller-owned): the programs act only on
 * packets to these, so other local sockets in the media port range (DNS
 * replies, a co-located TURN server, the SFT's own copies re-entering
 * loopback) pass untouched. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SFT_MAX_LEGS);
	__type(key, struct sft_local_key);
	__type(value, __u32);
} sft_leg_by_local SEC(".maps");

/* leg_id -> addresses, keys, lease (controller-owned). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SFT_MAX_LEGS);
	__type(key, __u32);
	__type(value, struct sft_leg);
} sft_legs SEC(".maps");

/* leg_id -> CLOCK_MONOTONIC ns of the controller's last renewal (controller-
 * owned, rewritten every few seconds; a reused element holds another leg's
 * equally recent time, which is harmless). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SFT_MAX_LEGS);
	__type(key, __u32);
	__type(value, __u64);
} sft_leases SEC(".maps");

/* leg_id -> audio level, learned video SSRCs (kernel-owned). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SFT_MAX_LEGS);
	__type(key, __u32);
	__type(value, struct sft_leg_state);
} sft_leg_state SEC(".maps");

/* (leg, SSRC) -> kind, layer, keystream ring (controller-owned). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SFT_MAX_STREAMS);
	__type(key, struct sft_stream_key);
	__type(value, struct sft_stream);
} sft_streams SEC(".maps");

/* (leg, SSRC) -> replay window, learned layer (kernel-owned). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SFT_MAX_STREAMS);
	__type(key, struct sft_stream_key);
	__type(value, struct sft_stream_state);
} sft_stream_state SEC(".maps");

/* slot_id -> subscriber, publisher, CSRC (controller-owned). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SFT_MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct sft_slot);
} sft_slots SEC(".maps");

/* slot_id -> sequence/timestamp rewrite state (kernel-owned; Python reads
 * next_index through mmap to refill keystream without a syscall per slot). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SFT_MAX_SLOTS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct sft_slot_state);
} sft_slot_state SEC(".maps");

/* publisher leg_id -> slot ids it feeds (controller-owned). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SFT_MAX_LEGS);
	__type(key, __u32);
	__type(value, struct sft_fanout);
} sft_fanout SEC(".maps");

/* entry -> precomputed AES-CM keystream, written by Python through mmap. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SFT_KEYSTREAM_ENTRIES);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct sft_keystream);
} sft_keystream SEC(".maps");

/* enum sft_counter -> total, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SFT_CTR_MAX);
	__type(key, __u32);
	__type(value, __u64);
} sft_counters SEC(".maps");

/* enum sft_kcounter -> total, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SFT_K_MAX);
	__type(key, __u32);
	__type(value, __u64);
} sft_kcounters SEC(".maps");

/* conference_id -> forwarded packets, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, SFT_MAX_CONFERENCES);
	__type(key, __u32);
	__type(value, __u64);
} sft_conf_packets SEC(".maps");

/* twcc_ring -> transport-wide arrival records of one leg (see sft_abi.h). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SFT_TWCC_RINGS);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, struct sft_twcc_ring);
} sft_twcc_rings SEC(".maps");

/* struct sft_event records for the keystream refill task. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} sft_events SEC(".maps");

/* Per-CPU working memory: packet copies and SHA-1 state (too big for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sft_scratch);
} sft_scratch SEC(".maps");

static __always_inline void sft_count(__u32 counter, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&sft_counters, &counter);

	if (v)
		*v += n;
}

static __always_inline void sft_kcount(__u32 counter)
{
	__u64 *v = bpf_map_lookup_elem(&sft_kcounters, &counter);

	if (v)
		*v += 1;
}

#endif /* SFT_MAPS_H */
