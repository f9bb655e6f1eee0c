/* The native runtime: a whole decoder forward pass (embedding, norms, rotary
 * embeddings, grouped-query attention over a KV cache, MLP, final norm, head) run from
 * packed weights, for Llama, Qwen2, Gemma 2 and Gemma 3 models.
 *
 * Packed matrices are read through the packed-weight kernels of elastiq/quant
 * (lut_kernel.c, included here so both share one decoder): decoding (a few rows)
 * multiplies straight from the codes; prefill decodes 64-row tiles of a weight and
 * multiplies them with a register-blocked product of its own. Threads: OpenMP.
 * Built by elastiq/runtime/build.py; the struct layouts are mirrored in native.py,
 * which checks them against eq_struct_sizes() when the library loads.
 */
#include "lut_kernel.c"
#include <stddef.h>
#include <stdlib.h>
#include <omp.h>

enum { MAT_PACKED = 0, MAT_F32 = 1, MAT_F16 = 2, MAT_BF16 = 3 };
enum { ACT_SILU = 0, ACT_GELU_TANH = 1, ACT_GELU = 2 };

typedef struct {
    qweight q;            /* packed: codes, scales, tables (q.N, q.K always set) */
    int32_t kind;         /* MAT_* */
    int32_t pad_;
    const void *dense;    /* kind != MAT_PACKED: N x K row-major */
    const float *bias;    /* N values, or NULL */
    const float *lr_a;    /* a low-rank correction y += scaling * B (A x): A (rank x K), B (N x rank); or NULL */
    const float *lr_b;
    int64_t rank;
    float lr_scaling;
    float pad2_;
} eq_mat;

typedef struct {
    eq_mat q, k, v, o, gate, up, down;
    const float *attn_norm, *post_attn_norm, *pre_ffn_norm, *post_ffn_norm, *q_norm, *k_norm;
    const float *inv_freq;    /* head_dim / 2 rotary frequencies */
    float rope_scale;         /* attention scaling of the rotary embedding (1 for most) */
    int32_t window;           /* sliding window (keys j with i - j < window), 0 for full attention */
} eq_layer;

typedef struct {
    int32_t n_layers, dim, n_heads, n_kv, head_dim, ffn, vocab, max_ctx;
    int32_t act, norm_offset, sandwich, pad_;   /* sandwich: Gemma's extra post-attention/-MLP norms */
    float eps, embed_scale, attn_scale, attn_softcap, final_softcap, pad2_;
    eq_mat embed, head;
    const float *final_norm;
    eq_layer *layers;
    float **k_cache, **v_cache;  /* per layer: n_kv x cap x head_dim (each kv head's rows apart, read in one stream) */
    int64_t cap;
    int32_t nthreads, pad3_;
} eq_model;

void eq_struct_sizes(int64_t *out) {
    out[0] = sizeof(qweight); out[1] = sizeof(eq_mat); out[2] = sizeof(eq_layer); out[3] = sizeof(eq_model);
    out[4] = offsetof(eq_mat, dense); out[5] = offsetof(eq_layer, inv_freq); out[6] = offsetof(eq_model, layers);
    out[7] = offsetof(eq_model, cap);
}

/* ---- small vector helpers ------------------------------------------------------- */
static inline float dot_f32(const float *a, const float *b, int64_t n) {
    int64_t i = 0;
    float s = 0.0f;
#ifdef __AVX512F__
    if (n >= 64) {
        __m512 z0 = _mm512_setzero_ps(), z1 = z0, z2 = z0, z3 = z0;
        for (; i + 64 <= n; i += 64) {
            z0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), z0);
            z1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), z1);
            z2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), z2);
            z3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), z3);
        }
        s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(z0, z1), _mm512_add_ps(z2, z3)));
    }
#endif
#ifdef __AVX2__
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s += hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
#endif
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static inline void axpy(float *y, float a, const float *x, int64_t n) {
    int64_t i = 0;
#ifdef __AVX512F__
    __m512 za = _mm512_set1_ps(a);
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(za, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
#endif
#ifdef __AVX2__
    __m256 va = _mm256_set1_ps(a);
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#endif
    for (; i < n; i++) y[i] += a * x[i];
}

static inline float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 31, man = h & 1023, bits;
    if (exp == 0) {
        if (!man) bits = sign;
        else {  /* subnormal: normalize */
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 1024));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 1023) << 13);
        }
    } else if (exp == 31) bits = sign | 0x7F800000u | (man << 13);
    else bits = sign | ((exp + 112) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Row n of a dense matrix as float32. */
static void dense_row(const eq_mat *m, int64_t n, float *out) {
    const int64_t K = m->q.K;
    if (m->kind == MAT_F32) { memcpy(out, (const float *)m->dense + n * K, K * sizeof(float)); return; }
    const uint16_t *r = (const uint16_t *)m->dense + n * K;
    if (m->kind == MAT_BF16) {
        for (int64_t k = 0; k < K; k++) { uint32_t b = (uint32_t)r[k] << 16; memcpy(out + k, &b, 4); }
    } else {
        for (int64_t k = 0; k < K; k++) out[k] = half_to_float(r[k]);
    }
}

/* Rows [n0, n1) of any matrix, decoded into out ((n1 - n0) x K). Not threaded: callers are. */
static void decode_rows(const eq_mat *m, int64_t n0, int64_t n1, float *out) {
    if (m->kind != MAT_PACKED) {
        for (int64_t n = n0; n < n1; n++) dense_row(m, n, out + (n - n0) * m->q.K);
        return;
    }
    int64_t idx[64];
    for (int64_t s = n0; s < n1; s += 64) {
        int64_t c = n1 - s < 64 ? n1 - s : 64;
        for (int64_t i = 0; i < c; i++) idx[i] = s + i;
        eq_dequant_rows(&m->q, idx, c, out + (s - n0) * m->q.K, 1);
    }
}

/* ---- products --------------------------------------------------------------------- */
/* Rows of x times a decoded tile (T x K) of W, into columns [n0, n0+T) of y. Four rows of
 * x by three rows of W at a time: twelve accumulators, seven loads per twelve FMAs. */
static void tile_product(const float *x, int64_t M, int64_t K, const float *w, int64_t T, float *y, int64_t N, int64_t n0) {
    int64_t m = 0;
    for (; m + 4 <= M; m += 4) {
        const float *x0 = x + m * K, *x1 = x0 + K, *x2 = x1 + K, *x3 = x2 + K;
        (void)x3;  /* read only by the AVX2 path */
        int64_t t = 0;
#ifdef __AVX512F__
        if (K % 16 == 0)
            for (; t + 3 <= T; t += 3) {  /* the same product 16 columns at a time */
                const float *w0 = w + t * K, *w1 = w0 + K, *w2 = w1 + K;
                __m512 a00 = _mm512_setzero_ps(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00;
                __m512 a20 = a00, a21 = a00, a22 = a00, a30 = a00, a31 = a00, a32 = a00;
                for (int64_t k = 0; k < K; k += 16) {
                    __m512 b0 = _mm512_loadu_ps(w0 + k), b1 = _mm512_loadu_ps(w1 + k), b2 = _mm512_loadu_ps(w2 + k);
                    __m512 v = _mm512_loadu_ps(x0 + k);
                    a00 = _mm512_fmadd_ps(v, b0, a00); a01 = _mm512_fmadd_ps(v, b1, a01); a02 = _mm512_fmadd_ps(v, b2, a02);
                    v = _mm512_loadu_ps(x1 + k);
                    a10 = _mm512_fmadd_ps(v, b0, a10); a11 = _mm512_fmadd_ps(v, b1, a11); a12 = _mm512_fmadd_ps(v, b2, a12);
                    v = _mm512_loadu_ps(x2 + k);
                    a20 = _mm512_fmadd_ps(v, b0, a20); a21 = _mm512_fmadd_ps(v, b1, a21); a22 = _mm512_fmadd_ps(v, b2, a22);
                    v = _mm512_loadu_ps(x3 + k);
                    a30 = _mm512_fmadd_ps(v, b0, a30); a31 = _mm512_fmadd_ps(v, b1, a31); a32 = _mm512_fmadd_ps(v, b2, a32);
                }
                const __m512 r[12] = {a00, a01, a02, a10, a11, a12, a20, a21, a22, a30, a31, a32};
                for (int i = 0; i < 4; i++)
                    for (int j = 0; j < 3; j++) y[(m + i) * N + n0 + t + j] = _mm512_reduce_add_ps(r[i * 3 + j]);
            }
#endif
#ifdef __AVX2__
        for (; t + 3 <= T; t += 3) {
            const float *w0 = w + t * K, *w1 = w0 + K, *w2 = w1 + K;
            __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a10 = a00, a11 = a00, a12 = a00;
            __m256 a20 = a00, a21 = a00, a22 = a00, a30 = a00, a31 = a00, a32 = a00;
            int64_t k = 0;
            for (; k + 8 <= K; k += 8) {
                __m256 b0 = _mm256_loadu_ps(w0 + k), b1 = _mm256_loadu_ps(w1 + k), b2 = _mm256_loadu_ps(w2 + k);
                __m256 v = _mm256_loadu_ps(x0 + k);
                a00 = _mm256_fmadd_ps(v, b0, a00); a01 = _mm256_fmadd_ps(v, b1, a01); a02 = _mm256_fmadd_ps(v, b2, a02);
                v = _mm256_loadu_ps(x1 + k);
                a10 = _mm256_fmadd_ps(v, b0, a10); a11 = _mm256_fmadd_ps(v, b1, a11); a12 = _mm256_fmadd_ps(v, b2, a12);
                v = _mm256_loadu_ps(x2 + k);
                a20 = _mm256_fmadd_ps(v, b0, a20); a21 = _mm256_fmadd_ps(v, b1, a21); a22 = _mm256_fmadd_ps(v, b2, a22);
                v = _mm256_loadu_ps(x3 + k);
                a30 = _mm256_fmadd_ps(v, b0, a30); a31 = _mm256_fmadd_ps(v, b1, a31); a32 = _mm256_fmadd_ps(v, b2, a32);
            }
            float r[12] = {hsum(a00), hsum(a01), hsum(a02), hsum(a10), hsum(a11), hsum(a12),
                           hsum(a20), hsum(a21), hsum(a22), hsum(a30), hsum(a31), hsum(a32)};
            for (; k < K; k++)
                for (int i = 0; i < 4; i++)
                    for (int j = 0; j < 3; j++) r[i * 3 + j] += x[(m + i) * K + k] * w[(t + j) * K + k];
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 3; j++) y[(m + i) * N + n0 + t + j] = r[i * 3 + j];
        }
#endif
        for (; t < T; t++)
            for (int i = 0; i < 4; i++) y[(m + i) * N + n0 + t] = dot_f32(x + (m + i) * K, w + t * K, K);
    }
    for (; m < M; m++)
        for (int64_t t = 0; t < T; t++) y[m * N + n0 + t] = dot_f32(x + m * K, w + t * K, K);
}

#define TILE 48

/* Whether a product of M rows runs row by row straight from the stored weight. */
static inline int rowwise(const eq_mat *m, int64_t M) { return m->kind == MAT_PACKED ? M <= EQ_MAX_M : M <= 2; }

/* Output column n of x @ W^T (M rows) into y (M x N). scratch: K floats (dense 16-bit rows). */
static void one_row(const eq_mat *m, int64_t n, const float *x, const float *xe, const float *xo, int64_t M,
                    float *y, float *scratch) {
    const int64_t N = m->q.N, K = m->q.K;
    if (m->kind == MAT_PACKED) {
        if (M == 1 && m->q.bits == 4) y[n] = row_dot4(&m->q, n, x, xe, xo);
        else row_dot(&m->q, n, x, xe, xo, M, y);
        return;
    }
    const float *w = (const float *)m->dense + n * K;
    if (m->kind != MAT_F32) { dense_row(m, n, scratch); w = scratch; }
    for (int64_t r = 0; r < M; r++) y[r * N + n] = dot_f32(x + r * K, w, K);
}

/* Bias and low-rank correction: y += bias + scaling * (x A^T) B^T. */
static void finish(const eq_model *md, const eq_mat *m, const float *x, int64_t M, float *y) {
    const int64_t N = m->q.N, K = m->q.K;
    if (m->bias)
        for (int64_t r = 0; r < M; r++)
            for (int64_t n = 0; n < N; n++) y[r * N + n] += m->bias[n];
    if (m->lr_a) {
        const int64_t R = m->rank;
        float *t = malloc(sizeof(float) * M * R);
        for (int64_t r = 0; r < M; r++)
            for (int64_t j = 0; j < R; j++) t[r * R + j] = dot_f32(x + r * K, m->lr_a + j * K, K) * m->lr_scaling;
#pragma omp parallel for num_threads(md->nthreads) schedule(static)
        for (int64_t n = 0; n < N; n++)
            for (int64_t r = 0; r < M; r++) y[r * N + n] += dot_f32(t + r * R, m->lr_b + n * R, R);
        free(t);
    }
}

/* ys[i] (M x N_i) = x (M x K) @ W_i^T for matrices sharing their input. Decoding (few rows)
 * runs every matrix's rows in one parallel region, straight from the stored weights;
 * prefill decodes TILE-row tiles and multiplies each by every input row. */
static void matmul_group(const eq_model *md, const eq_mat *const *ms, int count, const float *x, int64_t M,
                         float *const *ys) {
    const int64_t K = ms[0]->q.K;
    const int nt = md->nthreads;
    int all = 1, four = 0;
    int64_t start[8], total = 0;
    for (int i = 0; i < count; i++) {
        all &= rowwise(ms[i], M);
        four |= ms[i]->kind == MAT_PACKED && ms[i]->q.bits == 4;
        start[i] = total;
        total += ms[i]->q.N;
    }
    if (all) {
        float *xe = NULL, *xo = NULL;
        if (four) {  /* the 4-bit kernels take x's even and odd columns apart */
            xe = malloc(sizeof(float) * M * K);
            xo = xe + M * (K / 2);
            for (int64_t r = 0; r < M; r++)
                for (int64_t k = 0; k + 1 < K; k += 2) { xe[r * (K / 2) + k / 2] = x[r * K + k]; xo[r * (K / 2) + k / 2] = x[r * K + k + 1]; }
        }
#pragma omp parallel num_threads(nt)
        {
            float *scratch = malloc(sizeof(float) * K);
#pragma omp for schedule(dynamic, 32)
            for (int64_t t = 0; t < total; t++) {
                int i = count - 1;
                while (start[i] > t) i--;
                one_row(ms[i], t - start[i], x, xe ? xe : x, xo ? xo : x, M, ys[i], scratch);
            }
            free(scratch);
        }
        free(xe);
    } else {
        for (int i = 0; i < count; i++) {
            const eq_mat *m = ms[i];
            const int64_t N = m->q.N;
            float *y = ys[i];
#pragma omp parallel num_threads(nt)
            {
                float *tile = malloc(sizeof(float) * TILE * K);
#pragma omp for schedule(dynamic, 1)
                for (int64_t n0 = 0; n0 < N; n0 += TILE) {
                    int64_t T = N - n0 < TILE ? N - n0 : TILE;
                    decode_rows(m, n0, n0 + T, tile);
                    tile_product(x, M, K, tile, T, y, N, n0);
                }
                free(tile);
            }
        }
    }
    for (int i = 0; i < count; i++) finish(md, ms[i], x, M, ys[i]);
}

static void matmul(const eq_model *md, const eq_mat *m, const float *x, int64_t M, float *y) {
    matmul_group(md, &m, 1, x, M, &y);
}

/* ---- the layer pieces ------------------------------------------------------------- */
static void rms_norm(const float *x, const float *w, float *out, int64_t n, float eps, int offset) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
    float r = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int64_t i = 0; i < n; i++) out[i] = x[i] * r * (offset ? 1.0f + w[i] : w[i]);
}

static void rope(float *v, int64_t hd, const float *inv_freq, float scale, int64_t pos) {
    const int64_t h = hd / 2;
    for (int64_t i = 0; i < h; i++) {
        float a = (float)pos * inv_freq[i];
        float c = cosf(a) * scale, s = sinf(a) * scale;
        float x0 = v[i], x1 = v[i + h];
        v[i] = x0 * c - x1 * s;
        v[i + h] = x1 * c + x0 * s;
    }
}

static inline float act(int kind, float x) {
    if (kind == ACT_SILU) return x / (1.0f + expf(-x));
    if (kind == ACT_GELU) return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
}

int eq_reserve(eq_model *md, int64_t cap) {
    if (cap <= md->cap) return 0;
    const int64_t row = (int64_t)md->n_kv * md->head_dim;
    for (int l = 0; l < md->n_layers; l++) {
        for (int which = 0; which < 2; which++) {
            float **c = which ? &md->v_cache[l] : &md->k_cache[l];
            float *grown = realloc(*c, sizeof(float) * cap * row);
            if (!grown) return -1;
            *c = grown;
            /* each kv head's rows move to its new place, the last head first (no overlap with an unmoved one) */
            for (int64_t g = md->n_kv - 1; g > 0 && md->cap > 0; g--)
                memmove(grown + g * cap * md->head_dim, grown + g * md->cap * md->head_dim,
                        sizeof(float) * md->cap * md->head_dim);
        }
    }
    md->cap = cap;
    return 0;
}

void eq_release(eq_model *md) {
    for (int l = 0; l < md->n_layers; l++) {
        free(md->k_cache[l]); free(md->v_cache[l]);
        md->k_cache[l] = md->v_cache[l] = NULL;
    }
    md->cap = 0;
}

/* exp(x) of a vector, to within a few ulp (Cephes' expf: x = n ln2 + r, a degree-7
 * polynomial in r, times 2^n); inputs below -87 give about 1e-38, not 0. */
#ifdef __AVX2__
static inline __m256 exp256(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
#endif

/* p[j] = exp(p[j] - mx) for j < len; returns their sum. */
static float exp_sum(float *p, int64_t len, float mx) {
    int64_t j = 0;
    float sum = 0.0f;
#ifdef __AVX2__
    __m256 m = _mm256_set1_ps(mx), acc = _mm256_setzero_ps();
    for (; j + 8 <= len; j += 8) {
        __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(p + j), m));
        _mm256_storeu_ps(p + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    sum = hsum(acc);
#endif
    for (; j < len; j++) { p[j] = expf(p[j] - mx); sum += p[j]; }
    return sum;
}

/* The query heads of kv head g (group of them, q: group x hd) over keys [j0, j1): each
 * head's largest score mx[h], the sum of exp(score - mx[h]) in sum[h], and the values
 * weighted by those exponentials (not yet divided by the sum) in o (group x hd).
 * p: scratch of group x (j1 - j0). Each key and value row is read once for the group. */
static void attend(const eq_model *md, int l, int64_t g, const float *q, int64_t group, int64_t j0, int64_t j1,
                   float *p, float *o, float *mx, float *sum) {
    const int64_t hd = md->head_dim, len = j1 - j0;
    const float *kc = md->k_cache[l] + g * md->cap * hd, *vc = md->v_cache[l] + g * md->cap * hd;
    for (int64_t h = 0; h < group; h++) mx[h] = -INFINITY;
    for (int64_t j = j0; j < j1; j++) {
        const float *kr = kc + j * hd;
        for (int64_t h = 0; h < group; h++) {
            float s = dot_f32(q + h * hd, kr, hd) * md->attn_scale;
            if (md->attn_softcap > 0) s = tanhf(s / md->attn_softcap) * md->attn_softcap;
            p[h * len + j - j0] = s;
            if (s > mx[h]) mx[h] = s;
        }
    }
    for (int64_t h = 0; h < group; h++) sum[h] = exp_sum(p + h * len, len, mx[h]);
    /* o_h = sum_j p_hj v_j, 64 columns at a time held in registers over all keys */
    for (int64_t h = 0; h < group; h++) {
        const float *ph = p + h * len;
        float *oh = o + h * hd;
        int64_t d0 = 0;
#ifdef __AVX512F__
        for (; d0 + 64 <= hd; d0 += 64) {
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            const float *vr = vc + j0 * hd + d0;
            for (int64_t j = 0; j < len; j++, vr += hd) {
                __m512 w = _mm512_set1_ps(ph[j]);
                a0 = _mm512_fmadd_ps(w, _mm512_loadu_ps(vr), a0);
                a1 = _mm512_fmadd_ps(w, _mm512_loadu_ps(vr + 16), a1);
                a2 = _mm512_fmadd_ps(w, _mm512_loadu_ps(vr + 32), a2);
                a3 = _mm512_fmadd_ps(w, _mm512_loadu_ps(vr + 48), a3);
            }
            _mm512_storeu_ps(oh + d0, a0); _mm512_storeu_ps(oh + d0 + 16, a1);
            _mm512_storeu_ps(oh + d0 + 32, a2); _mm512_storeu_ps(oh + d0 + 48, a3);
        }
#endif
#ifdef __AVX2__
        for (; d0 + 32 <= hd; d0 += 32) {
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            const float *vr = vc + j0 * hd + d0;
            for (int64_t j = 0; j < len; j++, vr += hd) {
                __m256 w = _mm256_set1_ps(ph[j]);
                a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr), a0);
                a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 8), a1);
                a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 16), a2);
                a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(vr + 24), a3);
            }
            _mm256_storeu_ps(oh + d0, a0); _mm256_storeu_ps(oh + d0 + 8, a1);
            _mm256_storeu_ps(oh + d0 + 16, a2); _mm256_storeu_ps(oh + d0 + 24, a3);
        }
#endif
        for (; d0 < hd; d0++) {
            float a = 0.0f;
            for (int64_t j = 0; j < len; j++) a += ph[j] * vc[(j0 + j) * hd + d0];
            oh[d0] = a;
        }
    }
}

#define KEY_CHUNK 128

/* Attention of n new queries (positions pos0..pos0+n-1) over the cache. q: n x heads x hd,
 * out: n x heads x hd. Tasks are (query, kv head) pairs; a single query (decoding) also
 * splits its keys into chunks of KEY_CHUNK, so that both threads have work with few kv
 * heads, and the chunks' partial results are merged after. */
static void attention(const eq_model *md, const eq_layer *L, int l, const float *q, int64_t n, int64_t pos0, float *out) {
    const int64_t H = md->n_heads, G = md->n_kv, hd = md->head_dim, group = H / G;
    const int64_t first = L->window > 0 && pos0 - L->window + 1 > 0 ? pos0 - L->window + 1 : 0;  /* decoding: the first key */
    const int64_t chunks = n == 1 ? (pos0 + 1 - first + KEY_CHUNK - 1) / KEY_CHUNK : 1;
    float *po = NULL, *pm = NULL, *ps = NULL;
    if (chunks > 1) {
        po = malloc(sizeof(float) * G * chunks * group * (hd + 2));
        pm = po + G * chunks * group * hd;
        ps = pm + G * chunks * group;
    }
#pragma omp parallel num_threads(md->nthreads)
    {
        float *p = malloc(sizeof(float) * (group * (pos0 + n) + 2 * group));
        float *mx = p + group * (pos0 + n), *sm = mx + group;
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < n * G * chunks; t++) {
            int64_t i = t / (G * chunks), g = (t / chunks) % G, c = t % chunks, pos = pos0 + i;
            int64_t j0 = L->window > 0 && pos - L->window + 1 > 0 ? pos - L->window + 1 : 0, j1 = pos + 1;
            const float *qg = q + (i * H + g * group) * hd;
            if (chunks == 1) {
                float *o = out + (i * H + g * group) * hd;
                attend(md, l, g, qg, group, j0, j1, p, o, mx, sm);
                for (int64_t h = 0; h < group; h++)
                    for (int64_t d = 0; d < hd; d++) o[h * hd + d] /= sm[h];
            } else {
                j0 += c * KEY_CHUNK;
                j1 = j0 + KEY_CHUNK < j1 ? j0 + KEY_CHUNK : j1;
                const int64_t at = g * chunks + c;
                attend(md, l, g, qg, group, j0, j1, p, po + at * group * hd, pm + at * group, ps + at * group);
            }
        }
        free(p);
    }
    if (chunks > 1) {  /* merge: each chunk's part weighted by exp(its max - the overall max) */
        for (int64_t g = 0; g < G; g++)
            for (int64_t h = 0; h < group; h++) {
                float m = -INFINITY, total = 0.0f, *o = out + (g * group + h) * hd;
                for (int64_t c = 0; c < chunks; c++) m = fmaxf(m, pm[(g * chunks + c) * group + h]);
                memset(o, 0, sizeof(float) * hd);
                for (int64_t c = 0; c < chunks; c++) {
                    const int64_t at = (g * chunks + c) * group + h;
                    float w = expf(pm[at] - m);
                    total += ps[at] * w;
                    axpy(o, w, po + at * hd, hd);
                }
                for (int64_t d = 0; d < hd; d++) o[d] /= total;
            }
        free(po);
    }
}

/* Run n tokens at positions pos0.. through the model, filling the cache. logits gets the
 * last token's logits (vocab), or every token's (n x vocab) when all_logits.
 * Returns 0, or -1 when the cache cannot hold the tokens (eq_reserve first). */
int eq_forward(eq_model *md, const int32_t *tokens, int64_t n, int64_t pos0, float *logits, int all_logits) {
    if (pos0 + n > md->cap || n <= 0) return -1;
    const int64_t D = md->dim, H = md->n_heads, G = md->n_kv, hd = md->head_dim, F = md->ffn, V = md->vocab;
    float *x = malloc(sizeof(float) * n * D), *xn = malloc(sizeof(float) * n * D);
    float *q = malloc(sizeof(float) * n * H * hd), *k = malloc(sizeof(float) * n * G * hd), *v = malloc(sizeof(float) * n * G * hd);
    float *att = malloc(sizeof(float) * n * H * hd), *tmp = malloc(sizeof(float) * n * D);
    float *gate = malloc(sizeof(float) * n * F), *up = malloc(sizeof(float) * n * F);
    if (!x || !xn || !q || !k || !v || !att || !tmp || !gate || !up) return -2;
    for (int64_t i = 0; i < n; i++) {  /* embedding rows */
        if (md->embed.kind == MAT_PACKED) eq_dequant_rows(&md->embed.q, (int64_t[]){tokens[i]}, 1, x + i * D, 1);
        else dense_row(&md->embed, tokens[i], x + i * D);
        if (md->embed_scale != 1.0f)
            for (int64_t d = 0; d < D; d++) x[i * D + d] *= md->embed_scale;
    }
    for (int l = 0; l < md->n_layers; l++) {
        const eq_layer *L = &md->layers[l];
        for (int64_t i = 0; i < n; i++) rms_norm(x + i * D, L->attn_norm, xn + i * D, D, md->eps, md->norm_offset);
        {
            const eq_mat *qkv[3] = {&L->q, &L->k, &L->v};
            float *out[3] = {q, k, v};
            matmul_group(md, qkv, 3, xn, n, out);
        }
        for (int64_t i = 0; i < n; i++) {
            for (int64_t h = 0; h < H; h++) {
                float *qh = q + (i * H + h) * hd;
                if (L->q_norm) rms_norm(qh, L->q_norm, qh, hd, md->eps, md->norm_offset);
                rope(qh, hd, L->inv_freq, L->rope_scale, pos0 + i);
            }
            for (int64_t g = 0; g < G; g++) {
                float *kh = k + (i * G + g) * hd;
                if (L->k_norm) rms_norm(kh, L->k_norm, kh, hd, md->eps, md->norm_offset);
                rope(kh, hd, L->inv_freq, L->rope_scale, pos0 + i);
            }
            for (int64_t g = 0; g < G; g++) {
                memcpy(md->k_cache[l] + (g * md->cap + pos0 + i) * hd, k + (i * G + g) * hd, sizeof(float) * hd);
                memcpy(md->v_cache[l] + (g * md->cap + pos0 + i) * hd, v + (i * G + g) * hd, sizeof(float) * hd);
            }
        }
        attention(md, L, l, q, n, pos0, att);
        matmul(md, &L->o, att, n, tmp);
        for (int64_t i = 0; i < n; i++) {
            if (md->sandwich) rms_norm(tmp + i * D, L->post_attn_norm, tmp + i * D, D, md->eps, md->norm_offset);
            for (int64_t d = 0; d < D; d++) x[i * D + d] += tmp[i * D + d];
            rms_norm(x + i * D, md->sandwich ? L->pre_ffn_norm : L->post_attn_norm, xn + i * D, D, md->eps, md->norm_offset);
        }
        {
            const eq_mat *gu[2] = {&L->gate, &L->up};
            float *out[2] = {gate, up};
            matmul_group(md, gu, 2, xn, n, out);
        }
        for (int64_t e = 0; e < n * F; e++) gate[e] = act(md->act, gate[e]) * up[e];
        matmul(md, &L->down, gate, n, tmp);
        for (int64_t i = 0; i < n; i++) {
            if (md->sandwich) rms_norm(tmp + i * D, L->post_ffn_norm, tmp + i * D, D, md->eps, md->norm_offset);
            for (int64_t d = 0; d < D; d++) x[i * D + d] += tmp[i * D + d];
        }
    }
    int64_t first = all_logits ? 0 : n - 1, rows = n - first;
    for (int64_t i = first; i < n; i++) rms_norm(x + i * D, md->final_norm, xn + (i - first) * D, D, md->eps, md->norm_offset);
    matmul(md, &md->head, xn, rows, logits);
    if (md->final_softcap > 0)
        for (int64_t e = 0; e < rows * V; e++) logits[e] = tanhf(logits[e] / md->final_softcap) * md->final_softcap;
    free(x); free(xn); free(q); free(k); free(v); free(att); free(tmp); free(gate); free(up);
    return 0;
}
