//go:build gomoecuda

package kernels

/*
#cgo LDFLAGS: -lcuda
#include <cuda.h>
#include <stdint.h>

// gomoe_launch launches f on stream s with n arguments held in 8-byte slots: one
// cgo call and no allocation per launch.
static CUresult gomoe_launch(CUfunction f, unsigned grid, unsigned block, unsigned smem,
                             uint64_t *args, int n, CUstream s) {
	void *params[32];
	for (int i = 0; i < n && i < 32; i++) params[i] = &args[i];
	return cuLaunchKernel(f, grid, 1, 1, block, 1, 1, smem, s, params, 0);
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

// launchRaw launches f (the kernel name) on stream with the argument slots a (at most 32).
func launchRaw(name string, stream unsafe.Pointer, f cu.Function, grid, block, smem int, a []uint64) error {
	if len(a) > 32 {
		return fmt.Errorf("gomoe: launching %s: %d kernel arguments, at most 32", name, len(a))
	}
	var p *C.uint64_t
	if len(a) > 0 {
		p = (*C.uint64_t)(unsafe.Pointer(&a[0]))
	}
	return cuErr("launching "+name, C.gomoe_launch(handle(f), C.uint(grid), C.uint(block), C.uint(smem), p, C.int(len(a)), C.CUstream(stream)))
}
