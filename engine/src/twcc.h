/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* Transport-wide congestion-control feedback (RTPFB, FMT 15) of one leg: the
 * arrival window and encoder of controller/twcc.py (ArrivalWindow,
 * encode_feedback), byte for byte, so that no per-packet work runs in Python.
 *
 * The window keeps arrivals in a ring of SFTE_TWCC_SLOTS int32 offsets (µs from
 * a base time), indexed by the unwrapped sequence number: 32 KiB per leg. It
 * holds the newest SFTE_TWCC_SLOTS sequence numbers, which covers what the Python
 * window reports as long as the sequence numbers of one round (one feedback to
 * the next) advance by less than SFTE_TWCC_SLOTS - SFTE_TWCC_HISTORY; the data
 * plane passes at most SFTE_ARRIVALS (8192) arrivals per round, so only gaps of
 * thousands of sequence numbers that are no restart go past it. Past it:
 *   - arrivals more than SFTE_TWCC_SLOTS behind the newest are forgotten: a
 *     late one counts as too old, and feedback starts at the oldest slot;
 *   - arrivals more than ~35 minutes (int32 µs) apart in one window: the older
 *     ones are forgotten (reported as not received if reported again).
 * Only one thread may use a window (the controller's, for a leg's window).
 *
 * This header is read by cffi (engine/build.py) like engine.h. */
#ifndef SFTE_TWCC_H
#define SFTE_TWCC_H

#include <stddef.h>
#include <stdint.h>

#define SFTE_TWCC_SLOTS 8192       /* a power of two */
#define SFTE_TWCC_HISTORY 1024     /* HISTORY_PACKETS of controller/twcc.py */
#define SFTE_TWCC_MAX_JUMP 16384   /* MAX_SEQUENCE_JUMP */
#define SFTE_TWCC_MAX_BYTES 1200   /* MAX_FEEDBACK_BYTES */

struct sfte_twcc;

struct sfte_twcc_counts {
	uint64_t duplicates; /* arrivals of a sequence number already known */
	uint64_t too_old;    /* arrivals behind what the window still knows */
};

struct sfte_twcc *sfte_twcc_new(void);
void sfte_twcc_free(struct sfte_twcc *w);
/* Back to a new window's state (the leg lost its feedback target). */
void sfte_twcc_reset(struct sfte_twcc *w);
void sfte_twcc_add(struct sfte_twcc *w, uint16_t seq, int64_t arrival_us);
/* Feedback packets for everything since the last call, back to back in ``out``,
 * their lengths in ``lens``; returns how many (0: nothing new). When ``out`` or
 * ``lens`` is full, sfte_twcc_unfinished() says so and the next call goes on. */
int sfte_twcc_write(struct sfte_twcc *w, uint32_t sender_ssrc, uint32_t media_ssrc,
		    uint8_t *out, size_t cap, uint16_t *lens, int max_packets);
int sfte_twcc_unfinished(const struct sfte_twcc *w);
void sfte_twcc_counts(const struct sfte_twcc *w, struct sfte_twcc_counts *out);

#endif
