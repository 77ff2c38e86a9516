// gmm_sm90.cu: device code of the sm_90a grouped GEMM kernels (see gmm_sm90.cuh), compiled by
// build_fatbin.sh into gomoe_sm90.fatbin. Each kernel takes its CUTLASS Params by value as a
// __grid_constant__ parameter, as CUTLASS's own device_kernel does, so the host launches it with
// cuLaunchKernelEx (cluster dimensions, dynamic shared memory) and the Params bytes that
// gmm_sm90_host.cu builds.
#include "gmm_sm90.cuh"

#define GOMOE_GMM90_KERNEL(NAME, K)                                                                \
  extern "C" __global__ void __launch_bounds__(gomoe90::K::MaxThreadsPerBlock,                     \
                                               gomoe90::K::MinBlocksPerMultiprocessor)             \
      NAME(CUTLASS_GRID_CONSTANT typename gomoe90::K::Params const params) {                       \
    extern __shared__ char smem[];                                                                 \
    gomoe90::K op;                                                                                 \
    op(params, smem);                                                                              \
  }

GOMOE_GMM90_KERNEL(gmm90_fwd_coop, K0)
GOMOE_GMM90_KERNEL(gmm90_fwd_ping, K1)
GOMOE_GMM90_KERNEL(gmm90_rows_coop, K2)
GOMOE_GMM90_KERNEL(gmm90_rows_ping, K3)
GOMOE_GMM90_KERNEL(gmm90_wgrad_coop, K4)
GOMOE_GMM90_KERNEL(gmm90_wgrad_ping, K5)

// The Params size each kernel was compiled with, read by the host (cuModuleGetGlobal) and
// compared with the host library's, so that a mismatched pair is an error, not a bad launch.
extern "C" __device__ const unsigned long long gmm90_params_bytes[gomoe90::NumKernels] = {
    sizeof(gomoe90::K0::Params), sizeof(gomoe90::K1::Params), sizeof(gomoe90::K2::Params),
    sizeof(gomoe90::K3::Params), sizeof(gomoe90::K4::Params), sizeof(gomoe90::K5::Params)};
