/* Dot products of one weight row with float32 activations, one version per instruction set.
 *
 * A decode step is a chain of matrix-vector products: every weight is read once and used once, so
 * the step is as fast as the weights stream from memory only if the arithmetic keeps up. bfloat16
 * weights must be widened to float32 first (a shift), which compilers vectorise on some machines and
 * not on others (a 2-core Xeon ran the plain C loop at 5 GB/s). These versions say it explicitly:
 * AVX-512 (16 lanes) and AVX2 + FMA (8 lanes), four independent accumulators each so the FMA latency
 * is hidden. Each is compiled with a target attribute and chosen at run time (``isa_supported``), so
 * one build runs on any x86-64 CPU. Results differ between versions only in summation order.
 */
#ifndef MGM_VEC_DOT_H
#define MGM_VEC_DOT_H

#include <stdint.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

enum { ISA_AUTO = 0, ISA_GENERIC = 1, ISA_AVX2 = 2, ISA_AVX512 = 3, ISA_AMX = 4 };

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) { /* round to nearest even, as torch's .to(bfloat16) */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float dot_f32_generic(const float *w, const float *x, int64_t k) {
    float acc = 0.f;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < k; i++) acc += w[i] * x[i];
    return acc;
}

static float dot_bf16_generic(const uint16_t *w, const float *x, int64_t k) {
    float acc = 0.f;
#pragma omp simd reduction(+ : acc)
    for (int64_t i = 0; i < k; i++) acc += bf16_to_f32(w[i]) * x[i];
    return acc;
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static float dot_f32_avx2(const float *w, const float *x, int64_t k) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 32 <= k; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= k; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    float acc = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < k; i++) acc += w[i] * x[i];
    return acc;
}

/* 8 bfloat16 -> 8 float32: zero-extend to 32 bits and shift into the high half. */
__attribute__((target("avx2,fma"))) static inline __m256 widen8(const uint16_t *w) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)w));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

__attribute__((target("avx2,fma"))) static float dot_bf16_avx2(const uint16_t *w, const float *x, int64_t k) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 32 <= k; i += 32) {
        a0 = _mm256_fmadd_ps(widen8(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(widen8(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(widen8(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(widen8(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= k; i += 8) a0 = _mm256_fmadd_ps(widen8(w + i), _mm256_loadu_ps(x + i), a0);
    float acc = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < k; i++) acc += bf16_to_f32(w[i]) * x[i];
    return acc;
}

__attribute__((target("avx512f"))) static float dot_f32_avx512(const float *w, const float *x, int64_t k) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 64 <= k; i += 64) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 32), _mm512_loadu_ps(x + i + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 48), _mm512_loadu_ps(x + i + 48), a3);
    }
    for (; i + 16 <= k; i += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
    float acc = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    for (; i < k; i++) acc += w[i] * x[i];
    return acc;
}

__attribute__((target("avx512f"))) static inline __m512 widen16(const uint16_t *w) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)w));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

__attribute__((target("avx512f"))) static float dot_bf16_avx512(const uint16_t *w, const float *x, int64_t k) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 64 <= k; i += 64) {
        a0 = _mm512_fmadd_ps(widen16(w + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(widen16(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
        a2 = _mm512_fmadd_ps(widen16(w + i + 32), _mm512_loadu_ps(x + i + 32), a2);
        a3 = _mm512_fmadd_ps(widen16(w + i + 48), _mm512_loadu_ps(x + i + 48), a3);
    }
    for (; i + 16 <= k; i += 16) a0 = _mm512_fmadd_ps(widen16(w + i), _mm512_loadu_ps(x + i), a0);
    float acc = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
    for (; i < k; i++) acc += bf16_to_f32(w[i]) * x[i];
    return acc;
}
#endif

typedef float (*dot_f32_fn)(const float *, const float *, int64_t);
typedef float (*dot_bf16_fn)(const uint16_t *, const float *, int64_t);

/* The vector level the dot products of an ISA choice use (AMX keeps AVX-512 for what is not tiled). */
static inline int vec_level(int isa) {
    if (isa == ISA_AMX) return ISA_AVX512;
    return isa;
}

static inline dot_f32_fn pick_dot_f32(int isa) {
#if defined(__x86_64__)
    switch (vec_level(isa)) {
    case ISA_AVX512: return dot_f32_avx512;
    case ISA_AVX2: return dot_f32_avx2;
    default: break;
    }
#endif
    (void)isa;
    return dot_f32_generic;
}

static inline dot_bf16_fn pick_dot_bf16(int isa) {
#if defined(__x86_64__)
    switch (vec_level(isa)) {
    case ISA_AVX512: return dot_bf16_avx512;
    case ISA_AVX2: return dot_bf16_avx2;
    default: break;
    }
#endif
    (void)isa;
    return dot_bf16_generic;
}

#endif
