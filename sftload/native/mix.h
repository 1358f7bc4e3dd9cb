/* One publisher's share of the Wire call mix, generated in C (mix.c). */
#ifndef FP_MIX_H
#define FP_MIX_H

#include <stddef.h>
#include <stdint.h>

#include "fastpath.h"
#include "srtp.h"

struct mix {
    struct fp_mix_config cfg;
    struct srtp_ctx srtp;
    uint64_t audio_index, video_index; /* SRTP outbound index per SSRC */
    uint64_t next_audio, next_video;   /* due times, CLOCK_MONOTONIC ns */
    uint32_t a_count, v_count;         /* per-stream counters in the stamp */
    uint16_t a_seq, v_seq;
    int ready;
};

int mix_init(struct mix *m, const struct fp_mix_config *cfg, char *err, size_t errlen);
void mix_free(struct mix *m);
uint64_t mix_next_due(const struct mix *m);
/* After a pause: continue the schedule from ``start`` (sequence numbers continue). */
void mix_resume(struct mix *m, uint64_t start);
/* The next packet in due order, protected, into ``out``: its length (or -1),
 * due time and kind, stamped as built at ``built_ns`` (0: at its due time). A
 * frame's first video packet is a keyframe when ``keyframe_wanted``;
 * *keyframe_sent says whether this packet was one. */
int mix_next(struct mix *m, uint8_t *out, size_t room, uint64_t built_ns, uint64_t *due,
             int *video, int keyframe_wanted, int *keyframe_sent);

#endif
