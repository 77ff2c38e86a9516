//go:build gomoecuda

package kernels

/*
#cgo LDFLAGS: -lcuda
#include <cuda.h>
#include <stdint.h>

// gomoe_launch launches f on stream s with n arguments held in 8-byte slots: one
// cgo call and no allocation per launch. With pdl the launch allows programmatic stream
// serialization: f may start before the kernel ahead of it in s has finished (gdc.cuh).
static CUresult gomoe_launch(CUfunction f, unsigned grid, unsigned block, unsigned smem,
                             uint64_t *args, int n, CUstream s, int pdl) {
	void *params[32];
	for (int i = 0; i < n && i < 32; i++) params[i] = &args[i];
	CUlaunchAttribute attr[1];
	attr[0].id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
	attr[0].value.programmaticStreamSerializationAllowed = 1;
	CUlaunchConfig cfg = {0};
	cfg.gridDimX = grid;
	cfg.gridDimY = 1;
	cfg.gridDimZ = 1;
	cfg.blockDimX = block;
	cfg.blockDimY = 1;
	cfg.blockDimZ = 1;
	cfg.sharedMemBytes = smem;
	cfg.hStream = s;
	cfg.attrs = attr;
	cfg.numAttrs = pdl ? 1 : 0;
	return cuLaunchKernelEx(&cfg, f, params, 0);
}
*/
import "C"

import (
	"fmt"
	"unsafe"

	"gorgonia.org/cu"
)

// handle is the CUfunction inside a cu.Function (its only field).
func handle(f cu.Function) C.CUfunction { return *(*C.CUfunction)(unsafe.Pointer(&f)) }

// Programmatic dependent launch. Every kernel in gomoe.fatbin and gomoe_gmm.fatbin starts with
// gdcEnter (gdc.cuh), except the sync probe's wait_flag, and the sm_90a GEMM kernels are built
// with CUTLASS's equivalent, so on Hopper they can be launched with programmatic stream
// serialization: a kernel's blocks are scheduled while the kernel ahead of it finishes and wait
// on the GPU, not behind the launch queue. The results are the same bits either way: no kernel
// touches global memory before the wait. Kernels not built that way (cuBLAS, the
// float32/float64 CUTLASS kernels, wait_flag) get plain launches (for gomoe's own kernels the
// same cuLaunchKernelEx call without the attribute); a kernel launched after them simply waits
// for them to finish.
//
// Only eager launches use it. Measured on an H100 (docs/gpu-bench.md): launched from the host
// it closes most of the 1–2.5 µs gap between two dependent kernels (the bfloat16 Qwen3 layer's
// forward and backward 2 % faster), while inside a CUDA graph, whose kernel-to-kernel gaps are
// already about 0.1 µs, it gained nothing and made the plan build a little slower; so launches
// made during Capture are plain ones and a replayed graph is what it was before.

// programmaticLaunch allows such launches where the GPU and driver take them (NewCUDA). The
// environment variable GOMOE_NO_PDL (any value) turns them off for the CUDA values made after
// it is set, to compare or to rule them out; tests switch them per value.
var programmaticLaunch = true

// pdlCapable reports whether c's kernels can be launched with programmatic stream
// serialization: a CUDA 12.3 or later driver (older ones are untested), a compute capability
// 9.x device, and loaded kernels compiled from sm_90 PTX or later. The last matters: the
// fatbins hold sm_80 and sm_90a machine code and compute_80 PTX, so on a newer GPU the driver
// compiles the compute_80 PTX, where gdcEnter is empty, and a kernel launched that way would
// not wait for the one before it. It runs inside do, after the modules are loaded.
func (c *CUDA) pdlCapable() bool {
	if cu.Version() < 12030 {
		return false
	}
	d, err := cu.CurrentDevice()
	if err != nil {
		return false
	}
	if major, err := d.Attribute(cu.ComputeCapabilityMajor); err != nil || major != 9 {
		return false
	}
	for _, name := range []string{"permute_fwd_v16", "gmm_prepare"} { // one of each module
		f, ok := c.fn[name]
		if !ok {
			return false
		}
		if v, err := f.Attribute(cu.PtxVersion); err != nil || v < 90 {
			return false
		}
	}
	return true
}

// eagerPDL reports whether c's next launch uses programmatic stream serialization: c allows it
// and no Capture is recording (c.stream is nil outside Capture).
func (c *CUDA) eagerPDL() bool { return c.pdl && c.stream == nil }

// launchRaw launches f (the kernel name) on stream with the argument slots a (at most 32),
// with programmatic stream serialization when pdl is set.
func launchRaw(name string, stream unsafe.Pointer, f cu.Function, grid, block, smem int, a []uint64, pdl bool) error {
	if len(a) > 32 {
		return fmt.Errorf("gomoe: launching %s: %d kernel arguments, at most 32", name, len(a))
	}
	var p *C.uint64_t
	if len(a) > 0 {
		p = (*C.uint64_t)(unsafe.Pointer(&a[0]))
	}
	return cuErr("launching "+name, C.gomoe_launch(handle(f), C.uint(grid), C.uint(block), C.uint(smem), p, C.int(len(a)), C.CUstream(stream), cbool(pdl)))
}

// waveKey names a kernel launch shape whose resident-block count CUDA.waves caches.
type waveKey struct {
	name        string
	block, smem int
}

// wave returns how many blocks of kernel name (block threads, smem bytes of dynamic shared
// memory as launch takes them) the GPU holds at once: SMs × resident blocks per SM, at least
// 1. It runs inside c.do. The cache is a map under a mutex rather than a sync.Map, whose
// interface keys would allocate on every launch.
func (c *CUDA) wave(name string, block, smem int) (int, error) {
	k := waveKey{name, block, smem}
	c.wavesMu.Lock()
	n, ok := c.waves[k]
	c.wavesMu.Unlock()
	if ok {
		return n, nil
	}
	f, ok := c.fn[name]
	if !ok {
		return 0, fmt.Errorf("gomoe: no CUDA kernel %s", name)
	}
	per, err := f.MaxActiveBlocksPerMultiProcessor(block, int64(smemPad(smem)))
	if err != nil {
		return 0, fmt.Errorf("gomoe: occupancy of %s: %w", name, err)
	}
	dev, err := cu.CurrentDevice()
	if err != nil {
		return 0, err
	}
	sms, err := dev.Attribute(cu.MultiprocessorCount)
	if err != nil {
		return 0, err
	}
	n = max(sms*per, 1)
	c.wavesMu.Lock()
	if c.waves == nil {
		c.waves = map[waveKey]int{}
	}
	c.waves[k] = n
	c.wavesMu.Unlock()
	return n, nil
}
