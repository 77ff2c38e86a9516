// gmm_sm90.cu: device code of the sm_90a grouped GEMM kernels (see gmm_sm90.cuh), compiled by
// build_fatbin.sh into gomoe_sm90.fatbin. Each kernel takes its CUTLASS Params by value as a
// __grid_constant__ parameter, as CUTLASS's own device_kernel does, so the host launches it with
// cuLaunchKernelEx (cluster dimensions, dynamic shared memory) and the Params bytes that
// gmm_sm90_host.cu builds.
#include "gmm_sm90.cuh"

#define GOMOE_GMM90_KERNEL(NAME, V)                                                                \
  extern "C" __global__ void __launch_bounds__(gomoe90::KernelOf<V>::type::MaxThreadsPerBlock,     \
                                               gomoe90::KernelOf<V>::type::MinBlocksPerMultiprocessor) \
      NAME(CUTLASS_GRID_CONSTANT typename gomoe90::KernelOf<V>::type::Params const params) {       \
    extern __shared__ char smem[];                                                                 \
    typename gomoe90::KernelOf<V>::type op;                                                        \
    op(params, smem);                                                                              \
  }

// Names: gmm90_<form>_<schedule>[_acc], in the order of gmm90Kernels (gmm_sm90_cuda.go); the
// _acc kernels add C (the output itself) to the product.
GOMOE_GMM90_KERNEL(gmm90_fwd_coop, 0)
GOMOE_GMM90_KERNEL(gmm90_fwd_ping, 1)
GOMOE_GMM90_KERNEL(gmm90_rows_coop, 2)
GOMOE_GMM90_KERNEL(gmm90_rows_ping, 3)
GOMOE_GMM90_KERNEL(gmm90_wgrad_coop, 4)
GOMOE_GMM90_KERNEL(gmm90_wgrad_ping, 5)
GOMOE_GMM90_KERNEL(gmm90_rows_coop_acc, 6)
GOMOE_GMM90_KERNEL(gmm90_rows_ping_acc, 7)
GOMOE_GMM90_KERNEL(gmm90_wgrad_coop_acc, 8)
GOMOE_GMM90_KERNEL(gmm90_wgrad_ping_acc, 9)

// The Params size each kernel was compiled with, read by the host (cuModuleGetGlobal) and
// compared with the host library's, so that a mismatched pair is an error, not a bad launch.
#define GOMOE_P(V) sizeof(typename gomoe90::KernelOf<V>::type::Params)
extern "C" __device__ const unsigned long long gmm90_params_bytes[gomoe90::NumKernels] = {
    GOMOE_P(0), GOMOE_P(1), GOMOE_P(2), GOMOE_P(3), GOMOE_P(4),
    GOMOE_P(5), GOMOE_P(6), GOMOE_P(7), GOMOE_P(8), GOMOE_P(9)};
