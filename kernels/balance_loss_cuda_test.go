//go:build gomoecuda

package kernels_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"gorgonia.org/cu"

	. "github.com/gomoe/gomoe/kernels"
)

// The load-balancing loss on the GPU against its CPU twin (balance_loss.go): the loss and its
// gradient bit for bit (same summation order, no FMA). The output gradient comes from the host
// (dyv) and from the device (a one-element tensor).

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
	if !statusHas(err, StatusBadID) {
		t.Fatalf("Status() = %v, want StatusBadID", err)
	}
	loBits(t, "loss", cuDownload[float64](t, out, 1), []float64{want})
}

// TestCUDABalanceLossArgs checks the launchers' errors.
func TestCUDABalanceLossArgs(t *testing.T) {
	var p cu.DevicePtr = 0
	for _, err := range []error{
		testCUDA.BalanceLossForward(BF16, p, p, p, p, 4, 1, 2, 1, 1),
		testCUDA.BalanceLossForward(F32, p, p, p, p, 4, 1, 2, 3, 1),
		testCUDA.BalanceLossBackward(F32, p, p, p, p, 0, 1, 2, 1, 1, 1),
	} {
		if err == nil {
			t.Errorf("bad arguments gave no error")
		}
	}
}

// loRouterBalance checks RouterBalanceLossForward/Backward on the GPU: bit for bit against the
// device chain they replace (RowForward, ActivationForward, BalanceLossForward and their
// backward, as the layer ran them), and within a few ulps of the CPU twin.
func loRouterBalance[F float32 | float64](t *testing.T, c loCase, ids []int32, x []F, dyv float64, score RouterScore) {
	d := loDType[F]()
	size := int64(d.Size())
	n := c.T * c.E
	scale := 0.01 * float64(c.E) / (float64(c.B) * float64(c.K) * float64(c.T/c.B) * float64(c.T/c.B))
	want, err := RouterBalanceLossForward(ids, x, c.T, c.K, c.E, c.B, scale, score)
	cuMust(t, err)
	wantG := make([]F, n)
	cuMust(t, RouterBalanceLossBackward(wantG, ids, x, c.T, c.K, c.E, c.B, scale, dyv, score))

	bIDs, bX := cuUpload(t, ids), cuUpload(t, x)
	work := cuAlloc(t, BalanceLossWorkBytes(c.T, c.E, c.B))
	out, dx := cuAlloc(t, size), cuAlloc(t, size*int64(n))
	cuMust(t, testCUDA.RouterBalanceLossForward(d, out.p, bIDs.p, bX.p, work.p, c.T, c.K, c.E, c.B, scale, score))
	cuMust(t, testCUDA.RouterBalanceLossBackward(d, dx.p, bIDs.p, bX.p, work.p, 0, c.T, c.K, c.E, c.B, scale, dyv, score))
	gotL, gotG := cuDownload[F](t, out, 1), cuDownload[F](t, dx, n)

	// The device chain.
	s, sg := cuAlloc(t, size*int64(n)), cuAlloc(t, size*int64(n))
	if score == RouterSoftmax {
		cuMust(t, testCUDA.RowForward(d, RowSoftmax, s.p, bX.p, int64(c.T), c.E))
	} else {
		cuMust(t, testCUDA.ActivationForward(d, Sigmoid, sg.p, bX.p, 0, int64(n)))
		cuMust(t, testCUDA.RowForward(d, RowNormalize, s.p, sg.p, int64(c.T), c.E))
	}
	chainOut, ds, chainDX := cuAlloc(t, size), cuAlloc(t, size*int64(n)), cuAlloc(t, size*int64(n))
	cuMust(t, testCUDA.BalanceLossForward(d, chainOut.p, bIDs.p, s.p, work.p, c.T, c.K, c.E, c.B, scale))
	cuMust(t, testCUDA.BalanceLossBackward(d, ds.p, bIDs.p, work.p, 0, c.T, c.K, c.E, c.B, scale, dyv))
	if score == RouterSoftmax {
		cuMust(t, testCUDA.RowBackward(d, RowSoftmax, chainDX.p, bX.p, s.p, ds.p, int64(c.T), c.E))
	} else {
		dsg := cuAlloc(t, size*int64(n))
		cuMust(t, testCUDA.RowBackward(d, RowNormalize, dsg.p, sg.p, s.p, ds.p, int64(c.T), c.E))
		cuMust(t, testCUDA.ActivationBackward(d, Sigmoid, 0, chainDX.p, bX.p, 0, sg.p, dsg.p, int64(n)))
	}
	loBits(t, score.String()+" loss against the device chain", gotL, cuDownload[F](t, chainOut, 1))
	loBits(t, score.String()+" dlogits against the device chain", gotG, cuDownload[F](t, chainDX, n))

	// The CPU: the exponentials differ by an ulp or so, and the CPU sums the rows in float64;
	// the gradient's differences (v − Σ v·s) cancel, so it is compared in the max norm.
	rel, norm := 1e-5, 1e-4
	if d == F64 {
		rel, norm = 1e-13, 1e-12
	}
	loClose(t, score.String()+" loss against the CPU", gotL, []F{want}, rel)
	loNear(t, score.String()+" dlogits against the CPU", gotG, wantG, norm)

	// The output gradient from the device: the same bits.
	dy := cuUpload(t, []F{F(dyv)})
	cuMust(t, testCUDA.RouterBalanceLossBackward(d, dx.p, bIDs.p, bX.p, work.p, dy.p, c.T, c.K, c.E, c.B, scale, math.NaN(), score))
	loBits(t, score.String()+" dlogits (device dy)", cuDownload[F](t, dx, n), gotG)
	cuMust(t, testCUDA.Status())
}

func TestCUDARouterBalanceLoss(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	// loCases, and the largest E the device takes (32 KiB of shared memory in float64).
	for _, c := range append(loCases[:len(loCases):len(loCases)], loCase{"E max", 130, 2, MaxRouterBalanceExperts, 2}) {
		t.Run(c.name, func(t *testing.T) {
			ids := loIDs(rng, c.T, c.K, c.E)
			x := loRand(rng, c.T*c.E, 4)
			for _, score := range []RouterScore{RouterSoftmax, RouterSigmoid} {
				loRouterBalance(t, c, ids, loF32(x), float64(float32(0.75)), score)
				loRouterBalance(t, c, ids, x, 0.75, score)
			}
		})
	}
	var p cu.DevicePtr = 0
	for _, err := range []error{
		testCUDA.RouterBalanceLossForward(F32, p, p, p, p, 4, 1, 2, 1, 1, 0),
		testCUDA.RouterBalanceLossForward(F32, p, p, p, p, 4, 1, MaxRouterBalanceExperts+1, 1, 1, RouterSoftmax),
		testCUDA.RouterBalanceLossBackward(BF16, p, p, p, p, p, 4, 1, 2, 1, 1, 1, RouterSigmoid),
	} {
		if err == nil {
			t.Errorf("bad arguments gave no error")
		}
	}
}

// loNear fails unless max|got − want| <= tol·max|want| (an all-zero want needs an all-zero got).
func loNear[F float32 | float64](t *testing.T, what string, got, want []F, tol float64) {
	t.Helper()
	var big float64
	for i := range want {
		big = max(big, math.Abs(float64(want[i])))
	}
	for i := range want {
		if d := math.Abs(float64(got[i]) - float64(want[i])); !(d <= tol*big) {
			t.Fatalf("%s[%d] = %v, want %v (difference %g > %g·max|want| = %g)", what, i, got[i], want[i], d, tol, tol*big)
		}
	}
}

// TestCUDARouterBalanceLossBadIDs: ids outside [-1, E) set StatusBadID and count as -1, as in
// BalanceLoss.
func TestCUDARouterBalanceLossBadIDs(t *testing.T) {
	const T, K, E, B = 6, 2, 4, 2
	ids := []int32{0, 1, 7, 2, 3, -1, -5, 0, 1, 2, 3, 0}
	clean := []int32{0, 1, -1, 2, 3, -1, -1, 0, 1, 2, 3, 0}
	x := loRand(rand.New(rand.NewPCG(5, 6)), T*E, 3)
	for _, score := range []RouterScore{RouterSoftmax, RouterSigmoid} {
		want, err := RouterBalanceLossForward(clean, x, T, K, E, B, 0.5, score)
		cuMust(t, err)
		out := cuAlloc(t, 8)
		cuMust(t, testCUDA.RouterBalanceLossForward(F64, out.p, cuUpload(t, ids).p, cuUpload(t, x).p, cuAlloc(t, BalanceLossWorkBytes(T, E, B)).p, T, K, E, B, 0.5, score))
		if err := testCUDA.Status(); !statusHas(err, StatusBadID) {
			t.Fatalf("%v: Status() = %v, want StatusBadID", score, err)
		}
		loClose(t, score.String()+" loss", cuDownload[float64](t, out, 1), []float64{want}, 1e-13)
	}
}
