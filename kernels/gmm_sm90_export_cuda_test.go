//go:build gomoecuda

package kernels

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
	_ = c.Do(func() error { err = c.gmm90Of().err; return nil })
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
		err = c.gmmSimtOf().err
		return nil
	})
	return err
}
