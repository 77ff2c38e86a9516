// permute_probs.cuh: the probs moved to the permuted rows and back (CPU twin: op/permute_probs.go;
// launcher: permute_probs_cuda.go). Part of gomoe.cu's translation unit (included after gomoe.cuh,
// with namespace gomoe in scope); built into gomoe.fatbin by build_fatbin.sh.

// ---------------------------------------------------------------------------------------------
// Permuted probs: pp[r] = probs[t,k] for the slot (t,k) with rowOf[t,k] = r, 0 for other rows;
// backward dprobs[t,k] = dpp[rowOf[t,k]], 0 for dropped slots. Bit copies (B = element type
// of the same size).

template <typename B>
__device__ __forceinline__ void permuteProbsFwd(const B *__restrict__ probs, B *__restrict__ pp,
                                                const int *__restrict__ rowOf,
                                                const int *__restrict__ tokenOf, int K, long long R,
                                                long long T, int *status) {
  for (long long r = (long long)blockIdx.x * blockDim.x + threadIdx.x; r < R;
       r += (long long)gridDim.x * blockDim.x) {
    B v = B(0);
    long long t = planToken(tokenOf, r, T, status);
    if (t >= 0)
      for (int k = 0; k < K; k++)
        if (rowOf[t * K + k] == r) v = probs[t * K + k];
    pp[r] = v;
  }
}

template <typename B>
__device__ __forceinline__ void permuteProbsBwd(const B *__restrict__ dpp, B *__restrict__ dprobs,
                                                const int *__restrict__ rowOf, long long TK, long long R,
                                                int *status) {
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < TK;
       i += (long long)gridDim.x * blockDim.x) {
    int r = planRow(rowOf, i, R, status);
    dprobs[i] = r >= 0 ? dpp[r] : B(0);
  }
}

extern "C" __global__ void __launch_bounds__(256)
permute_probs_fwd_b4(const unsigned int *probs, unsigned int *pp, const int *rowOf, const int *tokenOf,
                     int K, long long R, long long T, int *status) {
  gdcEnter();
  permuteProbsFwd<unsigned int>(probs, pp, rowOf, tokenOf, K, R, T, status);
}
extern "C" __global__ void __launch_bounds__(256)
permute_probs_fwd_b8(const unsigned long long *probs, unsigned long long *pp, const int *rowOf,
                     const int *tokenOf, int K, long long R, long long T, int *status) {
  gdcEnter();
  permuteProbsFwd<unsigned long long>(probs, pp, rowOf, tokenOf, K, R, T, status);
}
extern "C" __global__ void __launch_bounds__(256)
permute_probs_bwd_b4(const unsigned int *dpp, unsigned int *dprobs, const int *rowOf, long long TK,
                     long long R, int *status) {
  gdcEnter();
  permuteProbsBwd<unsigned int>(dpp, dprobs, rowOf, TK, R, status);
}
extern "C" __global__ void __launch_bounds__(256)
permute_probs_bwd_b8(const unsigned long long *dpp, unsigned long long *dprobs, const int *rowOf,
                     long long TK, long long R, int *status) {
  gdcEnter();
  permuteProbsBwd<unsigned long long>(dpp, dprobs, rowOf, TK, R, status);
}
