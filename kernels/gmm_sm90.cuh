// gmm_sm90.cuh: the bfloat16 grouped GEMM kernels for Hopper (sm_90a), as CUTLASS 3.x types.
//
// Shared by gmm_sm90.cu (the device code, compiled into gomoe_sm90.fatbin) and gmm_sm90_host.cu
// (the host code that turns arguments into the kernels' Params, compiled into
// gmm_host_linux_amd64.a): both see the same types, so the Params bytes the host builds are
// the ones the kernel reads (the Go side also checks their sizes against each other).
//
// Each kernel is CUTLASS's ptr-array grouped GEMM (TMA loads, wgmma, a persistent grid over the
// groups' tiles; problem sizes, pointers and strides read from device memory, TMA descriptors
// rewritten per group in the kernel), with bfloat16 A, B, C, D and float32 accumulation and
// epilogue: D = alpha·A·B + beta·C. The three forms of gmm.cu differ in the layouts of A and B;
// each comes in the two schedules torch._grouped_mm uses on sm_90:
//   coop  KernelPtrArrayTmaWarpSpecializedCooperative, tile 128×256×64, cluster 2×1×1
//   ping  KernelPtrArrayTmaWarpSpecializedPingpong,    tile  64×128×128, cluster 2×1×1
// (ping for small groups: the average m or n of the form ≤ 128).
#pragma once

#include <cutlass/cutlass.h>
#include <cute/tensor.hpp>
#include <cutlass/gemm/group_array_problem_shape.hpp>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/gemm/kernel/gemm_universal.hpp>
#include <cutlass/bfloat16.h>

namespace gomoe90 {

using namespace cute;

using ProblemShape = cutlass::gemm::GroupProblemShape<Shape<int, int, int>>;
using Elem = cutlass::bfloat16_t;
using Acc = float;
constexpr int Align = 8; // 16 bytes of bfloat16: TMA needs 16-byte rows and bases

struct Coop {
  using Kernel = cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperative;
  using Epi = cutlass::epilogue::PtrArrayTmaWarpSpecializedCooperative;
  using Tile = Shape<_128, _256, _64>;
  using Cluster = Shape<_2, _1, _1>;
};

struct Ping {
  using Kernel = cutlass::gemm::KernelPtrArrayTmaWarpSpecializedPingpong;
  using Epi = cutlass::epilogue::PtrArrayTmaWarpSpecializedPingpong;
  using Tile = Shape<_64, _128, _128>;
  using Cluster = Shape<_2, _1, _1>;
};

template <class LayoutA, class LayoutB, class Sched> struct Gemm {
  using LayoutD = cutlass::layout::RowMajor;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, typename Sched::Tile, typename Sched::Cluster,
      cutlass::epilogue::collective::EpilogueTileAuto, Acc, Acc, Elem, LayoutD *, Align, Elem, LayoutD *,
      Align, typename Sched::Epi, cutlass::epilogue::fusion::LinearCombination<Elem, Acc>>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Elem, LayoutA *, Align, Elem, LayoutB *, Align, Acc,
      typename Sched::Tile, typename Sched::Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename Epilogue::SharedStorage))>,
      typename Sched::Kernel>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<ProblemShape, Mainloop, Epilogue>;
};

using RowMajor = cutlass::layout::RowMajor;
using ColMajor = cutlass::layout::ColumnMajor;

// Kernel v = 2·form + (ping ? 1 : 0).
using K0 = Gemm<RowMajor, RowMajor, Coop>::Kernel; // forward
using K1 = Gemm<RowMajor, RowMajor, Ping>::Kernel;
using K2 = Gemm<RowMajor, ColMajor, Coop>::Kernel; // rows gradient
using K3 = Gemm<RowMajor, ColMajor, Ping>::Kernel;
using K4 = Gemm<ColMajor, RowMajor, Coop>::Kernel; // weight gradient
using K5 = Gemm<ColMajor, RowMajor, Ping>::Kernel;

constexpr int NumKernels = 6;

// The group table's strides are one int64 leading dimension each (see gmm.cu).
template <class K> constexpr bool tableStrides() {
  return sizeof(typename K::InternalStrideA) == 8 && sizeof(typename K::InternalStrideB) == 8 &&
         sizeof(typename K::InternalStrideC) == 8 && sizeof(typename K::InternalStrideD) == 8;
}
static_assert(tableStrides<K0>() && tableStrides<K1>() && tableStrides<K2>() && tableStrides<K3>() &&
                  tableStrides<K4>() && tableStrides<K5>(),
              "CUTLASS strides are not one int64: the group table layout no longer fits");

} // namespace gomoe90
