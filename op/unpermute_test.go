package op

import (
	"fmt"
	"runtime"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

func TestUnpermuteForward(t *testing.T) {
	const H = 5
	for i, fg := range fwdGeoms() {
		for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
			t.Run(fmt.Sprintf("%s/%v", fg.name, dt), func(t *testing.T) {
				g := fg.g
				R := g.Rows()
				d := makeFwdData(fg, uint64(i))
				rng := newRNG(uint64(300 + i))
				yp := randFloats(rng, R*H)
				dy := randFloats(rng, g.T*H)
				gr := G.NewGraph()
				p, probs := buildPlan(t, gr, dt, g, d)
				ypn := G.NewMatrix(gr, dt, G.WithShape(R, H), G.WithName("yp"), G.WithValue(denseOf(dt, yp, R, H)))
				dyn := G.NewMatrix(gr, dt, G.WithShape(g.T, H), G.WithName("dy"), G.WithValue(denseOf(dt, dy, g.T, H)))
				yw := must(Unpermute(ypn, probs, p))
				yu := must(Unpermute(ypn, nil, p))
				gw := must(opkit.ApplyOp(unpermuteGradRowsName, unpermuteGradRowsOp{g: p.Geometry, weighted: true}, dyn, probs, p.Node))
				gu := must(opkit.ApplyOp(unpermuteGradRowsName, unpermuteGradRowsOp{g: p.Geometry}, dyn, p.Node))
				gp := must(opkit.ApplyOp(unpermuteGradProbsName, unpermuteGradProbsOp{g: p.Geometry, pdt: dt}, dyn, ypn, p.Node))
				for _, c := range []struct {
					n    *G.Node
					want tensor.Shape
				}{{yw, tensor.Shape{g.T, H}}, {yu, tensor.Shape{g.T, H}}, {gw, tensor.Shape{R, H}}, {gu, tensor.Shape{R, H}}, {gp, tensor.Shape{g.T, g.K}}} {
					if !c.n.Shape().Eq(c.want) || c.n.Dtype() != dt {
						t.Fatalf("%v: %v %v, want %v %v", c.n, c.n.Dtype(), c.n.Shape(), dt, c.want)
					}
				}
				vals := runRead(t, gr, yw, yu, gw, gu, gp)
				rowOf := refPlan(g, d.ids, d.probs).RowOf
				// References in float64 on the inputs rounded to dt.
				ypr := toF64(t, denseOf(dt, yp, R, H))
				dyr := toF64(t, denseOf(dt, dy, g.T, H))
				pr := toF64(t, denseOf(dt, d.probs, g.T, g.K))
				tol := 1e-14
				if dt == tensor.Float32 {
					tol = 1e-6
				}
				refs := []struct {
					name string
					want []float64
				}{
					{"unpermute weighted", refUnpermute(ypr, pr, rowOf, g.T, g.K, H)},
					{"unpermute unweighted", refUnpermute(ypr, nil, rowOf, g.T, g.K, H)},
					{"backward rows weighted", refUnpermuteBackRows(dyr, pr, rowOf, g.T, g.K, R, H)},
					{"backward rows unweighted", refUnpermuteBackRows(dyr, nil, rowOf, g.T, g.K, R, H)},
					{"backward probs", refUnpermuteBackProbs(dyr, ypr, rowOf, g.T, g.K, H)},
				}
				for j, r := range refs {
					if d := maxRelDiff(toF64(t, vals[j]), r.want); d > tol {
						t.Errorf("%s differs from the reference by %g", r.name, d)
					}
				}
			})
		}
	}
}

func unpermuteGradCases() []gradCase {
	return []gradCase{
		{"sum(W*unpermute(yp,probs)^2)", []string{"yp", "probs"}, caseFn(func(e *gradEnv) *G.Node {
			return must(e.weighted("W", must(Unpermute(e.in["yp"], e.in["probs"], e.plan))))
		})},
		{"sum(W*unpermute(yp)^2) unweighted", []string{"yp"}, caseFn(func(e *gradEnv) *G.Node {
			return must(e.weighted("W", must(Unpermute(e.in["yp"], nil, e.plan))))
		})},
		// yp and probs feed two unpermutes with different plans: DoDiff must accumulate.
		{"sum(unpermute(yp,probs,p))+sum(W*unpermute(yp,probs,p2)^2)", []string{"yp", "probs"}, caseFn(func(e *gradEnv) *G.Node {
			a := must(G.Sum(must(Unpermute(e.in["yp"], e.in["probs"], e.plan))))
			b := must(e.weighted("W", must(Unpermute(e.in["yp"], e.in["probs"], e.second()))))
			return must(G.Add(a, b))
		})},
		// The MoE data path: permute, a per-row transform, combine with the probs that the
		// plan (under drop by prob) was built from.
		{"sum(W*unpermute(V*permute(x)^2,probs)^2)", []string{"x", "probs"}, caseFn(func(e *gradEnv) *G.Node {
			xp := must(Permute(e.in["x"], e.plan))
			v := e.weight("V", xp.Shape()...)
			yp := must(G.HadamardProd(v, must(G.Square(xp))))
			return must(e.weighted("W", must(Unpermute(yp, e.in["probs"], e.plan))))
		})},
		// The probs applied on the expert activation instead: unweighted combine.
		{"sum(W*unpermute(permuteProbs(probs)*V*permute(x))^2)", []string{"x", "probs"}, caseFn(func(e *gradEnv) *G.Node {
			xp := must(Permute(e.in["x"], e.plan))
			v := e.weight("V", xp.Shape()...)
			pp := must(G.Reshape(must(PermuteProbs(e.in["probs"], e.plan)), tensor.Shape{xp.Shape()[0], 1}))
			yp := must(G.BroadcastHadamardProd(pp, must(G.HadamardProd(v, xp)), []byte{1}, nil))
			return must(e.weighted("W", must(Unpermute(yp, nil, e.plan))))
		})},
		{"sum(W*gradRows(dy,probs)^2)", []string{"dy", "probs"}, caseFn(func(e *gradEnv) *G.Node {
			d := must(opkit.ApplyOp(unpermuteGradRowsName, unpermuteGradRowsOp{g: e.plan.Geometry, weighted: true}, e.in["dy"], e.in["probs"], e.plan.Node))
			return must(e.weighted("W", d))
		})},
		{"sum(W*gradRows(dy)^2) unweighted", []string{"dy"}, caseFn(func(e *gradEnv) *G.Node {
			d := must(opkit.ApplyOp(unpermuteGradRowsName, unpermuteGradRowsOp{g: e.plan.Geometry}, e.in["dy"], e.plan.Node))
			return must(e.weighted("W", d))
		})},
		{"sum(w*gradProbs(dy,yp)^2)", []string{"dy", "yp"}, caseFn(func(e *gradEnv) *G.Node {
			d := must(opkit.ApplyOp(unpermuteGradProbsName, unpermuteGradProbsOp{g: e.plan.Geometry, pdt: e.dt}, e.in["dy"], e.in["yp"], e.plan.Node))
			return must(e.weighted("w", d))
		})},
	}
}

func TestUnpermuteGradients(t *testing.T) { checkGradCases(t, unpermuteGradCases()) }

// TestUnpermutePermuteIdentity: with no drops, unpermute(permute(x)) with every prob 1/K gives
// back x, and a plan that sends token t to expert t permutes x onto itself.
func TestUnpermutePermuteIdentity(t *testing.T) {
	const H = 6
	geoms := []kernels.Geometry{
		{E: 6, A: 1}, {E: 6, A: 4}, {E: 3, A: 2},
		{E: 6, A: 1, Mode: kernels.Capacity, C: 40, Drop: kernels.DropByProb},
		{E: 6, A: 8, Mode: kernels.Capacity, C: 40, PadToCapacity: true},
	}
	for i, g := range geoms {
		for _, K := range []int{1, 2, 3} {
			for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
				if K > g.E {
					continue
				}
				t.Run(fmt.Sprintf("%v/K=%d/%v", g, K, dt), func(t *testing.T) {
					const T = 40
					rng := newRNG(uint64(i*10 + K))
					ids := randIDs(rng, T, K, g.E, 0)
					x := randFloats(rng, T*H)
					probs := make([]float64, T*K)
					for j := range probs {
						probs[j] = 1 / float64(K)
					}
					gr := G.NewGraph()
					p := must2(NewPlan(idsNode(gr, "ids", T, K, ids), floatNode(gr, dt, "probs0", T, K), g))
					xn := G.NewMatrix(gr, dt, G.WithShape(T, H), G.WithName("x"), G.WithValue(denseOf(dt, x, T, H)))
					pn := G.NewMatrix(gr, dt, G.WithShape(T, K), G.WithName("probs"), G.WithValue(denseOf(dt, probs, T, K)))
					y := must(Unpermute(must(Permute(xn, p)), pn, p))
					got := toF64(t, runRead(t, gr, y)[0])
					want := toF64(t, denseOf(dt, x, T, H))
					tol := 1e-15 // K·(x/K) rounds once per term
					if dt == tensor.Float32 {
						tol = 1e-6
					}
					if d := maxRelDiff(got, want); d > tol {
						t.Errorf("unpermute(permute(x), 1/K) differs from x by %g", d)
					}
				})
			}
		}
	}
	// token t -> expert t: xp = x and y = x bitwise.
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		const T = 7
		ids := make([]int32, T)
		ones := make([]float64, T)
		for t := range ids {
			ids[t], ones[t] = int32(t), 1
		}
		x := randFloats(newRNG(5), T*H)
		gr := G.NewGraph()
		p := must2(NewPlan(idsNode(gr, "ids", T, 1, ids), nil, kernels.Geometry{E: T, A: 1}))
		xn := G.NewMatrix(gr, dt, G.WithShape(T, H), G.WithName("x"), G.WithValue(denseOf(dt, x, T, H)))
		pn := G.NewMatrix(gr, dt, G.WithShape(T, 1), G.WithName("probs"), G.WithValue(denseOf(dt, ones, T, 1)))
		xp := must(Permute(xn, p))
		y := must(Unpermute(xp, pn, p))
		vals := runRead(t, gr, xp, y)
		if !bitsEqual(vals[0], xn.Value()) || !bitsEqual(vals[1], xn.Value()) {
			t.Errorf("%v: identity plan: xp %v, y %v, want x %v", dt, vals[0], vals[1], xn.Value())
		}
	}
}

// detResult is everything a determinism run produces.
type detResult []G.Value

// detRun builds a float32 MoE data path (plan, permute, transform, weighted unpermute) with its
// gradients at a size where the kernels run in parallel, and runs it `runs` times on one tape
// machine (Reset in between).
func detRun(t *testing.T, g kernels.Geometry, runs int) []detResult {
	const T, K, E, H = 4500, 2, 8, 8
	dt := tensor.Float32
	rng := newRNG(42)
	ids := randIDs(rng, T, K, E, 0.05)
	gr := G.NewGraph()
	probs := G.NewMatrix(gr, dt, G.WithShape(T, K), G.WithName("probs"), G.WithValue(denseOf(dt, randProbs(rng, T*K), T, K)))
	x := G.NewMatrix(gr, dt, G.WithShape(T, H), G.WithName("x"), G.WithValue(denseOf(dt, randFloats(rng, T*H), T, H)))
	p := must2(NewPlan(idsNode(gr, "ids", T, K, ids), probs, g))
	xp := must(Permute(x, p))
	v := G.NewMatrix(gr, dt, G.WithShape(xp.Shape()...), G.WithName("V"), G.WithValue(denseOf(dt, randFloats(rng, xp.Shape().TotalSize()), xp.Shape()...)))
	yp := must(G.HadamardProd(v, must(G.Square(xp))))
	y := must(Unpermute(yp, probs, p))
	pp := must(PermuteProbs(probs, p))
	w := G.NewMatrix(gr, dt, G.WithShape(T, H), G.WithName("W"), G.WithValue(denseOf(dt, randFloats(rng, T*H), T, H)))
	cost := must(G.Add(must(G.Sum(must(G.HadamardProd(w, y)))), must(G.Sum(pp))))
	grads, err := G.Grad(cost, x, probs)
	if err != nil {
		t.Fatal(err)
	}
	nodes := []*G.Node{p.Node, xp, y, pp, cost, grads[0], grads[1]}
	vals := make([]G.Value, len(nodes))
	for i, n := range nodes {
		G.Read(n, &vals[i])
	}
	m := G.NewTapeMachine(gr)
	defer m.Close()
	var out []detResult
	for r := 0; r < runs; r++ {
		if err := m.RunAll(); err != nil {
			t.Fatal(err)
		}
		out = append(out, append(detResult(nil), vals...))
		m.Reset()
	}
	return out
}

func TestDeterminism(t *testing.T) {
	if testing.Short() {
		t.Skip("large shapes")
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, g := range []kernels.Geometry{
		{E: 8, A: 4},
		{E: 8, A: 2, Mode: kernels.Capacity, C: 1000, Drop: kernels.DropByProb},
		{E: 8, A: 1, Mode: kernels.Capacity, C: 1100, PadToCapacity: true},
	} {
		runtime.GOMAXPROCS(4)
		ref := detRun(t, g, 2)
		runtime.GOMAXPROCS(1)
		one := detRun(t, g, 1)
		for i := range ref[0] {
			if !bitsEqual(ref[0][i], ref[1][i]) {
				t.Errorf("%v: value %d differs between two runs of one machine", g, i)
			}
			if !bitsEqual(ref[0][i], one[0][i]) {
				t.Errorf("%v: value %d differs between GOMAXPROCS 4 and 1", g, i)
			}
		}
	}
}

func TestUnpermuteBadInputs(t *testing.T) {
	g := kernels.Geometry{E: 3, A: 1} // with ids [4,2]: T=4, K=2, R=8
	plan := func(gr *G.ExprGraph) *Plan { return must2(NewPlan(idsNode(gr, "ids", 4, 2, okIDs), nil, g)) }
	f64 := func(gr *G.ExprGraph, name string, shape ...int) *G.Node {
		return floatNode(gr, tensor.Float64, name, shape...)
	}
	runBadCases(t, []badCase{
		{"nil yp", func(gr *G.ExprGraph) (*G.Node, error) { return Unpermute(nil, nil, plan(gr)) }, false, []string{"yp is nil"}},
		{"yp [R+1,H]", func(gr *G.ExprGraph) (*G.Node, error) { return Unpermute(f64(gr, "yp", 9, 3), nil, plan(gr)) }, false, []string{"yp has shape (9, 3)", "R=8"}},
		{"yp 3-D", func(gr *G.ExprGraph) (*G.Node, error) { return Unpermute(f64(gr, "yp", 8, 3, 1), nil, plan(gr)) }, false, []string{"yp has shape (8, 3, 1)"}},
		{"yp int32", func(gr *G.ExprGraph) (*G.Node, error) {
			return Unpermute(G.NewMatrix(gr, tensor.Int32, G.WithShape(8, 3), G.WithName("yp")), nil, plan(gr))
		}, false, []string{"yp has dtype int32"}},
		{"probs [T,K+1]", func(gr *G.ExprGraph) (*G.Node, error) {
			return Unpermute(f64(gr, "yp", 8, 3), f64(gr, "probs", 4, 3), plan(gr))
		}, false, []string{"probs has shape (4, 3)"}},
		{"probs dtype", func(gr *G.ExprGraph) (*G.Node, error) {
			return Unpermute(f64(gr, "yp", 8, 3), floatNode(gr, tensor.Float32, "probs", 4, 2), plan(gr))
		}, false, []string{"probs have dtype float32", "data has dtype float64"}},
		{"plan of another graph", func(gr *G.ExprGraph) (*G.Node, error) {
			return Unpermute(f64(gr, "yp", 8, 3), nil, plan(G.NewGraph()))
		}, false, []string{"another graph"}},
	})
	// mismatched H between dy and yp in the backward to the probs
	gr := G.NewGraph()
	p := plan(gr)
	_, err := opkit.ApplyOp(unpermuteGradProbsName, unpermuteGradProbsOp{g: p.Geometry, pdt: tensor.Float64}, f64(gr, "dy", 4, 3), f64(gr, "yp", 8, 4), p.Node)
	wantErr(t, "H mismatch", err, "yp has shape (8, 4)", "H=3")

	// Do with values the graph would never pass.
	gg := p.Geometry
	planV := int32Dense(refPlan(gg, okIDs, nil).Flat(), gg.PlanLen())
	yp32 := denseOf(tensor.Float32, make([]float64, 24), 8, 3)
	dy32 := denseOf(tensor.Float32, make([]float64, 12), 4, 3)
	probs64 := denseOf(tensor.Float64, make([]float64, 8), 4, 2)
	doErr := func(name string, op G.Op, frags []string, vs ...G.Value) {
		t.Helper()
		_, err := op.Do(vs...)
		wantErr(t, name, err, frags...)
	}
	mismatch := []string{"probs have dtype float64 but the data has dtype float32"}
	doErr("forward probs dtype", unpermuteOp{g: gg, weighted: true}, mismatch, yp32, probs64, planV)
	doErr("backward rows probs dtype", unpermuteGradRowsOp{g: gg, weighted: true}, mismatch, dy32, probs64, planV)
	doErr("backward probs dtype", unpermuteGradProbsOp{g: gg, pdt: tensor.Float64}, mismatch, dy32, yp32, planV)
	doErr("backward probs H", unpermuteGradProbsOp{g: gg, pdt: tensor.Float32}, []string{"yp has shape (8, 3)", "H=2"}, denseOf(tensor.Float32, make([]float64, 8), 4, 2), yp32, planV)
	doErr("forward arity", unpermuteOp{g: gg, weighted: true}, []string{"got 2 inputs, want 3"}, yp32, planV)
	doErr("forward scalar", unpermuteOp{g: gg, weighted: false}, []string{"yp has shape ()", "want (R=8, H>=1)"}, G.NewF64(1), planV)
}

// TestOpsBadPlans runs every op on plans that did not come from NewPlan: of another geometry
// (caught when the node is built) and corrupt (caught when it runs).
func TestOpsBadPlans(t *testing.T) {
	g := kernels.Geometry{T: 4, K: 2, E: 3, A: 1}
	other := kernels.Geometry{T: 4, K: 2, E: 4, A: 1}
	good := refPlan(g, okIDs, nil)
	corrupt := func(edit func(p *refPlanT)) []int32 {
		c := refPlanT{Counts: append([]int32(nil), good.Counts...), Offsets: append([]int32(nil), good.Offsets...), RowOf: append([]int32(nil), good.RowOf...), TokenOf: append([]int32(nil), good.TokenOf...)}
		edit(&c)
		return c.Flat()
	}
	userPlan := func(gr *G.ExprGraph, data []int32) *Plan {
		n := G.NewVector(gr, tensor.Int32, G.WithShape(len(data)), G.WithName("plan"), G.WithValue(int32Dense(data, len(data))))
		return &Plan{Node: n, Geometry: g}
	}
	ops := []struct {
		name string
		f    func(gr *G.ExprGraph, p *Plan) (*G.Node, error)
	}{
		{"Permute", func(gr *G.ExprGraph, p *Plan) (*G.Node, error) {
			return Permute(floatNode(gr, tensor.Float64, "x", 4, 3), p)
		}},
		{"PermuteProbs", func(gr *G.ExprGraph, p *Plan) (*G.Node, error) {
			return PermuteProbs(floatNode(gr, tensor.Float32, "probs", 4, 2), p)
		}},
		{"Unpermute", func(gr *G.ExprGraph, p *Plan) (*G.Node, error) {
			return Unpermute(floatNode(gr, tensor.Float64, "yp", 8, 3), floatNode(gr, tensor.Float64, "probs", 4, 2), p)
		}},
	}
	var cases []badCase
	for _, o := range ops {
		cases = append(cases,
			badCase{o.name + "/plan of another geometry", func(gr *G.ExprGraph) (*G.Node, error) {
				p := must2(NewPlan(idsNode(gr, "ids", 4, 2, okIDs), nil, other))
				return o.f(gr, &Plan{Node: p.Node, Geometry: g})
			}, false, []string{"plan has shape (25)", "PlanLen=23"}},
			badCase{o.name + "/T mismatch", func(gr *G.ExprGraph) (*G.Node, error) {
				p := must2(NewPlan(idsNode(gr, "ids", 5, 2, append(okIDs, 0, 1)), nil, withT(g, 5)))
				return o.f(gr, p)
			}, false, []string{"T=5"}},
			badCase{o.name + "/float plan", func(gr *G.ExprGraph) (*G.Node, error) {
				return o.f(gr, &Plan{Node: floatNode(gr, tensor.Float64, "plan", g.PlanLen()), Geometry: g})
			}, false, []string{"plan has dtype float64, want int32"}},
			badCase{o.name + "/invalid geometry", func(gr *G.ExprGraph) (*G.Node, error) {
				return o.f(gr, &Plan{Node: userPlan(gr, good.Flat()).Node, Geometry: kernels.Geometry{T: 4, K: 2, E: 3}})
			}, false, []string{"alignment A=0"}},
			badCase{o.name + "/row out of range", func(gr *G.ExprGraph) (*G.Node, error) {
				return o.f(gr, userPlan(gr, corrupt(func(p *refPlanT) { p.RowOf[3] = 8 })))
			}, true, []string{"rowOf[1,1] = 8 is out of range"}},
			badCase{o.name + "/token out of range", func(gr *G.ExprGraph) (*G.Node, error) {
				return o.f(gr, userPlan(gr, corrupt(func(p *refPlanT) { p.TokenOf[7] = 4 })))
			}, true, []string{"tokenOf[7] = 4 is out of range"}},
			badCase{o.name + "/rowOf and tokenOf disagree", func(gr *G.ExprGraph) (*G.Node, error) {
				return o.f(gr, userPlan(gr, corrupt(func(p *refPlanT) { p.TokenOf[good.RowOf[0]] = 2 })))
			}, true, []string{"but tokenOf"}},
			badCase{o.name + "/misaligned offsets", func(gr *G.ExprGraph) (*G.Node, error) {
				return o.f(gr, userPlan(gr, corrupt(func(p *refPlanT) { p.Offsets[1] = -1 })))
			}, true, []string{"expert 0", "not a valid aligned segment"}},
			badCase{o.name + "/ids out of range at run time", func(gr *G.ExprGraph) (*G.Node, error) {
				return o.f(gr, must2(NewPlan(idsNode(gr, "ids", 4, 2, []int32{0, 1, 2, 0, 1, -1, 3, 1}), nil, g)))
			}, true, []string{"ids[3,0] = 3 is out of range [-1, 3)"}},
		)
	}
	runBadCases(t, cases)
}

func withT(g kernels.Geometry, T int) kernels.Geometry { g.T = T; return g }
