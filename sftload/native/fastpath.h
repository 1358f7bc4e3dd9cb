/* sftload fast path: the Wire call mix generated, SRTP-protected and paced out of
 * the legs' own UDP sockets (sendmmsg), and a counting receiver (recvmmsg), in C
 * threads that never take the GIL. Declarations shared by fastpath.c, mix.c and
 * the cffi build (build.py). */
#ifndef FP_FASTPATH_H
#define FP_FASTPATH_H

#include <stdint.h>

#define FP_MAXPKT 1500
#define FP_MAXLEGS 4096
#define FP_TXPKT 1320         /* largest packet the sender builds */
#define FP_TXBATCH 32         /* packets of one leg per sendmmsg */
/* the mix per publisher (docs/benchmark.md) */
#define FP_AUDIO_INTERVAL_NS 20000000
#define FP_VIDEO_INTERVAL_NS 10000000
#define FP_VIDEO_PACKETS_PER_FRAME 4
#define FP_AUDIO_PAYLOAD 100
#define FP_VIDEO_PAYLOAD 1200
#define FP_MASTER_LEN 30      /* AES_CM_128_HMAC_SHA1_80 key || salt */
#define FP_MAXSLOTS 48        /* SSRCs a leg receives on (5 audio + up to 32 video + spare) */
#define FP_MAXCSRC 128        /* distinct CSRCs (publishers) a leg hears */
#define FP_CTRLRING 4096      /* non-RTP datagrams and SRTCP handed to Python */
#define FP_SAMPLERING 16384   /* sampled SRTP packets handed to Python */

struct fp_slot_stat {
    uint32_t ssrc;
    uint32_t kind;            /* 0 audio, 1 video */
    uint64_t packets;
    uint64_t bytes;
    uint64_t ext_max;         /* extended highest sequence number */
    uint64_t base;            /* first sequence number seen */
    uint64_t reordered;       /* older than the highest seen (dup or reorder) */
    uint64_t started;
};

struct fp_csrc_stat {
    uint32_t csrc;
    uint32_t kind;
    uint64_t packets;
};

struct fp_leg_stat {
    uint64_t tx_audio, tx_video, tx_bytes, tx_errors, tx_retries, tx_last_errno;
    uint64_t rx_rtp, rx_bytes, rx_ctrl, rx_rtcp, rx_unknown_ssrc, rx_no_csrc, rx_csrc_overflow;
    uint64_t first_audio_ns, first_video_ns;
    uint64_t keyframes;       /* video keyframes sent (one per FIR/PLI burst) */
    uint32_t nslots, ncsrc;
};

/* One publisher's packets (mix.c). Audio: RTP header, one-byte extension block
 * with the audio level, 100-byte payload. Video: the same with RID "h", 1200
 * bytes, 4 packets a frame, a VP8 descriptor and frame tag in front. Every
 * payload starts (after the VP8 bytes) with the stamp: due time ns, publisher
 * index, per-stream counter (big endian), then ``fill``. */
struct fp_mix_config {
    uint32_t index, audio_ssrc, video_ssrc;
    uint32_t audio_pt, video_pt, audio_level_id, rid_id;
    uint32_t a_seq, v_seq, a_ts0, v_ts0;
    uint64_t t0, next_audio, next_video;   /* CLOCK_MONOTONIC ns */
    double level_period, level_phase;      /* seconds, radians */
    uint8_t master[FP_MASTER_LEN];         /* our SRTP key || salt */
    uint8_t fill[FP_VIDEO_PAYLOAD];
};

struct fp_global_stat {
    uint64_t tx_packets, tx_late_sum_ns, tx_late_max_ns, tx_late_over_1ms;
    uint64_t rx_batches, rx_datagrams, ctrl_dropped, samples_taken, samples_dropped;
    uint64_t rx_wakeups, tx_wakeups;
    /* built -> handed to sendmmsg: counted in the SFT's latency, so watched */
    uint64_t tx_hold_over_1ms;
};

struct fp_item {              /* one entry of the ctrl or sample ring */
    uint32_t leg;
    uint16_t len;
    uint16_t port;            /* source port, host order */
    uint32_t addr;            /* source IPv4, network order */
    uint32_t roc;             /* RTP: rollover counter from the extended sequence number */
    uint64_t recv_ns;         /* when the receiving thread read it */
    uint64_t kernel_ns;       /* when it reached this host (SO_TIMESTAMPNS); 0: unknown */
    uint8_t data[FP_MAXPKT];
};

struct fp_ctx;

struct fp_ctx *fp_new(int sample_every, int tx_cpu, int rx_cpu);
int fp_add_leg(struct fp_ctx *c, int fd, uint32_t peer_addr, uint16_t peer_port);
int fp_add_slot(struct fp_ctx *c, int leg, uint32_t ssrc, uint32_t kind);
int fp_start(struct fp_ctx *c);
void fp_stop(struct fp_ctx *c);
void fp_free(struct fp_ctx *c);
int fp_ctrl_fd(struct fp_ctx *c);
void fp_leg_enable(struct fp_ctx *c, int leg, int enabled);

/* The leg publishes the mix from now on (before fp_leg_enable). 0, or -1 with
 * the reason in err. */
int fp_set_publisher(struct fp_ctx *c, int leg, const struct fp_mix_config *cfg, char *err,
                     int errlen);
/* The leg's next video frame is a keyframe (FIR/PLI). */
void fp_request_keyframe(struct fp_ctx *c, int leg);
/* Stop generating; fp_resume continues every schedule from start_ns. */
void fp_pause(struct fp_ctx *c);
void fp_resume(struct fp_ctx *c, uint64_t start_ns);
/* Without the threads (tests): the leg's next packet, protected, into out;
 * its length or -1, its due time and kind (0 audio, 1 video). */
int fp_generate(struct fp_ctx *c, int leg, uint8_t *out, int room, uint64_t *due, int *kind);

/* Pop up to max items (copied into out); return the number popped. */
int fp_pop_ctrl(struct fp_ctx *c, struct fp_item *out, int max);
int fp_pop_samples(struct fp_ctx *c, struct fp_item *out, int max);

/* Consistent-enough snapshots (64-bit counters written by one thread). */
void fp_leg_stat(struct fp_ctx *c, int leg, struct fp_leg_stat *out);
int fp_slot_stats(struct fp_ctx *c, int leg, struct fp_slot_stat *out, int max);
int fp_csrc_stats(struct fp_ctx *c, int leg, struct fp_csrc_stat *out, int max);
void fp_global_stat(struct fp_ctx *c, struct fp_global_stat *out);
uint64_t fp_now_ns(void);

#endif
