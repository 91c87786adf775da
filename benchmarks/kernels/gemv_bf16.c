/* y = W x for one row x: W bfloat16 [n, k] row-major, x bfloat16 [k], y float32 [n]; k a multiple of 32.
 *
 * A candidate for the batch-1 products of a decoding step on AVX512-BF16 CPUs (benchmarks/products.py measures it
 * against the oneDNN-packed products the engine runs). Each thread takes a contiguous share of W's rows, ROWS rows
 * at a time, and streams them once: one VDPBF16PS per 32 weights, x re-read from L1, the next rows prefetched
 * ahead of the loads, so that the loop is bound by how fast memory delivers W and nothing else.
 * Built by the benchmark: gcc -O3 -mavx512f -mavx512bf16 -fopenmp -shared -fPIC. */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#ifndef ROWS
#define ROWS 4 /* rows a thread streams at once */
#endif
#ifndef AHEAD
#define AHEAD 512 /* bytes ahead of the loads that each row is prefetched (0: the hardware's prefetch alone) */
#endif

static void block(const uint16_t *w, const uint16_t *x, float *y, int k) {
    __m512 acc[ROWS];
    for (int r = 0; r < ROWS; r++) acc[r] = _mm512_setzero_ps();
    for (int i = 0; i < k; i += 32) {
        __m512bh xv = (__m512bh)_mm512_loadu_si512(x + i);
        for (int r = 0; r < ROWS; r++) {
            const uint16_t *row = w + (size_t)r * k + i;
            if (AHEAD) _mm_prefetch((const char *)row + AHEAD, _MM_HINT_T0);
            acc[r] = _mm512_dpbf16_ps(acc[r], (__m512bh)_mm512_loadu_si512(row), xv);
        }
    }
    for (int r = 0; r < ROWS; r++) y[r] = _mm512_reduce_add_ps(acc[r]);
}

static void row1(const uint16_t *w, const uint16_t *x, float *y, int k) {
    __m512 acc = _mm512_setzero_ps();
    for (int i = 0; i < k; i += 32)
        acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_loadu_si512(w + i), (__m512bh)_mm512_loadu_si512(x + i));
    *y = _mm512_reduce_add_ps(acc);
}

void gemv_bf16(const uint16_t *w, const uint16_t *x, float *y, int n, int k, int threads) {
    int blocks = n / ROWS;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int b = 0; b < blocks; b++) block(w + (size_t)b * ROWS * k, x, y + (size_t)b * ROWS, k);
    for (int r = blocks * ROWS; r < n; r++) row1(w + (size_t)r * k, x, y + r, k);
}
