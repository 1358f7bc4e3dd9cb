/* sftload fast path: paced SRTP sender and counting receiver on the legs' own
 * UDP sockets (sendmmsg/recvmmsg), in C threads that never take the GIL.
 * Declarations shared by fastpath.c and the cffi build (build.py). */
#include <stdint.h>

#define FP_MAXPKT 1500
#define FP_MAXLEGS 4096
#define FP_TXRING 64          /* per leg; a power of two (60 ms of the mix is ~9 packets) */
#define FP_TXPKT 1320         /* largest packet the sender queues */
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
    uint32_t nslots, ncsrc;
};

struct fp_global_stat {
    uint64_t tx_packets, tx_late_sum_ns, tx_late_max_ns, tx_late_over_1ms;
    uint64_t rx_batches, rx_datagrams, ctrl_dropped, samples_taken, samples_dropped;
    uint64_t rx_wakeups, tx_wakeups;
};

struct fp_item {              /* one entry of the ctrl or sample ring */
    uint32_t leg;
    uint16_t len;
    uint16_t port;            /* source port, host order */
    uint32_t addr;            /* source IPv4, network order */
    uint32_t roc;             /* RTP: rollover counter from the extended sequence number */
    uint64_t recv_ns;
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

/* Queue one protected packet for sending at due_ns (CLOCK_MONOTONIC); kind 0
 * audio, 1 video. Returns 0, or -1 when the leg's ring is full. */
int fp_push(struct fp_ctx *c, int leg, uint64_t due_ns, int kind, const uint8_t *data, int len);
int fp_tx_pending(struct fp_ctx *c, int leg);
uint64_t fp_tx_pending_total(struct fp_ctx *c);

/* Pop up to max items (copied into out); return the number popped. */
int fp_pop_ctrl(struct fp_ctx *c, struct fp_item *out, int max);
int fp_pop_samples(struct fp_ctx *c, struct fp_item *out, int max);

/* Consistent-enough snapshots (64-bit counters written by one thread). */
void fp_leg_stat(struct fp_ctx *c, int leg, struct fp_leg_stat *out);
int fp_slot_stats(struct fp_ctx *c, int leg, struct fp_slot_stat *out, int max);
int fp_csrc_stats(struct fp_ctx *c, int leg, struct fp_csrc_stat *out, int max);
void fp_global_stat(struct fp_ctx *c, struct fp_global_stat *out);
uint64_t fp_now_ns(void);
