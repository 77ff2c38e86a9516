package kernels

import (
	"flag"
	"fmt"
	"math/rand"
	"runtime"
	"testing"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// BenchmarkGemm compares the engine (each kernel path this CPU runs) with gonum's Sgemm and
// Dgemm in the same run, at square sizes and at the MoE layer's shapes (T1024 H128 F256 E8 K2:
// one expert's 256 rows through W1/W3 fused [128,512] and W2 [256,128], their row gradients and
// weight gradients over 256 rows, and the router [1024,128]·[128,8]). It reports GFLOP/s
// overall and per core (GOMAXPROCS), and GFLOP/cpu-s: the flops over the CPU time the process
// used meanwhile (all threads), the per-core rate that time-slicing on a loaded machine does
// not dilute (it does count spinning and the runtime's own work).
//
// The engine runs with each assembly kernel this CPU has (avx512, avx2), and OpenBLAS under
// the openblas build tag; the portable "go" kernel with -gemm.go (it is slow at the large
// sizes).
func BenchmarkGemm(b *testing.B) {
	gemmBenchPaths = gemmBenchPaths[:0]
	for _, p := range []string{"avx512", "avx2", "go", "openblas"} {
		if (p != "go" || *gemmBenchGo) && gemmSetPath(p) {
			gemmBenchPaths = append(gemmBenchPaths, p)
		}
	}
	gemmRestoreB()()
	type shape struct {
		name    string
		tA, tB  bool
		m, n, k int
	}
	var shapes []shape
	for _, s := range []int{256, 512, 1024, 2048} {
		shapes = append(shapes, shape{fmt.Sprintf("square%d", s), false, false, s, s, s})
	}
	shapes = append(shapes,
		shape{"fwd_256x512x128", false, false, 256, 512, 128},
		shape{"fwd_256x128x256", false, false, 256, 128, 256},
		shape{"bwdrows_256x128x512_NT", false, true, 256, 128, 512},
		shape{"bwdweights_128x512x256_TN", true, false, 128, 512, 256},
		shape{"router_1024x8x128", false, false, 1024, 8, 128},
	)
	for _, s := range shapes {
		for _, dt := range []string{"f32", "f64"} {
			if dt == "f64" && s.m*s.n*s.k > 1<<30 {
				continue
			}
			rng := rand.New(rand.NewSource(1))
			a, bb := gmmRand(rng, s.m*s.k), gmmRand(rng, s.k*s.n)
			lda, ldb := s.k, s.n
			if s.tA {
				lda = s.m
			}
			if s.tB {
				ldb = s.k
			}
			flops := 2 * float64(s.m) * float64(s.n) * float64(s.k)
			var cpu0 time.Duration
			report := func(b *testing.B) {
				g := flops * float64(b.N) / b.Elapsed().Seconds() / 1e9
				b.ReportMetric(g, "GFLOP/s")
				b.ReportMetric(g/float64(runtime.GOMAXPROCS(0)), "GFLOP/s/core")
				if cpu := processCPU() - cpu0; cpu > 0 && cpu0 > 0 {
					b.ReportMetric(flops*float64(b.N)/cpu.Seconds()/1e9, "GFLOP/cpu-s")
				}
			}
			cpu0p := func() { cpu0 = processCPU() }
			var impl gonum.Implementation
			tr := func(t bool) blas.Transpose {
				if t {
					return blas.Trans
				}
				return blas.NoTrans
			}
			if dt == "f32" {
				a32, b32, c32 := gmmConv[float32](a), gmmConv[float32](bb), make([]float32, s.m*s.n)
				benchGemmPaths(b, s.name+"/f32", cpu0p, report, func() {
					impl.Sgemm(tr(s.tA), tr(s.tB), s.m, s.n, s.k, 1, a32, lda, b32, ldb, 0, c32, s.n)
				}, func() { _ = Gemm(s.tA, s.tB, s.m, s.n, s.k, a32, lda, b32, ldb, 0, c32, s.n) })
			} else {
				c64 := make([]float64, s.m*s.n)
				benchGemmPaths(b, s.name+"/f64", cpu0p, report, func() {
					impl.Dgemm(tr(s.tA), tr(s.tB), s.m, s.n, s.k, 1, a, lda, bb, ldb, 0, c64, s.n)
				}, func() { _ = Gemm(s.tA, s.tB, s.m, s.n, s.k, a, lda, bb, ldb, 0, c64, s.n) })
			}
		}
	}
}

var (
	gemmBenchGo    = flag.Bool("gemm.go", false, "BenchmarkGemm: also time the portable Go micro-kernel")
	gemmBenchPaths []string
	gemmDefault32  = gemmF32
	gemmDefault64  = gemmF64
)

// gemmRestoreB returns a function that puts back the kernels chosen at start-up.
func gemmRestoreB() func() {
	return func() { gemmF32, gemmF64 = gemmDefault32, gemmDefault64 }
}

// benchGemmPaths times gonum (one call of gonum) and each of this CPU's kernel paths (one call
// of ours) as sub-benchmarks of name; start resets the CPU-time baseline, report reports.
func benchGemmPaths(b *testing.B, name string, start func(), report func(*testing.B), gonum, ours func()) {
	b.Run(name+"/gonum", func(b *testing.B) {
		start()
		for i := 0; i < b.N; i++ {
			gonum()
		}
		report(b)
	})
	for _, path := range gemmBenchPaths {
		b.Run(name+"/"+path, func(b *testing.B) {
			defer gemmRestoreB()()
			gemmSetPath(path)
			start()
			for i := 0; i < b.N; i++ {
				ours()
			}
			report(b)
		})
	}
}
