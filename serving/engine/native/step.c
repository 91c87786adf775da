/* One decoding step of a Llama-family model in bfloat16 or int8, on the CPU, in one native loop
 * (serving.engine.native).
 *
 * The lean step in PyTorch (serving.engine.lean) dispatches about 1,500 operations at batch 1; with two cores
 * their dispatch and the Python between them are a third of the step, and every product waits for its own
 * threads to start. Here the whole step is one OpenMP parallel region: each product's output rows are shared
 * among the threads, the small operations (norms, rotary embedding, SiLU) are recomputed by every thread where
 * that is cheaper than waiting for one, attention is shared by (row, key/value head), and the threads meet only
 * where one needs what another wrote: five barriers a layer.
 *
 * Values are those of the engine's path for the dtype. bfloat16 (kernels.PackedLinear): weights in bfloat16, each
 * product's input rounded to bfloat16, products accumulated in float32 and their outputs rounded to bfloat16; only
 * the order of the sums inside a product differs from oneDNN's. int8 (core.quantization.Int8Linear): each product's
 * input quantized per row as fbgemm quantizes it, integer sums, and fbgemm's float output, to the bit. Activations,
 * norms, attention and the KV cache are float32.
 *
 * Built by serving/engine/native/__init__.py: cc -O3 -mavx2 -mfma -fopenmp (x86-64 with AVX2 and FMA); the
 * AVX512-BF16 and AVX512-VNNI kernels are compiled for their instructions alone (target attributes) and chosen by
 * the caller (Model.kernel) only where the CPU has them. */
#include <immintrin.h>
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef uint16_t bf16;

/* A product's weights, row-major [out, in]: bfloat16, or int8 with what turns its integer sums into floats. */
typedef struct {
    const void *weight;
    const float *scale;  /* int8: per output, the weights' scale times the input's (INPUT_SCALE), in float32 */
    const int32_t *zero; /* int8: per output, the input's zero point (ZERO_POINT) times the sum of its weights */
    const float *bias;   /* per output, or NULL (bfloat16: rounded to bfloat16, as float32) */
} Matrix;

/* The model: one Matrix per product and layer (gate_up's rows: gate and up rows in turn). */
typedef struct {
    int layers, hidden, heads, kv_heads, head_dim, intermediate, vocab;
    int kernel;                         /* the products' kernel: an index into KERNELS */
    float eps, scaling;
    const float *embed;                 /* [vocab, hidden] float32 */
    const Matrix *qkv, *o, *gate_up, *down, *lm_head;
    const float **norm_in, **norm_post; /* per layer [hidden] */
    const float *norm_final;            /* [hidden] */
    const float *cos, *sin;                 /* [positions, head_dim]: cos and the signed sine (lean.rotation) */
} Model;

/* The batch: the KV cache's buffers and the step's window (serving.engine.kvcache). */
typedef struct {
    float **keys, **values; /* per layer [row capacity, kv heads, column capacity, head dim] */
    const float *mask;      /* [row capacity, column capacity], additive */
    int columns;            /* column capacity */
    int write, start, end;  /* the column written; columns [start, end) read */
} Cache;

/* Per-thread scratch, and the step's shared activations: sized by native_scratch_floats. */
typedef struct {
    float *hidden;  /* [rows, hidden] the residual stream */
    float *qkv;     /* [rows, (heads + 2 kv) * dim] */
    float *attn;    /* [rows, heads * dim] */
    float *act;     /* [rows, intermediate] SiLU(gate) * up: the down product's input */
    float *scores;  /* [threads, columns] */
    float *normed;  /* [threads, max(hidden, intermediate, heads * dim)] a norm's output */
    float *xb;      /* [threads, rows, widest] a product's input, as the kernel takes it (take) */
    float *xscale;  /* [threads, rows] int8: each row's scale (take) */
} Work;

static inline float round_bf16(float x) {
    /* float32 -> bfloat16 -> float32, round to nearest even (NaN kept NaN): what .to(bfloat16) does */
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return x;
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

static inline float hsum(__m256 v) {
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

static inline __m256 load_bf16(const bf16 *p) {
    /* 8 bfloat16 values as float32: each is a float32's upper half */
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}

static void rms_norm(const float *x, const float *weight, float eps, int n, float *out) {
    /* F.rms_norm in float32: x * rsqrt(mean(x^2) + eps) * weight */
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        acc = _mm256_fmadd_ps(v, v, acc);
    }
    float sum = hsum(acc);
    for (; i < n; i++) sum += x[i] * x[i];
    float scale = 1.0f / sqrtf(sum / (float)n + eps);
    for (i = 0; i < n; i++) out[i] = x[i] * scale * weight[i];
}

enum { STORE, ADD, SWIGLU };

/* What a product does with its outputs v[j] (W[j] . x[r] plus bias, as product finishes it): STORE y[r, j] = v[j]; ADD
 * y[r, j] += v[j] (the residual stream); SWIGLU: W's rows are gate and up rows in turn (kept so by NativeStep),
 * y[r, j / 2] = silu(v[j]) * v[j + 1], the down product's input (rounded to bfloat16 when it is read). */
static inline void emit(float *y, int j, const float *v, int n, int mode) {
    if (mode == STORE)
        for (int q = 0; q < n; q++) y[j + q] = v[q];
    else if (mode == ADD)
        for (int q = 0; q < n; q++) y[j + q] += v[q];
    else
        for (int q = 0; q + 1 < n; q += 2) y[(j + q) / 2] = v[q] / (1.0f + expf(-v[q])) * v[q + 1];
}

/* The dot products of a product, by kernel: one row of W against n (1 to 4) rows of x, stride bytes apart, each of
 * W's values read once for all n. Weights are read in their order in memory (a step streams ~270 MB in bfloat16:
 * reading four rows of W side by side instead halved the bandwidth a thread gets). A bfloat16 output has two float32
 * sums, even and odd blocks of the row, added at the end: its order does not depend on n, so a row's values do not
 * depend on the rows beside it (int8's integer sums are exact in any order). */
typedef struct {
    int int8;           /* 0: bfloat16 weights, inputs rounded to bfloat16; 1: int8 weights and inputs */
    size_t input_bytes; /* one value of x: float32 (AVX2), bfloat16 (AVX512-BF16) or uint8 (int8) */
    void (*sums)(const void *w, int k, const char *x, size_t stride, int n, void *out); /* float or int32 [n] */
} Kernel;

#define INLINE static inline __attribute__((always_inline))
/* n known to the compiler: the loops over rows unrolled, the sums in registers */
#define BY_ROWS(name, inner)                                                                 \
    static void name(const void *w, int k, const char *x, size_t stride, int n, void *out) { \
        switch (n) {                                                                         \
        case 1: inner(w, k, x, stride, 1, out); break;                                       \
        case 2: inner(w, k, x, stride, 2, out); break;                                       \
        case 3: inner(w, k, x, stride, 3, out); break;                                       \
        default: inner(w, k, x, stride, 4, out);                                             \
        }                                                                                    \
    }

INLINE void sums_avx2(const bf16 *w, int k, const char *x, size_t stride, int n, float *out) {
    /* 8 weights at a time widened to float32 and multiplied and added in float32 (k a multiple of 8) */
    __m256 a[4], b[4];
    for (int r = 0; r < n; r++) a[r] = b[r] = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= k; i += 16) {
        __m256 w0 = load_bf16(w + i), w1 = load_bf16(w + i + 8);
        for (int r = 0; r < n; r++) {
            const float *xr = (const float *)(x + r * stride);
            a[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xr + i), a[r]);
            b[r] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xr + i + 8), b[r]);
        }
    }
    if (i < k) {
        __m256 w0 = load_bf16(w + i);
        for (int r = 0; r < n; r++) a[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps((const float *)(x + r * stride) + i), a[r]);
    }
    for (int r = 0; r < n; r++) out[r] = hsum(_mm256_add_ps(a[r], b[r]));
}
BY_ROWS(kernel_avx2, sums_avx2)

/* AVX512-BF16 (k a multiple of 32): vdpbf16ps multiplies 32 pairs of bfloat16 values and adds them, two by two, to
 * 16 float32 sums, each product exact and each addition rounded: the sums oneDNN's bfloat16 products make. */
#define DP __attribute__((target("avx512f,avx512bf16")))

DP INLINE __m512 dp(__m512 acc, const bf16 *w, const char *x) {
    return _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512(w), (__m512bh)_mm512_loadu_si512(x));
}

DP INLINE void sums_dp(const bf16 *w, int k, const char *x, size_t stride, int n, float *out) {
    __m512 a[4], b[4];
    for (int r = 0; r < n; r++) a[r] = b[r] = _mm512_setzero_ps();
    int i = 0;
    for (; i + 64 <= k; i += 64)
        for (int r = 0; r < n; r++) {
            const char *xr = x + r * stride + 2 * (size_t)i;
            a[r] = dp(a[r], w + i, xr);
            b[r] = dp(b[r], w + i + 32, xr + 64);
        }
    if (i < k)
        for (int r = 0; r < n; r++) a[r] = dp(a[r], w + i, x + r * stride + 2 * (size_t)i);
    for (int r = 0; r < n; r++) out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a[r], b[r]));
}
DP BY_ROWS(kernel_dp, sums_dp)

/* int8 (AVX2, k a multiple of 32): 32 inputs in [0, 128] times 32 weights in [-128, 127], added in pairs to 16-bit
 * sums (2 * 128 * -128 at the least: vpmaddubsw cannot saturate), then in fours to 32-bit ones: exact sums. */
INLINE void sums_int8(const int8_t *w, int k, const char *x, size_t stride, int n, int32_t *out) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i a[4];
    for (int r = 0; r < n; r++) a[r] = _mm256_setzero_si256();
    for (int i = 0; i < k; i += 32) {
        __m256i wv = _mm256_loadu_si256((const __m256i *)(w + i));
        for (int r = 0; r < n; r++) {
            __m256i xv = _mm256_loadu_si256((const __m256i *)(x + r * stride + i));
            a[r] = _mm256_add_epi32(a[r], _mm256_madd_epi16(_mm256_maddubs_epi16(xv, wv), ones));
        }
    }
    for (int r = 0; r < n; r++) {
        __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a[r]), _mm256_extracti128_si256(a[r], 1));
        s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
        out[r] = _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1)));
    }
}
BY_ROWS(kernel_int8, sums_int8)

/* int8 with AVX512-VNNI (k a multiple of 64): vpdpbusd multiplies 64 pairs and adds them in fours to 16 sums, in
 * one instruction where AVX2 takes three for 32 pairs; the same exact sums. */
#define VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))

VNNI INLINE void sums_vnni(const int8_t *w, int k, const char *x, size_t stride, int n, int32_t *out) {
    __m512i a[4];
    for (int r = 0; r < n; r++) a[r] = _mm512_setzero_si512();
    for (int i = 0; i < k; i += 64) {
        __m512i wv = _mm512_loadu_si512(w + i);
        for (int r = 0; r < n; r++) a[r] = _mm512_dpbusd_epi32(a[r], _mm512_loadu_si512(x + r * stride + i), wv);
    }
    for (int r = 0; r < n; r++) out[r] = _mm512_reduce_add_epi32(a[r]);
}
VNNI BY_ROWS(kernel_vnni, sums_vnni)

static const Kernel KERNELS[] = {
    {0, sizeof(float), kernel_avx2},
    {0, sizeof(bf16), kernel_dp},
    {1, sizeof(uint8_t), kernel_int8},
    {1, sizeof(uint8_t), kernel_vnni},
};

/* int8 inputs, as core.quantization.Int8Linear has fbgemm quantize them: each row divided by its largest magnitude,
 * then quantized over [-1, 1] in 7 bits (reduce_range): scale 2/127, zero point 64. */
#define INPUT_SCALE ((float)(2.0 / 127.0))
#define ZERO_POINT 64

/* The products' inputs of one thread, as the kernel takes them: rows of x, and each row's scale (int8). */
typedef struct {
    char *x;
    float *scale;
} Input;

/* Row r of a product's input from x[n]: rounded to bfloat16, or quantized to int8 with its scale. */
static void take(const Kernel *kn, const float *x, int n, Input *in, int r) {
    void *row = in->x + (size_t)r * n * kn->input_bytes;
    if (kn->int8) {
        const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
        __m256 most = _mm256_setzero_ps();
        for (int i = 0; i < n; i += 8) most = _mm256_max_ps(most, _mm256_and_ps(_mm256_loadu_ps(x + i), magnitude));
        float lanes[8], top = FLT_MIN; /* Int8Linear's clamp(min=tiny) */
        _mm256_storeu_ps(lanes, most);
        for (int i = 0; i < 8; i++) top = fmaxf(top, lanes[i]);
        in->scale[r] = top;
        /* 8 at a time, n a multiple of 8: x / top as Int8Linear divides, then one rounding of (x / top) * 63.5 + 64
         * as fbgemm's quantizer makes it; a row's largest value gives 128, which uint8 keeps */
        const __m256 scale = _mm256_set1_ps(top), inverse = _mm256_set1_ps(1.0f / INPUT_SCALE);
        const __m256 zero = _mm256_set1_ps((float)ZERO_POINT);
        const __m256i low = _mm256_setzero_si256(), high = _mm256_set1_epi32(255);
        const __m256i bytes = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8,
                                               12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
        const __m256i halves = _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1);
        uint8_t *q = row;
        for (int i = 0; i < n; i += 8) {
            __m256 v = _mm256_fmadd_ps(_mm256_div_ps(_mm256_loadu_ps(x + i), scale), inverse, zero);
            __m256i k = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(v), low), high);
            k = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(k, bytes), halves);
            _mm_storel_epi64((__m128i *)(q + i), _mm256_castsi256_si128(k));
        }
    } else if (kn->input_bytes == sizeof(float)) {
        float *o = row;
        for (int i = 0; i < n; i++) o[i] = round_bf16(x[i]);
    } else {
        bf16 *o = row;
        for (int i = 0; i < n; i++) {
            float v = round_bf16(x[i]);
            uint32_t u;
            memcpy(&u, &v, 4);
            o[i] = (bf16)(u >> 16);
        }
    }
}

/* The outputs j in [first, last) of W x[r] for every row r, W [n, k], x [rows, k] as ``take`` made it, handed to
 * emit (first, last and, for SWIGLU, n even): bfloat16, round_bf16(sum + bias); int8, as Int8Linear computes them
 * from fbgemm's integer sums, (sum - zero) * scale * the row's scale + bias. Four rows of W at a time against four
 * rows of x at a time, the four rows of W read from memory for the first four rows of x and from the cache after. */
static void product(const Kernel *kn, const Matrix *M, const Input *in, int rows, int k, int first, int last,
                    float *y, int y_stride, int mode) {
    const size_t stride = (size_t)k * kn->input_bytes, row_bytes = (size_t)k * (kn->int8 ? 1 : sizeof(bf16));
    const float *bias = M->bias;
    union {
        float f[4];
        int32_t i[4];
    } sums[4];
    float v[4];
    for (int j = first; j < last; j += 4) {
        const int nw = last - j < 4 ? last - j : 4;
        for (int r0 = 0; r0 < rows; r0 += 4) {
            const int nx = rows - r0 < 4 ? rows - r0 : 4;
            for (int q = 0; q < nw; q++)
                kn->sums((const char *)M->weight + (j + q) * row_bytes, k, in->x + r0 * stride, stride, nx, &sums[q]);
            for (int r = 0; r < nx; r++) {
                for (int q = 0; q < nw; q++)
                    if (kn->int8) {
                        float f = (float)(sums[q].i[r] - M->zero[j + q]) * M->scale[j + q] * in->scale[r0 + r];
                        v[q] = bias ? f + bias[j + q] : f;
                    } else
                        v[q] = round_bf16(bias ? sums[q].f[r] + bias[j + q] : sums[q].f[r]);
                emit(y + (size_t)(r0 + r) * y_stride, j, v, nw, mode);
            }
        }
    }
}

/* This thread's share of [0, n) in blocks of 4 rows. */
static void share(int n, int thread, int threads, int *first, int *last) {
    int blocks = (n + 3) / 4, per = blocks / threads, extra = blocks % threads;
    int b0 = thread * per + (thread < extra ? thread : extra);
    int b1 = b0 + per + (thread < extra ? 1 : 0);
    *first = b0 * 4 < n ? b0 * 4 : n;
    *last = b1 * 4 < n ? b1 * 4 : n;
}

static void rotate(float *x, const float *cos, const float *sin, int dim) {
    /* x * cos + roll(x, dim / 2) * signed_sin, as serving.engine.lean does it */
    float tmp[512];
    int half = dim / 2;
    for (int i = 0; i < dim; i++) tmp[i] = x[i] * cos[i] + x[(i + half) % dim] * sin[i];
    memcpy(x, tmp, sizeof(float) * dim);
}

/* The widest input of a product: max(hidden, intermediate, heads * dim). */
static int widest(const Model *m) {
    int wide = m->hidden > m->intermediate ? m->hidden : m->intermediate;
    return m->heads * m->head_dim > wide ? m->heads * m->head_dim : wide;
}

size_t native_scratch_floats(const Model *m, int rows, int columns, int threads) {
    const int wide = widest(m);
    size_t qkv = (size_t)(m->heads + 2 * m->kv_heads) * m->head_dim;
    return (size_t)rows * (m->hidden + qkv + m->heads * m->head_dim + m->intermediate) +
           (size_t)threads * (columns + wide) + (size_t)threads * rows * (wide + 1);
}

/* One decoding step: ids and positions [rows], the float32 logits [rows, vocab] of the next token. */
int native_step(const Model *m, const Cache *c, int rows, const int64_t *ids, const int64_t *positions,
                float *scratch, int threads, float *logits) {
    const int H = m->hidden, D = m->head_dim, heads = m->heads, kvh = m->kv_heads, I = m->intermediate;
    const int width = (heads + 2 * kvh) * D, group = heads / kvh;
    const int wide = widest(m);
    const Kernel *kn = &KERNELS[m->kernel];
    Work w;
    w.hidden = scratch;
    w.qkv = w.hidden + (size_t)rows * H;
    w.attn = w.qkv + (size_t)rows * width;
    w.act = w.attn + (size_t)rows * heads * D;
    w.scores = w.act + (size_t)rows * I;
    w.normed = w.scores + (size_t)threads * c->columns;
    w.xb = w.normed + (size_t)threads * wide;
    w.xscale = w.xb + (size_t)threads * rows * wide;
    for (int r = 0; r < rows; r++) memcpy(w.hidden + (size_t)r * H, m->embed + (size_t)ids[r] * H, sizeof(float) * H);
    const size_t row_stride = (size_t)kvh * c->columns * D, head_stride = (size_t)c->columns * D;

#pragma omp parallel num_threads(threads)
    {
        int t, nt;
        t = omp_get_thread_num();
        nt = omp_get_num_threads();
        Input in = {(char *)(w.xb + (size_t)t * rows * wide), w.xscale + (size_t)t * rows};
        float *scores = w.scores + (size_t)t * c->columns;
        float *normed = w.normed + (size_t)t * wide;
        int first, last;
        for (int l = 0; l < m->layers; l++) {
            /* attention's input: every thread norms every row itself (no barrier) */
            for (int r = 0; r < rows; r++) {
                rms_norm(w.hidden + (size_t)r * H, m->norm_in[l], m->eps, H, normed);
                take(kn, normed, H, &in, r);
            }
            share(width, t, nt, &first, &last);
            product(kn, &m->qkv[l], &in, rows, H, first, last, w.qkv, width, STORE);
#pragma omp barrier
            /* rotary embedding, the cache's new column and attention, by (row, key/value head) */
            for (int job = t; job < rows * kvh; job += nt) {
                int r = job / kvh, g = job % kvh;
                float *q = w.qkv + (size_t)r * width, *k = q + (size_t)(heads + g) * D, *v = q + (size_t)(heads + kvh + g) * D;
                const float *cs = m->cos + (size_t)positions[r] * D, *sn = m->sin + (size_t)positions[r] * D;
                rotate(k, cs, sn, D);
                float *keys = c->keys[l] + r * row_stride + g * head_stride;
                float *values = c->values[l] + r * row_stride + g * head_stride;
                memcpy(keys + (size_t)c->write * D, k, sizeof(float) * D);
                memcpy(values + (size_t)c->write * D, v, sizeof(float) * D);
                const float *mask = c->mask + (size_t)r * c->columns;
                for (int h = g * group; h < (g + 1) * group; h++) {
                    float *qh = q + (size_t)h * D;
                    rotate(qh, cs, sn, D);
                    float top = -INFINITY;
                    for (int col = c->start; col < c->end; col++) {
                        const float *kc = keys + (size_t)col * D;
                        __m256 a = _mm256_setzero_ps();
                        for (int i = 0; i < D; i += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(qh + i), _mm256_loadu_ps(kc + i), a);
                        float s = hsum(a) * m->scaling + mask[col];
                        scores[col - c->start] = s;
                        if (s > top) top = s;
                    }
                    float total = 0.0f;
                    for (int col = 0; col < c->end - c->start; col++) total += (scores[col] = expf(scores[col] - top));
                    float inv = 1.0f / total;
                    float *out = w.attn + ((size_t)r * heads + h) * D;
                    for (int i0 = 0; i0 < D; i0 += 64) { /* 64 columns of the head at a time: 8 registers */
                        int n = D - i0 < 64 ? (D - i0) / 8 : 8;
                        __m256 acc[8];
                        for (int i = 0; i < n; i++) acc[i] = _mm256_setzero_ps();
                        for (int col = c->start; col < c->end; col++) {
                            __m256 p = _mm256_set1_ps(scores[col - c->start] * inv);
                            const float *vc = values + (size_t)col * D + i0;
                            for (int i = 0; i < n; i++) acc[i] = _mm256_fmadd_ps(p, _mm256_loadu_ps(vc + 8 * i), acc[i]);
                        }
                        for (int i = 0; i < n; i++) _mm256_storeu_ps(out + i0 + 8 * i, acc[i]);
                    }
                }
            }
#pragma omp barrier
            for (int r = 0; r < rows; r++)
                take(kn, w.attn + (size_t)r * heads * D, heads * D, &in, r);
            share(H, t, nt, &first, &last);
            product(kn, &m->o[l], &in, rows, heads * D, first, last, w.hidden, H, ADD);
#pragma omp barrier
            for (int r = 0; r < rows; r++) {
                rms_norm(w.hidden + (size_t)r * H, m->norm_post[l], m->eps, H, normed);
                take(kn, normed, H, &in, r);
            }
            share(2 * I, t, nt, &first, &last);
            product(kn, &m->gate_up[l], &in, rows, H, first, last, w.act, I, SWIGLU);
#pragma omp barrier
            for (int r = 0; r < rows; r++) take(kn, w.act + (size_t)r * I, I, &in, r);
            share(H, t, nt, &first, &last);
            product(kn, &m->down[l], &in, rows, I, first, last, w.hidden, H, ADD);
#pragma omp barrier
        }
        for (int r = 0; r < rows; r++) {
            rms_norm(w.hidden + (size_t)r * H, m->norm_final, m->eps, H, normed);
            take(kn, normed, H, &in, r);
        }
        share(m->vocab, t, nt, &first, &last);
        product(kn, m->lm_head, &in, rows, H, first, last, logits, m->vocab, STORE);
    }
    return 0;
}
