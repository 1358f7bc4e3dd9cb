/* Native AES-CM keystream fill of the mmapped sft_keystream map (bpf/dataplane.py).
 * Parsed by cffi (bpf/native/build.py): no preprocessor lines below the includes. */
#include <stddef.h>
#include <stdint.h>

/* One refill request: ``count`` consecutive SRTP indices from ``first`` into the ring
 * of ``size`` (a power of two) entries starting at map entry ``base``, ``length``
 * bytes of keystream per entry. 64 bytes, packed by Python with struct "<QIIIIII16s14s2x". */
struct sft_ks_req {
	uint64_t first;
	uint32_t base;
	uint32_t size;
	uint32_t ssrc;
	uint32_t count;
	uint32_t length;
	uint32_t reserved;
	uint8_t key[16];  /* SRTP session encryption key */
	uint8_t salt[14]; /* SRTP session salt */
	uint8_t pad[2];
};

/* Writes every request's entries into the map at ``map`` (``max_entries`` entries of
 * ``stride`` bytes; index_tag at 0, ssrc at 8, valid_len at 12, pad at 14, keystream
 * bytes at ``bytes_off``). ``reqs`` points to ``n`` struct sft_ks_req. Per entry:
 * tag cleared, keystream bytes written, header written, tag set last (release).
 * Returns the number of entries written, or a negative value if a request is out of
 * bounds (-1: ring outside the map, -2: size not a power of two, -3: length too long,
 * -4: OpenSSL failed); requests before the failing one are written. */
long sft_keystream_fill(uint8_t *map, size_t stride, size_t bytes_off, size_t max_entries,
			const char *reqs, size_t n);

/* Which AES implementation sft_keystream_fill uses: 1 = AES-NI intrinsics (the
 * default where the CPU has them), 0 = OpenSSL EVP AES-128-ECB. ``enable`` 0 or 1
 * selects (1 only takes effect with AES-NI), -1 only asks. Returns the one in use. */
int sft_keystream_use_aesni(int enable);
