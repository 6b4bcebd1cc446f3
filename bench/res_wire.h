/* bench/res_wire.h: what bench/res_load.c and bench/res_floor.c share about the resource
 * channel (docs/protocol.md, Season 2 client): the 6-byte frame header [msg_id u16 BE]
 * [body_len u32 BE], base64 (table-driven, so the floor pays what a plain C server pays,
 * not a constant-time codec's price), and lookups of one field in a flat JSON object as
 * the client and the server write them. Header-only: each program is one `cc` command. */
#ifndef RES_WIRE_H
#define RES_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define RES_HEADER 6
#define RES_CHUNK 32768 /* raw bytes per chunk (the client's MAX_FILE_LEN) */
#define RES_B64_CHUNK (((RES_CHUNK + 2) / 3) * 4)

static inline void res_put_header(uint8_t *p, uint16_t id, uint32_t len) {
    p[0] = (uint8_t)(id >> 8);
    p[1] = (uint8_t)id;
    p[2] = (uint8_t)(len >> 24);
    p[3] = (uint8_t)(len >> 16);
    p[4] = (uint8_t)(len >> 8);
    p[5] = (uint8_t)len;
}

static inline uint16_t res_get_id(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static inline uint32_t res_get_len(const uint8_t *p) {
    return (uint32_t)p[2] << 24 | (uint32_t)p[3] << 16 | (uint32_t)p[4] << 8 | p[5];
}

static const char res_b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Encodes n bytes into out (room for 4 * ceil(n / 3) bytes); returns the length written. */
static inline size_t res_b64_encode(const uint8_t *in, size_t n, char *out) {
    char *o = out;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        *o++ = res_b64_alphabet[v >> 18];
        *o++ = res_b64_alphabet[(v >> 12) & 63];
        *o++ = res_b64_alphabet[(v >> 6) & 63];
        *o++ = res_b64_alphabet[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
        *o++ = res_b64_alphabet[v >> 18];
        *o++ = res_b64_alphabet[(v >> 12) & 63];
        *o++ = i + 1 < n ? res_b64_alphabet[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    return (size_t)(o - out);
}

/* Decodes n base64 characters (padded, no whitespace) into out (room for n / 4 * 3 bytes);
 * returns the byte count, or -1 for anything that is not base64. */
static inline long res_b64_decode(const char *in, size_t n, uint8_t *out) {
    static int8_t rev[256];
    if (!rev['B']) { /* 'A' maps to 0, so 'B' tells whether the table is filled */
        memset(rev, -1, sizeof rev);
        for (int k = 0; k < 64; k++) rev[(uint8_t)res_b64_alphabet[k]] = (int8_t)k;
    }
    if (n % 4 != 0) return -1;
    uint8_t *o = out;
    for (size_t i = 0; i < n; i += 4) {
        int a = rev[(uint8_t)in[i]], b = rev[(uint8_t)in[i + 1]];
        int c = rev[(uint8_t)in[i + 2]], d = rev[(uint8_t)in[i + 3]];
        int last = i + 4 == n;
        if (a < 0 || b < 0) return -1;
        if (last && in[i + 2] == '=' && in[i + 3] == '=') {
            *o++ = (uint8_t)(a << 2 | b >> 4);
            break;
        }
        if (last && in[i + 3] == '=' && c >= 0) {
            *o++ = (uint8_t)(a << 2 | b >> 4);
            *o++ = (uint8_t)(b << 4 | c >> 2);
            break;
        }
        if (c < 0 || d < 0) return -1;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        *o++ = (uint8_t)(v >> 16);
        *o++ = (uint8_t)(v >> 8);
        *o++ = (uint8_t)v;
    }
    return (long)(o - out);
}

#ifdef RES_FLOOR_AVX2
#include "../host/b64_avx2.h"
/* The floor with the resource role's base64 coders (host/b64_avx2.h: AVX2, aklomp/base64's,
 * BSD 2-Clause, notice in THIRD_PARTY.md), for `FLOOR_CFLAGS=-DRES_FLOOR_AVX2`: how much of
 * the role's lead over the plain floor is the coders. Same results as the plain ones. */
static inline long res_b64_decode_simd(const char *in, size_t n, uint8_t *out) {
    size_t bulk = n >= 48 ? (n - 16) / 32 * 32 : 0; /* the padded group and 8 bytes of room after */
    if (b64_avx2_decode(out, (const unsigned char *)in, bulk) != 0) return -1;
    uint8_t *o = out + bulk / 4 * 3;
    long rest = res_b64_decode(in + bulk, n - bulk, o);
    return rest < 0 ? -1 : (long)(o - out) + rest;
}
#define res_b64_decode_chunk res_b64_decode_simd

/* And the encoder: 24 bytes into 32 characters at a time, the rest by res_b64_encode. */
static inline size_t res_b64_encode_simd(const uint8_t *in, size_t n, char *out) {
    size_t rounds = b64_avx2_rounds(n);
    b64_avx2_encode(out, in, rounds);
    return rounds * 32 + res_b64_encode(in + rounds * 24, n - rounds * 24, out + rounds * 32);
}
#define res_b64_encode_chunk res_b64_encode_simd
#else
#define res_b64_decode_chunk res_b64_decode
#define res_b64_encode_chunk res_b64_encode
#endif

/* The payload size of n base64 characters, without decoding them. */
static inline size_t res_b64_size(const char *in, size_t n) {
    if (n < 4) return 0;
    return n / 4 * 3 - (in[n - 1] == '=') - (in[n - 2] == '=');
}

/* The raw value of "key" in a flat JSON object: *val points at its first character (a
 * quote for a string), *vlen spans the string with its quotes, or the number/true/false.
 * Returns 0, or -1 when the key is missing. Keys are matched with their quotes, so "seq"
 * never matches "last_seq"; values of these messages hold no escaped quotes (names are
 * checked, data is base64). */
static inline int res_json_raw(const char *body, size_t len, const char *key, const char **val, size_t *vlen) {
    char pat[40];
    size_t kl = strlen(key);
    if (kl + 2 >= sizeof pat) return -1;
    pat[0] = '"';
    memcpy(pat + 1, key, kl);
    pat[kl + 1] = '"';
    const char *end = body + len, *p = body;
    while ((p = memmem(p, (size_t)(end - p), pat, kl + 2)) != NULL) {
        const char *q = p + kl + 2;
        while (q < end && (*q == ' ' || *q == '\n' || *q == '\t' || *q == '\r')) q++;
        if (q < end && *q == ':') {
            q++;
            while (q < end && (*q == ' ' || *q == '\n' || *q == '\t' || *q == '\r')) q++;
            const char *v = q;
            if (q < end && *q == '"') {
                const char *close = memchr(q + 1, '"', (size_t)(end - q - 1));
                if (!close) return -1;
                q = close + 1;
            } else {
                while (q < end && *q != ',' && *q != '}' && *q != ' ' && *q != '\n') q++;
            }
            *val = v;
            *vlen = (size_t)(q - v);
            return 0;
        }
        p = q;
    }
    return -1;
}

/* The integer value of "key", written as a number or as a decimal string ("trans_size":
 * "32768" and "seq": 1 both read). Returns 0, or -1 when missing or not a number. */
static inline int res_json_int(const char *body, size_t len, const char *key, long long *out) {
    const char *v;
    size_t n;
    if (res_json_raw(body, len, key, &v, &n) != 0) return -1;
    if (n >= 2 && v[0] == '"') {
        v++;
        n -= 2;
    }
    if (n == 0 || n > 20) return -1;
    char tmp[24];
    memcpy(tmp, v, n);
    tmp[n] = '\0';
    char *e;
    long long x = strtoll(tmp, &e, 10);
    if (*e != '\0') return -1;
    *out = x;
    return 0;
}

/* The contents of the string "key" (without quotes). Returns 0, or -1 when missing or not
 * a string. */
static inline int res_json_str(const char *body, size_t len, const char *key, const char **s, size_t *slen) {
    const char *v;
    size_t n;
    if (res_json_raw(body, len, key, &v, &n) != 0 || n < 2 || v[0] != '"') return -1;
    *s = v + 1;
    *slen = n - 2;
    return 0;
}

#endif
