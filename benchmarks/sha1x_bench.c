/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* ns per HMAC-SHA1 (key pads prehashed, as engine/src/srtp.c keeps them):
 * OpenSSL's SHA1_* as srtp.c's cm_tag calls it, against engine/src/sha1x.c with
 * 1, 2 and 4 interleaved lanes (SHA-NI) and engine/src/sha1x8.c (8 lanes, AVX2).
 * Checks every lane against OpenSSL's HMAC first.
 *
 *   gcc -O2 -o /tmp/sha1x_bench benchmarks/sha1x_bench.c -lcrypto && /tmp/sha1x_bench
 * (the engine builds with -O2; -O3 is worth trying for the AVX2 variant)
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "../engine/src/sha1x.c"
#undef BLOCK
#undef IPAD_BLOCKS_BITS
#undef ALWAYS_INLINE
#include "sha1x8_avx2.c"

static void hmac4(const struct sha1x_hmac_key *const key[], const uint8_t *const msg[],
		  size_t len, uint8_t digest[][SHA1X_DIGEST])
{
	hmac_lanes(4, key, msg, len, digest);
}

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <openssl/hmac.h>
#include <openssl/sha.h>

#define KEYS 8
#define TRIALS 100
#define PER_TRIAL 1000 /* HMACs */

static SHA_CTX inner_ctx[KEYS], outer_ctx[KEYS];
static struct sha1x_hmac_key keys[KEYS];
static uint8_t key_bytes[KEYS][20];

static void prehash(int i)
{
	uint8_t pad[64];

	for (int b = 0; b < 64; b++)
		pad[b] = (uint8_t)((b < 20 ? key_bytes[i][b] : 0) ^ 0x36);
	SHA1_Init(&inner_ctx[i]);
	SHA1_Update(&inner_ctx[i], pad, 64);
	for (int b = 0; b < 64; b++)
		pad[b] = (uint8_t)((b < 20 ? key_bytes[i][b] : 0) ^ 0x5c);
	SHA1_Init(&outer_ctx[i]);
	SHA1_Update(&outer_ctx[i], pad, 64);
	const SHA_CTX *s[2] = {&inner_ctx[i], &outer_ctx[i]};
	uint32_t *h[2] = {keys[i].inner, keys[i].outer};
	for (int k = 0; k < 2; k++) {
		h[k][0] = s[k]->h0, h[k][1] = s[k]->h1, h[k][2] = s[k]->h2;
		h[k][3] = s[k]->h3, h[k][4] = s[k]->h4;
	}
}

static void openssl_hmac(int i, const uint8_t *msg, size_t len, uint8_t out[20])
{
	SHA_CTX c = inner_ctx[i];

	SHA1_Update(&c, msg, len);
	SHA1_Final(out, &c);
	c = outer_ctx[i];
	SHA1_Update(&c, out, 20);
	SHA1_Final(out, &c);
}

static double now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

typedef void lanes_fn(const struct sha1x_hmac_key *const[], const uint8_t *const[], size_t,
		      uint8_t[][SHA1X_DIGEST]);

static void avx2_8(const struct sha1x_hmac_key *const key[], const uint8_t *const msg[],
		   size_t len, uint8_t digest[][SHA1X_DIGEST])
{
	sha1x8_hmac(key, msg, len, digest);
}

/* OpenSSL as a one-lane function, for the same timing loop */
static void openssl1(const struct sha1x_hmac_key *const key[], const uint8_t *const msg[],
		     size_t len, uint8_t digest[][SHA1X_DIGEST])
{
	openssl_hmac((int)(key[0] - keys), msg[0], len, digest[0]);
}

/* The fastest of TRIALS runs: the CPUs are shared, the minimum is the
 * figure least disturbed by other jobs. */
static double best_ns_per_hmac(lanes_fn *fn, int lanes, const struct sha1x_hmac_key *const kp[],
			       const uint8_t *const mp[], size_t len, uint8_t got[][SHA1X_DIGEST])
{
	double best = 1e18;

	for (int t = 0; t < TRIALS; t++) {
		double start = now_ns();
		for (int r = 0; r < PER_TRIAL / lanes; r++)
			fn(kp, mp, len, got);
		double per = (now_ns() - start) / (PER_TRIAL / lanes * lanes);
		best = per < best ? per : best;
	}
	return best;
}

int main(void)
{
	static uint8_t data[KEYS][1600];
	const struct sha1x_hmac_key *kp[KEYS];
	const uint8_t *mp[KEYS];
	uint8_t got[KEYS][SHA1X_DIGEST], want[20];
	unsigned int want_len;
	const size_t lengths[] = {128, 1216};
	struct { const char *name; int lanes; lanes_fn *fn; } impl[] = {
		{"OpenSSL SHA1_*", 1, openssl1}, {"sha1x 1 lane", 1, hmac1},
		{"sha1x 2 lanes", 2, hmac2}, {"sha1x 4 lanes", 4, hmac4},
		{"sha1x8 AVX2", 8, avx2_8}};
	enum { IMPLS = sizeof(impl) / sizeof(impl[0]) };

	if (!sha1x_supported() || !__builtin_cpu_supports("avx2")) {
		puts("no SHA-NI or no AVX2 on this CPU");
		return 1;
	}
	srand(1);
	for (int i = 0; i < KEYS; i++) {
		for (int b = 0; b < 20; b++)
			key_bytes[i][b] = (uint8_t)rand();
		for (int b = 0; b < 1600; b++)
			data[i][b] = (uint8_t)rand();
		prehash(i);
		kp[i] = &keys[i];
		mp[i] = data[i];
	}
	for (size_t len = 0; len <= 1500; len++)
		for (int f = 0; f < IMPLS; f++) {
			impl[f].fn(kp, mp, len, got);
			for (int l = 0; l < impl[f].lanes; l++) {
				HMAC(EVP_sha1(), key_bytes[l], 20, data[l], len, want, &want_len);
				if (memcmp(got[l], want, 20) != 0) {
					printf("MISMATCH %s lane %d len %zu\n", impl[f].name, l, len);
					return 1;
				}
			}
		}
	for (size_t n = 0; n < sizeof(lengths) / sizeof(lengths[0]); n++) {
		double base = 0;
		for (int f = 0; f < IMPLS; f++) {
			double per = best_ns_per_hmac(impl[f].fn, impl[f].lanes, kp, mp, lengths[n], got);
			if (f == 0)
				base = per;
			printf("%5zu B  %-16s %7.1f ns/HMAC  %.2fx\n", lengths[n], impl[f].name, per,
			       base / per);
		}
	}
	return 0;
}
