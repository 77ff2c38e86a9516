# Source on the GPU machine, from the project root, after .gpu/env.sh:
#     source .gpu/env.sh && source ep/nccl_env.sh
# Finds NCCL as PyTorch installs it (pip package nvidia-nccl-cu13: nvidia/nccl/{include/nccl.h,
# lib/libnccl.so.2} under site-packages), adds it and the CUDA runtime to the cgo flags for the
# gomoecuda build of package ep/nccl, and keeps NCCL off NVLink multicast (NCCL_NVLS_ENABLE=0).
# Override the search with NCCL_HOME=/path/to/nvidia/nccl.
nccl=""
for d in "${NCCL_HOME:-}" /opt/torch/.venv/lib/python3*/site-packages/nvidia/nccl \
         /usr/local/lib/python3*/site-packages/nvidia/nccl /usr/lib/python3/dist-packages/nvidia/nccl; do
  if [[ -n "$d" && -f "$d/include/nccl.h" ]]; then nccl=$d; break; fi
done
if [[ -z "$nccl" ]]; then
  for py in /opt/torch/.venv/bin/python python3; do
    d=$("$py" -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null) || continue
    if [[ -f "$d/include/nccl.h" ]]; then nccl=$d; break; fi
  done
fi
if [[ -z "$nccl" ]]; then echo "nccl_env.sh: no nccl.h found; set NCCL_HOME" >&2; return 1; fi
# The pip package ships only libnccl.so.2; the linker's -lnccl needs libnccl.so.
mkdir -p /tmp/nccl-link && ln -sf "$nccl/lib/libnccl.so.2" /tmp/nccl-link/libnccl.so
export CGO_CFLAGS="${CGO_CFLAGS:-} -I$nccl/include -I/usr/local/cuda/include"
export CGO_LDFLAGS="${CGO_LDFLAGS:-} -L/tmp/nccl-link -L/usr/local/cuda/lib64 -Wl,-rpath,$nccl/lib -Wl,-rpath,/usr/local/cuda/lib64"
export LD_LIBRARY_PATH="$nccl/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export NCCL_NVLS_ENABLE=0
echo "nccl_env.sh: NCCL $(awk '/#define NCCL_MAJOR/{a=$3}/#define NCCL_MINOR/{b=$3}/#define NCCL_PATCH/{c=$3}END{print a"."b"."c}' "$nccl/include/nccl.h") at $nccl, NCCL_NVLS_ENABLE=0" >&2
