//go:build gomoecuda

package kernels_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"gorgonia.org/cu"

	. "github.com/gomoe/gomoe/kernels"
)

// The routing losses on the GPU against their CPU twins (loss.go): the balancing loss and its
// gradient bit for bit (same summation order, no FMA), the z-loss and its gradient within a
// float32 ulp (float32) or a few float64 ulps (float64), since CUDA's exp and log are not Go's.
// The output gradient comes from the host (dyv) and from the device (a one-element tensor).

type loCase struct {
	name       string
	T, K, E, B int
}

var loCases = []loCase{
	{"tiny", 8, 2, 4, 1},
	{"E1", 64, 1, 1, 1},
	{"partial chunk", 130, 3, 9, 1},
	{"seqs", 200, 2, 16, 2},
	{"lanes", 300, 3, 40, 10},
	{"wide E", 150, 4, 300, 3},
	{"qwen", 4096, 8, 128, 1},
	{"qwen seq", 4096, 8, 128, 8},
	{"mixtral", 4096, 2, 8, 4},
}

func loIDs(rng *rand.Rand, T, K, E int) []int32 {
	ids := make([]int32, T*K)
	for t := 0; t < T; t++ {
		p := rng.Perm(E)
		for k := 0; k < K; k++ {
			ids[t*K+k] = int32(p[k])
			if rng.IntN(11) == 0 {
				ids[t*K+k] = -1
			}
		}
	}
	return ids
}

func loRand(rng *rand.Rand, n int, scale float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.NormFloat64() * scale
	}
	return v
}

func loF32(v []float64) []float32 {
	o := make([]float32, len(v))
	for i, x := range v {
		o[i] = float32(x)
	}
	return o
}

func loBits[F float32 | float64](t *testing.T, what string, got, want []F) {
	t.Helper()
	for i := range want {
		if math.Float64bits(float64(got[i])) != math.Float64bits(float64(want[i])) {
			t.Fatalf("%s[%d] = %v, want %v (bit for bit)", what, i, got[i], want[i])
		}
	}
}

func loClose[F float32 | float64](t *testing.T, what string, got, want []F, rel float64) {
	t.Helper()
	for i := range want {
		g, w := float64(got[i]), float64(want[i])
		if d := math.Abs(g - w); !(d <= rel*math.Abs(w)) && !(math.IsNaN(g) && math.IsNaN(w)) && g != w {
			t.Fatalf("%s[%d] = %v, want %v (rel diff %g > %g)", what, i, got[i], want[i], d/math.Abs(w), rel)
		}
	}
}

// loDType is the kernels dtype of F.
func loDType[F float32 | float64]() DType {
	var z F
	if _, ok := any(z).(float32); ok {
		return F32
	}
	return F64
}

func loBalance[F float32 | float64](t *testing.T, c loCase, ids []int32, s []F, dyv float64) {
	d := loDType[F]()
	size := int64(4)
	if d == F64 {
		size = 8
	}
	scale := 0.01 * float64(c.E) / (float64(c.B) * float64(c.K) * float64(c.T/c.B) * float64(c.T/c.B))
	want, err := BalanceLossForward(ids, s, c.T, c.K, c.E, c.B, scale)
	cuMust(t, err)
	wantG := make([]F, c.T*c.E)
	cuMust(t, BalanceLossBackward(wantG, ids, c.T, c.K, c.E, c.B, scale, dyv))

	bIDs, bS := cuUpload(t, ids), cuUpload(t, s)
	work := cuAlloc(t, BalanceLossWorkBytes(c.T, c.E, c.B))
	out := cuAlloc(t, size)
	for run := 0; run < 2; run++ { // twice: the same bits (deterministic, no stale scratch)
		cuMust(t, testCUDA.BalanceLossForward(d, out.p, bIDs.p, bS.p, work.p, c.T, c.K, c.E, c.B, scale))
		loBits(t, "loss", cuDownload[F](t, out, 1), []F{want})
	}
	ds := cuAlloc(t, size*int64(c.T*c.E))
	cuMust(t, testCUDA.BalanceLossBackward(d, ds.p, bIDs.p, work.p, 0, c.T, c.K, c.E, c.B, scale, dyv))
	loBits(t, "dscores (host dy)", cuDownload[F](t, ds, c.T*c.E), wantG)
	dy := cuUpload(t, []F{F(dyv)})
	ds2 := cuAlloc(t, size*int64(c.T*c.E))
	cuMust(t, testCUDA.BalanceLossBackward(d, ds2.p, bIDs.p, work.p, dy.p, c.T, c.K, c.E, c.B, scale, math.NaN()))
	loBits(t, "dscores (device dy)", cuDownload[F](t, ds2, c.T*c.E), wantG)
	cuMust(t, testCUDA.Status())
}

func TestCUDABalanceLoss(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range loCases {
		t.Run(c.name, func(t *testing.T) {
			ids := loIDs(rng, c.T, c.K, c.E)
			s := loRand(rng, c.T*c.E, 1)
			loBalance(t, c, ids, loF32(s), float64(float32(0.75)))
			loBalance(t, c, ids, s, 0.75)
		})
	}
}

// TestCUDABalanceLossBadIDs: ids outside [-1, E) set StatusBadID and count as -1.
func TestCUDABalanceLossBadIDs(t *testing.T) {
	const T, K, E, B = 6, 2, 4, 2
	ids := []int32{0, 1, 7, 2, 3, -1, -5, 0, 1, 2, 3, 0}
	clean := []int32{0, 1, -1, 2, 3, -1, -1, 0, 1, 2, 3, 0}
	s := loRand(rand.New(rand.NewPCG(5, 6)), T*E, 1)
	want, err := BalanceLossForward(clean, s, T, K, E, B, 0.5)
	cuMust(t, err)
	out := cuAlloc(t, 8)
	cuMust(t, testCUDA.BalanceLossForward(F64, out.p, cuUpload(t, ids).p, cuUpload(t, s).p, cuAlloc(t, BalanceLossWorkBytes(T, E, B)).p, T, K, E, B, 0.5))
	err = testCUDA.Status()
	var se StatusError
	if !errors.As(err, &se) || int32(se)&StatusBadID == 0 {
		t.Fatalf("Status() = %v, want StatusBadID", err)
	}
	loBits(t, "loss", cuDownload[float64](t, out, 1), []float64{want})
}

func loZ[F float32 | float64](t *testing.T, T, E int, x []F, dyv float64, rel float64) {
	d := loDType[F]()
	size := int64(4)
	if d == F64 {
		size = 8
	}
	scale := 0.001 / float64(T)
	want, err := ZLossForward(x, T, E, scale)
	cuMust(t, err)
	wantG := make([]F, T*E)
	cuMust(t, ZLossBackward(wantG, x, T, E, scale, dyv))

	bx := cuUpload(t, x)
	work := cuAlloc(t, ZLossWorkBytes(T))
	out := cuAlloc(t, size)
	cuMust(t, testCUDA.ZLossForward(d, out.p, bx.p, work.p, T, E, scale))
	got := cuDownload[F](t, out, 1)
	loClose(t, "z-loss", got, []F{want}, rel)
	cuMust(t, testCUDA.ZLossForward(d, out.p, bx.p, work.p, T, E, scale))
	loBits(t, "z-loss (second run)", cuDownload[F](t, out, 1), got)

	dx := cuAlloc(t, size*int64(T*E))
	cuMust(t, testCUDA.ZLossBackward(d, dx.p, bx.p, 0, T, E, scale, dyv))
	gotG := cuDownload[F](t, dx, T*E)
	loClose(t, "dlogits (host dy)", gotG, wantG, rel)
	dy := cuUpload(t, []F{F(dyv)})
	cuMust(t, testCUDA.ZLossBackward(d, dx.p, bx.p, dy.p, T, E, scale, math.NaN()))
	loBits(t, "dlogits (device dy)", cuDownload[F](t, dx, T*E), gotG)
	cuMust(t, testCUDA.Status())
}

func TestCUDAZLoss(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, c := range loCases {
		t.Run(c.name, func(t *testing.T) {
			x := loRand(rng, c.T*c.E, 3)
			if c.E > 1 {
				x[c.E+1] = math.Inf(-1) // a masked logit in row 1
			}
			// float32: the float64 results agree within a few ulps, then round once: at most
			// one float32 ulp apart. float64: a few ulps (exp and log, sums in other orders).
			loZ(t, c.T, c.E, loF32(x), float64(float32(0.75)), 1.2e-7)
			loZ(t, c.T, c.E, x, 0.75, 1e-13)
		})
	}
}

// TestCUDALossArgs checks the launchers' errors.
func TestCUDALossArgs(t *testing.T) {
	var p cu.DevicePtr = 0
	for _, err := range []error{
		testCUDA.BalanceLossForward(BF16, p, p, p, p, 4, 1, 2, 1, 1),
		testCUDA.BalanceLossForward(F32, p, p, p, p, 4, 1, 2, 3, 1),
		testCUDA.BalanceLossBackward(F32, p, p, p, p, 0, 1, 2, 1, 1, 1),
		testCUDA.ZLossForward(BF16, p, p, p, 4, 2, 1),
		testCUDA.ZLossBackward(F64, p, p, p, 4, 0, 1, 1),
	} {
		if err == nil {
			t.Errorf("bad arguments gave no error")
		}
	}
}

// TestCUDALossBench times the loss kernels (CUDA events, mean of -gomoe.iters launches) at the
// issue's shapes: go test -tags gomoecuda -run TestCUDALossBench -gomoe.bench -v ./kernels/
// Each line gives µs per call and the bandwidth of the one read of the [T,E] float32 input.
func TestCUDALossBench(t *testing.T) {
	if !*gpuBenchFlag {
		t.Skip("run with -gomoe.bench")
	}
	rng := rand.New(rand.NewPCG(9, 10))
	for _, c := range []loCase{{"qwen3 B=1", 4096, 8, 128, 1}, {"qwen3 B=8", 4096, 8, 128, 8}, {"mixtral", 4096, 2, 8, 1}, {"16k E256", 16384, 8, 256, 1}} {
		ids, s := cuUpload(t, loIDs(rng, c.T, c.K, c.E)), cuUpload(t, loF32(loRand(rng, c.T*c.E, 1)))
		work := cuAlloc(t, max(BalanceLossWorkBytes(c.T, c.E, c.B), ZLossWorkBytes(c.T)))
		out, ds := cuAlloc(t, 4), cuAlloc(t, 4*int64(c.T*c.E))
		n := *gpuBenchIters
		bytes := float64(4 * c.T * c.E)
		for _, k := range []struct {
			name string
			f    func() error
		}{
			{"balance fwd", func() error {
				return testCUDA.BalanceLossForward(F32, out.p, ids.p, s.p, work.p, c.T, c.K, c.E, c.B, 1e-3)
			}},
			{"balance bwd", func() error {
				return testCUDA.BalanceLossBackward(F32, ds.p, ids.p, work.p, 0, c.T, c.K, c.E, c.B, 1e-3, 1)
			}},
			{"z-loss fwd", func() error { return testCUDA.ZLossForward(F32, out.p, s.p, work.p, c.T, c.E, 1e-3) }},
			{"z-loss bwd", func() error { return testCUDA.ZLossBackward(F32, ds.p, s.p, 0, c.T, c.E, 1e-3, 1) }},
		} {
			ms := cuTimeIt(t, n, k.f)
			t.Logf("%-10s T=%d K=%d E=%d B=%d  %-11s %8.1f µs  %6.0f GB/s", c.name, c.T, c.K, c.E, c.B, k.name, ms*1e3, bytes/(ms*1e-3)/1e9)
		}
	}
}
