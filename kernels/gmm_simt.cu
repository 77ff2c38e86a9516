// gmm_simt.cu: device code of the float32/float64 grouped GEMM kernels (see gmm_simt.cuh),
// compiled by build_fatbin.sh into gomoe_simt.fatbin (sm_80 and sm_90 machine code, compute_80
// PTX). Each kernel takes its CUTLASS Params by value; gmm_simt_host.cu builds them.
#include "gmm_simt.cuh"

#define GOMOE_GMMSIMT_KERNEL(NAME, K)                                                              \
  extern "C" __global__ void __launch_bounds__(gomoesimt::K::kThreadCount)                         \
      NAME(typename gomoesimt::K::Params params) {                                                 \
    extern __shared__ int smem[];                                                                  \
    gomoesimt::K op;                                                                               \
    op(params, *reinterpret_cast<typename gomoesimt::K::SharedStorage *>(smem));                   \
  }

GOMOE_GMMSIMT_KERNEL(gmmsimt_fwd_f32, K0)
GOMOE_GMMSIMT_KERNEL(gmmsimt_fwd_f64, K1)
GOMOE_GMMSIMT_KERNEL(gmmsimt_rows_f32, K2)
GOMOE_GMMSIMT_KERNEL(gmmsimt_rows_f64, K3)
GOMOE_GMMSIMT_KERNEL(gmmsimt_wgrad_f32, K4)
GOMOE_GMMSIMT_KERNEL(gmmsimt_wgrad_f64, K5)

// The Params size each kernel was compiled with (compared with the host library's).
extern "C" __device__ const unsigned long long gmmsimt_params_bytes[gomoesimt::NumKernels] = {
    sizeof(gomoesimt::K0::Params), sizeof(gomoesimt::K1::Params), sizeof(gomoesimt::K2::Params),
    sizeof(gomoesimt::K3::Params), sizeof(gomoesimt::K4::Params), sizeof(gomoesimt::K5::Params)};
