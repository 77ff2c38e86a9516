//go:build gomoecuda

package kernels_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"gorgonia.org/cu"

	"github.com/gomoe/gomoe/internal/reftest"
	. "github.com/gomoe/gomoe/kernels"
)

// cuBLAS tests. References are plain float64 loops (Gemm) or the CPU grouped matmul kernels
// run in float64 on the same (rounded) inputs. Tolerances are relative to the bound
// B = Σ_l |a_il·b_lj| (+ |beta·c_ij|) of each output element, computed by the same reference on
// absolute values:
//
//	float64   |GPU − ref| <= 1e-12·B
//	float32   |GPU − ref| <= 1e-5·B    (float32 accumulation in another order, no TF32)
//	bfloat16  |GPU − ref| <= 8e-3·B    (float32 accumulation, output rounded once to 8 bits:
//	                                    half an ulp is 2^-9 ≈ 2e-3 of |ref| <= B)
//
// Rows that no expert owns and weight gradients of experts with no rows must be exactly 0, and
// memory outside the written matrices must keep its bits.

func blasTol(d DType) float64 {
	switch d {
	case F64:
		return 1e-12
	case F32:
		return 1e-5
	}
	return 8e-3
}

// refGemm is reftest.Gemm.
var refGemm = reftest.Gemm

// blasF64 returns the values of device-typed host data as float64 (bfloat16 widened).
func blasF64(v any) []float64 { return cuToF64(cuWiden(v)) }

func TestCUDAGemm(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	sizes := [][3]int{{1, 3, 5}, {33, 17, 9}, {1, 1, 1}, {7, 1, 12}, {64, 48, 70}, {130, 257, 33}}
	for _, d := range []DType{F32, F64, BF16} {
		for _, sz := range sizes {
			for _, tr := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
				for _, pad := range []int{0, 3} {
					m, n, k := sz[0], sz[1], sz[2]
					name := fmt.Sprintf("%v/%dx%dx%d/ta=%v,tb=%v/pad%d", d, m, n, k, tr[0], tr[1], pad)
					t.Run(name, func(t *testing.T) {
						testGemmOne(t, rng, d, tr[0], tr[1], m, n, k, pad)
					})
				}
			}
		}
	}
}

func testGemmOne(t *testing.T, rng *rand.Rand, d DType, ta, tb bool, m, n, k, pad int) {
	// Stored shapes: A [m,k] or [k,m], B [k,n] or [n,k]; each row padded by pad elements.
	ar, ac := m, k
	if ta {
		ar, ac = k, m
	}
	br, bc := k, n
	if tb {
		br, bc = n, k
	}
	lda, ldb, ldc := ac+pad, bc+pad, n+pad
	a := cuElems(d, cuRandData(rng, ar*lda))
	b := cuElems(d, cuRandData(rng, br*ldb))
	c := cuElems(d, cuRandData(rng, m*ldc))
	for _, beta := range []float64{0, 0.5} {
		alpha := 1.5
		dA, dB, dC := cuUploadAny(t, a), cuUploadAny(t, b), cuUploadAny(t, c)
		if err := testCUDA.Gemm(d, ta, tb, m, n, k, alpha, dA.p, lda, dB.p, ldb, beta, dC.p, ldc); err != nil {
			t.Fatal(err)
		}
		got := blasF64(cuDownloadAs(t, d, dC, m*ldc))
		cin := blasF64(c)
		want, bound := refGemm(ta, tb, m, n, k, alpha, blasF64(a), lda, blasF64(b), ldb, beta, cin, ldc)
		tol := blasTol(d)
		for i := 0; i < m; i++ {
			for j := 0; j < ldc; j++ {
				x := i*ldc + j
				if j >= n {
					if math.Float64bits(got[x]) != math.Float64bits(cin[x]) {
						t.Fatalf("beta=%v: padding C[%d,%d] changed from %g to %g", beta, i, j, cin[x], got[x])
					}
					continue
				}
				if math.Abs(got[x]-want[x]) > tol*bound[x] || math.IsNaN(got[x]) {
					t.Fatalf("beta=%v: C[%d,%d] = %.9g, want %.9g (bound %.3g, tol %.1g)", beta, i, j, got[x], want[x], bound[x], tol)
				}
			}
		}
	}
}

func TestCUDAGemmErrors(t *testing.T) {
	buf := cuAlloc(t, 4096)
	p := buf.p
	for _, c := range []struct {
		name          string
		d             DType
		ta, tb        bool
		m, n, k       int
		a, b, cm      cu.DevicePtr
		lda, ldb, ldc int
		frag          string
	}{
		{"m=0", F32, false, false, 0, 2, 2, p, p, p, 2, 2, 2, "m=0"},
		{"n<0", F32, false, false, 2, -1, 2, p, p, p, 2, 2, 2, "n=-1"},
		{"k=0", F64, false, false, 2, 2, 0, p, p, p, 2, 2, 2, "k=0"},
		{"lda", F32, false, false, 2, 3, 4, p, p, p, 3, 3, 3, "lda=3"},
		{"lda trans", F32, true, false, 5, 3, 4, p, p, p, 4, 3, 3, "lda=4"},
		{"ldb", BF16, false, false, 2, 3, 4, p, p, p, 4, 2, 3, "ldb=2"},
		{"ldb trans", F32, false, true, 2, 3, 4, p, p, p, 4, 3, 3, "ldb=3"},
		{"ldc", F32, false, false, 2, 3, 4, p, p, p, 4, 3, 2, "ldc=2"},
		{"null", F32, false, false, 2, 3, 4, p, 0, p, 4, 3, 3, "null"},
		{"huge", F32, false, false, math.MaxInt32 + 1, 3, 4, p, p, p, 4, 3, 3, "m=2147483648"},
		{"dtype", DType(7), false, false, 2, 2, 2, p, p, p, 2, 2, 2, "dtype"},
	} {
		err := testCUDA.Gemm(c.d, c.ta, c.tb, c.m, c.n, c.k, 1, c.a, c.lda, c.b, c.ldb, 0, c.cm, c.ldc)
		if err == nil || !strings.Contains(err.Error(), c.frag) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.frag)
		}
	}
	var se *BLASStatusError
	err := error(&BLASStatusError{Call: "cublasGemmEx", Status: 7})
	if !errors.As(err, &se) || err.Error() != "gomoe: cuBLAS cublasGemmEx: CUBLAS_STATUS_INVALID_VALUE" {
		t.Errorf("status error reads %q", err)
	}
	g := Geometry{T: 4, K: 2, E: 4, A: 1}
	if err := testCUDA.GroupedMatMulForward(F32, g, 0, 3, p, p, p, p); err == nil {
		t.Error("grouped matmul with H=0: no error")
	}
	if err := testCUDA.GroupedMatMulBackwardRows(DType(5), g, 2, 3, p, p, p, p, false); err == nil {
		t.Error("grouped matmul with a bad dtype: no error")
	}
	if err := testCUDA.GroupedMatMulBackwardWeights(F32, g, 2, 3, p, p, p, 0, false); err == nil {
		t.Error("grouped matmul without a plan: no error")
	}
	// A plan whose offsets point outside its rows is refused before any GEMM runs.
	bad := make([]int32, g.PlanLen())
	bad[0], bad[g.E] = 5, 6 // expert 0: 5 rows at offset 6, R = 8
	for e := 1; e <= g.E; e++ {
		bad[g.E+e] = 8
	}
	// The cuBLAS path refuses it at once (it reads the offsets on the host); the device-sized
	// path skips that expert and flags it in the status word (it reads nothing on the host).
	for _, force := range []bool{true, false} {
		old := SetGMMCUBLAS(force)
		err := testCUDA.GroupedMatMulForward(F32, g, 2, 3, p, p, p, cuUpload(t, bad).p)
		if err == nil {
			err = testCUDA.Status()
		}
		SetGMMCUBLAS(old)
		if err == nil || !strings.Contains(err.Error(), "outside") {
			t.Errorf("plan with a segment outside R (cuBLAS forced %v): error %v", force, err)
		}
	}
}

// gmmCase is a routing problem for the grouped matmul.
type gmmCase struct {
	name string
	g    Geometry
	H, N int
	ids  func(rng *rand.Rand, g Geometry) []int32
}

// rows16 reports whether the case's bfloat16 rows are 16 bytes apart (H and N multiples of
// 8), as the sm_90a kernels' TMA loads need; other cases take cuBLAS.
func (c gmmCase) rows16() bool { return c.H%8 == 0 && c.N%8 == 0 }

func gmmCases() []gmmCase {
	capG := func(g Geometry, c int, d DropPolicy, pad bool) Geometry {
		g.Mode, g.C, g.Drop, g.PadToCapacity = Capacity, c, d, pad
		return g
	}
	return []gmmCase{
		{"dropless", Geometry{T: 60, K: 2, E: 5, A: 1}, 16, 24, cuBalancedIDs(0)},
		{"droplessOdd", Geometry{T: 37, K: 3, E: 7, A: 1}, 9, 5, cuBalancedIDs(0.1)},
		{"aligned", Geometry{T: 50, K: 2, E: 8, A: 16}, 24, 7, cuBalancedIDs(0.05)},
		{"emptyExperts", Geometry{T: 40, K: 3, E: 12, A: 4}, 8, 12, cuSkewedIDs},
		{"manyEmpty", Geometry{T: 200, K: 3, E: 40, A: 8}, 16, 8, cuSkewedIDs},
		{"capacityPad", capG(Geometry{T: 64, K: 2, E: 6, A: 4}, 12, DropByPosition, true), 16, 9, cuBalancedIDs(0.05)},
		{"capacityProb", capG(Geometry{T: 80, K: 2, E: 4, A: 1}, 30, DropByProb, false), 8, 16, cuBalancedIDs(0)},
		{"E1", Geometry{T: 9, K: 1, E: 1, A: 1}, 3, 1, cuBalancedIDs(0)},
		{"wide", Geometry{T: 128, K: 2, E: 8, A: 8}, 128, 96, cuBalancedIDs(0)},
		// Shapes for the sm_90a kernels (16-byte rows): both schedules of every form, one
		// expert with every token, alignment 16, and more experts than tokens.
		{"allOnOne", Geometry{T: 300, K: 1, E: 6, A: 16}, 64, 40, allOnOne},
		{"pingA16", Geometry{T: 512, K: 8, E: 64, A: 16}, 256, 128, cuBalancedIDs(0)},
		{"coop", Geometry{T: 1024, K: 2, E: 4, A: 1}, 256, 384, cuBalancedIDs(0.02)},
		{"coopSkewed", Geometry{T: 700, K: 4, E: 8, A: 8}, 320, 264, cuSkewedIDs},
		{"sparse", Geometry{T: 20, K: 2, E: 96, A: 1}, 136, 200, cuBalancedIDs(0.2)},
	}
}

// gmmRef runs a CPU grouped matmul kernel in float64 on the values and on their absolute values
// (the error bound).
func gmmRef(f func(out, a, b []float64) error, n int, a, b []float64) (want, bound []float64, err error) {
	want = make([]float64, n)
	bound = make([]float64, n)
	if err = f(want, a, b); err != nil {
		return
	}
	abs := func(v []float64) []float64 {
		o := make([]float64, len(v))
		for i, x := range v {
			o[i] = math.Abs(x)
		}
		return o
	}
	err = f(bound, abs(a), abs(b))
	return
}

// checkNear compares got with want within tol·bound; zero marks elements that must be exactly
// 0 and base (when not nil) is added to want and bound (the accumulate mode's prior values,
// which stay exactly as they were where zero is set).
func checkNear(t *testing.T, what string, got, want, bound []float64, tol float64, zero func(i int) bool, base []float64) {
	t.Helper()
	for i := range got {
		if zero(i) {
			w := 0.0
			if base != nil {
				w = base[i]
			}
			if math.Float64bits(got[i]) != math.Float64bits(w) {
				t.Fatalf("%s: element %d = %g, want exactly %g (a row no expert owns)", what, i, got[i], w)
			}
			continue
		}
		w, b := want[i], bound[i]
		if base != nil {
			w += base[i]
			b += math.Abs(base[i])
		}
		if math.Abs(got[i]-w) > tol*b || math.IsNaN(got[i]) {
			t.Fatalf("%s: element %d = %.9g, want %.9g (bound %.3g, tol %.1g)", what, i, got[i], w, b, tol)
		}
	}
}

// allOnOne sends every token to expert 0.
func allOnOne(rng *rand.Rand, g Geometry) []int32 {
	ids := make([]int32, g.T*g.K)
	for i := range ids {
		ids[i] = int32(i % g.K) // distinct experts per token; slot 0 is always expert 0
	}
	return ids
}

// TestCUDAGroupedMatMul checks every path: the device-sized kernels (bfloat16 with 16-byte rows
// on a Hopper GPU; float32 and float64 from compute capability 8.0; the test asserts that they
// ran), and cuBLAS grouped and per expert.
func TestCUDAGroupedMatMul(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	defer SetGroupedGEMM(SetGroupedGEMM(true))
	defer SetGMMCUBLAS(SetGMMCUBLAS(false))
	sm90, simt := SM90Error(testCUDA) == nil, SimtError(testCUDA) == nil
	if !sm90 {
		t.Logf("no sm_90a grouped GEMM here (%v): bfloat16 tests the cuBLAS paths", SM90Error(testCUDA))
	}
	if !simt {
		t.Logf("no float32/float64 device-sized grouped GEMM here (%v): they test the cuBLAS paths", SimtError(testCUDA))
	}
	defer SetGMM90Sched(SetGMM90Sched(-1))
	for _, c := range gmmCases() {
		for _, d := range []DType{F32, F64, BF16} {
			paths := []string{"device", "cublas-grouped", "cublas-loop"}
			if d == BF16 && sm90 {
				// every sm_90a schedule, not only the one the static rule picks here
				for _, s := range GMM90Scheds() {
					paths = append(paths, "device-"+s)
				}
			}
			for _, path := range paths {
				grouped := path != "cublas-loop"
				sched := slices.Index(GMM90Scheds(), strings.TrimPrefix(path, "device-"))
				if d == F64 && path == "cublas-grouped" {
					continue // float64 always loops over cublasDgemm
				}
				want := "cublas"
				if path == "device" || sched >= 0 {
					switch {
					case d == BF16 && !c.rows16():
						continue
					case d == BF16 && sm90:
						want = "sm90"
					case d != BF16 && simt:
						want = "simt"
					}
				}
				t.Run(fmt.Sprintf("%s/%v/%s", c.name, d, path), func(t *testing.T) {
					SetGroupedGEMM(grouped)
					SetGMMCUBLAS(path != "device" && sched < 0)
					SetGMM90Sched(sched)
					testGroupedOne(t, testCUDA, rng, c, d)
					SetGMM90Sched(-1)
					if got := LastGMMPath(testCUDA); got != want {
						t.Errorf("the grouped matmul took the %s path, want %s", got, want)
					}
					// With cuBLAS >= 12.5 the grouped path must really run, not fall back.
					if err := GroupedGEMMError(testCUDA); err != nil && HasGroupedGEMM() {
						t.Errorf("the grouped GEMM failed and the call looped instead: %v", err)
					}
				})
			}
		}
	}
	if !HasGroupedGEMM() {
		t.Log("built against a cuBLAS without cublasGemmGroupedBatchedEx: every grouped matmul ran one GEMM per expert")
	}
}

func testGroupedOne(t *testing.T, k *CUDA, rng *rand.Rand, c gmmCase, d DType) {
	g, H, N := c.g, c.H, c.N
	R := g.Rows()
	ids := c.ids(rng, g)
	probs := cuProbsFor(d, cuTiedProbs(rng, len(ids)))
	flat := cuCpuPlan(t, g, ids, probs)
	p, err := g.View(flat)
	if err != nil {
		t.Fatal(err)
	}
	plan := cuUpload(t, flat)

	xp := cuElems(d, cuRandData(rng, R*H))
	w := cuElems(d, cuRandData(rng, g.E*H*N))
	dz := cuElems(d, cuRandData(rng, R*N))
	dXp, dW, dDz := cuUploadAny(t, xp), cuUploadAny(t, w), cuUploadAny(t, dz)
	xp64, w64, dz64 := blasF64(xp), blasF64(w), blasF64(dz)
	tol := blasTol(d)

	// owned[r] reports whether row r is a real row of some expert.
	owned := make([]bool, R)
	for e := 0; e < g.E; e++ {
		for r := p.Offsets[e]; r < p.Offsets[e]+p.Counts[e]; r++ {
			owned[r] = true
		}
	}
	rowZero := func(width int) func(i int) bool { return func(i int) bool { return !owned[i/width] } }
	wZero := func(i int) bool { return p.Counts[i/(H*N)] == 0 }

	// forward: the output starts as junk (cuAlloc), so every pad row must be written.
	zG := cuAlloc(t, int64(R*N*d.Size()))
	cuMust(t, k.GroupedMatMulForward(d, g, H, N, zG.p, dXp.p, dW.p, plan.p))
	want, bound, err := gmmRef(func(out, a, b []float64) error { return GroupedMatMulForward(out, a, b, p, H, N) }, R*N, xp64, w64)
	cuMust(t, err)
	checkNear(t, "forward", blasF64(cuDownloadAs(t, d, zG, R*N)), want, bound, tol, rowZero(N), nil)

	// backward to the rows, overwrite and accumulate
	dxG := cuAlloc(t, int64(R*H*d.Size()))
	cuMust(t, k.GroupedMatMulBackwardRows(d, g, H, N, dxG.p, dDz.p, dW.p, plan.p, false))
	want, bound, err = gmmRef(func(out, a, b []float64) error { return GroupedMatMulBackwardRows(out, a, b, p, H, N, false) }, R*H, dz64, w64)
	cuMust(t, err)
	checkNear(t, "backward rows", blasF64(cuDownloadAs(t, d, dxG, R*H)), want, bound, tol, rowZero(H), nil)

	prior := cuElems(d, cuRandData(rng, R*H))
	dxA := cuUploadAny(t, prior)
	cuMust(t, k.GroupedMatMulBackwardRows(d, g, H, N, dxA.p, dDz.p, dW.p, plan.p, true))
	checkNear(t, "backward rows (accumulate)", blasF64(cuDownloadAs(t, d, dxA, R*H)), want, bound, tol, rowZero(H), blasF64(prior))

	// backward to the weights, overwrite and accumulate
	dwG := cuAlloc(t, int64(g.E*H*N*d.Size()))
	cuMust(t, k.GroupedMatMulBackwardWeights(d, g, H, N, dwG.p, dXp.p, dDz.p, plan.p, false))
	want, bound, err = gmmRef(func(out, a, b []float64) error {
		return GroupedMatMulBackwardWeights(out, a, b, p, H, N, false)
	}, g.E*H*N, xp64, dz64)
	cuMust(t, err)
	checkNear(t, "backward weights", blasF64(cuDownloadAs(t, d, dwG, g.E*H*N)), want, bound, tol, wZero, nil)

	priorW := cuElems(d, cuRandData(rng, g.E*H*N))
	dwA := cuUploadAny(t, priorW)
	cuMust(t, k.GroupedMatMulBackwardWeights(d, g, H, N, dwA.p, dXp.p, dDz.p, plan.p, true))
	checkNear(t, "backward weights (accumulate)", blasF64(cuDownloadAs(t, d, dwA, g.E*H*N)), want, bound, tol, wZero, blasF64(priorW))

	// The same call twice gives the same bits.
	z2 := cuAlloc(t, int64(R*N*d.Size()))
	cuMust(t, k.GroupedMatMulForward(d, g, H, N, z2.p, dXp.p, dW.p, plan.p))
	cuSameBits(t, "forward rerun", cuDownloadAs(t, d, z2, R*N), cuDownloadAs(t, d, zG, R*N))

	counts, offsets, err := k.PlanSegments(g, plan.p)
	cuMust(t, err)
	if fmt.Sprint(counts, offsets) != fmt.Sprint(p.Counts, p.Offsets) {
		t.Fatalf("PlanSegments = %v %v, want %v %v", counts, offsets, p.Counts, p.Offsets)
	}
}

// benchCounts are the rows per expert of the grouped matmul benchmarks (shared with
// bench/torch_gmm_bench.py, which uses the same rule): "even" gives every expert m = R/E rows;
// "uneven" gives expert e m + ((7919·e) mod (2s+1)) − s rows, s = round(√(3m)) (about the spread
// of uniformly random routing), the last expert taking what is left.
func benchCounts(kind string, R, E int) []int {
	c := make([]int, E)
	m := R / E
	s := int(math.Round(math.Sqrt(3 * float64(m))))
	left := R
	for e := range c {
		c[e] = m
		if kind == "uneven" {
			c[e] += (7919*e)%(2*s+1) - s
		}
		if e == E-1 {
			c[e] = left
		}
		left -= c[e]
	}
	return c
}

// benchIDs routes T tokens to K experts each so that expert e gets counts[e] rows: the rows
// expert-major, row j of the list goes to token j mod T, slot j / T (distinct experts per token
// while every count is at most T).
func benchIDs(counts []int, T, K int) []int32 {
	ids := make([]int32, T*K)
	j := 0
	for e, n := range counts {
		for ; n > 0; n-- {
			ids[(j%T)*K+j/T] = int32(e)
			j++
		}
	}
	return ids
}

// TestCUDAGroupedMatMulBench times the grouped matmul's three passes at the Qwen3 and Mixtral
// shapes with even and uneven routing (benchCounts): each sm_90a schedule, the static choice,
// and cuBLAS's grouped call and loop, for comparison with bench/torch_gmm_bench.py (the mean of
// -gomoe.iters launches, default 20, as cuTimeIt times them; the script takes 20).
func TestCUDAGroupedMatMulBench(t *testing.T) {
	if !*gpuBenchFlag {
		t.Skip("run with -gomoe.bench")
	}
	defer SetGroupedGEMM(SetGroupedGEMM(true))
	defer SetGMMCUBLAS(SetGMMCUBLAS(false))
	defer SetGMM90Sched(SetGMM90Sched(-1))
	shapes := []struct {
		name          string
		T, K, E, H, N int
		dts           []DType
	}{
		// the layer's W1 (gate and up packed, N = 2F) and W2 at Qwen3, W1 at Mixtral
		{"qwen3(H2048,2F1536)", 4096, 8, 128, 2048, 1536, []DType{BF16, F32}},
		{"qwen3(F768,H2048)", 4096, 8, 128, 768, 2048, []DType{BF16}},
		{"mixtral(H4096,2F28672)", 4096, 2, 8, 4096, 28672, []DType{BF16}},
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%-22s %-6s %-5s %-8s %-20s %9s %9s\n", "shape", "route", "dtype", "pass", "path", "gpu ms", "TFLOP/s")
	for _, s := range shapes {
		for _, route := range []string{"even", "uneven"} {
			g := Geometry{T: s.T, K: s.K, E: s.E, A: 1}
			plan := cuUpload(t, cuCpuPlan(t, g, benchIDs(benchCounts(route, g.Rows(), g.E), g.T, g.K), nil))
			R := g.Rows()
			for _, d := range s.dts {
				xp := cuAlloc(t, int64(R*s.H*d.Size()))
				w := cuAlloc(t, int64(s.E*s.H*s.N*d.Size()))
				z := cuAlloc(t, int64(R*s.N*d.Size()))
				dw := cuAlloc(t, int64(s.E*s.H*s.N*d.Size()))
				dxp := cuAlloc(t, int64(R*s.H*d.Size()))
				dz := cuAlloc(t, int64(R*s.N*d.Size()))
				// Normal values, as torch_gmm_bench.py draws them: the power the GEMMs draw, and so
				// the clock at the power limit, depends on the data. dz is its own buffer, as the
				// script's (the forward's output z used to serve as dz, so the backward passes ran
				// on other data than torch's).
				rng := rand.New(rand.NewPCG(7, 8))
				cuFillNormal(t, rng, d, xp, 1)
				cuFillNormal(t, rng, d, w, 0.02)
				cuFillNormal(t, rng, d, dz, 1)
				flops := 2 * float64(g.T*g.K) * float64(s.H) * float64(s.N)
				passes := []struct {
					name string
					form int
					f    func() error
				}{
					{"forward", 0, func() error { return testCUDA.GroupedMatMulForward(d, g, s.H, s.N, z.p, xp.p, w.p, plan.p) }},
					{"dxp", 1, func() error {
						return testCUDA.GroupedMatMulBackwardRows(d, g, s.H, s.N, dxp.p, dz.p, w.p, plan.p, false)
					}},
					{"dw", 2, func() error {
						return testCUDA.GroupedMatMulBackwardWeights(d, g, s.H, s.N, dw.p, xp.p, dz.p, plan.p, false)
					}},
				}
				for _, ps := range passes {
					only := *gpuGMMOnly != ""
					if only && !strings.Contains(fmt.Sprintf("%s %s %v %s", s.name, route, d, ps.name), *gpuGMMOnly) {
						continue
					}
					type path struct {
						name            string
						cublas, loop    bool
						sched           int
						raster, swizzle int // sm_90a tile order (0, 1: the default)
					}
					paths := []path{{"device", false, false, -1, 0, 1}}
					if d == BF16 && SM90Error(testCUDA) == nil && !only {
						for i := range GMM90Scheds() {
							paths = append(paths, path{"", false, false, i, 0, 1})
						}
						// the static schedule with other tile orders
						for _, o := range [][2]int{{0, 2}, {0, 4}, {0, 8}, {1, 1}, {1, 4}} {
							paths = append(paths, path{"", false, false, -1, o[0], o[1]})
						}
					}
					if !only {
						paths = append(paths, path{"cublas-grouped", true, false, -1, 0, 1}, path{"cublas-loop", true, true, -1, 0, 1})
					}
					for _, p := range paths {
						SetGMMCUBLAS(p.cublas)
						SetGroupedGEMM(!p.loop)
						SetGMM90Sched(p.sched)
						SetGMM90TileOrder(p.raster, p.swizzle)
						gpu := cuTimeIt(t, *gpuBenchIters, ps.f)
						cuMust(t, testCUDA.Sync())
						name := p.name
						if p.cublas && p.name == "cublas-grouped" && (GroupedGEMMError(testCUDA) != nil || !HasGroupedGEMM()) {
							name = "grouped(fellback)"
						}
						switch LastGMMPath(testCUDA) {
						case "sm90":
							name = GMM90Kernel(ps.form, g, s.H, s.N)[6:]
							if p.raster != 0 || p.swizzle != 1 {
								name += fmt.Sprintf(" r%d s%d", p.raster, p.swizzle)
							} else if p.sched < 0 {
								name = "device=" + name
							}
						case "simt":
							name = "device=simt"
						}
						fmt.Fprintf(&sb, "%-22s %-6s %-5v %-8s %-20s %9.3f %9.1f\n", s.name, route, d, ps.name, name, gpu, flops/gpu/1e9)
					}
					SetGMM90Sched(-1)
					SetGMM90TileOrder(0, 1)
				}
			}
		}
	}
	t.Log(sb.String())
}

// cuDeviceGMM reports whether this GPU runs d's device-sized grouped GEMM (sm_90a for
// bfloat16, CUTLASS's sm80 kernels for float32 and float64), logging why not.
func cuDeviceGMM(t *testing.T, d DType) bool {
	t.Helper()
	err := SimtError(testCUDA)
	if d == BF16 {
		err = SM90Error(testCUDA)
	}
	if err != nil {
		t.Logf("%v skipped: %v", d, err)
	}
	return err == nil
}

// TestCUDAGroupedMatMulNoHostSync: the device-sized grouped matmul's three passes (bfloat16 on
// sm_90a, float32 and float64 on the CUTLASS grouped GEMM) enqueue behind a kernel that holds
// the stream (kernels.SyncProbe) without waiting for it.
func TestCUDAGroupedMatMulNoHostSync(t *testing.T) {
	defer SetGMMCUBLAS(SetGMMCUBLAS(false))
	g := Geometry{T: 256, K: 4, E: 16, A: 8}
	H, N := 64, 96
	rng := rand.New(rand.NewPCG(5, 6))
	plan := cuUpload(t, cuCpuPlan(t, g, cuBalancedIDs(0.1)(rng, g), nil))
	R := g.Rows()
	for _, d := range []DType{BF16, F32, F64} {
		if !cuDeviceGMM(t, d) {
			continue
		}
		xp := cuUploadAny(t, cuElems(d, cuRandData(rng, R*H)))
		w := cuUploadAny(t, cuElems(d, cuRandData(rng, g.E*H*N)))
		z := cuAlloc(t, int64(R*N*d.Size()))
		dxp := cuAlloc(t, int64(R*H*d.Size()))
		dw := cuAlloc(t, int64(g.E*H*N*d.Size()))
		run := func() error {
			if err := testCUDA.GroupedMatMulForward(d, g, H, N, z.p, xp.p, w.p, plan.p); err != nil {
				return err
			}
			if err := testCUDA.GroupedMatMulBackwardRows(d, g, H, N, dxp.p, z.p, w.p, plan.p, false); err != nil {
				return err
			}
			return testCUDA.GroupedMatMulBackwardWeights(d, g, H, N, dw.p, xp.p, z.p, plan.p, true)
		}
		SetGMMCUBLAS(false)
		cuMust(t, run()) // first calls build the parameters
		cuMust(t, testCUDA.Sync())
		probe, err := testCUDA.StartSyncProbe(20 * time.Second)
		cuMust(t, err)
		runErr := run()
		waited, err := probe.Release()
		cuMust(t, err)
		cuMust(t, runErr)
		if waited {
			t.Fatalf("%v: the device-sized grouped matmul waited for the GPU", d)
		}
		if _, err := probe.Release(); err == nil || !strings.Contains(err.Error(), "released twice") {
			t.Fatalf("a second Release: %v, want an error (it stored into freed memory)", err)
		}
		// The probe itself catches a waiting call: the cuBLAS path reads the plan on the host.
		SetGMMCUBLAS(true)
		probe, err = testCUDA.StartSyncProbe(2 * time.Second)
		cuMust(t, err)
		runErr = run()
		waited, err = probe.Release()
		cuMust(t, err)
		cuMust(t, runErr)
		if !waited {
			t.Fatalf("%v: the sync probe did not notice the cuBLAS path's host read of the plan", d)
		}
	}
}

// TestCUDAGroupedMatMulGraphAfterGrowth: a CUDA graph holds the group table's and the
// workspace's addresses in its kernels' parameters. After an eager call with more experts moved
// the table (and grew the workspace), a replay of a graph captured before gives the eager
// result and writes no memory allocated since: the old table used to be freed, and a replay
// wrote its group table into whatever the allocator handed out next.
func TestCUDAGroupedMatMulGraphAfterGrowth(t *testing.T) {
	defer SetGMMCUBLAS(SetGMMCUBLAS(false))
	rng := rand.New(rand.NewPCG(41, 42))
	const H, N = 64, 96
	for _, d := range []DType{BF16, F32} {
		if !cuDeviceGMM(t, d) {
			continue
		}
		c, err := NewCUDAKernelsLike(testCUDA) // fresh tables, whatever the tests before did
		cuMust(t, err)
		forward := func(g Geometry) (cuDevBuf, func() error) {
			plan := cuUpload(t, cuCpuPlan(t, g, cuBalancedIDs(0)(rng, g), nil))
			xp := cuUploadAny(t, cuElems(d, cuRandData(rng, g.Rows()*H)))
			w := cuUploadAny(t, cuElems(d, cuRandData(rng, g.E*H*N)))
			z := cuAlloc(t, int64(g.Rows()*N*d.Size()))
			return z, func() error { return c.GroupedMatMulForward(d, g, H, N, z.p, xp.p, w.p, plan.p) }
		}
		small := Geometry{T: 64, K: 2, E: 4, A: 8}
		z, run := forward(small)
		cuMust(t, run()) // builds the launch on a table of 4 groups
		cuMust(t, c.Sync())
		n := small.Rows() * N
		want := cuDownloadAs(t, d, z, n)
		graph, err := c.Capture(run)
		cuMust(t, err)
		old := GMM90TableAddr(c, 0) // the forward's table (bfloat16 only: 0 for float32)
		_, big := forward(Geometry{T: 64, K: 2, E: 512, A: 8})
		cuMust(t, big()) // moves the table
		cuMust(t, c.Sync())
		if d == BF16 {
			if GMM90TableAddr(c, 0) == old {
				t.Fatal("the call with 512 experts did not move the group table")
			}
			// The old table is still allocated: the graph's kernels read and write it.
			cuMust(t, testCUDA.Do(func() error {
				if _, _, err := old.AddressRange(); err != nil {
					return fmt.Errorf("the moved table's old memory %#x is no longer allocated: %w", uint64(old), err)
				}
				return nil
			}))
		}
		// Buffers of the old table's size (304 bytes for 4 groups) and larger, 0xA5 bytes: a
		// freed table's address is what the allocator hands out next.
		var canaries []cuDevBuf
		for i := range 64 {
			b := cuAlloc(t, []int64{304, 4096}[i%2])
			if d == BF16 && b.p == old {
				t.Fatalf("a buffer allocated after the move got the old table's address %#x: it was freed while the graph uses it", uint64(old))
			}
			canaries = append(canaries, b)
		}
		cuMust(t, testCUDA.Do(func() error { return cu.MemsetD8(z.p, 0xA5, z.n) }))
		cuMust(t, graph.Launch())
		cuMust(t, c.Sync())
		cuSameBits(t, fmt.Sprintf("%v: replay after the table moved", d), cuDownloadAs(t, d, z, n), want)
		for i, b := range canaries {
			for j, v := range cuDownload[byte](t, b, int(b.n)) {
				if v != 0xA5 {
					t.Fatalf("%v: the replay wrote byte %d of a buffer allocated after the table moved (%d of %d)", d, j, i, len(canaries))
				}
			}
		}
		cuMust(t, graph.Destroy())
		cuMust(t, c.Close())
	}
}

// TestCUDAGemmFreshOutput: a GEMM with beta 0 into memory nothing wrote before fills all of C,
// in float32 and bfloat16 (compute-sanitizer's initcheck runs it to tell uninitialised reads
// of ours from its view of cuBLAS's own stores).
func TestCUDAGemmFreshOutput(t *testing.T) {
	rng := rand.New(rand.NewPCG(31, 32))
	const m, n, k = 256, 192, 128
	for _, d := range []DType{F32, BF16} {
		a, b := cuElems(d, cuRandData(rng, m*k)), cuElems(d, cuRandData(rng, k*n))
		dA, dB := cuUploadAny(t, a), cuUploadAny(t, b)
		var c cu.DevicePtr
		cuMust(t, testCUDA.Do(func() error {
			var err error
			c, err = cu.MemAlloc(int64(d.Size()) * m * n)
			return err
		}))
		cuMust(t, testCUDA.Gemm(d, false, false, m, n, k, 1, dA.p, k, dB.p, n, 0, c, n))
		got := blasF64(cuDownloadAs(t, d, cuDevBuf{c, int64(d.Size()) * m * n}, m*n))
		_ = testCUDA.Do(func() error { return cu.MemFree(c) })
		want, bound := refGemm(false, false, m, n, k, 1, blasF64(a), k, blasF64(b), n, 0, make([]float64, m*n), n)
		for i := range got {
			if !(math.Abs(got[i]-want[i]) <= blasTol(d)*bound[i]) {
				t.Fatalf("%v: C[%d] = %v, want %v", d, i, got[i], want[i])
			}
		}
	}
}

// TestCUDAGroupedMatMulKernelsDidNotLoad: device-sized GEMM kernels that apply to the GPU but
// did not load make every grouped matmul that needs them return an error naming the cause,
// instead of silently taking cuBLAS (whose host-read sizes would break a captured step far
// from the cause); and a host library whose Params differ from the fatbin's is such a cause.
func TestCUDAGroupedMatMulKernelsDidNotLoad(t *testing.T) {
	defer SetGMMCUBLAS(SetGMMCUBLAS(false))
	if SM90Error(testCUDA) == nil {
		err := SM90ParamsMismatch(testCUDA)
		if err == nil || !strings.Contains(err.Error(), "come from different builds") {
			t.Errorf("Params 64 bytes larger on the host: %v, want an error saying the two come from different builds", err)
		}
	} else {
		t.Logf("no sm_90a kernels here (%v): the Params check is not tested", SM90Error(testCUDA))
	}

	why := errors.New("test: the host library's Params are 1408 bytes, the kernel's 1344")
	c, err := NewCUDAKernelsDidNotLoad(testCUDA, why)
	cuMust(t, err)
	defer func() { cuMust(t, c.Close()) }()
	rng := rand.New(rand.NewPCG(5, 6))
	g := Geometry{T: 16, K: 2, E: 4, A: 1, Mode: Dropless}
	H, N := 32, 64
	ids := make([]int32, g.T*g.K)
	for i := range ids {
		ids[i] = int32((i/g.K + i%g.K) % g.E)
	}
	plan := cuUpload(t, cuCpuPlan(t, g, ids, nil))
	for _, d := range []DType{BF16, F32, F64} {
		a := cuUploadAny(t, cuElems(d, cuRandData(rng, g.Rows()*H)))
		w := cuUploadAny(t, cuElems(d, cuRandData(rng, g.E*H*N)))
		z := cuAlloc(t, int64(g.Rows()*N*d.Size()))
		err := c.GroupedMatMulForward(d, g, H, N, z.p, a.p, w.p, plan.p)
		if !errors.Is(err, why) || !strings.Contains(err.Error(), "did not load") {
			t.Errorf("%v: %v, want an error wrapping %q", d, err, why)
		}
		if path := LastGMMPath(c); path != "" {
			t.Errorf("%v: the grouped matmul took the %s path, want none", d, path)
		}
	}
}

// TestCUDAGMM90PairByDriver: the sm_90a kernels built by nvcc 13 (and their host library) are
// picked from CUDA 13.0 drivers on, the nvcc 12 build below, and with an unreadable version.
func TestCUDAGMM90PairByDriver(t *testing.T) {
	for _, c := range []struct {
		driver int
		want   bool
	}{{-1, false}, {12000, false}, {12080, false}, {12090, false}, {13000, true}, {13010, true}} {
		if got := GMM90CU13(c.driver); got != c.want {
			t.Errorf("driver %d: the nvcc 13 pair %v, want %v", c.driver, got, c.want)
		}
	}
	if !SM90CU13(testCUDA) && SM90Error(testCUDA) == nil && cu.Version() >= 13000 {
		t.Errorf("driver %d: the sm_90a grouped GEMM runs the nvcc 12 pair", cu.Version())
	}
}

// TestCUDAGroupedMatMulNvcc12Pair runs the bfloat16 cases of TestCUDAGroupedMatMul on the nvcc
// 12 pair of sm_90a fatbin and host library, which a CUDA 12 driver loads, on this GPU (where
// a CUDA 13 driver would load the nvcc 13 pair).
func TestCUDAGroupedMatMulNvcc12Pair(t *testing.T) {
	if SM90Error(testCUDA) != nil {
		t.Skipf("no sm_90a grouped GEMM here: %v", SM90Error(testCUDA))
	}
	defer SetGMM90NoCU13(SetGMM90NoCU13(true))
	defer SetGMMCUBLAS(SetGMMCUBLAS(false))
	k, err := NewCUDAKernelsLike(testCUDA)
	cuMust(t, err)
	defer func() { cuMust(t, k.Close()) }()
	if SM90CU13(k) {
		t.Fatal("SetGMM90NoCU13(true) still loaded the nvcc 13 pair")
	}
	rng := rand.New(rand.NewPCG(41, 42))
	for _, c := range gmmCases() {
		if !c.rows16() {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			testGroupedOne(t, k, rng, c, BF16)
			if got := LastGMMPath(k); got != "sm90" {
				t.Errorf("the grouped matmul took the %s path, want sm90", got)
			}
		})
	}
}
