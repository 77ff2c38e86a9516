package op

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/kernels"
)

// This file holds what the op tests share: reference implementations written with plain loops
// (independent of package kernels), a gradient-check harness (float64 central differences
// against G.Grad on the tape machine and against DoDiff on the lisp machine), and small helpers.

// ---------------------------------------------------------------- reference plan

// refPlan is an independent plan builder: for each expert, its (t,k) pairs in token order; in
// capacity mode the first C of them (by position) or the C with the highest prob (ties to the
// lower token); kept pairs get consecutive rows of the expert's aligned segment.
type refPlanT struct {
	counts, offsets, rowOf, tokenOf []int32
}

func (r refPlanT) flat() []int32 {
	var out []int32
	out = append(out, r.counts...)
	out = append(out, r.offsets...)
	out = append(out, r.rowOf...)
	return append(out, r.tokenOf...)
}

func refRoundUp(n, a int) int {
	for n%a != 0 {
		n++
	}
	return n
}

func refPlan(g kernels.Geometry, ids []int32, probs []float64) refPlanT {
	T, K, E := g.T, g.K, g.E
	var R int
	if g.Mode == kernels.Capacity {
		R = E * refRoundUp(g.C, g.A)
	} else {
		R = T*K + E*(g.A-1)
	}
	p := refPlanT{
		counts:  make([]int32, E),
		offsets: make([]int32, E+1),
		rowOf:   make([]int32, T*K),
		tokenOf: make([]int32, R),
	}
	for i := range p.rowOf {
		p.rowOf[i] = -1
	}
	for i := range p.tokenOf {
		p.tokenOf[i] = -1
	}
	off := 0
	for e := 0; e < E; e++ {
		var pairs []int // flat (t,k) indices in token order
		for t := 0; t < T; t++ {
			for k := 0; k < K; k++ {
				if int(ids[t*K+k]) == e {
					pairs = append(pairs, t*K+k)
				}
			}
		}
		if g.Mode == kernels.Capacity && len(pairs) > g.C {
			if g.Drop == kernels.DropByProb {
				byProb := append([]int(nil), pairs...)
				sort.SliceStable(byProb, func(a, b int) bool { return probs[byProb[a]] > probs[byProb[b]] })
				keep := map[int]bool{}
				for _, i := range byProb[:g.C] {
					keep[i] = true
				}
				var kept []int
				for _, i := range pairs {
					if keep[i] {
						kept = append(kept, i)
					}
				}
				pairs = kept
			} else {
				pairs = pairs[:g.C]
			}
		}
		p.counts[e] = int32(len(pairs))
		p.offsets[e] = int32(off)
		for j, i := range pairs {
			p.rowOf[i] = int32(off + j)
			p.tokenOf[off+j] = int32(i / K)
		}
		if g.Mode == kernels.Capacity && g.PadToCapacity {
			off += refRoundUp(g.C, g.A)
		} else {
			off += refRoundUp(len(pairs), g.A)
		}
	}
	p.offsets[E] = int32(off)
	return p
}

// ---------------------------------------------------------------- reference ops (float64)

func refPermute(x []float64, rowOf []int32, T, K, R, H int) []float64 {
	xp := make([]float64, R*H)
	for t := 0; t < T; t++ {
		for k := 0; k < K; k++ {
			if r := rowOf[t*K+k]; r >= 0 {
				for h := 0; h < H; h++ {
					xp[int(r)*H+h] = x[t*H+h]
				}
			}
		}
	}
	return xp
}

func refPermuteBack(dxp []float64, rowOf []int32, T, K, H int) []float64 {
	dx := make([]float64, T*H)
	for t := 0; t < T; t++ {
		for k := 0; k < K; k++ {
			if r := rowOf[t*K+k]; r >= 0 {
				for h := 0; h < H; h++ {
					dx[t*H+h] += dxp[int(r)*H+h]
				}
			}
		}
	}
	return dx
}

func refPermuteProbs(probs []float64, rowOf []int32, R int) []float64 {
	pp := make([]float64, R)
	for i, r := range rowOf {
		if r >= 0 {
			pp[r] = probs[i]
		}
	}
	return pp
}

func refPermuteProbsBack(dpp []float64, rowOf []int32) []float64 {
	d := make([]float64, len(rowOf))
	for i, r := range rowOf {
		if r >= 0 {
			d[i] = dpp[r]
		}
	}
	return d
}

// refUnpermute: probs nil means unweighted.
func refUnpermute(yp, probs []float64, rowOf []int32, T, K, H int) []float64 {
	y := make([]float64, T*H)
	for t := 0; t < T; t++ {
		for k := 0; k < K; k++ {
			r := rowOf[t*K+k]
			if r < 0 {
				continue
			}
			w := 1.0
			if probs != nil {
				w = probs[t*K+k]
			}
			for h := 0; h < H; h++ {
				y[t*H+h] += w * yp[int(r)*H+h]
			}
		}
	}
	return y
}

func refUnpermuteBackRows(dy, probs []float64, rowOf []int32, T, K, R, H int) []float64 {
	dyp := make([]float64, R*H)
	for t := 0; t < T; t++ {
		for k := 0; k < K; k++ {
			r := rowOf[t*K+k]
			if r < 0 {
				continue
			}
			w := 1.0
			if probs != nil {
				w = probs[t*K+k]
			}
			for h := 0; h < H; h++ {
				dyp[int(r)*H+h] = w * dy[t*H+h]
			}
		}
	}
	return dyp
}

func refUnpermuteBackProbs(dy, yp []float64, rowOf []int32, T, K, H int) []float64 {
	d := make([]float64, T*K)
	for t := 0; t < T; t++ {
		for k := 0; k < K; k++ {
			r := rowOf[t*K+k]
			if r < 0 {
				continue
			}
			for h := 0; h < H; h++ {
				d[t*K+k] += yp[int(r)*H+h] * dy[t*H+h]
			}
		}
	}
	return d
}

// ---------------------------------------------------------------- data helpers

func newRNG(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)) }

// randFloats returns n values in [-1, 1).
func randFloats(rng *rand.Rand, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = 2*rng.Float64() - 1
	}
	return out
}

// randProbs returns T·K distinct values in (0.05, 1).
func randProbs(rng *rand.Rand, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = 0.05 + 0.9*rng.Float64() + 1e-4*float64(i)/float64(n)
	}
	return out
}

// randIDs returns ids [T,K] with distinct experts per token and, with probability pNone, -1.
func randIDs(rng *rand.Rand, T, K, E int, pNone float64) []int32 {
	ids := make([]int32, T*K)
	for t := 0; t < T; t++ {
		perm := rng.Perm(E)
		for k := 0; k < K; k++ {
			ids[t*K+k] = int32(perm[k])
			if rng.Float64() < pNone {
				ids[t*K+k] = -1
			}
		}
	}
	return ids
}

// denseOf builds a tensor of dtype dt (float32 or float64) from float64 data.
func denseOf(dt tensor.Dtype, data []float64, shape ...int) *tensor.Dense {
	if dt == tensor.Float32 {
		f := make([]float32, len(data))
		for i, v := range data {
			f[i] = float32(v)
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(f))
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), data...)))
}

func int32Dense(data []int32, shape ...int) *tensor.Dense {
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]int32(nil), data...)))
}

// toF64 flattens a float32 or float64 value (or scalar) to float64s.
func toF64(t testing.TB, v G.Value) []float64 {
	t.Helper()
	if v == nil {
		t.Fatalf("nil value")
	}
	switch d := v.Data().(type) {
	case []float64:
		return append([]float64(nil), d...)
	case []float32:
		out := make([]float64, len(d))
		for i, x := range d {
			out[i] = float64(x)
		}
		return out
	case float64:
		return []float64{d}
	case float32:
		return []float64{float64(d)}
	}
	t.Fatalf("value of type %T", v.Data())
	return nil
}

// maxRelDiff is max_i |a-b| / (1 + |b|).
func maxRelDiff(a, b []float64) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var m float64
	for i := range a {
		d := math.Abs(a[i]-b[i]) / (1 + math.Abs(b[i]))
		if d > m || math.IsNaN(d) {
			m = d
		}
	}
	return m
}

// preallocCase is an op, its inputs and the shape of its output, for UsePreallocDo tests.
type preallocCase struct {
	op  G.UsePreallocDoer
	in  []G.Value
	out []int
}

// checkPreallocDo runs c's op with Do and with UsePreallocDo into a buffer of stale data made
// by mk, and reports an error (prefixed by label) unless UsePreallocDo returns that buffer
// holding Do's bits. It returns the stale data.
func checkPreallocDo(t *testing.T, c preallocCase, label string, mk func(data []float64, shape ...int) *tensor.Dense) []float64 {
	t.Helper()
	want, err := c.op.(G.Op).Do(c.in...)
	if err != nil {
		t.Fatalf("%v: %v", c.op, err)
	}
	n := tensor.Shape(c.out).TotalSize()
	stale := make([]float64, n)
	for i := range stale {
		stale[i] = 1e3 + float64(i)
	}
	pre := mk(stale, c.out...)
	got, err := c.op.UsePreallocDo(pre, c.in...)
	if err != nil {
		t.Fatalf("%v: UsePreallocDo: %v", c.op, err)
	}
	if got != G.Value(pre) || !bitsEqual(got, want) {
		t.Errorf("%s: UsePreallocDo gave %v, Do %v", label, got, want)
	}
	return stale
}

// bitsEqual compares two values' data bitwise.
func bitsEqual(a, b G.Value) bool {
	switch x := a.Data().(type) {
	case []float32:
		y, ok := b.Data().([]float32)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if math.Float32bits(x[i]) != math.Float32bits(y[i]) {
				return false
			}
		}
		return true
	case []float64:
		y, ok := b.Data().([]float64)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if math.Float64bits(x[i]) != math.Float64bits(y[i]) {
				return false
			}
		}
		return true
	case float32:
		y, ok := b.Data().(float32)
		return ok && math.Float32bits(x) == math.Float32bits(y)
	case float64:
		y, ok := b.Data().(float64)
		return ok && math.Float64bits(x) == math.Float64bits(y)
	case []bfloat16.BFloat16:
		y, ok := b.Data().([]bfloat16.BFloat16)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	case []int32:
		y, ok := b.Data().([]int32)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	return false
}

// wantErr checks that err is not nil and mentions every fragment.
func wantErr(t *testing.T, what string, err error, frags ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want one mentioning %q", what, frags)
		return
	}
	for _, f := range frags {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("%s: error %q does not mention %q", what, err, f)
		}
	}
}

// ---------------------------------------------------------------- gradient-check harness

// gradGeom is one geometry of the gradient checks with its ids (T=5, K=2, E=3).
type gradGeom struct {
	name      string
	g         kernels.Geometry
	ids, ids2 []int32
}

// The ids overload expert 0 (four pairs) so that capacity C=2 drops, leave expert slots empty
// (-1), and give token 4 no expert at all.
var (
	gradIDs  = []int32{0, 1, 0, -1, 2, 0, 1, 0, -1, -1}
	gradIDs2 = []int32{1, 2, 2, 0, 0, -1, 2, 1, 1, 0}
)

func gradGeoms() []gradGeom {
	geo := func(name string, g kernels.Geometry) gradGeom {
		g.T, g.K, g.E = 5, 2, 3
		return gradGeom{name: name, g: g, ids: gradIDs, ids2: gradIDs2}
	}
	return []gradGeom{
		geo("dropless A=1", kernels.Geometry{A: 1}),
		geo("dropless A=4", kernels.Geometry{A: 4}),
		geo("capacity position C=2", kernels.Geometry{A: 1, Mode: kernels.Capacity, C: 2}),
		geo("capacity position C=3 A=2 pad", kernels.Geometry{A: 2, Mode: kernels.Capacity, C: 3, PadToCapacity: true}),
		geo("capacity prob C=2", kernels.Geometry{A: 1, Mode: kernels.Capacity, C: 2, Drop: kernels.DropByProb}),
		geo("capacity prob C=2 A=2 pad", kernels.Geometry{A: 2, Mode: kernels.Capacity, C: 2, Drop: kernels.DropByProb, PadToCapacity: true}),
	}
}

// gradEnv is one graph of a gradient-check case.
type gradEnv struct {
	t     testing.TB
	g     *G.ExprGraph
	dt    tensor.Dtype
	geo   gradGeom
	H     int
	in    map[string]*G.Node // the float inputs the case differentiates
	plan  *Plan
	plan2 *Plan // a second plan from other ids, built by second() when a case uses it
	mk    func(idsName string, ids []int32) (*Plan, error)
}

// second returns the second plan (built from other ids), for inputs that feed two uses of an
// op. It is built on first use: the lisp machine rejects graphs with unused nodes.
func (e *gradEnv) second() *Plan {
	if e.plan2 == nil {
		e.plan2 = must2(e.mk("ids2", e.geo.ids2))
	}
	return e.plan2
}

// inputShape is the shape of each named float input.
func inputShape(g kernels.Geometry, H int, name string) []int {
	switch name {
	case "x", "dy":
		return []int{g.T, H}
	case "yp", "dxp":
		return []int{g.Rows(), H}
	case "probs":
		return []int{g.T, g.K}
	case "dpp":
		return []int{g.Rows()}
	}
	panic("unknown input " + name)
}

// inputData is the deterministic data of each named input (probs distinct and positive).
func inputData(g kernels.Geometry, H int, name string) []float64 {
	n := 1
	for _, s := range inputShape(g, H, name) {
		n *= s
	}
	rng := newRNG(uint64(len(name)*1000 + int(name[0])))
	if name == "probs" {
		return randProbs(rng, n)
	}
	return randFloats(rng, n)
}

// weight returns a named constant input with deterministic, non-trivial data.
func (e *gradEnv) weight(name string, shape ...int) *G.Node {
	n := 1
	for _, s := range shape {
		n *= s
	}
	rng := newRNG(uint64(len(name)) + 77)
	data := make([]float64, n)
	for i := range data {
		data[i] = 0.5 + rng.Float64() + float64(i%3)
	}
	return G.NewTensor(e.g, e.dt, len(shape), G.WithShape(shape...), G.WithName(name), G.WithValue(denseOf(e.dt, data, shape...)))
}

// weighted returns sum(W ⊙ y²) for a fresh weight W named name.
func (e *gradEnv) weighted(name string, y *G.Node) (*G.Node, error) {
	w := e.weight(name, y.Shape()...)
	sq, err := G.Square(y)
	if err != nil {
		return nil, err
	}
	prod, err := G.HadamardProd(w, sq)
	if err != nil {
		return nil, err
	}
	return G.Sum(prod)
}

// gradCase builds a scalar cost from some float inputs of a gradEnv.
type gradCase struct {
	name   string
	inputs []string
	build  func(e *gradEnv) (*G.Node, error)
}

// newGradEnv builds the inputs (values from data, possibly perturbed), the two plans and the
// case's cost.
func newGradEnv(t testing.TB, c gradCase, geo gradGeom, H int, dt tensor.Dtype, data map[string][]float64) (*gradEnv, *G.Node, error) {
	e := &gradEnv{t: t, g: G.NewGraph(), dt: dt, geo: geo, H: H, in: map[string]*G.Node{}}
	for _, name := range c.inputs {
		shape := inputShape(geo.g, H, name)
		e.in[name] = G.NewTensor(e.g, dt, len(shape), G.WithShape(shape...), G.WithName(name), G.WithValue(denseOf(dt, data[name], shape...)))
	}
	tk := []int{geo.g.T, geo.g.K}
	mkPlan := func(idsName string, ids []int32) (*Plan, error) {
		idn := G.NewMatrix(e.g, tensor.Int32, G.WithShape(tk...), G.WithName(idsName), G.WithValue(int32Dense(ids, tk...)))
		if geo.g.Mode != kernels.Capacity || geo.g.Drop != kernels.DropByProb {
			return NewPlan(idn, nil, geo.g)
		}
		probs := e.in["probs"] // the plan may share the probs the case differentiates
		if probs == nil {
			probs = G.NewMatrix(e.g, dt, G.WithShape(tk...), G.WithName("rprobs"+idsName), G.WithValue(denseOf(dt, inputData(geo.g, H, "probs"), tk...)))
		}
		return NewPlan(idn, probs, geo.g)
	}
	var err error
	if e.plan, err = mkPlan("ids", geo.ids); err != nil {
		return nil, nil, err
	}
	e.mk = mkPlan
	cost, err := c.build(e)
	return e, cost, err
}

func (e *gradEnv) wrts(c gradCase) G.Nodes {
	out := make(G.Nodes, len(c.inputs))
	for i, name := range c.inputs {
		out[i] = e.in[name]
	}
	return out
}

// evalCost runs the case's cost forward on a tape machine.
func evalCost(t testing.TB, c gradCase, geo gradGeom, H int, data map[string][]float64) float64 {
	t.Helper()
	_, cost, err := newGradEnv(t, c, geo, H, tensor.Float64, data)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	m := G.NewTapeMachine(cost.Graph())
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatalf("forward: %v", err)
	}
	return toF64(t, cost.Value())[0]
}

// numericGrads is the float64 central difference of the cost wrt every input of the case.
func numericGrads(t testing.TB, c gradCase, geo gradGeom, H int, data map[string][]float64) map[string][]float64 {
	t.Helper()
	const eps = 1e-6
	out := map[string][]float64{}
	for _, name := range c.inputs {
		base := data[name]
		grad := make([]float64, len(base))
		for i := range base {
			pert := func(d float64) float64 {
				moved := map[string][]float64{}
				for k, v := range data {
					moved[k] = v
				}
				p := append([]float64(nil), base...)
				p[i] += d
				moved[name] = p
				return evalCost(t, c, geo, H, moved)
			}
			grad[i] = (pert(eps) - pert(-eps)) / (2 * eps)
		}
		out[name] = grad
	}
	return out
}

// tapeGrads differentiates symbolically (G.Grad + tape machine with BindDualValues) and
// returns the gradient nodes' values and the dual values x.Grad(), which must be identical.
func tapeGrads(t testing.TB, c gradCase, geo gradGeom, H int, dt tensor.Dtype, data map[string][]float64) (viaNode, viaDual map[string][]float64) {
	t.Helper()
	e, cost, err := newGradEnv(t, c, geo, H, dt, data)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	wrts := e.wrts(c)
	grads, err := G.Grad(cost, wrts...)
	if err != nil {
		t.Fatalf("G.Grad: %v", err)
	}
	m := G.NewTapeMachine(e.g, G.BindDualValues(wrts...))
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatalf("tape run: %v", err)
	}
	viaNode, viaDual = map[string][]float64{}, map[string][]float64{}
	for i, name := range c.inputs {
		viaNode[name] = toF64(t, grads[i].Value())
		d, err := wrts[i].Grad()
		if err != nil {
			t.Fatalf("%s.Grad(): %v", name, err)
		}
		viaDual[name] = toF64(t, d)
	}
	return viaNode, viaDual
}

// lispGrads differentiates with dual values (DoDiff) on a lisp machine.
func lispGrads(t testing.TB, c gradCase, geo gradGeom, H int, dt tensor.Dtype, data map[string][]float64) map[string][]float64 {
	t.Helper()
	e, _, err := newGradEnv(t, c, geo, H, dt, data)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	m := G.NewLispMachine(e.g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatalf("lisp run: %v", err)
	}
	out := map[string][]float64{}
	for _, name := range c.inputs {
		d, err := e.in[name].Grad()
		if err != nil {
			t.Fatalf("%s.Grad(): %v", name, err)
		}
		out[name] = toF64(t, d)
	}
	return out
}

// checkGradCases runs every case on every geometry: float64 central differences against the
// symbolic gradients (tape) and the dual-value gradients (lisp), in float64 and float32.
func checkGradCases(t *testing.T, cases []gradCase) {
	const H = 3
	for _, geo := range gradGeoms() {
		for _, c := range cases {
			t.Run(geo.name+"/"+c.name, func(t *testing.T) {
				data := map[string][]float64{}
				for _, name := range c.inputs {
					data[name] = inputData(geo.g, H, name)
				}
				num := numericGrads(t, c, geo, H, data)
				nonzero := false
				for _, name := range c.inputs {
					for _, v := range num[name] {
						nonzero = nonzero || v != 0
					}
				}
				if !nonzero {
					t.Fatalf("numeric gradient is all zero: the case tests nothing")
				}
				for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
					tol := 1e-6
					if dt == tensor.Float32 {
						tol = 1e-4
					}
					node, dual := tapeGrads(t, c, geo, H, dt, data)
					lisp := lispGrads(t, c, geo, H, dt, data)
					for _, name := range c.inputs {
						if d := maxRelDiff(node[name], num[name]); d > tol {
							t.Errorf("%v d/d%s: tape %v vs numeric %v (rel diff %g)", dt, name, node[name], num[name], d)
						}
						if d := maxRelDiff(dual[name], node[name]); d != 0 {
							t.Errorf("%v d/d%s: %s.Grad() %v differs from the grad node %v", dt, name, name, dual[name], node[name])
						}
						if d := maxRelDiff(lisp[name], num[name]); d > tol {
							t.Errorf("%v d/d%s: lisp %v vs numeric %v (rel diff %g)", dt, name, lisp[name], num[name], d)
						}
					}
				}
			})
		}
	}
}

// costOf is a shorthand for building sums of weighted squares in cases.
func costOf(e *gradEnv, terms ...*G.Node) (*G.Node, error) {
	out := terms[0]
	for _, t := range terms[1:] {
		var err error
		if out, err = G.Add(out, t); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// must2 unwraps node results in case builders (errors end the build, not the test binary).
type buildErr struct{ err error }

func must(n *G.Node, err error) *G.Node {
	if err != nil {
		panic(buildErr{err})
	}
	return n
}

func must2(p *Plan, err error) *Plan {
	if err != nil {
		panic(buildErr{err})
	}
	return p
}

// caseFn turns a builder that uses must into one that returns errors.
func caseFn(f func(e *gradEnv) *G.Node) func(e *gradEnv) (*G.Node, error) {
	return func(e *gradEnv) (n *G.Node, err error) {
		defer func() {
			if r := recover(); r != nil {
				be, ok := r.(buildErr)
				if !ok {
					panic(r)
				}
				err = be.err
			}
		}()
		return f(e), nil
	}
}

func TestRefPlanHandTable(t *testing.T) {
	// The reference plan itself, on a case small enough to check by hand: T=5, K=2, E=3,
	// capacity C=2 by position, A=1: expert 0 gets pairs (0,0),(1,0),(2,1),(3,1) and keeps
	// the first two; expert 1 gets (0,1),(3,0); expert 2 gets (2,0).
	g := kernels.Geometry{T: 5, K: 2, E: 3, A: 1, Mode: kernels.Capacity, C: 2}
	p := refPlan(g, gradIDs, nil)
	want := refPlanT{
		counts:  []int32{2, 2, 1},
		offsets: []int32{0, 2, 4, 5},
		rowOf:   []int32{0, 2, 1, -1, 4, -1, 3, -1, -1, -1},
		tokenOf: []int32{0, 1, 0, 3, 2, -1},
	}
	if fmt.Sprint(p) != fmt.Sprint(want) {
		t.Fatalf("refPlan = %v, want %v", p, want)
	}
}

// fakeDevice is a device backend for tests: it "owns" the tensors it was told about or made,
// and runs the host kernels on them, so that the dispatch in every op's Do can be tested
// without a GPU.
type fakeDevice struct {
	owned map[*tensor.Dense]bool
	calls map[string]int
}

func newFakeDevice() *fakeDevice {
	return &fakeDevice{owned: map[*tensor.Dense]bool{}, calls: map[string]int{}}
}

func (f *fakeDevice) Owns(v G.Value) bool {
	d, ok := v.(*tensor.Dense)
	return ok && f.owned[d]
}

func (f *fakeDevice) own(v G.Value) {
	if d, ok := v.(*tensor.Dense); ok {
		f.owned[d] = true
	}
}

// host runs fn with no device registered and marks its results as device values.
func (f *fakeDevice) host(name string, fn func() (G.Value, G.Value, error)) (G.Value, G.Value, error) {
	f.calls[name]++
	saved := device
	device = nil
	defer func() { device = saved }()
	a, b, err := fn()
	if err != nil {
		return nil, nil, err
	}
	f.own(a)
	f.own(b)
	return a, b, nil
}

func (f *fakeDevice) one(name string, fn func() (G.Value, error)) (G.Value, error) {
	v, _, err := f.host(name, func() (G.Value, G.Value, error) { v, err := fn(); return v, nil, err })
	return v, err
}

func (f *fakeDevice) BuildPlan(g kernels.Geometry, ids, probs G.Value) (G.Value, error) {
	return f.one("BuildPlan", func() (G.Value, error) {
		if probs == nil {
			return planOp{g: g}.Do(ids)
		}
		return planOp{g: g, withProbs: true}.Do(ids, probs)
	})
}

func (f *fakeDevice) PermuteForward(g kernels.Geometry, x, plan G.Value) (G.Value, error) {
	return f.one("PermuteForward", func() (G.Value, error) { return permuteForward(g, x, plan, nil) })
}

func (f *fakeDevice) PermuteBackward(g kernels.Geometry, dxp, plan G.Value) (G.Value, error) {
	return f.one("PermuteBackward", func() (G.Value, error) { return permuteBackward(g, dxp, plan, nil) })
}

func (f *fakeDevice) PermuteProbsForward(g kernels.Geometry, probs, plan G.Value) (G.Value, error) {
	return f.one("PermuteProbsForward", func() (G.Value, error) { return permuteProbsForward(g, probs, plan, nil) })
}

func (f *fakeDevice) PermuteProbsBackward(g kernels.Geometry, dpp, plan G.Value) (G.Value, error) {
	return f.one("PermuteProbsBackward", func() (G.Value, error) { return permuteProbsBackward(g, dpp, plan, nil) })
}

func (f *fakeDevice) UnpermuteForward(g kernels.Geometry, yp, probs, plan G.Value) (G.Value, error) {
	return f.one("UnpermuteForward", func() (G.Value, error) { return unpermuteForward(g, yp, probs, plan, nil) })
}

func (f *fakeDevice) UnpermuteBackward(g kernels.Geometry, dy, yp, probs, plan G.Value, wantRows, wantProbs bool) (G.Value, G.Value, error) {
	return f.host("UnpermuteBackward", func() (G.Value, G.Value, error) {
		return unpermuteBackward("fake", g, dy, yp, probs, plan, wantRows, wantProbs, nil, nil)
	})
}

// TestDeviceDispatch runs every op with all inputs on a (fake) device, checks that each went
// to the device method and gave the host result, and that a mix of host and device inputs is
// an error.
func TestDeviceDispatch(t *testing.T) {
	const H = 4
	g := kernels.Geometry{E: 3, A: 2, Mode: kernels.Capacity, C: 2, Drop: kernels.DropByProb}
	build := func() (*G.ExprGraph, []*G.Node, []*G.Node) {
		gr := G.NewGraph()
		rng := newRNG(9)
		dt := tensor.Float32
		ids := idsNode(gr, "ids", 4, 2, okIDs)
		probs := G.NewMatrix(gr, dt, G.WithShape(4, 2), G.WithName("probs"), G.WithValue(denseOf(dt, randProbs(rng, 8), 4, 2)))
		x := G.NewMatrix(gr, dt, G.WithShape(4, H), G.WithName("x"), G.WithValue(denseOf(dt, randFloats(rng, 4*H), 4, H)))
		p := must2(NewPlan(ids, probs, g))
		R := p.Rows()
		dxp := G.NewMatrix(gr, dt, G.WithShape(R, H), G.WithName("dxp"), G.WithValue(denseOf(dt, randFloats(rng, R*H), R, H)))
		dpp := G.NewVector(gr, dt, G.WithShape(R), G.WithName("dpp"), G.WithValue(denseOf(dt, randFloats(rng, R), R)))
		dy := G.NewMatrix(gr, dt, G.WithShape(4, H), G.WithName("dy"), G.WithValue(denseOf(dt, randFloats(rng, 4*H), 4, H)))
		xp := must(Permute(x, p))
		outs := []*G.Node{
			p.Node, xp,
			must(Unpermute(xp, probs, p)),
			must(Unpermute(xp, nil, p)),
			must(PermuteProbs(probs, p)),
			must(applyOp(permuteGradName, permuteGradOp{p.Geometry}, dxp, p.Node)),
			must(applyOp(permuteProbsGradName, permuteProbsGradOp{p.Geometry}, dpp, p.Node)),
			must(applyOp(unpermuteGradRowsName, unpermuteGradRowsOp{p.Geometry, true}, dy, probs, p.Node)),
			must(applyOp(unpermuteGradProbsName, unpermuteGradProbsOp{p.Geometry, dt}, dy, xp, p.Node)),
		}
		return gr, []*G.Node{ids, probs, x, dxp, dpp, dy}, outs
	}
	gr, _, outs := build()
	want := runRead(t, gr, outs...)

	f := newFakeDevice()
	saved := device
	device = f
	defer func() { device = saved }()
	gr, ins, outs := build()
	for _, n := range ins {
		f.own(n.Value())
	}
	got := runRead(t, gr, outs...)
	for i := range want {
		if !bitsEqual(got[i], want[i]) {
			t.Errorf("output %d (%v): device %v, host %v", i, outs[i], got[i], want[i])
		}
	}
	for _, name := range []string{"BuildPlan", "PermuteForward", "PermuteBackward", "PermuteProbsForward", "PermuteProbsBackward", "UnpermuteForward", "UnpermuteBackward"} {
		if f.calls[name] == 0 {
			t.Errorf("device method %s was never called (calls %v)", name, f.calls)
		}
	}

	// x on the device, everything else on the host.
	gr, ins, outs = build()
	f.own(ins[2].Value())
	m := G.NewTapeMachine(gr)
	defer m.Close()
	wantErr(t, "mixed inputs", m.RunAll(), "op.Permute", "inputs mix device values (1) and host values (1)")
}
