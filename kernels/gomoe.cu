// gomoe.cu: the translation unit of gomoe.fatbin (build_fatbin.sh): gomoe.cuh's shared device
// helpers, then one .cuh file per kernel concept, each next to its Go launcher (x_cuda.go) and
// CPU twin (x.go). The kernels are launched from Go through the driver API (cuda_cuda.go) by
// their extern "C" names. Every kernel mirrors a CPU kernel and keeps its rounding contract;
// the contract of each is written in its file.
//
// Addressing is 64-bit: row*H is computed in long long.
//
// Status word (written with atomicOr, read by the host when it next synchronises; the Status*
// constants of package kernels):
//   1  an expert id outside [-1, E) (treated as -1)
//   2  a token names one expert twice (kept: the plan stays memory-safe)
//   4  a NaN prob under drop-by-prob (sorted below every other prob)
//   8  a NaN top-k selection or group score (ranked lowest)
//  16  an embedding id outside [0, V) (its row set to 0)
//  32  a grouped matmul plan's segment outside its rows (gmm_sm90)
//  64  a NaN or infinite gradient norm in clip_finish (the update skipped)
// 128  a plan row or token id outside its buffer in a permute or combine kernel (the slot or
//      row skipped: planRow, planToken in gomoe.cuh)
#include "gomoe.cuh"

using namespace gomoe;

#include "plan.cuh"
#include "permute.cuh"
#include "unpermute.cuh"
#include "permute_probs.cuh"
#include "binary.cuh"
#include "blockcopy.cuh"
#include "activation.cuh"
#include "rowop.cuh"
#include "topk.cuh"
#include "gather_topk.cuh"
#include "router.cuh"
#include "optimizer.cuh"
#include "grad_norm.cuh"
#include "cast.cuh"
#include "scale_rows.cuh"
#include "bias.cuh"
#include "relu.cuh"
#include "rmsnorm.cuh"
#include "cross_entropy.cuh"
#include "embedding.cuh"
#include "balance_loss.cuh"
#include "z_loss.cuh"
#include "split_bf16.cuh"
