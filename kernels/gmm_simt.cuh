// gmm_simt.cuh: the float32 and float64 grouped GEMM kernels, as CUTLASS 2.x types.
//
// Shared by gmm_simt.cu (device code, gomoe_simt.fatbin) and gmm_simt_host.cu (the host code
// that builds their Params, in the host library). Each kernel is CUTLASS's grouped GEMM
// (GemmGrouped) with its problem visitor in device-only mode: the problem sizes, pointers and
// leading dimensions come from the group table that gmm_prepare writes (gmm.cu), so, as on
// sm_90a, nothing about the routing is read on the host. The math is CUDA-core FMA in the
// data type (no TF32, no tensor cores), so float32 results keep the CPU-equality tolerance of
// the cuBLAS path; each output element is summed by one thread in a fixed order, so results
// are the same on every run.
#pragma once

#include <cutlass/cutlass.h>
#include <cutlass/epilogue/thread/linear_combination.h>
#include <cutlass/gemm/gemm.h>
#include <cutlass/gemm/kernel/default_gemm_grouped.h>
#include <cutlass/gemm/threadblock/threadblock_swizzle.h>

namespace gomoesimt {

using RowMajor = cutlass::layout::RowMajor;
using ColMajor = cutlass::layout::ColumnMajor;

template <class T, class LayoutA, class LayoutB, class TB, class Warp> struct Gemm {
  using Kernel = typename cutlass::gemm::kernel::DefaultGemmGrouped<
      T, LayoutA, cutlass::ComplexTransform::kNone, 1, T, LayoutB, cutlass::ComplexTransform::kNone, 1, T,
      RowMajor, T, cutlass::arch::OpClassSimt, cutlass::arch::Sm80, TB, Warp, cutlass::gemm::GemmShape<1, 1, 1>,
      cutlass::epilogue::thread::LinearCombination<T, 1, T, T>,
      cutlass::gemm::threadblock::GemmBatchedIdentityThreadblockSwizzle, 3,
      cutlass::gemm::kernel::GroupScheduleMode::kDeviceOnly>::GemmKernel;
};

using TB32 = cutlass::gemm::GemmShape<128, 128, 8>;
using Warp32 = cutlass::gemm::GemmShape<32, 64, 8>;
using TB64 = cutlass::gemm::GemmShape<64, 64, 8>;
using Warp64 = cutlass::gemm::GemmShape<32, 32, 8>;

// Kernel v = 2·form + (float64 ? 1 : 0); forms as in gmm.cu.
using K0 = Gemm<float, RowMajor, RowMajor, TB32, Warp32>::Kernel; // forward
using K1 = Gemm<double, RowMajor, RowMajor, TB64, Warp64>::Kernel;
using K2 = Gemm<float, RowMajor, ColMajor, TB32, Warp32>::Kernel; // rows gradient
using K3 = Gemm<double, RowMajor, ColMajor, TB64, Warp64>::Kernel;
using K4 = Gemm<float, ColMajor, RowMajor, TB32, Warp32>::Kernel; // weight gradient
using K5 = Gemm<double, ColMajor, RowMajor, TB64, Warp64>::Kernel;

constexpr int NumKernels = 6;

} // namespace gomoesimt
