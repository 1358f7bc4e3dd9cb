/* The Wire call mix of one publisher, generated and SRTP-protected in C at the
 * moment it is due (see fastpath.h, struct fp_mix_config, for the layout of
 * the packets; docs/benchmark.md for the mix). Python only configures it, so
 * the generator's core is spent on sending, not on the interpreter. The SRTP
 * is the native engine's (engine/src/srtp.c, OpenSSL). */
#include "mix.h"

#include "engine.h" /* SFTE_PROFILE_* */

#include <math.h>
#include <stdio.h>
#include <string.h>

#define HEADER_LEN 20 /* RTP header + one-word one-byte extension block */
#define VP8_HEADER 4  /* payload descriptor (1) + frame tag (3), before the stamp */

static void put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

/* What the receiving end reads back: due time, publisher index, stream counter,
 * and when the packet was built (just before it is sent: the SFT's share of the
 * latency starts there, whatever the generator's own lateness). */
static void stamp(uint8_t *p, uint64_t due, uint32_t index, uint32_t count, uint64_t built)
{
    put64(p, due);
    put32(p + 8, index);
    put32(p + 12, count);
    put64(p + 16, built ? built : due);
}

int mix_init(struct mix *m, const struct fp_mix_config *cfg, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    m->cfg = *cfg;
    m->a_seq = (uint16_t)cfg->a_seq;
    m->v_seq = (uint16_t)cfg->v_seq;
    m->next_audio = cfg->next_audio;
    m->next_video = cfg->next_video;
    if (srtp_ctx_init(&m->srtp, SFTE_PROFILE_AES_CM_128_HMAC_SHA1_80, cfg->master,
                      sizeof(cfg->master), 0, err, errlen) != 0)
        return -1;
    m->ready = 1;
    return 0;
}

void mix_free(struct mix *m)
{
    if (m->ready)
        srtp_ctx_free(&m->srtp);
    m->ready = 0;
}

uint64_t mix_next_due(const struct mix *m)
{
    return m->next_audio <= m->next_video ? m->next_audio : m->next_video;
}

void mix_resume(struct mix *m, uint64_t start)
{
    const uint64_t frame = FP_VIDEO_INTERVAL_NS * FP_VIDEO_PACKETS_PER_FRAME;

    if (m->next_audio < start) /* keep the phase within the 20 ms period */
        m->next_audio = start + FP_AUDIO_INTERVAL_NS -
                        (start - m->next_audio) % FP_AUDIO_INTERVAL_NS;
    if (m->next_video < start) /* whole frames, so a frame is never cut */
        m->next_video += (start - m->next_video + frame - 1) / frame * frame;
}

/* 10..70 -dBov on the publisher's own slow sine, so the loudest speakers change. */
static uint8_t level(const struct mix *m, uint64_t due)
{
    double t = (double)(due - m->cfg.t0) / 1e9;
    return (uint8_t)(int)(40 + 30 * sin(2 * M_PI * t / m->cfg.level_period +
                                        m->cfg.level_phase));
}

int mix_next(struct mix *m, uint8_t *out, size_t room, uint64_t built_ns, uint64_t *due_out,
             int *video_out, int keyframe_wanted, int *keyframe_sent)
{
    const struct fp_mix_config *cfg = &m->cfg;
    size_t len, protected_len;
    uint64_t due;
    int video = m->next_audio > m->next_video;

    *keyframe_sent = 0;
    if (room < HEADER_LEN + FP_VIDEO_PAYLOAD + 16)
        return -1;
    out[0] = 0x90; /* V=2, X=1 */
    out[12] = 0xBE;
    out[13] = 0xDE;
    put16(out + 14, 1);
    if (!video) {
        due = m->next_audio;
        m->next_audio += FP_AUDIO_INTERVAL_NS;
        out[1] = (uint8_t)cfg->audio_pt;
        put16(out + 2, m->a_seq++);
        put32(out + 4, cfg->a_ts0 + (uint32_t)((due - cfg->t0) * 48000 / 1000000000ull));
        put32(out + 8, cfg->audio_ssrc);
        out[16] = (uint8_t)(cfg->audio_level_id << 4); /* one byte of data */
        out[17] = level(m, due);
        out[18] = out[19] = 0;
        memcpy(out + HEADER_LEN, cfg->fill, FP_AUDIO_PAYLOAD);
        stamp(out + HEADER_LEN, due, cfg->index, m->a_count++, built_ns);
        len = HEADER_LEN + FP_AUDIO_PAYLOAD;
    } else {
        uint32_t part = m->v_count % FP_VIDEO_PACKETS_PER_FRAME;
        uint64_t frame_due;
        uint8_t *vp8 = out + HEADER_LEN;

        due = m->next_video;
        m->next_video += FP_VIDEO_INTERVAL_NS;
        frame_due = due - part * FP_VIDEO_INTERVAL_NS;
        out[1] = (uint8_t)((part == FP_VIDEO_PACKETS_PER_FRAME - 1 ? 0x80 : 0) | cfg->video_pt);
        put16(out + 2, m->v_seq++);
        put32(out + 4, cfg->v_ts0 + (uint32_t)((frame_due - cfg->t0) * 90000 / 1000000000ull));
        put32(out + 8, cfg->video_ssrc);
        out[16] = (uint8_t)(cfg->rid_id << 4); /* RID "h" */
        out[17] = 'h';
        out[18] = out[19] = 0;
        memcpy(vp8, cfg->fill, FP_VIDEO_PAYLOAD);
        if (part == 0) {
            *keyframe_sent = keyframe_wanted;
            vp8[0] = 0x10; /* S=1, PID=0 */
            vp8[1] = keyframe_wanted ? 0x00 : 0x01; /* frame tag: P=0 is a keyframe */
        } else {
            vp8[0] = 0x00;
            vp8[1] = 0x01;
        }
        stamp(vp8 + VP8_HEADER, due, cfg->index, m->v_count++, built_ns);
        len = HEADER_LEN + FP_VIDEO_PAYLOAD;
    }
    protected_len = srtp_protect(&m->srtp, video ? &m->video_index : &m->audio_index, out,
                                 len, HEADER_LEN, out + HEADER_LEN, NULL);
    *due_out = due;
    *video_out = video;
    return protected_len ? (int)protected_len : -1;
}
