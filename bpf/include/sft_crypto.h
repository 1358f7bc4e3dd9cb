/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* SRTP AES_CM_128_HMAC_SHA1_80 pieces: HMAC-SHA1 over scratch memory, XOR with
 * a precomputed keystream. Global (non-static) functions are verified once,
 * on their own, which keeps the per-subscriber fan-out under the 1 M
 * instruction limit (verifier of kernel 6.18). */
#ifndef SFT_CRYPTO_H
#define SFT_CRYPTO_H

#include "sft_internal.h"

static __always_inline __u32 sft_rol32(__u32 x, int n)
{
	return (x << n) | (x >> (32 - n));
}

static __always_inline __u32 sft_get_be32(const __u8 *p)
{
	return ((__u32)p[0] << 24) | ((__u32)p[1] << 16) | ((__u32)p[2] << 8) | p[3];
}

static __always_inline void sft_put_be32(__u8 *p, __u32 v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
}

/* One SHA-1 round; t is a constant after unrolling. The schedule lives in a
 * `volatile` 16-word ring in map memory: without `volatile`, clang keeps all 80
 * words on the stack, and the combined stack of the five-deep call chain
 * (verifier limit 512 bytes, kernel 6.18) overflows even with 16 on it. */
#define SFT_SHA1_ROUND(t, f, k)                                                          \
	do {                                                                             \
		__u32 wt;                                                                \
		if ((t) < 16) {                                                          \
			wt = w[(t) & 15];                                                \
		} else {                                                                 \
			wt = sft_rol32(w[((t) + 13) & 15] ^ w[((t) + 8) & 15] ^          \
				       w[((t) + 2) & 15] ^ w[(t) & 15], 1);                \
			w[(t) & 15] = wt;                                                \
		}                                                                        \
		tmp = sft_rol32(a, 5) + (f) + e + (k) + wt;                              \
		e = d;                                                                   \
		d = c;                                                                   \
		c = sft_rol32(b, 30);                                                    \
		b = a;                                                                   \
		a = tmp;                                                                 \
	} while (0)

__noinline int sft_sha1_compress(struct sft_sha1_work *wk __arg_nonnull,
				 const struct sft_block *blk __arg_nonnull)
{
	volatile __u32 *w = wk->w;
	__u32 a, b, c, d, e, tmp;
	int t;

#pragma unroll
	for (t = 0; t < 16; t++)
		w[t] = bpf_ntohl(blk->w[t]);
	a = wk->st.h[0];
	b = wk->st.h[1];
	c = wk->st.h[2];
	d = wk->st.h[3];
	e = wk->st.h[4];
#pragma unroll
	for (t = 0; t < 20; t++)
		SFT_SHA1_ROUND(t, d ^ (b & (c ^ d)), 0x5A827999);
#pragma unroll
	for (t = 20; t < 40; t++)
		SFT_SHA1_ROUND(t, b ^ c ^ d, 0x6ED9EBA1);
#pragma unroll
	for (t = 40; t < 60; t++)
		SFT_SHA1_ROUND(t, (b & c) | (d & (b | c)), 0x8F1BBCDC);
#pragma unroll
	for (t = 60; t < 80; t++)
		SFT_SHA1_ROUND(t, b ^ c ^ d, 0xCA62C1D6);
	wk->st.h[0] += a;
	wk->st.h[1] += b;
	wk->st.h[2] += c;
	wk->st.h[3] += d;
	wk->st.h[4] += e;
	return 0;
}

/* Offsets and lengths travel packed in pairs: BPF calls take at most five arguments. */
#define SFT_PAIR(hi, lo) (((__u32)(hi) << 16) | ((lo) & 0xffff))

/* HMAC-SHA1-80 of buf[off, off + len) || ROC (RFC 3711 §4.2) into wk->digest,
 * off_len = SFT_PAIR(off, len). Writes the ROC and SHA-1 padding after the
 * message in buf (clobbering what was there, e.g. the received tag). */
__noinline int sft_hmac_sha1_80(struct sft_buf *buf __arg_nonnull, __u32 off_len, __u32 roc,
				const struct sft_hmac_key *key __arg_nonnull,
				struct sft_sha1_work *wk __arg_nonnull)
{
	__u32 off = off_len >> 16, len = off_len & 0xffff;
	__u32 msg_len, blocks, end, pad_end, zeros, i;
	__u64 bits;

	if (off >= 64 || len > SFT_MAX_RTP + 8)
		return -1;
	msg_len = len + 4;
	blocks = (msg_len + 9 + 63) / 64;
	end = off + len;
	pad_end = off + blocks * 64;
	sft_put_be32(&buf->b[end & SFT_BUF_MASK], roc);
	buf->b[(end + 4) & SFT_BUF_MASK] = 0x80;
	zeros = pad_end - 8 - (end + 5);
	for (i = 0; i < 64; i++) {
		if (i >= zeros)
			break;
		buf->b[(end + 5 + i) & SFT_BUF_MASK] = 0;
	}
	bits = (__u64)(64 + msg_len) * 8;
	sft_put_be32(&buf->b[(pad_end - 8) & SFT_BUF_MASK], bits >> 32);
	sft_put_be32(&buf->b[(pad_end - 4) & SFT_BUF_MASK], (__u32)bits);

	wk->st = key->inner;
	for (i = 0; i < blocks && i < SFT_SHA1_MAX_BLOCKS; i++)
		sft_sha1_compress(wk, (const struct sft_block *)&buf->b[(off + i * 64) & SFT_BUF_MASK]);

	for (i = 0; i < 5; i++)
		sft_put_be32(&wk->block.b[i * 4], wk->st.h[i]);
	wk->block.b[20] = 0x80;
	for (i = 21; i < 62; i++)
		wk->block.b[i] = 0;
	/* (64 + 20) * 8 = 672 bits */
	wk->block.b[62] = 672 >> 8;
	wk->block.b[63] = 672 & 0xff;
	wk->st = key->outer;
	sft_sha1_compress(wk, &wk->block);
	for (i = 0; i < 3; i++)
		sft_put_be32(&wk->digest[i * 4], wk->st.h[i]);
	return 0;
}

/* dst[doff + i] = src[soff + i] ^ ks[i] for i < len, 8 bytes at a time (may
 * write up to 7 bytes past len); offsets = SFT_PAIR(doff, soff). */
__noinline int sft_xor_keystream(struct sft_buf *dst __arg_nonnull,
				 const struct sft_buf *src __arg_nonnull, __u32 offsets,
				 const struct sft_keystream *ks __arg_nonnull, __u32 len)
{
	__u32 doff = offsets >> 16, soff = offsets & 0xffff, i;

	for (i = 0; i < SFT_KEYSTREAM_BYTES; i += 8) {
		if (i >= len)
			break;
		*(__u64 *)&dst->b[(doff + i) & SFT_BUF_MASK] =
			*(const __u64 *)&src->b[(soff + i) & SFT_BUF_MASK] ^
			*(const __u64 *)&ks->bytes[i];
	}
	return 0;
}

/* dst[doff + i] = src[soff + i] for i < len (a multiple of 4, < SFT_BUF). */
__noinline int sft_copy_words(struct sft_buf *dst __arg_nonnull,
			      const struct sft_buf *src __arg_nonnull, __u32 offsets, __u32 len)
{
	__u32 doff = offsets >> 16, soff = offsets & 0xffff, i;

	for (i = 0; i < SFT_BUF; i += 4) {
		if (i >= len)
			break;
		*(__u32 *)&dst->b[(doff + i) & SFT_BUF_MASK] =
			*(const __u32 *)&src->b[(soff + i) & SFT_BUF_MASK];
	}
	return 0;
}

#endif /* SFT_CRYPTO_H */
