// yolo-forge CUDA kernels, compiled at run time by NVRTC (once per process, loaded per device).
// Every kernel is a grid-stride loop over 64-bit indices; semantics mirror the CPU kernels in
// crates/tensor/src/cpu (same op codes as `UnaryOp::code` and `BinaryOp` order).

#define MAXD 8
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif
struct Dims { long long d[MAXD]; };
// A convolution's geometry: n, c_in, h, w, c_out, groups, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw.
struct ConvG { int v[16]; };
// A max-pooling geometry: h, w, oh, ow, kh, kw, sh, sw, ph, pw.
struct PoolG { int v[10]; };
#define POOL_UNPACK(g)                                                                        \
    int h = g.v[0], w = g.v[1], oh = g.v[2], ow = g.v[3], kh = g.v[4], kw = g.v[5],           \
        sh = g.v[6], sw = g.v[7], ph = g.v[8], pw = g.v[9]
#define CONV_UNPACK(g)                                                                        \
    int nimg = g.v[0], c_in = g.v[1], h = g.v[2], w = g.v[3], c_out = g.v[4], groups = g.v[5], \
        kh = g.v[6], kw = g.v[7], oh = g.v[8], ow = g.v[9], sh = g.v[10], sw = g.v[11],        \
        ph = g.v[12], pw = g.v[13], dh = g.v[14], dw = g.v[15];                               \
    (void)nimg; (void)c_in; (void)h; (void)w; (void)c_out; (void)groups; (void)kh; (void)kw;  \
    (void)oh; (void)ow; (void)sh; (void)sw; (void)ph; (void)pw; (void)dh; (void)dw

#define GRID_LOOP(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

__device__ __forceinline__ float sigm(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float softplus_f(float x) { return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x))); }
__device__ __forceinline__ float tanh_softplus(float x) {
    float n = expf(fminf(x, 20.0f));
    float m = n * (n + 2.0f);
    return m / (m + 2.0f);
}

#define SQRT_2_OVER_PI 0.7978845608f
#define FRAC_1_SQRT_2 0.7071067812f
#define FRAC_1_SQRT_2PI 0.3989422804f

__device__ float unary_f(int op, float a, float b, float x) {
    switch (op) {
    case 0: return -x;
    case 1: return expf(x);
    case 2: return logf(x);
    case 3: return sqrtf(x);
    case 4: return fabsf(x);
    case 5: return tanhf(x);
    case 6: return sigm(x);
    case 7: return erff(x);
    case 8: return softplus_f(x);
    case 9: return 1.0f / x;
    case 10: return x * x;
    case 11: return powf(x, a);
    case 12: return fminf(fmaxf(x, a), b);
    case 13: return a * x + b;
    case 14: return fmaxf(x, 0.0f);
    case 15: return fminf(fmaxf(x, 0.0f), 6.0f);
    case 16: return x > 0.0f ? x : a * x;
    case 17: return x > 0.0f ? x : a * (expf(x) - 1.0f);
    case 18: return x * sigm(x);
    case 19: return 0.5f * x * (1.0f + erff(x * FRAC_1_SQRT_2));
    case 20: return x * sigm(2.0f * SQRT_2_OVER_PI * (x + 0.044715f * x * x * x));
    case 21: return x * fminf(fmaxf(x + 3.0f, 0.0f), 6.0f) * (1.0f / 6.0f);
    case 22: return fminf(fmaxf(x + 3.0f, 0.0f), 6.0f) * (1.0f / 6.0f);
    case 23: return x * tanh_softplus(x);
    default: return atanf(x);
    }
}

__device__ float unary_df(int op, float a, float b, float x) {
    switch (op) {
    case 0: return -1.0f;
    case 1: return expf(x);
    case 2: return 1.0f / x;
    case 3: return 0.5f / sqrtf(x);
    case 4: return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f);
    case 5: { float t = tanhf(x); return 1.0f - t * t; }
    case 6: { float s = sigm(x); return s * (1.0f - s); }
    case 7: return 1.1283791671f * expf(-x * x);
    case 8: return sigm(x);
    case 9: return -1.0f / (x * x);
    case 10: return 2.0f * x;
    case 11: return a * powf(x, a - 1.0f);
    case 12: return (x > a && x < b) ? 1.0f : 0.0f;
    case 13: return a;
    case 14: return x > 0.0f ? 1.0f : 0.0f;
    case 15: return (x > 0.0f && x < 6.0f) ? 1.0f : 0.0f;
    case 16: return x > 0.0f ? 1.0f : a;
    case 17: return x > 0.0f ? 1.0f : a * expf(x);
    case 18: { float s = sigm(x); return s * (1.0f + x * (1.0f - s)); }
    case 19: {
        float cdf = 0.5f * (1.0f + erff(x * FRAC_1_SQRT_2));
        return cdf + x * FRAC_1_SQRT_2PI * expf(-0.5f * x * x);
    }
    case 20: {
        float k = 2.0f * SQRT_2_OVER_PI;
        float s = sigm(k * (x + 0.044715f * x * x * x));
        return s + x * s * (1.0f - s) * k * (1.0f + 3.0f * 0.044715f * x * x);
    }
    case 21: return x < -3.0f ? 0.0f : (x > 3.0f ? 1.0f : (2.0f * x + 3.0f) * (1.0f / 6.0f));
    case 22: return (x > -3.0f && x < 3.0f) ? (1.0f / 6.0f) : 0.0f;
    case 23: { float t = tanh_softplus(x); return t + x * (1.0f - t * t) * sigm(x); }
    default: return 1.0f / (1.0f + x * x);
    }
}

extern "C" __global__ void unary_fwd(int op, float a, float b, const float* x, float* y, long long n) {
    GRID_LOOP(i, n) y[i] = unary_f(op, a, b, x[i]);
}

extern "C" __global__ void unary_bwd(int op, float a, float b, const float* x, const float* dy,
                                     float* dx, long long n) {
    GRID_LOOP(i, n) dx[i] = dy[i] * unary_df(op, a, b, x[i]);
}

__device__ __forceinline__ float binary_f(int op, float a, float b) {
    switch (op) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return a / b;
    case 4: return fmaxf(a, b);
    case 5: return fminf(a, b);
    case 6: return powf(a, b);
    case 7: return a == b ? 1.0f : 0.0f;
    case 8: return a > b ? 1.0f : 0.0f;
    case 9: return a >= b ? 1.0f : 0.0f;
    case 10: return a < b ? 1.0f : 0.0f;
    default: return a <= b ? 1.0f : 0.0f;
    }
}

extern "C" __global__ void binary_same(int op, const float* a, const float* b, float* y, long long n) {
    GRID_LOOP(i, n) y[i] = binary_f(op, a[i], b[i]);
}

// y (contiguous over `shape`) = f(a[Σ idx·sa], b[Σ idx·sb]).
extern "C" __global__ void binary_bcast(int op, const float* a, const float* b, float* y, long long n,
                                        int rank, Dims shape, Dims sa, Dims sb) {
    GRID_LOOP(i, n) {
        long long rem = i, oa = 0, ob = 0;
        for (int ax = rank - 1; ax >= 0; --ax) {
            long long k = rem % shape.d[ax];
            rem /= shape.d[ax];
            oa += k * sa.d[ax];
            ob += k * sb.d[ax];
        }
        y[i] = binary_f(op, a[oa], b[ob]);
    }
}

extern "C" __global__ void where_cond(const float* c, const float* a, const float* b, float* y, long long n) {
    GRID_LOOP(i, n) y[i] = c[i] != 0.0f ? a[i] : b[i];
}

extern "C" __global__ void fill(float* y, float v, long long n) {
    GRID_LOOP(i, n) y[i] = v;
}

// For each index of the box `shape`: y[by + Σ idx·sy] = x[bx + Σ idx·sx]. Covers broadcast,
// permute, crop and the parts of concat/pad.
extern "C" __global__ void copy_nd(const float* x, float* y, long long n, int rank, Dims shape,
                                   Dims sx, long long bx, Dims sy, long long by) {
    GRID_LOOP(i, n) {
        long long rem = i, ox = bx, oy = by;
        for (int ax = rank - 1; ax >= 0; --ax) {
            long long k = rem % shape.d[ax];
            rem /= shape.d[ax];
            ox += k * sx.d[ax];
            oy += k * sy.d[ax];
        }
        y[oy] = x[ox];
    }
}

__device__ __forceinline__ float pick_max(float m, float v) { return (v > m || v != v) ? v : m; }
__device__ __forceinline__ float pick_min(float m, float v) { return (v < m || v != v) ? v : m; }

__device__ __forceinline__ long long nd_offset(long long i, int rank, const Dims* shape, const Dims* st) {
    long long rem = i, off = 0;
    for (int ax = rank - 1; ax >= 0; --ax) {
        long long k = rem % shape->d[ax];
        rem /= shape->d[ax];
        off += k * st->d[ax];
    }
    return off;
}

// One output per thread: reduces `rlen` elements (reduced dims rshape/rst) at the output's base
// (kept dims oshape/ost). op 0 sum (f64 accumulator), 1 max, 2 min.
extern "C" __global__ void reduce_thread(int op, const float* x, float* y, long long nout, int orank,
                                         Dims oshape, Dims ost, long long rlen, int rrank, Dims rshape,
                                         Dims rst) {
    GRID_LOOP(o, nout) {
        long long base = nd_offset(o, orank, &oshape, &ost);
        if (op == 0) {
            double s = 0.0;
            for (long long r = 0; r < rlen; ++r) s += (double)x[base + nd_offset(r, rrank, &rshape, &rst)];
            y[o] = (float)s;
        } else {
            float m = op == 1 ? -INFINITY : INFINITY;
            for (long long r = 0; r < rlen; ++r) {
                float v = x[base + nd_offset(r, rrank, &rshape, &rst)];
                m = op == 1 ? pick_max(m, v) : pick_min(m, v);
            }
            y[o] = m;
        }
    }
}

// One output per block of 256 threads (long reductions).
extern "C" __global__ void reduce_block(int op, const float* x, float* y, long long nout, int orank,
                                        Dims oshape, Dims ost, long long rlen, int rrank, Dims rshape,
                                        Dims rst) {
    __shared__ double ssum[256];
    __shared__ float sext[256];
    for (long long o = blockIdx.x; o < nout; o += gridDim.x) {
        long long base = nd_offset(o, orank, &oshape, &ost);
        double s = 0.0;
        float m = op == 1 ? -INFINITY : INFINITY;
        for (long long r = threadIdx.x; r < rlen; r += blockDim.x) {
            float v = x[base + nd_offset(r, rrank, &rshape, &rst)];
            if (op == 0) s += (double)v;
            else m = op == 1 ? pick_max(m, v) : pick_min(m, v);
        }
        ssum[threadIdx.x] = s;
        sext[threadIdx.x] = m;
        __syncthreads();
        for (int w = blockDim.x / 2; w > 0; w >>= 1) {
            if (threadIdx.x < w) {
                ssum[threadIdx.x] += ssum[threadIdx.x + w];
                float v = sext[threadIdx.x + w];
                sext[threadIdx.x] = op == 1 ? pick_max(sext[threadIdx.x], v) : pick_min(sext[threadIdx.x], v);
            }
            __syncthreads();
        }
        if (threadIdx.x == 0) y[o] = op == 0 ? (float)ssum[0] : sext[0];
        __syncthreads();
    }
}

extern "C" __global__ void index_select(const float* x, float* y, long long outer, long long size,
                                        long long inner, const long long* idx, long long nidx) {
    long long n = outer * nidx * inner;
    GRID_LOOP(i, n) {
        long long in = i % inner, j = (i / inner) % nidx, o = i / (inner * nidx);
        y[i] = x[(o * size + idx[j]) * inner + in];
    }
}

// y must be zero-filled; adds row j of x into row idx[j].
extern "C" __global__ void index_add(const float* x, float* y, long long outer, long long size,
                                     long long inner, const long long* idx, long long nidx) {
    long long n = outer * nidx * inner;
    GRID_LOOP(i, n) {
        long long in = i % inner, j = (i / inner) % nidx, o = i / (inner * nidx);
        atomicAdd(&y[(o * size + idx[j]) * inner + in], x[i]);
    }
}

__device__ __forceinline__ long long gather_off(long long flat, int rank, const Dims* ishape,
                                                const Dims* st, int axis, long long along) {
    long long rem = flat, off = 0;
    for (int ax = rank - 1; ax >= 0; --ax) {
        long long k = rem % ishape->d[ax];
        rem /= ishape->d[ax];
        off += (ax == axis ? along : k) * st->d[ax];
    }
    return off;
}

extern "C" __global__ void gather(const float* x, float* y, const long long* index, long long n, int rank,
                                  Dims ishape, Dims st, int axis) {
    GRID_LOOP(i, n) y[i] = x[gather_off(i, rank, &ishape, &st, axis, index[i])];
}

// y holds a copy of the base tensor.
extern "C" __global__ void scatter_add(const float* src, float* y, const long long* index, long long n,
                                       int rank, Dims ishape, Dims st, int axis) {
    GRID_LOOP(i, n) atomicAdd(&y[gather_off(i, rank, &ishape, &st, axis, index[i])], src[i]);
}

// col[((i·K + k)·P + p)] for images [i0, i0+nb) of one group: k = (c·kh + ki)·kw + kj.
extern "C" __global__ void im2col(const float* x, float* col, int nb, int i0, ConvG g) {
    CONV_UNPACK(g);
    int c0 = 0, cin_g = c_in;
    long long P = (long long)oh * ow, K = (long long)cin_g * kh * kw;
    long long n = (long long)nb * K * P;
    GRID_LOOP(t, n) {
        long long p = t % P, k = (t / P) % K, i = t / (P * K);
        int kj = k % kw, ki = (k / kw) % kh, c = k / (kw * kh);
        int oy = p / ow, ox = p % ow;
        int iy = oy * sh - ph + ki * dh, ix = ox * sw - pw + kj * dw;
        float v = 0.0f;
        if (iy >= 0 && iy < h && ix >= 0 && ix < w)
            v = x[(((long long)(i0 + i) * c_in + c0 + c) * h + iy) * w + ix];
        col[t] = v;
    }
}

// The adjoint of im2col for one image and one group: dx[c0+c][y][x] += Σ dcol entries mapping there.
extern "C" __global__ void col2im(const float* col, float* dx, int nb, int i0, ConvG g) {
    CONV_UNPACK(g);
    int c0 = 0, cin_g = c_in;
    long long P = (long long)oh * ow, K = (long long)cin_g * kh * kw;
    long long n = (long long)nb * cin_g * h * w;
    GRID_LOOP(t, n) {
        int ix = t % w, iy = (t / w) % h;
        long long c = (t / ((long long)w * h)) % cin_g, i = t / ((long long)w * h * cin_g);
        float s = 0.0f;
        for (int ki = 0; ki < kh; ++ki) {
            int ty = iy + ph - ki * dh;
            if (ty < 0 || ty % sh != 0) continue;
            int oy = ty / sh;
            if (oy >= oh) continue;
            for (int kj = 0; kj < kw; ++kj) {
                int tx = ix + pw - kj * dw;
                if (tx < 0 || tx % sw != 0) continue;
                int ox = tx / sw;
                if (ox >= ow) continue;
                long long k = (c * kh + ki) * kw + kj;
                s += col[(i * K + k) * P + (long long)oy * ow + ox];
            }
        }
        dx[(((long long)(i0 + i) * c_in + c0 + c) * h + iy) * w + ix] += s;
    }
}

// y[n][c][p] += bias[c]
extern "C" __global__ void add_channel_bias(float* y, const float* bias, long long n, int c, long long hw) {
    GRID_LOOP(i, n) y[i] += bias[(i / hw) % c];
}

// Direct grouped convolution (groups > 1, e.g. depthwise): one output per thread.
extern "C" __global__ void conv_direct(const float* x, const float* wt, const float* bias, float* y, ConvG g) {
    CONV_UNPACK(g);
    int cin_g = c_in / groups, cout_g = c_out / groups;
    long long n = (long long)nimg * c_out * oh * ow;
    GRID_LOOP(t, n) {
        int ox = t % ow, oy = (t / ow) % oh;
        int co = (t / ((long long)ow * oh)) % c_out;
        long long i = t / ((long long)ow * oh * c_out);
        int g = co / cout_g;
        float s = bias ? bias[co] : 0.0f;
        for (int c = 0; c < cin_g; ++c)
            for (int ki = 0; ki < kh; ++ki) {
                int iy = oy * sh - ph + ki * dh;
                if (iy < 0 || iy >= h) continue;
                for (int kj = 0; kj < kw; ++kj) {
                    int ix = ox * sw - pw + kj * dw;
                    if (ix < 0 || ix >= w) continue;
                    s += x[((i * c_in + g * cin_g + c) * h + iy) * w + ix] *
                         wt[(((long long)co * cin_g + c) * kh + ki) * kw + kj];
                }
            }
        y[t] = s;
    }
}

// Gradient of conv_direct w.r.t. its input: one input element per thread.
extern "C" __global__ void conv_direct_bwd_input(const float* dy, const float* wt, float* dx, ConvG g) {
    CONV_UNPACK(g);
    int cin_g = c_in / groups, cout_g = c_out / groups;
    long long n = (long long)nimg * c_in * h * w;
    GRID_LOOP(t, n) {
        int ix = t % w, iy = (t / w) % h;
        int ci = (t / ((long long)w * h)) % c_in;
        long long i = t / ((long long)w * h * c_in);
        int g = ci / cin_g, c = ci % cin_g;
        float s = 0.0f;
        for (int co = g * cout_g; co < (g + 1) * cout_g; ++co)
            for (int ki = 0; ki < kh; ++ki) {
                int ty = iy + ph - ki * dh;
                if (ty < 0 || ty % sh != 0 || ty / sh >= oh) continue;
                for (int kj = 0; kj < kw; ++kj) {
                    int tx = ix + pw - kj * dw;
                    if (tx < 0 || tx % sw != 0 || tx / sw >= ow) continue;
                    s += dy[((i * c_out + co) * oh + ty / sh) * ow + tx / sw] *
                         wt[(((long long)co * cin_g + c) * kh + ki) * kw + kj];
                }
            }
        dx[t] = s;
    }
}

// Gradient of conv_direct w.r.t. its weight: one weight element per block, reduced over N·OH·OW.
extern "C" __global__ void conv_direct_bwd_weight(const float* x, const float* dy, float* dw_out, ConvG g) {
    CONV_UNPACK(g);
    __shared__ float part[256];
    int cin_g = c_in / groups, cout_g = c_out / groups;
    long long nw = (long long)c_out * cin_g * kh * kw;
    long long m = (long long)nimg * oh * ow;
    for (long long e = blockIdx.x; e < nw; e += gridDim.x) {
        int kj = e % kw, ki = (e / kw) % kh, c = (e / ((long long)kw * kh)) % cin_g;
        int co = e / ((long long)kw * kh * cin_g);
        int g = co / cout_g;
        float s = 0.0f;
        for (long long r = threadIdx.x; r < m; r += blockDim.x) {
            int ox = r % ow, oy = (r / ow) % oh;
            long long i = r / ((long long)ow * oh);
            int iy = oy * sh - ph + ki * dh, ix = ox * sw - pw + kj * dw;
            if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
            s += x[((i * c_in + g * cin_g + c) * h + iy) * w + ix] *
                 dy[((i * c_out + co) * oh + oy) * ow + ox];
        }
        part[threadIdx.x] = s;
        __syncthreads();
        for (int k = blockDim.x / 2; k > 0; k >>= 1) {
            if (threadIdx.x < k) part[threadIdx.x] += part[threadIdx.x + k];
            __syncthreads();
        }
        if (threadIdx.x == 0) dw_out[e] = part[0];
        __syncthreads();
    }
}

// Per-channel sums over (N, H, W) of an NCHW tensor: out[c] = Σ x (f64 accumulate), one block per channel.
extern "C" __global__ void channel_sum(const float* x, float* out, int nimg, int c, long long hw) {
    __shared__ double part[256];
    for (int ch = blockIdx.x; ch < c; ch += gridDim.x) {
        double s = 0.0;
        long long m = (long long)nimg * hw;
        for (long long r = threadIdx.x; r < m; r += blockDim.x) {
            long long i = r / hw, p = r % hw;
            s += (double)x[(i * c + ch) * hw + p];
        }
        part[threadIdx.x] = s;
        __syncthreads();
        for (int k = blockDim.x / 2; k > 0; k >>= 1) {
            if (threadIdx.x < k) part[threadIdx.x] += part[threadIdx.x + k];
            __syncthreads();
        }
        if (threadIdx.x == 0) out[ch] = (float)part[0];
        __syncthreads();
    }
}

// Batch-norm statistics: stats[ch] = mean, stats[c + ch] = biased var, stats[2c + ch] = invstd.
extern "C" __global__ void bn_stats(const float* x, float* stats, int nimg, int c, long long hw, float eps) {
    __shared__ double part[256];
    __shared__ double mean_s;
    long long m = (long long)nimg * hw;
    for (int ch = blockIdx.x; ch < c; ch += gridDim.x) {
        double s = 0.0;
        for (long long r = threadIdx.x; r < m; r += blockDim.x)
            s += (double)x[((r / hw) * c + ch) * hw + r % hw];
        part[threadIdx.x] = s;
        __syncthreads();
        for (int k = blockDim.x / 2; k > 0; k >>= 1) {
            if (threadIdx.x < k) part[threadIdx.x] += part[threadIdx.x + k];
            __syncthreads();
        }
        if (threadIdx.x == 0) mean_s = part[0] / (double)m;
        __syncthreads();
        float mean = (float)mean_s;
        double v = 0.0;
        for (long long r = threadIdx.x; r < m; r += blockDim.x) {
            float d = x[((r / hw) * c + ch) * hw + r % hw] - mean;
            v += (double)(d * d);
        }
        part[threadIdx.x] = v;
        __syncthreads();
        for (int k = blockDim.x / 2; k > 0; k >>= 1) {
            if (threadIdx.x < k) part[threadIdx.x] += part[threadIdx.x + k];
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            double var = part[0] / (double)m;
            stats[ch] = mean;
            stats[c + ch] = (float)var;
            stats[2 * c + ch] = (float)(1.0 / sqrt(var + (double)eps));
        }
        __syncthreads();
    }
}

// y = act((x − mean)·invstd·w + b); act < 0: none.
extern "C" __global__ void bn_apply(const float* x, const float* stats, const float* wt, const float* bias,
                                    float* y, long long n, int c, long long hw, int act, float a, float b) {
    GRID_LOOP(i, n) {
        int ch = (i / hw) % c;
        float scale = stats[2 * c + ch] * wt[ch];
        float shift = bias[ch] - stats[ch] * scale;
        float v = x[i] * scale + shift;
        y[i] = act < 0 ? v : unary_f(act, a, b, v);
    }
}

// Backward sums per channel: sums[ch] = Σ g, sums[c + ch] = Σ g·x̂ where g = dy, or
// dy·act'(bn(x)) when act >= 0 (then g is also written to gout for the second pass).
extern "C" __global__ void bn_bwd_sums(const float* x, const float* dy, const float* mean,
                                       const float* invstd, const float* wt, const float* bias,
                                       float* gout, float* sums, int nimg, int c, long long hw, int act,
                                       float a, float b) {
    __shared__ double p0[256];
    __shared__ double p1[256];
    long long m = (long long)nimg * hw;
    for (int ch = blockIdx.x; ch < c; ch += gridDim.x) {
        float mu = mean[ch], is = invstd[ch];
        double s0 = 0.0, s1 = 0.0;
        for (long long r = threadIdx.x; r < m; r += blockDim.x) {
            long long off = ((r / hw) * c + ch) * hw + r % hw;
            float xhat = (x[off] - mu) * is;
            float g = dy[off];
            if (act >= 0) {
                g *= unary_df(act, a, b, xhat * wt[ch] + bias[ch]);
                gout[off] = g;
            }
            s0 += (double)g;
            s1 += (double)g * (double)xhat;
        }
        p0[threadIdx.x] = s0;
        p1[threadIdx.x] = s1;
        __syncthreads();
        for (int k = blockDim.x / 2; k > 0; k >>= 1) {
            if (threadIdx.x < k) {
                p0[threadIdx.x] += p0[threadIdx.x + k];
                p1[threadIdx.x] += p1[threadIdx.x + k];
            }
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            sums[ch] = (float)p0[0];
            sums[c + ch] = (float)p1[0];
        }
        __syncthreads();
    }
}

// dx = w·invstd/m · (m·g − Σg − x̂·Σg·x̂)
extern "C" __global__ void bn_bwd_dx(const float* x, const float* g, const float* mean, const float* invstd,
                                     const float* wt, const float* sums, float* dx, long long n, int c,
                                     long long hw, float m) {
    GRID_LOOP(i, n) {
        int ch = (i / hw) % c;
        float mu = mean[ch], is = invstd[ch];
        float xhat = (x[i] - mu) * is;
        float k = wt[ch] * is / m;
        dx[i] = k * (m * g[i] - sums[ch] - xhat * sums[c + ch]);
    }
}

extern "C" __global__ void max_pool_fwd(const float* x, float* y, long long planes, PoolG g) {
    POOL_UNPACK(g);
    long long n = planes * oh * ow;
    GRID_LOOP(t, n) {
        int ox = t % ow, oy = (t / ow) % oh;
        long long pl = t / ((long long)ow * oh);
        const float* xp = x + pl * h * w;
        float m = -INFINITY;
        for (int ki = 0; ki < kh; ++ki) {
            int iy = oy * sh - ph + ki;
            if (iy < 0 || iy >= h) continue;
            for (int kj = 0; kj < kw; ++kj) {
                int ix = ox * sw - pw + kj;
                if (ix < 0 || ix >= w) continue;
                m = pick_max(m, xp[iy * w + ix]);
            }
        }
        y[t] = m;
    }
}

// dx zero-filled; each output's gradient goes to its window's first maximum (row-major; a NaN
// replaces), as the CPU kernel picks it.
extern "C" __global__ void max_pool_bwd(const float* x, const float* dy, float* dx, long long planes, PoolG g) {
    POOL_UNPACK(g);
    long long n = planes * oh * ow;
    GRID_LOOP(t, n) {
        int ox = t % ow, oy = (t / ow) % oh;
        long long pl = t / ((long long)ow * oh);
        const float* xp = x + pl * h * w;
        float m = -INFINITY;
        long long best = -1;
        for (int ki = 0; ki < kh; ++ki) {
            int iy = oy * sh - ph + ki;
            if (iy < 0 || iy >= h) continue;
            for (int kj = 0; kj < kw; ++kj) {
                int ix = ox * sw - pw + kj;
                if (ix < 0 || ix >= w) continue;
                float v = xp[iy * w + ix];
                if (best < 0 || v > m || v != v) { m = v; best = (long long)iy * w + ix; }
            }
        }
        if (best >= 0) atomicAdd(&dx[pl * h * w + best], dy[t]);
    }
}

extern "C" __global__ void upsample_fwd(const float* x, float* y, long long planes, int h, int w, int sh, int sw) {
    long long oh = (long long)h * sh, ow = (long long)w * sw;
    long long n = planes * oh * ow;
    GRID_LOOP(t, n) {
        long long ox = t % ow, oy = (t / ow) % oh, pl = t / (ow * oh);
        y[t] = x[(pl * h + oy / sh) * w + ox / sw];
    }
}

extern "C" __global__ void upsample_bwd(const float* dy, float* dx, long long planes, int h, int w, int sh, int sw) {
    long long ow = (long long)w * sw;
    long long n = planes * h * w;
    GRID_LOOP(t, n) {
        long long ix = t % w, iy = (t / w) % h, pl = t / ((long long)w * h);
        float s = 0.0f;
        for (int a = 0; a < sh; ++a)
            for (int b = 0; b < sw; ++b)
                s += dy[(pl * h * sh + iy * sh + a) * ow + ix * sw + b];
        dx[t] = s;
    }
}

extern "C" __global__ void softmax_fwd(const float* x, float* y, long long outer, long long size,
                                       long long inner, int logm) {
    long long n = outer * inner;
    GRID_LOOP(t, n) {
        long long o = t / inner, in = t % inner;
        const float* xp = x + o * size * inner + in;
        float* yp = y + o * size * inner + in;
        float mx = -INFINITY;
        for (long long j = 0; j < size; ++j) mx = fmaxf(mx, xp[j * inner]);
        float s = 0.0f;
        for (long long j = 0; j < size; ++j) s += expf(xp[j * inner] - mx);
        for (long long j = 0; j < size; ++j)
            yp[j * inner] = logm ? xp[j * inner] - mx - logf(s) : expf(xp[j * inner] - mx) / s;
    }
}

extern "C" __global__ void softmax_bwd(const float* y, const float* dy, float* dx, long long outer,
                                       long long size, long long inner, int logm) {
    long long n = outer * inner;
    GRID_LOOP(t, n) {
        long long o = t / inner, in = t % inner;
        long long base = o * size * inner + in;
        float s = 0.0f;
        for (long long j = 0; j < size; ++j) {
            long long k = base + j * inner;
            s += logm ? dy[k] : y[k] * dy[k];
        }
        for (long long j = 0; j < size; ++j) {
            long long k = base + j * inner;
            dx[k] = logm ? dy[k] - expf(y[k]) * s : y[k] * (dy[k] - s);
        }
    }
}

extern "C" __global__ void bce_logits(const float* x, const float* t, const float* pw, float* y, long long n) {
    GRID_LOOP(i, n) {
        float v = x[i], tt = t[i];
        float lw = pw ? 1.0f + (pw[i] - 1.0f) * tt : 1.0f;
        y[i] = (1.0f - tt) * v + lw * (log1pf(expf(-fabsf(v))) + fmaxf(-v, 0.0f));
    }
}

// Round to nearest even bf16 (stored as the upper 16 bits); NaN stays NaN.
extern "C" __global__ void to_bf16(const float* x, unsigned short* y, long long n) {
    GRID_LOOP(i, n) {
        unsigned int u = __float_as_uint(x[i]);
        if ((u & 0x7fffffffu) > 0x7f800000u) {
            y[i] = (unsigned short)((u >> 16) | 0x40u);
        } else {
            u += 0x7fffu + ((u >> 16) & 1u);
            y[i] = (unsigned short)(u >> 16);
        }
    }
}
