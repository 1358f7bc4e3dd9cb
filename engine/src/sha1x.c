/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* Multi-lane HMAC-SHA1 with the SHA extensions (see sha1x.h). Written from
 * Intel's description of SHA1RNDS4/SHA1NEXTE/SHA1MSG1/SHA1MSG2: the state ABCD
 * sits in one register with A in the top dword, E and each group of four
 * message words also have their first word in the top dword.
 *
 * The whole file is compiled for SHA-NI and SSE4.1 (the pragma, in place of
 * per-file compiler flags the cffi build does not have): nothing in it may run
 * before sha1x_supported(). */
#include "sha1x.h"

#ifdef SHA1X_BUILT
#pragma GCC target("sha,sse4.1")

#include <immintrin.h>
#include <string.h>

#define MAX_LANES 4 /* array size: the bench tries up to 4 */
#define BLOCK 64
#define IPAD_BLOCKS_BITS (BLOCK * 8)
#define ALWAYS_INLINE static inline __attribute__((always_inline))
/* Lane loops unroll fully, so that each round's instructions of all lanes issue
 * together (GCC keeps a 4-lane loop rolled otherwise). */
#define EACH_LANE(l) _Pragma("GCC unroll 4") for (int l = 0; l < lanes; l++)

/* 16 big-endian bytes as four message words, the first in the top dword:
 * reversing all 16 bytes does both the byte swap and the word order. */
ALWAYS_INLINE __m128i load_words(const uint8_t *p)
{
	const __m128i reverse = _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
	return _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)p), reverse);
}

ALWAYS_INLINE void store_digest(__m128i abcd, __m128i e, uint8_t out[SHA1X_DIGEST])
{
	const __m128i reverse = _mm_set_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
	uint32_t h4 = (uint32_t)_mm_extract_epi32(e, 3);

	_mm_storeu_si128((__m128i *)out, _mm_shuffle_epi8(abcd, reverse));
	out[16] = (uint8_t)(h4 >> 24);
	out[17] = (uint8_t)(h4 >> 16);
	out[18] = (uint8_t)(h4 >> 8);
	out[19] = (uint8_t)h4;
}

ALWAYS_INLINE void load_state(const uint32_t h[5], __m128i *abcd, __m128i *e)
{
	*abcd = _mm_set_epi32((int)h[0], (int)h[1], (int)h[2], (int)h[3]);
	*e = _mm_set_epi32((int)h[4], 0, 0, 0);
}

/* One 64-byte block for each lane; w[lane] holds its 16 words and is used up
 * as the schedule. ``lanes`` is a constant where this is inlined. */
ALWAYS_INLINE void compress(const int lanes, __m128i abcd[], __m128i e[], __m128i w[][4])
{
	__m128i cur[MAX_LANES], before[MAX_LANES];

	EACH_LANE(l)
		cur[l] = abcd[l];
	/* Four rounds with function f on words 4i..4i+3. E of the first group is the
	 * state's; after that it is A of two groups back rotated, which SHA1NEXTE
	 * adds to the words. Words 4i+16.. replace the ones just used. */
#define ROUNDS4(i, f)                                                                        \
	EACH_LANE(l) {                                                        \
		__m128i words = (i) == 0 ? _mm_add_epi32(e[l], w[l][0])                               \
					 : _mm_sha1nexte_epu32(before[l], w[l][(i) % 4]);      \
		before[l] = cur[l];                                                              \
		cur[l] = _mm_sha1rnds4_epu32(cur[l], words, f);                                  \
		if ((i) < 16)                                                                    \
			w[l][(i) % 4] = _mm_sha1msg2_epu32(                                      \
				_mm_xor_si128(_mm_sha1msg1_epu32(w[l][(i) % 4], w[l][((i) + 1) % 4]), \
					      w[l][((i) + 2) % 4]),                              \
				w[l][((i) + 3) % 4]);                                            \
	}
	ROUNDS4(0, 0) ROUNDS4(1, 0) ROUNDS4(2, 0) ROUNDS4(3, 0) ROUNDS4(4, 0)
	ROUNDS4(5, 1) ROUNDS4(6, 1) ROUNDS4(7, 1) ROUNDS4(8, 1) ROUNDS4(9, 1)
	ROUNDS4(10, 2) ROUNDS4(11, 2) ROUNDS4(12, 2) ROUNDS4(13, 2) ROUNDS4(14, 2)
	ROUNDS4(15, 3) ROUNDS4(16, 3) ROUNDS4(17, 3) ROUNDS4(18, 3) ROUNDS4(19, 3)
#undef ROUNDS4
	EACH_LANE(l) {
		e[l] = _mm_sha1nexte_epu32(before[l], e[l]);
		abcd[l] = _mm_add_epi32(cur[l], abcd[l]);
	}
}

/* ``bytes`` (whole blocks) of each lane's data. */
ALWAYS_INLINE void hash_blocks(const int lanes, __m128i abcd[], __m128i e[],
			       const uint8_t *const data[], size_t bytes)
{
	__m128i w[MAX_LANES][4];

	for (size_t off = 0; off < bytes; off += BLOCK) {
		EACH_LANE(l)
			for (int k = 0; k < 4; k++)
				w[l][k] = load_words(data[l] + off + 16 * k);
		compress(lanes, abcd, e, w);
	}
}

ALWAYS_INLINE void hmac_lanes(const int lanes, const struct sha1x_hmac_key *const key[],
			      const uint8_t *const msg[], size_t len,
			      uint8_t digest[][SHA1X_DIGEST])
{
	__m128i abcd[MAX_LANES], e[MAX_LANES], w[MAX_LANES][4];
	uint8_t tail[MAX_LANES][2 * BLOCK];
	const uint8_t *tail_of[MAX_LANES];
	size_t whole = len / BLOCK * BLOCK, rest = len - whole;
	size_t tail_len = rest + 1 + 8 <= BLOCK ? BLOCK : 2 * BLOCK; /* 0x80, bit count */
	uint64_t bits = IPAD_BLOCKS_BITS + (uint64_t)len * 8;

	EACH_LANE(l)
		load_state(key[l]->inner, &abcd[l], &e[l]);
	hash_blocks(lanes, abcd, e, msg, whole);
	EACH_LANE(l) {
		memcpy(tail[l], msg[l] + whole, rest);
		tail[l][rest] = 0x80;
		memset(tail[l] + rest + 1, 0, tail_len - rest - 1 - 8);
		for (int b = 0; b < 8; b++)
			tail[l][tail_len - 1 - b] = (uint8_t)(bits >> (8 * b));
	}
	EACH_LANE(l)
		tail_of[l] = tail[l];
	hash_blocks(lanes, abcd, e, tail_of, tail_len);
	/* The outer hash's only block: the inner digest (already in word order:
	 * ABCD, then E) and the padding of 64 + 20 bytes. */
	EACH_LANE(l) {
		w[l][0] = abcd[l];
		w[l][1] = _mm_set_epi32(_mm_extract_epi32(e[l], 3), (int)0x80000000u, 0, 0);
		w[l][2] = _mm_setzero_si128();
		w[l][3] = _mm_set_epi32(0, 0, 0, (BLOCK + SHA1X_DIGEST) * 8);
		load_state(key[l]->outer, &abcd[l], &e[l]);
	}
	compress(lanes, abcd, e, w);
	EACH_LANE(l)
		store_digest(abcd[l], e[l], digest[l]);
}

static void hmac1(const struct sha1x_hmac_key *const key[], const uint8_t *const msg[],
		  size_t len, uint8_t digest[][SHA1X_DIGEST])
{
	hmac_lanes(1, key, msg, len, digest);
}

_Static_assert(SHA1X_LANES == 2, "sha1x_hmac calls hmac2");

static void hmac2(const struct sha1x_hmac_key *const key[], const uint8_t *const msg[],
		  size_t len, uint8_t digest[][SHA1X_DIGEST])
{
	hmac_lanes(2, key, msg, len, digest);
}

void sha1x_hmac(size_t n, const struct sha1x_hmac_key *const key[],
		const uint8_t *const msg[], size_t len, uint8_t digest[][SHA1X_DIGEST])
{
	size_t i = 0;

	for (; i + SHA1X_LANES <= n; i += SHA1X_LANES)
		hmac2(key + i, msg + i, len, digest + i);
	for (; i < n; i++)
		hmac1(key + i, msg + i, len, digest + i);
}
#else
#include <stdlib.h>

void sha1x_hmac(size_t n, const struct sha1x_hmac_key *const key[],
		const uint8_t *const msg[], size_t len, uint8_t digest[][SHA1X_DIGEST])
{
	abort(); /* unreachable: sha1x_supported() is 0 on this CPU */
}
#endif
