/* Matrix products straight from packed weights: element codes of 4 or 8 bits decoded
 * through a value table (one table per grid choice), times a per-block scale decoded
 * through its own table. Built at run time by elastiq/quant/kernels.py with
 * -O3 -march=native -fopenmp; the AVX2 paths are used when the machine has AVX2.
 *
 * Layout (see elastiq/formats/cast.py): row n of the (N, K) weight holds elements
 * [n*K, (n+1)*K) of a little-endian code stream; block b of row n is block index
 * n*per_row + b, whose scale code and selector sit in their own packed streams.
 */
#include <stdint.h>
#include <string.h>
#include <math.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

typedef struct {
    int64_t N, K;
    int32_t bits;         /* element bits: 1 to 8 (vectorized: 4 and 8) */
    int32_t block;        /* elements per block along K */
    int32_t per_row;      /* ceil(K / block) */
    int32_t scale_bits;   /* 8, 16 (code -> scale_lut) or 32 (raw float32) */
    int32_t sel_bits;     /* 0, 1, 2, 4 or 8 */
    int32_t pad_;
    float tensor_scale;   /* second-level scale, 1 when the format has none */
    float pad2_;
    const uint8_t *codes;
    const uint8_t *scodes;
    const float *scale_lut;
    const uint8_t *sel;
    const float *elem_lut;  /* (number of grids) x 2^bits values */
    const int8_t *elem_i8;  /* the same values / i8_mult as int8, when all are such integers (4-bit only); or NULL */
    float i8_mult;
    float pad3_;
} qweight;

/* Block bi's scale before the tensor scale, for scale codes of SB bits (a constant where
 * the callers inline it). */
static inline __attribute__((always_inline)) float code_scale(const qweight *w, int64_t bi, const int sb) {
    float s;
    if (sb == 8) s = w->scale_lut[w->scodes[bi]];
    else if (sb == 16) s = w->scale_lut[((const uint16_t *)w->scodes)[bi]];
    else memcpy(&s, w->scodes + 4 * bi, 4);
    return s;
}

/* Which grid block bi takes, for selectors of SELB bits (0: the one grid). */
static inline __attribute__((always_inline)) int64_t grid_of(const qweight *w, int64_t bi, const int selb) {
    if (!selb) return 0;
    int64_t p = bi * selb;
    return (w->sel[p >> 3] >> (p & 7)) & ((1 << selb) - 1);
}

static inline float block_scale(const qweight *w, int64_t bi) {
    return code_scale(w, bi, w->scale_bits) * w->tensor_scale;
}

static inline const float *block_lut(const qweight *w, int64_t bi) {
    return w->elem_lut + (grid_of(w, bi, w->sel_bits) << w->bits);
}

static inline int code_at(const qweight *w, int64_t e) {
    if (w->bits == 8) return w->codes[e];
    if (w->bits == 4) return (w->codes[e >> 1] >> ((e & 1) * 4)) & 15;
    int64_t p = e * w->bits;  /* any width up to 8: the code may straddle two bytes */
    int shift = p & 7;
    unsigned v = w->codes[p >> 3] >> shift;
    if (shift + w->bits > 8) v |= (unsigned)w->codes[(p >> 3) + 1] << (8 - shift);
    return v & ((1u << w->bits) - 1);
}

#ifdef __AVX2__
/* Values of 8 4-bit codes (in int32 lanes) from a 16-entry table held in two registers. */
static inline __m256 lut16(__m256i idx, __m256 lo, __m256 hi) {
    __m256 a = _mm256_permutevar8x32_ps(lo, idx), b = _mm256_permutevar8x32_ps(hi, idx);
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

/* The low and high codes of 8 bytes, decoded through a 16-entry table. */
static inline void decode8(const uint8_t *c, __m256 lo, __m256 hi, __m256 *vlo, __m256 *vhi) {
    __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)c));
    *vlo = lut16(_mm256_and_si256(bytes, _mm256_set1_epi32(15)), lo, hi);
    *vhi = lut16(_mm256_srli_epi32(bytes, 4), lo, hi);
}
#endif

/* The block's value table with its scale folded in (2^bits entries, 16 or 256). */
static inline void scaled_lut(const qweight *w, int64_t bi, float *out) {
    float s = block_scale(w, bi);
    const float *lut = block_lut(w, bi);
    for (int i = 0; i < (1 << w->bits); i++) out[i] = lut[i] * s;
}

/* Decode rows `rows` (or all rows when rows is NULL) into out (nrows x K float32). */
void eq_dequant_rows(const qweight *w, const int64_t *rows, int64_t nrows, float *out, int nthreads) {
    const int64_t K = w->K;
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t r = 0; r < nrows; r++) {
        int64_t n = rows ? rows[r] : r;
        float *o = out + r * K;
        float lut[256];
        for (int64_t b = 0; b < w->per_row; b++) {
            int64_t bi = n * w->per_row + b;
            scaled_lut(w, bi, lut);
            int64_t k0 = b * w->block, k1 = k0 + w->block < K ? k0 + w->block : K;
            int64_t e = n * K + k0, k = k0;
            if (w->bits == 4 && !(e & 1)) {
                const uint8_t *c = w->codes + (e >> 1);
#ifdef __AVX2__
                __m256 lo = _mm256_loadu_ps(lut), hi = _mm256_loadu_ps(lut + 8), vlo, vhi;
                for (; k + 16 <= k1; k += 16, c += 8) {
                    decode8(c, lo, hi, &vlo, &vhi);
                    __m256 a = _mm256_unpacklo_ps(vlo, vhi), b2 = _mm256_unpackhi_ps(vlo, vhi);
                    _mm256_storeu_ps(o + k, _mm256_permute2f128_ps(a, b2, 0x20));
                    _mm256_storeu_ps(o + k + 8, _mm256_permute2f128_ps(a, b2, 0x31));
                }
#endif
                for (; k + 1 < k1; k += 2, c++) {
                    o[k] = lut[*c & 15];
                    o[k + 1] = lut[*c >> 4];
                }
                if (k < k1) o[k] = lut[*c & 15];
            } else {
                for (e = n * K + k; k < k1; k++, e++) o[k] = lut[code_at(w, e)];
            }
        }
    }
}

#ifdef __AVX2__
static inline float hsum(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

#endif

#define EQ_MAX_M 8
#define PREFETCH_AHEAD 2048  /* bytes: decoding one row is bound by memory latency, not arithmetic */

#ifdef __AVX2__
/* 32 codes (16 bytes) times 32 inputs, values from an int8 table (one byte shuffle per
 * 16 codes): even-low, even-high, odd-low and odd-high lanes accumulate apart. */
#define DOT32_I8(c, lut, pe, po, a0, a1, a2, a3) do {                                                     \
    const __m128i m4_ = _mm_set1_epi8(15);                                                               \
    __m128i by_ = _mm_loadu_si128((const __m128i *)(c));                                                 \
    __m128i lo_ = _mm_shuffle_epi8(lut, _mm_and_si128(by_, m4_));                                        \
    __m128i hi_ = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(by_, 4), m4_));                     \
    a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo_)), _mm256_loadu_ps(pe), a0);        \
    a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo_, 8))), _mm256_loadu_ps((pe) + 8), a1); \
    a2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi_)), _mm256_loadu_ps(po), a2);        \
    a3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi_, 8))), _mm256_loadu_ps((po) + 8), a3); \
} while (0)
#endif

/* Whether w's rows run on dot4_vec (with AVX2: for int8 tables only): 4-bit codes in blocks
 * of 16 or of a multiple of 32, rows of whole blocks (a last block may be shorter). */
static inline int dot4_serves(const qweight *w) {
    return w->bits == 4 && (w->block == 16 ? w->K % 16 == 0 : w->block % 32 == 0 && w->K % 32 == 0);
}

#ifdef __AVX512F__
/* One 4-bit row times one input row with AVX-512 (where dot4_serves says it applies). A
 * block's 16 values times its scale fill one register, so one permute looks up 16 codes
 * and the products accumulate across blocks with no per-block sum; the tensor scale is
 * applied once, at the end. Decoding one row is bound by memory latency, so the code
 * stream is prefetched PREFETCH_AHEAD bytes ahead. SB (scale bits) and SELB (selector
 * bits) are constants in each copy the callers below make. */
static inline __attribute__((always_inline)) float dot4_vec(const qweight *w, int64_t n, const float *xe,
                                                            const float *xo, const int sb, const int selb) {
    const int64_t P = w->per_row, B = w->block, bi0 = n * P;
    const uint8_t *c = w->codes + ((n * w->K) >> 1);
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t b = 0; b < P; b++) {
        const int64_t bi = bi0 + b;
        const __m512 t = _mm512_mul_ps(_mm512_loadu_ps(w->elem_lut + (grid_of(w, bi, selb) << 4)),
                                       _mm512_set1_ps(code_scale(w, bi, sb)));
        const float *pe = xe + b * (B >> 1), *po = xo + b * (B >> 1);
        if (B == 16) {  /* NVFP4: 8 bytes, the upper lanes masked off */
            __m512i by = _mm512_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)c));
            a0 = _mm512_mask3_fmadd_ps(_mm512_permutexvar_ps(by, t), _mm512_maskz_loadu_ps(0xFF, pe), a0, 0xFF);
            a1 = _mm512_mask3_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(by, 4), t), _mm512_maskz_loadu_ps(0xFF, po), a1, 0xFF);
            if (!((uintptr_t)c & 56)) _mm_prefetch((const char *)c + PREFETCH_AHEAD, _MM_HINT_T0);
            c += 8;
        } else {
            const int64_t half = (b + 1) * B <= w->K ? B >> 1 : (w->K - b * B) >> 1;  /* a ragged last block */
            for (int64_t k = 0; k < half; k += 16, c += 16) {
                if (!((uintptr_t)c & 48)) _mm_prefetch((const char *)c + PREFETCH_AHEAD, _MM_HINT_T0);  /* once per line */
                __m512i by = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)c));
                a0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(by, t), _mm512_loadu_ps(pe + k), a0);
                a1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(by, 4), t), _mm512_loadu_ps(po + k), a1);
            }
        }
        __m512 u = a0; a0 = a2; a2 = u;
        u = a1; a1 = a3; a3 = u;
    }
    return w->tensor_scale * _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

#endif

#if defined(__AVX2__) && !defined(__AVX512F__)
/* The same with AVX2, for 4-bit tables of small integers (elem_i8): 16
 * codes become values with one byte shuffle, the products of a block are summed before its
 * scale is applied once, and the code stream is prefetched ahead. */
static inline __attribute__((always_inline)) float dot4_vec(const qweight *w, int64_t n, const float *xe,
                                                             const float *xo, const int sb, const int selb) {
    const int64_t P = w->per_row, B = w->block, bi0 = n * P;
    const uint8_t *c = w->codes + ((n * w->K) >> 1);
    const __m128i m4 = _mm_set1_epi8(15);
    __m256 acc = _mm256_setzero_ps(), acc2 = acc;
    for (int64_t b = 0; b < P; b++) {
        const int64_t bi = bi0 + b;
        const float s = code_scale(w, bi, sb);
        const __m128i lut = _mm_loadu_si128((const __m128i *)(w->elem_i8 + (grid_of(w, bi, selb) << 4)));
        const float *pe = xe + b * (B >> 1), *po = xo + b * (B >> 1);
        __m256 se = _mm256_setzero_ps(), so = se;
        const int64_t half = B == 16 ? 8 : (b + 1) * B <= w->K ? B >> 1 : (w->K - b * B) >> 1;
        for (int64_t k = 0; k < half; k += 16, c += 16) {
            if (!((uintptr_t)c & 48)) _mm_prefetch((const char *)c + PREFETCH_AHEAD, _MM_HINT_T0);
            __m128i by = B == 16 ? _mm_loadl_epi64((const __m128i *)c) : _mm_loadu_si128((const __m128i *)c);
            __m128i lo = _mm_shuffle_epi8(lut, _mm_and_si128(by, m4));
            __m128i hi = _mm_shuffle_epi8(lut, _mm_and_si128(_mm_srli_epi16(by, 4), m4));
            se = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), _mm256_loadu_ps(pe + k), se);
            so = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), _mm256_loadu_ps(po + k), so);
            if (B == 16) break;  /* NVFP4: one half-load per block */
            se = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))), _mm256_loadu_ps(pe + k + 8), se);
            so = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))), _mm256_loadu_ps(po + k + 8), so);
        }
        if (B == 16) c += 8;
        acc = _mm256_fmadd_ps(_mm256_add_ps(se, so), _mm256_set1_ps(s), acc);
        __m256 u = acc; acc = acc2; acc2 = u;
    }
    return w->tensor_scale * w->i8_mult * hsum(_mm256_add_ps(acc, acc2));
}

#endif

#if defined(__AVX512F__) || defined(__AVX2__)
/* dot4_vec copied with the common scale and selector widths as constants. */
static float dot4_s8(const qweight *w, int64_t n, const float *xe, const float *xo) { return dot4_vec(w, n, xe, xo, 8, 0); }
static float dot4_s8_sel2(const qweight *w, int64_t n, const float *xe, const float *xo) { return dot4_vec(w, n, xe, xo, 8, 2); }
static float dot4_s16(const qweight *w, int64_t n, const float *xe, const float *xo) { return dot4_vec(w, n, xe, xo, 16, 0); }
static float dot4_any(const qweight *w, int64_t n, const float *xe, const float *xo) {
    return dot4_vec(w, n, xe, xo, w->scale_bits, w->sel_bits);
}

static float row_dot4_vec(const qweight *w, int64_t n, const float *xe, const float *xo) {
    if (w->scale_bits == 8 && w->sel_bits == 0) return dot4_s8(w, n, xe, xo);
    if (w->scale_bits == 8 && w->sel_bits == 2) return dot4_s8_sel2(w, n, xe, xo);
    if (w->scale_bits == 16 && w->sel_bits == 0) return dot4_s16(w, n, xe, xo);
    return dot4_any(w, n, xe, xo);
}
#endif

/* One output row for one input row, 4-bit codes: dot4_vec where it serves;
 * otherwise, with an int8 table the codes become floats by a byte shuffle and a convert,
 * and the block scale is applied once per block, or the block's scale is folded into its
 * float table. Four accumulators keep the FMA latency hidden. */
static float row_dot4(const qweight *w, int64_t n, const float *x, const float *xe, const float *xo) {
#ifdef __AVX512F__
    if (dot4_serves(w)) return row_dot4_vec(w, n, xe, xo);
#elif defined(__AVX2__)
    if (w->elem_i8 && dot4_serves(w)) return row_dot4_vec(w, n, xe, xo);
#endif
    const int64_t K = w->K;
    float lut[16], tail = 0.0f;
#ifdef __AVX2__
    __m256 t0 = _mm256_setzero_ps(), t1 = t0, t2 = t0, t3 = t0, vlo, vhi, vlo2, vhi2, ti = t0;
#endif
    for (int64_t b = 0; b < w->per_row; b++) {
        int64_t bi = n * w->per_row + b;
        int64_t k0 = b * w->block, k1 = k0 + w->block < K ? k0 + w->block : K, k = k0;
#ifdef __AVX2__
        const uint8_t *c = w->codes + ((n * K + k0) >> 1);
        if (w->elem_i8) {
            const int8_t *i8 = w->elem_i8 + (block_lut(w, bi) - w->elem_lut);
            __m128i l8 = _mm_loadu_si128((const __m128i *)i8);
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (; k + 32 <= k1; k += 32, c += 16) DOT32_I8(c, l8, xe + (k >> 1), xo + (k >> 1), a0, a1, a2, a3);
            if (k + 16 <= k1) {  /* blocks of 16 (NVFP4) */
                const __m128i m4 = _mm_set1_epi8(15);
                __m128i by = _mm_loadl_epi64((const __m128i *)c);
                __m128i lo8 = _mm_shuffle_epi8(l8, _mm_and_si128(by, m4));
                __m128i hi8 = _mm_shuffle_epi8(l8, _mm_and_si128(_mm_srli_epi16(by, 4), m4));
                a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo8)), _mm256_loadu_ps(xe + (k >> 1)), a0);
                a2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi8)), _mm256_loadu_ps(xo + (k >> 1)), a2);
                k += 16;
                c += 8;
            }
            __m256 sum = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
            ti = _mm256_fmadd_ps(sum, _mm256_set1_ps(block_scale(w, bi) * w->i8_mult), ti);
        } else {
            const float *raw = block_lut(w, bi);
            __m256 s = _mm256_set1_ps(block_scale(w, bi));
            __m256 lo = _mm256_mul_ps(_mm256_loadu_ps(raw), s), hi = _mm256_mul_ps(_mm256_loadu_ps(raw + 8), s);
            for (; k + 32 <= k1; k += 32, c += 16) {
                decode8(c, lo, hi, &vlo, &vhi);
                decode8(c + 8, lo, hi, &vlo2, &vhi2);
                t0 = _mm256_fmadd_ps(vlo, _mm256_loadu_ps(xe + (k >> 1)), t0);
                t1 = _mm256_fmadd_ps(vhi, _mm256_loadu_ps(xo + (k >> 1)), t1);
                t2 = _mm256_fmadd_ps(vlo2, _mm256_loadu_ps(xe + (k >> 1) + 8), t2);
                t3 = _mm256_fmadd_ps(vhi2, _mm256_loadu_ps(xo + (k >> 1) + 8), t3);
            }
            if (k + 16 <= k1) {
                decode8(c, lo, hi, &vlo, &vhi);
                t2 = _mm256_fmadd_ps(vlo, _mm256_loadu_ps(xe + (k >> 1)), t2);
                t3 = _mm256_fmadd_ps(vhi, _mm256_loadu_ps(xo + (k >> 1)), t3);
                k += 16;
            }
        }
        if (k < k1) scaled_lut(w, bi, lut);  /* only the scalar tail reads it */
#else
        scaled_lut(w, bi, lut);
#endif
        for (int64_t e = n * K + k; k < k1; k++, e++) tail += lut[code_at(w, e)] * x[k];
    }
#ifdef __AVX2__
    tail += hsum(_mm256_add_ps(_mm256_add_ps(_mm256_add_ps(t0, t1), _mm256_add_ps(t2, t3)), ti));
#endif
    return tail;
}

/* One output row for up to EQ_MAX_M input rows, any code width. */
static void row_dot(const qweight *w, int64_t n, const float *x, const float *xe, const float *xo, int64_t M, float *y) {
    const int64_t K = w->K, N = w->N, H = K / 2;
    float lut[256], tot[EQ_MAX_M] = {0};
#ifdef __AVX2__
    __m256 acc[EQ_MAX_M], part[EQ_MAX_M];
    for (int m = 0; m < M; m++) acc[m] = _mm256_setzero_ps();
#endif
    for (int64_t b = 0; b < w->per_row; b++) {
        int64_t bi = n * w->per_row + b;
        int64_t k0 = b * w->block, k1 = k0 + w->block < K ? k0 + w->block : K, k = k0;
        float s = block_scale(w, bi);
        const float *raw = block_lut(w, bi);
#ifdef __AVX2__
        if (w->bits == 4) {  /* the scale folded into the block's table, in registers */
            __m256 vs = _mm256_set1_ps(s), vlo, vhi;
            __m256 lo = _mm256_mul_ps(_mm256_loadu_ps(raw), vs), hi = _mm256_mul_ps(_mm256_loadu_ps(raw + 8), vs);
            const uint8_t *c = w->codes + ((n * K + k0) >> 1);
            for (; k + 16 <= k1; k += 16, c += 8) {
                decode8(c, lo, hi, &vlo, &vhi);
                for (int m = 0; m < M; m++) {
                    acc[m] = _mm256_fmadd_ps(vlo, _mm256_loadu_ps(xe + m * H + (k >> 1)), acc[m]);
                    acc[m] = _mm256_fmadd_ps(vhi, _mm256_loadu_ps(xo + m * H + (k >> 1)), acc[m]);
                }
            }
        } else if (w->bits == 8) {  /* unscaled values (int8 codes as they are, or a table gather), the scale once per block */
            const uint8_t *c = w->codes + n * K + k0;
            for (int m = 0; m < M; m++) part[m] = _mm256_setzero_ps();
            for (; k + 8 <= k1; k += 8, c += 8) {
                __m128i c8 = _mm_loadl_epi64((const __m128i *)c);
                __m256 v = w->elem_i8 ? _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(c8))
                                      : _mm256_i32gather_ps(raw, _mm256_cvtepu8_epi32(c8), 4);
                for (int m = 0; m < M; m++) part[m] = _mm256_fmadd_ps(v, _mm256_loadu_ps(x + m * K + k), part[m]);
            }
            __m256 vs = _mm256_set1_ps(w->elem_i8 ? s * w->i8_mult : s);
            for (int m = 0; m < M; m++) acc[m] = _mm256_fmadd_ps(part[m], vs, acc[m]);
        }
#endif
        if (k < k1) {  /* the scalar tail (everything, without AVX2) */
            for (int i = 0; i < (1 << w->bits); i++) lut[i] = raw[i] * s;
            for (int64_t e = n * K + k; k < k1; k++, e++) {
                float v = lut[code_at(w, e)];
                for (int m = 0; m < M; m++) tot[m] += v * x[m * K + k];
            }
        }
    }
    for (int m = 0; m < M; m++) {
#ifdef __AVX2__
        tot[m] += hsum(acc[m]);
#endif
        y[m * N + n] = tot[m];
    }
    (void)H;
}

/* y (M x N) = x (M x K) @ W^T for M <= EQ_MAX_M. For 4-bit codes xe/xo hold x's even
 * and odd columns (M x K/2 each), so one byte's two codes meet their two inputs. */
void eq_gemv(const qweight *w, const float *x, const float *xe, const float *xo, int64_t M, float *y, int nthreads) {
    const int64_t N = w->N;
    if (M == 1 && w->bits == 4) {
#pragma omp parallel for num_threads(nthreads) schedule(static)
        for (int64_t n = 0; n < N; n++) y[n] = row_dot4(w, n, x, xe, xo);
    } else {
#pragma omp parallel for num_threads(nthreads) schedule(static)
        for (int64_t n = 0; n < N; n++) row_dot(w, n, x, xe, xo, M, y);
    }
}

int eq_max_m(void) { return EQ_MAX_M; }
int eq_has_avx512(void) {
#ifdef __AVX512F__
    return 1;
#else
    return 0;
#endif
}
int eq_has_avx2(void) {
#ifdef __AVX2__
    return 1;
#else
    return 0;
#endif
}

/* The struct's layout, for kernels.py to check its ctypes mirror against when it loads
 * the library: out[0] = sizeof(qweight), out[1 + i] = the offset of field i, in order. */
#include <stddef.h>
#define QW_FIELDS 18
int eq_qweight_layout(int64_t *out, int n) {
    const int64_t layout[1 + QW_FIELDS] = {
        sizeof(qweight),
        offsetof(qweight, N), offsetof(qweight, K), offsetof(qweight, bits), offsetof(qweight, block),
        offsetof(qweight, per_row), offsetof(qweight, scale_bits), offsetof(qweight, sel_bits), offsetof(qweight, pad_),
        offsetof(qweight, tensor_scale), offsetof(qweight, pad2_), offsetof(qweight, codes), offsetof(qweight, scodes),
        offsetof(qweight, scale_lut), offsetof(qweight, sel), offsetof(qweight, elem_lut), offsetof(qweight, elem_i8),
        offsetof(qweight, i8_mult), offsetof(qweight, pad3_),
    };
    if (n != 1 + QW_FIELDS) return -1;
    memcpy(out, layout, sizeof(layout));
    return 0;
}
