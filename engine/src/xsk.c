// SPDX-License-Identifier: AGPL-3.0-or-later
/* AF_XDP ports with raw syscalls; see xsk.h for the API and threading contract. */
#define _GNU_SOURCE
#include "xsk.h"

#include <errno.h>
#include <linux/bpf.h>
#include <linux/if_xdp.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef AF_XDP
#define AF_XDP 44
#endif
#ifndef SOL_XDP
#define SOL_XDP 283
#endif

/* One ring as user space sees it: producer/consumer are shared with the kernel,
 * the cached copies save a cache-line bounce per entry. */
struct xsk_ring {
	uint32_t *producer;
	uint32_t *consumer;
	uint32_t *flags;
	void *descs;
	uint32_t mask;
	uint32_t size;
	uint32_t cached_prod;
	uint32_t cached_cons;
	void *map;
	size_t map_len;
};

struct xsk_port {
	int fd;
	uint32_t ifindex;
	uint32_t queue_id;
	uint32_t frame_size;
	uint32_t ring_size;
	int zerocopy;
	int need_wakeup;
	uint8_t *umem;
	size_t umem_len;
	struct xsk_ring fill, comp, rx, tx;
	uint64_t *tx_free; /* stack of free transmit frames */
	uint32_t tx_free_count;
	uint32_t tx_in_flight;
	uint32_t fill_pending; /* released since the last fill wakeup */
	struct xsk_port_stats stats;
};

static uint32_t load_acquire(const uint32_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static void store_release(uint32_t *p, uint32_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* entries ready in a ring we consume from (rx, completion) */
static uint32_t cons_ready(struct xsk_ring *r, uint32_t wanted)
{
	uint32_t ready = r->cached_prod - r->cached_cons;

	if (ready >= wanted)
		return ready;
	r->cached_prod = load_acquire(r->producer);
	return r->cached_prod - r->cached_cons;
}

static int fail(char *err, size_t err_len, int errnum, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	if (err && err_len) {
		va_start(ap, fmt);
		vsnprintf(err, err_len, fmt, ap);
		va_end(ap);
		n = strlen(err);
		if (n < err_len)
			snprintf(err + n, err_len - n, ": %s", strerror(errnum));
	}
	return -errnum;
}

static int map_ring(struct xsk_port *port, struct xsk_ring *r, const struct xdp_ring_offset *off,
		    uint64_t pgoff, size_t desc_size)
{
	r->map_len = off->desc + (size_t)port->ring_size * desc_size;
	r->map = mmap(NULL, r->map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
		      port->fd, (off_t)pgoff);
	if (r->map == MAP_FAILED) {
		r->map = NULL;
		return -errno;
	}
	r->producer = (uint32_t *)((uint8_t *)r->map + off->producer);
	r->consumer = (uint32_t *)((uint8_t *)r->map + off->consumer);
	r->flags = (uint32_t *)((uint8_t *)r->map + off->flags);
	r->descs = (uint8_t *)r->map + off->desc;
	r->size = port->ring_size;
	r->mask = port->ring_size - 1;
	return 0;
}

static void unmap_ring(struct xsk_ring *r)
{
	if (r->map)
		munmap(r->map, r->map_len);
	r->map = NULL;
}

static int bind_port(struct xsk_port *port, uint16_t flags)
{
	struct sockaddr_xdp sxdp = {
		.sxdp_family = AF_XDP,
		.sxdp_ifindex = port->ifindex,
		.sxdp_queue_id = port->queue_id,
		.sxdp_flags = flags,
	};

	return bind(port->fd, (struct sockaddr *)&sxdp, sizeof(sxdp)) ? -errno : 0;
}

static const char *bind_hint(int errnum)
{
	switch (errnum) {
	case EOPNOTSUPP:
		return "the driver has no zero-copy AF_XDP: use mode auto or copy";
	case EBUSY:
		return "another AF_XDP socket is bound to that queue";
	case EINVAL:
		return "does the queue exist? ethtool -l shows the queues";
	default:
		return "is the interface up?";
	}
}

int xsk_port_open(const struct xsk_config *cfg, struct xsk_port **out, char *err, size_t err_len)
{
	struct xdp_umem_reg reg = { 0 };
	struct xdp_mmap_offsets off;
	struct xsk_port *port;
	socklen_t optlen = sizeof(off);
	uint16_t wakeup;
	char ifname[IF_NAMESIZE] = "?";
	uint32_t i, size;
	int ret;

	*out = NULL;
	if_indextoname(cfg->ifindex, ifname);
	size = cfg->ring_size ? cfg->ring_size : XSK_DEFAULT_RING_SIZE;
	if (size < 8 || (size & (size - 1)))
		return fail(err, err_len, EINVAL, "ring_size %u is no power of two >= 8", size);
	if (cfg->frame_size && cfg->frame_size != 2048 && cfg->frame_size != 4096)
		return fail(err, err_len, EINVAL, "frame_size %u is neither 2048 nor 4096",
			    cfg->frame_size);
	port = calloc(1, sizeof(*port));
	if (!port)
		return fail(err, err_len, ENOMEM, "allocating the port");
	port->fd = -1;
	port->ifindex = cfg->ifindex;
	port->queue_id = cfg->queue_id;
	port->ring_size = size;
	port->frame_size = cfg->frame_size ? cfg->frame_size : XSK_DEFAULT_FRAME_SIZE;
	port->need_wakeup = cfg->need_wakeup;
	port->umem_len = (size_t)2 * size * port->frame_size;
	port->tx_free = calloc(size, sizeof(*port->tx_free));
	if (!port->tx_free) {
		ret = fail(err, err_len, ENOMEM, "allocating the transmit free list");
		goto out_free;
	}

	port->fd = socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0);
	if (port->fd < 0) {
		ret = fail(err, err_len, errno, "socket(AF_XDP) (needs CAP_NET_RAW and a kernel "
			   "with CONFIG_XDP_SOCKETS)");
		goto out_free;
	}
	port->umem = mmap(NULL, port->umem_len, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (port->umem == MAP_FAILED) {
		port->umem = NULL;
		ret = fail(err, err_len, errno, "mapping a %zu-byte UMEM", port->umem_len);
		goto out_free;
	}
	reg.addr = (uint64_t)(uintptr_t)port->umem;
	reg.len = port->umem_len;
	reg.chunk_size = port->frame_size;
	reg.headroom = 0;
	if (setsockopt(port->fd, SOL_XDP, XDP_UMEM_REG, &reg, sizeof(reg))) {
		ret = fail(err, err_len, errno, "registering the UMEM (%zu bytes; raise "
			   "RLIMIT_MEMLOCK or run as root)", port->umem_len);
		goto out_free;
	}
	if (setsockopt(port->fd, SOL_XDP, XDP_UMEM_FILL_RING, &size, sizeof(size)) ||
	    setsockopt(port->fd, SOL_XDP, XDP_UMEM_COMPLETION_RING, &size, sizeof(size)) ||
	    setsockopt(port->fd, SOL_XDP, XDP_RX_RING, &size, sizeof(size)) ||
	    setsockopt(port->fd, SOL_XDP, XDP_TX_RING, &size, sizeof(size))) {
		ret = fail(err, err_len, errno, "sizing the rings to %u entries", size);
		goto out_free;
	}
	if (getsockopt(port->fd, SOL_XDP, XDP_MMAP_OFFSETS, &off, &optlen)) {
		ret = fail(err, err_len, errno, "reading the ring offsets");
		goto out_free;
	}
	if ((ret = map_ring(port, &port->fill, &off.fr, XDP_UMEM_PGOFF_FILL_RING, sizeof(uint64_t))) ||
	    (ret = map_ring(port, &port->comp, &off.cr, XDP_UMEM_PGOFF_COMPLETION_RING,
			    sizeof(uint64_t))) ||
	    (ret = map_ring(port, &port->rx, &off.rx, XDP_PGOFF_RX_RING, sizeof(struct xdp_desc))) ||
	    (ret = map_ring(port, &port->tx, &off.tx, XDP_PGOFF_TX_RING, sizeof(struct xdp_desc)))) {
		ret = fail(err, err_len, -ret, "mapping the rings");
		goto out_free;
	}
	/* the fill ring takes every receive frame before the bind lets packets in */
	for (i = 0; i < size; i++)
		((uint64_t *)port->fill.descs)[i] = (uint64_t)i * port->frame_size;
	port->fill.cached_prod = size;
	store_release(port->fill.producer, size);
	for (i = 0; i < size; i++)
		port->tx_free[i] = (uint64_t)(size + i) * port->frame_size;
	port->tx_free_count = size;

	wakeup = cfg->need_wakeup ? XDP_USE_NEED_WAKEUP : 0;
	ret = -EOPNOTSUPP;
	if (cfg->mode != XSK_MODE_COPY) {
		ret = bind_port(port, XDP_ZEROCOPY | wakeup);
		port->zerocopy = ret == 0;
	}
	if (ret && cfg->mode != XSK_MODE_ZEROCOPY)
		ret = bind_port(port, XDP_COPY | wakeup);
	if (ret) {
		ret = fail(err, err_len, -ret, "binding to %s (ifindex %u) queue %u in %s mode (%s)",
			   ifname, cfg->ifindex, cfg->queue_id,
			   cfg->mode == XSK_MODE_ZEROCOPY ? "zero-copy" : "copy", bind_hint(-ret));
		goto out_free;
	}
	*out = port;
	return 0;

out_free:
	xsk_port_close(port);
	return ret;
}

void xsk_port_close(struct xsk_port *port)
{
	if (!port)
		return;
	unmap_ring(&port->fill);
	unmap_ring(&port->comp);
	unmap_ring(&port->rx);
	unmap_ring(&port->tx);
	if (port->fd >= 0)
		close(port->fd);
	if (port->umem)
		munmap(port->umem, port->umem_len);
	free(port->tx_free);
	free(port);
}

int xsk_port_fd(const struct xsk_port *port)
{
	return port->fd;
}

int xsk_port_zerocopy(const struct xsk_port *port)
{
	return port->zerocopy;
}

uint32_t xsk_port_tx_capacity(const struct xsk_port *port)
{
	return port->frame_size - XSK_UDP_HEADERS_LEN;
}

int xsk_port_attach_map(const struct xsk_port *port, int xskmap_fd)
{
	uint32_t key = port->queue_id, value = (uint32_t)port->fd;
	union bpf_attr attr;

	memset(&attr, 0, sizeof(attr));
	attr.map_fd = (uint32_t)xskmap_fd;
	attr.key = (uint64_t)(uintptr_t)&key;
	attr.value = (uint64_t)(uintptr_t)&value;
	attr.flags = BPF_ANY;
	return syscall(__NR_bpf, BPF_MAP_UPDATE_ELEM, &attr, sizeof(attr)) ? -errno : 0;
}

int xsk_port_stats(const struct xsk_port *port, struct xsk_port_stats *out)
{
	struct xdp_statistics ks;
	socklen_t len = sizeof(ks);

	*out = port->stats;
	memset(&ks, 0, sizeof(ks));
	if (getsockopt(port->fd, SOL_XDP, XDP_STATISTICS, &ks, &len))
		return -errno;
	out->k_rx_dropped = ks.rx_dropped;
	out->k_rx_invalid_descs = ks.rx_invalid_descs;
	out->k_tx_invalid_descs = ks.tx_invalid_descs;
	out->k_rx_ring_full = ks.rx_ring_full;
	out->k_rx_fill_ring_empty = ks.rx_fill_ring_empty_descs;
	out->k_tx_ring_empty = ks.tx_ring_empty_descs;
	return 0;
}

/* Frame base of a descriptor address (aligned chunks: data may sit past headroom). */
static uint64_t frame_of(const struct xsk_port *port, uint64_t addr)
{
	return addr & ~(uint64_t)(port->frame_size - 1);
}

static void fill_push(struct xsk_port *port, uint64_t frame)
{
	/* cannot be full: the ring holds all ring_size receive frames */
	((uint64_t *)port->fill.descs)[port->fill.cached_prod++ & port->fill.mask] = frame;
	port->fill_pending++;
}

/* Parses Ethernet/IPv4/UDP; 0 when the frame is none (the program never
 * redirects such frames, but anyone with the XSKMAP could). */
static int parse_udp(uint8_t *frame, uint32_t len, struct xsk_rx_desc *d)
{
	uint32_t ihl, ip_len, udp_len;
	uint8_t *ip, *udp;

	if (len < XSK_UDP_HEADERS_LEN || frame[12] != 0x08 || frame[13] != 0x00)
		return 0;
	ip = frame + 14;
	ihl = (uint32_t)(ip[0] & 0xf) * 4;
	if ((ip[0] >> 4) != 4 || ihl < 20 || ip[9] != 17 || 14 + ihl + 8 > len)
		return 0;
	ip_len = (uint32_t)ip[2] << 8 | ip[3];
	udp = ip + ihl;
	udp_len = (uint32_t)udp[4] << 8 | udp[5];
	if (udp_len < 8 || ihl + udp_len > ip_len || 14 + ihl + udp_len > len)
		return 0;
	memcpy(&d->saddr, ip + 12, 4);
	memcpy(&d->daddr, ip + 16, 4);
	memcpy(&d->sport, udp, 2);
	memcpy(&d->dport, udp + 2, 2);
	d->payload = udp + 8;
	d->payload_len = udp_len - 8;
	return 1;
}

unsigned xsk_rx_batch(struct xsk_port *port, struct xsk_rx_desc *descs, unsigned max)
{
	const struct xdp_desc *ring = port->rx.descs;
	unsigned got = 0;
	uint32_t ready = cons_ready(&port->rx, max);

	while (ready-- && got < max) {
		const struct xdp_desc *x = &ring[port->rx.cached_cons++ & port->rx.mask];
		struct xsk_rx_desc *d = &descs[got];

		d->handle = frame_of(port, x->addr);
		if (x->addr + x->len > port->umem_len ||
		    !parse_udp(port->umem + x->addr, x->len, d)) {
			port->stats.rx_invalid++;
			fill_push(port, d->handle);
			continue;
		}
		port->stats.rx_packets++;
		port->stats.rx_bytes += d->payload_len;
		got++;
	}
	store_release(port->rx.consumer, port->rx.cached_cons);
	if (port->fill_pending)
		store_release(port->fill.producer, port->fill.cached_prod);
	return got;
}

void xsk_rx_release(struct xsk_port *port, const struct xsk_rx_desc *descs, unsigned n)
{
	unsigned i;

	for (i = 0; i < n; i++)
		fill_push(port, descs[i].handle);
	store_release(port->fill.producer, port->fill.cached_prod);
}

unsigned xsk_complete(struct xsk_port *port)
{
	const uint64_t *ring = port->comp.descs;
	uint32_t ready = cons_ready(&port->comp, port->comp.size), i;

	for (i = 0; i < ready; i++)
		port->tx_free[port->tx_free_count++] =
			frame_of(port, ring[port->comp.cached_cons++ & port->comp.mask]);
	if (ready) {
		store_release(port->comp.consumer, port->comp.cached_cons);
		port->tx_in_flight -= ready;
	}
	return ready;
}

unsigned xsk_tx_in_flight(const struct xsk_port *port)
{
	return port->tx_in_flight;
}

unsigned xsk_tx_reserve(struct xsk_port *port, struct xsk_tx_desc *descs, unsigned n)
{
	unsigned i;

	if (port->tx_free_count < n)
		xsk_complete(port);
	if (n > port->tx_free_count)
		n = port->tx_free_count;
	for (i = 0; i < n; i++) {
		uint64_t frame = port->tx_free[--port->tx_free_count];

		descs[i].handle = frame;
		descs[i].payload = port->umem + frame + XSK_UDP_HEADERS_LEN;
		descs[i].payload_len = 0;
		descs[i].tmpl = NULL;
	}
	return n;
}

static uint16_t fold(uint32_t sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

unsigned xsk_tx_submit(struct xsk_port *port, const struct xsk_tx_desc *descs, unsigned n)
{
	struct xdp_desc *ring = port->tx.descs;
	uint32_t capacity = xsk_port_tx_capacity(port);
	unsigned i, queued = 0;

	/* the tx ring cannot be full: it has room for all ring_size transmit frames */
	for (i = 0; i < n; i++) {
		const struct xsk_tx_desc *d = &descs[i];
		uint8_t *frame = port->umem + d->handle;
		uint32_t ip_len, udp_len;
		uint16_t csum;
		struct xdp_desc *x;

		if (!d->tmpl || !d->payload_len || d->payload_len > capacity) {
			if (d->payload_len)
				port->stats.tx_invalid++;
			port->tx_free[port->tx_free_count++] = d->handle;
			continue;
		}
		udp_len = 8 + d->payload_len;
		ip_len = 20 + udp_len;
		memcpy(frame, d->tmpl->headers, XSK_UDP_HEADERS_LEN);
		frame[16] = (uint8_t)(ip_len >> 8);
		frame[17] = (uint8_t)ip_len;
		csum = (uint16_t)~fold(d->tmpl->ip_sum + ip_len);
		frame[24] = (uint8_t)(csum >> 8);
		frame[25] = (uint8_t)csum;
		frame[38] = (uint8_t)(udp_len >> 8);
		frame[39] = (uint8_t)udp_len;
		x = &ring[port->tx.cached_prod++ & port->tx.mask];
		x->addr = d->handle;
		x->len = XSK_UDP_HEADERS_LEN + d->payload_len;
		x->options = 0;
		port->stats.tx_packets++;
		port->stats.tx_bytes += d->payload_len;
		queued++;
	}
	if (queued) {
		store_release(port->tx.producer, port->tx.cached_prod);
		port->tx_in_flight += queued;
	}
	return queued;
}

int xsk_kick(struct xsk_port *port)
{
	uint32_t unsent = port->tx.cached_prod - load_acquire(port->tx.consumer);
	int ret = 0;

	/* copy mode sends a bounded batch per sendto() whatever the flag says */
	if (unsent && (!port->zerocopy || !port->need_wakeup ||
		       (load_acquire(port->tx.flags) & XDP_RING_NEED_WAKEUP))) {
		port->stats.tx_kicks++;
		if (sendto(port->fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0) {
			if (errno == EAGAIN || errno == EBUSY || errno == ENOBUFS || errno == ENETDOWN)
				port->stats.tx_kick_again++;
			else
				ret = -errno;
		}
	}
	if (port->fill_pending && port->need_wakeup &&
	    (load_acquire(port->fill.flags) & XDP_RING_NEED_WAKEUP)) {
		port->stats.fill_wakeups++;
		recvfrom(port->fd, NULL, 0, MSG_DONTWAIT, NULL, NULL);
	}
	port->fill_pending = 0;
	return ret;
}

unsigned xsk_tx_unsent(const struct xsk_port *port)
{
	return port->tx.cached_prod - load_acquire(port->tx.consumer);
}

void xsk_udp_template_build(struct xsk_udp_template *tmpl, const uint8_t src_mac[6],
			    const uint8_t dst_mac[6], uint32_t saddr, uint32_t daddr,
			    uint16_t sport, uint16_t dport, uint8_t dscp)
{
	uint8_t *h = tmpl->headers;
	uint32_t sum = 0;
	int i;

	memset(tmpl, 0, sizeof(*tmpl));
	memcpy(h, dst_mac, 6);
	memcpy(h + 6, src_mac, 6);
	h[12] = 0x08; /* IPv4 */
	h[13] = 0x00;
	h[14] = 0x45; /* version 4, 20-byte header */
	h[15] = (uint8_t)(dscp << 2);
	h[20] = 0x40; /* DF; id 0 as Linux sends DF datagrams */
	h[22] = 64;   /* TTL */
	h[23] = 17;   /* UDP */
	memcpy(h + 26, &saddr, 4);
	memcpy(h + 30, &daddr, 4);
	memcpy(h + 34, &sport, 2);
	memcpy(h + 36, &dport, 2);
	/* the IPv4 header's sum without tot_len and checksum (both zero here) */
	for (i = 14; i < 34; i += 2)
		sum += (uint32_t)h[i] << 8 | h[i + 1];
	tmpl->ip_sum = sum;
}
