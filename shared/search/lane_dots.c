/* Exact-order float64 dot products of float32 rows: shared.search.dots' lane order, compiled.
 *
 * Pair p is x[rows[p]] . q[qrows[p]]. Every product of two float32 values is exact in float64,
 * so the only roundings are the additions, and their order is fixed: element k goes to lane
 * k % 16, each lane adds its elements in increasing k starting from +0.0, and the 16 lanes are
 * then added one after another, lane 0 first. shared/search/dots.py computes the same order
 * with NumPy; the two agree to the bit (tests/recommendations/test_dots.py), so the web tier
 * (NumPy) and the workers (this) rank the same pairs the same way.
 *
 * A fused multiply-add gives the same bits as a multiply and an add here (the product is
 * exact), so the compiler may contract; nothing may reassociate (no -ffast-math). Built by
 * scripts/build_native.sh; target_clones picks AVX-512 or AVX2 at load time, with the same
 * results (the lanes are the vector type's, not the machine's).
 */
#include <stdint.h>
#include <string.h>

#define LANES 16

typedef float v16f __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));
typedef double v8d __attribute__((vector_size(64)));

static inline void load_halves(const float *at, v8d *lo, v8d *hi) {
    v16f v;
    memcpy(&v, at, sizeof v);
    v8f a = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]};
    v8f b = {v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]};
    *lo = __builtin_convertvector(a, v8d);
    *hi = __builtin_convertvector(b, v8d);
}

static inline double finish(const v8d *lo, const v8d *hi, const float *a, const float *b, int64_t full,
                            int64_t dim) {
    double lanes[LANES];
    memcpy(lanes, lo, sizeof *lo);
    memcpy(lanes + 8, hi, sizeof *hi);
    for (int64_t l = 0; full + l < dim; l++) {
        lanes[l] += (double)a[full + l] * (double)b[full + l];
    }
    double sum = lanes[0];
    for (int l = 1; l < LANES; l++) {
        sum += lanes[l];
    }
    return sum;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define CLONES
#endif

CLONES
void lane_pair_dots(const float *x, const int64_t *rows, const float *q, const int64_t *qrows,
                    int64_t pairs, int64_t dim, double *out) {
    const int64_t full = dim - dim % LANES;
    int64_t p = 0;
    /* Two pairs at a time: four independent chains keep the adders busy. */
    for (; p + 1 < pairs; p += 2) {
        const float *a0 = x + rows[p] * dim, *b0 = q + qrows[p] * dim;
        const float *a1 = x + rows[p + 1] * dim, *b1 = q + qrows[p + 1] * dim;
        v8d s0 = {0}, t0 = {0}, s1 = {0}, t1 = {0};
        for (int64_t k = 0; k < full; k += LANES) {
            v8d xa, xb, ya, yb;
            load_halves(a0 + k, &xa, &xb);
            load_halves(b0 + k, &ya, &yb);
            s0 += xa * ya;
            t0 += xb * yb;
            load_halves(a1 + k, &xa, &xb);
            load_halves(b1 + k, &ya, &yb);
            s1 += xa * ya;
            t1 += xb * yb;
        }
        out[p] = finish(&s0, &t0, a0, b0, full, dim);
        out[p + 1] = finish(&s1, &t1, a1, b1, full, dim);
    }
    for (; p < pairs; p++) {
        const float *a0 = x + rows[p] * dim, *b0 = q + qrows[p] * dim;
        v8d s0 = {0}, t0 = {0};
        for (int64_t k = 0; k < full; k += LANES) {
            v8d xa, xb, ya, yb;
            load_halves(a0 + k, &xa, &xb);
            load_halves(b0 + k, &ya, &yb);
            s0 += xa * ya;
            t0 += xb * yb;
        }
        out[p] = finish(&s0, &t0, a0, b0, full, dim);
    }
}

static inline void load_doubles(const double *at, v8d *lo, v8d *hi) {
    memcpy(lo, at, sizeof *lo);
    memcpy(hi, at + 8, sizeof *hi);
}

static inline double finish64(const v8d *lo, const v8d *hi, const float *a, const double *b,
                              int64_t full, int64_t dim) {
    double lanes[LANES];
    memcpy(lanes, lo, sizeof *lo);
    memcpy(lanes + 8, hi, sizeof *hi);
    for (int64_t l = 0; full + l < dim; l++) {
        lanes[l] += (double)a[full + l] * b[full + l];
    }
    double sum = lanes[0];
    for (int l = 1; l < LANES; l++) {
        sum += lanes[l];
    }
    return sum;
}

/* The same dots with the queries already in float64 (each float32 value converted exactly):
 * a query dotted with many rows is converted once instead of once a pair. */
CLONES
void lane_pair_dots_q64(const float *x, const int64_t *rows, const double *q,
                        const int64_t *qrows, int64_t pairs, int64_t dim, double *out) {
    const int64_t full = dim - dim % LANES;
    int64_t p = 0;
    for (; p + 1 < pairs; p += 2) {
        const float *a0 = x + rows[p] * dim, *a1 = x + rows[p + 1] * dim;
        const double *b0 = q + qrows[p] * dim, *b1 = q + qrows[p + 1] * dim;
        v8d s0 = {0}, t0 = {0}, s1 = {0}, t1 = {0};
        for (int64_t k = 0; k < full; k += LANES) {
            v8d xa, xb, ya, yb;
            load_halves(a0 + k, &xa, &xb);
            load_doubles(b0 + k, &ya, &yb);
            s0 += xa * ya;
            t0 += xb * yb;
            load_halves(a1 + k, &xa, &xb);
            load_doubles(b1 + k, &ya, &yb);
            s1 += xa * ya;
            t1 += xb * yb;
        }
        out[p] = finish64(&s0, &t0, a0, b0, full, dim);
        out[p + 1] = finish64(&s1, &t1, a1, b1, full, dim);
    }
    for (; p < pairs; p++) {
        const float *a0 = x + rows[p] * dim;
        const double *b0 = q + qrows[p] * dim;
        v8d s0 = {0}, t0 = {0};
        for (int64_t k = 0; k < full; k += LANES) {
            v8d xa, xb, ya, yb;
            load_halves(a0 + k, &xa, &xb);
            load_doubles(b0 + k, &ya, &yb);
            s0 += xa * ya;
            t0 += xb * yb;
        }
        out[p] = finish64(&s0, &t0, a0, b0, full, dim);
    }
}
