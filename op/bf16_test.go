package op

import (
	"fmt"
	"math"
	"testing"
	"unsafe"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/kernels"
)

// bfloat16 data with float32 probs on the CPU. The references below are plain loops over the
// widened bfloat16 inputs in float32 (float64 for the dot products of dprobs), in the order of
// the rounding contract of package kernels, rounded to bfloat16 once at the end; the ops must
// match them bit for bit.

// bf16Of rounds float64 data to a bfloat16 tensor (through float32).
func bf16Of(data []float64, shape ...int) *tensor.Dense {
	b := make([]bfloat16.BFloat16, len(data))
	for i, v := range data {
		b[i] = bfloat16.FromFloat32(float32(v))
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(b))
}

// bf16Widen returns the float32 values of a bfloat16 value.
func bf16Widen(t testing.TB, v G.Value) []float32 {
	t.Helper()
	b, ok := v.Data().([]bfloat16.BFloat16)
	if !ok {
		t.Fatalf("value holds %T, want []bfloat16.BFloat16", v.Data())
	}
	f := make([]float32, len(b))
	for i, x := range b {
		f[i] = math.Float32frombits(uint32(x) << 16) // independent of BFloat16.Float32
	}
	return f
}

// f32Data returns the data of a float32 value.
func f32Data(t testing.TB, v G.Value) []float32 {
	t.Helper()
	f, ok := v.Data().([]float32)
	if !ok {
		t.Fatalf("value holds %T, want []float32", v.Data())
	}
	return f
}

// roundRef rounds float32 to bfloat16 bits, ties to even, written here independently of
// package bfloat16 (finite values only, which is all the tests make).
func roundRef(f float32) uint16 {
	b := math.Float32bits(f)
	lo := b & 0xffff
	hi := b >> 16
	if lo > 0x8000 || (lo == 0x8000 && hi&1 == 1) {
		hi++
	}
	return uint16(hi)
}

// wantBF16 checks a bfloat16 value against float32 reference values rounded once.
func wantBF16(t *testing.T, what string, got G.Value, ref []float32) {
	t.Helper()
	b, ok := got.Data().([]bfloat16.BFloat16)
	if !ok || len(b) != len(ref) {
		t.Fatalf("%s: got %T of %d elements, want %d bfloat16", what, got.Data(), len(b), len(ref))
	}
	for i := range ref {
		if uint16(b[i]) != roundRef(ref[i]) {
			t.Fatalf("%s[%d] = %#04x, want %#04x (float32 reference %g)", what, i, uint16(b[i]), roundRef(ref[i]), ref[i])
		}
	}
}

// TestBF16Ops runs plan, permute and weighted unpermute on bfloat16 data with float32 probs,
// forward and backward (G.Backpropagate on the tape machine), and compares every output and
// gradient bitwise with the references.
func TestBF16Ops(t *testing.T) {
	for i, fg := range fwdGeoms() {
		for _, H := range []int{8, 5} {
			t.Run(fmt.Sprintf("%s/H=%d", fg.name, H), func(t *testing.T) {
				g := fg.g
				R := g.Rows()
				d := makeFwdData(fg, uint64(i))
				rng := newRNG(uint64(200 + i))
				bf := bfloat16.Dtype
				gr := G.NewGraph()
				p, probs := buildPlan(t, gr, tensor.Float32, g, d)
				x := G.NewMatrix(gr, bf, G.WithShape(g.T, H), G.WithName("x"), G.WithValue(bf16Of(randFloats(rng, g.T*H), g.T, H)))
				yp := G.NewMatrix(gr, bf, G.WithShape(R, H), G.WithName("yp"), G.WithValue(bf16Of(randFloats(rng, R*H), R, H)))
				dxp := G.NewMatrix(gr, bf, G.WithShape(R, H), G.WithName("dxp"), G.WithValue(bf16Of(randFloats(rng, R*H), R, H)))
				dy := G.NewMatrix(gr, bf, G.WithShape(g.T, H), G.WithName("dy"), G.WithValue(bf16Of(randFloats(rng, g.T*H), g.T, H)))
				xp := must(Permute(x, p))
				y := must(Unpermute(yp, probs, p))
				if xp.Dtype() != bf || y.Dtype() != bf {
					t.Fatalf("output dtypes %v %v, want bfloat16", xp.Dtype(), y.Dtype())
				}
				grads, err := G.Backpropagate(G.Nodes{xp, y}, G.Nodes{dxp, dy}, G.Nodes{x, yp, probs})
				if err != nil {
					t.Fatal(err)
				}
				vals := runRead(t, gr, p.Node, xp, y, grads[0], grads[1], grads[2])
				rowOf := refPlan(g, d.ids, d.probs).RowOf
				if got := vals[0].Data().([]int32)[2*g.E+1 : 2*g.E+1+g.T*g.K]; fmt.Sprint(got) != fmt.Sprint(rowOf) {
					t.Fatalf("plan rowOf %v, want %v", got, rowOf)
				}
				xs, yps, dxps, dys := bf16Widen(t, x.Value()), bf16Widen(t, yp.Value()), bf16Widen(t, dxp.Value()), bf16Widen(t, dy.Value())
				pr := f32Data(t, probs.Value())

				// xp[rowOf[t,k]] = x[t], other rows 0.
				refXp := make([]float32, R*H)
				// dx[t] = Σ_k dxp[rowOf[t,k]] in float32, k order.
				refDx := make([]float32, g.T*H)
				// y[t] = Σ_k float32(p·yp[row]) in float32, k order.
				refY := make([]float32, g.T*H)
				// dyp[row] = float32(p·dy[t]), other rows 0.
				refDyp := make([]float32, R*H)
				// dprobs[t,k]: H <= 8 is one pack of kernels.DotBF16's order, the float32 tree
				// ((p0+p1)+(p2+p3))+((p4+p5)+(p6+p7)) of the exact products p_h =
				// yp[row,h]·dy[t,h] (+0 past H); 0 if dropped.
				if H > 8 {
					t.Fatalf("the dprobs reference covers H <= 8, not %d", H)
				}
				refDpr := make([]float32, g.T*g.K)
				for tk := 0; tk < g.T; tk++ {
					for k := 0; k < g.K; k++ {
						r := int(rowOf[tk*g.K+k])
						if r < 0 {
							continue
						}
						w := pr[tk*g.K+k]
						var pp [8]float32
						for h := 0; h < H; h++ {
							refXp[r*H+h] = xs[tk*H+h]
							refDx[tk*H+h] += dxps[r*H+h]
							refY[tk*H+h] += w * yps[r*H+h]
							refDyp[r*H+h] = w * dys[tk*H+h]
							pp[h] = yps[r*H+h] * dys[tk*H+h]
						}
						refDpr[tk*g.K+k] = ((pp[0] + pp[1]) + (pp[2] + pp[3])) + ((pp[4] + pp[5]) + (pp[6] + pp[7]))
					}
				}
				wantBF16(t, "xp", vals[1], refXp)
				wantBF16(t, "y", vals[2], refY)
				wantBF16(t, "dx", vals[3], refDx)
				wantBF16(t, "dyp", vals[4], refDyp)
				got := f32Data(t, vals[5])
				for j := range refDpr {
					if math.Float32bits(got[j]) != math.Float32bits(refDpr[j]) {
						t.Fatalf("dprobs[%d] = %g, want %g", j, got[j], refDpr[j])
					}
				}
			})
		}
	}
}

// TestBF16Identity checks that unpermute(permute(x)) with every prob 1/K gives back x bit for
// bit in bfloat16 (x/K and its partial sums are exact in float32).
func TestBF16Identity(t *testing.T) {
	const T, H = 40, 6
	for _, K := range []int{1, 2, 4} {
		for _, g := range []kernels.Geometry{{E: 6, A: 1}, {E: 6, A: 4}} {
			rng := newRNG(uint64(K))
			ids := randIDs(rng, T, K, g.E, 0)
			probs := make([]float64, T*K)
			for j := range probs {
				probs[j] = 1 / float64(K)
			}
			gr := G.NewGraph()
			p := must2(NewPlan(idsNode(gr, "ids", T, K, ids), nil, g))
			xn := G.NewMatrix(gr, bfloat16.Dtype, G.WithShape(T, H), G.WithName("x"), G.WithValue(bf16Of(randFloats(rng, T*H), T, H)))
			pn := G.NewMatrix(gr, tensor.Float32, G.WithShape(T, K), G.WithName("probs"), G.WithValue(denseOf(tensor.Float32, probs, T, K)))
			y := must(Unpermute(must(Permute(xn, p)), pn, p))
			if got := runRead(t, gr, y)[0]; !bitsEqual(got, xn.Value()) {
				t.Errorf("K=%d %v: unpermute(permute(x), 1/K) = %v, want x = %v", K, g, got, xn.Value())
			}
		}
	}
}

// TestBF16Dtypes checks the dtype rules: bfloat16 data takes float32 probs only, and float32
// or float64 data still takes probs of its own dtype.
func TestBF16Dtypes(t *testing.T) {
	g := kernels.Geometry{E: 3, A: 1}
	bf := bfloat16.Dtype
	plan := func(gr *G.ExprGraph) *Plan { return must2(NewPlan(idsNode(gr, "ids", 4, 2, okIDs), nil, g)) }
	bfNode := func(gr *G.ExprGraph, name string, r, c int) *G.Node {
		return G.NewMatrix(gr, bf, G.WithShape(r, c), G.WithName(name), G.WithValue(bf16Of(make([]float64, r*c), r, c)))
	}
	runBadCases(t, []badCase{
		{"bf16 rows, float64 probs", func(gr *G.ExprGraph) (*G.Node, error) {
			p := plan(gr)
			return Unpermute(bfNode(gr, "yp", p.Rows(), 3), floatNode(gr, tensor.Float64, "probs", 4, 2), p)
		}, false, []string{"probs have dtype float64", "bfloat16 data takes float32 probs"}},
		{"bf16 rows, bf16 probs", func(gr *G.ExprGraph) (*G.Node, error) {
			p := plan(gr)
			return Unpermute(bfNode(gr, "yp", p.Rows(), 3), bfNode(gr, "probs", 4, 2), p)
		}, false, []string{"probs have dtype BFloat16", "bfloat16 data takes float32 probs"}},
		{"float64 rows, float32 probs", func(gr *G.ExprGraph) (*G.Node, error) {
			p := plan(gr)
			return Unpermute(floatNode(gr, tensor.Float64, "yp", p.Rows(), 3), floatNode(gr, tensor.Float32, "probs", 4, 2), p)
		}, false, []string{"probs have dtype float32 but the data has dtype float64"}},
		{"x int32", func(gr *G.ExprGraph) (*G.Node, error) {
			return Permute(idsNode(gr, "x", 4, 2, okIDs), plan(gr))
		}, false, []string{"x has dtype int32", "want float32 or float64 or bfloat16"}},
	})
	// Do with a bfloat16 dy and a float64 probs value.
	gg := kernels.Geometry{T: 4, K: 2, E: 3, A: 1}
	planV := int32Dense(refPlan(gg, okIDs, nil).Flat(), gg.PlanLen())
	dyV := bf16Of(make([]float64, 12), 4, 3)
	_, err := (unpermuteGradRowsOp{g: gg, weighted: true}).Do(dyV, denseOf(tensor.Float64, make([]float64, 8), 4, 2), planV)
	wantErr(t, "bf16 dy with float64 probs", err, "bfloat16 data takes float32 probs")
}

// TestBF16Prealloc checks UsePreallocDo with bfloat16 outputs: into a buffer of stale data it
// gives Do's bits, and a float32 buffer is an error.
func TestBF16Prealloc(t *testing.T) {
	const H = 3
	g := kernels.Geometry{T: 4, K: 2, E: 3, A: 2, Mode: kernels.Capacity, C: 3, PadToCapacity: true}
	R := g.Rows()
	planV := int32Dense(refPlan(g, okIDs, nil).Flat(), g.PlanLen())
	rng := newRNG(4)
	x := bf16Of(randFloats(rng, 4*H), 4, H)
	rows := bf16Of(randFloats(rng, R*H), R, H)
	probs := denseOf(tensor.Float32, randProbs(rng, 8), 4, 2)
	cases := []preallocCase{
		{permuteOp{g: g}, []G.Value{x, planV}, []int{R, H}},
		{permuteGradOp{g: g}, []G.Value{rows, planV}, []int{4, H}},
		{unpermuteOp{g: g, weighted: true}, []G.Value{rows, probs, planV}, []int{4, H}},
		{unpermuteOp{g: g, weighted: false}, []G.Value{rows, planV}, []int{4, H}},
		{unpermuteGradRowsOp{g: g, weighted: true}, []G.Value{x, probs, planV}, []int{R, H}},
	}
	for _, c := range cases {
		stale := checkPreallocDo(t, c, fmt.Sprint(c.op), bf16Of)
		_, err := c.op.UsePreallocDo(denseOf(tensor.Float32, stale, c.out...), c.in...)
		wantErr(t, fmt.Sprint(c.op), err, "preallocated output has dtype float32, want bfloat16")
		// A prealloc that shares memory with the bfloat16 input is refused, the input
		// unchanged (the float32 kernel runs on a widened copy, so it cannot see the overlap;
		// the rounding wrote the output over the input).
		in0 := c.in[0].(*tensor.Dense)
		n, m := tensor.Shape(c.out).TotalSize(), in0.Shape().TotalSize()
		shared := append(append([]bfloat16.BFloat16(nil), in0.Data().([]bfloat16.BFloat16)...), make([]bfloat16.BFloat16, max(0, n-m))...)
		in := append([]G.Value{tensor.New(tensor.Of(bfloat16.Dtype), tensor.WithShape(in0.Shape()...), tensor.WithBacking(shared[:m]))}, c.in[1:]...)
		pre := tensor.New(tensor.Of(bfloat16.Dtype), tensor.WithShape(c.out...), tensor.WithBacking(shared[:n]))
		before := in[0].(*tensor.Dense).Clone().(*tensor.Dense)
		_, err = c.op.UsePreallocDo(pre, in...)
		wantErr(t, fmt.Sprint(c.op)+" aliased", err, "overlaps input")
		if !bitsEqual(in[0], before) {
			t.Errorf("%v: a refused prealloc changed the input it shares memory with", c.op)
		}
	}
	// dprobs stays float32 for bfloat16 data.
	dprobs, err := (unpermuteGradProbsOp{g: g, pdt: tensor.Float32}).Do(x, rows, planV)
	if err != nil || dprobs.Dtype() != tensor.Float32 {
		t.Errorf("bfloat16 backward to probs: %v %v, want float32", dprobs, err)
	}
	// A float32 dprobs sharing memory with the bfloat16 dy is refused too, dy unchanged (the
	// kernel saw a widened copy of dy: the float32 path's check could not fire).
	back := make([]bfloat16.BFloat16, 16) // 32 bytes: dy's 24, and room for dprobs' 8 float32
	copy(back, x.Data().([]bfloat16.BFloat16))
	dy := tensor.New(tensor.Of(bfloat16.Dtype), tensor.WithShape(4, H), tensor.WithBacking(back[:4*H]))
	pre := tensor.New(tensor.WithShape(4, 2), tensor.WithBacking(unsafe.Slice((*float32)(unsafe.Pointer(&back[0])), 8)))
	before := dy.Clone().(*tensor.Dense)
	_, err = (unpermuteGradProbsOp{g: g, pdt: tensor.Float32}).UsePreallocDo(pre, dy, rows, planV)
	wantErr(t, "dprobs over dy", err, "output dprobs overlaps input dy in memory")
	if !bitsEqual(dy, before) {
		t.Error("a refused dprobs changed the bfloat16 dy it shares memory with")
	}
	// A nil *tensor.Dense as the preallocated output is an error (it panicked).
	for _, c := range cases {
		if _, err := c.op.UsePreallocDo((*tensor.Dense)(nil), c.in...); err == nil {
			t.Errorf("%v: a nil preallocated output: no error", c.op)
		}
	}
	// A device prealloc for host inputs is refused, untouched (the rounding wrote it from the
	// host).
	for _, c := range cases {
		n := tensor.Shape(c.out).TotalSize()
		stale := make([]float64, n)
		for i := range stale {
			stale[i] = float64(i + 1)
		}
		pre := bf16Of(stale, c.out...)
		before := pre.Clone().(*tensor.Dense)
		newFakeDevice().own(pre)
		_, err := c.op.UsePreallocDo(pre, c.in...)
		wantErr(t, fmt.Sprint(c.op)+" device prealloc", err, "preallocated output is a device value")
		if !bitsEqual(pre, before) {
			t.Errorf("%v: a refused device prealloc was written", c.op)
		}
	}
}

// TestBF16Accumulate checks that DoDiff's gradient accumulation adds bfloat16 gradients in
// float32 and rounds once, and rejects a float32 update into a bfloat16 gradient.
func TestBF16Accumulate(t *testing.T) {
	a := []float64{1, 0.1, -3.5, 256}
	b := []float64{1.0 / 512, 0.2, 3.5, 1.5}
	dst, src := bf16Of(a, 4), bf16Of(b, 4)
	av, bv := bf16Widen(t, dst), bf16Widen(t, src)
	if err := accumulate("test", gradUpdate{"x", dst, src}); err != nil {
		t.Fatal(err)
	}
	ref := make([]float32, 4)
	for i := range ref {
		ref[i] = av[i] + bv[i]
	}
	wantBF16(t, "x grad", dst, ref)
	err := accumulate("test", gradUpdate{"x", dst, denseOf(tensor.Float32, b, 4)})
	wantErr(t, "mixed dtypes", err, "gradient of x has dtype BFloat16", "the update has float32")
}
