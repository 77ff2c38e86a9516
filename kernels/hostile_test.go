package kernels

import (
	"math"
	"strings"
	"testing"

	"github.com/gomoe/gomoe/internal/hostmem"
)

// TestHostileGeometry: geometries whose sizes wrap around int, name more experts than int32
// ids can hold, need more memory than the machine has, or carry capacity-mode fields in
// dropless mode are rejected by Validate, View, BuildPlan and Check with an error naming the
// problem, before anything is allocated; PlanLen and Rows never panic on them.
func TestHostileGeometry(t *testing.T) {
	defer hostmem.SetLimit(hostmem.SetLimit(1 << 30)) // 1 GiB: the memory rows below need more
	cases := []struct {
		name string
		g    Geometry
		want string
	}{
		{"E = MaxInt", Geometry{T: 1, K: 1, E: math.MaxInt, A: 1}, "E=9223372036854775807 experts exceed the int32 expert id limit"},
		{"E = 2^40", Geometry{T: 1, K: 1, E: 1 << 40, A: 1}, "exceed the int32 expert id limit"},
		{"E·(A-1) wraps around", Geometry{T: 1, K: 1, E: 1 << 31, A: 1 << 40}, "expert id limit"},
		{"capacity E·C wraps", Geometry{T: 1, K: 1, E: 1 << 20, A: 1, Mode: Capacity, C: math.MaxInt}, "int32 row id limit"},
		{"plan beyond memory", Geometry{T: 1 << 27, K: 2, E: 8, A: 1}, "more than the 1073741824 bytes of memory this process may use"},
		{"experts beyond memory", Geometry{T: 1, K: 1, E: 1 << 28, A: 1}, "more than the"},
		{"PadToCapacity in dropless mode", Geometry{T: 4, K: 1, E: 2, A: 1, PadToCapacity: true}, "PadToCapacity given in dropless mode"},
		{"unknown drop policy in dropless mode", Geometry{T: 4, K: 1, E: 2, A: 1, Drop: 7}, "unknown drop policy DropPolicy(7)"},
		{"negative drop policy in capacity mode", Geometry{T: 4, K: 1, E: 2, A: 1, Mode: Capacity, C: 2, Drop: -1}, "unknown drop policy DropPolicy(-1)"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("panic: %v", r)
				}
			}()
			_, _ = c.g.Rows(), c.g.PlanLen()
			check := func(what string, err error) {
				t.Helper()
				if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "gomoe: plan: ") {
					t.Errorf("%s: %v, want an error mentioning %q", what, err, c.want)
				}
			}
			check("Validate", c.g.Validate())
			dst := []int32{7, 7, 7}
			_, err := c.g.View(dst)
			check("View", err)
			check("BuildPlan", BuildPlan[float32](dst, c.g, []int32{0}, nil))
			check("Check", Plan{Geometry: c.g, Counts: dst}.Check())
			if dst[0] != 7 || dst[1] != 7 || dst[2] != 7 {
				t.Errorf("dst was written: %v", dst)
			}
		})
	}
}

// TestValidateAllocatesNothing: Validate, which every kernel that takes a plan runs, makes
// no error text for a geometry that fits in memory (it formatted one on every call: four
// allocations per kernel call).
func TestValidateAllocatesNothing(t *testing.T) {
	g := Geometry{T: 1024, K: 2, E: 8, A: 1}
	if n := testing.AllocsPerRun(100, func() {
		if err := g.Validate(); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Validate of a valid geometry: %v allocations, want 0", n)
	}
}

// TestHostilePlanBuffers: BuildPlan with dst sharing memory with ids or probs (also with
// T large enough for its goroutines) and Check on a capacity plan whose counts pass C.
func TestHostilePlanBuffers(t *testing.T) {
	for _, T := range []int{3, 5000} {
		g := Geometry{T: T, K: 2, E: 4, A: 1, Mode: Capacity, C: T, Drop: DropByProb}
		mk := func() ([]int32, []int32, []float32) {
			dst := make([]int32, g.PlanLen()+g.T*g.K)
			for i := range dst {
				dst[i] = int32(i % 3)
			}
			probs := make([]float32, g.T*g.K)
			for i := range probs {
				probs[i] = float32(i % 5)
			}
			return dst, dst[:g.PlanLen()], probs
		}
		cases := []struct {
			name string
			call func(all, dst []int32, probs []float32) error
			want string
		}{
			{"ids inside dst", func(all, dst []int32, probs []float32) error {
				return BuildPlan(dst, g, all[len(all)-g.T*g.K-5:len(all)-5], probs)
			}, "plan: output dst overlaps input ids"},
			{"ids after dst", func(all, dst []int32, probs []float32) error {
				return BuildPlan(dst[:g.PlanLen()-1], g, all[len(all)-g.T*g.K:], probs)
			}, "output has"}, // a wrong length is reported first
			{"ids overlap the end of dst", func(all, dst []int32, probs []float32) error {
				return BuildPlan(all[1:g.PlanLen()+1], g, all[g.PlanLen():], probs)
			}, "output dst overlaps input ids"},
		}
		for _, c := range cases {
			all, dst, probs := mk()
			before := append([]int32(nil), all...)
			err := c.call(all, dst, probs)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("T=%d %s: %v, want %q", T, c.name, err, c.want)
			}
			for i := range all {
				if all[i] != before[i] {
					t.Fatalf("T=%d %s: the buffer was written at %d", T, c.name, i)
				}
			}
		}
	}
	// Check enforces counts <= C in capacity mode: with A=4, C=3 and C=2 give the same R, so
	// only the count is wrong.
	g := Geometry{T: 6, K: 1, E: 2, A: 4, Mode: Capacity, C: 3}
	flat := make([]int32, g.PlanLen())
	if err := BuildPlan[float32](flat, g, []int32{0, 0, 0, 1, 1, 0}, nil); err != nil {
		t.Fatal(err)
	}
	p, err := g.View(flat)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Check(); err != nil {
		t.Fatalf("good plan: %v", err)
	}
	p.C = 2
	if err := p.Check(); err == nil || !strings.Contains(err.Error(), "expert 0 has count 3, more than the capacity C=2") {
		t.Errorf("Check with counts past C: %v", err)
	}
	x := []float32{1, 2, 3, 4, 5, 6}
	xp := make([]float32, g.Rows())
	if err := PermuteForward(xp, x, p, 1); err == nil || !strings.Contains(err.Error(), "capacity C=2") {
		t.Errorf("PermuteForward with counts past C: %v", err)
	}
	for _, v := range xp {
		if v != 0 {
			t.Fatalf("xp written: %v", xp)
		}
	}
}

// TestHostileKernelSizes: sizes whose products wrap around int (T = 2^62: T·K and T·E wrap to
// 0, which matched the empty buffers; E = 2^62+1 with T = 4: T·E wraps to 4; both used to
// panic, TopK's in a goroutine of its own, which no caller can recover) give an error naming
// the sizes; the row kernels reject negative or zero widths.
func TestHostileKernelSizes(t *testing.T) {
	const h = 1 << 62
	one := []float32{1}
	f4 := make([]float64, 4)
	softmax := Router{Score: RouterSoftmax, Groups: 1, Kept: 1, Scale: 1}
	cases := []struct {
		name string
		call func() error
		want string
	}{
		{"BalanceLossForward T·K wraps", func() error { _, err := BalanceLossForward[float32](nil, nil, h, 4, 4, 1, 1); return err }, "BalanceLossForward: T=4611686018427387904 K=4 E=4 B=1 are too large"},
		{"BalanceLossBackward T·K wraps", func() error { return BalanceLossBackward[float32](nil, nil, h, 4, 4, 1, 1, 1) }, "BalanceLossBackward: T=4611686018427387904"},
		{"ZLossForward T·E wraps", func() error { _, err := ZLossForward[float32](nil, h, 4, 1); return err }, "ZLossForward: T=4611686018427387904 E=4 are too large"},
		{"ZLossForward E wraps", func() error { _, err := ZLossForward[float32](nil, 4, h, 1); return err }, "E=4611686018427387904 are too large"},
		{"ZLossBackward T·E wraps", func() error { return ZLossBackward[float32](nil, nil, h, 4, 1, 1) }, "ZLossBackward: T=4611686018427387904"},
		{"RouterBalanceLossForward T·K wraps", func() error {
			_, err := RouterBalanceLossForward[float32](nil, nil, h, 4, 4, 1, 1, RouterSoftmax)
			return err
		}, "RouterBalanceLossForward: T=4611686018427387904"},
		{"RouterBalanceLossBackward T·K wraps", func() error {
			return RouterBalanceLossBackward[float32](nil, nil, nil, h, 4, 4, 1, 1, 1, RouterSigmoid)
		}, "RouterBalanceLossBackward: T=4611686018427387904"},
		// E = 2^62+1 with T = 4 tokens: T·E wraps to 4, the length of the buffers.
		{"TopK T·E wraps (260 rows: the rows split over goroutines)", func() error {
			return TopK(make([]int32, 260), make([]float64, 260), nil, h+1, 1, 1, 1)
		}, "TopK: E=4611686018427387905 times 260 rows is too large"},
		{"RouterTopK T·E wraps", func() error { return RouterTopK(make([]int32, 4), f4, nil, h+1, 1, softmax) }, "RouterTopK: E=4611686018427387905 times 4 rows"},
		{"RouterProbs T·E wraps", func() error { return RouterProbs(f4, f4, make([]int32, 4), h+1, 1, softmax) }, "RouterProbs: E=4611686018427387905 times 4 rows"},
		{"RouterProbsBackward T·E wraps", func() error {
			return RouterProbsBackward(f4, f4, []int32{0, 0, 0, 5}, f4, h+1, 1, softmax)
		}, "RouterProbsBackward: E=4611686018427387905 times 4 rows"},
		{"GatherTopK T·E wraps", func() error { return GatherTopK(f4, f4, []int32{0, 0, 0, 5}, h+1, 1) }, "GatherTopK: E=4611686018427387905 times 4 rows"},
		{"GatherTopKBackward T·E wraps", func() error { return GatherTopKBackward(f4, f4, []int32{0, 0, 0, 5}, h+1, 1) }, "GatherTopKGrad: E=4611686018427387905 times 4 rows"},
		{"RowLogSumExp T·E wraps", func() error { return RowLogSumExp(f4, nil, h) }, "RowLogSumExp: E=4611686018427387904 times 4 rows"},
		{"RowLogSumExpBackward T·E wraps", func() error { return RowLogSumExpBackward(nil, nil, f4, f4, h) }, "RowLogSumExpGrad: E=4611686018427387904 times 4 rows"},
		{"ExpertLoad B·E wraps", func() error { return ExpertLoad(f4, make([]int32, 4), 1, h+1, 4) }, "ExpertLoad: E=4611686018427387905 times 4 rows"},
		{"Embedding huge width", func() error { return Embedding[float32](nil, nil, []int32{0}, h) }, "Embedding has 4611686018427387904 elements, want 0"},
		{"Embedding negative width", func() error { return Embedding(one, one, []int32{0}, -1) }, "-1 columns"},
		{"CrossEntropy zero width", func() error { _, err := CrossEntropy(one, one, 0); return err }, "CrossEntropy: 0 columns"},
		{"ScaleRows negative width", func() error { return ScaleRows(one, one, one, -1) }, "for -1 columns"},
		{"RowDot zero width", func() error { return RowDot(one, one, one, 0) }, "for 0 columns"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("panic: %v", r)
				}
			}()
			if err := c.call(); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%v, want %q", err, c.want)
			}
			if one[0] != 1 {
				t.Fatalf("a buffer was written")
			}
		})
	}
}

// TestHostileOverlapNN: the element-wise and row-wise kernels run in place (an output exactly
// an input) but reject an output that partly overlaps an input or shares memory with another
// output, and the gathers and reductions reject any overlap; nothing is written then.
func TestHostileOverlapNN(t *testing.T) {
	buf := func() []float32 { return []float32{1, -2, 3, -4, 5, -6, 7, -8} }
	cases := []struct {
		name string
		call func(b []float32) error
		want string // "" = accepted
		post func(b []float32) bool
	}{
		{"ReLU in place", func(b []float32) error { return ReLU(b, b) }, "", func(b []float32) bool {
			return b[0] == 1 && b[1] == 0 && b[6] == 7 && b[7] == 0
		}},
		{"ReLU shifted by one", func(b []float32) error { return ReLU(b[1:5], b[0:4]) }, "ReLU: output y partly overlaps input x", nil},
		{"RowForward softmax shifted", func(b []float32) error { return RowForward(RowSoftmax, b[2:6], b[0:4], 2) }, "partly overlaps input x", nil},
		{"ScaleRows y over s", func(b []float32) error { return ScaleRows(b[0:4], b[4:8], b[2:4], 2) }, "ScaleRows: output y partly overlaps input s", nil},
		{"ColSum out inside x", func(b []float32) error { return ColSum(b[0:2], b[0:8]) }, "ColSum: output out overlaps input x", nil},
		{"RowDot out inside a", func(b []float32) error { return RowDot(b[0:2], b[0:4], b[4:8], 2) }, "RowDot: output out overlaps input a", nil},
		{"Embedding out = table", func(b []float32) error { return Embedding(b[0:4], b[0:4], []int32{1, 0}, 2) }, "Embedding: output out overlaps input table", nil},
		{"Adam m = v", func(b []float32) error {
			return AdamUpdate(b[0:2], b[2:4], b[4:6], b[4:6], 0.1, 0.9, 0.99, 1e-8, 1, 1, 0)
		}, "AdamUpdate: output m overlaps output v", nil},
		{"SGD p overlaps g", func(b []float32) error { return SGDUpdate(b[0:4], b[2:6], 0.1, 0) }, "SGDUpdate: output p overlaps input g", nil},
		{"SwiGLU out over b", func(b []float32) error { return ActivationForward(SwiGLU, b[0:4], b[4:8], b[3:7]) }, "partly overlaps input b", nil},
		// These five took no overlap check and gave wrong values (Cast shifted: [1 1 1 1]).
		{"Cast shifted by one", func(b []float32) error { return Cast(b[1:5], b[0:4]) }, "Cast: output out partly overlaps input in", nil},
		{"Cast in place", func(b []float32) error { return Cast(b, b) }, "", func(b []float32) bool { return b[0] == 1 && b[7] == -8 }},
		{"ZLossBackward shifted", func(b []float32) error { return ZLossBackward(b[1:5], b[0:4], 2, 2, 1, 1) }, "ZLossBackward: output dx partly overlaps input x", nil},
		{"RowLogSumExp shifted", func(b []float32) error { return RowLogSumExp(b[1:3], b[0:4], 2) }, "RowLogSumExp: output out partly overlaps input x", nil},
		{"RowLogSumExpBackward dx = x", func(b []float32) error { return RowLogSumExpBackward(b[0:4], b[0:4], b[4:6], b[6:8], 2) }, "RowLogSumExpGrad: output dx overlaps input x", nil},
		// GatherTopK took no overlap check: out = s[2:4] of s [2,2] with ids [1, 0] gave
		// [-2 -2], not [-2 3] (the second row's score was read after the first was written).
		{"GatherTopK out over s", func(b []float32) error { return GatherTopK(b[2:4], b[0:4], []int32{1, 0}, 2, 1) }, "GatherTopK: output out overlaps input s", nil},
		{"GatherTopKBackward ds over g", func(b []float32) error { return GatherTopKBackward(b[0:4], b[2:4], []int32{1, 0}, 2, 1) }, "GatherTopKGrad: output ds overlaps input g", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := buf()
			before := buf()
			err := c.call(b)
			if c.want == "" {
				if err != nil || !c.post(b) {
					t.Errorf("%v, result %v", err, b)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%v, want %q", err, c.want)
			}
			for i := range b {
				if b[i] != before[i] {
					t.Fatalf("written: %v", b)
				}
			}
		})
	}
}

// TestNNBadInput: the layer kernels (bias.go, relu.go, rmsnorm.go, cross_entropy.go) reject
// mismatched sizes, a bad eps or zero columns, and write nothing then.
func TestNNBadInput(t *testing.T) {
	x := []float32{1, 2, 3, 4, 5, 6}
	out := make([]float32, 6)
	for _, c := range []struct {
		name string
		err  error
	}{
		{"BiasAdd rows", BiasAdd(out, x, []float32{1, 2, 3, 4})},
		{"BiasAdd out", BiasAdd(out[:5], x, []float32{1, 2})},
		{"BiasAdd empty bias", BiasAdd(out, x, nil)},
		{"ColSum", ColSum(out[:4], x)},
		{"ReLU", ReLU(out[:5], x)},
		{"ReLUBackward", ReLUBackward(out, x, x[:5])},
		{"RMSNorm eps", RMSNorm(out, x, []float32{1, 1, 1}, -1)},
		{"RMSNorm NaN eps", RMSNorm(out, x, []float32{1, 1, 1}, math.NaN())},
		{"RMSNorm gain", RMSNorm(out, x, []float32{1, 1, 1, 1}, 0)},
		{"RMSNormBackward", RMSNormBackward(out, x, []float32{1, 1, 1}, x[:3], 0)},
		{"RMSNormGainGrad", RMSNormGainGrad(out[:4], x, x, 0)},
		{"CrossEntropyBackward", CrossEntropyBackward(out, x, x[:3], 3, 1)},
	} {
		if c.err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
	for i, v := range out {
		if v != 0 {
			t.Fatalf("a failed call wrote out[%d] = %v", i, v)
		}
	}
	if _, err := CrossEntropy(x, x, 4); err == nil {
		t.Error("CrossEntropy of 6 elements in rows of 4: no error")
	}
	if _, err := CrossEntropy(x, x, 0); err == nil {
		t.Error("CrossEntropy with 0 columns: no error")
	}
}

// TestLossKernelsBadInput: the routing losses (balance_loss.go, z_loss.go) reject bad sizes and
// ids with an error naming the problem.
func TestLossKernelsBadInput(t *testing.T) {
	ids := []int32{0, 1, 1, 1}
	s := make([]float64, 8)
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"T split", func() error { _, err := BalanceLossForward(ids, s, 4, 1, 2, 3, 1); return err }(), "do not split into 3"},
		{"ids length", func() error { _, err := BalanceLossForward(ids[:3], s, 4, 1, 2, 1, 1); return err }(), "3 ids, want T·K = 4"},
		{"scores length", func() error { _, err := BalanceLossForward(ids, s[:7], 4, 1, 2, 1, 1); return err }(), "7 scores, want T·E = 8"},
		{"id range", func() error { _, err := BalanceLossForward([]int32{0, 2, 1, 1}, s, 4, 1, 2, 1, 1); return err }(), "ids[1,0] = 2 is out of range [-1, 2)"},
		{"id below -1", BalanceLossBackward(make([]float64, 8), []int32{0, -2, 1, 1}, 4, 1, 2, 1, 1, 1), "ids[1,0] = -2 is out of range"},
		{"grad length", BalanceLossBackward(make([]float64, 7), ids, 4, 1, 2, 1, 1, 1), "gradient of 7 elements"},
		{"E zero", BalanceLossBackward(s, ids, 4, 1, 0, 1, 1, 1), "E=0"},
		{"z length", func() error { _, err := ZLossForward(s[:7], 4, 2, 1); return err }(), "7 logits, want T·E = 8"},
		{"z T zero", func() error { _, err := ZLossForward(s, 0, 2, 1); return err }(), "T=0"},
		{"z grad length", ZLossBackward(make([]float64, 6), s, 4, 2, 1, 1), "gradient of 6 elements"},
		{"router score", func() error { _, err := RouterBalanceLossForward(ids, s, 4, 1, 2, 1, 1, 0); return err }(), "unknown score function 0 (want RouterSoftmax or RouterSigmoid)"},
		{"router logits length", func() error { _, err := RouterBalanceLossForward(ids, s[:7], 4, 1, 2, 1, 1, RouterSoftmax); return err }(), "7 logits, want T·E = 8"},
		{"router id range", func() error {
			_, err := RouterBalanceLossForward([]int32{0, 2, 1, 1}, s, 4, 1, 2, 1, 1, RouterSigmoid)
			return err
		}(), "ids[1,0] = 2 is out of range [-1, 2)"},
		{"router T split", RouterBalanceLossBackward(make([]float64, 8), ids, s, 4, 1, 2, 3, 1, 1, RouterSoftmax), "do not split into 3"},
		{"router grad length", RouterBalanceLossBackward(make([]float64, 7), ids, s, 4, 1, 2, 1, 1, 1, RouterSoftmax), "a gradient of 7"},
		{"router partial overlap", func() error {
			buf := make([]float64, 9)
			return RouterBalanceLossBackward(buf[1:], ids, buf[:8], 4, 1, 2, 1, 1, 1, RouterSoftmax)
		}(), "partly overlaps input logits"},
		{"router grad score", RouterBalanceLossBackward(make([]float64, 8), ids, s, 4, 1, 2, 1, 1, 1, 5), "unknown score function 5"},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, c.err, c.want)
		}
	}
}
