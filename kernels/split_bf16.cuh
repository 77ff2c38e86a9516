// split_bf16.cuh: the three-term bfloat16 split of float32 values (CPU twin: split_bf16.go;
// launcher: split_bf16_cuda.go). Part of gomoe.cu's translation unit. The same float32
// operations as the Go twin in the same order, so the pieces agree bit for bit; nvcc contracts
// no subtraction into an FMA here (there is no product) and flushes no subnormals (no
// -ftz).

// bf16Round is bfloat16.FromFloat32: round to nearest even; every NaN gives the canonical NaN
// 0x7fff, as __float2bfloat16_rn.
__device__ __forceinline__ unsigned short bf16Round(float f) {
  unsigned b = __float_as_uint(f);
  if ((b & 0x7fffffffu) > 0x7f800000u) return (unsigned short)0x7fffu;
  b += 0x7fffu + ((b >> 16) & 1u);
  return (unsigned short)(b >> 16);
}

__device__ __forceinline__ float bf16Widen(unsigned short h) { return __uint_as_float((unsigned)h << 16); }

// splitBF16 is SplitBF16Pieces: v = p[0] + p[1] + p[2] for finite v.
__device__ __forceinline__ void splitBF16(float v, unsigned short p[3]) {
  p[0] = bf16Round(v);
  p[1] = p[2] = 0;
  if (isinf(v) || isnan(v)) return;
  if (isinf(bf16Widen(p[0]))) p[0] = (unsigned short)(__float_as_uint(v) >> 16);
  float r = v - bf16Widen(p[0]);
  p[1] = bf16Round(r);
  p[2] = bf16Round(r - bf16Widen(p[1]));
}

// split_f32_bf16 is SplitBF16: out[r·rowStride + j·pieceStride + c] = piece pattern_j of
// in[r·cols + c], where pattern holds the pieces' numbers two bits each (j = 0 lowest).
extern "C" __global__ void __launch_bounds__(256)
    split_f32_bf16(const float *__restrict__ in, unsigned short *__restrict__ out, long long rows, long long cols,
                   long long rowStride, long long pieceStride, int npat, unsigned pattern) {
  gdcEnter();
  const long long n = rows * cols;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    unsigned short p[3];
    splitBF16(in[i], p);
    const long long r = i / cols, c = i - r * cols;
    unsigned short *o = out + r * rowStride + c;
    for (int j = 0; j < npat; j++) o[j * pieceStride] = p[(pattern >> (2 * j)) & 3u];
  }
}

// split_sum3 adds the three float32 products of one split operand's pieces, stacked smallest
// first, in that order: out[r·cols + c] = (in[b] + in[b + p]) + in[b + 2p] with b = r·rowStride
// + c and p = pieceStride, rounded once to bfloat16 when bf16 is set (else float32).
extern "C" __global__ void __launch_bounds__(256)
    split_sum3(const float *__restrict__ in, void *__restrict__ out, long long rows, long long cols,
               long long rowStride, long long pieceStride, int bf16) {
  gdcEnter();
  const long long n = rows * cols;
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
    const long long r = i / cols, c = i - r * cols;
    const float *p = in + r * rowStride + c;
    const float s = (p[0] + p[pieceStride]) + p[2 * pieceStride];
    if (bf16)
      ((unsigned short *)out)[i] = bf16Round(s);
    else
      ((float *)out)[i] = s;
  }
}
