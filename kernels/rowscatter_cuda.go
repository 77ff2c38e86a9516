//go:build gomoecuda

package kernels

/*
#cgo LDFLAGS: -lcuda
#include <cuda.h>
#include <stdint.h>

// gomoe_launch_stream launches f on stream s with n arguments held in 8-byte slots.
static CUresult gomoe_launch_stream(CUfunction f, unsigned grid, unsigned block, unsigned smem,
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

// ScatterRows enqueues on stream (a CUstream, that is a cudaStream_t, of c's device; nil is the
// default stream) the copy of the n rows of rowBytes bytes at src to the rows rowOf[i] of dst,
// skipping row i where rowOf[i] < 0. rowOf is device memory of n int32. It is the permute
// forward kernel with K = 1 and no zeroing blocks: a byte copy, so the rows arrive bit for bit
// whatever their element type. rowBytes must be even. It returns without waiting. Package ep
// uses it to reorder the rows of an all-to-all between the caller's layout and one contiguous
// staging region per peer with one launch instead of one copy per block.
func (c *CUDA) ScatterRows(stream unsafe.Pointer, dst, src, rowOf cu.DevicePtr, n int, rowBytes int64) error {
	if n < 0 || rowBytes < 2 || rowBytes%2 != 0 {
		return fmt.Errorf("gomoe: device row scatter: %d rows of %d bytes", n, rowBytes)
	}
	if n == 0 {
		return nil
	}
	name, w := "permute_fwd_v2", int64(2)
	for _, cand := range []struct {
		n string
		w int64
	}{{"permute_fwd_v16", 16}, {"permute_fwd_v8", 8}, {"permute_fwd_v4", 4}} {
		if rowBytes%cand.w == 0 && int64(dst)%cand.w == 0 && int64(src)%cand.w == 0 {
			name, w = cand.n, cand.w
			break
		}
	}
	f, ok := c.fn[name]
	if !ok {
		return fmt.Errorf("gomoe: no CUDA kernel %s", name)
	}
	nvec := rowBytes / w
	u := 4 // packs in flight per thread, as in gomoe.cu
	if name == "permute_fwd_v16" {
		u = 8
	}
	// (x, xp, rowOf, tokenOf, T, K, R, nvec, zrows, smode): grid T = n, so no block zeroes rows
	// and tokenOf is never read.
	a := *new(args).p(src).p(dst).p(rowOf).p(0).i(n).i(1).l(0).l(nvec).i(zeroRowsPerBlock).i(storeMode)
	return c.do(func() error {
		r := C.gomoe_launch_stream(handle(f), C.uint(n), C.uint(rowThreads(nvec, u)), C.uint(smemPad(4)),
			(*C.uint64_t)(unsafe.Pointer(&a[0])), C.int(len(a)), C.CUstream(stream))
		if r != C.CUDA_SUCCESS {
			var s *C.char
			C.cuGetErrorName(r, &s)
			return fmt.Errorf("gomoe: launching %s: CUDA error %d (%s)", name, int(r), C.GoString(s))
		}
		return nil
	})
}
