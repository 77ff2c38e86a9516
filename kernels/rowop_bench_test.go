package kernels

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkRowKernels times the float32 row softmax (the router's [T,E] rows and wider ones)
// and RMSNorm forward and backward, in ns per element.
func BenchmarkRowKernels(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, s := range []struct{ rows, cols int }{{1024, 8}, {4096, 128}, {1024, 4096}} {
		n := s.rows * s.cols
		x, dy, y, dx := make([]float32, n), make([]float32, n), make([]float32, n), make([]float32, n)
		gain := make([]float32, s.cols)
		for i := range x {
			x[i], dy[i] = float32(rng.NormFloat64()*3), float32(rng.NormFloat64())
		}
		for j := range gain {
			gain[j] = 1
		}
		run := func(name string, f func() error) {
			b.Run(fmt.Sprintf("%s/%dx%d", name, s.rows, s.cols), func(b *testing.B) {
				for b.Loop() {
					if err := f(); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/elem")
			})
		}
		run("softmax_fwd", func() error { return RowForward(RowSoftmax, y, x, s.cols) })
		run("rmsnorm_fwd", func() error { return RMSNorm(y, x, gain, 1e-6) })
		run("rmsnorm_bwd", func() error { return RMSNormBackward(dx, x, gain, dy, 1e-6) })
	}
}
