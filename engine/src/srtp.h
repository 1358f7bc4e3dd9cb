/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* SRTP (RFC 3711, RFC 7714) for the native engine with OpenSSL's libcrypto:
 * AES-128-CM + HMAC-SHA1-80 and AEAD AES-128/256-GCM, the profiles the userspace
 * plane negotiates. Behaviour follows libsrtp as the userspace plane configures
 * it (controller/leg.py srtp_session): one stream per SSRC, replay window of 1024,
 * outbound repeats allowed; the differential test compares output bytes.
 *
 * A context is single-threaded: only the worker that owns its leg calls it. */
#ifndef SFTE_SRTP_H
#define SFTE_SRTP_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "aesctr.h"
#include "sha1x.h"

#define SRTP_REPLAY_WINDOW 1024
#define SRTP_MAX_TAG 16

enum srtp_result {
	SRTP_OK = 0,
	SRTP_FAIL_AUTH = 1,   /* bad tag, bad header, too short */
	SRTP_FAIL_REPLAY = 2, /* seen, or older than the window */
};

struct srtp_ctx {
	int profile;       /* SFTE_PROFILE_* (engine.h) */
	int decrypt;       /* direction of the GCM context */
	size_t tag_len;
	uint8_t salt[14];  /* session salt: 14 bytes (CM) or 12 (GCM) */
	EVP_CIPHER_CTX *cipher; /* CM: AES-ECB making the CTR keystream; or AES-GCM */
	/* CM where the CPU has AES-NI: the key for aesctr, used instead of cipher */
	struct aesctr_key aes;
	int has_aes;
	/* CM: HMAC-SHA1 with the session auth key, the key's inner and outer pads
	 * hashed once (the per-packet HMAC copies these states) */
	SHA_CTX hmac_inner, hmac_outer;
	/* the same two states for sha1x; set where the CPU has SHA-NI */
	struct sha1x_hmac_key hmac_lanes;
	int has_hmac_lanes;
};

/* An encrypted AES-CM copy whose HMAC-SHA1 tag is still to be written: the
 * packet of ``len`` bytes (the ROC already appended) and its context. */
struct srtp_untagged {
	struct srtp_ctx *ctx;
	uint8_t *pkt;
	size_t len;
};

/* Receive state of one SSRC: the highest SRTP index and which of the 1024
 * indexes below it arrived (bit i: index - i). */
struct srtp_rx_stream {
	uint64_t index;
	uint64_t window[SRTP_REPLAY_WINDOW / 64];
};

/* master = key || salt as DTLS exported it (30, 28 or 44 bytes). 0 on success. */
int srtp_ctx_init(struct srtp_ctx *ctx, int profile, const uint8_t *master, size_t len,
		  int decrypt, char *err, size_t errlen);
void srtp_ctx_free(struct srtp_ctx *ctx);
size_t srtp_master_len(int profile);

/* Verify and decrypt in place. ``stream`` NULL: the SSRC has no state yet (its
 * first packet; no replay check). On SRTP_OK *len loses the tag and *delta is
 * what srtp_rx_commit takes. */
enum srtp_result srtp_unprotect(struct srtp_ctx *ctx, const struct srtp_rx_stream *stream,
				uint8_t *pkt, size_t *len, int32_t *delta);
/* Record an authentic packet's index (stream zeroed for a new SSRC). */
void srtp_rx_commit(struct srtp_rx_stream *stream, int32_t delta);

/* Encrypt and append the tag: the header (``header_len`` bytes) is at ``pkt``,
 * the payload is read from ``payload`` (pkt + header_len: in place; elsewhere:
 * encrypted into pkt as it is copied). The buffer has room for SRTP_MAX_TAG
 * more than ``len``. ``tx_index`` is the SSRC's outbound index (0 for a new
 * one). Returns the new length, or 0 if the index is older than the window
 * (libsrtp refuses it).
 * With ``untagged``, where tags are cheaper several at a time (AES-CM with
 * SHA-NI: sha1x), the tag is left for srtp_write_tags and *untagged says where
 * (otherwise untagged->ctx is NULL): the copy must not leave before that. */
size_t srtp_protect(struct srtp_ctx *ctx, uint64_t *tx_index, uint8_t *pkt, size_t len,
		    size_t header_len, const uint8_t *payload, struct srtp_untagged *untagged);
/* Whether srtp_protect refuses ``seq`` for an SSRC at ``tx_index``: older than the window. */
int srtp_protect_too_old(uint64_t tx_index, uint16_t seq);
/* The tags of copies srtp_protect left untagged; neighbours of one length
 * are hashed together. */
void srtp_write_tags(const struct srtp_untagged *copies, size_t n);

/* RTP header length as libsrtp validates it (CSRCs, extension), or 0 if it
 * does not fit ``len``. */
size_t srtp_header_len(const uint8_t *pkt, size_t len);

#endif
