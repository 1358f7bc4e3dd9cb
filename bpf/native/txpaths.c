// SPDX-License-Identifier: AGPL-3.0-or-later
/* Transmit loops of the transmit benchmark: see txpaths.h. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <linux/bpf.h>

#include "txlive.h"
#include "txpaths.h"
#include "xsk.h"

#define TXP_MAX_BATCH 1024
/* The test run's frame, copied into each page_pool page when the page is made
 * (once per page per call); the program grows it to the slot's length
 * (bpf_xdp_adjust_tail zeroes what it adds). A small one keeps that copy short. */
#define TXP_LIVE_DATA_IN 64
#define TXP_LIVE_FRAME_MAX 1514

struct txp_clock {
	struct timespec wall0, cpu0;
	uint64_t deadline;
};

static uint64_t ns_of(const struct timespec *t)
{
	return (uint64_t)t->tv_sec * 1000000000ull + (uint64_t)t->tv_nsec;
}

static uint64_t now_ns(clockid_t clock)
{
	struct timespec t;

	clock_gettime(clock, &t);
	return ns_of(&t);
}

static void clock_start(struct txp_clock *c, const struct txp_config *cfg)
{
	clock_gettime(CLOCK_MONOTONIC, &c->wall0);
	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c->cpu0);
	c->deadline = ns_of(&c->wall0) + cfg->duration_ns;
}

/* Whether to send another batch, and how many packets in it. */
static uint32_t next_batch(const struct txp_config *cfg, const struct txp_clock *c,
			   uint64_t done)
{
	uint64_t left;

	if (cfg->packets) {
		left = cfg->packets - done;
		return (uint32_t)(left < cfg->batch ? left : cfg->batch);
	}
	return now_ns(CLOCK_MONOTONIC) < c->deadline ? cfg->batch : 0;
}

static void clock_stop(const struct txp_clock *c, struct txp_result *res)
{
	res->elapsed_ns = now_ns(CLOCK_MONOTONIC) - ns_of(&c->wall0);
	res->thread_ns = now_ns(CLOCK_THREAD_CPUTIME_ID) - ns_of(&c->cpu0);
}

static int check_config(const struct txp_config *cfg)
{
	uint32_t odd = cfg->payload_len_odd;

	if (cfg->payload_len < 4 || cfg->payload_len + XSK_UDP_HEADERS_LEN > TXLIVE_FRAME_MAX ||
	    (odd && (odd < 4 || odd + XSK_UDP_HEADERS_LEN > TXLIVE_FRAME_MAX)) ||
	    !cfg->batch || cfg->batch > TXP_MAX_BATCH || !cfg->ndest || !cfg->pattern ||
	    (!cfg->packets && !cfg->duration_ns))
		return -EINVAL;
	return 0;
}

static inline uint32_t payload_len(const struct txp_config *cfg, uint32_t seq)
{
	return (seq & 1) && cfg->payload_len_odd ? cfg->payload_len_odd : cfg->payload_len;
}

/* The payload of sequence number seq, as the engine's SRTP output would land
 * there; returns its length. */
static inline uint32_t write_payload(const struct txp_config *cfg, uint32_t seq, uint8_t *dst)
{
	uint32_t be = htonl(seq), len = payload_len(cfg, seq);

	memcpy(dst, cfg->pattern + (seq & 255), len);
	memcpy(dst, &be, 4);
	return len;
}

static struct xsk_udp_template *build_templates(const struct txp_config *cfg)
{
	struct xsk_udp_template *t = calloc(cfg->ndest, sizeof(*t));
	uint32_t d;

	if (!t)
		return NULL;
	for (d = 0; d < cfg->ndest; d++)
		xsk_udp_template_build(&t[d], cfg->src_mac, cfg->dst_mac, cfg->saddr,
				       htonl(cfg->daddr_base + d), htons(cfg->sport),
				       htons((uint16_t)(cfg->dport_base + d)), 0);
	return t;
}

/* Headers and payload of one complete frame; returns its length. */
static uint32_t write_frame(const struct txp_config *cfg, const struct xsk_udp_template *t,
			    uint32_t seq, uint8_t *frame)
{
	uint32_t len = payload_len(cfg, seq), udp_len = 8 + len, ip_len = 20 + udp_len;
	uint32_t sum = t->ip_sum + ip_len;
	uint16_t csum;

	memcpy(frame, t->headers, XSK_UDP_HEADERS_LEN);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	csum = (uint16_t)~sum;
	frame[16] = (uint8_t)(ip_len >> 8);
	frame[17] = (uint8_t)ip_len;
	frame[24] = (uint8_t)(csum >> 8);
	frame[25] = (uint8_t)csum;
	frame[38] = (uint8_t)(udp_len >> 8);
	frame[39] = (uint8_t)udp_len;
	write_payload(cfg, seq, frame + XSK_UDP_HEADERS_LEN);
	return XSK_UDP_HEADERS_LEN + len;
}

/* ------------------------------------------------------------ UDP sockets */

int txp_udp(const struct txp_config *cfg, const int *fds, uint32_t nfds, int mode,
	    struct txp_result *res)
{
	static uint8_t bufs[TXP_MAX_BATCH][TXLIVE_FRAME_MAX];
	struct sockaddr_in *names;
	struct mmsghdr *msgs;
	struct iovec *iovs;
	struct txp_clock clk;
	uint32_t seq = cfg->seq_start, n, i, d;
	int ret = check_config(cfg);

	memset(res, 0, sizeof(*res));
	if (ret)
		return ret;
	if (mode == TXP_UDP_ONE_SOCKET ? nfds < 1 : nfds < cfg->ndest)
		return -EINVAL;
	names = calloc(cfg->ndest, sizeof(*names));
	msgs = calloc(cfg->batch, sizeof(*msgs));
	iovs = calloc(cfg->batch, sizeof(*iovs));
	if (!names || !msgs || !iovs) {
		ret = -ENOMEM;
		goto out;
	}
	for (d = 0; d < cfg->ndest; d++) {
		names[d].sin_family = AF_INET;
		names[d].sin_addr.s_addr = htonl(cfg->daddr_base + d);
		names[d].sin_port = htons((uint16_t)(cfg->dport_base + d));
	}
	clock_start(&clk, cfg);
	while ((n = next_batch(cfg, &clk, res->sent + res->errors)) != 0) {
		if (mode == TXP_UDP_ONE_SOCKET) {
			uint32_t done = 0;

			for (i = 0; i < n; i++, seq++) {
				iovs[i].iov_len = write_payload(cfg, seq, bufs[i]);
				iovs[i].iov_base = bufs[i];
				msgs[i].msg_hdr.msg_iov = &iovs[i];
				msgs[i].msg_hdr.msg_iovlen = 1;
				msgs[i].msg_hdr.msg_name = &names[seq % cfg->ndest];
				msgs[i].msg_hdr.msg_namelen = sizeof(names[0]);
			}
			while (done < n) {
				int sent = sendmmsg(fds[0], msgs + done, n - done, 0);

				res->syscalls++;
				if (sent <= 0) { /* the first message failed: count it, go on */
					res->errors++;
					res->last_errno = errno;
					done++;
					continue;
				}
				res->sent += (uint64_t)sent;
				done += (uint32_t)sent;
			}
			continue;
		}
		for (i = 0; i < n; i++, seq++) {
			uint32_t len = write_payload(cfg, seq, bufs[0]);
			ssize_t sent;

			d = seq % cfg->ndest;
			if (mode == TXP_UDP_CONNECTED)
				sent = send(fds[d], bufs[0], len, 0);
			else
				sent = sendto(fds[d], bufs[0], len, 0,
					      (const struct sockaddr *)&names[d], sizeof(names[d]));
			res->syscalls++;
			if (sent < 0) {
				res->errors++;
				res->last_errno = errno;
			} else {
				res->sent++;
			}
		}
	}
	clock_stop(&clk, res);
out:
	free(names);
	free(msgs);
	free(iovs);
	return ret;
}

/* ------------------------------------------------- AF_PACKET, TPACKET_V2 TX ring */

#define TXP_PACKET_FRAME 2048
#define TXP_PACKET_DATA TPACKET_ALIGN(sizeof(struct tpacket2_hdr))

int txp_packet_ring(const struct txp_config *cfg, int ifindex, uint32_t frame_nr,
		    struct txp_result *res)
{
	struct xsk_udp_template *tmpls = NULL;
	struct sockaddr_ll ll = {0};
	struct tpacket_req req = {0};
	int fd, one = 1, version = TPACKET_V2, ret = check_config(cfg);
	uint32_t seq = cfg->seq_start, cur = 0, n, i;
	struct txp_clock clk;
	uint8_t *ring = MAP_FAILED;
	size_t ring_len;

	memset(res, 0, sizeof(*res));
	if (ret)
		return ret;
	if (frame_nr < cfg->batch || frame_nr % 2)
		return -EINVAL;
	fd = socket(AF_PACKET, SOCK_RAW, 0); /* protocol 0: receives nothing */
	if (fd < 0)
		return -errno;
	req.tp_block_size = 4096;
	req.tp_frame_size = TXP_PACKET_FRAME;
	req.tp_block_nr = frame_nr / 2;
	req.tp_frame_nr = frame_nr;
	ring_len = (size_t)req.tp_block_size * req.tp_block_nr;
	if (setsockopt(fd, SOL_PACKET, PACKET_VERSION, &version, sizeof(version)) ||
	    setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)) ||
	    setsockopt(fd, SOL_PACKET, PACKET_TX_RING, &req, sizeof(req))) {
		ret = -errno;
		goto out;
	}
	ring = mmap(NULL, ring_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (ring == MAP_FAILED) {
		ret = -errno;
		goto out;
	}
	ll.sll_family = AF_PACKET;
	ll.sll_ifindex = ifindex;
	if (bind(fd, (struct sockaddr *)&ll, sizeof(ll))) {
		ret = -errno;
		goto out;
	}
	tmpls = build_templates(cfg);
	if (!tmpls) {
		ret = -ENOMEM;
		goto out;
	}
	clock_start(&clk, cfg);
	while ((n = next_batch(cfg, &clk, res->sent + res->errors)) != 0) {
		for (i = 0; i < n; i++, seq++) {
			struct tpacket2_hdr *h = (void *)(ring + (size_t)cur * TXP_PACKET_FRAME);
			uint32_t status = __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE);

			while (status != TP_STATUS_AVAILABLE) {
				if (status == TP_STATUS_WRONG_FORMAT) {
					res->errors++;
					break;
				}
				/* still in flight: a blocking send waits for it */
				res->syscalls++;
				if (send(fd, NULL, 0, 0) < 0)
					res->last_errno = errno;
				status = __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE);
			}
			h->tp_len = write_frame(cfg, &tmpls[seq % cfg->ndest], seq,
						(uint8_t *)h + TXP_PACKET_DATA);
			__atomic_store_n(&h->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
			cur = (cur + 1) % frame_nr;
		}
		res->syscalls++;
		if (send(fd, NULL, 0, 0) < 0) {
			res->errors += n;
			res->last_errno = errno;
		} else {
			res->sent += n;
		}
	}
	clock_stop(&clk, res);
out:
	free(tmpls);
	if (ring != MAP_FAILED)
		munmap(ring, ring_len);
	close(fd);
	return ret;
}

/* ------------------------------------------------------- AF_XDP, copy mode */

int txp_xsk(const struct txp_config *cfg, int ifindex, uint32_t ring_size,
	    struct txp_result *res, char *err, size_t err_len)
{
	struct xsk_config xc = {0};
	struct xsk_udp_template *tmpls = NULL;
	struct xsk_tx_desc *descs = NULL;
	struct xsk_port_stats st;
	struct xsk_port *port = NULL;
	struct txp_clock clk;
	uint32_t seq = cfg->seq_start, n, got, i;
	int ret = check_config(cfg);

	memset(res, 0, sizeof(*res));
	if (ret)
		return ret;
	xc.ifindex = (uint32_t)ifindex;
	xc.ring_size = ring_size;
	xc.mode = XSK_MODE_COPY;
	xc.need_wakeup = 1;
	ret = xsk_port_open(&xc, &port, err, err_len);
	if (ret)
		return ret;
	tmpls = build_templates(cfg);
	descs = calloc(cfg->batch, sizeof(*descs));
	if (!tmpls || !descs) {
		ret = -ENOMEM;
		goto out;
	}
	clock_start(&clk, cfg);
	while ((n = next_batch(cfg, &clk, res->sent + res->errors)) != 0) {
		got = xsk_tx_reserve(port, descs, n);
		for (i = 0; i < got; i++, seq++) {
			descs[i].payload_len = write_payload(cfg, seq, descs[i].payload);
			descs[i].tmpl = &tmpls[seq % cfg->ndest];
		}
		res->sent += xsk_tx_submit(port, descs, got);
		do {
			ret = xsk_kick(port);
			if (ret) {
				res->last_errno = -ret;
				res->errors++;
				ret = 0;
				break;
			}
		} while (xsk_tx_unsent(port));
		xsk_complete(port);
	}
	/* what was queued has been sent once the completions are back */
	for (i = 0; i < 1000 && xsk_tx_in_flight(port); i++) {
		xsk_kick(port);
		xsk_complete(port);
	}
	clock_stop(&clk, res);
	if (!xsk_port_stats(port, &st)) {
		res->syscalls = st.tx_kicks;
		res->errors += st.tx_invalid + st.k_tx_invalid_descs;
	}
out:
	free(descs);
	free(tmpls);
	xsk_port_close(port);
	return ret;
}

/* ------------------------------------------- BPF_PROG_TEST_RUN, live frames */

int txp_live(const struct txp_config *cfg, int prog_fd, void *slots, void *ctl,
	     uint32_t slot_base, int ifindex, uint32_t kernel_batch, struct txp_result *res)
{
	static uint8_t data_in[TXP_LIVE_DATA_IN];
	struct xdp_md md = {0};
	struct xsk_udp_template *tmpls;
	struct txlive_ctl *c;
	struct txp_clock clk;
	uint32_t seq = cfg->seq_start, n, i;
	uint64_t sent0;
	int cpu, ret = check_config(cfg);

	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = data_in,
		    .data_size_in = sizeof(data_in), .ctx_in = &md, .ctx_size_in = sizeof(md),
		    .flags = BPF_F_TEST_XDP_LIVE_FRAMES, .batch_size = kernel_batch);

	memset(res, 0, sizeof(*res));
	if (ret)
		return ret;
	cpu = sched_getcpu();
	if (cpu < 0 || cpu >= TXLIVE_CTL_ENTRIES || slot_base + cfg->batch > TXLIVE_SLOTS ||
	    cfg->payload_len + XSK_UDP_HEADERS_LEN > TXP_LIVE_FRAME_MAX ||
	    cfg->payload_len_odd + XSK_UDP_HEADERS_LEN > TXP_LIVE_FRAME_MAX)
		return -EINVAL;
	c = (struct txlive_ctl *)ctl + cpu;
	md.data_end = sizeof(data_in);
	md.ingress_ifindex = (uint32_t)ifindex;
	tmpls = build_templates(cfg);
	if (!tmpls)
		return -ENOMEM;
	c->ifindex = (uint32_t)ifindex;
	sent0 = c->sent;
	clock_start(&clk, cfg);
	while ((n = next_batch(cfg, &clk, res->sent + res->errors)) != 0) {
		for (i = 0; i < n; i++, seq++) {
			struct txlive_slot *s = (struct txlive_slot *)slots + slot_base + i;

			s->len = write_frame(cfg, &tmpls[seq % cfg->ndest], seq, s->frame);
		}
		c->base = slot_base;
		c->count = n;
		c->next = 0;
		opts.repeat = (int)n;
		/* the run must stay on the CPU whose control block was written */
		if (sched_getcpu() != cpu) {
			ret = -EAGAIN;
			break;
		}
		ret = bpf_prog_test_run_opts(prog_fd, &opts);
		res->syscalls++;
		if (ret) {
			res->errors += n;
			res->last_errno = -ret;
			ret = 0;
			continue;
		}
		res->errors += n - c->next;
		res->sent += c->next;
	}
	clock_stop(&clk, res);
	/* runs that read a bad slot or found no room count as errors */
	res->errors += res->sent - (c->sent - sent0);
	res->sent = c->sent - sent0;
	free(tmpls);
	return ret;
}
