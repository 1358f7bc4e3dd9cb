/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* RTP header parsing (RFC 3550, RFC 8285 extensions) over scratch memory. */
#ifndef SFT_RTP_H
#define SFT_RTP_H

#include "sft_internal.h"
#include "sft_crypto.h"

#define SFT_EXT_PROFILE_ONE_BYTE 0xBEDE
#define SFT_EXT_PROFILE_TWO_BYTE 0x1000 /* upper 12 bits */
#define SFT_EXT_MAX_ELEMENTS 16
#define SFT_FD_BEGIN_OF_FRAME 0x80 /* generic frame descriptor 00, first byte */
#define SFT_FD_HAS_DEPENDENCIES 0x08

static __always_inline __u32 sft_get_be16(const __u8 *p)
{
	return ((__u32)p[0] << 8) | p[1];
}

/* Records one header-extension element we care about. ids: audio level in
 * bits 0-7, RID in 8-15, frame descriptor in 16-23, transport-wide sequence
 * number in 24-31 (0 = not negotiated). */
static __always_inline void sft_note_extension(struct sft_packet *p, const struct sft_buf *in,
					       __u32 id, __u32 data, __u32 len, __u32 ids)
{
	__u8 first;

	if (!id || !len)
		return;
	first = in->b[data & SFT_BUF_MASK];
	if (id == (ids & 0xff)) {
		p->audio_level = first & 0x7f;
	} else if (id == ((ids >> 8) & 0xff)) {
		if (len == 1 && first == 'l')
			p->rid = 0;
		else if (len == 1 && first == 'h')
			p->rid = 1;
	} else if (id == ((ids >> 16) & 0xff)) {
		p->has_fd = 1;
		p->fd0 = first;
	} else if (id == ids >> 24 && len == 2) {
		p->has_twcc = 1;
		p->twcc_seq = ((__u16)first << 8) | in->b[(data + 1) & SFT_BUF_MASK];
	}
}

/* Parses the RTP header of s->in (rtp_len bytes incl. tag) into s->pkt.
 * Returns 0, or the enum sft_kcounter reason it is malformed. */
__noinline int sft_parse_rtp(struct sft_scratch *s __arg_nonnull, __u32 rtp_len, __u32 ext_ids)
{
	struct sft_packet *p;
	__u32 b0, cc, hdr, ext_len, profile, pos, end, i, id, len, data;
	const __u8 *in;

	p = &s->pkt;
	in = s->in.b;
	if (rtp_len < SFT_RTP_MIN)
		return SFT_K_TC_TRUNCATED;
	if (rtp_len > SFT_MAX_RTP)
		return SFT_K_TC_OVERSIZE;
	b0 = in[0];
	if ((b0 >> 6) != 2)
		return SFT_K_TC_BAD_VERSION;
	cc = b0 & 0x0f;
	hdr = 12 + cc * 4;
	p->rid = SFT_LAYER_UNKNOWN;
	p->audio_level = 0xff;
	p->has_fd = 0;
	p->fd0 = 0;
	p->has_twcc = 0;
	p->ext_len = 0;
	if (hdr > rtp_len - SFT_AUTH_TAG_LEN)
		return SFT_K_TC_TRUNCATED;
	p->ext_off = hdr;
	if (b0 & 0x10) {
		if (hdr + 4 > rtp_len - SFT_AUTH_TAG_LEN)
			return SFT_K_TC_TRUNCATED;
		profile = sft_get_be16(&in[hdr & SFT_BUF_MASK]);
		ext_len = 4 + 4 * sft_get_be16(&in[(hdr + 2) & SFT_BUF_MASK]);
		if (hdr + ext_len > rtp_len - SFT_AUTH_TAG_LEN)
			return SFT_K_TC_TRUNCATED;
		p->ext_len = ext_len;
		pos = hdr + 4;
		end = hdr + ext_len;
		for (i = 0; i < SFT_EXT_MAX_ELEMENTS; i++) {
			if (pos >= end)
				break;
			id = in[pos & SFT_BUF_MASK];
			if (profile == SFT_EXT_PROFILE_ONE_BYTE) {
				if (id == 0) { /* padding */
					pos++;
					continue;
				}
				if ((id >> 4) == 15)
					break;
				len = (id & 0x0f) + 1;
				id >>= 4;
				data = pos + 1;
			} else if ((profile & 0xfff0) == SFT_EXT_PROFILE_TWO_BYTE) {
				if (id == 0) {
					pos++;
					continue;
				}
				len = in[(pos + 1) & SFT_BUF_MASK];
				data = pos + 2;
			} else {
				break;
			}
			if (data + len > end)
				break;
			sft_note_extension(p, &s->in, id, data, len, ext_ids);
			pos = data + len;
		}
		hdr += ext_len;
	}
	p->payload_off = hdr;
	p->payload_len = rtp_len - SFT_AUTH_TAG_LEN - hdr;
	p->byte0 = b0;
	p->byte1 = in[1];
	p->index = sft_get_be16(&in[2]); /* the sequence number until the ROC is known */
	p->timestamp = sft_get_be32(&in[4]);
	p->ssrc = sft_get_be32(&in[8]);
	p->rtp_len = rtp_len;
	p->out_rtp_len = rtp_len + 4 - cc * 4;
	if (p->out_rtp_len > SFT_MAX_RTP)
		return SFT_K_TC_OVERSIZE;
	return 0;
}

/* VP8 payload descriptor (RFC 7741) of a decrypted payload: start of
 * partition 0 and the P bit of the VP8 header clear. */
static __always_inline int sft_vp8_keyframe(const struct sft_buf *in, __u32 off, __u32 len)
{
	__u32 b0, x, pos = 1;

	if (len < 2)
		return 0;
	b0 = in->b[off & SFT_BUF_MASK];
	if (!(b0 & 0x10) || (b0 & 0x07))
		return 0;
	if (b0 & 0x80) {
		x = in->b[(off + 1) & SFT_BUF_MASK];
		pos = 2;
		if (x & 0x80)
			pos += (in->b[(off + pos) & SFT_BUF_MASK] & 0x80) ? 2 : 1;
		if (x & 0x40)
			pos++;
		if (x & 0x30)
			pos++;
	}
	if (pos >= len)
		return 0;
	return !(in->b[(off + pos) & SFT_BUF_MASK] & 0x01);
}

/* Estimated SRTP index of seq given the highest index seen (RFC 3711 §3.3.1). */
static __always_inline __u64 sft_estimate_index(__u64 highest, __u32 seq)
{
	__u64 roc = highest >> 16;
	__u32 s_l = highest & 0xffff;

	if (s_l < 32768) {
		if (seq > s_l + 32768 && roc > 0)
			roc--;
	} else if (seq < s_l - 32768) {
		roc++;
	}
	return (roc << 16) | seq;
}

#endif /* SFT_RTP_H */
