//go:build gomoecuda

package kernels

/*
#cgo LDFLAGS: ${SRCDIR}/gmm_host_linux_amd64.a -lcudart -lstdc++ -lcuda
#include <cuda.h>
#include <stdint.h>

// The host library's interface (gmm_simt_host.cu).
typedef struct {
	int kernel;
	int groups;
	int blocks;
	uint64_t shapes, ptrA, ptrB, ptrC, ptrD, ldA, ldB, ldC, ldD;
	double alpha, beta;
} gomoe_gmmsimt_args;

typedef struct {
	unsigned long long params_bytes;
	unsigned int smem_bytes;
	unsigned int threads;
} gomoe_gmmsimt_info;

int gomoe_gmmsimt_build(const gomoe_gmmsimt_args *a, void *params, unsigned long long cap, gomoe_gmmsimt_info *info);

// gomoe_launch_params launches f on stream s with one by-value parameter.
static CUresult gomoe_launch_params(CUfunction f, unsigned grid, unsigned block, unsigned smem, void *params, CUstream s) {
	void *args[1];
	args[0] = params;
	return cuLaunchKernel(f, grid, 1, 1, block, 1, 1, smem, s, args, 0);
}

static CUresult gomoe_occupancy(CUfunction f, int block, unsigned smem, int *n) {
	return cuOccupancyMaxActiveBlocksPerMultiprocessor(n, f, block, smem);
}

CUresult gomoe_device_info(int *ordinal, int *major, int *minor, int *sms); // gmm_sm90_cuda.go

*/
import "C"

import (
	_ "embed"
	"fmt"
	"sync"
	"unsafe"

	"gorgonia.org/cu"
)

// The float32 and float64 grouped matmul with the plan's sizes read on the device: CUTLASS's
// grouped GEMM (CUDA-core FMA, no TF32; gmm_simt.cuh) on the group table that gmm_prepare
// writes, for compute capability 8.0 and later. Like the sm_90a path it enqueues gmm_prepare,
// the zeroing kernel and the GEMM, and reads nothing back; its Params hold only the group
// table's addresses and are built once per (pass, dtype, number of experts).

//go:embed gomoe_simt.fatbin
var simtFatbin string

// gmmSimtKernels are the kernels of gomoe_simt.fatbin, index 2·form + (1 for float64).
var gmmSimtKernels = [...]string{"gmmsimt_fwd_f32", "gmmsimt_fwd_f64", "gmmsimt_rows_f32", "gmmsimt_rows_f64", "gmmsimt_wgrad_f32", "gmmsimt_wgrad_f64"}

// gmmSimt is the float32/float64 grouped matmul state of one CUDA value.
type gmmSimt struct {
	mu sync.Mutex
	// unsupported: this GPU cannot run the kernels (compute capability below 8.0), its float32
	// and float64 grouped matmuls take cuBLAS; err: they failed to load, every grouped matmul
	// that needs them returns it (as gmm90's).
	unsupported error
	err         error
	mod         cu.Module
	fn          [len(gmmSimtKernels)]C.CUfunction
	info        [len(gmmSimtKernels)]C.gomoe_gmmsimt_info
	blocks      [len(gmmSimtKernels)]int // persistent grid: SMs × resident blocks per SM
	tables      [3][2]gmmSimtSlot        // [form][float64]
}

// gmmSimtKey names built Params: the call's number of experts (the table's layout), alpha
// and beta.
type gmmSimtKey struct {
	groups      int
	alpha, beta float64
}

// gmmSimtSlot is one kernel's group table and the Params built for it.
type gmmSimtSlot struct {
	table  gmmTable
	params map[gmmSimtKey][]byte
}

// gmmSimtOf returns c's float32/float64 grouped matmul state, loading the kernels on first
// use. It must run inside c.do.
func (c *CUDA) gmmSimtOf() *gmmSimt {
	c.gmmSimtOnce.Do(func() {
		st := &gmmSimt{}
		c.gsimt = st
		var ordinal, major, minor, sms C.int
		if r := C.gomoe_device_info(&ordinal, &major, &minor, &sms); r != C.CUDA_SUCCESS {
			st.err = fmt.Errorf("gomoe: reading the device's attributes: CUDA error %d", int(r))
			return
		}
		if major < 8 {
			st.unsupported = fmt.Errorf("gomoe: the float32/float64 grouped GEMM needs compute capability 8.0 or later, this GPU has %d.%d", major, minor)
			return
		}
		var fns []C.CUfunction
		st.mod, fns, st.err = loadCUTLASS("gomoe_simt.fatbin", simtFatbin, "gmmsimt_params_bytes", gmmSimtKernels[:], func(i int) (uint64, int, error) {
			a := C.gomoe_gmmsimt_args{kernel: C.int(i)}
			if rc := C.gomoe_gmmsimt_build(&a, nil, 0, &st.info[i]); rc != 0 {
				return 0, 0, fmt.Errorf("host library returned %d", int(rc))
			}
			return uint64(st.info[i].params_bytes), int(st.info[i].smem_bytes), nil
		})
		if st.err != nil {
			return
		}
		copy(st.fn[:], fns)
		for i, n := range gmmSimtKernels {
			var per C.int
			if r := C.gomoe_occupancy(st.fn[i], C.int(st.info[i].threads), st.info[i].smem_bytes, &per); r != C.CUDA_SUCCESS || per < 1 {
				st.err = fmt.Errorf("gomoe: kernel %s: no resident block per SM (CUDA error %d)", n, int(r))
				return
			}
			st.blocks[i] = int(sms) * int(per)
		}
	})
	return c.gsimt
}

// close frees the tables and unloads the module. It runs inside c.do.
func (st *gmmSimt) close() error {
	if st == nil {
		return nil
	}
	var err error
	for f := range st.tables {
		for d := range st.tables[f] {
			if e := st.tables[f][d].table.free(); err == nil {
				err = e
			}
			st.tables[f][d] = gmmSimtSlot{}
		}
	}
	if st.mod != (cu.Module{}) {
		if e := st.mod.Unload(); err == nil {
			err = e
		}
	}
	return err
}

// runGMMSimt enqueues one float32/float64 grouped matmul of form (see runGMM90). It must run
// inside c.do.
func (c *CUDA) runGMMSimt(st *gmmSimt, form int, d DType, g Geometry, H, N int, out, a, b, plan cu.DevicePtr, accumulate bool) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	f64 := 0
	if d == F64 {
		f64 = 1
	}
	k := 2*form + f64
	s := &st.tables[form][f64]
	moved, err := s.table.ensure(g.E)
	if err != nil {
		return err
	}
	if moved || s.params == nil {
		s.params = map[gmmSimtKey][]byte{}
	}
	beta := 0.0
	if accumulate {
		beta = 1
	}
	key := gmmSimtKey{g.E, 1, beta}
	params := s.params[key]
	if params == nil {
		at := func(i int64) C.uint64_t { return C.uint64_t(s.table.at(i, g.E)) }
		args := C.gomoe_gmmsimt_args{kernel: C.int(k), groups: C.int(g.E), blocks: C.int(st.blocks[k]),
			shapes: at(-1), ptrA: at(0), ptrB: at(1), ptrC: at(2), ptrD: at(3),
			ldA: at(4), ldB: at(5), ldC: at(6), ldD: at(7), alpha: 1, beta: C.double(beta)}
		params = make([]byte, int(st.info[k].params_bytes))
		var info C.gomoe_gmmsimt_info
		if rc := C.gomoe_gmmsimt_build(&args, unsafe.Pointer(&params[0]), C.ulonglong(len(params)), &info); rc != 0 {
			return fmt.Errorf("gomoe: grouped GEMM %s: building its parameters failed (code %d)", gmmSimtKernels[k], int(rc))
		}
		s.params[key] = params
	}
	if err := c.gmmSetup(form, d, g, H, N, out, a, b, plan, s.table.ptr, accumulate); err != nil {
		return err
	}
	return cuErr("launching "+gmmSimtKernels[k], C.gomoe_launch_params(st.fn[k], C.uint(st.blocks[k]), C.uint(st.info[k].threads), C.uint(st.info[k].smem_bytes), unsafe.Pointer(&params[0]), c.cstream()))
}
