/*
 * kv_frame.c — framing and reply packing (see kv_frame.h for invariants).
 */
#include "kv_frame.h"

#include <stdio.h>
#include <string.h>

static uint8_t payload_tag[10]; /* varint of (field number << 3) | 2 */
static size_t payload_tag_len;
static uint32_t method_field, payload_field; /* of kv.Envelope (kv_frame_peek_key) */

int kv_frame_init(char *err, size_t errlen)
{
	const ProtobufCFieldDescriptor *fd =
		protobuf_c_message_descriptor_get_field_by_name(&kv__envelope__descriptor, "payload");
	if (!fd || fd->type != PROTOBUF_C_TYPE_BYTES || fd->label == PROTOBUF_C_LABEL_REPEATED) {
		snprintf(err, errlen, "kv.Envelope has no 'bytes payload' field");
		return -1;
	}
	payload_tag_len = kv_wire_varint_put(payload_tag, ((uint64_t)fd->id << 3) | 2u);
	payload_field = fd->id;
	const ProtobufCFieldDescriptor *md =
		protobuf_c_message_descriptor_get_field_by_name(&kv__envelope__descriptor, "method");
	if (!md || md->type != PROTOBUF_C_TYPE_STRING) {
		snprintf(err, errlen, "kv.Envelope has no 'string method' field");
		return -1;
	}
	method_field = md->id;
	/* kv_frame_peek_key reads the key as field 1 of these requests */
	const ProtobufCMessageDescriptor *reqs[] = { &kv__get_request__descriptor,
						     &kv__put_request__descriptor,
						     &kv__delete_request__descriptor };
	for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
		const ProtobufCFieldDescriptor *k =
			protobuf_c_message_descriptor_get_field_by_name(reqs[i], "key");
		if (!k || k->id != 1 || k->type != PROTOBUF_C_TYPE_BYTES) {
			snprintf(err, errlen, "%s has no 'bytes key = 1' field", reqs[i]->name);
			return -1;
		}
	}
	return 0;
}

int kv_frame_peek(struct evbuffer *in, uint32_t *body_len)
{
	uint8_t h[4];
	size_t have = evbuffer_get_length(in);
	if (have < 4)
		return KV_FRAME_NEED_MORE;
	if (evbuffer_copyout(in, h, 4) != 4)
		return KV_FRAME_NEED_MORE;
	uint32_t n = kv_wire_get_len(h);
	*body_len = n;
	if (n > KV_FRAME_MAX)
		return KV_FRAME_TOO_BIG;
	return have - 4 >= n ? KV_FRAME_READY : KV_FRAME_NEED_MORE;
}

/* Read a varint at *p (below end). 0, or -1 when malformed. */
static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	uint64_t x = 0;
	for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
		uint8_t b = *(*p)++;
		x |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80)) {
			*v = x;
			return 0;
		}
	}
	return -1;
}

/* Find length-delimited field `field` in a message: 1 (*val, *vlen) or 0. */
static int find_bytes(const uint8_t *p, const uint8_t *end, uint64_t field, const uint8_t **val,
		      size_t *vlen)
{
	while (p < end) {
		uint64_t tag, n;
		if (get_varint(&p, end, &tag) < 0)
			return 0;
		switch (tag & 7) {
		case 0:
			if (get_varint(&p, end, &n) < 0)
				return 0;
			break;
		case 1:
			if (end - p < 8)
				return 0;
			p += 8;
			break;
		case 5:
			if (end - p < 4)
				return 0;
			p += 4;
			break;
		case 2:
			if (get_varint(&p, end, &n) < 0 || n > (uint64_t)(end - p))
				return 0;
			if ((tag >> 3) == field) {
				*val = p;
				*vlen = (size_t)n;
				return 1;
			}
			p += n;
			break;
		default:
			return 0;
		}
	}
	return 0;
}

int kv_frame_peek_key(const uint8_t *body, size_t len, const uint8_t **method, size_t *mlen,
		      const uint8_t **key, size_t *klen)
{
	const uint8_t *end = body + len, *payload;
	size_t plen;
	if (!find_bytes(body, end, method_field, method, mlen) ||
	    !find_bytes(body, end, payload_field, &payload, &plen))
		return 0;
	return find_bytes(payload, payload + plen, 1, key, klen);
}

Kv__Envelope *kv_frame_take(struct evbuffer *in, uint32_t body_len, ProtobufCAllocator *alloc)
{
	size_t total = 4 + (size_t)body_len;
	Kv__Envelope *env = NULL;
	unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)total);
	if (p)
		env = kv__envelope__unpack(alloc, body_len, p + 4);
	evbuffer_drain(in, total);
	return env;
}

long long kv_frame_put_reply(struct evbuffer *out, const struct kv_reply *r)
{
	Kv__Envelope env = KV__ENVELOPE__INIT;
	env.id = r->id;
	if (r->method)
		env.method = (char *)r->method; /* pack only reads it */
	env.status_code = r->code;
	if (r->message)
		env.status_message = (char *)r->message;
	env.end_of_stream = r->end_of_stream ? 1 : 0;

	size_t env_sz = kv__envelope__get_packed_size(&env);
	size_t pl_sz = r->payload ? protobuf_c_message_get_packed_size(r->payload) : 0;
	uint64_t body = env_sz;
	if (pl_sz > 0)
		body += payload_tag_len + kv_wire_varint_len(pl_sz) + pl_sz;
	if (body > UINT32_MAX - 4)
		return -1;

	struct evbuffer_iovec vec;
	size_t total = 4 + (size_t)body;
	if (evbuffer_reserve_space(out, (ev_ssize_t)total, &vec, 1) != 1 || vec.iov_len < total)
		return -1;
	uint8_t *p = vec.iov_base;
	kv_wire_put_len(p, (uint32_t)body);
	size_t o = 4;
	o += kv__envelope__pack(&env, p + o);
	if (pl_sz > 0) {
		memcpy(p + o, payload_tag, payload_tag_len);
		o += payload_tag_len;
		o += kv_wire_varint_put(p + o, pl_sz);
		o += protobuf_c_message_pack(r->payload, p + o);
	}
	if (o != total) /* a packed size that lied: never send a torn frame */
		return -1;
	vec.iov_len = total;
	if (evbuffer_commit_space(out, &vec, 1) != 0)
		return -1;
	return (long long)total;
}
