/* b64_avx2.h: the bulk of base64 decoding and encoding with AVX2, shared by host/crypto.c
 * (host.crypto, host.file's chunks) and the resource benchmark's floor (bench/res_wire.h,
 * built with cc alone: this header needs nothing but <immintrin.h>). x86-64 with GCC or
 * Clang only; the caller checks the CPU (__builtin_cpu_supports("avx2")) and does the
 * rest (the padded group, the tail) with its own table.
 *
 * It follows aklomp/base64's AVX2 codec (BSD 2-Clause, Copyright (c) 2005-2007 Nick
 * Galbreath, 2015-2017 Wojciech Mula, 2016-2017 Matthieu Darbois, 2013-2022 Alfred Klomp;
 * the whole notice in THIRD_PARTY.md), the algorithm of Muła and Lemire, "Faster Base64
 * Encoding and Decoding using AVX2 Instructions". */
#ifndef CHATHOST_B64_AVX2_H
#define CHATHOST_B64_AVX2_H

#include <immintrin.h>
#include <stddef.h>

/* 32 characters at a time: each character is checked by the classes of its two nibbles
 * (anything outside the alphabet, '=' included, shares a class bit between them), turned
 * into its 6 bits by an offset chosen by its high nibble ('/' apart), and the 32 sextets
 * packed into 24 bytes. Decodes n characters (a multiple of 32) from in into out, which
 * must have 8 bytes of room past the n / 4 * 3 written -> 0 | -1 (a character outside the
 * alphabet). */
__attribute__((target("avx2"))) static inline int b64_avx2_decode(unsigned char *out,
                                                                  const unsigned char *in,
                                                                  size_t n) {
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
    for (size_t i = 0; i < n; i += 32, out += 24) {
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
        _mm256_storeu_si256((__m256i *)out, abc);
    }
    return 0;
}

/* rounds blocks of 24 bytes into 32 characters each. Every load is 32 bytes: the first at
 * in, the next ones 4 bytes before their block (each lane then holds its 12 bytes at
 * offset 4), so in must have 24 * rounds + 8 bytes: (len - 4) / 24 rounds of len >= 32
 * bytes guarantee it (b64_avx2_rounds). */
__attribute__((target("avx2"))) static inline void b64_avx2_encode(char *out,
                                                                   const unsigned char *in,
                                                                   size_t rounds) {
    const __m256i spread = _mm256_set_epi8(10, 11, 9, 10, 7, 8, 6, 7, 4, 5, 3, 4, 1, 2, 0, 1, 14,
                                           15, 13, 14, 11, 12, 10, 11, 8, 9, 7, 8, 5, 6, 4, 5);
    const __m256i lut = _mm256_setr_epi8(65, 71, -4, -4, -4, -4, -4, -4, -4, -4, -4, -4, -19, -16,
                                         0, 0, 65, 71, -4, -4, -4, -4, -4, -4, -4, -4, -4, -4,
                                         -19, -16, 0, 0);
    for (size_t r = 0; r < rounds; r++, out += 32) {
        __m256i src;
        if (r == 0) /* shifted by 4 bytes, as the later loads are */
            src = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)in),
                                              _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6));
        else
            src = _mm256_loadu_si256((const __m256i *)(in + r * 24 - 4));
        __m256i x = _mm256_shuffle_epi8(src, spread);
        __m256i t0 = _mm256_and_si256(x, _mm256_set1_epi32(0x0FC0FC00));
        __m256i t1 = _mm256_mulhi_epu16(t0, _mm256_set1_epi32(0x04000040));
        __m256i t2 = _mm256_and_si256(x, _mm256_set1_epi32(0x003F03F0));
        __m256i t3 = _mm256_mullo_epi16(t2, _mm256_set1_epi32(0x01000010));
        __m256i six = _mm256_or_si256(t1, t3); /* 32 sextets */
        __m256i idx = _mm256_subs_epu8(six, _mm256_set1_epi8(51));
        idx = _mm256_sub_epi8(idx, _mm256_cmpgt_epi8(six, _mm256_set1_epi8(25)));
        _mm256_storeu_si256((__m256i *)out, _mm256_add_epi8(six, _mm256_shuffle_epi8(lut, idx)));
    }
}

/* The rounds b64_avx2_encode may take of len bytes (0 below 32) */
static inline size_t b64_avx2_rounds(size_t len) { return len >= 32 ? (len - 4) / 24 : 0; }

#endif
