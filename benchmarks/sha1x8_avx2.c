/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* The alternative to engine/src/sha1x.c that sha1x_bench.c measures: HMAC-SHA1
 * of eight messages of one length at once with AVX2. Each 256-bit register holds
 * one SHA-1 variable of all eight streams, so a round is plain vector arithmetic
 * shared by the eight; each block's words arrive per stream and become per-word
 * vectors through an 8x8 transpose. On Zen 2 it is no faster than two SHA-NI
 * streams (docs/benchmark.md), so the engine does not use it: AVX2 has no
 * rotate, and SHA-1 rotates three times per round.
 *
 * Included by sha1x_bench.c after sha1x.c; compiled for AVX2 (the pragma), so
 * nothing in it may run unless the CPU has AVX2. */
#ifdef SHA1X_BUILT
#pragma GCC target("avx2")

#include <immintrin.h>
#include <string.h>

#define BLOCK 64
#define IPAD_BLOCKS_BITS (BLOCK * 8)
#define ALWAYS_INLINE static inline __attribute__((always_inline))

typedef __m256i vec;

ALWAYS_INLINE vec rotl(vec x, int n)
{
	return _mm256_or_si256(_mm256_slli_epi32(x, n), _mm256_srli_epi32(x, 32 - n));
}

/* rows[l] holds 8 consecutive big-endian words of stream l; afterwards rows[j]
 * holds word j of all eight streams, in host order. */
ALWAYS_INLINE void transpose8(vec rows[8])
{
	const vec swap = _mm256_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3,
					 12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
	vec t[8], u[8];

	for (int i = 0; i < 8; i += 2) {
		t[i] = _mm256_unpacklo_epi32(rows[i], rows[i + 1]);
		t[i + 1] = _mm256_unpackhi_epi32(rows[i], rows[i + 1]);
	}
	for (int i = 0; i < 8; i += 4) {
		u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
		u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
		u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
		u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
	}
	for (int j = 0; j < 4; j++) {
		rows[j] = _mm256_shuffle_epi8(_mm256_permute2x128_si256(u[j], u[j + 4], 0x20), swap);
		rows[j + 4] = _mm256_shuffle_epi8(_mm256_permute2x128_si256(u[j], u[j + 4], 0x31),
						  swap);
	}
}

/* 64 bytes at data[l] + off for each stream, as the 16 word vectors. */
ALWAYS_INLINE void load_block(const uint8_t *const data[8], size_t off, vec w[16])
{
	for (int half = 0; half < 2; half++) {
		for (int l = 0; l < 8; l++)
			w[8 * half + l] = _mm256_loadu_si256((const vec *)(data[l] + off + 32 * half));
		transpose8(w + 8 * half);
	}
}

#define F0(b, c, d) _mm256_xor_si256(d, _mm256_and_si256(b, _mm256_xor_si256(c, d)))
#define F1(b, c, d) _mm256_xor_si256(_mm256_xor_si256(b, c), d)
#define F2(b, c, d) _mm256_or_si256(_mm256_and_si256(b, c), _mm256_and_si256(d, _mm256_or_si256(b, c)))
/* Word t of the schedule, made in place of word t - 16 from t >= 16 on. */
#define WORD(t)                                                                              \
	((t) < 16 ? w[(t)]                                                                  \
		  : (w[(t) % 16] = rotl(_mm256_xor_si256(                                   \
			     _mm256_xor_si256(w[((t) - 3) % 16], w[((t) - 8) % 16]),        \
			     _mm256_xor_si256(w[((t) - 14) % 16], w[(t) % 16])), 1)))
/* One round: e takes the new A, b is rotated; the caller rotates the names. */
#define ROUND(a, b, c, d, e, t, F, k)                                                        \
	do {                                                                                 \
		e = _mm256_add_epi32(_mm256_add_epi32(e, rotl(a, 5)),                        \
				     _mm256_add_epi32(_mm256_add_epi32(F(b, c, d), k), WORD(t))); \
		b = rotl(b, 30);                                                             \
	} while (0)
#define ROUNDS5(t, F, k)                                                                     \
	ROUND(a, b, c, d, e, (t), F, k);                                                     \
	ROUND(e, a, b, c, d, (t) + 1, F, k);                                                 \
	ROUND(d, e, a, b, c, (t) + 2, F, k);                                                 \
	ROUND(c, d, e, a, b, (t) + 3, F, k);                                                 \
	ROUND(b, c, d, e, a, (t) + 4, F, k)

/* One block of each stream into state h[0..4] (A..E of all eight). */
ALWAYS_INLINE void compress8(vec h[5], vec w[16])
{
	const vec k0 = _mm256_set1_epi32(0x5a827999), k1 = _mm256_set1_epi32(0x6ed9eba1);
	const vec k2 = _mm256_set1_epi32((int)0x8f1bbcdc), k3 = _mm256_set1_epi32((int)0xca62c1d6);
	vec a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];

	ROUNDS5(0, F0, k0); ROUNDS5(5, F0, k0); ROUNDS5(10, F0, k0); ROUNDS5(15, F0, k0);
	ROUNDS5(20, F1, k1); ROUNDS5(25, F1, k1); ROUNDS5(30, F1, k1); ROUNDS5(35, F1, k1);
	ROUNDS5(40, F2, k2); ROUNDS5(45, F2, k2); ROUNDS5(50, F2, k2); ROUNDS5(55, F2, k2);
	ROUNDS5(60, F1, k3); ROUNDS5(65, F1, k3); ROUNDS5(70, F1, k3); ROUNDS5(75, F1, k3);
	h[0] = _mm256_add_epi32(h[0], a);
	h[1] = _mm256_add_epi32(h[1], b);
	h[2] = _mm256_add_epi32(h[2], c);
	h[3] = _mm256_add_epi32(h[3], d);
	h[4] = _mm256_add_epi32(h[4], e);
}

ALWAYS_INLINE void load_state8(const struct sha1x_hmac_key *const key[8], int outer, vec h[5])
{
	for (int i = 0; i < 5; i++) {
		uint32_t v[8];
		for (int l = 0; l < 8; l++)
			v[l] = outer ? key[l]->outer[i] : key[l]->inner[i];
		h[i] = _mm256_loadu_si256((const vec *)v);
	}
}

static void sha1x8_hmac(const struct sha1x_hmac_key *const key[8], const uint8_t *const msg[8],
			size_t len, uint8_t digest[8][SHA1X_DIGEST])
{
	uint8_t tail[8][2 * BLOCK];
	const uint8_t *tail_of[8];
	size_t whole = len / BLOCK * BLOCK, rest = len - whole;
	size_t tail_len = rest + 1 + 8 <= BLOCK ? BLOCK : 2 * BLOCK; /* 0x80, bit count */
	uint64_t bits = IPAD_BLOCKS_BITS + (uint64_t)len * 8;
	uint32_t words[5][8];
	vec h[5], w[16];

	load_state8(key, 0, h);
	for (size_t off = 0; off < whole; off += BLOCK) {
		load_block(msg, off, w);
		compress8(h, w);
	}
	for (int l = 0; l < 8; l++) {
		memcpy(tail[l], msg[l] + whole, rest);
		tail[l][rest] = 0x80;
		memset(tail[l] + rest + 1, 0, tail_len - rest - 1 - 8);
		for (int b = 0; b < 8; b++)
			tail[l][tail_len - 1 - b] = (uint8_t)(bits >> (8 * b));
		tail_of[l] = tail[l];
	}
	for (size_t off = 0; off < tail_len; off += BLOCK) {
		load_block(tail_of, off, w);
		compress8(h, w);
	}
	/* The outer hash's only block: the inner digest and the padding of 64 + 20 bytes. */
	for (int i = 0; i < 5; i++)
		w[i] = h[i];
	w[5] = _mm256_set1_epi32((int)0x80000000u);
	for (int i = 6; i < 15; i++)
		w[i] = _mm256_setzero_si256();
	w[15] = _mm256_set1_epi32((BLOCK + SHA1X_DIGEST) * 8);
	load_state8(key, 1, h);
	compress8(h, w);
	for (int i = 0; i < 5; i++)
		_mm256_storeu_si256((vec *)words[i], h[i]);
	for (int l = 0; l < 8; l++)
		for (int i = 0; i < 5; i++) {
			uint32_t v = words[i][l];
			digest[l][4 * i] = (uint8_t)(v >> 24);
			digest[l][4 * i + 1] = (uint8_t)(v >> 16);
			digest[l][4 * i + 2] = (uint8_t)(v >> 8);
			digest[l][4 * i + 3] = (uint8_t)v;
		}
}
#endif
