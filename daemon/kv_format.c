/*
 * kv_format.c — encoding and checked decoding of the on-disk structures.
 * See kv_format.h and FORMAT.md.
 */
#include "kv_format.h"

#include "kv_crc.h"
#include "kv_engine.h"

#include <string.h>

void kv_rec_encode(uint8_t *out, uint8_t type, uint8_t flags, uint64_t seq, uint32_t expiry,
		   const void *key, uint32_t klen, const void *val, uint32_t vlen)
{
	out[4] = type;
	out[5] = flags;
	kv_put16(out + 6, (uint16_t)(klen - 1));
	kv_put64(out + 8, seq);
	kv_put32(out + 16, expiry);
	kv_put32(out + 20, vlen);
	memcpy(out + KV_REC_HDR, key, klen);
	if (vlen)
		memcpy(out + KV_REC_HDR + klen, val, vlen);
	kv_put32(out, kv_crc32c(0, out + 4, KV_REC_HDR - 4 + klen + vlen));
}

int kv_rec_peek_size(const uint8_t *p, size_t avail, uint32_t *size)
{
	if (avail < KV_REC_HDR)
		return KV_DEC_SHORT;
	uint8_t type = p[4], flags = p[5];
	uint32_t klen = (uint32_t)kv_get16(p + 6) + 1u, vlen = kv_get32(p + 20);
	if (type < KV_REC_PUT || type > KV_REC_COMMIT || (flags & ~KV_RF_KNOWN))
		return KV_DEC_BAD;
	if (vlen > KV_MAX_VALUE || (type != KV_REC_PUT && vlen != 0))
		return KV_DEC_BAD;
	*size = KV_REC_HDR + klen + vlen;
	return KV_DEC_OK;
}

int kv_rec_decode(const uint8_t *p, size_t avail, struct kv_rec *r)
{
	uint32_t size;
	int rc = kv_rec_peek_size(p, avail, &size);
	if (rc != KV_DEC_OK)
		return rc;
	if (size > avail)
		return KV_DEC_SHORT;
	uint32_t crc = kv_get32(p);
	if (kv_crc32c(0, p + 4, size - 4) != crc)
		return KV_DEC_BAD;
	r->crc = crc;
	r->type = p[4];
	r->flags = p[5];
	r->klen = (uint32_t)kv_get16(p + 6) + 1u;
	r->seq = kv_get64(p + 8);
	r->expiry = kv_get32(p + 16);
	r->vlen = kv_get32(p + 20);
	r->key = p + KV_REC_HDR;
	r->value = p + KV_REC_HDR + r->klen;
	r->size = size;
	return KV_DEC_OK;
}

void kv_seg_hdr_encode(uint8_t out[KV_SEG_HDR], uint32_t seg_id, uint64_t created)
{
	memset(out, 0, KV_SEG_HDR);
	memcpy(out, KV_SEG_MAGIC, 8);
	kv_put32(out + 8, KV_FORMAT_VERSION);
	kv_put32(out + 12, seg_id);
	kv_put64(out + 16, created);
	kv_put32(out + 24, 0);
	kv_put32(out + 28, kv_crc32c(0, out, 28));
}

int kv_seg_hdr_decode(const uint8_t in[KV_SEG_HDR], uint32_t *seg_id, uint32_t *version)
{
	if (memcmp(in, KV_SEG_MAGIC, 8) != 0)
		return KV_ECORRUPT;
	if (kv_crc32c(0, in, 28) != kv_get32(in + 28))
		return KV_ECORRUPT;
	*version = kv_get32(in + 8);
	*seg_id = kv_get32(in + 12);
	return *version == KV_FORMAT_VERSION ? 0 : KV_EVERSION;
}

void kv_hint_ent_encode(uint8_t *out, uint64_t seq, uint32_t expiry, uint32_t klen,
			uint8_t flags, uint32_t offset, uint32_t size, const void *key)
{
	kv_put64(out, seq);
	kv_put32(out + 8, expiry);
	kv_put16(out + 12, (uint16_t)(klen - 1));
	out[14] = flags;
	out[15] = 0;
	kv_put32(out + 16, offset);
	kv_put32(out + 20, size);
	memcpy(out + KV_HINT_ENT, key, klen);
}

void kv_hint_hdr_encode(uint8_t out[KV_HINT_HDR], uint32_t seg_id)
{
	memcpy(out, KV_HINT_MAGIC, 8);
	kv_put32(out + 8, KV_FORMAT_VERSION);
	kv_put32(out + 12, seg_id);
}
