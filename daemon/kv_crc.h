/*
 * kv_crc.h — CRC32C (Castagnoli), the checksum of every record, header and
 * hint file. Uses the SSE4.2 crc32 instruction when the CPU has it, a
 * slicing-by-8 table otherwise; both give identical results (tested).
 */
#ifndef KV_CRC_H
#define KV_CRC_H

#include <stddef.h>
#include <stdint.h>

/* Continue a CRC32C: crc is the value returned for the preceding bytes
 * (0 to start). */
uint32_t kv_crc32c(uint32_t crc, const void *buf, size_t len);

/* The portable implementation, exposed for tests. */
uint32_t kv_crc32c_sw(uint32_t crc, const void *buf, size_t len);

#endif
