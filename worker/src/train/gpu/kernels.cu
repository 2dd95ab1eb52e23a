// The trainer's kernels, compiled at run time by NVRTC (worker/src/train/gpu/cuda.rs). Each
// one mirrors an operation of host.rs; the matrix products are cuBLAS's. Matrices are
// row-major. Launches are 1-D with 256 threads per block; the reductions (sum_into) run as a
// single block of exactly 256 threads, in a fixed order.

#define THREADS 256

extern "C" __global__ void gather_rows(const float* x, const unsigned* y, const unsigned* order,
                                       unsigned start, unsigned rows, unsigned d, float* xb,
                                       unsigned* yb) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)rows * d) return;
    unsigned r = (unsigned)(i / d), c = (unsigned)(i % d);
    size_t src = order[start + r];
    xb[i] = x[src * d + c];
    if (c == 0) yb[r] = y[src];
}

extern "C" __global__ void bias_act(float* z, const float* b, unsigned rows, unsigned cols,
                                    int relu) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)rows * cols) return;
    float v = z[i] + b[i % cols];
    z[i] = relu ? fmaxf(v, 0.0f) : v;
}

// One thread per row: the delta (p - onehot(y)) / rows and the row's cross-entropy.
extern "C" __global__ void softmax_loss(const float* s, const unsigned* y, unsigned rows,
                                        unsigned k, float* delta, float* loss) {
    unsigned r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    const float* row = s + (size_t)r * k;
    float mx = row[0];
    for (unsigned j = 1; j < k; j++) mx = fmaxf(mx, row[j]);
    float sum = 0.0f;
    for (unsigned j = 0; j < k; j++) sum += expf(row[j] - mx);
    float inv = 1.0f / (float)rows;
    unsigned label = y[r];
    for (unsigned j = 0; j < k; j++) {
        float p = expf(row[j] - mx) / sum;
        if (j == label) loss[r] = -logf(fmaxf(p, 1e-7f));
        delta[(size_t)r * k + j] = (p - (j == label ? 1.0f : 0.0f)) * inv;
    }
}

extern "C" __global__ void sigmoid_loss(const float* s, const unsigned* y, unsigned rows,
                                        float* delta, float* loss) {
    unsigned r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    float p = 1.0f / (1.0f + expf(-s[r]));
    float q = fminf(fmaxf(p, 1e-7f), 1.0f - 1e-7f);
    loss[r] = y[r] == 1 ? -logf(q) : -logf(1.0f - q);
    delta[r] = (p - (float)y[r]) / (float)rows;
}

// out[slot] += scale * sum(v[0..n]) (of squares when square); one block of THREADS threads.
extern "C" __global__ void sum_into(const float* v, unsigned n, int square, float scale,
                                    float* out, unsigned slot) {
    __shared__ float part[THREADS];
    unsigned t = threadIdx.x;
    float acc = 0.0f;
    for (unsigned i = t; i < n; i += THREADS) {
        float x = v[i];
        acc += square ? x * x : x;
    }
    part[t] = acc;
    __syncthreads();
    for (unsigned stride = THREADS / 2; stride > 0; stride >>= 1) {
        if (t < stride) part[t] += part[t + stride];
        __syncthreads();
    }
    if (t == 0) out[slot] += scale * part[0];
}

// One thread per column.
extern "C" __global__ void col_sum(const float* m, unsigned rows, unsigned cols, float* out) {
    unsigned c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float acc = 0.0f;
    for (unsigned r = 0; r < rows; r++) acc += m[(size_t)r * cols + c];
    out[c] = acc;
}

extern "C" __global__ void relu_mask(float* delta, const float* act, unsigned n) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n && act[i] <= 0.0f) delta[i] = 0.0f;
}

extern "C" __global__ void sgd_update(float* w, const float* g, float* m, unsigned n, float lr,
                                      float momentum, float l2) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gi = g[i] + l2 * w[i];
    m[i] = momentum * m[i] + gi;
    w[i] -= lr * m[i];
}

extern "C" __global__ void adam_update(float* w, const float* g, float* m, float* v, unsigned n,
                                       float lr, float beta1, float beta2, float eps, float c1,
                                       float c2, float l2) {
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float gi = g[i] + l2 * w[i];
    m[i] = beta1 * m[i] + (1.0f - beta1) * gi;
    v[i] = beta2 * v[i] + (1.0f - beta2) * gi * gi;
    w[i] -= lr * (m[i] / c1) / (sqrtf(v[i] / c2) + eps);
}

// One thread per row: scores to probabilities in place.
extern "C" __global__ void probabilities(float* s, unsigned rows, unsigned k, int sigmoid) {
    unsigned r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    if (sigmoid) {
        s[r] = 1.0f / (1.0f + expf(-s[r]));
        return;
    }
    float* row = s + (size_t)r * k;
    float mx = row[0];
    for (unsigned j = 1; j < k; j++) mx = fmaxf(mx, row[j]);
    float sum = 0.0f;
    for (unsigned j = 0; j < k; j++) {
        row[j] = expf(row[j] - mx);
        sum += row[j];
    }
    for (unsigned j = 0; j < k; j++) row[j] /= sum;
}
