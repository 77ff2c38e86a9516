//go:build !unix

package kernels

import "time"

// processCPU is not measured here: BenchmarkGemm leaves out its CPU-time metric.
func processCPU() time.Duration { return 0 }
