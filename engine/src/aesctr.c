/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* AES-128-CTR with AES-NI (see aesctr.h). Written from the AES specification
 * (FIPS 197) and Intel's description of AESENC/AESENCLAST/AESKEYGENASSIST.
 *
 * The whole file is compiled for AES-NI and SSE4.1 (the pragma, in place of
 * per-file compiler flags the cffi build does not have): nothing in it may run
 * before aesctr_supported(). */
#include "aesctr.h"

#ifdef AESCTR_BUILT
#pragma GCC target("aes,sse4.1")

#include <immintrin.h>
#include <string.h>

static void xor_vaes(const struct aesctr_key *key, const uint8_t iv_bytes[16],
		     const uint8_t *src, uint8_t *dst, size_t n);

#define LANES 8 /* blocks in flight: AESENC's latency over its throughput, and some */
#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* The next round key from the previous one and AESKEYGENASSIST's output. */
ALWAYS_INLINE __m128i next_round_key(__m128i prev, __m128i assist)
{
	assist = _mm_shuffle_epi32(assist, 0xff);
	prev = _mm_xor_si128(prev, _mm_slli_si128(prev, 4));
	prev = _mm_xor_si128(prev, _mm_slli_si128(prev, 4));
	prev = _mm_xor_si128(prev, _mm_slli_si128(prev, 4));
	return _mm_xor_si128(prev, assist);
}

void aesctr_expand(struct aesctr_key *key, const uint8_t raw[16])
{
	__m128i rk[11];

	rk[0] = _mm_loadu_si128((const __m128i *)raw);
	/* the round constant is an immediate operand: one line per round */
	rk[1] = next_round_key(rk[0], _mm_aeskeygenassist_si128(rk[0], 0x01));
	rk[2] = next_round_key(rk[1], _mm_aeskeygenassist_si128(rk[1], 0x02));
	rk[3] = next_round_key(rk[2], _mm_aeskeygenassist_si128(rk[2], 0x04));
	rk[4] = next_round_key(rk[3], _mm_aeskeygenassist_si128(rk[3], 0x08));
	rk[5] = next_round_key(rk[4], _mm_aeskeygenassist_si128(rk[4], 0x10));
	rk[6] = next_round_key(rk[5], _mm_aeskeygenassist_si128(rk[5], 0x20));
	rk[7] = next_round_key(rk[6], _mm_aeskeygenassist_si128(rk[6], 0x40));
	rk[8] = next_round_key(rk[7], _mm_aeskeygenassist_si128(rk[7], 0x80));
	rk[9] = next_round_key(rk[8], _mm_aeskeygenassist_si128(rk[8], 0x1b));
	rk[10] = next_round_key(rk[9], _mm_aeskeygenassist_si128(rk[9], 0x36));
	for (int i = 0; i < 11; i++)
		_mm_store_si128((__m128i *)key->round_key[i], rk[i]);
}

/* Counter block ``counter`` of the packet: the IV with its last two bytes (big
 * endian) replaced; the 16-bit lane 7 holds bytes 14 and 15, low byte first. */
ALWAYS_INLINE __m128i counter_block(__m128i iv, uint16_t counter)
{
	return _mm_insert_epi16(iv, (uint16_t)(counter << 8 | counter >> 8), 7);
}

/* The keystream of LANES consecutive blocks from ``counter``: always all of
 * them, so that the loops unroll and the blocks stay in registers. */
ALWAYS_INLINE void keystream(const __m128i rk[11], __m128i iv, uint16_t counter,
			     __m128i out[LANES])
{
	_Pragma("GCC unroll 8") for (int j = 0; j < LANES; j++)
		out[j] = _mm_xor_si128(counter_block(iv, (uint16_t)(counter + j)), rk[0]);
	_Pragma("GCC unroll 9") for (int r = 1; r < 10; r++) {
		_Pragma("GCC unroll 8") for (int j = 0; j < LANES; j++)
			out[j] = _mm_aesenc_si128(out[j], rk[r]);
	}
	_Pragma("GCC unroll 8") for (int j = 0; j < LANES; j++)
		out[j] = _mm_aesenclast_si128(out[j], rk[10]);
}

static void xor_aesni(const struct aesctr_key *key, const uint8_t iv_bytes[16],
		      const uint8_t *src, uint8_t *dst, size_t n)
{
	__m128i rk[11], ks[LANES];
	__m128i iv = _mm_loadu_si128((const __m128i *)iv_bytes);
	uint16_t counter = (uint16_t)(iv_bytes[14] << 8 | iv_bytes[15]);
	size_t i = 0;

	for (int r = 0; r < 11; r++)
		rk[r] = _mm_load_si128((const __m128i *)key->round_key[r]);
	for (; i + 16 * LANES <= n; i += 16 * LANES, counter += LANES) {
		keystream(rk, iv, counter, ks);
		_Pragma("GCC unroll 8") for (int j = 0; j < LANES; j++) {
			__m128i in = _mm_loadu_si128((const __m128i *)(src + i + 16 * j));
			_mm_storeu_si128((__m128i *)(dst + i + 16 * j), _mm_xor_si128(in, ks[j]));
		}
	}
	if (i == n)
		return;
	/* the last 1..8 blocks (a few more made than used); the final one may be partial */
	int rest = (int)((n - i + 15) / 16);
	keystream(rk, iv, counter, ks);
	for (int j = 0; j < rest; j++, i += 16) {
		if (n - i >= 16) {
			__m128i in = _mm_loadu_si128((const __m128i *)(src + i));
			_mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(in, ks[j]));
		} else {
			uint8_t block[16];
			_mm_storeu_si128((__m128i *)block, ks[j]);
			for (size_t b = 0; i + b < n; b++)
				dst[i + b] = src[i + b] ^ block[b];
		}
	}
}

/* VAES: the same rounds on two blocks per 256-bit register, sixteen blocks in
 * flight (Zen 3 and later, Ice Lake and later). */
#pragma GCC push_options
#pragma GCC target("aes,sse4.1,avx2,vaes")
#define WIDE 8 /* 256-bit registers in flight: 16 blocks */

ALWAYS_INLINE __m256i counter_pair(__m128i iv, uint16_t counter)
{
	return _mm256_set_m128i(counter_block(iv, (uint16_t)(counter + 1)),
				counter_block(iv, counter));
}

static void xor_vaes(const struct aesctr_key *key, const uint8_t iv_bytes[16],
		     const uint8_t *src, uint8_t *dst, size_t n)
{
	__m256i rk[11], ks[WIDE];
	__m128i iv = _mm_loadu_si128((const __m128i *)iv_bytes);
	uint16_t counter = (uint16_t)(iv_bytes[14] << 8 | iv_bytes[15]);
	size_t i = 0;

	for (int r = 0; r < 11; r++)
		rk[r] = _mm256_broadcastsi128_si256(
			_mm_load_si128((const __m128i *)key->round_key[r]));
	while (i < n) {
		_Pragma("GCC unroll 8") for (int j = 0; j < WIDE; j++)
			ks[j] = _mm256_xor_si256(counter_pair(iv, (uint16_t)(counter + 2 * j)), rk[0]);
		_Pragma("GCC unroll 9") for (int r = 1; r < 10; r++) {
			_Pragma("GCC unroll 8") for (int j = 0; j < WIDE; j++)
				ks[j] = _mm256_aesenc_epi128(ks[j], rk[r]);
		}
		_Pragma("GCC unroll 8") for (int j = 0; j < WIDE; j++)
			ks[j] = _mm256_aesenclast_epi128(ks[j], rk[10]);
		if (n - i >= 32 * WIDE) {
			_Pragma("GCC unroll 8") for (int j = 0; j < WIDE; j++) {
				__m256i in = _mm256_loadu_si256((const __m256i *)(src + i + 32 * j));
				_mm256_storeu_si256((__m256i *)(dst + i + 32 * j),
						    _mm256_xor_si256(in, ks[j]));
			}
			i += 32 * WIDE;
			counter = (uint16_t)(counter + 2 * WIDE);
			continue;
		}
		/* the last 1..16 blocks (a few more made than used) */
		for (int j = 0; j < WIDE && i < n; j++, i += 32) {
			if (n - i >= 32) {
				__m256i in = _mm256_loadu_si256((const __m256i *)(src + i));
				_mm256_storeu_si256((__m256i *)(dst + i), _mm256_xor_si256(in, ks[j]));
			} else {
				uint8_t pair[32];
				_mm256_storeu_si256((__m256i *)pair, ks[j]);
				for (size_t b = 0; i + b < n; b++)
					dst[i + b] = src[i + b] ^ pair[b];
			}
		}
	}
	_mm256_zeroupper();
}
#pragma GCC pop_options

int aesctr_wide = -1;

void aesctr_xor(const struct aesctr_key *key, const uint8_t iv[16], const uint8_t *src,
		uint8_t *dst, size_t n)
{
	if (aesctr_wide < 0) /* the same answer whichever thread asks first */
		aesctr_wide = __builtin_cpu_supports("vaes") && __builtin_cpu_supports("avx2");
	/* up to eight blocks (audio) the narrow path makes none in vain */
	if (aesctr_wide && n > 16 * LANES)
		xor_vaes(key, iv, src, dst, n);
	else
		xor_aesni(key, iv, src, dst, n);
}
#endif
