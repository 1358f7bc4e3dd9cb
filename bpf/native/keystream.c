/* SRTP AES-CM keystream (RFC 3711 §4.1.1) written straight into the mmapped
 * sft_keystream BPF array (struct sft_keystream of sft_abi.h): the controller decides
 * which rings need which indices (bpf/maintenance.py), this file builds the counter blocks, runs AES-128-ECB over
 * them (AES-NI intrinsics when the CPU has them, else OpenSSL EVP AES-128-ECB;
 * both give the same bytes) and writes the entries with the
 * ordering the kernel's reader relies on (tag 0, bytes, header, tag last). */
#include "keystream.h"

#include <string.h>

#include <openssl/evp.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KS_HAVE_AESNI 1
#endif

#define KS_BLOCK 16
#define KS_MAX_BLOCKS ((SFT_KEYSTREAM_BYTES + KS_BLOCK - 1) / KS_BLOCK)
#define KS_INDEX_MASK 0xFFFFFFFFFFFFULL

static inline uint64_t load_be64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	return v;
}

static inline void store_be64(uint8_t *p, uint64_t v)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	v = __builtin_bswap64(v);
#endif
	memcpy(p, &v, 8);
}


#ifdef KS_HAVE_AESNI
/* AES-128 with AES-NI: key schedule (FIPS 197) and 8 counter blocks in flight. */
#define KS_TARGET __attribute__((target("aes,sse2")))

KS_TARGET static inline __m128i expand_step(__m128i key, __m128i assist)
{
	assist = _mm_shuffle_epi32(assist, 0xff);
	key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
	key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
	key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
	return _mm_xor_si128(key, assist);
}

#define KS_EXPAND(i, rcon) rk[i] = expand_step(rk[i - 1], _mm_aeskeygenassist_si128(rk[i - 1], rcon))

KS_TARGET static void aesni_key(__m128i rk[11], const uint8_t key[16])
{
	rk[0] = _mm_loadu_si128((const __m128i *)key);
	KS_EXPAND(1, 0x01);
	KS_EXPAND(2, 0x02);
	KS_EXPAND(3, 0x04);
	KS_EXPAND(4, 0x08);
	KS_EXPAND(5, 0x10);
	KS_EXPAND(6, 0x20);
	KS_EXPAND(7, 0x40);
	KS_EXPAND(8, 0x80);
	KS_EXPAND(9, 0x1b);
	KS_EXPAND(10, 0x36);
}

/* The counter block IV + j as it sits in memory: bytes 0..7 = hi, 8..15 = lo | j,
 * big-endian, i.e. the little-endian qwords bswap(hi), bswap(lo | j). */
KS_TARGET static inline __m128i ctr_block(uint64_t hi_sw, uint64_t lo, uint32_t j)
{
	return _mm_set_epi64x((long long)__builtin_bswap64(lo | j), (long long)hi_sw);
}

KS_TARGET static void aesni_entry(const __m128i rk[11], uint8_t *out, uint64_t hi,
				  uint64_t lo, uint32_t length)
{
	uint32_t full = length / KS_BLOCK, rest = length % KS_BLOCK, j = 0;
	uint64_t hi_sw = __builtin_bswap64(hi);
	int r, k;

	for (; j + 8 <= full; j += 8) {
		__m128i b[8];

#pragma GCC unroll 8
		for (k = 0; k < 8; k++)
			b[k] = _mm_xor_si128(ctr_block(hi_sw, lo, j + k), rk[0]);
#pragma GCC unroll 9
		for (r = 1; r < 10; r++) {
#pragma GCC unroll 8
			for (k = 0; k < 8; k++)
				b[k] = _mm_aesenc_si128(b[k], rk[r]);
		}
#pragma GCC unroll 8
		for (k = 0; k < 8; k++)
			_mm_storeu_si128((__m128i *)(out + (j + k) * KS_BLOCK),
					 _mm_aesenclast_si128(b[k], rk[10]));
	}
	for (; j < full + (rest ? 1 : 0); j++) {
		__m128i b = _mm_xor_si128(ctr_block(hi_sw, lo, j), rk[0]);
		uint8_t tail[KS_BLOCK];

		for (r = 1; r < 10; r++)
			b = _mm_aesenc_si128(b, rk[r]);
		b = _mm_aesenclast_si128(b, rk[10]);
		if (j < full) {
			_mm_storeu_si128((__m128i *)(out + j * KS_BLOCK), b);
		} else { /* only ``length`` bytes are written, as the Python path does */
			_mm_storeu_si128((__m128i *)tail, b);
			memcpy(out + j * KS_BLOCK, tail, rest);
		}
	}
}

static int have_aesni(void)
{
	return __builtin_cpu_supports("aes") && __builtin_cpu_supports("sse2");
}
#else
static int have_aesni(void)
{
	return 0;
}
#endif

static int use_aesni = -1; /* -1: not decided yet */

int sft_keystream_use_aesni(int enable)
{
	if (enable >= 0)
		__atomic_store_n(&use_aesni, enable && have_aesni(), __ATOMIC_RELAXED);
	else if (__atomic_load_n(&use_aesni, __ATOMIC_RELAXED) < 0)
		__atomic_store_n(&use_aesni, have_aesni(), __ATOMIC_RELAXED);
	return __atomic_load_n(&use_aesni, __ATOMIC_RELAXED);
}

/* OpenSSL 3: fetch the cipher once (an implicit fetch per init costs microseconds). */
static const EVP_CIPHER *ecb_cipher(void)
{
	static EVP_CIPHER *fetched;

	if (!fetched) {
		EVP_CIPHER *c = EVP_CIPHER_fetch(NULL, "AES-128-ECB", NULL);
		EVP_CIPHER *expected = NULL;

		if (!c)
			return EVP_aes_128_ecb();
		if (!__atomic_compare_exchange_n(&fetched, &expected, c, 0, __ATOMIC_ACQ_REL,
						 __ATOMIC_ACQUIRE))
			EVP_CIPHER_free(c);
	}
	return fetched;
}

/* One entry's keystream: counter blocks IV + j, IV = (salt << 16) ^ (SSRC << 64) ^
 * (index << 16) (the IV's low 16 bits are zero, so + j is | j), encrypted with ECB. */
static int fill_entry(EVP_CIPHER_CTX *ctx, uint8_t *out, uint64_t hi, uint64_t lo,
		      uint32_t length)
{
	uint8_t counters[KS_MAX_BLOCKS * KS_BLOCK];
	uint8_t tail[KS_BLOCK * 2];
	uint32_t full = length / KS_BLOCK, rest = length % KS_BLOCK, j;
	int outl;

	for (j = 0; j < full + (rest ? 1 : 0); j++) {
		store_be64(counters + j * KS_BLOCK, hi);
		store_be64(counters + j * KS_BLOCK + 8, lo | j);
	}
	if (full && (!EVP_EncryptUpdate(ctx, out, &outl, counters, (int)(full * KS_BLOCK)) ||
		     outl != (int)(full * KS_BLOCK)))
		return -1;
	if (rest) { /* only ``length`` bytes are written, as the Python path does */
		if (!EVP_EncryptUpdate(ctx, tail, &outl, counters + full * KS_BLOCK, KS_BLOCK) ||
		    outl != KS_BLOCK)
			return -1;
		memcpy(out + full * KS_BLOCK, tail, rest);
	}
	return 0;
}

long sft_keystream_fill(struct sft_keystream *map, size_t max_entries,
			const struct sft_ks_req *reqs, size_t n)
{
	EVP_CIPHER_CTX *ctx = NULL;
	uint8_t last_key[16];
	long written = 0, err = 0;
	int keyed = 0, aesni = 0;
	size_t r;
#ifdef KS_HAVE_AESNI
	__m128i rk[11];

#endif
	aesni = sft_keystream_use_aesni(-1);
	if (!aesni && !(ctx = EVP_CIPHER_CTX_new()))
		return -4;
	for (r = 0; r < n; r++) {
		const struct sft_ks_req *q = &reqs[r];
		uint64_t first, hi, lo_base, i;
		uint32_t count, pos;
		uint8_t iv[KS_BLOCK];

		if (!q->size || (q->size & (q->size - 1))) {
			err = -2;
			break;
		}
		if ((uint64_t)q->base + q->size > max_entries) {
			err = -1;
			break;
		}
		if (q->length > sizeof(map->bytes)) {
			err = -3;
			break;
		}
		count = q->count;
		first = q->first;
		if (count > q->size) { /* only the last ``size`` indices fit the ring */
			first += count - q->size;
			count = q->size;
		}
		if (!count)
			continue;
		if (!keyed || memcmp(last_key, q->key, 16)) {
#ifdef KS_HAVE_AESNI
			if (aesni)
				aesni_key(rk, q->key);
#endif
			if (!aesni &&
			    !EVP_EncryptInit_ex(ctx, keyed ? NULL : ecb_cipher(), NULL, q->key, NULL)) {
				err = -4;
				break;
			}
			if (!aesni)
				EVP_CIPHER_CTX_set_padding(ctx, 0);
			memcpy(last_key, q->key, 16);
			keyed = 1;
		}
		/* IV bytes 0..13 = salt, bytes 4..7 ^= SSRC (SSRC << 64), bytes 14..15 = 0 */
		memcpy(iv, q->salt, 14);
		iv[14] = iv[15] = 0;
		hi = load_be64(iv) ^ (uint64_t)q->ssrc;
		lo_base = load_be64(iv + 8);
		pos = (uint32_t)(first & (q->size - 1));
		for (i = 0; i < count; i++) {
			uint64_t index = first + i;
			struct sft_keystream *entry = &map[q->base + pos];
			__u64 *tag = &entry->index_tag;
			uint64_t lo = lo_base ^ ((index & KS_INDEX_MASK) << 16);

			__atomic_store_n(tag, 0, __ATOMIC_RELAXED); /* invalid while being written */
			__atomic_thread_fence(__ATOMIC_RELEASE);
#ifdef KS_HAVE_AESNI
			if (aesni)
				aesni_entry(rk, entry->bytes, hi, lo, q->length);
#endif
			if (!aesni && fill_entry(ctx, entry->bytes, hi, lo, q->length)) {
				err = -4;
				goto out;
			}
			entry->ssrc = q->ssrc;
			entry->valid_len = (__u16)q->length;
			entry->pad = 0;
			__atomic_store_n(tag, index + 1, __ATOMIC_RELEASE);
			written++;
			pos = (pos + 1) & (q->size - 1);
		}
	}
out:
	EVP_CIPHER_CTX_free(ctx); /* NULL-safe */
	return err ? err : written;
}
