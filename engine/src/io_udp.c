/* SPDX-License-Identifier: AGPL-3.0-or-later */
#define _GNU_SOURCE
#include "io.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>

int io_udp_receive(int fd, struct io_rx *rx, int max)
{
	struct mmsghdr msgs[IO_BATCH];
	struct iovec iov[IO_BATCH];
	int n;

	if (max > IO_BATCH)
		max = IO_BATCH;
	memset(msgs, 0, sizeof(msgs[0]) * (size_t)max);
	for (int i = 0; i < max; i++) {
		iov[i].iov_base = rx[i].data;
		iov[i].iov_len = sizeof(rx[i].data);
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
		msgs[i].msg_hdr.msg_name = &rx[i].source;
		msgs[i].msg_hdr.msg_namelen = sizeof(rx[i].source);
	}
	n = recvmmsg(fd, msgs, (unsigned)max, MSG_DONTWAIT, NULL);
	if (n <= 0)
		return 0;
	for (int i = 0; i < n; i++) {
		rx[i].len = msgs[i].msg_len;
		rx[i].source_len = msgs[i].msg_hdr.msg_namelen;
		if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC)
			rx[i].len = sizeof(rx[i].data); /* too long for media: dropped as malformed */
	}
	return n;
}

int io_udp_send(struct io_tx *const *tx, int n, uint64_t *calls)
{
	struct mmsghdr msgs[IO_TX_BATCH];
	struct iovec iov[IO_TX_BATCH];
	int refused = 0, start = 0;

	while (start < n) {
		int end = start + 1, sent;
		while (end < n && tx[end]->fd == tx[start]->fd)
			end++;
		for (int i = start; i < end; i++) {
			memset(&msgs[i], 0, sizeof(msgs[i]));
			iov[i].iov_base = tx[i]->data;
			iov[i].iov_len = tx[i]->len;
			msgs[i].msg_hdr.msg_iov = &iov[i];
			msgs[i].msg_hdr.msg_iovlen = 1;
			msgs[i].msg_hdr.msg_name = &tx[i]->dest;
			msgs[i].msg_hdr.msg_namelen = tx[i]->dest_len;
		}
		while (start < end) {
			sent = sendmmsg(tx[start]->fd, &msgs[start], (unsigned)(end - start), MSG_DONTWAIT);
			(*calls)++;
			if (sent < 0) {
				if (errno == EINTR)
					continue;
				sent = 0;
			}
			start += sent;
			if (start < end) { /* the copy at start failed: skip it */
				refused++;
				start++;
			}
		}
	}
	return refused;
}
