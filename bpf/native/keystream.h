/* Native AES-CM keystream fill of the mmapped sft_keystream map (bpf/keystream.py).
 * Parsed by cffi (bpf/native/build.py): no preprocessor lines below the includes;
 * struct sft_keystream comes from bpf/include/sft_abi.h, the kernel's own layout. */
#include <stddef.h>
#include <stdint.h>

#include "sft_abi.h"

/* One refill request: ``count`` consecutive SRTP indices from ``first`` into the ring
 * of ``size`` (a power of two) entries starting at map entry ``base``, ``length``
 * bytes of keystream per entry. Python fills these through cffi (this declaration). */
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
 * struct sft_keystream). ``reqs`` points to ``n`` struct sft_ks_req. Per entry: tag
 * cleared, keystream bytes written, header written, tag set last (release).
 * Returns the number of entries written, or a negative value if a request is out of
 * bounds (-1: ring outside the map, -2: size not a power of two, -3: length longer
 * than an entry's bytes, -4: OpenSSL failed); requests before the failing one are
 * written. */
long sft_keystream_fill(struct sft_keystream *map, size_t max_entries,
			const struct sft_ks_req *reqs, size_t n);

/* Which AES implementation sft_keystream_fill uses: 1 = AES-NI intrinsics (the
 * default where the CPU has them), 0 = OpenSSL EVP AES-128-ECB. ``enable`` 0 or 1
 * selects (1 only takes effect with AES-NI), -1 only asks. Returns the one in use. */
int sft_keystream_use_aesni(int enable);
