package op

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
)

// hostileChildEnv makes the test binary run the degenerate-shape cases itself (the child);
// the parent runs it in a child process, because a panic inside a machine's goroutine would
// kill the test binary rather than fail one case.
const hostileChildEnv = "GOMOE_HOSTILE_CHILD"

type degenerateCase struct {
	name  string
	build func(g *G.ExprGraph) (*G.Node, error)
	want  string // build error fragment; "" = builds, and runs forward and backward without error
}

func degenerateCases() []degenerateCase {
	val := func(g *G.ExprGraph, dt tensor.Dtype, name string, s ...int) *G.Node {
		n := 1
		for _, d := range s {
			n *= d
		}
		var data any = make([]float32, n)
		if dt == tensor.Int32 {
			data = make([]int32, n)
		}
		return G.NewTensor(g, dt, len(s), G.WithShape(s...), G.WithName(name), G.WithValue(tensor.New(tensor.WithShape(s...), tensor.WithBacking(data))))
	}
	f := func(g *G.ExprGraph, name string, s ...int) *G.Node { return val(g, tensor.Float32, name, s...) }
	i := func(g *G.ExprGraph, name string, s ...int) *G.Node { return val(g, tensor.Int32, name, s...) }
	var cs []degenerateCase
	add := func(name, want string, b func(g *G.ExprGraph) (*G.Node, error)) {
		cs = append(cs, degenerateCase{name, b, want})
	}
	add("MatMul [2,0]·[0,3] (the issue's case)", "MatMul: a (2, 0) times b (0, 3): every size must be >= 1", func(g *G.ExprGraph) (*G.Node, error) { return MatMul(f(g, "a", 2, 0), f(g, "b", 0, 3)) })
	add("MatMul [0,3]·[3,2]", "a (0, 3) times b (3, 2): every size must be >= 1", func(g *G.ExprGraph) (*G.Node, error) { return MatMul(f(g, "a", 0, 3), f(g, "b", 3, 2)) })
	add("MatMul [2,3]·[3,0]", "every size must be >= 1", func(g *G.ExprGraph) (*G.Node, error) { return MatMul(f(g, "a", 2, 3), f(g, "b", 3, 0)) })
	for _, s := range [][]int{{0, 3}, {2, 0}} {
		sh := fmt.Sprint(s)
		add("Cast "+sh, "Cast: x has shape", func(g *G.ExprGraph) (*G.Node, error) { return Cast(f(g, "a", s...), tensor.Float64) })
		add("Scale "+sh, "Scale: x has shape", func(g *G.ExprGraph) (*G.Node, error) { return Scale(f(g, "a", s...), 2) })
		add("RowLogSumExp "+sh, "RowLogSumExp: x has shape", func(g *G.ExprGraph) (*G.Node, error) { return RowLogSumExp(f(g, "a", s...)) })
		add("GatherTopK "+sh, "GatherTopK: scores", func(g *G.ExprGraph) (*G.Node, error) { return GatherTopK(f(g, "s", s...), i(g, "i", s[0], 1)) })
		add("SwiGLU "+sh, "SwiGLU: x is empty", func(g *G.ExprGraph) (*G.Node, error) { return SwiGLU(f(g, "a", s...), f(g, "b", s...)) })
		add("Softmax "+sh, "Softmax: x is empty", func(g *G.ExprGraph) (*G.Node, error) { return Softmax(f(g, "a", s...)) })
		add("ReLU "+sh, "want a non-empty tensor", func(g *G.ExprGraph) (*G.Node, error) { return ReLU(f(g, "a", s...)) })
		add("RMSNorm "+sh, "RMSNorm: x has shape", func(g *G.ExprGraph) (*G.Node, error) { return RMSNorm(f(g, "a", s...), f(g, "g", s[1]), 1e-5) })
		add("ZLoss "+sh, "ZLoss: logits has shape", func(g *G.ExprGraph) (*G.Node, error) { return ZLoss(f(g, "a", s...), 0.1) })
		add("CrossEntropy "+sh, "CrossEntropy: logits has shape", func(g *G.ExprGraph) (*G.Node, error) { return CrossEntropy(f(g, "a", s...), f(g, "t", s...)) })
		add("ScaleRows "+sh, "ScaleRows: x has shape", func(g *G.ExprGraph) (*G.Node, error) { return ScaleRows(f(g, "a", s...), f(g, "s", s[0])) })
		add("Embedding table "+sh, "Embedding: table has shape", func(g *G.ExprGraph) (*G.Node, error) { return Embedding(f(g, "a", s...), i(g, "i", 2)) })
	}
	// Non-differentiable outputs accept T = 0 and return empty outputs (docs/errors.md).
	add("TopK of no tokens", "", func(g *G.ExprGraph) (*G.Node, error) { return TopK(f(g, "s", 0, 3), 1, TopKOpts{}) })
	add("ExpertLoad of no tokens", "", func(g *G.ExprGraph) (*G.Node, error) { return ExpertLoad(i(g, "i", 0, 2), 3, 1, tensor.Float32) })
	add("JitterNoise of no tokens", "", func(g *G.ExprGraph) (*G.Node, error) { return JitterNoise(f(g, "x", 0, 3), 0.1, 1) })
	return cs
}

// runDegenerate builds one case and, if it builds, runs it (with the gradient of every float
// input where the output is a float).
func runDegenerate(c degenerateCase) error {
	g := G.NewGraph()
	n, err := c.build(g)
	if err != nil {
		return err
	}
	if n.Dtype() == tensor.Float32 && n.Shape().TotalSize() > 0 {
		cost, err := G.Sum(n)
		if err != nil {
			return err
		}
		var wrt G.Nodes
		for _, in := range g.Inputs() {
			if in.Dtype() == tensor.Float32 {
				wrt = append(wrt, in)
			}
		}
		if len(wrt) > 0 {
			if _, err := G.Grad(cost, wrt...); err != nil {
				return err
			}
		}
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	return m.RunAll()
}

// TestHostileDegenerateShapes: empty (zero-sized) inputs give a build error naming the op and
// the shape, or build and run; nothing panics (checked in a child process, since a panic in a
// machine's goroutine cannot be recovered).
func TestHostileDegenerateShapes(t *testing.T) {
	if os.Getenv(hostileChildEnv) == "1" {
		for _, c := range degenerateCases() {
			err := runDegenerate(c)
			fmt.Printf("CASE %s\tERR %v\n", c.name, err)
		}
		fmt.Println("CHILD DONE")
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHostileDegenerateShapes$", "-test.count=1")
	cmd.Env = append(os.Environ(), hostileChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "CHILD DONE") {
		t.Fatalf("the child process died (a panic escaped): %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if name, rest, ok := strings.Cut(strings.TrimPrefix(line, "CASE "), "\tERR "); ok && strings.HasPrefix(line, "CASE ") {
			got[name] = rest
		}
	}
	for _, c := range degenerateCases() {
		e, ok := got[c.name]
		switch {
		case !ok:
			t.Errorf("%s: no result from the child", c.name)
		case c.want == "" && e != "<nil>":
			t.Errorf("%s: %s, want it to build and run", c.name, e)
		case c.want != "" && (!strings.Contains(e, c.want) || !strings.HasPrefix(e, "gomoe: ")):
			t.Errorf("%s: %s, want an error containing %q", c.name, e, c.want)
		}
	}
}

// TestHostileNewPlanSizes: op.NewPlan with geometries whose sizes overflow int or exceed
// int32 expert ids returns a build error (it used to panic in Geometry.View, or die of
// out-of-memory for E = 2^40) and adds no node.
func TestHostileNewPlanSizes(t *testing.T) {
	for _, c := range []struct {
		name string
		geo  kernels.Geometry
		want string
	}{
		{"E = MaxInt", kernels.Geometry{E: math.MaxInt, A: 1}, "E=9223372036854775807 experts exceed the int32 expert id limit"},
		{"E = 2^40", kernels.Geometry{E: 1 << 40, A: 1}, "E=1099511627776 experts exceed"},
		{"capacity C = MaxInt", kernels.Geometry{E: 4, A: 1, Mode: kernels.Capacity, C: math.MaxInt}, "exceed the int32 row id limit"},
		{"PadToCapacity in dropless mode", kernels.Geometry{E: 4, A: 1, PadToCapacity: true}, "PadToCapacity given in dropless mode"},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := G.NewGraph()
			ids := G.NewMatrix(g, tensor.Int32, G.WithShape(1, 1), G.WithName("ids"))
			before := len(g.AllNodes())
			_, err := NewPlan(ids, nil, c.geo)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "gomoe: op.NewPlan: ") {
				t.Errorf("%v, want %q", err, c.want)
			}
			if len(g.AllNodes()) != before {
				t.Errorf("a failed NewPlan added nodes")
			}
		})
	}
}
