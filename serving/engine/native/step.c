/* One decoding step of a Llama-family model in bfloat16, on the CPU, in one native loop (serving.engine.native).
 *
 * The lean step in PyTorch (serving.engine.lean) dispatches about 1,500 operations at batch 1; with two cores
 * their dispatch and the Python between them are a third of the step, and every product waits for its own
 * threads to start. Here the whole step is one OpenMP parallel region: each product's output rows are shared
 * among the threads, the small operations (norms, rotary embedding, SiLU) are recomputed by every thread where
 * that is cheaper than waiting for one, attention is shared by (row, key/value head), and the threads meet only
 * where one needs what another wrote: five barriers a layer.
 *
 * Values are those of the engine's bfloat16 path (kernels.PackedLinear): weights in bfloat16, each product's input
 * rounded to bfloat16, products accumulated in float32 and their outputs rounded to bfloat16; activations, norms,
 * attention and the KV cache in float32. Only the order of the sums inside a product differs from oneDNN's.
 *
 * Built by serving/engine/native/__init__.py: cc -O3 -mavx2 -mfma -fopenmp (x86-64 with AVX2 and FMA). */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef uint16_t bf16;

/* The weights: plain row-major bfloat16 [out, in], one pointer per product and layer. */
typedef struct {
    int layers, hidden, heads, kv_heads, head_dim, intermediate, vocab;
    float eps, scaling;
    const float *embed;                     /* [vocab, hidden] float32 */
    const bf16 **qkv, **o, **gate_up, **down; /* per layer; gate_up's rows: gate and up rows in turn */
    const float **qkv_bias;                 /* per layer, or NULL entries: bias rounded to bfloat16, as float32 */
    const float **norm_in, **norm_post;     /* per layer [hidden] */
    const float *norm_final;                /* [hidden] */
    const bf16 *lm_head;                    /* [vocab, hidden] */
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
    float *act;     /* [rows, intermediate] SiLU(gate) * up, rounded to bfloat16: the down product's input */
    float *scores;  /* [threads, columns] */
    float *normed;  /* [threads, max(hidden, intermediate, heads * dim)] a norm's output */
    float *xb;      /* [threads, rows, max(hidden, intermediate, heads * dim)] a product's input, rounded to bfloat16 */
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

static void round_all(const float *x, float *out, int n) {
    for (int i = 0; i < n; i++) out[i] = round_bf16(x[i]);
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

/* What a product does with its outputs v[j] = round_bf16(W[j] . x[r] + bias[j]): STORE y[r, j] = v[j]; ADD
 * y[r, j] += v[j] (the residual stream); SWIGLU: W's rows are gate and up rows in turn (kept so by NativeStep),
 * y[r, j / 2] = round_bf16(silu(v[j]) * v[j + 1]), the down product's input. */
static inline void emit(float *y, int j, const float *v, int n, int mode) {
    if (mode == STORE)
        for (int q = 0; q < n; q++) y[j + q] = v[q];
    else if (mode == ADD)
        for (int q = 0; q < n; q++) y[j + q] += v[q];
    else
        for (int q = 0; q + 1 < n; q += 2) y[(j + q) / 2] = round_bf16(v[q] / (1.0f + expf(-v[q])) * v[q + 1]);
}

/* The outputs j in [first, last) of W x[r] for every row r, W bfloat16 [n, k], x [rows, k] float32 holding
 * bfloat16 values, k a multiple of 8, handed to emit (first, last and, for SWIGLU, n even). Four rows of W at a
 * time, each read once for every row of x, the next four prefetched meanwhile. */
static void product(const bf16 *w, const float *bias, const float *x, int rows, int k, int first, int last,
                    float *y, int y_stride, int mode) {
    int j = first;
    for (; j + 4 <= last; j += 4) {
        const bf16 *w0 = w + (size_t)j * k;
        int r = 0;
        for (; r + 2 <= rows; r += 2) { /* two rows of x a time: each weight widened once for both */
            const float *xr = x + (size_t)r * k, *xs = xr + k;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
            for (int i = 0; i < k; i += 8) {
                if (r == 0 && (i & 31) == 0)
                    for (int q = 4; q < 8; q++) _mm_prefetch((const char *)(w0 + q * (size_t)k + i), _MM_HINT_T0);
                __m256 xv = _mm256_loadu_ps(xr + i), xw = _mm256_loadu_ps(xs + i);
                __m256 w_0 = load_bf16(w0 + i), w_1 = load_bf16(w0 + k + i);
                __m256 w_2 = load_bf16(w0 + 2 * (size_t)k + i), w_3 = load_bf16(w0 + 3 * (size_t)k + i);
                a0 = _mm256_fmadd_ps(w_0, xv, a0);
                a1 = _mm256_fmadd_ps(w_1, xv, a1);
                a2 = _mm256_fmadd_ps(w_2, xv, a2);
                a3 = _mm256_fmadd_ps(w_3, xv, a3);
                b0 = _mm256_fmadd_ps(w_0, xw, b0);
                b1 = _mm256_fmadd_ps(w_1, xw, b1);
                b2 = _mm256_fmadd_ps(w_2, xw, b2);
                b3 = _mm256_fmadd_ps(w_3, xw, b3);
            }
            float v[4] = {hsum(a0), hsum(a1), hsum(a2), hsum(a3)}, u[4] = {hsum(b0), hsum(b1), hsum(b2), hsum(b3)};
            for (int q = 0; q < 4; q++) {
                v[q] = round_bf16(bias ? v[q] + bias[j + q] : v[q]);
                u[q] = round_bf16(bias ? u[q] + bias[j + q] : u[q]);
            }
            emit(y + (size_t)r * y_stride, j, v, 4, mode);
            emit(y + (size_t)(r + 1) * y_stride, j, u, 4, mode);
        }
        for (; r < rows; r++) { /* the same sums in the same order: a row's values do not depend on its pairing */
            const float *xr = x + (size_t)r * k;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int i = 0; i < k; i += 8) {
                __m256 xv = _mm256_loadu_ps(xr + i);
                if (r == 0 && (i & 31) == 0)
                    for (int q = 4; q < 8; q++) _mm_prefetch((const char *)(w0 + q * (size_t)k + i), _MM_HINT_T0);
                a0 = _mm256_fmadd_ps(load_bf16(w0 + i), xv, a0);
                a1 = _mm256_fmadd_ps(load_bf16(w0 + k + i), xv, a1);
                a2 = _mm256_fmadd_ps(load_bf16(w0 + 2 * (size_t)k + i), xv, a2);
                a3 = _mm256_fmadd_ps(load_bf16(w0 + 3 * (size_t)k + i), xv, a3);
            }
            float v[4] = {hsum(a0), hsum(a1), hsum(a2), hsum(a3)};
            for (int q = 0; q < 4; q++) v[q] = round_bf16(bias ? v[q] + bias[j + q] : v[q]);
            emit(y + (size_t)r * y_stride, j, v, 4, mode);
        }
    }
    for (int r = 0; r < rows && j < last; r++) {
        float v[4];
        for (int q = 0; q < last - j; q++) {
            __m256 a = _mm256_setzero_ps();
            for (int i = 0; i < k; i += 8)
                a = _mm256_fmadd_ps(load_bf16(w + (size_t)(j + q) * k + i), _mm256_loadu_ps(x + (size_t)r * k + i), a);
            v[q] = round_bf16(bias ? hsum(a) + bias[j + q] : hsum(a));
        }
        emit(y + (size_t)r * y_stride, j, v, last - j, mode);
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

size_t native_scratch_floats(const Model *m, int rows, int columns, int threads) {
    int wide = m->hidden > m->intermediate ? m->hidden : m->intermediate;
    if (m->heads * m->head_dim > wide) wide = m->heads * m->head_dim;
    size_t qkv = (size_t)(m->heads + 2 * m->kv_heads) * m->head_dim;
    return (size_t)rows * (m->hidden + qkv + m->heads * m->head_dim + m->intermediate) +
           (size_t)threads * (columns + wide) + (size_t)threads * rows * wide;
}

/* One decoding step: ids and positions [rows], the float32 logits [rows, vocab] of the next token. */
int native_step(const Model *m, const Cache *c, int rows, const int64_t *ids, const int64_t *positions,
                float *scratch, int threads, float *logits) {
    const int H = m->hidden, D = m->head_dim, heads = m->heads, kvh = m->kv_heads, I = m->intermediate;
    const int width = (heads + 2 * kvh) * D, group = heads / kvh;
    int wide = H > I ? H : I;
    if (heads * D > wide) wide = heads * D;
    Work w;
    w.hidden = scratch;
    w.qkv = w.hidden + (size_t)rows * H;
    w.attn = w.qkv + (size_t)rows * width;
    w.act = w.attn + (size_t)rows * heads * D;
    w.scores = w.act + (size_t)rows * I;
    w.normed = w.scores + (size_t)threads * c->columns;
    w.xb = w.normed + (size_t)threads * wide;
    for (int r = 0; r < rows; r++) memcpy(w.hidden + (size_t)r * H, m->embed + (size_t)ids[r] * H, sizeof(float) * H);
    const size_t row_stride = (size_t)kvh * c->columns * D, head_stride = (size_t)c->columns * D;

#pragma omp parallel num_threads(threads)
    {
        int t, nt;
        t = omp_get_thread_num();
        nt = omp_get_num_threads();
        float *xb = w.xb + (size_t)t * rows * wide;
        float *scores = w.scores + (size_t)t * c->columns;
        float *normed = w.normed + (size_t)t * wide;
        int first, last;
        for (int l = 0; l < m->layers; l++) {
            /* attention's input: every thread norms every row itself (no barrier) */
            for (int r = 0; r < rows; r++) {
                rms_norm(w.hidden + (size_t)r * H, m->norm_in[l], m->eps, H, normed);
                round_all(normed, xb + (size_t)r * H, H);
            }
            share(width, t, nt, &first, &last);
            product(m->qkv[l], m->qkv_bias ? m->qkv_bias[l] : NULL, xb, rows, H, first, last, w.qkv, width, STORE);
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
            for (int r = 0; r < rows; r++) round_all(w.attn + (size_t)r * heads * D, xb + (size_t)r * heads * D, heads * D);
            share(H, t, nt, &first, &last);
            product(m->o[l], NULL, xb, rows, heads * D, first, last, w.hidden, H, ADD);
#pragma omp barrier
            for (int r = 0; r < rows; r++) {
                rms_norm(w.hidden + (size_t)r * H, m->norm_post[l], m->eps, H, normed);
                round_all(normed, xb + (size_t)r * H, H);
            }
            share(2 * I, t, nt, &first, &last);
            product(m->gate_up[l], NULL, xb, rows, H, first, last, w.act, I, SWIGLU);
#pragma omp barrier
            share(H, t, nt, &first, &last);
            product(m->down[l], NULL, w.act, rows, I, first, last, w.hidden, H, ADD);
#pragma omp barrier
        }
        for (int r = 0; r < rows; r++) {
            rms_norm(w.hidden + (size_t)r * H, m->norm_final, m->eps, H, normed);
            round_all(normed, xb + (size_t)r * H, H);
        }
        share(m->vocab, t, nt, &first, &last);
        product(m->lm_head, NULL, xb, rows, H, first, last, logits, m->vocab, STORE);
    }
    return 0;
}
