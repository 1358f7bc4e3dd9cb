/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* HMAC-SHA1 of several messages of one length at once with the x86 SHA
 * extensions. One SHA-1 stream is a chain of dependent sha1rnds4 and waits on
 * their latency; the fan-out has many copies of one length with their own keys,
 * so independent streams interleaved in the same rounds fill those gaps.
 *
 * Call only where sha1x_supported() says so: sha1x.c is compiled for SHA-NI and
 * SSE4.1, this header and sha1x_supported are not. */
#ifndef SFTE_SHA1X_H
#define SFTE_SHA1X_H

#include <stddef.h>
#include <stdint.h>

#define SHA1X_DIGEST 20
/* Streams interleaved: on Zen with SHA-NI two give ~1.6x the throughput of
 * one, three and four less than two (benchmarks/sha1x_bench.c tries them). */
#define SHA1X_LANES 2

/* SHA-1 states after the key's ipad block and after its opad block. */
struct sha1x_hmac_key {
	uint32_t inner[5], outer[5];
};

#if defined(__x86_64__) || defined(__i386__)
#define SHA1X_BUILT 1
static inline int sha1x_supported(void)
{
	return __builtin_cpu_supports("sha") && __builtin_cpu_supports("sse4.1");
}
#else /* other CPUs keep OpenSSL's SHA-1; sha1x.c compiles to nothing */
static inline int sha1x_supported(void)
{
	return 0;
}
#endif

/* digest[i] = HMAC-SHA1(key[i], msg[i][0 .. len)) for i < n, SHA1X_LANES at a
 * time. */
void sha1x_hmac(size_t n, const struct sha1x_hmac_key *const key[],
		const uint8_t *const msg[], size_t len, uint8_t digest[][SHA1X_DIGEST]);

#endif
