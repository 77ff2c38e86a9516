// gmm_sm90.cuh: the bfloat16 grouped GEMM kernels for Hopper (sm_90a), as CUTLASS 3.x types.
//
// Shared by gmm_sm90.cu (the device code, compiled into gomoe_sm90.fatbin) and gmm_sm90_host.cu
// (the host code that turns arguments into the kernels' Params, compiled into
// gmm_host_linux_amd64.a): both see the same types, so the Params bytes the host builds are
// the ones the kernel reads (the Go side also checks their sizes against each other).
//
// Each kernel is CUTLASS's ptr-array grouped GEMM (TMA loads, wgmma, a persistent grid over the
// groups' tiles; problem sizes, pointers and strides read from device memory, TMA descriptors
// rewritten per group in the kernel), with bfloat16 A, B, D and float32 accumulation. The three
// forms of gmm.cu differ in the layouts of A and B; each comes in the two schedules below, and
// the backward forms' twice: D = A·B for a call that overwrites its output, and D = A·B + C
// (bfloat16 C = D) for one that accumulates. The first has no C operand at all (ElementC void): measured
// on one H100 on 2026-12-07, the Qwen3 W1 weight gradient took 600–605 µs without C against
// 612–617 µs with a C that beta = 0 leaves unread (both nvcc 13.0; Nsight Compute). gmm_sm90_cuda.go
// picks the schedule per form from the static shapes (never from the routing).
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

// A schedule: CUTLASS's kernel and epilogue schedules, the tile and the cluster shape.
template <class KernelSched, class EpiSched, class TileShape, class ClusterShape> struct Sched {
  using Kernel = KernelSched;
  using Epi = EpiSched;
  using Tile = TileShape;
  using Cluster = ClusterShape;
};

using CoopK = cutlass::gemm::KernelPtrArrayTmaWarpSpecializedCooperative;
using CoopE = cutlass::epilogue::PtrArrayTmaWarpSpecializedCooperative;
using PingK = cutlass::gemm::KernelPtrArrayTmaWarpSpecializedPingpong;
using PingE = cutlass::epilogue::PtrArrayTmaWarpSpecializedPingpong;

// The schedules, in the order of the kernel names' suffixes (gmm_sm90.cu, gmm_sm90_cuda.go):
// the two torch._grouped_mm uses on sm_90. (Measured beside them on one H100, 2026-12-06: the
// cooperative tile without a cluster, 128×128 tiles with 1×2 clusters, and pingpong 64×256
// tiles; none was more than 3 % faster than S0 at any benchmark shape, most were slower.)
using S0 = Sched<CoopK, CoopE, Shape<_128, _256, _64>, Shape<_2, _1, _1>>; // coop
using S1 = Sched<PingK, PingE, Shape<_64, _128, _128>, Shape<_2, _1, _1>>; // ping
constexpr int NumScheds = 2;

// Gemm is one kernel: WithC adds the C operand (a void ElementC removes its loads, its shared
// memory and its code).
template <class LayoutA, class LayoutB, class Sched, bool WithC> struct Gemm {
  using LayoutD = cutlass::layout::RowMajor;
  using ElemC = cute::conditional_t<WithC, Elem, void>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, typename Sched::Tile, typename Sched::Cluster,
      cutlass::epilogue::collective::EpilogueTileAuto, Acc, Acc, ElemC, LayoutD *, Align, Elem, LayoutD *,
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

// Kernel v = NumScheds·form + schedule for the kernels without C; the backward forms' kernels
// with C follow (v + 2·NumScheds; the forward never accumulates).
constexpr int NumKernels = 5 * NumScheds;
template <int V> struct KernelOf;
#define GOMOE_GMM90_KERNEL_OF(V, S, LA, LB, WithC)                                              \
  template <> struct KernelOf<V> { using type = typename Gemm<LA, LB, S, WithC>::Kernel; };
// forward (A, B row-major), rows gradient (B column-major), weight gradient (A column-major)
GOMOE_GMM90_KERNEL_OF(0, S0, RowMajor, RowMajor, false)
GOMOE_GMM90_KERNEL_OF(1, S1, RowMajor, RowMajor, false)
GOMOE_GMM90_KERNEL_OF(2, S0, RowMajor, ColMajor, false)
GOMOE_GMM90_KERNEL_OF(3, S1, RowMajor, ColMajor, false)
GOMOE_GMM90_KERNEL_OF(4, S0, ColMajor, RowMajor, false)
GOMOE_GMM90_KERNEL_OF(5, S1, ColMajor, RowMajor, false)
GOMOE_GMM90_KERNEL_OF(6, S0, RowMajor, ColMajor, true)
GOMOE_GMM90_KERNEL_OF(7, S1, RowMajor, ColMajor, true)
GOMOE_GMM90_KERNEL_OF(8, S0, ColMajor, RowMajor, true)
GOMOE_GMM90_KERNEL_OF(9, S1, ColMajor, RowMajor, true)

// The group table's strides are one int64 leading dimension each (see gmm.cu).
template <class K> constexpr bool tableStrides() {
  return sizeof(typename K::InternalStrideA) == 8 && sizeof(typename K::InternalStrideB) == 8 &&
         sizeof(typename K::InternalStrideC) == 8 && sizeof(typename K::InternalStrideD) == 8;
}
template <int V> constexpr bool allTableStrides() {
  if constexpr (V == NumKernels) {
    return true;
  } else {
    return tableStrides<typename KernelOf<V>::type>() && allTableStrides<V + 1>();
  }
}
static_assert(allTableStrides<0>(), "CUTLASS strides are not one int64: the group table layout no longer fits");

} // namespace gomoe90
