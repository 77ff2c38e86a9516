package op

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/internal/hostmem"
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
	// No slots (ids [T,0]) is no routing: ExpertLoad refuses K = 0 at build as NewPlan and TopK
	// do (it built and ran, giving all-zero loads).
	add("ExpertLoad of no slots", "ExpertLoad: ids have shape (4, 0): K=0 slots per token, want K >= 1", func(g *G.ExprGraph) (*G.Node, error) { return ExpertLoad(i(g, "i", 4, 0), 3, 2, tensor.Float32) })
	add("ExpertLoad of no tokens and no slots", "K=0 slots per token", func(g *G.ExprGraph) (*G.Node, error) { return ExpertLoad(i(g, "i", 0, 0), 3, 1, tensor.Float64) })
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

// TestHostileOutputsBeyondMemory: an output larger than every input that would not fit in the
// machine's memory (the permuted rows of a huge capacity, a grouped matmul's rows, an expert
// load of many experts, an embedding of many ids) is a run
// error: allocating it used to end the process (a failed Go allocation cannot be recovered).
// The machine is made 1 MiB small (hostmem.SetLimit) so that nothing large is allocated.
func TestHostileOutputsBeyondMemory(t *testing.T) {
	defer hostmem.SetLimit(hostmem.SetLimit(1 << 20))
	const H = 64
	geo := kernels.Geometry{E: 2, A: 1, Mode: kernels.Capacity, C: 1 << 12, Drop: kernels.DropByPosition} // R = 8192 rows
	for _, c := range []struct {
		name  string
		build func(g *G.ExprGraph, x *G.Node, p *Plan) (*G.Node, error)
		want  string
	}{
		{"Permute: 8192 rows of 64", func(g *G.ExprGraph, x *G.Node, p *Plan) (*G.Node, error) { return Permute(x, p) },
			"Permute: an output of shape (8192, 64) need 4.194e+06 bytes, more than the 1048576 bytes of memory"},
		{"GroupedMatMul: 8192 rows of 64", func(g *G.ExprGraph, x *G.Node, p *Plan) (*G.Node, error) {
			xp := G.NewMatrix(g, tensor.Float64, G.WithShape(8192, 1), G.WithName("xp"), G.WithValue(denseOf(tensor.Float64, make([]float64, 8192), 8192, 1)))
			w := G.NewTensor(g, tensor.Float64, 3, G.WithShape(2, 1, H), G.WithName("w"), G.WithValue(denseOf(tensor.Float64, make([]float64, 2*H), 2, 1, H)))
			return GroupedMatMul(xp, w, p)
		}, "GroupedMatMul: an output of shape (8192, 64) need 4.194e+06 bytes"},
		// The two outputs whose size no input bounds: E counts of ExpertLoad, N·D rows of
		// Embedding (each used to be allocated, ending the process at E = 2^36 or N·D = 2^35).
		{"ExpertLoad: 2^20 experts", func(g *G.ExprGraph, x *G.Node, p *Plan) (*G.Node, error) {
			return ExpertLoad(idsNode(g, "ids2", 2, 1, []int32{0, 1}), 1<<20, 1, tensor.Float64)
		}, "ExpertLoad: an output of shape (1, 1048576) need 8.389e+06 bytes"},
		{"Embedding: 8192 rows of 64 from one", func(g *G.ExprGraph, x *G.Node, p *Plan) (*G.Node, error) {
			table := G.NewMatrix(g, tensor.Float64, G.WithShape(1, H), G.WithName("table"), G.WithValue(denseOf(tensor.Float64, make([]float64, H), 1, H)))
			ids := G.NewVector(g, tensor.Int32, G.WithShape(8192), G.WithName("tok"), G.WithValue(tensor.New(tensor.WithShape(8192), tensor.WithBacking(make([]int32, 8192)))))
			return Embedding(table, ids)
		}, "Embedding: an output of shape (8192, 64) need 4.194e+06 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := G.NewGraph()
			ids := idsNode(g, "ids", 2, 1, []int32{0, 1})
			x := G.NewMatrix(g, tensor.Float64, G.WithShape(2, H), G.WithName("x"), G.WithValue(denseOf(tensor.Float64, make([]float64, 2*H), 2, H)))
			p, err := NewPlan(ids, nil, geo)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.build(g, x, p); err != nil {
				t.Fatal(err)
			}
			m := G.NewTapeMachine(g)
			defer m.Close()
			if err := m.RunAll(); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%v, want %q", err, c.want)
			}
		})
	}
}

// everyOpGraph builds, on small float64 values, a graph that uses every op type of this
// package: the routing chain, the fused router, the experts' grouped matmuls, the losses and
// the NN ops, with the gradient of one cost to every float input.
func everyOpGraph(t *testing.T) *G.ExprGraph {
	t.Helper()
	const T, H, F, E, K, V = 6, 4, 3, 4, 2, 5
	g := G.NewGraph()
	val := func(name string, s ...int) *G.Node {
		n := 1
		for _, d := range s {
			n *= d
		}
		data := make([]float64, n)
		for i := range data {
			data[i] = math.Sin(float64(3*i+len(name))) / 2
		}
		return G.NewTensor(g, tensor.Float64, len(s), G.WithShape(s...), G.WithName(name), G.WithValue(denseOf(tensor.Float64, data, s...)))
	}
	x, wr, bias := val("x", T, H), val("wr", H, E), val("bias", E)
	logits := must(MatMul(x, wr))
	scores := must(Softmax(logits))
	ids := must(TopK(scores, K, TopKOpts{Bias: bias}))
	probs := must(RowNormalize(must(GatherTopK(scores, ids))))
	plan, err := NewPlan(ids, nil, kernels.Geometry{T: T, K: K, E: E, A: 1})
	if err != nil {
		t.Fatal(err)
	}
	xp := must(Permute(x, plan))
	h := must(SwiGLUPacked(must(GroupedMatMul(xp, val("w1", E, H, 2*F), plan))))
	yp := must(GroupedMatMul(h, val("w2", E, F, H), plan))
	y := must(Unpermute(yp, probs, plan))
	yUnweighted := must(Unpermute(must(ScaleRows(yp, must(PermuteProbs(probs, plan)))), nil, plan))

	rids := must(RouterTopK(logits, K, RouterOpts{Score: kernels.RouterSigmoid, Bias: bias}))
	rprobs := must(RouterProbs(logits, rids, RouterOpts{Score: kernels.RouterSigmoid}))
	aux := must(RouterBalanceLoss(rids, logits, E, K, 1, 0.1, kernels.RouterSigmoid))
	bal := must(BalanceLoss(ids, scores, E, K, 1, 0.1))
	z := must(ZLoss(logits, 0.01))
	load := must(ExpertLoad(ids, E, 1, tensor.Float64))
	jit := must(JitterNoise(x, 0.1, 1))

	tok := G.NewVector(g, tensor.Int32, G.WithShape(T), G.WithName("tok"), G.WithValue(tensor.New(tensor.WithShape(T), tensor.WithBacking([]int32{0, 1, 2, 3, 4, 0}))))
	emb := must(Embedding(val("table", V, H), tok))
	nn := must(RMSNorm(must(G.Add(emb, y)), val("gain", H), 1e-6))
	nn = must(ReLU(must(BiasAdd(nn, val("b", H)))))
	nn = must(G.Add(must(Sigmoid(nn)), must(GELU(yUnweighted))))
	nn = must(SwiGLU(nn, must(G.HadamardProd(x, jit))))
	nn = must(Cast(must(MixedMatMul(must(Cast(nn, tensor.Float32)), must(Cast(val("wm", H, V), tensor.Float32)), tensor.Float32)), tensor.Float64))
	ce := must(CrossEntropy(must(Scale(nn, 0.5)), must(Softmax(val("target", T, V)))))
	lse := must(G.Sum(must(RowLogSumExp(logits))))
	routed := must(G.Sum(must(G.HadamardProd(rprobs, rprobs))))
	cost := must(AddScalars(ce, lse, routed, aux, bal, z, must(G.Sum(load))))
	if _, err := Sink(cost); err != nil {
		t.Fatal(err)
	}
	var wrt G.Nodes
	for _, in := range g.Inputs() {
		if in.Dtype() == tensor.Float64 && in.Name() != "target" && in.Name() != "bias" {
			wrt = append(wrt, in)
		}
	}
	if _, err := G.Grad(cost, wrt...); err != nil {
		t.Fatal(err)
	}
	return g
}

// opTypesWithDo lists the types of this package that have a Do method (every op), read from
// its source, so that a new op is missed by no test below.
func opTypesWithDo(t *testing.T) []string {
	t.Helper()
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Recv == nil || fn.Name.Name != "Do" {
				continue
			}
			recv := fn.Recv.List[0].Type
			if s, ok := recv.(*ast.StarExpr); ok {
				recv = s.X
			}
			types = append(types, recv.(*ast.Ident).Name)
		}
	}
	sort.Strings(types)
	return types
}

// TestHostileNilValues: Do of every op, called directly with a value that holds a nil
// pointer (a (*tensor.Dense)(nil) in a G.Value) or an empty *tensor.Dense in any one input,
// the other inputs real, returns an error and does not panic. Gorgonia's machines never pass
// such values; a program calling Do itself may.
func TestHostileNilValues(t *testing.T) {
	g := everyOpGraph(t)
	m := G.NewTapeMachine(g, G.TraceExec()) // TraceExec keeps every node's value
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, n := range g.AllNodes() {
		op := n.Op()
		if op == nil {
			continue
		}
		typ := reflect.TypeOf(op)
		if typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		if typ.PkgPath() != reflect.TypeOf(Plan{}).PkgPath() {
			continue
		}
		seen[typ.Name()] = true
		var vals []G.Value
		for it := g.From(n.ID()); it.Next(); {
			vals = append(vals, it.Node().(*G.Node).Value())
		}
		if _, err := op.Do(vals...); err != nil {
			t.Fatalf("%v: Do with the machine's values: %v", op, err)
		}
		for i := range vals {
			for _, bad := range []struct {
				name string
				v    G.Value
				want string
			}{
				{"nil *tensor.Dense", (*tensor.Dense)(nil), fmt.Sprintf("input %d is nil", i)},
				{"empty *tensor.Dense", new(tensor.Dense), fmt.Sprintf("input %d is an empty *tensor.Dense", i)},
			} {
				in := slices.Clone(vals)
				in[i] = bad.v
				err := func() (err error) {
					defer func() {
						if r := recover(); r != nil {
							err = fmt.Errorf("panic: %v", r)
						}
					}()
					_, err = op.Do(in...)
					return err
				}()
				if err == nil || strings.HasPrefix(err.Error(), "panic") || !strings.Contains(err.Error(), bad.want) {
					t.Errorf("%v with a %s as input %d: %v, want an error containing %q", op, bad.name, i, err, bad.want)
				}
			}
		}
	}
	for _, name := range opTypesWithDo(t) {
		if !seen[name] {
			t.Errorf("the graph has no %s node: add it to everyOpGraph", name)
		}
	}
}

// TestHostileDtypesNameTheOp: the Do of JitterNoise, RowLogSumExp, GatherTopK and their
// gradients, called with a value of a dtype they do not take (bfloat16, int32), returns an
// error that names the op itself and the input; it used to name GroupedMatMul ("gomoe:
// GroupedMatMul: dtype BFloat16, want float32 or float64"), whose dtype check they shared.
func TestHostileDtypesNameTheOp(t *testing.T) {
	f64 := func(s ...int) *tensor.Dense {
		return tensor.New(tensor.WithShape(s...), tensor.WithBacking(make([]float64, tensor.Shape(s).TotalSize())))
	}
	ids := tensor.New(tensor.WithShape(2, 1), tensor.WithBacking([]int32{0, 1}))
	for _, bad := range []*tensor.Dense{
		tensor.New(tensor.Of(bfloat16.Dtype), tensor.WithShape(2, 3)),
		tensor.New(tensor.WithShape(2, 3), tensor.WithBacking(make([]int32, 6))),
	} {
		badK := tensor.New(tensor.Of(bad.Dtype()), tensor.WithShape(2, 1))
		for _, c := range []struct {
			op   G.Op
			in   []G.Value
			want string
		}{
			{&jitterNoiseOp{eps: 0.1, dims: 2}, []G.Value{bad}, "JitterNoise: x has dtype"},
			{lseOp{}, []G.Value{bad}, "RowLogSumExp: x has dtype"},
			{lseGradOp{}, []G.Value{bad, f64(2), f64(2)}, "RowLogSumExpGrad: x has dtype"},
			{gatherTopKOp{e: 3}, []G.Value{bad, ids}, "GatherTopK: scores has dtype"},
			{gatherTopKGradOp{e: 3}, []G.Value{badK, ids}, "GatherTopKGrad: grad has dtype"},
		} {
			_, err := c.op.Do(c.in...)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "GroupedMatMul") {
				t.Errorf("%v with a %v input: %v, want an error containing %q", c.op, bad.Dtype(), err, c.want)
			}
		}
	}
}
