// gmm_simt_host.cu: host code of the float32/float64 grouped GEMM kernels (see gmm_simt.cuh),
// compiled into the host library beside gmm_sm90_host.cu. CUTLASS 2.x builds these Params
// without the driver (plain pointers and counts), but they still come from CUTLASS's own
// constructor here, so that the layout is the kernel's.
#include "gmm_simt.cuh"

#include <stdint.h>
#include <string.h>

extern "C" {

// gomoe_gmmsimt_args are one grouped GEMM's arguments: the group table (gmm.cu) of groups
// groups, alpha and beta, and the number of thread blocks the persistent grid launches.
typedef struct {
  int kernel; // 0..5: 2·form + (float64 ? 1 : 0)
  int groups;
  int blocks;
  // device addresses
  uint64_t shapes, ptrA, ptrB, ptrC, ptrD, ldA, ldB, ldC, ldD;
  double alpha, beta;
} gomoe_gmmsimt_args;

// gomoe_gmmsimt_info describes a kernel's launch.
typedef struct {
  unsigned long long params_bytes; // sizeof(Params)
  unsigned int smem_bytes;         // dynamic shared memory
  unsigned int threads;            // threads per block
} gomoe_gmmsimt_info;

} // extern "C"

namespace {

template <class K> int build(const gomoe_gmmsimt_args *a, void *params, unsigned long long cap, gomoe_gmmsimt_info *info) {
  using T = typename K::ElementA;
  info->params_bytes = sizeof(typename K::Params);
  info->smem_bytes = sizeof(typename K::SharedStorage);
  info->threads = K::kThreadCount;
  if (params == nullptr) return 0;
  if (cap < sizeof(typename K::Params)) return 2;
  typename K::Arguments args(
      reinterpret_cast<cutlass::gemm::GemmCoord *>(a->shapes), a->groups, a->blocks,
      typename K::EpilogueOutputOp::Params(T(a->alpha), T(a->beta)), reinterpret_cast<T **>(a->ptrA),
      reinterpret_cast<T **>(a->ptrB), reinterpret_cast<T **>(a->ptrC), reinterpret_cast<T **>(a->ptrD),
      reinterpret_cast<typename K::LayoutA::Stride::LongIndex *>(a->ldA),
      reinterpret_cast<typename K::LayoutB::Stride::LongIndex *>(a->ldB),
      reinterpret_cast<typename K::LayoutC::Stride::LongIndex *>(a->ldC),
      reinterpret_cast<typename K::LayoutC::Stride::LongIndex *>(a->ldD));
  typename K::Params p(args, nullptr, 0);
  memcpy(params, &p, sizeof p);
  return 0;
}

} // namespace

extern "C" {

// gomoe_gmmsimt_build fills info for a's kernel and, when params is not null, writes the
// kernel's Params (at most cap bytes). It returns 0, or 1 for an unknown kernel, 2 when cap is
// too small.
int gomoe_gmmsimt_build(const gomoe_gmmsimt_args *a, void *params, unsigned long long cap, gomoe_gmmsimt_info *info) {
  memset(info, 0, sizeof *info);
  switch (a->kernel) {
  case 0: return build<gomoesimt::K0>(a, params, cap, info);
  case 1: return build<gomoesimt::K1>(a, params, cap, info);
  case 2: return build<gomoesimt::K2>(a, params, cap, info);
  case 3: return build<gomoesimt::K3>(a, params, cap, info);
  case 4: return build<gomoesimt::K4>(a, params, cap, info);
  case 5: return build<gomoesimt::K5>(a, params, cap, info);
  }
  return 1;
}

} // extern "C"
