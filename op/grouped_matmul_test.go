package op

import (
	"math/rand"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/reftest"
	"github.com/gomoe/gomoe/kernels"
)

func TestGroupedMatMulGradients(t *testing.T) {
	// T=5 tokens, K=2, E=4 experts, A=2: expert 3 gets no token, one pair is dropped (-1), so
	// xp has pad rows and unused rows whose gradient must be 0.
	geo := kernels.Geometry{T: 5, K: 2, E: 4, A: 2}
	ids := []int32{0, 2, 2, 1, 0, -1, 1, 0, 2, 0}
	geo2 := kernels.Geometry{T: 5, K: 2, E: 4, A: 1, Mode: kernels.Capacity, C: 2, PadToCapacity: true}
	ids2 := []int32{3, 1, 1, 3, 3, 0, 1, 2, 0, 3}
	R, R2 := geo.Rows(), geo2.Rows()
	const H, N, N2 = 3, 4, 2
	rng := rand.New(rand.NewSource(1))
	cases := []gcCase{
		{
			name: "sum(W*gmm(xp,w))",
			inputs: []gcInput{
				{"xp", tensor.Shape{R, H}, gcRand(rng, R*H)},
				{"w", tensor.Shape{geo.E, H, N}, gcRand(rng, geo.E*H*N)},
			},
			build: func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
				plan := gcPlanNode(t, g, geo, ids, nil, "plan")
				z, err := groupedMatMulWithPlan(in[0], in[1], plan, geo)
				if err != nil {
					return nil, err
				}
				return gcWeighted(g, dt, z, "W", 2)
			},
		},
		{
			name: "chain gmm(gmm(xp,w1)^2,w2)",
			inputs: []gcInput{
				{"xp", tensor.Shape{R, H}, gcRand(rng, R*H)},
				{"w1", tensor.Shape{geo.E, H, N}, gcRand(rng, geo.E*H*N)},
				{"w2", tensor.Shape{geo.E, N, N2}, gcRand(rng, geo.E*N*N2)},
			},
			build: func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
				plan := gcPlanNode(t, g, geo, ids, nil, "plan")
				z, err := groupedMatMulWithPlan(in[0], in[1], plan, geo)
				if err != nil {
					return nil, err
				}
				z2, err := groupedMatMulWithPlan(G.Must(G.Square(z)), in[2], plan, geo)
				if err != nil {
					return nil, err
				}
				return gcWeighted(g, dt, z2, "W", 3)
			},
		},
		{
			// xp and w each feed two grouped matmuls with different plans: DoDiff must
			// accumulate, and the tape must add both contributions.
			name: "two plans share xp and w",
			inputs: []gcInput{
				{"xp", tensor.Shape{R, H}, gcRand(rng, R*H)},
				{"w", tensor.Shape{geo.E, H, N}, gcRand(rng, geo.E*H*N)},
			},
			build: func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
				if R2 > R {
					t.Fatalf("test setup: R2=%d > R=%d", R2, R)
				}
				plan := gcPlanNode(t, g, geo, ids, nil, "plan")
				plan2 := gcPlanNode(t, g, geo2, ids2, nil, "plan2")
				z, err := groupedMatMulWithPlan(in[0], in[1], plan, geo)
				if err != nil {
					return nil, err
				}
				xp2 := G.Must(G.Slice(in[0], G.S(0, R2)))
				z2, err := groupedMatMulWithPlan(xp2, in[1], plan2, geo2)
				if err != nil {
					return nil, err
				}
				a, err := gcWeighted(g, dt, z, "W", 4)
				if err != nil {
					return nil, err
				}
				b, err := gcWeighted(g, dt, G.Must(G.Square(z2)), "W2", 5)
				if err != nil {
					return nil, err
				}
				return G.Add(a, b)
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { gcRun(t, c) })
	}
}

// TestGroupedMatMulForwardValues checks the op's output against plain loops, including zero
// pad rows, and that an expert with no rows gets an exactly zero weight gradient.
func TestGroupedMatMulForwardValues(t *testing.T) {
	geo := kernels.Geometry{T: 4, K: 1, E: 3, A: 2}
	ids := []int32{2, 0, 2, 2} // expert 1 idle
	const H, N = 2, 3
	R := geo.Rows()
	rng := rand.New(rand.NewSource(3))
	xpd, wd := gcRand(rng, R*H), gcRand(rng, geo.E*H*N)
	g := G.NewGraph()
	xp := G.NewMatrix(g, tensor.Float64, G.WithShape(R, H), G.WithName("xp"), G.WithValue(gcDense(tensor.Float64, tensor.Shape{R, H}, xpd)))
	w := G.NewTensor(g, tensor.Float64, 3, G.WithShape(geo.E, H, N), G.WithName("w"), G.WithValue(gcDense(tensor.Float64, tensor.Shape{geo.E, H, N}, wd)))
	plan := gcPlanNode(t, g, geo, ids, nil, "plan")
	z, err := groupedMatMulWithPlan(xp, w, plan, geo)
	if err != nil {
		t.Fatal(err)
	}
	var zv G.Value
	G.Read(z, &zv)
	cost := G.Must(G.Sum(z))
	if _, err := G.Grad(cost, xp, w); err != nil {
		t.Fatal(err)
	}
	m := G.NewTapeMachine(g, G.BindDualValues(xp, w))
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	// Hand layout with A=2: expert 0 rows [0,2) holds token 1 then a pad row; expert 1 is
	// empty; expert 2 rows [2,5) hold tokens 0,2,3, row 5 is pad; R = T*K + E*(A-1) = 7 rows,
	// row 6 unused.
	rowExpert := []int{0, -1, 2, 2, 2, -1, -1}
	want := make([]float64, R*N)
	for r, e := range rowExpert {
		if e < 0 {
			continue
		}
		for j := 0; j < N; j++ {
			for h := 0; h < H; h++ {
				want[r*N+j] += xpd[r*H+h] * wd[e*H*N+h*N+j]
			}
		}
	}
	if d := reftest.MaxDiff(gcFloats(zv), want); d > 1e-14 {
		t.Fatalf("z: max diff %g\ngot  %v\nwant %v", d, gcFloats(zv), want)
	}
	gw, _ := w.Grad()
	for i, v := range gcFloats(gw)[1*H*N : 2*H*N] {
		if v != 0 {
			t.Fatalf("idle expert 1: dw[%d] = %g, want 0", i, v)
		}
	}
}

func TestGroupedMatMulRejectsBadInput(t *testing.T) {
	geo := kernels.Geometry{T: 4, K: 1, E: 2, A: 1}
	g := G.NewGraph()
	xp := G.NewMatrix(g, tensor.Float64, G.WithShape(geo.Rows(), 3), G.WithName("xp"))
	xp32 := G.NewMatrix(g, tensor.Float32, G.WithShape(geo.Rows(), 3), G.WithName("xp32"))
	xpShort := G.NewMatrix(g, tensor.Float64, G.WithShape(geo.Rows()-1, 3), G.WithName("xpShort"))
	w := G.NewTensor(g, tensor.Float64, 3, G.WithShape(2, 3, 5), G.WithName("w"))
	wBadE := G.NewTensor(g, tensor.Float64, 3, G.WithShape(3, 3, 5), G.WithName("wBadE"))
	wBadH := G.NewTensor(g, tensor.Float64, 3, G.WithShape(2, 4, 5), G.WithName("wBadH"))
	plan := gcPlanNode(t, g, geo, []int32{0, 1, 1, 0}, nil, "plan")
	planF := G.NewVector(g, tensor.Float64, G.WithShape(geo.PlanLen()), G.WithName("planF"))
	planShort := G.NewVector(g, tensor.Int32, G.WithShape(geo.PlanLen()-1), G.WithName("planShort"))
	cases := []struct {
		name       string
		xp, w, pl  *G.Node
		geo        kernels.Geometry
		wantSubstr string
	}{
		{"xp rows", xpShort, w, plan, geo, "rows input"},
		{"w experts", xp, wBadE, plan, geo, "w has shape"},
		{"w rows", xp, wBadH, plan, geo, "rows input"},
		{"dtype mix", xp32, w, plan, geo, "xp is float32"},
		{"plan dtype", xp, w, planF, geo, "plan has dtype"},
		{"plan length", xp, w, planShort, geo, "plan has shape"},
		{"bad geometry", xp, w, plan, kernels.Geometry{T: 4, K: 3, E: 2, A: 1}, "K=3 > E=2"},
		{"nil node", nil, w, plan, geo, "nil input"},
	}
	for _, c := range cases {
		_, err := groupedMatMulWithPlan(c.xp, c.w, c.pl, c.geo)
		if err == nil || !strings.Contains(err.Error(), c.wantSubstr) {
			t.Errorf("%s: got error %v, want one containing %q", c.name, err, c.wantSubstr)
		}
	}
	if _, err := GroupedMatMul(xp, w, nil); err == nil {
		t.Error("nil plan: no error")
	}
}

// TestGroupedMatMulGradientsGeometries: the grouped matmul's gradients on every geometry of
// the permute and unpermute checks (gradGeoms: dropless with alignment 1 and 4, capacity with
// and without padding under both drop policies), which TestGroupedMatMulGradients covers only
// in part, against float64 central differences.
func TestGroupedMatMulGradientsGeometries(t *testing.T) {
	const H, N = 2, 3
	for i, geo := range gradGeoms() {
		g := geo.g
		var probs []float64
		if g.Mode == kernels.Capacity && g.Drop == kernels.DropByProb {
			probs = inputData(g, H, "probs")
		}
		R := g.Rows()
		rng := rand.New(rand.NewSource(int64(60 + i)))
		gcRun(t, gcCase{
			name: "gmm " + geo.name,
			inputs: []gcInput{
				{"xp", tensor.Shape{R, H}, gcRand(rng, R*H)},
				{"w", tensor.Shape{g.E, H, N}, gcRand(rng, g.E*H*N)},
			},
			build: func(gr *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
				z, err := groupedMatMulWithPlan(in[0], in[1], gcPlanNode(t, gr, g, geo.ids, probs, "plan"), g)
				if err != nil {
					return nil, err
				}
				return gcWeighted(gr, dt, G.Must(G.Square(z)), "W", int64(70+i))
			},
		})
	}
}
