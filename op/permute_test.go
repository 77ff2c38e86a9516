package op

import (
	"fmt"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// fwdGeoms are the geometries of the forward-value tests, with random ids: edge cases (T=1,
// E=1, K=E, every token on one expert) and both modes with drops under both policies.
type fwdGeom struct {
	name  string
	g     kernels.Geometry
	pNone float64 // chance of an id of -1
	one   bool    // every token picks expert 0 in slot 0
}

func fwdGeoms() []fwdGeom {
	return []fwdGeom{
		{"dropless", kernels.Geometry{T: 37, K: 3, E: 6, A: 1}, 0.1, false},
		{"dropless A=4", kernels.Geometry{T: 37, K: 3, E: 6, A: 4}, 0.1, false},
		{"dropless T=1", kernels.Geometry{T: 1, K: 2, E: 4, A: 2}, 0, false},
		{"dropless E=1", kernels.Geometry{T: 9, K: 1, E: 1, A: 1}, 0.2, false},
		{"dropless K=E", kernels.Geometry{T: 11, K: 4, E: 4, A: 3}, 0, false},
		{"dropless one expert", kernels.Geometry{T: 20, K: 2, E: 5, A: 1}, 0, true},
		{"capacity position", kernels.Geometry{T: 37, K: 3, E: 6, A: 1, Mode: kernels.Capacity, C: 12}, 0.1, false},
		{"capacity position pad A=4", kernels.Geometry{T: 37, K: 3, E: 6, A: 4, Mode: kernels.Capacity, C: 13, PadToCapacity: true}, 0.1, false},
		{"capacity prob", kernels.Geometry{T: 37, K: 3, E: 6, A: 1, Mode: kernels.Capacity, C: 12, Drop: kernels.DropByProb}, 0.1, false},
		{"capacity prob pad A=2", kernels.Geometry{T: 37, K: 3, E: 6, A: 2, Mode: kernels.Capacity, C: 9, Drop: kernels.DropByProb, PadToCapacity: true}, 0, false},
		{"capacity one expert", kernels.Geometry{T: 20, K: 2, E: 5, A: 1, Mode: kernels.Capacity, C: 3, Drop: kernels.DropByProb}, 0, true},
	}
}

// fwdData is the random input of a forward-value test.
type fwdData struct {
	ids   []int32
	probs []float64
}

func makeFwdData(fg fwdGeom, seed uint64) fwdData {
	rng := newRNG(seed)
	g := fg.g
	ids := randIDs(rng, g.T, g.K, g.E, fg.pNone)
	if fg.one {
		for t := 0; t < g.T; t++ {
			for k := 0; k < g.K; k++ {
				if ids[t*g.K+k] == 0 {
					ids[t*g.K+k] = ids[t*g.K]
				}
			}
			ids[t*g.K] = 0
		}
	}
	return fwdData{ids: ids, probs: randProbs(rng, g.T*g.K)}
}

// buildPlan adds ids (and probs) inputs and the plan to a graph.
func buildPlan(t testing.TB, gr *G.ExprGraph, dt tensor.Dtype, g kernels.Geometry, d fwdData) (*Plan, *G.Node) {
	t.Helper()
	ids := G.NewMatrix(gr, tensor.Int32, G.WithShape(g.T, g.K), G.WithName("ids"), G.WithValue(int32Dense(d.ids, g.T, g.K)))
	probs := G.NewMatrix(gr, dt, G.WithShape(g.T, g.K), G.WithName("probs"), G.WithValue(denseOf(dt, d.probs, g.T, g.K)))
	g.T, g.K = 0, 0 // NewPlan takes them from ids
	p, err := NewPlan(ids, probs, g)
	if err != nil {
		t.Fatalf("NewPlan: %v", err)
	}
	return p, probs
}

// runRead runs a graph on a tape machine and returns copies of the nodes' values.
func runRead(t testing.TB, gr *G.ExprGraph, nodes ...*G.Node) []G.Value {
	t.Helper()
	return runReadWith(t, gr, nil, nodes...)
}

// runReadWith is runRead on a tape machine made with the options opts.
func runReadWith(t testing.TB, gr *G.ExprGraph, opts []G.VMOpt, nodes ...*G.Node) []G.Value {
	t.Helper()
	vals := make([]G.Value, len(nodes))
	for i, n := range nodes {
		G.Read(n, &vals[i])
	}
	m := G.NewTapeMachine(gr, opts...)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatalf("RunAll: %v", err)
	}
	return vals
}

func TestPermuteForward(t *testing.T) {
	const H = 5
	for i, fg := range fwdGeoms() {
		for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
			t.Run(fmt.Sprintf("%s/%v", fg.name, dt), func(t *testing.T) {
				g := fg.g
				R := g.Rows()
				d := makeFwdData(fg, uint64(i))
				rng := newRNG(uint64(100 + i))
				x := randFloats(rng, g.T*H)
				dxp := randFloats(rng, R*H)
				gr := G.NewGraph()
				p, _ := buildPlan(t, gr, dt, g, d)
				xn := G.NewMatrix(gr, dt, G.WithShape(g.T, H), G.WithName("x"), G.WithValue(denseOf(dt, x, g.T, H)))
				dxpn := G.NewMatrix(gr, dt, G.WithShape(R, H), G.WithName("dxp"), G.WithValue(denseOf(dt, dxp, R, H)))
				xp, err := Permute(xn, p)
				if err != nil {
					t.Fatal(err)
				}
				dx, err := opkit.ApplyOp(permuteGradName, permuteGradOp{g: p.Geometry}, dxpn, p.Node)
				if err != nil {
					t.Fatal(err)
				}
				if !xp.Shape().Eq(tensor.Shape{R, H}) || !dx.Shape().Eq(tensor.Shape{g.T, H}) {
					t.Fatalf("shapes %v %v, want (%d,%d) (%d,%d)", xp.Shape(), dx.Shape(), R, H, g.T, H)
				}
				vals := runRead(t, gr, p.Node, xp, dx)
				ref := refPlan(g, d.ids, d.probs)
				if got, want := vals[0].Data().([]int32), ref.Flat(); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("plan %v\nwant %v", got, want)
				}
				// Permute copies: exact in both dtypes (x is exactly representable after rounding).
				xr := toF64(t, denseOf(dt, x, g.T, H))
				if d := maxRelDiff(toF64(t, vals[1]), refPermute(xr, ref.RowOf, g.T, g.K, R, H)); d != 0 {
					t.Errorf("permute differs from the reference by %g", d)
				}
				dxpr := toF64(t, denseOf(dt, dxp, R, H))
				tol := 1e-15
				if dt == tensor.Float32 {
					tol = 1e-6
				}
				if d := maxRelDiff(toF64(t, vals[2]), refPermuteBack(dxpr, ref.RowOf, g.T, g.K, H)); d > tol {
					t.Errorf("permute backward differs from the reference by %g", d)
				}
			})
		}
	}
}

func permuteGradCases() []gradCase {
	return []gradCase{
		{"sum(W*permute(x)^2)", []string{"x"}, caseFn(func(e *gradEnv) *G.Node {
			return must(e.weighted("W", must(Permute(e.in["x"], e.plan))))
		})},
		// x feeds two permutes with different plans: DoDiff must accumulate.
		{"sum(permute(x,p))+sum(W*permute(x,p2)^2)", []string{"x"}, caseFn(func(e *gradEnv) *G.Node {
			a := must(G.Sum(must(Permute(e.in["x"], e.plan))))
			b := must(e.weighted("W", must(Permute(e.in["x"], e.second()))))
			return must(G.Add(a, b))
		})},
		{"sum(W*permuteGrad(dxp)^2)", []string{"dxp"}, caseFn(func(e *gradEnv) *G.Node {
			dx := must(opkit.ApplyOp(permuteGradName, permuteGradOp{g: e.plan.Geometry}, e.in["dxp"], e.plan.Node))
			return must(e.weighted("W", dx))
		})},
	}
}

func TestPermuteGradients(t *testing.T) { checkGradCases(t, permuteGradCases()) }

// TestPermuteOpHash checks that geometry is part of the op's identity: permutes of one x with
// plans of different geometries are different nodes, and the op strings name the geometry.
func TestPermuteOpHash(t *testing.T) {
	g1 := kernels.Geometry{T: 4, K: 2, E: 3, A: 1}
	g2 := g1
	g2.A = 2
	g3 := kernels.Geometry{T: 4, K: 2, E: 3, A: 1, Mode: kernels.Capacity, C: 2}
	g4 := g3
	g4.PadToCapacity = true
	ops := []G.Op{permuteOp{g: g1}, permuteOp{g: g2}, permuteOp{g: g3}, permuteOp{g: g4}, permuteGradOp{g: g1},
		permuteProbsOp{g: g1}, permuteProbsGradOp{g: g1}, unpermuteOp{g: g1, weighted: true}, unpermuteOp{g: g1, weighted: false},
		unpermuteGradRowsOp{g: g1, weighted: true}, unpermuteGradProbsOp{g: g1, pdt: tensor.Float32}, unpermuteGradProbsOp{g: g1, pdt: tensor.Float64},
		planOp{g: g1, withProbs: false}, planOp{g: g3, withProbs: false}, planOp{g: g4, withProbs: false}}
	seen := map[uint32]string{}
	for _, op := range ops {
		h := op.Hashcode()
		if prev, ok := seen[h]; ok {
			t.Errorf("%v and %v hash alike", prev, op)
		}
		seen[h] = op.String()
	}
	if s := (permuteOp{g: g3}).String(); s != "op.Permute{T=4 K=2 E=3 A=1 mode=capacity C=2 drop=position pad=false}" {
		t.Errorf("String() = %q", s)
	}
}

func TestPermuteBadInputs(t *testing.T) {
	g := kernels.Geometry{E: 3, A: 1} // with ids [4,2]: T=4, K=2, R=8
	plan := func(gr *G.ExprGraph) *Plan { return must2(NewPlan(idsNode(gr, "ids", 4, 2, okIDs), nil, g)) }
	runBadCases(t, []badCase{
		{"nil x", func(gr *G.ExprGraph) (*G.Node, error) { return Permute(nil, plan(gr)) }, false, []string{"x is nil"}},
		{"nil plan", func(gr *G.ExprGraph) (*G.Node, error) {
			return Permute(floatNode(gr, tensor.Float64, "x", 4, 3), nil)
		}, false, []string{"plan is nil"}},
		{"x vector", func(gr *G.ExprGraph) (*G.Node, error) {
			return Permute(floatNode(gr, tensor.Float64, "x", 12), plan(gr))
		}, false, []string{"x has shape (12)", "want (T=4, H>=1)"}},
		{"x 3-D", func(gr *G.ExprGraph) (*G.Node, error) {
			return Permute(floatNode(gr, tensor.Float32, "x", 4, 3, 1), plan(gr))
		}, false, []string{"x has shape (4, 3, 1)"}},
		{"x [T+1,H]", func(gr *G.ExprGraph) (*G.Node, error) {
			return Permute(floatNode(gr, tensor.Float64, "x", 5, 3), plan(gr))
		}, false, []string{"x has shape (5, 3)", "T=4"}},
		{"x int32", func(gr *G.ExprGraph) (*G.Node, error) {
			return Permute(idsNode(gr, "x", 4, 2, okIDs), plan(gr))
		}, false, []string{"x has dtype int32", "want float32 or float64"}},
		{"x int", func(gr *G.ExprGraph) (*G.Node, error) {
			return Permute(G.NewMatrix(gr, tensor.Int, G.WithShape(4, 2), G.WithName("x")), plan(gr))
		}, false, []string{"x has dtype int"}},
		{"plan node int", func(gr *G.ExprGraph) (*G.Node, error) {
			n := G.NewVector(gr, tensor.Int, G.WithShape(g.PlanLen()), G.WithName("plan"))
			return Permute(floatNode(gr, tensor.Float64, "x", 4, 3), &Plan{Node: n, Geometry: plan(gr).Geometry})
		}, false, []string{"plan has dtype int, want int32"}},
	})
	// Do with values the graph would never pass.
	gg := kernels.Geometry{T: 4, K: 2, E: 3, A: 1}
	planV := int32Dense(refPlan(gg, okIDs, nil).Flat(), gg.PlanLen())
	x := denseOf(tensor.Float64, make([]float64, 12), 4, 3)
	wantErr(t, "arity", func() error { _, err := (permuteOp{g: gg}).Do(x); return err }(), "got 1 inputs, want 2")
	wantErr(t, "short plan", func() error { _, err := (permuteOp{g: gg}).Do(x, int32Dense(make([]int32, 5), 5)); return err }(), "plan has shape (5)", "PlanLen=23")
	wantErr(t, "int64 plan", func() error {
		_, err := (permuteOp{g: gg}).Do(x, tensor.New(tensor.WithShape(gg.PlanLen()), tensor.WithBacking(make([]int64, gg.PlanLen()))))
		return err
	}(), "plan has dtype int64, want int32")
	wantErr(t, "dxp rows", func() error {
		_, err := (permuteGradOp{g: gg}).Do(denseOf(tensor.Float32, make([]float64, 12), 4, 3), planV)
		return err
	}(), "dxp has shape (4, 3)", "R=8")
}

// TestUsePrealloc checks every op's UsePreallocDo: into a buffer holding stale data it gives
// the same bits as Do, and a buffer of the wrong shape or dtype is an error.
func TestUsePrealloc(t *testing.T) {
	const H = 3
	geos := []kernels.Geometry{
		{T: 4, K: 2, E: 3, A: 2},                               // dropless with alignment padding rows
		{T: 4, K: 2, E: 3, A: 1, Mode: kernels.Capacity, C: 1}, // capacity: dropped slots
		{T: 4, K: 2, E: 3, A: 2, Mode: kernels.Capacity, C: 3, PadToCapacity: true},
	}
	rng := newRNG(3)
	for _, g := range geos {
		R := g.Rows()
		// The plan: a prealloc of stale data is overwritten completely.
		stale := make([]int32, g.PlanLen())
		for i := range stale {
			stale[i] = 99
		}
		planV, err := (planOp{g: g}).UsePreallocDo(int32Dense(stale, g.PlanLen()), int32Dense(okIDs, 4, 2))
		if err != nil {
			t.Fatal(err)
		}
		dplan := int32Dense(append([]int32(nil), stale...), g.PlanLen())
		newFakeDevice().own(dplan)
		_, err = (planOp{g: g}).UsePreallocDo(dplan, int32Dense(okIDs, 4, 2))
		wantErr(t, "plan into a device prealloc", err, "preallocated output is a device value")
		if fmt.Sprint(dplan.Data()) != fmt.Sprint(stale) {
			t.Errorf("%v: a refused device plan prealloc was written: %v", g, dplan.Data())
		}
		if want := refPlan(g, okIDs, nil).Flat(); fmt.Sprint(planV.Data()) != fmt.Sprint(want) {
			t.Errorf("%v: prealloc plan %v, want %v", g, planV.Data(), want)
		}
		for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
			x := denseOf(dt, randFloats(rng, 4*H), 4, H)
			rows := denseOf(dt, randFloats(rng, R*H), R, H)
			probs := denseOf(dt, randProbs(rng, 8), 4, 2)
			vecR := denseOf(dt, randFloats(rng, R), R)
			cases := []preallocCase{
				{permuteOp{g: g}, []G.Value{x, planV}, []int{R, H}},
				{permuteGradOp{g: g}, []G.Value{rows, planV}, []int{4, H}},
				{permuteProbsOp{g: g}, []G.Value{probs, planV}, []int{R}},
				{permuteProbsGradOp{g: g}, []G.Value{vecR, planV}, []int{4, 2}},
				{unpermuteOp{g: g, weighted: true}, []G.Value{rows, probs, planV}, []int{4, H}},
				{unpermuteOp{g: g, weighted: false}, []G.Value{rows, planV}, []int{4, H}},
				{unpermuteGradRowsOp{g: g, weighted: true}, []G.Value{x, probs, planV}, []int{R, H}},
				{unpermuteGradRowsOp{g: g, weighted: false}, []G.Value{x, planV}, []int{R, H}},
				{unpermuteGradProbsOp{g: g, pdt: dt}, []G.Value{x, rows, planV}, []int{4, 2}},
			}
			mk := func(data []float64, shape ...int) *tensor.Dense { return denseOf(dt, data, shape...) }
			for _, c := range cases {
				label := fmt.Sprintf("%v %v", c.op, dt)
				stale := checkPreallocDo(t, c, label, mk)
				n := len(stale)
				bad := denseOf(dt, make([]float64, n+1), n+1)
				_, err := c.op.UsePreallocDo(bad, c.in...)
				wantErr(t, label, err, "preallocated output has shape")
				other := tensor.Float32
				if dt == tensor.Float32 {
					other = tensor.Float64
				}
				_, err = c.op.UsePreallocDo(denseOf(other, stale, c.out...), c.in...)
				wantErr(t, label, err, "preallocated output has dtype")
				_, err = c.op.UsePreallocDo((*tensor.Dense)(nil), c.in...) // it panicked
				wantErr(t, label+" nil", err, "preallocated output is a *tensor.Dense view or non-dense value")
				// A prealloc that shares memory with the first input is refused before
				// anything is written (the output used to be zeroed first, input and all).
				in0 := c.in[0].(*tensor.Dense)
				shared := denseOf(dt, append(toF64(t, in0), make([]float64, max(0, n-in0.Shape().TotalSize()))...), max(n, in0.Shape().TotalSize()))
				in := append([]G.Value{tensor.New(tensor.Of(dt), tensor.WithShape(in0.Shape()...), tensor.WithBacking(sliceOf(shared, in0.Shape().TotalSize())))}, c.in[1:]...)
				pre := tensor.New(tensor.Of(dt), tensor.WithShape(c.out...), tensor.WithBacking(sliceOf(shared, n)))
				before := in[0].(*tensor.Dense).Clone().(*tensor.Dense)
				_, err = c.op.UsePreallocDo(pre, in...)
				wantErr(t, label+" aliased", err, "overlaps")
				if !bitsEqual(in[0], before) {
					t.Errorf("%s: a refused prealloc changed the input it shares memory with", label)
				}
				// A device prealloc for host inputs is refused, untouched: the host kernel wrote
				// it through its Data(), a host write to device memory.
				dpre := mk(stale, c.out...)
				newFakeDevice().own(dpre)
				_, err = c.op.UsePreallocDo(dpre, c.in...)
				wantErr(t, label+" device prealloc", err, "preallocated output is a device value")
				if got := toF64(t, dpre); fmt.Sprint(got) != fmt.Sprint(stale) {
					t.Errorf("%s: a refused device prealloc was written: %v", label, got)
				}
			}
		}
	}
}

// sliceOf returns the first n elements of d's backing slice (float32 or float64), sharing it.
func sliceOf(d *tensor.Dense, n int) any {
	switch s := d.Data().(type) {
	case []float32:
		return s[:n]
	case []float64:
		return s[:n]
	}
	panic(fmt.Sprintf("sliceOf: %T", d.Data()))
}
