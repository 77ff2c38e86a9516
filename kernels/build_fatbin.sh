#!/usr/bin/env bash
# Builds gomoe.fatbin (sm_80 and sm_90a machine code plus compute_80 PTX, so newer GPUs JIT it)
# from the CUDA sources in this folder, and records in gomoe.fatbin.sha256 the sha256 of the
# sources (each *.cu and *.cuh file in byte order of its name: the name, a newline, the bytes)
# and of the fatbin. fatbin_hash_test.go fails when the sources no longer match that record.
#
#     kernels/build_fatbin.sh            # needs nvcc (CUDA 12 or later for sm_90a)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
NVCC=${NVCC:-nvcc}
"$NVCC" -fatbin -O3 -std=c++17 \
  -gencode arch=compute_80,code=sm_80 \
  -gencode arch=compute_90a,code=sm_90a \
  -gencode arch=compute_80,code=compute_80 \
  -o gomoe.fatbin.tmp gomoe.cu
mv gomoe.fatbin.tmp gomoe.fatbin
src=$(for f in $(ls *.cu *.cuh | LC_ALL=C sort); do printf '%s\n' "$f"; cat "$f"; done | sha256sum | cut -d' ' -f1)
bin=$(sha256sum gomoe.fatbin | cut -d' ' -f1)
{
  echo "sources $src"
  echo "fatbin $bin"
  echo "nvcc $("$NVCC" --version | awk '/release/{print $5 $6}')"
} > gomoe.fatbin.sha256
cat gomoe.fatbin.sha256
