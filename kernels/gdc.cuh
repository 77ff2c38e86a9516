// gdc.cuh: grid dependency control, shared by every gomoe kernel (included by gomoe.cuh and
// gmm.cu; the launches that use it are in launch_cuda.go and gmm_sm90_cuda.go).
#pragma once

// gdcEnter is the first statement of every gomoe kernel but wait_flag (syncprobe.cuh): launched
// with programmatic stream serialization (Hopper, launch_cuda.go), a kernel may start while the
// kernel before it in the stream is still running. It first waits until that kernel has finished
// and its writes are visible, then lets the next kernel launch: its blocks take the SMs this one
// leaves free and wait in their own gdcEnter. Nothing touches global memory before the wait, so
// results do not depend on how launches overlap. Letting the next kernel launch only after the wait
// keeps one kernel waiting at a time; a first build that let it launch before the wait, so that a
// chain of small kernels could all launch at once and wait on each other, ran plan + permute 2-3 %
// slower than plain launches at the dsv3 and te16k shapes (H100, one run). Without such a launch it
// returns at once; compiled for sm_80 or from the compute_80 PTX (what a GPU newer than Hopper
// runs) it is empty, and launch_cuda.go then launches plain.
__device__ __forceinline__ void gdcEnter() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
