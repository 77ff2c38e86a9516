//go:build gomoecuda

package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"gorgonia.org/cu"

	. "github.com/gomoe/gomoe/kernels"
)

// The fused router on the GPU against the chain of single GPU kernels it replaces (bit for
// bit) and against its CPU twin (ids equal, values within float tolerance).

// routerCase is one router configuration of the GPU tests.
type routerCase struct {
	T, E, K int
	r       Router
	bias    bool
}

func routerCases() []routerCase {
	sm, sg := RouterSoftmax, RouterSigmoid
	return []routerCase{
		{300, 128, 8, Router{Score: sm, Groups: 1, Kept: 1, Scale: 1}, false},          // Qwen3
		{200, 64, 6, Router{Score: sm, Pre: true, Groups: 1, Kept: 1, Scale: 1}, true}, // pre-softmax
		{100, 8, 2, Router{Score: sm, Groups: 1, Kept: 1, Scale: 2.5}, true},           // Mixtral, scaled
		{150, 256, 8, Router{Score: sg, Groups: 8, Kept: 4, Scale: 2.5}, true},         // DeepSeek-V3
		{33, 160, 6, Router{Score: sg, Groups: 8, Kept: 3, Scale: 1}, false},
		{40, 6, 1, Router{Score: sg, Groups: 1, Kept: 1, Scale: 1}, true},                 // K = 1: no normalisation
		{20, 40, 40, Router{Score: sm, Groups: 1, Kept: 1, Scale: 1}, false},              // K > 32
		{25, 600, 40, Router{Score: sm, Pre: true, Groups: 6, Kept: 2, Scale: 0.5}, true}, // E > 256
		{30, 1024, 3, Router{Score: sg, Groups: 64, Kept: 1, Scale: 1}, true},             // 64 groups
	}
}

// routerChainGPU runs the chain of single kernels on the device: ids (given, or TopK's when
// given.p is 0), probs and dlogits.
func routerChainGPU(t *testing.T, d DType, c routerCase, x, bias, dp, given cuDevBuf, size int64) (ids, probs, dx cuDevBuf) {
	T, E, K, r := int64(c.T), c.E, c.K, c.r
	n, tk := T*int64(E), T*int64(K)
	k := testCUDA
	sel := x
	var s cuDevBuf
	switch {
	case r.Score == RouterSoftmax && r.Pre:
		s = cuAlloc(t, n*size)
		cuMust(t, k.RowForward(d, RowSoftmax, s.p, x.p, T, E))
		sel = s
	case r.Score == RouterSigmoid:
		s = cuAlloc(t, n*size)
		cuMust(t, k.ActivationForward(d, Sigmoid, s.p, x.p, 0, n))
		sel = s
	}
	ids = given
	if given.p == 0 {
		ids = cuAlloc(t, 4*tk)
		cuMust(t, k.TopK(d, ids.p, sel.p, bias.p, T, E, K, r.Groups, r.Kept))
	}
	c0, p0 := cuAlloc(t, tk*size), cuAlloc(t, tk*size)
	cuMust(t, k.GatherTopK(d, c0.p, sel.p, ids.p, T, E, K))
	norm := r.Score == RouterSoftmax && !r.Pre || r.Score == RouterSigmoid && K > 1
	switch {
	case r.Score == RouterSoftmax && !r.Pre:
		cuMust(t, k.RowForward(d, RowSoftmax, p0.p, c0.p, T, K))
	case r.Score == RouterSigmoid && K > 1:
		cuMust(t, k.RowForward(d, RowNormalize, p0.p, c0.p, T, K))
	default:
		p0 = c0
	}
	sc := r.Scale
	if d == F32 {
		sc = float64(float32(sc)) // the engine's MulScalar takes the scalar in the data's type
	}
	probs = p0
	g := dp
	if r.Scale != 1 {
		probs = cuAlloc(t, tk*size)
		cuMust(t, k.Binary(d, OpMul, probs.p, p0.p, 0, sc, tk))
		g = cuAlloc(t, tk*size)
		cuMust(t, k.Binary(d, OpMul, g.p, dp.p, 0, sc, tk))
	}
	dc := g
	if norm {
		dc = cuAlloc(t, tk*size)
		kind := RowSoftmax
		if r.Score == RouterSigmoid {
			kind = RowNormalize
		}
		cuMust(t, k.RowBackward(d, kind, dc.p, c0.p, p0.p, g.p, T, K))
	}
	ds := cuAlloc(t, n*size)
	cuMust(t, k.GatherTopKBackward(d, ds.p, dc.p, ids.p, T, E, K))
	switch {
	case r.Score == RouterSoftmax && !r.Pre:
		dx = ds
	case r.Score == RouterSoftmax:
		dx = cuAlloc(t, n*size)
		cuMust(t, k.RowBackward(d, RowSoftmax, dx.p, 0, s.p, ds.p, T, E))
	default:
		dx = cuAlloc(t, n*size)
		cuMust(t, k.ActivationBackward(d, Sigmoid, 0, dx.p, x.p, 0, s.p, ds.p, n))
	}
	return ids, probs, dx
}

// TestCUDARouterEqualsChain: the fused kernels give the single kernels' ids and bits, and the
// CPU twin's ids and values within float tolerance, for every score function, groups, bias,
// scale, K = 1, K > 32 and each slots-per-lane variant, in float32 and float64.
func TestCUDARouterEqualsChain(t *testing.T) {
	for i, c := range routerCases() {
		t.Run(fmt.Sprintf("%d_%v_E%d_K%d", i, c.r.Score, c.E, c.K), func(t *testing.T) {
			routerCheckGPU[float32](t, F32, c, 1e-5)
			routerCheckGPU[float64](t, F64, c, 1e-12)
		})
	}
	cuMust(t, testCUDA.Status())
}

func routerCheckGPU[F float32 | float64](t *testing.T, d DType, c routerCase, tol float64) {
	rng := rand.New(rand.NewPCG(uint64(c.E), uint64(c.K)))
	T, E, K := c.T, c.E, c.K
	size := int64(d.Size())
	x := make([]F, T*E)
	for i := range x {
		x[i] = F(rng.NormFloat64() * 2)
	}
	var bias []F
	if c.bias {
		bias = make([]F, E)
		for i := range bias {
			bias[i] = F(rng.NormFloat64() * 0.05)
		}
	}
	dp := make([]F, T*K)
	for i := range dp {
		dp[i] = F(rng.NormFloat64())
	}
	bx, bdp := cuUpload(t, x), cuUpload(t, dp)
	var bb cuDevBuf
	if c.bias {
		bb = cuUpload(t, bias)
	}
	wantIDs, wantP, wantDX := routerChainGPU(t, d, c, bx, bb, bdp, cuDevBuf{}, size)
	tk, n := int64(T*K), int64(T*E)
	ids, p, dx := cuAlloc(t, 4*tk), cuAlloc(t, tk*size), cuAlloc(t, n*size)
	k := testCUDA
	cuMust(t, k.RouterTopK(d, ids.p, bx.p, bb.p, int64(T), E, K, c.r))
	cuMust(t, k.RouterProbs(d, p.p, bx.p, ids.p, int64(T), E, K, c.r))
	cuMust(t, k.RouterProbsBackward(d, dx.p, bx.p, ids.p, bdp.p, int64(T), E, K, c.r))
	gotIDs := cuDownload[int32](t, ids, T*K)
	if w := cuDownload[int32](t, wantIDs, T*K); !slices.Equal(gotIDs, w) {
		t.Fatalf("%v: fused ids differ from the chain's", d)
	}
	gotP, gotDX := cuDownload[F](t, p, T*K), cuDownload[F](t, dx, T*E)
	cuSameBits(t, fmt.Sprintf("%v probs", d), gotP, cuDownload[F](t, wantP, T*K))
	cuSameBits(t, fmt.Sprintf("%v dlogits", d), gotDX, cuDownload[F](t, wantDX, T*E))

	// Given ids with repeats (not from RouterTopK): a repeated expert's gradients add in k
	// order, as GatherTopK's backward adds them.
	rep := make([]int32, T*K)
	for i := range rep {
		rep[i] = int32(rng.IntN(min(E, 3)))
	}
	brep := cuUpload(t, rep)
	_, repP, repDX := routerChainGPU(t, d, c, bx, bb, bdp, brep, size)
	cuMust(t, k.RouterProbs(d, p.p, bx.p, brep.p, int64(T), E, K, c.r))
	cuMust(t, k.RouterProbsBackward(d, dx.p, bx.p, brep.p, bdp.p, int64(T), E, K, c.r))
	cuSameBits(t, fmt.Sprintf("%v probs of repeated ids", d), cuDownload[F](t, p, T*K), cuDownload[F](t, repP, T*K))
	cuSameBits(t, fmt.Sprintf("%v dlogits of repeated ids", d), cuDownload[F](t, dx, T*E), cuDownload[F](t, repDX, T*E))

	// The CPU twin: ids equal (random data: no near ties), values within tol.
	cids, cp, cdx := make([]int32, T*K), make([]F, T*K), make([]F, T*E)
	cuMust(t, RouterTopK(cids, x, bias, E, K, c.r))
	if !slices.Equal(cids, gotIDs) {
		t.Fatalf("%v: device ids differ from the CPU's", d)
	}
	cuMust(t, RouterProbs(cp, x, cids, E, K, c.r))
	cuMust(t, RouterProbsBackward(cdx, x, cids, dp, E, K, c.r))
	routerNear(t, fmt.Sprintf("%v probs", d), gotP, cp, tol)
	routerNear(t, fmt.Sprintf("%v dlogits", d), gotDX, cdx, tol)
}

func routerNear[F float32 | float64](t *testing.T, what string, got, want []F, tol float64) {
	t.Helper()
	for i := range want {
		g, w := float64(got[i]), float64(want[i])
		if !(math.Abs(g-w) <= tol*(1+math.Abs(w))) { // a NaN fails too
			t.Fatalf("%s[%d] = %v, CPU %v", what, i, g, w)
		}
	}
}

// TestCUDARouterStatus: a NaN logit and an id out of range set their status bits; bad
// configurations are errors before any launch.
func TestCUDARouterStatus(t *testing.T) {
	k := testCUDA
	r := Router{Score: RouterSoftmax, Groups: 1, Kept: 1, Scale: 1}
	x := cuUpload(t, []float32{1, float32(math.NaN()), 0, 2})
	ids := cuAlloc(t, 8)
	cuMust(t, k.RouterTopK(F32, ids.p, x.p, 0, 1, 4, 2, r))
	if err := k.Status(); err == nil || !statusHas(err, StatusNaNScore) {
		t.Errorf("NaN logit: status %v, want StatusNaNScore", err)
	}
	for _, id := range []int32{7, -2} {
		bad := cuUpload(t, []int32{0, id})
		p := cuAlloc(t, 8)
		cuMust(t, k.RouterProbs(F32, p.p, x.p, bad.p, 1, 4, 2, r))
		if err := k.Status(); err == nil || !statusHas(err, StatusBadID) {
			t.Errorf("RouterProbs, id %d of 4 experts: status %v, want StatusBadID", id, err)
		}
		dx := cuAlloc(t, 16)
		cuMust(t, k.RouterProbsBackward(F32, dx.p, x.p, bad.p, p.p, 1, 4, 2, r))
		if err := k.Status(); err == nil || !statusHas(err, StatusBadID) {
			t.Errorf("RouterProbsBackward, id %d of 4 experts: status %v, want StatusBadID", id, err)
		}
	}
	for _, c := range []struct {
		d    DType
		E, K int
		r    Router
	}{
		{F32, 4, 5, r},
		{BF16, 4, 2, r},
		{F32, 2048, 2, r},
		{F32, 4, 2, Router{Score: 9, Groups: 1, Kept: 1, Scale: 1}},
		{F32, 4, 2, Router{Score: RouterSoftmax, Groups: 3, Kept: 1, Scale: 1}},
		{F32, 4, 2, Router{Score: RouterSoftmax, Groups: 1, Kept: 1, Scale: math.Inf(1)}},
		{F32, 4, 2, Router{Score: RouterSoftmax, Groups: 1, Kept: 1, Scale: 1e39}}, // beyond float32
	} {
		if err := k.RouterTopK(c.d, ids.p, x.p, cu.DevicePtr(0), 1, c.E, c.K, c.r); err == nil {
			t.Errorf("%v E=%d K=%d %v: no error", c.d, c.E, c.K, c.r)
		}
	}
}

// TestCUDARouterSigmoidTinyScores: a sigmoid router whose chosen scores sum below 2⁻⁶⁴ takes the
// softmax of its chosen logits on the device as on the CPU (TestRouterSigmoidTinyScores), in
// the fused router and the router's balancing loss: logits x, x−0.5, x−1, x−2 with x from 5
// down to −10⁴, K = 2, against the CPU kernels, no NaN anywhere. The chain of single kernels
// gave NaN from x ≈ −105 (float32).
func TestCUDARouterSigmoidTinyScores(t *testing.T) {
	xs := []float64{5, -10, -30, -43, -45, -60, -87, -90, -100, -103, -105, -200, -700, -745, -800, -1e4}
	routerTinyGPU[float32](t, F32, xs, 1e-5)
	routerTinyGPU[float64](t, F64, xs, 1e-13)
	cuMust(t, testCUDA.Status())
}

func routerTinyGPU[F float32 | float64](t *testing.T, d DType, xs []float64, tol float64) {
	r, E, K, x, dp := TinySigmoidRouter[F](xs)
	T := len(xs)
	ids, p, dx := make([]int32, T*K), make([]F, T*K), make([]F, T*E)
	cuMust(t, RouterTopK(ids, x, nil, E, K, r))
	cuMust(t, RouterProbs(p, x, ids, E, K, r))
	cuMust(t, RouterProbsBackward(dx, x, ids, dp, E, K, r))
	size := int64(d.Size())
	bx, bids, bdp := cuUpload(t, x), cuUpload(t, ids), cuUpload(t, dp)
	gp, gdx := cuAlloc(t, int64(T*K)*size), cuAlloc(t, int64(T*E)*size)
	cuMust(t, testCUDA.RouterProbs(d, gp.p, bx.p, bids.p, int64(T), E, K, r))
	cuMust(t, testCUDA.RouterProbsBackward(d, gdx.p, bx.p, bids.p, bdp.p, int64(T), E, K, r))
	routerNear(t, fmt.Sprintf("%v probs", d), cuDownload[F](t, gp, T*K), p, tol)
	routerNear(t, fmt.Sprintf("%v dlogits", d), cuDownload[F](t, gdx, T*E), dx, tol)

	const scale, dy = 0.37, 1.3
	want, err := RouterBalanceLossForward(ids, x, T, K, E, 1, scale, RouterSigmoid)
	cuMust(t, err)
	wantG := make([]F, T*E)
	cuMust(t, RouterBalanceLossBackward(wantG, ids, x, T, K, E, 1, scale, dy, RouterSigmoid))
	work := cuAlloc(t, BalanceLossWorkBytes(T, E, 1))
	out, gdl := cuAlloc(t, size), cuAlloc(t, int64(T*E)*size)
	cuMust(t, testCUDA.RouterBalanceLossForward(d, out.p, bids.p, bx.p, work.p, T, K, E, 1, scale, RouterSigmoid))
	cuMust(t, testCUDA.RouterBalanceLossBackward(d, gdl.p, bids.p, bx.p, work.p, 0, T, K, E, 1, scale, dy, RouterSigmoid))
	routerNear(t, fmt.Sprintf("%v balance loss", d), cuDownload[F](t, out, 1), []F{want}, tol)
	routerNear(t, fmt.Sprintf("%v balance dlogits", d), cuDownload[F](t, gdl, T*E), wantG, tol)
}
