/*
 * kv_format.h — the on-disk byte layout of segments, records and hint files
 * (documented byte by byte in daemon/FORMAT.md). Pure functions: encoding,
 * decoding and checking; no I/O. All integers are little-endian.
 *
 * Invariants:
 *  1. A decoded record is only reported valid after its CRC32C checked; a
 *     length field is only used, before that, to bound how many bytes the
 *     CRC covers, and only after it was checked against the format limits.
 *  2. Record size = KV_REC_HDR + key length + value length.
 */
#ifndef KV_FORMAT_H
#define KV_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#define KV_FORMAT_VERSION 1u

#define KV_SEG_HDR 32u  /* segment file header */
#define KV_REC_HDR 24u  /* record header before key and value */
#define KV_HINT_HDR 16u /* hint file header */
#define KV_HINT_ENT 24u /* hint entry before its key */
#define KV_HINT_TRL 16u /* hint file trailer */

#define KV_SEG_MAGIC "KVD-SEG\n"
#define KV_HINT_MAGIC "KVD-HNT\n"
#define KV_HINT_END 0x4544564bu /* "KVDE" */

enum kv_rec_type { KV_REC_PUT = 1, KV_REC_DEL = 2, KV_REC_COMMIT = 3 };

#define KV_RF_BATCH 0x01u      /* record belongs to a batch closed by a COMMIT */
#define KV_RF_CODEC_MASK 0x70u /* value codec, 0 = none (reserved for compression) */
#define KV_RF_KNOWN (KV_RF_BATCH | KV_RF_CODEC_MASK)

struct kv_rec {
	uint32_t crc;
	uint8_t type;
	uint8_t flags;
	uint32_t klen;
	uint32_t vlen;
	uint64_t seq;
	uint32_t expiry; /* absolute unix seconds, 0 = none */
	const uint8_t *key;   /* point into the decoded buffer */
	const uint8_t *value;
	uint32_t size;        /* KV_REC_HDR + klen + vlen */
};

enum kv_dec { KV_DEC_OK = 0, KV_DEC_SHORT = 1, KV_DEC_BAD = 2 };

static inline void kv_put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}
static inline void kv_put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void kv_put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t kv_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}
static inline uint32_t kv_get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t kv_get64(const uint8_t *p)
{
	return (uint64_t)kv_get32(p) | (uint64_t)kv_get32(p + 4) << 32;
}

/* Encode a whole record into out (KV_REC_HDR + klen + vlen bytes), CRC
 * included. klen must be 1..KV_MAX_KEY, vlen <= KV_MAX_VALUE. */
void kv_rec_encode(uint8_t *out, uint8_t type, uint8_t flags, uint64_t seq, uint32_t expiry,
		   const void *key, uint32_t klen, const void *val, uint32_t vlen);

/* Decode the record at p with avail bytes readable. KV_DEC_SHORT: the
 * header or body runs past avail; KV_DEC_BAD: impossible fields or a CRC
 * mismatch. r is filled only on KV_DEC_OK. */
int kv_rec_decode(const uint8_t *p, size_t avail, struct kv_rec *r);

/* Check only the header fields (no CRC); sets *size on success. */
int kv_rec_peek_size(const uint8_t *p, size_t avail, uint32_t *size);

/* Segment header. */
void kv_seg_hdr_encode(uint8_t out[KV_SEG_HDR], uint32_t seg_id, uint64_t created);
/* 0, KV_ECORRUPT (bad magic or CRC) or KV_EVERSION. */
int kv_seg_hdr_decode(const uint8_t in[KV_SEG_HDR], uint32_t *seg_id, uint32_t *version);

/* Hint entries: encode one entry (KV_HINT_ENT + klen bytes). */
#define KV_HF_TOMBSTONE 0x01u
void kv_hint_ent_encode(uint8_t *out, uint64_t seq, uint32_t expiry, uint32_t klen,
			uint8_t flags, uint32_t offset, uint32_t size, const void *key);
void kv_hint_hdr_encode(uint8_t out[KV_HINT_HDR], uint32_t seg_id);

#endif
