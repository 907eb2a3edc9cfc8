/* One decode step of a Qwen2/Qwen3 decoder stack on the CPU, for batches of one new row per sequence.
 *
 * Why native: a decode step is a chain of matrix-vector products whose cost is reading the weights
 * once (1.1 GB per step for the 0.6B SpeechLM in bfloat16). PyTorch's CPU kernels read those bytes at
 * about half of this machine's bandwidth for a one-row input, and the ~40 small tensor ops per layer
 * add milliseconds of dispatch. Here a whole stack runs in one OpenMP region: each weight row is
 * streamed once per step and used for every sequence of the batch, activations stay in float32.
 *
 * Weights: float32, bfloat16 (widened to float32 on the fly), or int8 with a float32 scale per
 * output row (activations are then quantised per vector to unsigned 8 bit, zero point 128, and the
 * products run through AVX-512 VNNI where the compiler targets it). The KV cache is the caller's
 * (B, n_kv, capacity, head_dim) float32 or bfloat16 storage; sequence b writes its new key at slot
 * pos[b] and attends to slots 0..pos[b]; its RoPE position is rope_pos[b] (the same unless the caller
 * keeps a window of the cache, see generation/speech/runner.py).
 *
 * Instruction sets (Stack.isa): the dot products have AVX-512, AVX2+FMA and plain-C versions
 * (vec_dot.h), and bfloat16 matrices an AMX tile path (amx_matvec.h); ISA_AUTO takes the widest the
 * CPU has, and mgm_isa_supported() tells the caller which ones it may time against each other.
 *
 * Layout contract with mgm_omni/generation/native_step.py (all integers int64, all pointers 8 bytes):
 * qkv rows are [q (n_heads*d); k (n_kv*d); v (n_kv*d)] and gate_up rows [gate (inter); up (inter)]; one
 * task computes gate row i and up row i together and yields activation i.
 */
#define _GNU_SOURCE /* syscall() for the AMX permission request */
#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include "vec_dot.h"
#include "amx_matvec.h"
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#include <immintrin.h>
#define MGM_VNNI 1
#endif

enum { W_F32 = 0, W_BF16 = 1, W_I8 = 2 };

typedef struct {
    int64_t type, n, k;
    const void *w;        /* (n, k) row-major */
    const float *scale;   /* int8: (n,) dequantisation scale per row */
    const int32_t *wsum;  /* int8: (n,) sum of each row's int8 values (for the activation zero point) */
    const float *bias;    /* (n,) or NULL */
} Mat;

typedef struct {
    const float *in_norm, *post_norm, *q_norm, *k_norm; /* q/k norms NULL when the stack has none */
    Mat qkv, o, gate_up, down;
    void *k_cache, *v_cache;
} Layer;

typedef struct {
    int64_t n_layers, hidden, n_heads, n_kv, head_dim, inter, capacity, kv_type, quantized;
    double eps;
    const float *inv_freq;   /* (head_dim / 2,) */
    const float *final_norm; /* (hidden,) or NULL */
    Layer *layers;
    int64_t isa;             /* ISA_* (vec_dot.h); ISA_AUTO = the widest available */
} Stack;

/* Whether instruction set `isa` can run here (ISA_AUTO and ISA_GENERIC always can). */
int mgm_isa_supported(int64_t isa) {
    switch (isa) {
    case ISA_AUTO:
    case ISA_GENERIC: return 1;
#if defined(__x86_64__)
    case ISA_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case ISA_AVX512: return __builtin_cpu_supports("avx512f");
    case ISA_AMX: return __builtin_cpu_supports("avx512f") && amx_usable();
#endif
    default: return 0;
    }
}

static int resolve_isa(int64_t isa) {
    if (isa != ISA_AUTO) return mgm_isa_supported(isa) ? (int)isa : ISA_GENERIC;
    if (mgm_isa_supported(ISA_AVX512)) return ISA_AVX512;
    if (mgm_isa_supported(ISA_AVX2)) return ISA_AVX2;
    return ISA_GENERIC;
}

static inline int32_t dot_u8s8(const uint8_t *x, const int8_t *w, int64_t k) {
    int64_t i = 0;
    int32_t acc = 0;
#ifdef MGM_VNNI
    __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
    for (; i + 128 <= k; i += 128) {
        a0 = _mm512_dpbusd_epi32(a0, _mm512_loadu_si512(x + i), _mm512_loadu_si512(w + i));
        a1 = _mm512_dpbusd_epi32(a1, _mm512_loadu_si512(x + i + 64), _mm512_loadu_si512(w + i + 64));
    }
    for (; i + 64 <= k; i += 64)
        a0 = _mm512_dpbusd_epi32(a0, _mm512_loadu_si512(x + i), _mm512_loadu_si512(w + i));
    acc = _mm512_reduce_add_epi32(_mm512_add_epi32(a0, a1));
#endif
    for (; i < k; i++) acc += (int32_t)x[i] * (int32_t)w[i];
    return acc;
}


/* The team of one parallel region. Its barrier spins briefly, then yields: OpenMP's own barrier sleeps
 * on a futex when OMP_WAIT_POLICY=PASSIVE (as this project sets it for PyTorch), which costs tens of
 * microseconds per wake-up, and a step crosses ~8 barriers per layer. */
typedef struct {
    atomic_int count, phase;
    int size;
} Barrier;

typedef struct {
    Barrier *bar;
    int tid, size, phase;
    int isa;            /* resolved ISA_* */
    dot_f32_fn dot_f32;
    dot_bf16_fn dot_bf16;
    uint16_t *xp;       /* AMX activation tiles (shared by the team), or NULL */
} Team;

static void team_init(Team *t, Barrier *bar, int isa, uint16_t *xp) {
    t->bar = bar;
    t->tid = omp_get_thread_num();
    t->size = omp_get_num_threads();
    t->phase = 0;
    t->isa = isa;
    t->dot_f32 = pick_dot_f32(isa);
    t->dot_bf16 = pick_dot_bf16(isa);
    t->xp = xp;
    if (isa == ISA_AMX) amx_configure();
}

static void team_sync(Team *t) {
    if (t->size == 1) return;
    const int next = t->phase + 1;
    t->phase = next;
    if (atomic_fetch_add(&t->bar->count, 1) == t->size - 1) {
        atomic_store(&t->bar->count, 0);
        atomic_store(&t->bar->phase, next);
        return;
    }
    for (long spins = 0; atomic_load(&t->bar->phase) != next; spins++) {
        if (spins < 20000) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        } else {
            sched_yield();
        }
    }
}

/* This member's share [lo, hi) of n items. */
static inline void team_range(const Team *t, int64_t n, int64_t *lo, int64_t *hi) {
    *lo = n * t->tid / t->size;
    *hi = n * (t->tid + 1) / t->size;
}

/* Activations of one matrix input, per sequence: float32 values and, for int8 weights, their u8 codes. */
typedef struct {
    const float *x;   /* (B, ld) */
    int64_t ld;
    const uint8_t *q; /* (B, qld) u8 codes or NULL */
    int64_t qld;
    const float *qs;  /* (B,) code scales */
} Input;

static inline float row_dot(const Team *t, const Mat *m, int64_t n, const Input *in, int64_t b) {
    const float *x = in->x + b * in->ld;
    switch (m->type) {
    case W_BF16: return t->dot_bf16((const uint16_t *)m->w + n * m->k, x, m->k);
    case W_I8: {
        int32_t s = dot_u8s8(in->q + b * in->qld, (const int8_t *)m->w + n * m->k, m->k);
        return (float)(s - 128 * m->wsum[n]) * in->qs[b] * m->scale[n];
    }
    default: return t->dot_f32((const float *)m->w + n * m->k, x, m->k);
    }
}

/* y[b, n] for rows [lo, hi) with the dot products. */
static void rows_dot(const Team *t, const Mat *m, int64_t lo, int64_t hi, int64_t B, const Input *in, float *y,
                     int64_t ldy) {
    for (int64_t n = lo; n < hi; n++) {
        for (int64_t b = 0; b < B; b++) {
            float v = row_dot(t, m, n, in, b);
            y[b * ldy + n] = m->bias ? v + m->bias[n] : v;
        }
    }
}

static inline int use_amx(const Team *t, const Mat *m, int64_t B) {
    return t->isa == ISA_AMX && t->xp && m->type == W_BF16 && amx_fits(m->k, B) && m->n >= 16;
}

/* y[b, n] = m @ x[b] (+ bias), rows split over the team, then a barrier. */
static void matvec(Team *t, const Mat *m, int64_t B, const Input *in, float *y, int64_t ldy) {
    int64_t lo, hi;
#ifdef MGM_AMX_CODE
    if (use_amx(t, m, B)) {
        team_range(t, m->k / 32, &lo, &hi); /* the team packs the activation tiles together */
        amx_pack(in->x, in->ld, B, t->xp, lo, hi);
        team_sync(t);
        const int64_t blocks = m->n / 16;
        team_range(t, blocks, &lo, &hi);
        amx_blocks((const uint16_t *)m->w, m->k, t->xp, lo, hi, B, m->bias, y, ldy);
        if (t->tid == t->size - 1) rows_dot(t, m, blocks * 16, m->n, B, in, y, ldy); /* the < 16 last rows */
        team_sync(t);
        return;
    }
#endif
    team_range(t, m->n, &lo, &hi);
    rows_dot(t, m, lo, hi, B, in, y, ldy);
    team_sync(t);
}

/* act[b, i] = silu(gate_i . x) * (up_i . x); rows are [gate (inter); up (inter)]. `gu` (B, 2 inter) is
 * scratch for the AMX path, which computes all gate and up rows first. */
static void gate_up_act(Team *t, const Mat *m, int64_t B, const Input *in, float *act, int64_t inter, float *gu) {
    int64_t lo, hi;
    if (use_amx(t, m, B)) {
        matvec(t, m, B, in, gu, 2 * inter);
        team_range(t, inter, &lo, &hi);
        for (int64_t i = lo; i < hi; i++) {
            for (int64_t b = 0; b < B; b++) {
                const float g = gu[b * 2 * inter + i], u = gu[b * 2 * inter + inter + i];
                act[b * inter + i] = g / (1.f + expf(-g)) * u;
            }
        }
        team_sync(t);
        return;
    }
    team_range(t, inter, &lo, &hi);
    for (int64_t i = lo; i < hi; i++) {
        for (int64_t b = 0; b < B; b++) {
            float g = row_dot(t, m, i, in, b), u = row_dot(t, m, inter + i, in, b);
            act[b * inter + i] = g / (1.f + expf(-g)) * u;
        }
    }
    team_sync(t);
}

static void quantize_u8(const float *x, int64_t n, uint8_t *q, float *scale) {
    float mx = 0.f;
    for (int64_t i = 0; i < n; i++) mx = fmaxf(mx, fabsf(x[i]));
    float s = mx > 0.f ? mx / 127.f : 1.f, inv = 1.f / s;
    for (int64_t i = 0; i < n; i++) {
        long v = lrintf(x[i] * inv);
        q[i] = (uint8_t)(128 + (v > 127 ? 127 : (v < -127 ? -127 : v)));
    }
    *scale = s;
}

static void rms_norm(const float *x, const float *w, int64_t n, double eps, float *out) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float r = 1.f / sqrtf((float)(ss / n) + (float)eps);
    for (int64_t i = 0; i < n; i++) out[i] = w[i] * (x[i] * r);
}

static void rope(float *x, int64_t d, int64_t pos, const float *inv_freq) {
    int64_t half = d / 2;
    for (int64_t i = 0; i < half; i++) {
        float a = (float)pos * inv_freq[i], c = cosf(a), s = sinf(a);
        float x1 = x[i], x2 = x[i + half];
        x[i] = x1 * c - x2 * s;
        x[i + half] = x2 * c + x1 * s;
    }
}

static inline void cache_put(void *base, int64_t kv_type, int64_t i, float v) {
    if (kv_type) ((uint16_t *)base)[i] = f32_to_bf16(v);
    else ((float *)base)[i] = v;
}

/* Sequence b, kv head g: normalise, rotate and cache its key and value at pos, then attention for the
 * query heads of its group (p: that sequence's score rows, out: its (n_heads * d) attention output). */
static void attend(const Team *team, const Stack *s, const Layer *L, float *row, int64_t g, int64_t b, int64_t pos,
                   int64_t rpos, float *p_all, float *out_all) {
    const int64_t d = s->head_dim, nh = s->n_heads, nkv = s->n_kv, group = nh / nkv, cap = s->capacity;
    float *k = row + nh * d + g * d, *v = row + (nh + nkv) * d + g * d;
    if (L->k_norm) rms_norm(k, L->k_norm, d, s->eps, k);
    rope(k, d, rpos, s->inv_freq);
    const int64_t base = ((b * nkv + g) * cap) * d, n_keys = pos + 1;
    for (int64_t i = 0; i < d; i++) {
        cache_put(L->k_cache, s->kv_type, base + pos * d + i, k[i]);
        cache_put(L->v_cache, s->kv_type, base + pos * d + i, v[i]);
    }
    const float scale = 1.f / sqrtf((float)d);
    for (int64_t hq = g * group; hq < (g + 1) * group; hq++) {
        float *q = row + hq * d, *p = p_all + hq * (cap + 1), *out = out_all + hq * d;
        if (L->q_norm) rms_norm(q, L->q_norm, d, s->eps, q);
        rope(q, d, rpos, s->inv_freq);
        float mx = -INFINITY;
        for (int64_t t = 0; t < n_keys; t++) {
            const int64_t off = base + t * d;
            const float acc = s->kv_type ? team->dot_bf16((const uint16_t *)L->k_cache + off, q, d)
                                         : team->dot_f32((const float *)L->k_cache + off, q, d);
            p[t] = acc * scale;
            mx = fmaxf(mx, p[t]);
        }
        float sum = 0.f;
        for (int64_t t = 0; t < n_keys; t++) sum += (p[t] = expf(p[t] - mx));
        const float inv = 1.f / sum;
        for (int64_t i = 0; i < d; i++) out[i] = 0.f;
        for (int64_t t = 0; t < n_keys; t++) {
            const float w = p[t] * inv;
            const int64_t off = base + t * d;
            if (s->kv_type) {
                const uint16_t *vc = (const uint16_t *)L->v_cache + off;
#pragma omp simd
                for (int64_t i = 0; i < d; i++) out[i] += w * bf16_to_f32(vc[i]);
            } else {
                const float *vc = (const float *)L->v_cache + off;
#pragma omp simd
                for (int64_t i = 0; i < d; i++) out[i] += w * vc[i];
            }
        }
    }
}

/* Work floats a step needs for a batch of B (the caller allocates them). */
int64_t mgm_work_floats(const Stack *s, int64_t B) {
    int64_t d = s->head_dim, qkv = (s->n_heads + 2 * s->n_kv) * d, wide = s->hidden;
    if (s->n_heads * d > wide) wide = s->n_heads * d;
    if (s->inter > wide) wide = s->inter;
    /* xn, qkv, attention out, act, tmp, codes (bytes in float slots), scales, scores, then the AMX
     * scratch: gate/up rows (B, 2 inter) and the activation tiles (16 bf16 per input = 8 floats) */
    return B * (wide + qkv + s->n_heads * d + s->inter + s->hidden + wide / 4 + 1 + 1) +
           B * s->n_heads * (s->capacity + 1) + B * 2 * s->inter + 8 * wide + 16;
}

/* One new row per sequence through every layer: h (B, hidden) float32 is updated in place.
 * pos[b] is the cache slot written (keys 0..pos[b] are attended), rope_pos[b] the RoPE position
 * (NULL: pos). Returns 0, or -1 on a bad position. */
int mgm_stack_step(const Stack *s, int64_t B, const int64_t *pos, const int64_t *rope_pos, float *h, float *work,
                   int64_t threads) {
    if (!rope_pos) rope_pos = pos;
    for (int64_t b = 0; b < B; b++)
        if (pos[b] < 0 || pos[b] >= s->capacity) return -1;
    const int64_t H = s->hidden, d = s->head_dim, nh = s->n_heads, nkv = s->n_kv, I = s->inter;
    int64_t wide = H;
    if (nh * d > wide) wide = nh * d;
    if (I > wide) wide = I;
    const int64_t qkv_n = (nh + 2 * nkv) * d;
    float *xn = work, *qkv = xn + B * wide, *att = qkv + B * qkv_n, *act = att + B * nh * d;
    float *tmp = act + B * I, *codes_f = tmp + B * H, *qs = codes_f + B * (wide / 4 + 1);
    float *scores = qs + B;
    float *gu = scores + B * nh * (s->capacity + 1);
    uint16_t *xp = (uint16_t *)(((uintptr_t)(gu + B * 2 * I) + 63) & ~(uintptr_t)63); /* 64-byte aligned */
    uint8_t *codes = (uint8_t *)codes_f;
    const int quant = (int)s->quantized;
    const int64_t cap = s->capacity;
    const int isa = resolve_isa(s->isa);

    Barrier bar = {0, 0, 1};
#pragma omp parallel num_threads((int)threads)
    {
        Team team;
        team_init(&team, &bar, isa, isa == ISA_AMX ? xp : NULL);
        Team *t = &team;
        int64_t b_lo, b_hi, j_lo, j_hi;
        team_range(t, B, &b_lo, &b_hi);
        team_range(t, B * nkv, &j_lo, &j_hi);
        for (int64_t l = 0; l < s->n_layers; l++) {
            const Layer *L = &s->layers[l];
            /* 1. (previous layer's MLP residual,) input norm and codes */
            for (int64_t b = b_lo; b < b_hi; b++) {
                if (l > 0)
                    for (int64_t i = 0; i < H; i++) h[b * H + i] += tmp[b * H + i];
                rms_norm(h + b * H, L->in_norm, H, s->eps, xn + b * wide);
                if (quant) quantize_u8(xn + b * wide, H, codes + b * wide, qs + b);
            }
            team_sync(t);
            Input in_x = {xn, wide, codes, wide, qs};
            /* 2. q, k, v */
            matvec(t, &L->qkv, B, &in_x, qkv, qkv_n);
            /* 3. per (sequence, kv head): k norm + rope, cache write, then its query heads' attention */
            for (int64_t j = j_lo; j < j_hi; j++) {
                const int64_t b = j / nkv, g = j % nkv;
                float *row = qkv + b * qkv_n;
                attend(t, s, L, row, g, b, pos[b], rope_pos[b], scores + b * nh * (cap + 1), att + b * nh * d);
            }
            team_sync(t);
            if (quant) {
                for (int64_t b = b_lo; b < b_hi; b++) quantize_u8(att + b * nh * d, nh * d, codes + b * wide, qs + b);
                team_sync(t);
            }
            Input in_att = {att, nh * d, codes, wide, qs};
            /* 4. output projection, residual, post norm */
            matvec(t, &L->o, B, &in_att, tmp, H);
            for (int64_t b = b_lo; b < b_hi; b++) {
                for (int64_t i = 0; i < H; i++) h[b * H + i] += tmp[b * H + i];
                rms_norm(h + b * H, L->post_norm, H, s->eps, xn + b * wide);
                if (quant) quantize_u8(xn + b * wide, H, codes + b * wide, qs + b);
            }
            team_sync(t);
            /* 5. SwiGLU MLP (its residual is added at the top of the next layer) */
            gate_up_act(t, &L->gate_up, B, &in_x, act, I, gu);
            if (quant) {
                for (int64_t b = b_lo; b < b_hi; b++) quantize_u8(act + b * I, I, codes + b * wide, qs + b);
                team_sync(t);
            }
            Input in_act = {act, I, codes, wide, qs};
            matvec(t, &L->down, B, &in_act, tmp, H);
        }
        for (int64_t b = b_lo; b < b_hi; b++) {
            for (int64_t i = 0; i < H; i++) h[b * H + i] += tmp[b * H + i];
            if (s->final_norm) rms_norm(h + b * H, s->final_norm, H, s->eps, h + b * H);
        }
        if (isa == ISA_AMX) amx_release();
    }
    return 0;
}

/* y (B, m->n) = m @ x (B, m->k) on its own team (the speech head). */
void mgm_matvec(const Mat *m, int64_t B, const float *x, float *y, uint8_t *codes, float *qs, int64_t threads,
                int64_t isa_choice) {
    if (m->type == W_I8)
        for (int64_t b = 0; b < B; b++) quantize_u8(x + b * m->k, m->k, codes + b * m->k, qs + b);
    Input in = {x, m->k, codes, m->k, qs};
    const int isa = resolve_isa(isa_choice);
    uint16_t *xp = NULL;
    if (isa == ISA_AMX && (xp = aligned_alloc(64, (size_t)((m->k * 32 + 63) / 64 * 64))) == NULL) return;
    Barrier bar = {0, 0, 1};
#pragma omp parallel num_threads((int)threads)
    {
        Team team;
        team_init(&team, &bar, isa, xp);
        matvec(&team, m, B, &in, y, m->n);
        if (isa == ISA_AMX) amx_release();
    }
    free(xp);
}
