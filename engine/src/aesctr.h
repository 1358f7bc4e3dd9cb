/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* AES-128 in counter mode as SRTP counts (RFC 3711 4.1.1: the last 16 bits of the
 * counter block count the blocks of one packet, the rest is the IV), written with
 * the AES-NI instructions so that the keystream and the XOR into the copy are one
 * pass: eight independent blocks go through the rounds together, which hides the
 * latency of AESENC, and each lands straight in the destination. Where the CPU
 * has VAES, sixteen blocks go two to a 256-bit register.
 *
 * Call only where aesctr_supported() says so: aesctr.c is compiled for AES-NI and
 * SSE4.1, this header and aesctr_supported are not. */
#ifndef SFTE_AESCTR_H
#define SFTE_AESCTR_H

#include <stddef.h>
#include <stdint.h>

/* The expanded AES-128 encryption key: 11 round keys. */
struct aesctr_key {
	uint8_t round_key[11][16] __attribute__((aligned(16)));
};

#if defined(__x86_64__) || defined(__i386__)
#define AESCTR_BUILT 1
static inline int aesctr_supported(void)
{
	return __builtin_cpu_supports("aes") && __builtin_cpu_supports("sse4.1");
}
#else /* other CPUs keep OpenSSL's AES; aesctr.c compiles to nothing */
static inline int aesctr_supported(void)
{
	return 0;
}
#endif

/* Whether aesctr_xor uses VAES: -1 until the first call finds out; a test may set
 * 0 to check the AES-NI path on a CPU with VAES. */
extern int aesctr_wide;

void aesctr_expand(struct aesctr_key *key, const uint8_t raw[16]);
/* dst[0..n) = src[0..n) XOR the keystream of counter blocks iv, iv + 1, ... (the
 * last two bytes counting, modulo 2^16). dst may be src. */
void aesctr_xor(const struct aesctr_key *key, const uint8_t iv[16], const uint8_t *src,
		uint8_t *dst, size_t n);

#endif
