//go:build gomoecuda

package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"gorgonia.org/cu"

	. "github.com/gomoe/gomoe/kernels"

	"github.com/gomoe/gomoe/bfloat16"
)

// The permute, unpermute and permuted-probs kernels on the GPU against the CPU kernels, as one
// routing pipeline (permute_cuda.go, unpermute_cuda.go, permute_probs_cuda.go), like
// permute_test.go on the CPU.

// TestCUDAData runs every data kernel of one geometry, dtype and H against the CPU.
func TestCUDAData(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, c := range gpuCases() {
		for _, d := range []DType{F32, F64, BF16} {
			for _, H := range c.H {
				t.Run(fmt.Sprintf("%s/%v/H%d", c.name, d, H), func(t *testing.T) {
					cuTestData(t, rng, c, d, H)
				})
			}
		}
	}
}

func cuTestData(t *testing.T, rng *rand.Rand, c gpuCase, d DType, H int) {
	g := c.g
	R := g.Rows()
	ids := c.ids(rng, g)
	probsF := cuTiedProbs(rng, len(ids))
	probs := cuProbsFor(d, probsF)
	pt := F32
	if d == F64 {
		pt = F64
	}
	planCPU := cuCpuPlan(t, g, ids, probs)
	p, _ := g.View(planCPU)
	plan := cuGpuPlan(t, g, cuUpload(t, ids), cuUploadAny(t, probs), pt)
	dProbs := cuUploadAny(t, probs)

	x := cuElems(d, cuRandData(rng, g.T*H))
	dX := cuUploadAny(t, x)
	xw := cuWiden(x)

	// permute forward
	xpG := cuAlloc(t, int64(R*H*d.Size()))
	if err := testCUDA.PermuteForward(d, g, H, xpG.p, dX.p, plan.p); err != nil {
		t.Fatal(err)
	}
	cuSameBits(t, "permute forward", cuDownloadAs(t, d, xpG, R*H), cuNarrow(d, cpuPermuteForward(t, p, xw, H)))

	// permute backward (dxp's pad rows hold junk that cuMust be ignored)
	dxp := cuElems(d, cuRandData(rng, R*H))
	dxG := cuAlloc(t, int64(g.T*H*d.Size()))
	if err := testCUDA.PermuteBackward(d, g, H, dxG.p, cuUploadAny(t, dxp).p, plan.p); err != nil {
		t.Fatal(err)
	}
	cuSameBits(t, "permute backward", cuDownloadAs(t, d, dxG, g.T*H), cuNarrow(d, cpuPermuteBackward(t, p, cuWiden(dxp), H)))

	// permuted probs forward and backward
	ppG := cuAlloc(t, int64(R*pt.Size()))
	if err := testCUDA.PermuteProbsForward(d, g, ppG.p, dProbs.p, plan.p); err != nil {
		t.Fatal(err)
	}
	dpp := cuProbsFor(d, cuRandData(rng, R))
	dprG := cuAlloc(t, int64(g.T*g.K*pt.Size()))
	if err := testCUDA.PermuteProbsBackward(d, g, dprG.p, cuUploadAny(t, dpp).p, plan.p); err != nil {
		t.Fatal(err)
	}
	switch pv := probs.(type) {
	case []float32:
		wantPP := make([]float32, R)
		_ = PermuteProbsForward(wantPP, pv, p)
		cuSameBits(t, "permute probs forward", cuDownload[float32](t, ppG, R), wantPP)
		wantDP := make([]float32, g.T*g.K)
		_ = PermuteProbsBackward(wantDP, dpp.([]float32), p)
		cuSameBits(t, "permute probs backward", cuDownload[float32](t, dprG, g.T*g.K), wantDP)
	case []float64:
		wantPP := make([]float64, R)
		_ = PermuteProbsForward(wantPP, pv, p)
		cuSameBits(t, "permute probs forward", cuDownload[float64](t, ppG, R), wantPP)
		wantDP := make([]float64, g.T*g.K)
		_ = PermuteProbsBackward(wantDP, dpp.([]float64), p)
		cuSameBits(t, "permute probs backward", cuDownload[float64](t, dprG, g.T*g.K), wantDP)
	}

	// unpermute forward, weighted and unweighted
	yp := cuElems(d, cuRandData(rng, R*H))
	dYp := cuUploadAny(t, yp)
	for _, weighted := range []bool{true, false} {
		yG := cuAlloc(t, int64(g.T*H*d.Size()))
		var pp cu.DevicePtr
		var pr any
		if weighted {
			pp, pr = dProbs.p, probs
		}
		if err := testCUDA.UnpermuteForward(d, g, H, yG.p, dYp.p, pp, plan.p); err != nil {
			t.Fatal(err)
		}
		cuSameBits(t, fmt.Sprintf("unpermute forward (weighted %v)", weighted), cuDownloadAs(t, d, yG, g.T*H),
			cuNarrow(d, cpuUnpermuteForward(t, p, cuWiden(yp), pr, H)))
	}

	// unpermute backward: rows bitwise, dprobs within the float64-sum tolerance (bitwise for
	// bfloat16, whose CPU twin sums in the GPU's order)
	dy := cuElems(d, cuRandData(rng, g.T*H))
	dDy := cuUploadAny(t, dy)
	for _, weighted := range []bool{true, false} {
		for _, want := range [][2]bool{{true, true}, {true, false}, {false, true}} {
			var dypG, dpG cuDevBuf
			if want[0] {
				dypG = cuAlloc(t, int64(R*H*d.Size()))
			}
			if want[1] {
				dpG = cuAlloc(t, int64(g.T*g.K*pt.Size()))
			}
			var pp cu.DevicePtr
			var pr any
			if weighted {
				pp, pr = dProbs.p, probs
			}
			if err := testCUDA.UnpermuteBackward(d, g, H, dypG.p, dpG.p, dDy.p, dYp.p, pp, plan.p); err != nil {
				t.Fatal(err)
			}
			wantRows, wantDP := cpuUnpermuteBackward(t, d, p, cuWiden(dy), cuWiden(yp), pr, H)
			what := fmt.Sprintf("unpermute backward (weighted %v, rows %v, probs %v)", weighted, want[0], want[1])
			if want[0] {
				cuSameBits(t, what+" rows", cuDownloadAs(t, d, dypG, R*H), cuNarrow(d, wantRows))
			}
			if want[1] && d == BF16 {
				cuSameBits(t, what+" dprobs", cuDownload[float32](t, dpG, g.T*g.K), wantDP.([]float32))
			} else if want[1] {
				var got []float64
				if pt == F64 {
					got = cuDownload[float64](t, dpG, g.T*g.K)
				} else {
					for _, v := range cuDownload[float32](t, dpG, g.T*g.K) {
						got = append(got, float64(v))
					}
				}
				cuCheckDProbs(t, what, p, got, wantDP, cuWiden(dy), cuWiden(yp), pt, H)
			}
		}
	}
	if err := testCUDA.Status(); err != nil {
		t.Fatal(err)
	}
}

func cuRandData(rng *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.NormFloat64()
	}
	return v
}

// cuElems converts float64 test data into the element type of d (bfloat16 as its cuBits).
func cuElems(d DType, v []float64) any {
	switch d {
	case F32:
		o := make([]float32, len(v))
		for i, x := range v {
			o[i] = float32(x)
		}
		return o
	case F64:
		return append([]float64(nil), v...)
	}
	o := make([]bfloat16.BFloat16, len(v))
	for i, x := range v {
		o[i] = bfloat16.FromFloat32(float32(x))
	}
	return o
}

// cuCheckDProbs allows the difference between summing the same float64 products in the CPU's
// fixed order (dot64) and in the GPU's tree: |Δ| <= 2·H·2^-53·Σ_h |a_h·b_h| before the final rounding, plus one
// unit in the last place of the probs type after it.
func cuCheckDProbs(t *testing.T, what string, p Plan, got []float64, want any, dy, yp any, pt DType, H int) {
	t.Helper()
	wv := cuToF64(want)
	dyv, ypv := cuToF64(dy), cuToF64(yp)
	exact := 0
	for i := range wv {
		r := p.RowOf[i]
		if r < 0 {
			if got[i] != 0 {
				t.Fatalf("%s: dprobs of dropped slot %d = %g, want 0", what, i, got[i])
			}
			exact++
			continue
		}
		tok := i / p.K
		var mag float64
		for h := 0; h < H; h++ {
			mag += math.Abs(ypv[int(r)*H+h] * dyv[tok*H+h])
		}
		tol := 2 * float64(H) * 0x1p-53 * mag
		if pt == F32 {
			tol += math.Abs(float64(math.Nextafter32(float32(wv[i]), float32(math.Inf(1)))) - wv[i])
		}
		diff := math.Abs(got[i] - wv[i])
		if diff > tol {
			t.Fatalf("%s: dprobs[%d] = %.17g, CPU %.17g: |diff| %.3g > tolerance %.3g", what, i, got[i], wv[i], diff, tol)
		}
		if diff == 0 {
			exact++
		}
	}
	if testing.Verbose() && exact < len(wv) {
		t.Logf("%s: %d of %d dprobs bitwise equal to the CPU", what, exact, len(wv))
	}
}

func cuToF64(v any) []float64 {
	switch x := v.(type) {
	case []float32:
		o := make([]float64, len(x))
		for i, f := range x {
			o[i] = float64(f)
		}
		return o
	case []float64:
		return x
	}
	panic(fmt.Sprintf("cuToF64 %T", v))
}

func cpuPermuteForward(t *testing.T, p Plan, x any, H int) any {
	switch v := x.(type) {
	case []float32:
		o := make([]float32, p.Rows()*H)
		cuMust(t, PermuteForward(o, v, p, H))
		return o
	case []float64:
		o := make([]float64, p.Rows()*H)
		cuMust(t, PermuteForward(o, v, p, H))
		return o
	}
	panic("type")
}

func cpuPermuteBackward(t *testing.T, p Plan, dxp any, H int) any {
	switch v := dxp.(type) {
	case []float32:
		o := make([]float32, p.T*H)
		cuMust(t, PermuteBackward(o, v, p, H))
		return o
	case []float64:
		o := make([]float64, p.T*H)
		cuMust(t, PermuteBackward(o, v, p, H))
		return o
	}
	panic("type")
}

func cpuUnpermuteForward(t *testing.T, p Plan, yp, probs any, H int) any {
	switch v := yp.(type) {
	case []float32:
		o := make([]float32, p.T*H)
		pr, _ := probs.([]float32)
		cuMust(t, UnpermuteForward(o, v, pr, p, H))
		return o
	case []float64:
		o := make([]float64, p.T*H)
		pr, _ := probs.([]float64)
		cuMust(t, UnpermuteForward(o, v, pr, p, H))
		return o
	}
	panic("type")
}

// cpuUnpermuteBackward runs the CPU twin of d's unpermute backward on widened data.
func cpuUnpermuteBackward(t *testing.T, d DType, p Plan, dy, yp, probs any, H int) (rows, dprobs any) {
	switch v := dy.(type) {
	case []float32:
		r := make([]float32, p.Rows()*H)
		dp := make([]float32, p.T*p.K)
		pr, _ := probs.([]float32)
		if d == BF16 {
			cuMust(t, UnpermuteBackwardBF16(r, dp, v, yp.([]float32), pr, p, H))
		} else {
			cuMust(t, UnpermuteBackward(r, dp, v, yp.([]float32), pr, p, H))
		}
		return r, dp
	case []float64:
		r := make([]float64, p.Rows()*H)
		dp := make([]float64, p.T*p.K)
		pr, _ := probs.([]float64)
		cuMust(t, UnpermuteBackward(r, dp, v, yp.([]float64), pr, p, H))
		return r, dp
	}
	panic("type")
}

// TestCUDADeterministic runs the plan and every data kernel twice on a larger problem and
// wants the same cuBits.
func TestCUDADeterministic(t *testing.T) {
	g := Geometry{T: 2048, K: 4, E: 64, A: 8}
	H := 256
	rng := rand.New(rand.NewPCG(3, 4))
	ids := cuBalancedIDs(0.01)(rng, g)
	dIDs := cuUpload(t, ids)
	probs := cuUpload(t, cuProbsFor(F32, cuTiedProbs(rng, len(ids))).([]float32))
	x := cuUpload(t, cuElems(F32, cuRandData(rng, g.T*H)).([]float32))
	dy := cuUpload(t, cuElems(F32, cuRandData(rng, g.T*H)).([]float32))
	run := func() [][]uint64 {
		plan := cuGpuPlan(t, g, dIDs, cuDevBuf{}, F32)
		xp := cuAlloc(t, int64(g.Rows()*H*4))
		y := cuAlloc(t, int64(g.T*H*4))
		dyp := cuAlloc(t, int64(g.Rows()*H*4))
		dp := cuAlloc(t, int64(g.T*g.K*4))
		dx := cuAlloc(t, int64(g.T*H*4))
		cuMust(t, testCUDA.PermuteForward(F32, g, H, xp.p, x.p, plan.p))
		cuMust(t, testCUDA.UnpermuteForward(F32, g, H, y.p, xp.p, probs.p, plan.p))
		cuMust(t, testCUDA.UnpermuteBackward(F32, g, H, dyp.p, dp.p, dy.p, xp.p, probs.p, plan.p))
		cuMust(t, testCUDA.PermuteBackward(F32, g, H, dx.p, dyp.p, plan.p))
		var out [][]uint64
		for _, b := range []struct {
			b cuDevBuf
			n int
		}{{plan, g.PlanLen()}, {y, g.T * H}, {dp, g.T * g.K}, {dx, g.T * H}} {
			v := cuDownload[uint32](t, b.b, b.n)
			o := make([]uint64, len(v))
			for i := range v {
				o[i] = uint64(v[i])
			}
			out = append(out, o)
		}
		return out
	}
	a, b := run(), run()
	for i := range a {
		for j := range a[i] {
			if a[i][j] != b[i][j] {
				t.Fatalf("output %d element %d differs between runs", i, j)
			}
		}
	}
}

func TestCUDAErrors(t *testing.T) {
	g := Geometry{T: 4, K: 2, E: 4, A: 1}
	if err := testCUDA.PermuteForward(F32, g, 0, 1, 1, 1); err == nil {
		t.Error("H=0: no error")
	}
	if err := testCUDA.PermuteForward(DType(9), g, 4, 1, 1, 1); err == nil {
		t.Error("unknown dtype: no error")
	}
	bad := Geometry{T: 4, K: 5, E: 4, A: 1}
	if err := testCUDA.BuildPlan(bad, 1, 1, 0, F32, 1); err == nil {
		t.Error("K > E: no error")
	}
	big := Geometry{T: 4, K: 2, E: MaxDeviceExperts + 1, A: 1}
	if err := testCUDA.BuildPlan(big, 1, 1, 0, F32, 1); err == nil {
		t.Error("E beyond the device limit: no error")
	}
	byProb := Geometry{T: 4, K: 2, E: 4, A: 1, Mode: Capacity, C: 2, Drop: DropByProb}
	if err := testCUDA.BuildPlan(byProb, 1, 1, 0, F32, 1); err == nil {
		t.Error("drop by prob without probs: no error")
	}
	if err := testCUDA.UnpermuteBackward(F32, g, 4, 0, 1, 1, 0, 0, 1); err == nil {
		t.Error("dprobs without yp: no error")
	}
}

// cuGuarded allocates n bytes of device memory between two guards of 4 KiB, all filled with
// 0xA5 (cuAlloc), and returns the inner buffer and a check that the guards are untouched.
func cuGuarded(t *testing.T, n int64) (cuDevBuf, func(what string)) {
	t.Helper()
	const guard = 4096
	all := cuAlloc(t, n+2*guard)
	return cuDevBuf{all.p + guard, n}, func(what string) {
		t.Helper()
		b := cuDownload[byte](t, all, int(all.n))
		for i, v := range b {
			if (i < guard || int64(i) >= guard+n) && v != 0xA5 {
				t.Fatalf("%s: wrote outside its buffer, at byte %d from its start", what, int64(i)-guard)
			}
		}
	}
}

// TestCUDADataHandMadePlan runs every permute and combine kernel on a plan filled by hand
// with row ids past R (just past, and 2^30), below -1, and token ids past T and below -1: each
// kernel must take such a slot as dropped and such a row as padding (planRow, planToken in
// gomoe.cuh), write nothing outside its output (guard bytes around each), fault nowhere, and
// flag StatusBadRows (each launch checked alone). Expected values come from a plain loop over
// the plan with the bad ids set to -1; rows whose token is valid but that no slot names (the
// hand-made plan disagrees with itself there) are left out: the kernels do not detect that.
// The bfloat16 dprobs kernels run twice: one block per token, and 5 blocks, whose blocks
// load each next token's rows ahead (the bad slots of tokens 5 and 9 come that way).
func TestCUDADataHandMadePlan(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	g := Geometry{T: 64, K: 3, E: 8, A: 1}
	R, T, K := g.Rows(), g.T, g.K
	ids := cuBalancedIDs(0)(rng, g)
	flat := cuCpuPlan(t, g, ids, nil)
	p, _ := g.View(flat)
	// Three slots that name a row in the valid plan, each sent out of range; their rows lose
	// their token (r0, r2: out of range too) or keep it (r1).
	r0, r1, r2 := p.RowOf[0*K+0], p.RowOf[5*K+1], p.RowOf[9*K+2]
	p.RowOf[0*K+0] = int32(R) + 2
	p.RowOf[5*K+1] = 1 << 30
	p.RowOf[9*K+2] = -9
	p.TokenOf[r0] = 1 << 29 // out of range: a pad row
	p.TokenOf[r2] = -3      // out of range: a pad row
	// r1 keeps token 5, though no slot names it: undefined, not checked.
	rowOf := func(i int) int32 {
		if r := p.RowOf[i]; r >= 0 && r < int32(R) {
			return r
		}
		return -1
	}
	tokenOf := func(r int) int32 {
		if tk := p.TokenOf[r]; tk >= 0 && tk < int32(T) {
			return tk
		}
		return -1
	}
	undefined := func(r int) bool { return r == int(r1) }
	plan := cuUpload(t, flat)
	_ = testCUDA.Status() // start from a clear status word

	for _, c := range []struct {
		d      DType
		H      int
		blocks int // SetBF16DotBlocks
	}{{F32, 40, 0}, {F64, 40, 0}, {BF16, 40, -1}, {BF16, 40, 5}, {F32, 7, 0}, {F64, 7, 0}, {BF16, 7, -1}, {BF16, 7, 5}} {
		d, H := c.d, c.H
		t.Run(fmt.Sprintf("%v/H%d/blocks%d", d, H, c.blocks), func(t *testing.T) {
			defer SetBF16DotBlocks(SetBF16DotBlocks(c.blocks))
			// flagged checks that the kernel just run set StatusBadRows (a check clears it).
			flagged := func(what string) {
				t.Helper()
				if err := testCUDA.Status(); !statusHas(err, StatusBadRows) {
					t.Fatalf("%s: Status() = %v, want StatusBadRows", what, err)
				} else if !strings.Contains(err.Error(), "outside its buffers") {
					t.Fatalf("%s: Status() = %q, want the bad rows named", what, err)
				}
			}
			es := d.Size()
			pt := F32
			if d == F64 {
				pt = F64
			}
			x := cuElems(d, cuRandData(rng, T*H))
			xb := cuBits(x)
			probs := cuProbsFor(d, cuRandData(rng, T*K))
			dProbs := cuUploadAny(t, probs)
			pb := cuBits(probs)
			// rows of bits of width H of a []bits vector
			rowBits := func(v []uint64, r int) []uint64 { return v[r*H : (r+1)*H] }
			sameRow := func(what string, got []uint64, r int, want []uint64) {
				t.Helper()
				for h := range want {
					if got[r*H+h] != want[h] {
						t.Fatalf("%s: row %d element %d = %#x, want %#x", what, r, h, got[r*H+h], want[h])
					}
				}
			}
			zero := make([]uint64, H)
			// sumOfKept checks out[t] = Σ over t's kept slots of src[row], in k order (float64:
			// the kernels' exact order), for permute backward and unweighted unpermute forward.
			sumOfKept := func(what string, out, src []float64) {
				t.Helper()
				for tk := 0; tk < T; tk++ {
					for h := 0; h < H; h++ {
						var s float64
						for k := 0; k < K; k++ {
							if r := rowOf(tk*K + k); r >= 0 {
								s += src[int(r)*H+h]
							}
						}
						if out[tk*H+h] != s {
							t.Fatalf("%s[%d,%d] = %g, want %g", what, tk, h, out[tk*H+h], s)
						}
					}
				}
			}

			// permute forward: xp[r] = x[token], pad rows 0
			xp, ok := cuGuarded(t, int64(R*H*es))
			cuMust(t, testCUDA.PermuteForward(d, g, H, xp.p, cuUploadAny(t, x).p, plan.p))
			ok("permute forward")
			flagged("permute forward")
			got := cuBits(cuDownloadAs(t, d, xp, R*H))
			for r := 0; r < R; r++ {
				if undefined(r) {
					continue
				}
				if tk := tokenOf(r); tk < 0 {
					sameRow("permute forward (pad row)", got, r, zero)
				} else {
					sameRow("permute forward", got, r, rowBits(xb, int(tk)))
				}
			}

			// permute backward: dx[t] = Σ over the kept slots (float64 data: exact sums in k order)
			dxpv := cuElems(d, cuRandData(rng, R*H))
			dx, ok := cuGuarded(t, int64(T*H*es))
			cuMust(t, testCUDA.PermuteBackward(d, g, H, dx.p, cuUploadAny(t, dxpv).p, plan.p))
			ok("permute backward")
			flagged("permute backward")
			if d == F64 {
				sumOfKept("permute backward: dx", cuDownload[float64](t, dx, T*H), dxpv.([]float64))
			}

			// permuted probs and their backward: bit copies
			pp, ok := cuGuarded(t, int64(R*pt.Size()))
			cuMust(t, testCUDA.PermuteProbsForward(d, g, pp.p, dProbs.p, plan.p))
			ok("permuted probs forward")
			flagged("permuted probs forward")
			gotPP := cuBits(cuDownloadAs(t, pt, pp, R))
			for r := 0; r < R; r++ {
				want := uint64(0)
				if tk := tokenOf(r); tk >= 0 {
					for k := 0; k < K; k++ {
						if rowOf(int(tk)*K+k) == int32(r) {
							want = pb[int(tk)*K+k]
						}
					}
				}
				if gotPP[r] != want {
					t.Fatalf("permuted probs forward: pp[%d] = %#x, want %#x", r, gotPP[r], want)
				}
			}
			dppv := cuProbsFor(d, cuRandData(rng, R))
			dpb := cuBits(dppv)
			dpr, ok := cuGuarded(t, int64(T*K*pt.Size()))
			cuMust(t, testCUDA.PermuteProbsBackward(d, g, dpr.p, cuUploadAny(t, dppv).p, plan.p))
			ok("permuted probs backward")
			flagged("permuted probs backward")
			gotDP := cuBits(cuDownloadAs(t, pt, dpr, T*K))
			for i := 0; i < T*K; i++ {
				want := uint64(0)
				if r := rowOf(i); r >= 0 {
					want = dpb[r]
				}
				if gotDP[i] != want {
					t.Fatalf("permuted probs backward: dprobs[%d] = %#x, want %#x", i, gotDP[i], want)
				}
			}

			// unpermute forward, unweighted (float64 data: exact sums in k order)
			ypv := cuElems(d, cuRandData(rng, R*H))
			dYp := cuUploadAny(t, ypv)
			y, ok := cuGuarded(t, int64(T*H*es))
			cuMust(t, testCUDA.UnpermuteForward(d, g, H, y.p, dYp.p, dProbs.p, plan.p))
			ok("unpermute forward")
			flagged("unpermute forward")
			cuMust(t, testCUDA.UnpermuteForward(d, g, H, y.p, dYp.p, 0, plan.p))
			ok("unpermute forward, unweighted")
			flagged("unpermute forward, unweighted")
			if d == F64 {
				sumOfKept("unpermute forward: y", cuDownload[float64](t, y, T*H), ypv.([]float64))
			}

			// unpermute backward, unweighted, each kernel (rows only, dprobs only, both):
			// dyp[r] = dy[token], pad rows 0; dprobs 0 for the dropped slots
			dyv := cuElems(d, cuRandData(rng, T*H))
			dyb := cuBits(dyv)
			dDy := cuUploadAny(t, dyv)
			for _, want := range [][2]bool{{true, true}, {true, false}, {false, true}} {
				what := fmt.Sprintf("unpermute backward (rows %v, probs %v)", want[0], want[1])
				var dyp, dp cuDevBuf
				okRows, okProbs := func(string) {}, func(string) {}
				if want[0] {
					dyp, okRows = cuGuarded(t, int64(R*H*es))
				}
				if want[1] {
					dp, okProbs = cuGuarded(t, int64(T*K*pt.Size()))
				}
				cuMust(t, testCUDA.UnpermuteBackward(d, g, H, dyp.p, dp.p, dDy.p, dYp.p, 0, plan.p))
				okRows(what + " rows")
				okProbs(what + " dprobs")
				flagged(what)
				if want[0] {
					got := cuBits(cuDownloadAs(t, d, dyp, R*H))
					for r := 0; r < R; r++ {
						if undefined(r) {
							continue
						}
						if tk := tokenOf(r); tk < 0 {
							sameRow(what+" (pad row)", got, r, zero)
						} else {
							sameRow(what, got, r, rowBits(dyb, int(tk)))
						}
					}
				}
				if want[1] {
					got := cuToF64(cuDownloadAs(t, pt, dp, T*K))
					for i, v := range got {
						if rowOf(i) < 0 && v != 0 {
							t.Fatalf("%s: dprobs of dropped slot %d = %g, want 0", what, i, v)
						}
						if math.IsNaN(v) || math.IsInf(v, 0) {
							t.Fatalf("%s: dprobs[%d] = %g", what, i, v)
						}
					}
				}
			}
			if err := testCUDA.Status(); err != nil {
				t.Fatalf("Status() after the checks = %v, want nil (the word is cleared)", err)
			}
		})
	}
}
