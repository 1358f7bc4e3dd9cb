/* SPDX-License-Identifier: AGPL-3.0-or-later */
/* Transport-wide feedback of one leg (see twcc.h). Every rule here is one of
 * controller/twcc.py, which tests/unit/test_twcc_native.py compares byte for
 * byte: keep the two in step. */

#include <stdlib.h>
#include <string.h>

#include "twcc.h"

#define DELTA_TICK_US 250
#define REFERENCE_TICK_US 64000
#define REFERENCE_MASK 0xFFFFFF
#define SYMBOL_NOT_RECEIVED 0
#define SYMBOL_SMALL_DELTA 1
#define SYMBOL_LARGE_DELTA 2
#define MAX_RUN_LENGTH 0x1FFF
#define MAX_RECEIVED_PER_FEEDBACK 256
#define MAX_STATUS_PER_FEEDBACK 0xFFFF
#define HEADER_BYTES 20 /* RTCP header, SSRCs, base, count, reference, feedback count */
#define PT_RTPFB 205
#define FMT_TRANSPORT_FEEDBACK 15
#define NOT_RECEIVED INT32_MIN

struct sfte_twcc {
	int started;
	int unfinished;     /* the last write ran out of room at next_base */
	int64_t highest;    /* unwrapped, counted from 2^16 on as in Python */
	int64_t next_base;  /* first sequence number the next feedback reports */
	int64_t floor_seq;  /* lowest sequence number still accepted */
	int64_t known_from; /* slots below this one are stale (restart, jump) */
	int64_t base_us;    /* offset_us[] counts from here */
	uint8_t feedback_count;
	struct sfte_twcc_counts counts;
	int32_t offset_us[SFTE_TWCC_SLOTS]; /* NOT_RECEIVED, or arrival - base_us */
};

/* Python's //: rounds towards minus infinity (b > 0). */
static int64_t floor_div(int64_t a, int64_t b)
{
	int64_t q = a / b;

	return a % b < 0 ? q - 1 : q;
}

static int64_t delta_ticks(int64_t arrival_us, int64_t last_us)
{
	return floor_div(arrival_us - last_us + DELTA_TICK_US / 2, DELTA_TICK_US);
}

static int32_t *slot(struct sfte_twcc *w, int64_t seq)
{
	return &w->offset_us[(uint64_t)seq & (SFTE_TWCC_SLOTS - 1)];
}

/* 1 and the arrival time if ``seq`` arrived and is still in the ring. */
static int arrival_of(struct sfte_twcc *w, int64_t seq, int64_t *us)
{
	int32_t offset;

	if (seq < w->known_from || seq > w->highest || seq <= w->highest - SFTE_TWCC_SLOTS)
		return 0;
	offset = *slot(w, seq);
	if (offset == NOT_RECEIVED)
		return 0;
	*us = w->base_us + offset;
	return 1;
}

/* A new base time: offsets that no longer fit 32 bits are forgotten. */
static void rebase(struct sfte_twcc *w, int64_t base_us)
{
	int64_t shift = w->base_us - base_us;

	for (int i = 0; i < SFTE_TWCC_SLOTS; i++) {
		int64_t offset = w->offset_us[i];

		if (offset == NOT_RECEIVED)
			continue;
		offset += shift;
		w->offset_us[i] = offset > NOT_RECEIVED && offset <= INT32_MAX ?
				  (int32_t)offset : NOT_RECEIVED;
	}
	w->base_us = base_us;
}

static void store(struct sfte_twcc *w, int64_t seq, int64_t arrival_us)
{
	int64_t offset = arrival_us - w->base_us;

	if (offset <= NOT_RECEIVED || offset > INT32_MAX) {
		rebase(w, arrival_us);
		offset = 0;
	}
	*slot(w, seq) = (int32_t)offset;
}

static void start_at(struct sfte_twcc *w, int64_t ext)
{
	w->highest = w->next_base = w->known_from = ext;
	w->floor_seq = ext - SFTE_TWCC_HISTORY;
}

struct sfte_twcc *sfte_twcc_new(void)
{
	return calloc(1, sizeof(struct sfte_twcc));
}

void sfte_twcc_free(struct sfte_twcc *w)
{
	free(w);
}

void sfte_twcc_reset(struct sfte_twcc *w)
{
	/* the slots are stale until known_from is set again */
	w->started = 0;
	w->unfinished = 0;
	w->feedback_count = 0;
	memset(&w->counts, 0, sizeof(w->counts));
}

void sfte_twcc_add(struct sfte_twcc *w, uint16_t seq, int64_t arrival_us)
{
	int64_t ext, known;

	if (!w->started) {
		w->started = 1;
		w->base_us = arrival_us;
		start_at(w, 0x10000 + seq); /* unwrapped values stay positive */
		store(w, w->highest, arrival_us);
		return;
	}
	ext = (int64_t)(((uint64_t)seq - (uint64_t)w->highest) & 0xFFFF);
	ext = w->highest + (ext >= 0x8000 ? ext - 0x10000 : ext);
	if (ext > w->highest + SFTE_TWCC_MAX_JUMP || ext < w->floor_seq - SFTE_TWCC_MAX_JUMP) {
		start_at(w, ext); /* the sender restarted its count */
	} else if (ext < w->floor_seq || ext <= w->highest - SFTE_TWCC_SLOTS) {
		w->counts.too_old++;
		return;
	} else if (arrival_of(w, ext, &known)) {
		w->counts.duplicates++;
		return;
	}
	if (ext > w->highest) {
		/* the slots passed over become "not received"; past the ring, all are */
		if (ext - w->highest >= SFTE_TWCC_SLOTS)
			w->known_from = ext;
		else
			for (int64_t s = w->highest + 1; s < ext; s++)
				*slot(w, s) = NOT_RECEIVED;
		w->highest = ext;
	} else if (ext < w->known_from) {
		for (int64_t s = ext + 1; s < w->known_from; s++)
			*slot(w, s) = NOT_RECEIVED;
		w->known_from = ext;
	}
	store(w, ext, arrival_us);
	if (ext < w->next_base)
		w->next_base = ext;
}

/* Packet status chunks of ``symbols`` into ``out`` (NULL: only counted); returns
 * their length. Run length where a symbol repeats at least 7 times, else a
 * vector: 14 one-bit symbols when only 0/1 occur among them, else 7 two-bit. */
static size_t write_chunks(const uint8_t *symbols, size_t n, uint8_t *out)
{
	size_t len = 0, i = 0;

	while (i < n) {
		uint8_t symbol = symbols[i];
		size_t run = 1, k, width;
		uint16_t word;

		while (i + run < n && symbols[i + run] == symbol && run < MAX_RUN_LENGTH)
			run++;
		if (run >= 7) {
			word = (uint16_t)(symbol << 13 | run);
			i += run;
		} else {
			width = n - i < 14 ? n - i : 14;
			for (k = 0; k < width && symbols[i + k] <= SYMBOL_SMALL_DELTA; k++)
				;
			if (k == width) {
				word = 0x8000;
				for (k = 0; k < width; k++)
					word |= symbols[i + k] << (13 - k);
				i += 14;
			} else {
				width = n - i < 7 ? n - i : 7;
				word = 0xC000;
				for (k = 0; k < width; k++)
					word |= symbols[i + k] << (12 - 2 * k);
				i += 7;
			}
		}
		if (out != NULL) {
			out[len] = word >> 8;
			out[len + 1] = word & 0xFF;
		}
		len += 2;
	}
	return len;
}

/* How many statuses from ``base`` the next packet takes (ArrivalWindow._fitting):
 * at most the limits, cut before a delta that does not fit, halved until the
 * packet is small enough (its chunks estimated with every arrival a large delta). */
static int64_t fitting(struct sfte_twcc *w, int64_t base, int64_t count)
{
	uint8_t estimate[SFTE_TWCC_SLOTS];
	int64_t take = count < MAX_STATUS_PER_FEEDBACK ? count : MAX_STATUS_PER_FEEDBACK;
	int64_t received = 0, last = 0, arrival, ticks, i;
	int have_first = 0;

	for (i = 0; i < take; i++) {
		if (!arrival_of(w, base + i, &arrival))
			continue;
		if (!have_first) {
			have_first = 1;
			last = floor_div(arrival, REFERENCE_TICK_US) * REFERENCE_TICK_US;
		}
		received++;
		ticks = delta_ticks(arrival, last);
		/* received keeps counting the one cut off, as Python's does */
		if (received > MAX_RECEIVED_PER_FEEDBACK || ticks < -0x8000 || ticks > 0x7FFF) {
			take = i;
			break;
		}
		last += ticks * DELTA_TICK_US;
	}
	for (i = 0; i < take; i++)
		estimate[i] = arrival_of(w, base + i, &arrival) ? SYMBOL_LARGE_DELTA :
			      SYMBOL_NOT_RECEIVED;
	while (take > 1 && (int64_t)write_chunks(estimate, (size_t)take, NULL) + 2 * received >
			   SFTE_TWCC_MAX_BYTES - HEADER_BYTES) {
		take /= 2;
		received = 0;
		for (i = 0; i < take; i++)
			received += estimate[i] != SYMBOL_NOT_RECEIVED;
	}
	return take > 1 ? take : 1;
}

static void put16(uint8_t *p, uint32_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xFF;
}

static void put32(uint8_t *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p + 2, v & 0xFFFF);
}

/* One packet for ``take`` statuses from ``base`` (encode_feedback) into ``out``;
 * its length, 0 if it needs more than ``room``, -1 if a delta does not fit
 * (fitting() cut before any). */
static int encode(struct sfte_twcc *w, uint32_t sender_ssrc, uint32_t media_ssrc,
		  int64_t base, int64_t take, uint8_t *out, size_t room)
{
	uint8_t symbols[SFTE_TWCC_SLOTS];
	uint8_t deltas[2 * MAX_RECEIVED_PER_FEEDBACK];
	size_t n_deltas = 0, chunks_len, body, padding, len;
	int64_t reference = 0, last, arrival, ticks, i;

	for (i = 0; i < take; i++) {
		if (arrival_of(w, base + i, &arrival)) {
			reference = floor_div(arrival, REFERENCE_TICK_US);
			break;
		}
	}
	last = reference * REFERENCE_TICK_US;
	for (i = 0; i < take; i++) {
		if (!arrival_of(w, base + i, &arrival)) {
			symbols[i] = SYMBOL_NOT_RECEIVED;
			continue;
		}
		ticks = delta_ticks(arrival, last);
		if (ticks >= 0 && ticks <= 0xFF && n_deltas + 1 <= sizeof(deltas)) {
			symbols[i] = SYMBOL_SMALL_DELTA;
			deltas[n_deltas++] = (uint8_t)ticks;
		} else if (ticks >= -0x8000 && ticks <= 0x7FFF && n_deltas + 2 <= sizeof(deltas)) {
			symbols[i] = SYMBOL_LARGE_DELTA;
			put16(deltas + n_deltas, (uint16_t)ticks);
			n_deltas += 2;
		} else {
			return -1;
		}
		last += ticks * DELTA_TICK_US; /* no drift from rounding */
	}
	chunks_len = write_chunks(symbols, (size_t)take, NULL);
	body = HEADER_BYTES - 4 + chunks_len + n_deltas;
	padding = (4 - (4 + body) % 4) % 4;
	len = 4 + body + padding;
	if (len > room)
		return 0;
	/* RFC 3550: with padding, its last octet counts the padding octets */
	out[0] = 0x80 | (padding ? 0x20 : 0) | FMT_TRANSPORT_FEEDBACK;
	out[1] = PT_RTPFB;
	put16(out + 2, (uint32_t)(len / 4 - 1));
	put32(out + 4, sender_ssrc);
	put32(out + 8, media_ssrc);
	put16(out + 12, (uint32_t)(base & 0xFFFF));
	put16(out + 14, (uint32_t)take);
	put32(out + 16, ((uint32_t)reference & REFERENCE_MASK) << 8 | w->feedback_count);
	write_chunks(symbols, (size_t)take, out + HEADER_BYTES);
	memcpy(out + HEADER_BYTES + chunks_len, deltas, n_deltas);
	if (padding) {
		memset(out + 4 + body, 0, padding - 1);
		out[len - 1] = (uint8_t)padding;
	}
	return (int)len;
}

int sfte_twcc_write(struct sfte_twcc *w, uint32_t sender_ssrc, uint32_t media_ssrc,
		    uint8_t *out, size_t cap, uint16_t *lens, int max_packets)
{
	size_t used = 0;
	int n = 0;

	if (!w->started || w->next_base > w->highest)
		return 0;
	/* what the ring forgot is not reported (see twcc.h) */
	if (w->next_base <= w->highest - SFTE_TWCC_SLOTS)
		w->next_base = w->highest - SFTE_TWCC_SLOTS + 1;
	while (w->next_base <= w->highest && n < max_packets) {
		int64_t take = fitting(w, w->next_base, w->highest - w->next_base + 1);
		int len = encode(w, sender_ssrc, media_ssrc, w->next_base, take, out + used,
				 cap - used);

		if (len == 0)
			break;
		if (len > 0) { /* < 0 cannot happen: fitting() cut before such a delta */
			lens[n++] = (uint16_t)len;
			used += (size_t)len;
			w->feedback_count++;
		}
		w->next_base += take;
	}
	w->unfinished = w->next_base <= w->highest;
	if (!w->unfinished) {
		/* forget arrivals more than HISTORY behind the newest (all reported) */
		if (w->floor_seq < w->highest + 1 - SFTE_TWCC_HISTORY)
			w->floor_seq = w->highest + 1 - SFTE_TWCC_HISTORY;
	}
	return n;
}

int sfte_twcc_unfinished(const struct sfte_twcc *w)
{
	return w->unfinished;
}

void sfte_twcc_counts(const struct sfte_twcc *w, struct sfte_twcc_counts *out)
{
	*out = w->counts;
}
