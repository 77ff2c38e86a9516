#!/usr/bin/env bash
# Builds the committed CUDA artifacts from the sources in this folder and records their hashes
# in gomoe.fatbin.sha256; fatbin_hash_test.go fails when the sources no longer match that record.
#
#   gomoe.fatbin                  gomoe.cu and the .cuh files it includes (gomoe.cuh's shared
#                                 helpers and one file per kernel concept, main_sources below):
#                                 sm_80 and sm_90a machine code plus compute_80 PTX, so newer
#                                 GPUs JIT it
#   gomoe_gmm.fatbin              gmm.cu (+ gdc.cuh, syncprobe.cuh): the grouped matmul's group-table and
#                                 zeroing kernels, and the sync probe; the same targets
#   gomoe_sm90.fatbin             gmm_sm90.cu (+ gmm_sm90.cuh): the bfloat16 grouped GEMM
#                                 kernels on CUTLASS, sm_90a only
#   gomoe_simt.fatbin             gmm_simt.cu (+ gmm_simt.cuh): the float32/float64 grouped GEMM
#                                 kernels on CUTLASS, sm_80 and sm_90 plus compute_80 PTX
#   gmm_host_linux_amd64.a        gmm_sm90_host.cu, gmm_simt_host.cu: CUTLASS's host code that
#                                 builds those kernels' parameters, linked by cgo (gomoecuda)
#
# The record holds, for each group of sources, the sha256 of its files (in byte order of their
# names: the name, a newline, the bytes) and of what was built from them, with the nvcc and
# CUTLASS versions that built it.
#
#     kernels/build_fatbin.sh         # everything but the cu13 fatbin: nvcc 12.4 or later (12.x:
#                                     # the artifacts must load with CUDA 12 drivers), CUTLASS_DIR
#     kernels/build_fatbin.sh gmm     # only the grouped matmul's artifacts
#     kernels/build_fatbin.sh main    # only gomoe.fatbin (no CUTLASS needed); the gmm lines of
#                                     # the record stay as they are
#     NVCC13=/path/to/nvcc kernels/build_fatbin.sh cu13
#                                     # only gomoe_sm90_cu13.fatbin: the sm_90a kernels built by
#                                     # nvcc 13, loaded instead of gomoe_sm90.fatbin under CUDA 13
#                                     # drivers; its host code is gmm_sm90_host.cu built for CUDA
#                                     # 13's Params layout, inside gmm_host_linux_amd64.a
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
NVCC=${NVCC:-nvcc}
what=${1:-all}
case $what in all | gmm | main | cu13) ;; *) echo "usage: $0 [all|gmm|main|cu13]" >&2; exit 2 ;; esac
# The sources of gomoe.fatbin (keep in step with mainSources in fatbin_hash_test.go).
main_sources=(gomoe.cu gomoe.cuh gdc.cuh plan.cuh permute.cuh unpermute.cuh permute_probs.cuh binary.cuh
  blockcopy.cuh activation.cuh rowop.cuh topk.cuh gather_topk.cuh router.cuh optimizer.cuh grad_norm.cuh cast.cuh
  scale_rows.cuh bias.cuh relu.cuh rmsnorm.cuh cross_entropy.cuh embedding.cuh balance_loss.cuh
  z_loss.cuh split_bf16.cuh)
# The sources of the grouped matmul's artifacts (gmmSources in fatbin_hash_test.go).
gmm_sources=(gdc.cuh gmm.cu syncprobe.cuh gmm_sm90.cu gmm_sm90.cuh gmm_sm90_host.cu gmm_simt.cu gmm_simt.cuh
  gmm_simt_host.cu)
nv=$("$NVCC" --version | awk '/release/{print $5 $6}')
all_archs=(-gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_80,code=compute_80)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

srcs() { for f in $(printf '%s\n' "$@" | LC_ALL=C sort); do printf '%s\n' "$f"; cat "$f"; done | sha256sum | cut -d' ' -f1; }
sum() { sha256sum "$1" | cut -d' ' -f1; }
old() { awk -v k="$1" '$1 == k {print $2}' gomoe.fatbin.sha256 2>/dev/null; }

if [[ $what == main ]]; then
  "$NVCC" -fatbin -O3 -std=c++17 "${all_archs[@]}" -o "$tmp/gomoe.fatbin" gomoe.cu
  mv "$tmp/gomoe.fatbin" gomoe.fatbin
  {
    echo "sources $(srcs "${main_sources[@]}")"
    echo "fatbin $(sum gomoe.fatbin)"
    echo "nvcc $nv"
    grep -v -E '^(sources|fatbin|nvcc) ' gomoe.fatbin.sha256
  } > "$tmp/record"
  mv "$tmp/record" gomoe.fatbin.sha256
  cat gomoe.fatbin.sha256
  exit 0
fi

: "${CUTLASS_DIR:?set CUTLASS_DIR to a CUTLASS 4.7 checkout (its include/ folder is used)}"
ver=$(awk '/#define CUTLASS_(MAJOR|MINOR|PATCH) /{printf "%s%s", sep, $3; sep="."}' "$CUTLASS_DIR/include/cutlass/version.h")
cutlass=(-std=c++17 --expt-relaxed-constexpr -DNDEBUG -I"$CUTLASS_DIR/include")

if [[ $what == cu13 ]]; then
  : "${NVCC13:?set NVCC13 to a CUDA 13 nvcc}"
  nv13=$("$NVCC13" --version | awk '/release/{print $5 $6}')
  [[ $nv13 == 13.* ]] || { echo "NVCC13 is nvcc $nv13, want 13.x" >&2; exit 2; }
  "$NVCC13" -fatbin -O3 "${cutlass[@]}" -DCUTLASS_ENABLE_GDC_FOR_SM90 -gencode arch=compute_90a,code=sm_90a \
    -o "$tmp/gomoe_sm90_cu13.fatbin" gmm_sm90.cu
  mv "$tmp/gomoe_sm90_cu13.fatbin" gomoe_sm90_cu13.fatbin
  {
    grep -v -E '^(cu13-gmm-sources|sm90fatbin13|cu13-nvcc) ' gomoe.fatbin.sha256
    echo "cu13-gmm-sources $(srcs "${gmm_sources[@]}")"
    echo "sm90fatbin13 $(sum gomoe_sm90_cu13.fatbin)"
    echo "cu13-nvcc $nv13"
  } > "$tmp/record"
  mv "$tmp/record" gomoe.fatbin.sha256
  cat gomoe.fatbin.sha256
  exit 0
fi

# The host code of the cu13 fatbin: gmm_sm90_host.cu against a copy of this toolkit's cuda.h
# whose CUtensorMap is aligned to 128 bytes as CUDA 13's is (the only difference in CUTLASS's
# Params between the two: docs/grouped-gemm.md, "Status"), with CUTLASS's namespaces and the
# exported function renamed so that both builds link into one program.
mkdir -p "$tmp/cu13inc"
cuda_h=$(dirname "$(command -v "$NVCC")")/../include/cuda.h
sed '/typedef struct CUtensorMap_st {/,/} CUtensorMap;/ s/lignas(64)/lignas(128)/' "$cuda_h" > "$tmp/cu13inc/cuda.h"
[[ $(diff "$cuda_h" "$tmp/cu13inc/cuda.h" | grep -c '^>') == 2 ]] ||
  { echo "$cuda_h: CUtensorMap is not declared alignas(64) as in CUDA 12" >&2; exit 2; }
cu13host=(-I"$tmp/cu13inc" -Dcutlass=cutlass13 -Dcute=cute13 -Dgomoe90=gomoe90_13 -Dgomoe_gmm90_build=gomoe13_gmm90_build)

pids=()
if [[ $what == all ]]; then
  "$NVCC" -fatbin -O3 -std=c++17 "${all_archs[@]}" -o "$tmp/gomoe.fatbin" gomoe.cu & pids+=($!)
fi
"$NVCC" -fatbin -O3 -std=c++17 "${all_archs[@]}" -o "$tmp/gomoe_gmm.fatbin" gmm.cu & pids+=($!)
# CUTLASS_ENABLE_GDC_FOR_SM90: the GEMM kernels wait for the kernel before them before they touch
# global memory and let the next one launch when they run out of tiles, so they can be launched
# with programmatic stream serialization like the other kernels (gdc.cuh).
"$NVCC" -fatbin -O3 "${cutlass[@]}" -DCUTLASS_ENABLE_GDC_FOR_SM90 -gencode arch=compute_90a,code=sm_90a \
  -o "$tmp/gomoe_sm90.fatbin" gmm_sm90.cu & pids+=($!)
"$NVCC" -fatbin -O3 "${cutlass[@]}" -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
  -gencode arch=compute_80,code=compute_80 -o "$tmp/gomoe_simt.fatbin" gmm_simt.cu & pids+=($!)
"$NVCC" -c -O2 "${cutlass[@]}" -DCUTLASS_ENABLE_DIRECT_CUDA_DRIVER_CALL=1 -Xcompiler -fPIC \
  -gencode arch=compute_90a,code=sm_90a -o "$tmp/gmm_sm90_host.o" gmm_sm90_host.cu & pids+=($!)
"$NVCC" -c -O2 "${cu13host[@]}" "${cutlass[@]}" -DCUTLASS_ENABLE_DIRECT_CUDA_DRIVER_CALL=1 -Xcompiler -fPIC \
  -gencode arch=compute_90a,code=sm_90a -o "$tmp/gmm_sm90_host13.o" gmm_sm90_host.cu & pids+=($!)
"$NVCC" -c -O2 "${cutlass[@]}" -Xcompiler -fPIC -gencode arch=compute_80,code=sm_80 \
  -o "$tmp/gmm_simt_host.o" gmm_simt_host.cu & pids+=($!)
for p in "${pids[@]}"; do wait "$p"; done
ar rcsD "$tmp/host.a" "$tmp/gmm_sm90_host.o" "$tmp/gmm_sm90_host13.o" "$tmp/gmm_simt_host.o"
[[ $what == all ]] && mv "$tmp/gomoe.fatbin" gomoe.fatbin
mv "$tmp/gomoe_gmm.fatbin" gomoe_gmm.fatbin
mv "$tmp/gomoe_sm90.fatbin" gomoe_sm90.fatbin
mv "$tmp/gomoe_simt.fatbin" gomoe_simt.fatbin
mv "$tmp/host.a" gmm_host_linux_amd64.a

main_src=$(srcs "${main_sources[@]}")
if [[ $what == all ]]; then main_nvcc=$nv; else main_nvcc=$(old nvcc); fi
{
  echo "sources $main_src"
  echo "fatbin $(sum gomoe.fatbin)"
  echo "nvcc $main_nvcc"
  echo "gmm-sources $(srcs "${gmm_sources[@]}")"
  echo "gmmfatbin $(sum gomoe_gmm.fatbin)"
  echo "sm90fatbin $(sum gomoe_sm90.fatbin)"
  echo "simtfatbin $(sum gomoe_simt.fatbin)"
  echo "host $(sum gmm_host_linux_amd64.a)"
  echo "gmm-nvcc $nv"
  echo "cutlass $ver"
  grep -E '^(cu13-gmm-sources|sm90fatbin13|cu13-nvcc) ' gomoe.fatbin.sha256 || true
} > "$tmp/record"
mv "$tmp/record" gomoe.fatbin.sha256
cat gomoe.fatbin.sha256
