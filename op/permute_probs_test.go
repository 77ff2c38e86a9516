package op

import (
	"fmt"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

func TestPermuteProbsForward(t *testing.T) {
	for i, fg := range fwdGeoms() {
		for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
			t.Run(fmt.Sprintf("%s/%v", fg.name, dt), func(t *testing.T) {
				g := fg.g
				R := g.Rows()
				d := makeFwdData(fg, uint64(i))
				dpp := randFloats(newRNG(uint64(200+i)), R)
				gr := G.NewGraph()
				p, probs := buildPlan(t, gr, dt, g, d)
				dppn := G.NewVector(gr, dt, G.WithShape(R), G.WithName("dpp"), G.WithValue(denseOf(dt, dpp, R)))
				pp, err := PermuteProbs(probs, p)
				if err != nil {
					t.Fatal(err)
				}
				dprobs, err := opkit.ApplyOp(permuteProbsGradName, permuteProbsGradOp{g: p.Geometry}, dppn, p.Node)
				if err != nil {
					t.Fatal(err)
				}
				if !pp.Shape().Eq(tensor.Shape{R}) || !dprobs.Shape().Eq(tensor.Shape{g.T, g.K}) {
					t.Fatalf("shapes %v %v, want (%d) (%d,%d)", pp.Shape(), dprobs.Shape(), R, g.T, g.K)
				}
				vals := runRead(t, gr, pp, dprobs)
				rowOf := refPlan(g, d.ids, d.probs).RowOf
				pr := toF64(t, denseOf(dt, d.probs, g.T, g.K))
				if d := maxRelDiff(toF64(t, vals[0]), refPermuteProbs(pr, rowOf, R)); d != 0 {
					t.Errorf("permuted probs differ from the reference by %g", d)
				}
				dppr := toF64(t, denseOf(dt, dpp, R))
				if d := maxRelDiff(toF64(t, vals[1]), refPermuteProbsBack(dppr, rowOf)); d != 0 {
					t.Errorf("permute-probs backward differs from the reference by %g", d)
				}
			})
		}
	}
}

func permuteProbsGradCases() []gradCase {
	return []gradCase{
		{"sum(w*permuteProbs(probs)^2)", []string{"probs"}, caseFn(func(e *gradEnv) *G.Node {
			return must(e.weighted("w", must(PermuteProbs(e.in["probs"], e.plan))))
		})},
		// probs feed two permutes with different plans: DoDiff must accumulate.
		{"sum(permuteProbs(probs,p))+sum(w*permuteProbs(probs,p2)^2)", []string{"probs"}, caseFn(func(e *gradEnv) *G.Node {
			a := must(G.Sum(must(PermuteProbs(e.in["probs"], e.plan))))
			b := must(e.weighted("w", must(PermuteProbs(e.in["probs"], e.second()))))
			return must(G.Add(a, b))
		})},
		{"sum(W*permuteProbsGrad(dpp)^2)", []string{"dpp"}, caseFn(func(e *gradEnv) *G.Node {
			d := must(opkit.ApplyOp(permuteProbsGradName, permuteProbsGradOp{g: e.plan.Geometry}, e.in["dpp"], e.plan.Node))
			return must(e.weighted("W", d))
		})},
	}
}

func TestPermuteProbsGradients(t *testing.T) { checkGradCases(t, permuteProbsGradCases()) }

func TestPermuteProbsBadInputs(t *testing.T) {
	g := kernels.Geometry{E: 3, A: 1}
	plan := func(gr *G.ExprGraph) *Plan {
		return must2(NewPlan(idsNode(gr, "ids", 4, 2, okIDs), nil, g))
	}
	runBadCases(t, []badCase{
		{"nil probs", func(gr *G.ExprGraph) (*G.Node, error) { return PermuteProbs(nil, plan(gr)) }, false, []string{"probs is nil"}},
		{"nil plan", func(gr *G.ExprGraph) (*G.Node, error) {
			return PermuteProbs(floatNode(gr, tensor.Float64, "probs", 4, 2), nil)
		}, false, []string{"plan is nil"}},
		{"probs int32", func(gr *G.ExprGraph) (*G.Node, error) {
			return PermuteProbs(idsNode(gr, "probs", 4, 2, okIDs), plan(gr))
		}, false, []string{"probs has dtype int32"}},
		{"probs [T,K+1]", func(gr *G.ExprGraph) (*G.Node, error) {
			return PermuteProbs(floatNode(gr, tensor.Float64, "probs", 4, 3), plan(gr))
		}, false, []string{"probs has shape (4, 3)", "want (T=4, K=2)"}},
		{"probs vector", func(gr *G.ExprGraph) (*G.Node, error) {
			return PermuteProbs(floatNode(gr, tensor.Float64, "probs", 8), plan(gr))
		}, false, []string{"probs has shape (8)"}},
	})
	// Do with values the graph would never pass.
	p := refPlan(kernels.Geometry{T: 4, K: 2, E: 3, A: 1}, okIDs, nil).Flat()
	gg := kernels.Geometry{T: 4, K: 2, E: 3, A: 1}
	planV := int32Dense(p, len(p))
	wantErr(t, "int probs", func() error {
		_, err := (permuteProbsOp{g: gg}).Do(tensor.New(tensor.WithShape(4, 2), tensor.WithBacking(make([]int, 8))), planV)
		return err
	}(), "probs has dtype int")
	wantErr(t, "dpp shape", func() error {
		_, err := (permuteProbsGradOp{g: gg}).Do(denseOf(tensor.Float32, make([]float64, 7), 7), planV)
		return err
	}(), "dpp has shape (7)", "R=8")
	wantErr(t, "float plan", func() error {
		_, err := (permuteProbsOp{g: gg}).Do(denseOf(tensor.Float32, make([]float64, 8), 4, 2), denseOf(tensor.Float32, make([]float64, len(p)), len(p)))
		return err
	}(), "plan has dtype float32, want int32")
}
