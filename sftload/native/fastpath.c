/* sftload fast path, see fastpath.h.
 *
 * Two threads per context:
 *   tx: generates every publishing leg's due packets (mix.c: built and
 *       SRTP-protected when due), hands them to the leg's own UDP socket with
 *       sendmmsg (one call per leg per wakeup), then sleeps until the next due
 *       time (at most 1 ms);
 *   rx: epoll over the legs' sockets, recvmmsg in batches of 64. RTP (first
 *       byte 128-191, second byte outside 192-223) is counted per (leg, SSRC)
 *       with RFC 3550 extended sequence numbers and per (leg, CSRC); one in
 *       `sample_every` is copied to the sample ring for Python to decrypt.
 *       Everything else (STUN, DTLS, SRTCP) goes to the ctrl ring and an
 *       eventfd wakes Python's event loop, which feeds it to aioice.
 * Rings are single-producer single-consumer with acquire/release indices. */
#define _GNU_SOURCE
#include "fastpath.h"
#include "mix.h"

#include <errno.h>
#include <stddef.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64

struct txpkt {
    uint64_t due_ns, built_ns;
    uint16_t len;
    uint8_t kind;
    uint8_t data[FP_TXPKT];
};

struct leg {
    int fd;
    int enabled;
    struct sockaddr_in peer;
    struct mix *mix;         /* what the leg publishes; NULL: nothing */
    int keyframe_wanted;     /* set by Python (FIR/PLI), taken by the tx thread */
    uint64_t resumed;        /* the fp_resume generation this leg's schedule follows */
    struct fp_slot_stat slots[FP_MAXSLOTS];
    uint32_t nslots;
    struct fp_csrc_stat csrcs[FP_MAXCSRC];
    uint32_t ncsrc;
    struct fp_leg_stat st;
};

struct ring {
    uint64_t head, tail;
    uint32_t size;
    struct fp_item *items;
};

struct fp_ctx {
    struct leg *legs[FP_MAXLEGS];
    uint32_t nlegs;
    int epfd, evfd;
    int sample_every;
    int tx_cpu, rx_cpu;
    volatile int stop;
    int started;
    int paused;              /* fp_pause: no packet is generated */
    uint64_t resume_ns, resume_gen;
    pthread_t tx_thread, rx_thread;
    struct ring ctrl, samples;
    struct fp_global_stat st;
};

uint64_t fp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int ring_init(struct ring *r, uint32_t size)
{
    r->head = r->tail = 0;
    r->size = size;
    r->items = calloc(size, sizeof(struct fp_item));
    return r->items ? 0 : -1;
}

/* producer side: returns the slot to fill, or NULL when full */
static struct fp_item *ring_slot(struct ring *r)
{
    uint64_t tail = __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE);
    if (r->head - tail >= r->size)
        return NULL;
    return &r->items[r->head % r->size];
}

static void ring_commit(struct ring *r)
{
    __atomic_store_n(&r->head, r->head + 1, __ATOMIC_RELEASE);
}

static int ring_pop(struct ring *r, struct fp_item *out, int max)
{
    uint64_t head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
    int n = 0;
    while (r->tail != head && n < max) {
        struct fp_item *it = &r->items[r->tail % r->size];
        memcpy(&out[n], it, offsetof(struct fp_item, data) + it->len);
        n++;
        __atomic_store_n(&r->tail, r->tail + 1, __ATOMIC_RELEASE);
    }
    return n;
}

struct fp_ctx *fp_new(int sample_every, int tx_cpu, int rx_cpu)
{
    struct fp_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->sample_every = sample_every > 0 ? sample_every : 100;
    c->tx_cpu = tx_cpu;
    c->rx_cpu = rx_cpu;
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    c->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->epfd < 0 || c->evfd < 0 || ring_init(&c->ctrl, FP_CTRLRING) ||
        ring_init(&c->samples, FP_SAMPLERING)) {
        fp_free(c);
        return NULL;
    }
    return c;
}

int fp_ctrl_fd(struct fp_ctx *c) { return c->evfd; }

int fp_add_leg(struct fp_ctx *c, int fd, uint32_t peer_addr, uint16_t peer_port)
{
    uint32_t n = c->nlegs;
    if (n >= FP_MAXLEGS)
        return -1;
    struct leg *l = calloc(1, sizeof(*l));
    if (!l)
        return -1;
    l->fd = fd;
    int on = 1; /* arrival stamps: the latency the SFT adds ends at the kernel */
    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on));
    l->peer.sin_family = AF_INET;
    l->peer.sin_addr.s_addr = peer_addr;
    l->peer.sin_port = htons(peer_port);
    c->legs[n] = l;
    __atomic_store_n(&c->nlegs, n + 1, __ATOMIC_RELEASE);
    return (int)n;
}

int fp_add_slot(struct fp_ctx *c, int leg, uint32_t ssrc, uint32_t kind)
{
    struct leg *l = c->legs[leg];
    if (l->nslots >= FP_MAXSLOTS)
        return -1;
    l->slots[l->nslots].ssrc = ssrc;
    l->slots[l->nslots].kind = kind;
    __atomic_store_n(&l->nslots, l->nslots + 1, __ATOMIC_RELEASE);
    l->st.nslots = l->nslots;
    return 0;
}

void fp_leg_enable(struct fp_ctx *c, int leg, int enabled)
{
    struct leg *l = c->legs[leg];
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)leg};
    if (enabled && !l->enabled) {
        epoll_ctl(c->epfd, EPOLL_CTL_ADD, l->fd, &ev);
        __atomic_store_n(&l->enabled, 1, __ATOMIC_RELEASE);
    } else if (!enabled && l->enabled) {
        __atomic_store_n(&l->enabled, 0, __ATOMIC_RELEASE);
        epoll_ctl(c->epfd, EPOLL_CTL_DEL, l->fd, &ev);
    }
}

int fp_set_publisher(struct fp_ctx *c, int leg, const struct fp_mix_config *cfg, char *err,
                     int errlen)
{
    struct leg *l = c->legs[leg];
    struct mix *m = calloc(1, sizeof(*m));

    if (!m || mix_init(m, cfg, err, (size_t)errlen) != 0) {
        if (m == NULL)
            snprintf(err, (size_t)errlen, "out of memory for a publisher");
        free(m);
        return -1;
    }
    l->resumed = __atomic_load_n(&c->resume_gen, __ATOMIC_ACQUIRE);
    l->keyframe_wanted = 1; /* a camera starts with one */
    __atomic_store_n(&l->mix, m, __ATOMIC_RELEASE);
    return 0;
}

void fp_request_keyframe(struct fp_ctx *c, int leg)
{
    __atomic_store_n(&c->legs[leg]->keyframe_wanted, 1, __ATOMIC_RELEASE);
}

void fp_pause(struct fp_ctx *c) { __atomic_store_n(&c->paused, 1, __ATOMIC_RELEASE); }

void fp_resume(struct fp_ctx *c, uint64_t start_ns)
{
    c->resume_ns = start_ns;
    __atomic_store_n(&c->resume_gen, c->resume_gen + 1, __ATOMIC_RELEASE);
    __atomic_store_n(&c->paused, 0, __ATOMIC_RELEASE);
}

/* The leg's next packet into p; 0 when it is not due by ``now``. */
static int next_packet(struct fp_ctx *c, struct leg *l, uint64_t now, struct txpkt *p)
{
    uint64_t gen = __atomic_load_n(&c->resume_gen, __ATOMIC_ACQUIRE);
    int video, keyframe, len;

    if (l->resumed != gen) {
        mix_resume(l->mix, c->resume_ns);
        l->resumed = gen;
    }
    if (mix_next_due(l->mix) > now)
        return 0;
    p->built_ns = now == UINT64_MAX ? 0 : fp_now_ns();
    len = mix_next(l->mix, p->data, sizeof(p->data), p->built_ns, &p->due_ns, &video,
                   __atomic_load_n(&l->keyframe_wanted, __ATOMIC_ACQUIRE), &keyframe);
    if (keyframe) {
        __atomic_store_n(&l->keyframe_wanted, 0, __ATOMIC_RELEASE);
        l->st.keyframes++;
    }
    if (len < 0) {
        l->st.tx_errors++;
        return 0;
    }
    p->len = (uint16_t)len;
    p->kind = (uint8_t)video;
    return 1;
}

int fp_generate(struct fp_ctx *c, int leg, uint8_t *out, int room, uint64_t *due, int *kind)
{
    struct txpkt p;
    struct leg *l = c->legs[leg];

    if (c->started || l->mix == NULL || !next_packet(c, l, UINT64_MAX, &p) || p.len > room)
        return -1;
    memcpy(out, p.data, p.len);
    *due = p.due_ns;
    *kind = p.kind;
    return p.len;
}

static void pin(int cpu)
{
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void *tx_main(void *arg)
{
    struct fp_ctx *c = arg;
    static __thread struct txpkt out[FP_TXBATCH];
    struct mmsghdr msgs[FP_TXBATCH];
    struct iovec iov[FP_TXBATCH];
    pin(c->tx_cpu);
    while (!c->stop) {
        uint64_t now = fp_now_ns();
        uint64_t next = now + 1000000ull;
        uint32_t n = __atomic_load_n(&c->nlegs, __ATOMIC_ACQUIRE);
        int paused = __atomic_load_n(&c->paused, __ATOMIC_ACQUIRE);
        c->st.tx_wakeups++;
        for (uint32_t i = 0; i < n && !paused; i++) {
            struct leg *l = c->legs[i];
            if (!__atomic_load_n(&l->enabled, __ATOMIC_ACQUIRE) ||
                !__atomic_load_n(&l->mix, __ATOMIC_ACQUIRE))
                continue;
            int k = 0;
            while (k < FP_TXBATCH && next_packet(c, l, now, &out[k])) {
                iov[k].iov_base = out[k].data;
                iov[k].iov_len = out[k].len;
                memset(&msgs[k].msg_hdr, 0, sizeof(msgs[k].msg_hdr));
                msgs[k].msg_hdr.msg_name = &l->peer;
                msgs[k].msg_hdr.msg_namelen = sizeof(l->peer);
                msgs[k].msg_hdr.msg_iov = &iov[k];
                msgs[k].msg_hdr.msg_iovlen = 1;
                k++;
            }
            if (mix_next_due(l->mix) < next)
                next = mix_next_due(l->mix);
            if (!k)
                continue;
            int r = sendmmsg(l->fd, msgs, (unsigned)k, MSG_DONTWAIT);
            if (r < 0) { /* generated packets are not sent again: counted, like loss */
                if (errno == EAGAIN || errno == ENOBUFS || errno == EINTR)
                    l->st.tx_retries++;
                else
                    l->st.tx_last_errno = (uint64_t)errno;
                l->st.tx_errors += (uint64_t)k;
                continue;
            }
            if (r < k)
                l->st.tx_errors += (uint64_t)(k - r);
            uint64_t sent_at = fp_now_ns();
            for (int j = 0; j < r; j++) {
                struct txpkt *p = &out[j];
                if (p->kind)
                    l->st.tx_video++;
                else
                    l->st.tx_audio++;
                l->st.tx_bytes += p->len;
                uint64_t late = sent_at > p->due_ns ? sent_at - p->due_ns : 0;
                c->st.tx_late_sum_ns += late;
                if (late > c->st.tx_late_max_ns)
                    c->st.tx_late_max_ns = late;
                if (late > 1000000ull)
                    c->st.tx_late_over_1ms++;
                if (sent_at > p->built_ns + 1000000ull)
                    c->st.tx_hold_over_1ms++;
            }
            c->st.tx_packets += (uint64_t)r;
        }
        if (next > now) {
            struct timespec ts = {.tv_sec = (time_t)(next / 1000000000ull),
                                  .tv_nsec = (long)(next % 1000000000ull)};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        }
    }
    return NULL;
}

static inline uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void to_ring(struct fp_ctx *c, struct ring *r, uint32_t leg, const uint8_t *d, int len,
                    const struct sockaddr_in *src, uint64_t now, uint64_t kernel_ns,
                    uint64_t *dropped, uint32_t roc)
{
    struct fp_item *it = ring_slot(r);
    if (!it) {
        (*dropped)++;
        return;
    }
    it->leg = leg;
    it->len = (uint16_t)len;
    it->addr = src->sin_addr.s_addr;
    it->port = ntohs(src->sin_port);
    it->recv_ns = now;
    it->kernel_ns = kernel_ns;
    it->roc = roc;
    memcpy(it->data, d, len);
    ring_commit(r);
}

static void handle(struct fp_ctx *c, uint32_t li, struct leg *l, const uint8_t *d, int len,
                   const struct sockaddr_in *src, uint64_t now, uint64_t kernel_ns, int *ctrl)
{
    if (len >= 12 && d[0] >= 128 && d[0] < 192 && !(d[1] >= 192 && d[1] <= 223)) {
        uint32_t ssrc = be32(d + 8);
        uint16_t seq = (uint16_t)((d[2] << 8) | d[3]);
        l->st.rx_rtp++;
        l->st.rx_bytes += (uint64_t)len;
        struct fp_slot_stat *s = NULL;
        uint64_t ext = seq;
        int older = 0;
        uint32_t ns = __atomic_load_n(&l->nslots, __ATOMIC_ACQUIRE);
        for (uint32_t i = 0; i < ns; i++)
            if (l->slots[i].ssrc == ssrc) {
                s = &l->slots[i];
                break;
            }
        if (!s) {
            l->st.rx_unknown_ssrc++;
        } else {
            s->packets++;
            s->bytes += (uint64_t)len;
            if (!s->started) {
                s->base = seq;
                s->ext_max = seq;
                s->started = 1;
            } else {
                uint16_t delta = (uint16_t)(seq - (uint16_t)(s->ext_max & 0xffff));
                if (delta != 0 && delta < 0x8000) {
                    s->ext_max += delta;
                } else {
                    s->reordered++;
                    older = 1;
                    ext = s->ext_max - (uint16_t)((uint16_t)(s->ext_max & 0xffff) - seq);
                }
            }
            if (!older)
                ext = s->ext_max;
            if (s->kind) {
                if (!l->st.first_video_ns)
                    l->st.first_video_ns = now;
            } else if (!l->st.first_audio_ns) {
                l->st.first_audio_ns = now;
            }
            uint32_t cc = d[0] & 0x0f;
            if (cc >= 1 && len >= 16) {
                uint32_t csrc = be32(d + 12);
                uint32_t j;
                for (j = 0; j < l->ncsrc; j++)
                    if (l->csrcs[j].csrc == csrc && l->csrcs[j].kind == s->kind)
                        break;
                if (j == l->ncsrc) {
                    if (j < FP_MAXCSRC) {
                        l->csrcs[j].csrc = csrc;
                        l->csrcs[j].kind = s->kind;
                        l->csrcs[j].packets = 0;
                        __atomic_store_n(&l->ncsrc, j + 1, __ATOMIC_RELEASE);
                        l->st.ncsrc = j + 1;
                    } else {
                        l->st.rx_csrc_overflow++;
                        j = FP_MAXCSRC;
                    }
                }
                if (j < FP_MAXCSRC)
                    l->csrcs[j].packets++;
            } else {
                l->st.rx_no_csrc++;
            }
        }
        if (l->st.rx_rtp % (uint64_t)c->sample_every == 0) {
            c->st.samples_taken++;
            to_ring(c, &c->samples, li, d, len, src, now, kernel_ns, &c->st.samples_dropped,
                    (uint32_t)(ext >> 16));
        }
        return;
    }
    if (len >= 2 && d[0] >= 128 && d[0] < 192)
        l->st.rx_rtcp++;
    else
        l->st.rx_ctrl++;
    to_ring(c, &c->ctrl, li, d, len, src, now, kernel_ns, &c->st.ctrl_dropped, 0);
    *ctrl = 1;
}

/* The kernel stamps arrivals in CLOCK_REALTIME; the stamps in the packets are
 * CLOCK_MONOTONIC. Read at the batch, the offset is off by the batch's clock
 * steps only. */
static int64_t realtime_minus_monotonic(void)
{
    struct timespec real, mono;
    clock_gettime(CLOCK_REALTIME, &real);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    return (int64_t)(real.tv_sec - mono.tv_sec) * 1000000000ll + (real.tv_nsec - mono.tv_nsec);
}

/* When the datagram reached this host (the SFT's transmit, on a veth), as
 * CLOCK_MONOTONIC ns; 0 if the socket gave no stamp. */
static uint64_t kernel_arrival_ns(struct msghdr *h, int64_t realtime_ahead)
{
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(h); cm; cm = CMSG_NXTHDR(h, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(cm), sizeof(ts));
            return (uint64_t)((int64_t)ts.tv_sec * 1000000000ll + ts.tv_nsec - realtime_ahead);
        }
    }
    return 0;
}

static void *rx_main(void *arg)
{
    struct fp_ctx *c = arg;
    static __thread uint8_t bufs[BATCH][FP_MAXPKT + 64];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_in addrs[BATCH];
    static __thread uint8_t controls[BATCH][CMSG_SPACE(sizeof(struct timespec))];
    struct epoll_event evs[256];
    pin(c->rx_cpu);
    while (!c->stop) {
        int n = epoll_wait(c->epfd, evs, 256, 100);
        if (n <= 0)
            continue;
        c->st.rx_wakeups++;
        int ctrl = 0;
        for (int e = 0; e < n; e++) {
            uint32_t li = evs[e].data.u32;
            struct leg *l = c->legs[li];
            if (!__atomic_load_n(&l->enabled, __ATOMIC_ACQUIRE))
                continue;
            for (;;) {
                for (int k = 0; k < BATCH; k++) {
                    iov[k].iov_base = bufs[k];
                    iov[k].iov_len = sizeof(bufs[k]);
                    memset(&msgs[k].msg_hdr, 0, sizeof(msgs[k].msg_hdr));
                    msgs[k].msg_hdr.msg_name = &addrs[k];
                    msgs[k].msg_hdr.msg_namelen = sizeof(addrs[k]);
                    msgs[k].msg_hdr.msg_iov = &iov[k];
                    msgs[k].msg_hdr.msg_iovlen = 1;
                    msgs[k].msg_hdr.msg_control = controls[k];
                    msgs[k].msg_hdr.msg_controllen = sizeof(controls[k]);
                }
                int r = recvmmsg(l->fd, msgs, BATCH, MSG_DONTWAIT, NULL);
                if (r <= 0)
                    break;
                uint64_t now = fp_now_ns();
                int64_t realtime_ahead = realtime_minus_monotonic();
                c->st.rx_batches++;
                c->st.rx_datagrams += (uint64_t)r;
                for (int k = 0; k < r; k++) {
                    int len = (int)msgs[k].msg_len;
                    if (len > FP_MAXPKT)
                        len = FP_MAXPKT;
                    handle(c, li, l, bufs[k], len, &addrs[k], now,
                           kernel_arrival_ns(&msgs[k].msg_hdr, realtime_ahead), &ctrl);
                }
                if (r < BATCH)
                    break;
            }
        }
        if (ctrl) {
            uint64_t one = 1;
            ssize_t w = write(c->evfd, &one, sizeof(one));
            (void)w;
        }
    }
    return NULL;
}

int fp_start(struct fp_ctx *c)
{
    if (c->started)
        return 0;
    c->stop = 0;
    if (pthread_create(&c->tx_thread, NULL, tx_main, c))
        return -1;
    if (pthread_create(&c->rx_thread, NULL, rx_main, c)) {
        c->stop = 1;
        pthread_join(c->tx_thread, NULL);
        return -1;
    }
    c->started = 1;
    return 0;
}

void fp_stop(struct fp_ctx *c)
{
    if (!c->started)
        return;
    c->stop = 1;
    pthread_join(c->tx_thread, NULL);
    pthread_join(c->rx_thread, NULL);
    c->started = 0;
}

void fp_free(struct fp_ctx *c)
{
    if (!c)
        return;
    fp_stop(c);
    for (uint32_t i = 0; i < c->nlegs; i++) {
        if (c->legs[i]->mix) {
            mix_free(c->legs[i]->mix);
            free(c->legs[i]->mix);
        }
        free(c->legs[i]);
    }
    if (c->epfd >= 0)
        close(c->epfd);
    if (c->evfd >= 0)
        close(c->evfd);
    free(c->ctrl.items);
    free(c->samples.items);
    free(c);
}

int fp_pop_ctrl(struct fp_ctx *c, struct fp_item *out, int max) { return ring_pop(&c->ctrl, out, max); }
int fp_pop_samples(struct fp_ctx *c, struct fp_item *out, int max) { return ring_pop(&c->samples, out, max); }

void fp_leg_stat(struct fp_ctx *c, int leg, struct fp_leg_stat *out) { *out = c->legs[leg]->st; }

int fp_slot_stats(struct fp_ctx *c, int leg, struct fp_slot_stat *out, int max)
{
    struct leg *l = c->legs[leg];
    int n = (int)__atomic_load_n(&l->nslots, __ATOMIC_ACQUIRE);
    if (n > max)
        n = max;
    memcpy(out, l->slots, (size_t)n * sizeof(*out));
    return n;
}

int fp_csrc_stats(struct fp_ctx *c, int leg, struct fp_csrc_stat *out, int max)
{
    struct leg *l = c->legs[leg];
    int n = (int)__atomic_load_n(&l->ncsrc, __ATOMIC_ACQUIRE);
    if (n > max)
        n = max;
    memcpy(out, l->csrcs, (size_t)n * sizeof(*out));
    return n;
}

void fp_global_stat(struct fp_ctx *c, struct fp_global_stat *out) { *out = c->st; }
