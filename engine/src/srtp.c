/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* SHA1_* is deprecated in OpenSSL 3 but is the way to HMAC without a provider
 * round trip and two allocations per packet (EVP_MAC costs ~4x more per copy). */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "srtp.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/opensslv.h>

#if OPENSSL_VERSION_MAJOR < 3
#error "the engine needs OpenSSL 3 (libssl-dev 3.x): GCM sets each packet's IV with EVP_CTRL_GCM_SET_IV_FIXED -1"
#endif

#include "engine.h"

#define HMAC_SHA1_80_TAG 10
#define ROC_BYTES 4 /* the HMAC's input after the packet */
#define GCM_TAG 16
#define SEQ_MEDIAN 0x8000
#define SEQ_MAX 0x10000

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

size_t srtp_master_len(int profile)
{
	switch (profile) {
	case SFTE_PROFILE_AES_CM_128_HMAC_SHA1_80: return 16 + 14;
	case SFTE_PROFILE_AEAD_AES_128_GCM: return 16 + 12;
	case SFTE_PROFILE_AEAD_AES_256_GCM: return 32 + 12;
	}
	return 0;
}

/* RFC 3711 4.3.1 with a key derivation rate of 0: AES-CM keystream of the master
 * key, counter block = master salt XOR label at byte 7. */
static int derive(const uint8_t *key, size_t key_len, const uint8_t salt[14], uint8_t label,
		  uint8_t *out, int n)
{
	uint8_t iv[16] = {0}, zeros[64] = {0};
	int outl = 0, ok;
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();

	if (c == NULL)
		return 0;
	memcpy(iv, salt, 14);
	iv[7] ^= label;
	ok = EVP_EncryptInit_ex(c, key_len == 32 ? EVP_aes_256_ctr() : EVP_aes_128_ctr(), NULL,
				key, iv) == 1 &&
	     EVP_EncryptUpdate(c, out, &outl, zeros, n) == 1 && outl == n;
	EVP_CIPHER_CTX_free(c);
	return ok;
}

static void copy_sha1_state(uint32_t h[5], const SHA_CTX *c)
{
	h[0] = c->h0;
	h[1] = c->h1;
	h[2] = c->h2;
	h[3] = c->h3;
	h[4] = c->h4;
}

int srtp_ctx_init(struct srtp_ctx *ctx, int profile, const uint8_t *master, size_t len,
		  int decrypt, char *err, size_t errlen)
{
	size_t key_len = profile == SFTE_PROFILE_AEAD_AES_256_GCM ? 32 : 16;
	uint8_t salt14[14] = {0}, session_key[32], auth_key[20];
	int gcm = profile != SFTE_PROFILE_AES_CM_128_HMAC_SHA1_80;

	memset(ctx, 0, sizeof(*ctx));
	if (srtp_master_len(profile) == 0 || len != srtp_master_len(profile)) {
		snprintf(err, errlen, "SRTP profile %d with a %zu-byte master key and salt "
			 "(expected %zu)", profile, len, srtp_master_len(profile));
		return -1;
	}
	ctx->profile = profile;
	ctx->decrypt = decrypt;
	ctx->tag_len = gcm ? GCM_TAG : HMAC_SHA1_80_TAG;
	memcpy(salt14, master + key_len, len - key_len); /* GCM's 12 bytes pad with zeros */
	if (!derive(master, key_len, salt14, 0, session_key, (int)key_len) ||
	    !derive(master, key_len, salt14, 2, ctx->salt, gcm ? 12 : 14))
		goto crypto_error;
	ctx->cipher = EVP_CIPHER_CTX_new();
	if (ctx->cipher == NULL)
		goto crypto_error;
	if (gcm) {
		const EVP_CIPHER *c = key_len == 32 ? EVP_aes_256_gcm() : EVP_aes_128_gcm();
		if ((decrypt ? EVP_DecryptInit_ex(ctx->cipher, c, NULL, session_key, NULL)
			     : EVP_EncryptInit_ex(ctx->cipher, c, NULL, session_key, NULL)) != 1)
			goto crypto_error;
	} else {
		uint8_t pad[64];
		if (!derive(master, key_len, salt14, 1, auth_key, sizeof(auth_key)) ||
		    EVP_EncryptInit_ex(ctx->cipher, EVP_aes_128_ecb(), NULL, session_key, NULL) != 1 ||
		    EVP_CIPHER_CTX_set_padding(ctx->cipher, 0) != 1)
			goto crypto_error;
		for (int i = 0; i < 64; i++)
			pad[i] = (uint8_t)((i < 20 ? auth_key[i] : 0) ^ 0x36);
		SHA1_Init(&ctx->hmac_inner);
		SHA1_Update(&ctx->hmac_inner, pad, sizeof(pad));
		for (int i = 0; i < 64; i++)
			pad[i] = (uint8_t)((i < 20 ? auth_key[i] : 0) ^ 0x5c);
		SHA1_Init(&ctx->hmac_outer);
		SHA1_Update(&ctx->hmac_outer, pad, sizeof(pad));
		OPENSSL_cleanse(pad, sizeof(pad));
		ctx->has_hmac_lanes = sha1x_supported();
		ctx->has_aes = aesctr_supported();
		if (ctx->has_aes)
			aesctr_expand(&ctx->aes, session_key);
		copy_sha1_state(ctx->hmac_lanes.inner, &ctx->hmac_inner);
		copy_sha1_state(ctx->hmac_lanes.outer, &ctx->hmac_outer);
	}
	OPENSSL_cleanse(session_key, sizeof(session_key));
	OPENSSL_cleanse(auth_key, sizeof(auth_key));
	return 0;
crypto_error:
	OPENSSL_cleanse(session_key, sizeof(session_key));
	OPENSSL_cleanse(auth_key, sizeof(auth_key));
	srtp_ctx_free(ctx);
	snprintf(err, errlen, "OpenSSL could not set up SRTP profile %d (libcrypto without "
		 "AES-CTR/GCM or HMAC-SHA1?)", profile);
	return -1;
}

void srtp_ctx_free(struct srtp_ctx *ctx)
{
	EVP_CIPHER_CTX_free(ctx->cipher);
	ctx->cipher = NULL;
	OPENSSL_cleanse(&ctx->hmac_inner, sizeof(ctx->hmac_inner));
	OPENSSL_cleanse(&ctx->hmac_outer, sizeof(ctx->hmac_outer));
	OPENSSL_cleanse(&ctx->hmac_lanes, sizeof(ctx->hmac_lanes));
	OPENSSL_cleanse(&ctx->aes, sizeof(ctx->aes));
}

size_t srtp_header_len(const uint8_t *pkt, size_t len)
{
	size_t hlen;

	if (len < 12)
		return 0;
	hlen = 12 + 4 * (size_t)(pkt[0] & 0x0F);
	if (pkt[0] & 0x10) {
		if (hlen + 4 > len)
			return 0;
		hlen += 4 + 4 * (size_t)be16(pkt + hlen + 2);
	}
	return hlen > len ? 0 : hlen;
}

/* libsrtp's index estimate (srtp_rdbx_estimate_index): ROC 0 until the index
 * passes 2^15, then the guess closest to the highest index. */
static int32_t estimate(uint64_t index, uint16_t seq, uint64_t *guess)
{
	if (index > SEQ_MEDIAN) {
		uint32_t roc = (uint32_t)(index >> 16);
		int local = (int)(index & 0xFFFF), s = seq;
		int32_t diff = s - local;

		if (local < SEQ_MEDIAN) {
			if (s - local > SEQ_MEDIAN) {
				roc -= 1;
				diff = s - local - SEQ_MAX;
			}
		} else if (local - SEQ_MEDIAN > s) {
			roc += 1;
			diff = s - local + SEQ_MAX;
		}
		*guess = (uint64_t)roc << 16 | seq;
		return diff;
	}
	*guess = seq;
	return (int32_t)seq - (int32_t)(uint16_t)index;
}

static enum srtp_result replay_check(const struct srtp_rx_stream *s, int32_t delta)
{
	uint32_t age;

	if (delta > 0)
		return SRTP_OK;
	if (delta < -(SRTP_REPLAY_WINDOW - 1))
		return SRTP_FAIL_REPLAY;
	age = (uint32_t)-delta;
	return s->window[age / 64] >> (age % 64) & 1 ? SRTP_FAIL_REPLAY : SRTP_OK;
}

void srtp_rx_commit(struct srtp_rx_stream *s, int32_t delta)
{
	enum { WORDS = SRTP_REPLAY_WINDOW / 64 };
	uint32_t age;

	if (delta > 0) {
		uint32_t words = (uint32_t)delta / 64, bits = (uint32_t)delta % 64;
		for (int i = WORDS - 1; i >= 0; i--) {
			uint64_t hi = i - (int)words >= 0 ? s->window[i - words] : 0;
			uint64_t lo = i - (int)words - 1 >= 0 ? s->window[i - words - 1] : 0;
			s->window[i] = bits ? hi << bits | lo >> (64 - bits) : hi;
		}
		s->index += (uint16_t)delta;
		age = 0;
	} else {
		age = (uint32_t)-delta;
	}
	s->window[age / 64] |= 1ULL << (age % 64);
}

static void cm_iv(const struct srtp_ctx *ctx, const uint8_t *pkt, uint64_t index, uint8_t iv[16])
{
	uint64_t shifted = index << 16;

	memset(iv, 0, 16);
	memcpy(iv + 4, pkt + 8, 4);
	for (int i = 0; i < 8; i++)
		iv[8 + i] = (uint8_t)(shifted >> (56 - 8 * i));
	for (int i = 0; i < 14; i++)
		iv[i] ^= ctx->salt[i];
}

static void gcm_iv(const struct srtp_ctx *ctx, const uint8_t *pkt, uint64_t index, uint8_t iv[12])
{
	uint32_t roc = (uint32_t)(index >> 16);

	iv[0] = iv[1] = 0;
	memcpy(iv + 2, pkt + 8, 4);
	iv[6] = (uint8_t)(roc >> 24);
	iv[7] = (uint8_t)(roc >> 16);
	iv[8] = (uint8_t)(roc >> 8);
	iv[9] = (uint8_t)roc;
	iv[10] = pkt[2];
	iv[11] = pkt[3];
	for (int i = 0; i < 12; i++)
		iv[i] ^= ctx->salt[i];
}

/* The packet's IV into the direction's GCM context, whose key schedule
 * srtp_ctx_init set once. Length -1 sets the whole 12-byte IV (OpenSSL 3);
 * an EVP_*Init_ex per packet costs ~100 ns more through the generic init path. */
static int gcm_set_iv(struct srtp_ctx *ctx, uint8_t iv[12])
{
	return EVP_CIPHER_CTX_ctrl(ctx->cipher, EVP_CTRL_GCM_SET_IV_FIXED, -1, iv) == 1;
}

static void put_roc(uint8_t out[ROC_BYTES], uint64_t index)
{
	uint32_t roc = (uint32_t)(index >> 16);

	out[0] = (uint8_t)(roc >> 24);
	out[1] = (uint8_t)(roc >> 16);
	out[2] = (uint8_t)(roc >> 8);
	out[3] = (uint8_t)roc;
}

/* HMAC-SHA1 over the packet and the ROC (RFC 3711 4.2), first 10 bytes. */
static int cm_tag(struct srtp_ctx *ctx, const uint8_t *pkt, size_t len, uint64_t index,
		  uint8_t tag[20])
{
	uint8_t roc_be[ROC_BYTES];
	SHA_CTX c = ctx->hmac_inner;

	put_roc(roc_be, index);
	SHA1_Update(&c, pkt, len);
	SHA1_Update(&c, roc_be, sizeof(roc_be));
	SHA1_Final(tag, &c);
	c = ctx->hmac_outer;
	SHA1_Update(&c, tag, 20);
	SHA1_Final(tag, &c);
	OPENSSL_cleanse(&c, sizeof(c));
	return 1;
}

/* AES-CTR as RFC 3711 4.1.1 counts (16-bit block counter under the IV), dst =
 * src XOR keystream (dst may be src): with AES-NI in one pass (aesctr.c); else
 * the counter blocks go through one ECB call, which keeps the key schedule and
 * pipelines the blocks, then the XOR. */
static int ctr_xor(struct srtp_ctx *ctx, const uint8_t iv[16], const uint8_t *src, uint8_t *dst,
		   size_t n)
{
	uint8_t blocks[SFTE_MAX_PACKET + 16], stream[SFTE_MAX_PACKET + 16];
	size_t count = (n + 15) / 16;
	uint16_t first = (uint16_t)(iv[14] << 8 | iv[15]);
	int outl = 0;

	if (n == 0)
		return 1;
	if (n > SFTE_MAX_PACKET)
		return 0;
	if (ctx->has_aes) {
		aesctr_xor(&ctx->aes, iv, src, dst, n);
		return 1;
	}
	for (size_t b = 0; b < count; b++) { /* whole-block copies: no byte loop */
		uint16_t counter = (uint16_t)(first + b);
		memcpy(blocks + 16 * b, iv, 16);
		blocks[16 * b + 14] = (uint8_t)(counter >> 8);
		blocks[16 * b + 15] = (uint8_t)counter;
	}
	if (EVP_EncryptUpdate(ctx->cipher, stream, &outl, blocks, (int)(16 * count)) != 1)
		return 0;
	size_t i = 0;
	for (; i + 16 <= n; i += 16) { /* memcpy keeps it alignment-safe */
		uint64_t a[2], k[2];
		memcpy(a, src + i, 16);
		memcpy(k, stream + i, 16);
		a[0] ^= k[0];
		a[1] ^= k[1];
		memcpy(dst + i, a, 16);
	}
	for (; i < n; i++)
		dst[i] = src[i] ^ stream[i];
	return 1;
}

enum srtp_result srtp_unprotect(struct srtp_ctx *ctx, const struct srtp_rx_stream *stream,
				uint8_t *pkt, size_t *len, int32_t *delta)
{
	size_t hlen = srtp_header_len(pkt, *len), body;
	uint64_t index;
	int32_t d;
	uint8_t iv[16];
	int outl = 0;

	if (hlen == 0 || *len < hlen + ctx->tag_len)
		return SRTP_FAIL_AUTH;
	if (stream != NULL) {
		d = estimate(stream->index, be16(pkt + 2), &index);
		if (replay_check(stream, d) != SRTP_OK)
			return SRTP_FAIL_REPLAY;
	} else { /* libsrtp: a new stream starts at ROC 0 */
		index = be16(pkt + 2);
		d = (int32_t)index;
	}
	body = *len - ctx->tag_len;
	if (ctx->profile == SFTE_PROFILE_AES_CM_128_HMAC_SHA1_80) {
		uint8_t tag[20];
		if (!cm_tag(ctx, pkt, body, index, tag) ||
		    CRYPTO_memcmp(tag, pkt + body, HMAC_SHA1_80_TAG) != 0)
			return SRTP_FAIL_AUTH;
		cm_iv(ctx, pkt, index, iv);
		if (!ctr_xor(ctx, iv, pkt + hlen, pkt + hlen, body - hlen))
			return SRTP_FAIL_AUTH;
	} else {
		gcm_iv(ctx, pkt, index, iv);
		if (!gcm_set_iv(ctx, iv) ||
		    EVP_DecryptUpdate(ctx->cipher, NULL, &outl, pkt, (int)hlen) != 1 ||
		    (body > hlen &&
		     EVP_DecryptUpdate(ctx->cipher, pkt + hlen, &outl, pkt + hlen,
				       (int)(body - hlen)) != 1) ||
		    EVP_CIPHER_CTX_ctrl(ctx->cipher, EVP_CTRL_GCM_SET_TAG, GCM_TAG, pkt + body) != 1 ||
		    EVP_DecryptFinal_ex(ctx->cipher, pkt + body, &outl) != 1)
			return SRTP_FAIL_AUTH;
	}
	*len = body;
	*delta = d;
	return SRTP_OK;
}

int srtp_protect_too_old(uint64_t tx_index, uint16_t seq)
{
	uint64_t index;

	return estimate(tx_index, seq, &index) < -(SRTP_REPLAY_WINDOW - 1);
}

size_t srtp_protect(struct srtp_ctx *ctx, uint64_t *tx_index, uint8_t *pkt, size_t len,
		    size_t hlen, const uint8_t *payload, struct srtp_untagged *untagged)
{
	uint64_t index;
	int32_t d = estimate(*tx_index, be16(pkt + 2), &index);
	uint8_t iv[16];
	int outl = 0;

	if (untagged != NULL)
		untagged->ctx = NULL;
	if (d < -(SRTP_REPLAY_WINDOW - 1))
		return 0; /* libsrtp: replay_old even with repeats allowed */
	if (d > 0)
		*tx_index += (uint16_t)d;
	if (ctx->profile == SFTE_PROFILE_AES_CM_128_HMAC_SHA1_80) {
		uint8_t tag[20];
		cm_iv(ctx, pkt, index, iv);
		if (!ctr_xor(ctx, iv, payload, pkt + hlen, len - hlen))
			return 0;
		if (untagged != NULL && ctx->has_hmac_lanes) { /* the ROC where the tag goes */
			put_roc(pkt + len, index);
			*untagged = (struct srtp_untagged){ctx, pkt, len};
			return len + HMAC_SHA1_80_TAG;
		}
		if (!cm_tag(ctx, pkt, len, index, tag))
			return 0;
		memcpy(pkt + len, tag, HMAC_SHA1_80_TAG);
		return len + HMAC_SHA1_80_TAG;
	}
	if (payload != pkt + hlen)
		memcpy(pkt + hlen, payload, len - hlen); /* GCM encrypts in place */
	gcm_iv(ctx, pkt, index, iv);
	if (!gcm_set_iv(ctx, iv) ||
	    EVP_EncryptUpdate(ctx->cipher, NULL, &outl, pkt, (int)hlen) != 1 ||
	    (len > hlen &&
	     EVP_EncryptUpdate(ctx->cipher, pkt + hlen, &outl, pkt + hlen, (int)(len - hlen)) != 1) ||
	    EVP_EncryptFinal_ex(ctx->cipher, pkt + len, &outl) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx->cipher, EVP_CTRL_GCM_GET_TAG, GCM_TAG, pkt + len) != 1)
		return 0;
	return len + GCM_TAG;
}

void srtp_write_tags(const struct srtp_untagged *copies, size_t n)
{
	enum { RUN = 8 };
	const struct sha1x_hmac_key *keys[RUN];
	const uint8_t *msgs[RUN];
	uint8_t digests[RUN][SHA1X_DIGEST];

	for (size_t i = 0, k; i < n; i += k) {
		size_t len = copies[i].len;
		for (k = 0; k < RUN && i + k < n && copies[i + k].len == len; k++) {
			keys[k] = &copies[i + k].ctx->hmac_lanes;
			msgs[k] = copies[i + k].pkt;
		}
		sha1x_hmac(k, keys, msgs, len + ROC_BYTES, digests);
		for (size_t j = 0; j < k; j++)
			memcpy(copies[i + j].pkt + len, digests[j], HMAC_SHA1_80_TAG);
	}
}
