/* bfloat16 weights times the float32 activations of up to 8 sequences on AMX tiles (Intel Sapphire
 * Rapids and later), guarded by a run-time check; the rest of the kernel stays on AVX-512.
 *
 * One TDPBF16PS multiplies a 16 x 32 bf16 weight tile (16 rows of W, read in place: the tile stride is
 * the row length) by a 32 x 16 bf16 tile of activations, accumulating 16 x 16 float32. Activations are
 * float32 here, so each sequence takes two columns: x rounded to bf16 (hi) and the rounding rest
 * (lo = bf16(x - hi)); hi + lo carries ~16 mantissa bits and the sum over the two columns restores a
 * float32-accurate product (weights are exactly bf16). Four accumulator tiles share each activation tile.
 *
 * Linux hands out the tile state only on request (arch_prctl ARCH_REQ_XCOMP_PERM), so `amx_usable`
 * asks once; every thread that computes loads the tile configuration and releases it afterwards.
 * NOTE: written against the Intel SDM and compiled on a machine without AMX; the Python side checks
 * this path against the PyTorch step before ever using it (step_choice.py), so a fault here shows
 * as a rejected candidate, not as wrong speech.
 */
#ifndef MGM_AMX_MATVEC_H
#define MGM_AMX_MATVEC_H

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && (__GNUC__ >= 11 || defined(__clang__))
#define MGM_AMX_CODE 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MGM_ARCH_REQ_XCOMP_PERM 0x1023
#define MGM_XFEATURE_XTILEDATA 18
#define AMX_MAX_SEQ 8

typedef struct {
    uint8_t palette_id, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} TileConfig;

/* 1 when the CPU has AMX-TILE and AMX-BF16 and the kernel granted this process the tile state. */
static int amx_usable(void) {
    static int state = -1;
    if (state >= 0) return state;
    unsigned a, b, c, d;
    state = 0;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && ((d >> 24) & 1u) && ((d >> 22) & 1u))
        state = syscall(SYS_arch_prctl, MGM_ARCH_REQ_XCOMP_PERM, MGM_XFEATURE_XTILEDATA) == 0;
    return state;
}

/* Tiles 0-3: accumulators (16 x 16 float32); 4: activations (16 rows of 16 bf16 pairs); 5: weights. */
__attribute__((target("amx-tile"))) static void amx_configure(void) {
    TileConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette_id = 1;
    for (int i = 0; i < 6; i++) {
        cfg.colsb[i] = 64;
        cfg.rows[i] = 16;
    }
    _tile_loadconfig(&cfg);
}

__attribute__((target("amx-tile"))) static void amx_release(void) { _tile_release(); }

static inline int amx_fits(int64_t k, int64_t B) { return k % 32 == 0 && B >= 1 && B <= AMX_MAX_SEQ; }

/* Activation tiles for k-chunks [kc_lo, kc_hi): xp[kc][r][col][e] = part of x[b][32 kc + 2 r + e],
 * col 2b = bf16(x), col 2b+1 = bf16(x - bf16(x)); unused columns are zero. */
static void amx_pack(const float *x, int64_t ld, int64_t B, uint16_t *xp, int64_t kc_lo, int64_t kc_hi) {
    for (int64_t kc = kc_lo; kc < kc_hi; kc++) {
        for (int r = 0; r < 16; r++) {
            uint16_t *row = xp + (kc * 16 + r) * 32;
            memset(row, 0, 64);
            for (int64_t b = 0; b < B; b++) {
                for (int e = 0; e < 2; e++) {
                    const float v = x[b * ld + kc * 32 + 2 * r + e];
                    const uint16_t hi = f32_to_bf16(v);
                    row[(2 * b) * 2 + e] = hi;
                    row[(2 * b + 1) * 2 + e] = f32_to_bf16(v - bf16_to_f32(hi));
                }
            }
        }
    }
}

/* y[b, 16 blk + i] for the 16-row blocks [blk_lo, blk_hi) of the (n, k) bf16 matrix w. */
__attribute__((target("amx-tile,amx-bf16"))) static void amx_blocks(const uint16_t *w, int64_t k, const uint16_t *xp,
                                                                   int64_t blk_lo, int64_t blk_hi, int64_t B,
                                                                   const float *bias, float *y, int64_t ldy) {
    float c[4][16][16];
    const int64_t nk = k / 32, stride = k * 2;
    for (int64_t blk = blk_lo; blk < blk_hi; blk += 4) {
        const int64_t nb = blk_hi - blk < 4 ? blk_hi - blk : 4;
        const uint16_t *a = w + blk * 16 * k;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int64_t kc = 0; kc < nk; kc++) {
            _tile_loadd(4, xp + kc * 16 * 32, 64);
            _tile_loadd(5, a + kc * 32, stride);
            _tile_dpbf16ps(0, 5, 4);
            if (nb > 1) {
                _tile_loadd(5, a + 16 * k + kc * 32, stride);
                _tile_dpbf16ps(1, 5, 4);
            }
            if (nb > 2) {
                _tile_loadd(5, a + 32 * k + kc * 32, stride);
                _tile_dpbf16ps(2, 5, 4);
            }
            if (nb > 3) {
                _tile_loadd(5, a + 48 * k + kc * 32, stride);
                _tile_dpbf16ps(3, 5, 4);
            }
        }
        _tile_stored(0, c[0], 64);
        _tile_stored(1, c[1], 64);
        _tile_stored(2, c[2], 64);
        _tile_stored(3, c[3], 64);
        for (int64_t j = 0; j < nb; j++) {
            for (int i = 0; i < 16; i++) {
                const int64_t n = (blk + j) * 16 + i;
                for (int64_t b = 0; b < B; b++) {
                    const float v = c[j][i][2 * b] + c[j][i][2 * b + 1];
                    y[b * ldy + n] = bias ? v + bias[n] : v;
                }
            }
        }
    }
}
#else
static int amx_usable(void) { return 0; }
static void amx_configure(void) {}
static void amx_release(void) {}
static inline int amx_fits(int64_t k, int64_t B) { (void)k; (void)B; return 0; }
#endif

#endif
