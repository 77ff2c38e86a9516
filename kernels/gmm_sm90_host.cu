// gmm_sm90_host.cu: host code of the sm_90a grouped GEMM kernels (see gmm_sm90.cuh).
//
// CUTLASS builds a kernel's Params on the host (GemmKernel::to_underlying_arguments): it encodes
// the TMA descriptor templates through the driver (cuTensorMapEncodeTiled), lays out the tile
// scheduler's state and places the per-SM descriptor workspace. Rather than copy that logic
// into Go, where every CUTLASS upgrade could silently change a byte, gomoe calls CUTLASS's own
// code: build_fatbin.sh compiles this file with nvcc into the static library
// gmm_host_linux_amd64.a, committed with the fatbins and hash-checked like them, and the Go
// side links it with cgo. Users need neither nvcc nor CUTLASS.
//
// gomoe builds the Params once per (kernel, groups, group-table address): the group table and
// the workspace stay where they are, and only their contents change from call to call (written
// on the device by gmm_prepare). So a launch never depends on the routing and never reads
// anything back from the device.
#include "gmm_sm90.cuh"

#include <stdint.h>
#include <string.h>

extern "C" {

// gomoe_gmm90_args are one grouped GEMM's arguments: the group table (gmm.cu) of groups
// groups, alpha and beta, and the kernel's workspace.
typedef struct {
  int kernel; // 0..NumKernels-1 (gmm_sm90.cuh's KernelOf)
  int groups;
  int sm_count;
  int device_id;
  // device addresses
  uint64_t shapes, ptrA, ptrB, ptrC, ptrD, ldA, ldB, ldC, ldD;
  float alpha, beta;
  uint64_t workspace;
  int raster;  // the tile scheduler's order: 0 along m (CUTLASS's default for groups), 1 along n
  int swizzle; // its max swizzle size (1, 2, 4 or 8; 0 means 1)
} gomoe_gmm90_args;

// gomoe_gmm90_info describes a kernel's launch.
typedef struct {
  unsigned long long params_bytes;    // sizeof(Params)
  unsigned long long workspace_bytes; // device workspace for these groups and SMs
  unsigned int smem_bytes;            // dynamic shared memory
  unsigned int block[3], cluster[3], grid[3];
} gomoe_gmm90_info;

} // extern "C"

namespace {

template <class K> int build(const gomoe_gmm90_args *a, void *params, unsigned long long cap, gomoe_gmm90_info *info) {
  using namespace cute;
  using Elem = gomoe90::Elem;
  typename K::Arguments args;
  args.mode = cutlass::gemm::GemmUniversalMode::kGrouped;
  args.problem_shape = {a->groups, reinterpret_cast<typename gomoe90::ProblemShape::UnderlyingProblemShape *>(a->shapes),
                        nullptr};
  args.mainloop = {reinterpret_cast<Elem const **>(a->ptrA), reinterpret_cast<typename K::InternalStrideA *>(a->ldA),
                   reinterpret_cast<Elem const **>(a->ptrB), reinterpret_cast<typename K::InternalStrideB *>(a->ldB)};
  auto &f = args.epilogue.thread;
  f.alpha = a->alpha;
  f.beta = a->beta;
  f.alpha_ptr = nullptr;
  f.beta_ptr = nullptr;
  f.alpha_ptr_array = nullptr;
  f.beta_ptr_array = nullptr;
  f.dAlpha = {_0{}, _0{}, 0};
  f.dBeta = {_0{}, _0{}, 0};
  args.epilogue.ptr_C = reinterpret_cast<decltype(args.epilogue.ptr_C)>(a->ptrC); // unread without C
  args.epilogue.dC = reinterpret_cast<typename K::InternalStrideC *>(a->ldC);
  args.epilogue.ptr_D = reinterpret_cast<Elem **>(a->ptrD);
  args.epilogue.dD = reinterpret_cast<typename K::InternalStrideD *>(a->ldD);
  args.hw_info.device_id = a->device_id;
  args.hw_info.sm_count = a->sm_count;
  using Raster = decltype(args.scheduler.raster_order);
  args.scheduler.raster_order = a->raster == 1 ? Raster::AlongN : Raster::AlongM;
  args.scheduler.max_swizzle_size = a->swizzle > 0 ? a->swizzle : 1;

  info->params_bytes = sizeof(typename K::Params);
  info->smem_bytes = K::SharedStorageSize;
  dim3 b = K::get_block_shape();
  info->block[0] = b.x, info->block[1] = b.y, info->block[2] = b.z;
  info->cluster[0] = size<0>(typename K::ClusterShape{});
  info->cluster[1] = size<1>(typename K::ClusterShape{});
  info->cluster[2] = size<2>(typename K::ClusterShape{});
  if (!K::can_implement(args)) return 3;
  info->workspace_bytes = K::get_workspace_size(args);
  if (params == nullptr) return 0;
  if (cap < sizeof(typename K::Params)) return 2;
  typename K::Params p = K::to_underlying_arguments(args, reinterpret_cast<void *>(a->workspace));
  memcpy(params, &p, sizeof p);
  dim3 g = K::get_grid_shape(p);
  info->grid[0] = g.x, info->grid[1] = g.y, info->grid[2] = g.z;
  return 0;
}

} // namespace

extern "C" {

// gomoe_gmm90_build fills info for a's kernel and, when params is not null, writes the kernel's
// Params (at most cap bytes) and the grid. It returns 0, or 1 for an unknown kernel, 2 when cap
// is too small, 3 when CUTLASS cannot run these arguments.
int gomoe_gmm90_build(const gomoe_gmm90_args *a, void *params, unsigned long long cap, gomoe_gmm90_info *info) {
  memset(info, 0, sizeof *info);
  switch (a->kernel) {
#define GOMOE_CASE(V)                                                                              \
  case V: return build<gomoe90::KernelOf<V>::type>(a, params, cap, info);
    GOMOE_CASE(0) GOMOE_CASE(1) GOMOE_CASE(2) GOMOE_CASE(3) GOMOE_CASE(4) GOMOE_CASE(5)
    GOMOE_CASE(6) GOMOE_CASE(7) GOMOE_CASE(8) GOMOE_CASE(9)
#undef GOMOE_CASE
  }
  return 1;
}

} // extern "C"
