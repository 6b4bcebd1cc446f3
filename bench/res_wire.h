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
#include <immintrin.h>
/* The floor with the resource role's base64 coders (host/crypto.c: 32 characters at a
 * time with AVX2, aklomp/base64's: BSD 2-Clause, notice in THIRD_PARTY.md), for `FLOOR_CFLAGS=-DRES_FLOOR_AVX2`: how much of the
 * role's lead over the plain floor is the coders. Same results as the plain ones. */
__attribute__((target("avx2"))) static inline long res_b64_decode_simd(const char *in, size_t n, uint8_t *out) {
    const __m256i lut_lo = _mm256_setr_epi8(
        0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x13, 0x1A, 0x1B, 0x1B, 0x1B,
        0x1A, 0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x13, 0x1A, 0x1B, 0x1B,
        0x1B, 0x1A);
    const __m256i lut_hi = _mm256_setr_epi8(
        0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
        0x10, 0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
        0x10, 0x10);
    const __m256i lut_roll = _mm256_setr_epi8(0, 16, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0,
                                              0, 0, 0, 16, 19, 4, -65, -65, -71, -71, 0, 0, 0,
                                              0, 0, 0, 0, 0);
    const __m256i mask_2f = _mm256_set1_epi8(0x2F);
    const __m256i pack = _mm256_setr_epi8(2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1,
                                          2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1);
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 7, 7);
    size_t bulk = n >= 48 ? (n - 16) / 32 * 32 : 0; /* the padded group and 8 bytes of room after */
    uint8_t *o = out;
    for (size_t i = 0; i < bulk; i += 32, o += 24) {
        __m256i str = _mm256_loadu_si256((const __m256i *)(in + i));
        __m256i hi_nib = _mm256_and_si256(_mm256_srli_epi32(str, 4), mask_2f);
        __m256i lo_nib = _mm256_and_si256(str, mask_2f);
        __m256i hi = _mm256_shuffle_epi8(lut_hi, hi_nib);
        __m256i lo = _mm256_shuffle_epi8(lut_lo, lo_nib);
        if (!_mm256_testz_si256(lo, hi)) return -1;
        __m256i eq_2f = _mm256_cmpeq_epi8(str, mask_2f);
        __m256i roll = _mm256_shuffle_epi8(lut_roll, _mm256_add_epi8(eq_2f, hi_nib));
        str = _mm256_add_epi8(str, roll);
        __m256i ab_bc = _mm256_maddubs_epi16(str, _mm256_set1_epi32(0x01400140));
        __m256i abc = _mm256_madd_epi16(ab_bc, _mm256_set1_epi32(0x00011000));
        abc = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(abc, pack), lanes);
        _mm256_storeu_si256((__m256i *)o, abc);
    }
    long rest = res_b64_decode(in + bulk, n - bulk, o);
    return rest < 0 ? -1 : (long)(o - out) + rest;
}
#define res_b64_decode_chunk res_b64_decode_simd

/* And its encoder (host/crypto.c's b64_encode_avx2): 24 bytes into 32 characters at a time
 * while 8 more bytes can be read, the rest by res_b64_encode. */
__attribute__((target("avx2"))) static inline size_t res_b64_encode_simd(const uint8_t *in, size_t n, char *out) {
    const __m256i spread = _mm256_set_epi8(10, 11, 9, 10, 7, 8, 6, 7, 4, 5, 3, 4, 1, 2, 0, 1, 14,
                                           15, 13, 14, 11, 12, 10, 11, 8, 9, 7, 8, 5, 6, 4, 5);
    const __m256i lut = _mm256_setr_epi8(65, 71, -4, -4, -4, -4, -4, -4, -4, -4, -4, -4, -19, -16,
                                         0, 0, 65, 71, -4, -4, -4, -4, -4, -4, -4, -4, -4, -4,
                                         -19, -16, 0, 0);
    size_t rounds = n >= 32 ? (n - 4) / 24 : 0;
    char *o = out;
    for (size_t r = 0; r < rounds; r++, o += 32) {
        __m256i src;
        if (r == 0)
            src = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)in),
                                              _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6));
        else
            src = _mm256_loadu_si256((const __m256i *)(in + r * 24 - 4));
        __m256i x = _mm256_shuffle_epi8(src, spread);
        __m256i t1 = _mm256_mulhi_epu16(_mm256_and_si256(x, _mm256_set1_epi32(0x0FC0FC00)),
                                        _mm256_set1_epi32(0x04000040));
        __m256i t3 = _mm256_mullo_epi16(_mm256_and_si256(x, _mm256_set1_epi32(0x003F03F0)),
                                        _mm256_set1_epi32(0x01000010));
        __m256i six = _mm256_or_si256(t1, t3);
        __m256i idx = _mm256_subs_epu8(six, _mm256_set1_epi8(51));
        idx = _mm256_sub_epi8(idx, _mm256_cmpgt_epi8(six, _mm256_set1_epi8(25)));
        _mm256_storeu_si256((__m256i *)o, _mm256_add_epi8(six, _mm256_shuffle_epi8(lut, idx)));
    }
    return (size_t)(o - out) + res_b64_encode(in + rounds * 24, n - rounds * 24, o);
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
