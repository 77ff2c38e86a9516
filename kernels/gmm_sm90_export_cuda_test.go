//go:build gomoecuda

package kernels

import (
	"errors"
	"fmt"

	"gorgonia.org/cu"
)

// SetGMMCUBLAS forces (true) or releases (false) the cuBLAS path of the grouped matmul and
// returns the previous setting.
func SetGMMCUBLAS(on bool) bool {
	old := gmmForceCUBLAS
	gmmForceCUBLAS = on
	return old
}

// LastGMMPath is the path c's last grouped matmul took: "sm90", "simt" or "cublas".
func LastGMMPath(c *CUDA) string { return c.lastGMM }

// SM90Error says why c has no sm_90a grouped GEMM (nil: it has one).
func SM90Error(c *CUDA) error {
	var err error
	_ = c.Do(func() error { st := c.gmm90Of(); err = errors.Join(st.unsupported, st.err); return nil })
	return err
}

// GMM90Kernel is gmm90Kernel's pick for form (0 forward, 1 rows, 2 weights).
func GMM90Kernel(form int, g Geometry, H, N int) string {
	return gmm90Kernels[gmm90Kernel(form, g, H, N)]
}

// GMM90Scheds are the names of the sm_90a schedules.
func GMM90Scheds() []string { return gmm90Scheds[:] }

// SetGMM90Sched makes every sm_90a grouped GEMM use schedule s (-1: the static choice) and
// returns the previous setting.
func SetGMM90Sched(s int) int {
	old := gmm90ForceSched
	gmm90ForceSched = s
	return old
}

// SetGMM90TileOrder makes the sm_90a grouped GEMMs walk their tiles along n (raster 1) or m
// (raster 0, the default) with CUTLASS's max swizzle size swizzle (1: none), and returns the
// previous setting.
func SetGMM90TileOrder(raster, swizzle int) (int, int) {
	old := gmm90TileOrder
	gmm90TileOrder = gmm90Tiles{raster, swizzle}
	return old.raster, old.swizzle
}

// SimtError says why c has no float32/float64 device-sized grouped GEMM (nil: it has one).
func SimtError(c *CUDA) error {
	var err error
	_ = c.Do(func() error {
		st := c.gmmSimtOf()
		err = errors.Join(st.unsupported, st.err)
		return nil
	})
	return err
}

// SM90ParamsMismatch loads the sm_90a kernels as c does, except that the host library's Params
// sizes are taken as 64 bytes larger (a fatbin and host library from different builds), and
// returns loadCUTLASS's error. It needs a Hopper GPU (SM90Error(c) nil).
func SM90ParamsMismatch(c *CUDA) error {
	var err error
	_ = c.Do(func() error {
		st := c.gmm90Of()
		host := gmm90HostInfo(st.sms, st.cu13)
		file, fatbin := gmm90Fatbin(st.cu13)
		var mod cu.Module
		mod, _, err = loadCUTLASS(file, fatbin, "gmm90_params_bytes", gmm90Kernels[:], func(i int) (uint64, int, error) {
			params, smem, err := host(i)
			return params + 64, smem, err
		})
		if mod != (cu.Module{}) {
			if e := mod.Unload(); e != nil && err == nil {
				err = fmt.Errorf("unloading: %w", e)
			}
		}
		return nil
	})
	return err
}

// NewCUDAKernelsDidNotLoad returns a new CUDA in c's context whose device-sized grouped GEMMs
// (sm_90a and float32/float64) are marked as having failed to load, for why.
func NewCUDAKernelsDidNotLoad(c *CUDA, why error) (*CUDA, error) {
	n, err := NewCUDA(c.ctx)
	if err != nil {
		return nil, err
	}
	n.gmm90Once.Do(func() { n.g90 = &gmm90{err: why} })
	n.gmmSimtOnce.Do(func() { n.gsimt = &gmmSimt{err: why} })
	return n, nil
}

// SM90CU13 reports whether c's sm_90a grouped GEMM runs the nvcc 13 pair.
func SM90CU13(c *CUDA) bool {
	var on bool
	_ = c.Do(func() error { on = c.gmm90Of().cu13; return nil })
	return on
}

// SetGMM90NoCU13 makes CUDA values made after it load the nvcc 12 sm_90a pair on every driver
// (true) or the nvcc 13 pair on CUDA 13 drivers (false, the default), and returns the previous
// setting.
func SetGMM90NoCU13(on bool) bool { old := gmm90NoCU13; gmm90NoCU13 = on; return old }

// GMM90CU13 is gmm90CU13: whether a driver of that version gets the nvcc 13 pair.
func GMM90CU13(driver int) bool { return gmm90CU13(driver) }

// NewCUDAKernelsLike returns a new CUDA in c's context.
func NewCUDAKernelsLike(c *CUDA) (*CUDA, error) { return NewCUDA(c.ctx) }

// GMM90TableAddr is the device address of the group table of c's sm_90a slot of form (0
// forward, 1 rows, 2 weights; 0: none yet).
func GMM90TableAddr(c *CUDA, form int) cu.DevicePtr {
	var p cu.DevicePtr
	_ = c.Do(func() error { p = c.gmm90Of().slots[form].table.ptr; return nil })
	return p
}
