package op

import (
	"fmt"
	"math"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
)

// The bad-input table of docs/errors.md for package op: every row gets an error that names
// the problem (at build time from the node function, or at run time from the machine), no
// panic escapes, and a failed run leaves every input value as it was (runBadCases). Rows that
// fail at run time are also run on the lisp machine (forward + backward, the DoDiff path).

// matNode adds a [rows,cols] input of dtype dt holding data (float64 values converted).
func matNode(gr *G.ExprGraph, dt tensor.Dtype, name string, rows, cols int, data []float64) *G.Node {
	return G.NewMatrix(gr, dt, G.WithShape(rows, cols), G.WithName(name), G.WithValue(denseOf(dt, data, rows, cols)))
}

// shapeOnly adds an input node of the given shape with no value (nothing is allocated), for
// build-time checks of sizes too large to allocate.
func shapeOnly(gr *G.ExprGraph, dt tensor.Dtype, name string, shape ...int) *G.Node {
	return G.NewTensor(gr, dt, len(shape), G.WithShape(shape...), G.WithName(name))
}

// shapeVal adds a float64 input of the given shape holding zeros (shapes with a 0 allowed).
func shapeVal(gr *G.ExprGraph, name string, shape ...int) *G.Node {
	return G.NewTensor(gr, tensor.Float64, len(shape), G.WithShape(shape...), G.WithName(name), G.WithValue(tensor.New(tensor.Of(tensor.Float64), tensor.WithShape(shape...))))
}

func nodeErr(n *G.Node, err error) (*G.Node, error) { return n, err }

func planErr(p *Plan, err error) (*G.Node, error) {
	if err != nil {
		return nil, err
	}
	return p.Node, nil
}

// rel builds a build-time row.
func rel(name string, build func(gr *G.ExprGraph) (*G.Node, error), frags ...string) badCase {
	return badCase{name: name, build: build, frags: frags}
}

// relRun builds a run-time row.
func relRun(name string, build func(gr *G.ExprGraph) (*G.Node, error), frags ...string) badCase {
	return badCase{name: name, build: build, atRun: true, frags: frags}
}

var relGeo = kernels.Geometry{E: 3, A: 1}

// relPlan builds a good plan [T=4,K=2,E=3] in gr.
func relPlan(gr *G.ExprGraph) *Plan {
	return must2(NewPlan(idsNode(gr, "ids", 4, 2, okIDs), nil, relGeo))
}

func relCases() []badCase {
	byProb := kernels.Geometry{E: 3, A: 1, Mode: kernels.Capacity, C: 1, Drop: kernels.DropByProb}
	other := func() *G.ExprGraph { return G.NewGraph() }
	nan, inf := math.NaN(), math.Inf(1)
	cases := []badCase{
		// NewPlan
		rel("NewPlan/nil ids", func(gr *G.ExprGraph) (*G.Node, error) { return planErr(NewPlan(nil, nil, relGeo)) }, "ids is nil"),
		rel("NewPlan/ids float", func(gr *G.ExprGraph) (*G.Node, error) {
			return planErr(NewPlan(floatNode(gr, tensor.Float32, "ids", 4, 2), nil, relGeo))
		}, "ids has dtype float32, want int32"),
		rel("NewPlan/ids 3-D", func(gr *G.ExprGraph) (*G.Node, error) {
			return planErr(NewPlan(shapeOnly(gr, tensor.Int32, "ids", 2, 2, 2), nil, relGeo))
		}, "ids has shape (2, 2, 2)"),
		rel("NewPlan/empty batch", func(gr *G.ExprGraph) (*G.Node, error) {
			return planErr(NewPlan(shapeOnly(gr, tensor.Int32, "ids", 0, 2), nil, relGeo))
		}, "T=0 tokens"),
		rel("NewPlan/K > E", func(gr *G.ExprGraph) (*G.Node, error) {
			return planErr(NewPlan(idsNode(gr, "ids", 2, 4, make([]int32, 8)), nil, relGeo))
		}, "K=4 > E=3"),
		rel("NewPlan/E = 0", func(gr *G.ExprGraph) (*G.Node, error) {
			return planErr(NewPlan(idsNode(gr, "ids", 4, 2, okIDs), nil, kernels.Geometry{A: 1}))
		}, "E=0"),
		rel("NewPlan/A = 0", func(gr *G.ExprGraph) (*G.Node, error) {
			return planErr(NewPlan(idsNode(gr, "ids", 4, 2, okIDs), nil, kernels.Geometry{E: 3}))
		}, "alignment A=0"),
		rel("NewPlan/capacity 0", func(gr *G.ExprGraph) (*G.Node, error) {
			return planErr(NewPlan(idsNode(gr, "ids", 4, 2, okIDs), nil, kernels.Geometry{E: 3, A: 1, Mode: kernels.Capacity}))
		}, "capacity C=0"),
		rel("NewPlan/negative capacity", func(gr *G.ExprGraph) (*G.Node, error) {
			return planErr(NewPlan(idsNode(gr, "ids", 4, 2, okIDs), nil, kernels.Geometry{E: 3, A: 1, Mode: kernels.Capacity, C: -2}))
		}, "capacity C=-2"),
		rel("NewPlan/unknown mode", func(gr *G.ExprGraph) (*G.Node, error) {
			return planErr(NewPlan(idsNode(gr, "ids", 4, 2, okIDs), nil, kernels.Geometry{E: 3, A: 1, Mode: 5}))
		}, "unknown mode"),
		rel("NewPlan/T disagrees", func(gr *G.ExprGraph) (*G.Node, error) {
			return planErr(NewPlan(idsNode(gr, "ids", 4, 2, okIDs), nil, kernels.Geometry{T: 5, E: 3, A: 1}))
		}, "T=5"),
		rel("NewPlan/drop by prob without probs", func(gr *G.ExprGraph) (*G.Node, error) {
			return planErr(NewPlan(idsNode(gr, "ids", 4, 2, okIDs), nil, byProb))
		}, "needs the probs"),
		rel("NewPlan/probs wrong shape", func(gr *G.ExprGraph) (*G.Node, error) {
			return planErr(NewPlan(idsNode(gr, "ids", 4, 2, okIDs), floatNode(gr, tensor.Float64, "probs", 4, 3), byProb))
		}, "probs has shape (4, 3)", "K=2"),
		rel("NewPlan/probs int32", func(gr *G.ExprGraph) (*G.Node, error) {
			return planErr(NewPlan(idsNode(gr, "ids", 4, 2, okIDs), idsNode(gr, "probs", 4, 2, okIDs), byProb))
		}, "probs has dtype int32"),
		rel("NewPlan/probs of another graph", func(gr *G.ExprGraph) (*G.Node, error) {
			return planErr(NewPlan(idsNode(gr, "ids", 4, 2, okIDs), floatNode(other(), tensor.Float64, "probs", 4, 2), byProb))
		}, "another graph"),
		rel("NewPlan/rows beyond int32", func(gr *G.ExprGraph) (*G.Node, error) {
			return planErr(NewPlan(shapeOnly(gr, tensor.Int32, "ids", 1<<29, 8), nil, kernels.Geometry{E: 64, A: 1}))
		}, "exceed the int32 row id limit"),
		rel("NewPlan/capacity rows beyond int32", func(gr *G.ExprGraph) (*G.Node, error) {
			return planErr(NewPlan(idsNode(gr, "ids", 4, 2, okIDs), nil, kernels.Geometry{E: 3, A: 1, Mode: kernels.Capacity, C: 1 << 30}))
		}, "exceed the int32 row id limit"),
		relRun("NewPlan/id >= E", func(gr *G.ExprGraph) (*G.Node, error) {
			return planErr(NewPlan(idsNode(gr, "ids", 4, 2, []int32{0, 1, 2, 3, 1, -1, 2, 1}), nil, relGeo))
		}, "ids[1,1] = 3 is out of range [-1, 3)"),
		relRun("NewPlan/id < -1", func(gr *G.ExprGraph) (*G.Node, error) {
			return planErr(NewPlan(idsNode(gr, "ids", 4, 2, []int32{0, 1, 2, -7, 1, -1, 2, 1}), nil, relGeo))
		}, "ids[1,1] = -7 is out of range"),
		relRun("NewPlan/repeated expert", func(gr *G.ExprGraph) (*G.Node, error) {
			return planErr(NewPlan(idsNode(gr, "ids", 4, 2, []int32{0, 1, 2, 2, 1, -1, 2, 1}), nil, relGeo))
		}, "token 1 names expert 2 twice"),
		relRun("NewPlan/NaN prob under drop by prob", func(gr *G.ExprGraph) (*G.Node, error) {
			pr := matNode(gr, tensor.Float32, "probs", 4, 2, []float64{.5, .5, .5, nan, .5, .5, .5, .5})
			return planErr(NewPlan(idsNode(gr, "ids", 4, 2, okIDs), pr, byProb))
		}, "probs[1,1] is NaN"),

		// Permute
		rel("Permute/nil x", func(gr *G.ExprGraph) (*G.Node, error) { return nodeErr(Permute(nil, relPlan(gr))) }, "x is nil"),
		rel("Permute/nil plan", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(Permute(floatNode(gr, tensor.Float64, "x", 4, 3), nil))
		}, "plan is nil"),
		rel("Permute/x has wrong T", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(Permute(floatNode(gr, tensor.Float64, "x", 5, 3), relPlan(gr)))
		}, "x has shape (5, 3)", "T=4"),
		rel("Permute/x vector", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(Permute(floatNode(gr, tensor.Float64, "x", 12), relPlan(gr)))
		}, "x has shape (12)"),
		rel("Permute/x int32", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(Permute(idsNode(gr, "x", 4, 2, okIDs), relPlan(gr)))
		}, "x has dtype int32"),
		rel("Permute/x of another graph", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(Permute(floatNode(other(), tensor.Float64, "x", 4, 3), relPlan(gr)))
		}, "another graph"),
		rel("Permute/x with H = 0", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(Permute(shapeOnly(gr, tensor.Float64, "x", 4, 0), relPlan(gr)))
		}, "x has shape (4, 0)"),

		// PermuteProbs
		rel("PermuteProbs/nil probs", func(gr *G.ExprGraph) (*G.Node, error) { return nodeErr(PermuteProbs(nil, relPlan(gr))) }, "probs is nil"),
		rel("PermuteProbs/probs wrong shape", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(PermuteProbs(floatNode(gr, tensor.Float32, "probs", 4, 3), relPlan(gr)))
		}, "probs has shape (4, 3)"),
		rel("PermuteProbs/probs int32", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(PermuteProbs(idsNode(gr, "probs", 4, 2, okIDs), relPlan(gr)))
		}, "probs has dtype int32"),

		// Unpermute
		rel("Unpermute/nil yp", func(gr *G.ExprGraph) (*G.Node, error) { return nodeErr(Unpermute(nil, nil, relPlan(gr))) }, "yp is nil"),
		rel("Unpermute/yp wrong R", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(Unpermute(floatNode(gr, tensor.Float64, "yp", 7, 3), nil, relPlan(gr)))
		}, "yp has shape (7, 3)", "R=8"),
		rel("Unpermute/probs of another dtype", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(Unpermute(floatNode(gr, tensor.Float64, "yp", 8, 3), floatNode(gr, tensor.Float32, "probs", 4, 2), relPlan(gr)))
		}, "probs have dtype float32 but the data has dtype float64"),
		rel("Unpermute/probs wrong shape", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(Unpermute(floatNode(gr, tensor.Float64, "yp", 8, 3), floatNode(gr, tensor.Float64, "probs", 4, 1), relPlan(gr)))
		}, "probs has shape (4, 1)"),
		rel("Unpermute/yp int32", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(Unpermute(idsNode(gr, "yp", 8, 3, make([]int32, 24)), nil, relPlan(gr)))
		}, "yp has dtype int32"),
		rel("Unpermute/probs of another graph", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(Unpermute(floatNode(gr, tensor.Float64, "yp", 8, 3), floatNode(other(), tensor.Float64, "probs", 4, 2), relPlan(gr)))
		}, "another graph"),

		// GroupedMatMul
		rel("GroupedMatMul/nil plan", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(GroupedMatMul(floatNode(gr, tensor.Float64, "xp", 8, 3), floatNode(gr, tensor.Float64, "w", 3, 3, 2), nil))
		}, "nil plan"),
		rel("GroupedMatMul/nil xp", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(GroupedMatMul(nil, floatNode(gr, tensor.Float64, "w", 3, 3, 2), relPlan(gr)))
		}, "nil input"),
		rel("GroupedMatMul/xp and w dtypes differ", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(GroupedMatMul(floatNode(gr, tensor.Float64, "xp", 8, 3), floatNode(gr, tensor.Float32, "w", 3, 3, 2), relPlan(gr)))
		}, "xp is float64 but w is float32"),
		rel("GroupedMatMul/int32 data", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(GroupedMatMul(shapeOnly(gr, tensor.Int32, "xp", 8, 3), shapeOnly(gr, tensor.Int32, "w", 3, 3, 2), relPlan(gr)))
		}, "GroupedMatMul", "dtype int32"),
		rel("GroupedMatMul/w has wrong E", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(GroupedMatMul(floatNode(gr, tensor.Float64, "xp", 8, 3), floatNode(gr, tensor.Float64, "w", 4, 3, 2), relPlan(gr)))
		}, "GroupedMatMul", "w"),
		rel("GroupedMatMul/xp has wrong R", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(GroupedMatMul(floatNode(gr, tensor.Float64, "xp", 9, 3), floatNode(gr, tensor.Float64, "w", 3, 3, 2), relPlan(gr)))
		}, "GroupedMatMul", "rows input has shape (9, 3)"),
		rel("GroupedMatMul/H disagrees", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(GroupedMatMul(floatNode(gr, tensor.Float64, "xp", 8, 3), floatNode(gr, tensor.Float64, "w", 3, 4, 2), relPlan(gr)))
		}, "GroupedMatMul", "w"),
		rel("GroupedMatMul/float plan", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(groupedMatMulWithPlan(floatNode(gr, tensor.Float64, "xp", 8, 3), floatNode(gr, tensor.Float64, "w", 3, 3, 2), floatNode(gr, tensor.Float64, "plan", 23), relPlan(gr).Geometry))
		}, "plan has dtype float64"),
		rel("GroupedMatMul/invalid geometry", func(gr *G.ExprGraph) (*G.Node, error) {
			p := relPlan(gr)
			return nodeErr(groupedMatMulWithPlan(floatNode(gr, tensor.Float64, "xp", 8, 3), floatNode(gr, tensor.Float64, "w", 3, 3, 2), p.Node, kernels.Geometry{T: 4, K: 2, E: 3}))
		}, "alignment A=0"),
		rel("GroupedMatMul/w of another graph", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(GroupedMatMul(floatNode(gr, tensor.Float64, "xp", 8, 3), floatNode(other(), tensor.Float64, "w", 3, 3, 2), relPlan(gr)))
		}, "another graph"),
		relRun("GroupedMatMul/corrupt plan", func(gr *G.ExprGraph) (*G.Node, error) {
			g := kernels.Geometry{T: 4, K: 2, E: 3, A: 1}
			flat := make([]int32, g.PlanLen())
			copy(flat, []int32{2, 2, 2, 0, 2, 4, 99}) // offsets[E] = 99 > R
			pn := G.NewVector(gr, tensor.Int32, G.WithShape(len(flat)), G.WithName("userplan"), G.WithValue(int32Dense(flat, len(flat))))
			return nodeErr(groupedMatMulWithPlan(floatNode(gr, tensor.Float64, "xp", 8, 3), floatNode(gr, tensor.Float64, "w", 3, 3, 2), pn, g))
		}, "offsets[E] = 99"),

		rel("GroupedMatMul/plan of another geometry", func(gr *G.ExprGraph) (*G.Node, error) {
			p := relPlan(gr)
			return nodeErr(groupedMatMulWithPlan(floatNode(gr, tensor.Float64, "xp", 8, 3), floatNode(gr, tensor.Float64, "w", 3, 3, 2), p.Node, withT(p.Geometry, 5)))
		}, "plan has shape (23), want (27)"),

		// TopK
		rel("TopK/nil scores", func(gr *G.ExprGraph) (*G.Node, error) { return nodeErr(TopK(nil, 1, TopKOpts{})) }, "scores is nil"),
		rel("TopK/scores vector", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(TopK(floatNode(gr, tensor.Float64, "s", 4), 1, TopKOpts{}))
		}, "scores has shape"),
		rel("TopK/int32 scores", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(TopK(idsNode(gr, "s", 4, 2, okIDs), 1, TopKOpts{}))
		}, "TopK: scores: dtype int32"),
		rel("TopK/K = 0", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(TopK(floatNode(gr, tensor.Float64, "s", 4, 3), 0, TopKOpts{}))
		}, "K=0"),
		rel("TopK/K > E", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(TopK(floatNode(gr, tensor.Float64, "s", 4, 3), 4, TopKOpts{}))
		}, "K=4", "E=3"),
		rel("TopK/groups do not divide E", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(TopK(floatNode(gr, tensor.Float64, "s", 4, 6), 2, TopKOpts{Groups: 4, GroupsKept: 2}))
		}, "4 equal groups"),
		rel("TopK/kept > groups", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(TopK(floatNode(gr, tensor.Float64, "s", 4, 6), 2, TopKOpts{Groups: 2, GroupsKept: 3}))
		}, "GroupsKept=3"),
		rel("TopK/K larger than the kept groups", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(TopK(floatNode(gr, tensor.Float64, "s", 4, 6), 3, TopKOpts{Groups: 3, GroupsKept: 1}))
		}, "K=3 experts do not fit in 1 kept groups of 2 experts"),
		rel("TopK/bias wrong shape", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(TopK(floatNode(gr, tensor.Float64, "s", 4, 3), 2, TopKOpts{Bias: floatNode(gr, tensor.Float64, "bias", 4)}))
		}, "bias has shape"),
		rel("TopK/bias of another dtype", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(TopK(floatNode(gr, tensor.Float64, "s", 4, 3), 2, TopKOpts{Bias: floatNode(gr, tensor.Float32, "bias", 3)}))
		}, "bias is float32"),
		rel("TopK/bias of another graph", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(TopK(floatNode(gr, tensor.Float64, "s", 4, 3), 2, TopKOpts{Bias: floatNode(other(), tensor.Float64, "bias", 3)}))
		}, "another graph"),
		relRun("TopK/NaN score", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(TopK(matNode(gr, tensor.Float32, "s", 2, 3, []float64{1, 2, 3, 4, nan, 6}), 2, TopKOpts{}))
		}, "scores[1,1] is NaN"),
		relRun("TopK/NaN bias", func(gr *G.ExprGraph) (*G.Node, error) {
			b := G.NewVector(gr, tensor.Float64, G.WithShape(3), G.WithName("bias"), G.WithValue(denseOf(tensor.Float64, []float64{0, nan, 0}, 3)))
			return nodeErr(TopK(matNode(gr, tensor.Float64, "s", 2, 3, []float64{1, 2, 3, 4, 5, 6}), 2, TopKOpts{Bias: b}))
		}, "bias[1] is NaN"),
		relRun("TopK/Inf score plus -Inf bias", func(gr *G.ExprGraph) (*G.Node, error) {
			b := G.NewVector(gr, tensor.Float64, G.WithShape(3), G.WithName("bias"), G.WithValue(denseOf(tensor.Float64, []float64{0, 0, -inf}, 3)))
			return nodeErr(TopK(matNode(gr, tensor.Float64, "s", 2, 3, []float64{1, 2, inf, 4, 5, 6}), 2, TopKOpts{Bias: b}))
		}, "scores[0,2] + bias[2] is NaN"),

		relRun("TopK/group score NaN", func(gr *G.ExprGraph) (*G.Node, error) {
			s := matNode(gr, tensor.Float64, "s", 2, 4, []float64{1, 2, 3, 4, 1, 2, inf, -inf})
			return nodeErr(TopK(s, 2, TopKOpts{Groups: 2, GroupsKept: 1}))
		}, "the score of group 1 of token 1 is NaN"),

		// RouterTopK, RouterProbs
		rel("RouterTopK/nil logits", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(RouterTopK(nil, 1, RouterOpts{Score: kernels.RouterSoftmax}))
		}, "logits is nil"),
		rel("RouterTopK/K > E", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(RouterTopK(floatNode(gr, tensor.Float64, "s", 4, 3), 4, RouterOpts{Score: kernels.RouterSoftmax}))
		}, "K=4", "E=3"),
		rel("RouterTopK/no score function", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(RouterTopK(floatNode(gr, tensor.Float64, "s", 4, 3), 2, RouterOpts{}))
		}, "unknown score function 0"),
		rel("RouterTopK/groups do not divide E", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(RouterTopK(floatNode(gr, tensor.Float64, "s", 4, 6), 2, RouterOpts{Score: kernels.RouterSigmoid, Groups: 4, GroupsKept: 2}))
		}, "4 equal groups"),
		rel("RouterTopK/bias of another dtype", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(RouterTopK(floatNode(gr, tensor.Float64, "s", 4, 3), 2, RouterOpts{Score: kernels.RouterSoftmax, Bias: floatNode(gr, tensor.Float32, "bias", 3)}))
		}, "bias is float32"),
		relRun("RouterTopK/NaN logit", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(RouterTopK(matNode(gr, tensor.Float32, "s", 2, 3, []float64{1, 2, 3, 4, nan, 6}), 2, RouterOpts{Score: kernels.RouterSoftmax}))
		}, "RouterTopK", "scores[1,1] is NaN"),
		rel("RouterProbs/int32 logits", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(RouterProbs(idsNode(gr, "s", 4, 2, okIDs), idsNode(gr, "ids", 4, 2, okIDs), RouterOpts{Score: kernels.RouterSoftmax}))
		}, "RouterProbs: logits: dtype int32"),
		rel("RouterProbs/K > E", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(RouterProbs(floatNode(gr, tensor.Float64, "s", 4, 1), idsNode(gr, "ids", 4, 2, okIDs), RouterOpts{Score: kernels.RouterSoftmax}))
		}, "RouterProbs: TopK: K=2, want 1 <= K <= E=1"),
		relRun("RouterProbs/id >= E", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(RouterProbs(floatNode(gr, tensor.Float64, "s", 4, 3), idsNode(gr, "ids", 4, 2, []int32{0, 1, 2, 3, 0, 1, 0, 2}), RouterOpts{Score: kernels.RouterSoftmax}))
		}, "RouterProbs", "out of range"),

		// GatherTopK
		rel("GatherTopK/nil ids", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(GatherTopK(floatNode(gr, tensor.Float64, "s", 4, 3), nil))
		}, "nil input"),
		rel("GatherTopK/float ids", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(GatherTopK(floatNode(gr, tensor.Float64, "s", 4, 3), floatNode(gr, tensor.Float64, "ids", 4, 2)))
		}, "ids has dtype float64"),
		rel("GatherTopK/int32 scores", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(GatherTopK(idsNode(gr, "s", 4, 2, okIDs), idsNode(gr, "ids", 4, 2, okIDs)))
		}, "GatherTopK: scores: dtype int32"),
		rel("GatherTopK/T differs", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(GatherTopK(floatNode(gr, tensor.Float64, "s", 5, 3), idsNode(gr, "ids", 4, 2, okIDs)))
		}, "scores (5, 3) and ids (4, 2)"),
		rel("GatherTopK/ids of another graph", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(GatherTopK(floatNode(gr, tensor.Float64, "s", 4, 3), idsNode(other(), "ids", 4, 2, okIDs)))
		}, "another graph"),
		relRun("GatherTopK/id out of range", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(GatherTopK(floatNode(gr, tensor.Float64, "s", 4, 3), idsNode(gr, "ids", 4, 2, []int32{0, 1, 2, 0, 1, 3, 2, 1})))
		}, "ids[2,1] = 3 is out of range"),

		// ExpertLoad
		rel("ExpertLoad/nil ids", func(gr *G.ExprGraph) (*G.Node, error) { return nodeErr(ExpertLoad(nil, 3, 1, tensor.Float64)) }, "ids is nil"),
		rel("ExpertLoad/float ids", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(ExpertLoad(floatNode(gr, tensor.Float64, "ids", 4, 2), 3, 1, tensor.Float64))
		}, "ids has dtype float64"),
		rel("ExpertLoad/E = 0", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(ExpertLoad(idsNode(gr, "ids", 4, 2, okIDs), 0, 1, tensor.Float64))
		}, "E=0"),
		rel("ExpertLoad/sequences do not divide T", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(ExpertLoad(idsNode(gr, "ids", 4, 2, okIDs), 3, 3, tensor.Float64))
		}, "T=4 tokens do not split into 3"),
		rel("ExpertLoad/int32 output dtype", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(ExpertLoad(idsNode(gr, "ids", 4, 2, okIDs), 3, 1, tensor.Int32))
		}, "ExpertLoad: dtype int32"),
		relRun("ExpertLoad/id out of range", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(ExpertLoad(idsNode(gr, "ids", 4, 2, []int32{0, 1, 2, 0, 1, -2, 2, 1}), 3, 1, tensor.Float64))
		}, "ids[2,1] = -2 is out of range"),

		// RowLogSumExp
		rel("RowLogSumExp/nil", func(gr *G.ExprGraph) (*G.Node, error) { return nodeErr(RowLogSumExp(nil)) }, "x is nil"),
		rel("RowLogSumExp/vector", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(RowLogSumExp(floatNode(gr, tensor.Float64, "x", 4)))
		}, "want (T, E)"),
		rel("RowLogSumExp/int32", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(RowLogSumExp(idsNode(gr, "x", 4, 2, okIDs)))
		}, "RowLogSumExp: dtype int32"),

		// Cast
		rel("Cast/nil", func(gr *G.ExprGraph) (*G.Node, error) { return nodeErr(Cast(nil, tensor.Float32)) }, "x is nil"),
		rel("Cast/to int32", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(Cast(floatNode(gr, tensor.Float64, "x", 4, 2), tensor.Int32))
		}, "Cast: target: dtype int32"),
		rel("Cast/from int32", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(Cast(idsNode(gr, "x", 4, 2, okIDs), tensor.Float32))
		}, "Cast: x: dtype int32"),

		// JitterNoise
		rel("JitterNoise/nil", func(gr *G.ExprGraph) (*G.Node, error) { return nodeErr(JitterNoise(nil, .1, 1)) }, "x is nil"),
		rel("JitterNoise/eps = 1", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(JitterNoise(floatNode(gr, tensor.Float64, "x", 4, 2), 1, 1))
		}, "eps=1"),
		rel("JitterNoise/eps NaN", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(JitterNoise(floatNode(gr, tensor.Float64, "x", 4, 2), nan, 1))
		}, "eps=NaN"),
		rel("JitterNoise/negative eps", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(JitterNoise(floatNode(gr, tensor.Float64, "x", 4, 2), -0.5, 1))
		}, "eps=-0.5"),
		rel("JitterNoise/scalar", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(JitterNoise(G.NewScalar(gr, tensor.Float64, G.WithName("x")), .1, 1))
		}, "x is a scalar"),
		rel("JitterNoise/int32", func(gr *G.ExprGraph) (*G.Node, error) {
			return nodeErr(JitterNoise(idsNode(gr, "x", 4, 2, okIDs), .1, 1))
		}, "JitterNoise: dtype int32"),
	}
	return cases
}

// TestReliabilityBadInputs runs the table of docs/errors.md for package op.
func TestReliabilityBadInputs(t *testing.T) {
	cases := relCases()
	runBadCases(t, cases)
	// The run-time rows again on the lisp machine (forward and backward, the DoDiff path).
	for _, c := range cases {
		if !c.atRun {
			continue
		}
		t.Run("lisp/"+c.name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("panic: %v", r)
				}
			}()
			gr := G.NewGraph()
			n, err := c.build(gr)
			if err != nil {
				t.Fatalf("build: %v", err)
			}
			before := map[*G.Node]*tensor.Dense{}
			for _, in := range gr.Inputs() {
				if v := in.Value(); v != nil {
					before[in] = v.(*tensor.Dense).Clone().(*tensor.Dense)
				}
			}
			var opts []G.VMOpt
			if isFloat(n.Dtype()) && !raceDetector { // a scalar cost: the machine runs the backward too
				if _, err := G.Sum(n); err != nil {
					t.Fatal(err)
				}
			} else {
				opts = append(opts, G.ExecuteFwdOnly())
			}
			m := G.NewLispMachine(gr, opts...)
			defer m.Close()
			wantErr(t, "run", m.RunAll(), c.frags...)
			for in, v := range before {
				if !bitsEqual(in.Value(), v) {
					t.Errorf("input %v was modified", in.Name())
				}
			}
		})
	}
}

// TestReliabilityErrorsNameTheOp: every build-time error says which function failed, so a
// user with a deep graph can find the call.
func TestReliabilityErrorsNameTheOp(t *testing.T) {
	for _, c := range relCases() {
		if c.atRun {
			continue
		}
		fn := strings.SplitN(c.name, "/", 2)[0]
		gr := G.NewGraph()
		_, err := func() (n *G.Node, err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("panic: %v", r)
				}
			}()
			return c.build(gr)
		}()
		if err == nil || !strings.HasPrefix(err.Error(), "gomoe: ") || !strings.Contains(err.Error(), fn) {
			t.Errorf("%s: error %v does not start with \"gomoe: \" and name %s", c.name, err, fn)
		}
		if err != nil && fn != "GroupedMatMul" && strings.Contains(err.Error(), "GroupedMatMul") {
			t.Errorf("%s: error %v names another op", c.name, err)
		}
	}
}

// TestAccumulateAllOrNothing: DoDiff adds into the inputs' gradients only after every update
// was checked, so a bad update leaves the gradients that were already there untouched.
func TestAccumulateAllOrNothing(t *testing.T) {
	good := denseOf(tensor.Float64, []float64{1, 2, 3, 4}, 2, 2)
	goodBefore := good.Clone().(*tensor.Dense)
	upd := denseOf(tensor.Float64, []float64{10, 10, 10, 10}, 2, 2)
	cases := []struct {
		name  string
		bad   gradUpdate
		frags []string
	}{
		{"dtype differs", gradUpdate{"probs", denseOf(tensor.Float64, make([]float64, 4), 2, 2), denseOf(tensor.Float32, make([]float64, 4), 2, 2)}, []string{"gradient of probs", "float32"}},
		{"shape differs", gradUpdate{"probs", denseOf(tensor.Float64, make([]float64, 4), 2, 2), denseOf(tensor.Float64, make([]float64, 4), 4, 1)}, []string{"gradient of probs", "(4, 1)"}},
		{"missing", gradUpdate{"probs", nil, upd}, []string{"gradient of probs is missing"}},
		{"int gradient", gradUpdate{"probs", int32Dense(make([]int32, 4), 2, 2), int32Dense(make([]int32, 4), 2, 2)}, []string{"gradient of probs", "int32"}},
		// A host gradient and a device update, or the reverse: they were added through the
		// first operand's engine (a host engine read the device memory from the host).
		{"device update into a host gradient", gradUpdate{"probs", denseOf(tensor.Float64, make([]float64, 4), 2, 2), fakeOwned(denseOf(tensor.Float64, make([]float64, 4), 2, 2))}, []string{"gradient of probs is a host value but its update a device value"}},
		{"host update into a device gradient", gradUpdate{"probs", fakeOwned(denseOf(tensor.Float64, make([]float64, 4), 2, 2)), denseOf(tensor.Float64, make([]float64, 4), 2, 2)}, []string{"gradient of probs is a device value but its update a host value"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := accumulate("test", gradUpdate{"yp", good, upd}, c.bad)
			wantErr(t, "accumulate", err, c.frags...)
			if !bitsEqual(good, goodBefore) {
				t.Fatalf("the good gradient was changed although accumulate failed")
			}
		})
	}
	// And the good case does add.
	if err := accumulate("test", gradUpdate{"yp", good, upd}); err != nil {
		t.Fatal(err)
	}
	if got := good.Float64s(); got[0] != 11 || got[3] != 14 {
		t.Fatalf("accumulate gave %v, want [11 12 13 14]", got)
	}
}

// fakeOwned makes d a value of a new fake device and returns it.
func fakeOwned(d *tensor.Dense) *tensor.Dense {
	newFakeDevice().own(d)
	return d
}

// TestReliabilityGroupedMatMulEmptyDims: a weight with H = 0 or N = 0 (a zero-size tensor)
// fails the run with an error instead of a panic in gonum's gemm. (Kept out of the table:
// gorgonia.org/tensor's Dense.Data panics on zero-size tensors, so runBadCases cannot
// compare them; the non-empty inputs are compared here.)
func TestReliabilityGroupedMatMulEmptyDims(t *testing.T) {
	for _, c := range []struct {
		name    string
		xp, w   []int
		message string
	}{
		{"H = 0", []int{8, 0}, []int{3, 0, 2}, "H=0 N=2, want both >= 1"},
		{"N = 0", []int{8, 3}, []int{3, 3, 0}, "H=3 N=0, want both >= 1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("panic: %v", r)
				}
			}()
			gr := G.NewGraph()
			xp := shapeVal(gr, "xp", c.xp...)
			if len(xp.Value().(*tensor.Dense).Float64s()) > 0 {
				copy(xp.Value().(*tensor.Dense).Float64s(), []float64{1, 2, 3})
			}
			n, err := GroupedMatMul(xp, shapeVal(gr, "w", c.w...), relPlan(gr))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := G.Sum(n); err != nil {
				t.Fatal(err)
			}
			lisp := G.NewLispMachine(gr)
			if raceDetector { // see raceDetector
				lisp = G.NewLispMachine(gr, G.ExecuteFwdOnly())
			}
			for _, m := range []G.VM{G.NewTapeMachine(gr), lisp} {
				wantErr(t, "run", m.RunAll(), c.message)
				m.Close()
			}
			if v := xp.Value().(*tensor.Dense).Float64s(); len(v) > 0 && (v[0] != 1 || v[2] != 3) {
				t.Errorf("xp was modified: %v", v[:3])
			}
		})
	}
}

// TestReliabilityFailedRunKeepsGradients: the gradients a lisp machine accumulated in a good
// run are still there, bit for bit, after a later run fails on bad ids, and the values are
// unchanged; a good run after the failure works again.
func TestReliabilityFailedRunKeepsGradients(t *testing.T) {
	if raceDetector {
		t.Skip("see raceDetector: the lisp machine's error path with backprop races in gorgonia v0.9.18")
	}
	gr := G.NewGraph()
	ids := idsNode(gr, "ids", 4, 2, okIDs)
	x := matNode(gr, tensor.Float64, "x", 4, 3, []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	probs := matNode(gr, tensor.Float64, "probs", 4, 2, []float64{.5, .25, .125, 1, 2, 3, .5, .75})
	p := must2(NewPlan(ids, nil, relGeo))
	y := must(Unpermute(must(Permute(x, p)), probs, p))
	must(G.Sum(must(G.Square(y))))
	m := G.NewLispMachine(gr)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	grads := func() []*tensor.Dense {
		var out []*tensor.Dense
		for _, n := range []*G.Node{x, probs} {
			g, err := n.Grad()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, g.(*tensor.Dense).Clone().(*tensor.Dense))
		}
		return out
	}
	good := grads()
	xBefore := x.Value().(*tensor.Dense).Clone().(*tensor.Dense)
	if err := G.Let(ids, int32Dense([]int32{0, 1, 2, 0, 1, 7, 2, 1}, 4, 2)); err != nil {
		t.Fatal(err)
	}
	// A lisp machine runs its graph once: every run gets a fresh machine.
	m2 := G.NewLispMachine(gr)
	defer m2.Close()
	wantErr(t, "run with bad ids", m2.RunAll(), "ids[2,1] = 7 is out of range")
	for i, g := range grads() {
		if !bitsEqual(g, good[i]) {
			t.Errorf("gradient %d changed by the failed run", i)
		}
	}
	if !bitsEqual(x.Value(), xBefore) {
		t.Error("x changed by the failed run")
	}
	if err := G.Let(ids, int32Dense(okIDs, 4, 2)); err != nil {
		t.Fatal(err)
	}
	m3 := G.NewLispMachine(gr)
	defer m3.Close()
	if err := m3.RunAll(); err != nil {
		t.Fatalf("good run after a failed one: %v", err)
	}
	// Gradients accumulate over runs until an optimiser step clears them: after the failed
	// run and one more good run they are exactly twice the first, so the failed run added
	// nothing.
	for i, g := range grads() {
		got, first := g.Float64s(), good[i].Float64s()
		for j := range got {
			if got[j] != 2*first[j] {
				t.Fatalf("gradient %d after good, failed, good runs: [%d] = %v, want 2·%v", i, j, got[j], first[j])
			}
		}
	}
}
