package ep

import (
	"fmt"
	"math"
	"math/rand"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/reftest"
	"github.com/gomoe/gomoe/kernels"
	"github.com/gomoe/gomoe/op"
)

// The expert-parallel layer (NewPlan, Dispatch, grouped-matmul experts, Combine) on N
// in-process ranks must give the single-rank layer's output and gradients on the same inputs,
// bit for bit: the data movement is exact, and every expert sees the same rows in the same
// order as in the single-rank layout.

// layerCase is one MoE layer: N ranks of T tokens each, E experts, top-K, hidden H, expert
// width F, alignment A, a fraction drop of (token, slot) pairs with id -1.
type layerCase struct {
	name             string
	N, T, K, E, H, F int
	A                int
	drop             float64
	capacity         int // capacity per expert per rank (0: dropless)
	// rowwise replaces the grouped-matmul FFN experts by tanh on each row. Gonum's float32
	// gemm rounds differently depending on the memory alignment of its operands, so the FFN
	// experts give bitwise equal results only in float64; rowwise experts isolate the data
	// movement, which must be bitwise in both dtypes.
	rowwise bool
}

// layerInputs are the global inputs of a case; rank r owns tokens [r·T, (r+1)·T) and experts
// [r·E/N, (r+1)·E/N).
type layerInputs struct {
	x, probs, w1, w2, rw []float64
	ids                  []int32
}

func makeInputs(c layerCase, seed int64) layerInputs {
	rng := rand.New(rand.NewSource(seed))
	nt := c.N * c.T
	in := layerInputs{ids: make([]int32, nt*c.K)}
	fill := func(n int) []float64 {
		s := make([]float64, n)
		for i := range s {
			s[i] = rng.Float64()*2 - 1
		}
		return s
	}
	in.x, in.probs, in.rw = fill(nt*c.H), fill(nt*c.K), fill(nt*c.H)
	in.w1, in.w2 = fill(c.E*c.H*c.F), fill(c.E*c.F*c.H)
	for t := 0; t < nt; t++ {
		perm := rng.Perm(c.E)
		for k := 0; k < c.K; k++ {
			in.ids[t*c.K+k] = int32(perm[k])
			if rng.Float64() < c.drop {
				in.ids[t*c.K+k] = -1
			}
		}
	}
	return in
}

// layerResult holds the layer's output and gradients in global order, and the rows each
// expert received (the dispatch result), as float64 (exact for float32 data).
type layerResult struct {
	y, dx, dprobs, dw1, dw2 []float64
	rows                    [][]float64 // rows[e]: expert e's real rows, flattened
}

func dense(dt tensor.Dtype, v []float64, shape ...int) *tensor.Dense {
	if dt == tensor.Float32 {
		b := make([]float32, len(v))
		for i, x := range v {
			b[i] = float32(x)
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(b))
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), v...)))
}

func floats(v G.Value) []float64 {
	switch d := v.Data().(type) {
	case []float32:
		o := make([]float64, len(d))
		for i, x := range d {
			o[i] = float64(x)
		}
		return o
	case []float64:
		return append([]float64(nil), d...)
	}
	panic(fmt.Sprintf("floats: %T", v.Data()))
}

// layerNodes are the inputs of one graph (the whole problem, or one rank's part).
type layerNodes struct {
	x, probs, w1, w2, rw, ids *G.Node
}

func newLayerNodes(g *G.ExprGraph, dt tensor.Dtype, c layerCase, t, e int, x, probs, w1, w2, rw []float64, ids []int32) layerNodes {
	n := layerNodes{
		x:     G.NewMatrix(g, dt, G.WithShape(t, c.H), G.WithName("x"), G.WithValue(dense(dt, x, t, c.H))),
		probs: G.NewMatrix(g, dt, G.WithShape(t, c.K), G.WithName("probs"), G.WithValue(dense(dt, probs, t, c.K))),
		rw:    G.NewMatrix(g, dt, G.WithShape(t, c.H), G.WithName("rw"), G.WithValue(dense(dt, rw, t, c.H))),
		ids: G.NewMatrix(g, tensor.Int32, G.WithShape(t, c.K), G.WithName("ids"),
			G.WithValue(tensor.New(tensor.WithShape(t, c.K), tensor.WithBacking(append([]int32(nil), ids...))))),
	}
	if !c.rowwise { // an unused input would be a second root of the graph
		n.w1 = G.NewTensor(g, dt, 3, G.WithShape(e, c.H, c.F), G.WithName("w1"), G.WithValue(dense(dt, w1, e, c.H, c.F)))
		n.w2 = G.NewTensor(g, dt, 3, G.WithShape(e, c.F, c.H), G.WithName("w2"), G.WithValue(dense(dt, w2, e, c.F, c.H)))
	}
	return n
}

// wrt lists the inputs whose gradients a case checks.
func (n layerNodes) wrt(c layerCase) []*G.Node {
	if c.rowwise {
		return []*G.Node{n.x, n.probs}
	}
	return []*G.Node{n.x, n.probs, n.w1, n.w2}
}

// experts is the expert FFN on permuted rows: tanh(xp·w1)·w2 per expert segment, or tanh(xp)
// for a rowwise case.
func experts(c layerCase, xp, w1, w2 *G.Node, p *op.Plan) (*G.Node, error) {
	if c.rowwise {
		return G.Tanh(xp)
	}
	z, err := op.GroupedMatMul(xp, w1, p)
	if err != nil {
		return nil, err
	}
	h, err := G.Tanh(z)
	if err != nil {
		return nil, err
	}
	return op.GroupedMatMul(h, w2, p)
}

func geometry(c layerCase) kernels.Geometry {
	g := kernels.Geometry{E: c.E, A: c.A}
	if c.capacity > 0 {
		g.Mode, g.C, g.PadToCapacity = kernels.Capacity, c.capacity, true
	}
	return g
}

// machineKind selects how gradients are computed.
type machineKind int

const (
	tape machineKind = iota // G.Grad (SymDiff) and a tape machine
	lisp                    // the lisp machine (DoDiff)
)

// runGraph runs g with cost as the root and returns the values of reads and the gradients of
// wrt.
func runGraph(g *G.ExprGraph, mk machineKind, cost *G.Node, wrt []*G.Node, reads ...*G.Node) (vals, grads []G.Value, err error) {
	vals = make([]G.Value, len(reads))
	for i, n := range reads {
		G.Read(n, &vals[i])
	}
	var m G.VM
	var gn G.Nodes
	if mk == tape {
		if gn, err = G.Grad(cost, wrt...); err != nil {
			return nil, nil, err
		}
		m = G.NewTapeMachine(g)
	} else {
		m = G.NewLispMachine(g)
	}
	defer m.Close()
	if err := m.RunAll(); err != nil {
		return nil, nil, err
	}
	for i, n := range wrt {
		var v G.Value
		if mk == tape {
			v = gn[i].Value()
		} else {
			dv, err := n.Grad()
			if err != nil {
				return nil, nil, err
			}
			v = dv
		}
		grads = append(grads, tensor.New(tensor.WithShape(v.Shape().Clone()...), tensor.WithBacking(floatsCopy(v))))
	}
	return vals, grads, nil
}

func floatsCopy(v G.Value) any {
	switch d := v.Data().(type) {
	case []float32:
		return append([]float32(nil), d...)
	case []float64:
		return append([]float64(nil), d...)
	}
	return nil
}

// segmentRows returns the real rows of each expert of a plan from a permuted buffer.
func segmentRows(p kernels.Plan, buf []float64, H int) [][]float64 {
	out := make([][]float64, p.E)
	for e := 0; e < p.E; e++ {
		lo := int(p.Offsets[e])
		out[e] = append([]float64(nil), buf[lo*H:(lo+int(p.Counts[e]))*H]...)
	}
	return out
}

func planOf(v G.Value, g kernels.Geometry) kernels.Plan {
	p, err := g.View(v.Data().([]int32))
	if err != nil {
		panic(err)
	}
	return p
}

// singleRank runs the layer on one rank over all N·T tokens.
func singleRank(c layerCase, in layerInputs, dt tensor.Dtype, mk machineKind) (layerResult, error) {
	g := G.NewGraph()
	nt := c.N * c.T
	n := newLayerNodes(g, dt, c, nt, c.E, in.x, in.probs, in.w1, in.w2, in.rw, keptIDs(c, in))
	geo := kernels.Geometry{E: c.E, A: c.A} // capacity cases compare against dropless on the kept pairs
	plan, err := op.NewPlan(n.ids, nil, geo)
	if err != nil {
		return layerResult{}, err
	}
	xp, err := op.Permute(n.x, plan)
	if err != nil {
		return layerResult{}, err
	}
	yp, err := experts(c, xp, n.w1, n.w2, plan)
	if err != nil {
		return layerResult{}, err
	}
	y, err := op.Unpermute(yp, n.probs, plan)
	if err != nil {
		return layerResult{}, err
	}
	cost := G.Must(G.Sum(G.Must(G.HadamardProd(y, n.rw))))
	vals, grads, err := runGraph(g, mk, cost, n.wrt(c), y, xp, plan.Node)
	if err != nil {
		return layerResult{}, err
	}
	res := layerResult{y: floats(vals[0]), dx: floats(grads[0]), dprobs: floats(grads[1])}
	if !c.rowwise {
		res.dw1, res.dw2 = floats(grads[2]), floats(grads[3])
	}
	res.rows = segmentRows(planOf(vals[2], plan.Geometry), floats(vals[1]), c.H)
	return res, nil
}

// rankGraph builds rank r's part of the expert-parallel layer.
type rankGraph struct {
	g          *G.ExprGraph
	n          layerNodes
	plan       *Plan
	xr, y      *G.Node
	cost       *G.Node
	wrt        []*G.Node
	epPlan     *G.Node
	localGeo   kernels.Geometry
	sendGeo    kernels.Geometry
	firstToken int
}

func buildRank(c layerCase, in layerInputs, dt tensor.Dtype, comm Communicator) (*rankGraph, error) {
	r, el := comm.Rank(), c.E/c.N
	T, H, K, F := c.T, c.H, c.K, c.F
	g := G.NewGraph()
	n := newLayerNodes(g, dt, c, T, el,
		in.x[r*T*H:(r+1)*T*H], in.probs[r*T*K:(r+1)*T*K],
		in.w1[r*el*H*F:(r+1)*el*H*F], in.w2[r*el*F*H:(r+1)*el*F*H],
		in.rw[r*T*H:(r+1)*T*H], in.ids[r*T*K:(r+1)*T*K])
	plan, err := NewPlan(n.ids, nil, geometry(c), comm)
	if err != nil {
		return nil, err
	}
	xr, err := Dispatch(n.x, plan)
	if err != nil {
		return nil, err
	}
	var local *op.Plan
	if !c.rowwise {
		if local, err = plan.Local(); err != nil {
			return nil, err
		}
	}
	yr, err := experts(c, xr, n.w1, n.w2, local)
	if err != nil {
		return nil, err
	}
	y, err := Combine(yr, n.probs, plan)
	if err != nil {
		return nil, err
	}
	cost, err := G.Sum(G.Must(G.HadamardProd(y, n.rw)))
	if err != nil {
		return nil, err
	}
	return &rankGraph{g: g, n: n, plan: plan, xr: xr, y: y, cost: cost, wrt: n.wrt(c),
		epPlan: plan.Node, localGeo: plan.LocalGeometry, sendGeo: plan.Send.Geometry, firstToken: r * T}, nil
}

// expertParallel runs the layer on c.N in-process ranks and assembles the global result.
func expertParallel(c layerCase, in layerInputs, dt tensor.Dtype, mk machineKind) (layerResult, error) {
	grp, err := NewGroupTimeout(c.N, 20*time.Second)
	if err != nil {
		return layerResult{}, err
	}
	return expertParallelOn(c, in, dt, mk, grp.Run)
}

// expertParallelOn runs the layer on the ranks that run starts (one call of fn per rank, each
// with its communicator) and assembles the global result.
func expertParallelOn(c layerCase, in layerInputs, dt tensor.Dtype, mk machineKind, run func(fn func(Communicator) error) error) (layerResult, error) {
	el := c.E / c.N
	res := layerResult{
		y: make([]float64, len(in.x)), dx: make([]float64, len(in.x)), dprobs: make([]float64, len(in.probs)),
		rows: make([][]float64, c.E),
	}
	if !c.rowwise {
		res.dw1, res.dw2 = make([]float64, len(in.w1)), make([]float64, len(in.w2))
	}
	err := run(func(comm Communicator) error {
		rg, err := buildRank(c, in, dt, comm)
		if err != nil {
			return err
		}
		vals, grads, err := runGraph(rg.g, mk, rg.cost, rg.wrt, rg.y, rg.xr, rg.epPlan)
		if err != nil {
			return err
		}
		r := comm.Rank()
		T, H, K, F := c.T, c.H, c.K, c.F
		copy(res.y[r*T*H:], floats(vals[0]))
		copy(res.dx[r*T*H:], floats(grads[0]))
		copy(res.dprobs[r*T*K:], floats(grads[1]))
		if !c.rowwise {
			copy(res.dw1[r*el*H*F:], floats(grads[2]))
			copy(res.dw2[r*el*F*H:], floats(grads[3]))
		}
		local, err := rg.localGeo.View(vals[2].Data().([]int32)[2*rg.sendGeo.E+1:])
		if err != nil {
			return err
		}
		for l, rows := range segmentRows(local, floats(vals[1]), H) {
			res.rows[r*el+l] = rows
		}
		return nil
	})
	return res, err
}

func sameBits(t *testing.T, what string, got, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d values, want %d", what, len(got), len(want))
		return
	}
	if i := reftest.FirstBitDiff(got, want); i >= 0 {
		t.Errorf("%s[%d] = %v, want %v (bitwise)", what, i, got[i], want[i])
	}
}

// refRows is the dispatch written as loops: expert e receives x[g] for every global token g
// that names e, in ascending g (rank 0's tokens first), rounded to the data type.
func refRows(c layerCase, in layerInputs, dt tensor.Dtype) [][]float64 {
	rows := make([][]float64, c.E)
	ids := keptIDs(c, in)
	for g := 0; g < c.N*c.T; g++ {
		for k := 0; k < c.K; k++ {
			e := ids[g*c.K+k]
			if e < 0 {
				continue
			}
			for h := 0; h < c.H; h++ {
				v := in.x[g*c.H+h]
				if dt == tensor.Float32 {
					v = float64(float32(v))
				}
				rows[e] = append(rows[e], v)
			}
		}
	}
	for e := range rows {
		if rows[e] == nil {
			rows[e] = []float64{}
		}
	}
	return rows
}

// keptIDs is the ids with the pairs that capacity mode drops set to -1: on each rank, an
// expert keeps its first c.capacity pairs in (token, slot) order. Dropless: the ids as they are.
func keptIDs(c layerCase, in layerInputs) []int32 {
	ids := append([]int32(nil), in.ids...)
	if c.capacity == 0 {
		return ids
	}
	for r := 0; r < c.N; r++ {
		used := make([]int, c.E)
		for i := r * c.T * c.K; i < (r+1)*c.T*c.K; i++ {
			if e := ids[i]; e >= 0 {
				if used[e] >= c.capacity {
					ids[i] = -1
				}
				used[e]++
			}
		}
	}
	return ids
}

// closeTo compares with a relative tolerance (scaled by max(1, |want|)).
func closeTo(tol float64) func(t *testing.T, what string, got, want []float64) {
	return func(t *testing.T, what string, got, want []float64) {
		t.Helper()
		if len(got) != len(want) {
			t.Errorf("%s: %d values, want %d", what, len(got), len(want))
			return
		}
		for i := range got {
			if math.Abs(got[i]-want[i]) > tol*math.Max(1, math.Abs(want[i])) || math.IsNaN(got[i]) {
				t.Errorf("%s[%d] = %v, want %v (tolerance %g)", what, i, got[i], want[i], tol)
				return
			}
		}
	}
}

var layerCases = []layerCase{
	{name: "N2-rowwise", N: 2, T: 7, K: 2, E: 4, H: 5, A: 1, rowwise: true},
	{name: "N4-rowwise-A3-drops", N: 4, T: 6, K: 3, E: 8, H: 6, A: 3, drop: 0.2, rowwise: true},
	{name: "N2", N: 2, T: 7, K: 2, E: 4, H: 5, F: 3, A: 1},
	{name: "N2-A4-drops", N: 2, T: 9, K: 3, E: 6, H: 4, F: 3, A: 4, drop: 0.2},
	{name: "N4", N: 4, T: 6, K: 2, E: 8, H: 3, F: 2, A: 1},
	{name: "N4-K>El-A2", N: 4, T: 5, K: 3, E: 4, H: 4, F: 2, A: 2, drop: 0.1},
	{name: "N2-capacity-A2", N: 2, T: 8, K: 2, E: 4, H: 3, F: 2, A: 2, capacity: 3},
	{name: "N4-capacity-rowwise", N: 4, T: 6, K: 2, E: 4, H: 3, A: 1, capacity: 2, rowwise: true},
	{name: "N1", N: 1, T: 6, K: 2, E: 3, H: 3, F: 2, A: 2},
	{name: "N4-T1", N: 4, T: 1, K: 4, E: 8, H: 2, F: 2, A: 1},
}

func TestExpertParallelEqualsSingleRank(t *testing.T) {
	for _, c := range layerCases {
		for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
			t.Run(fmt.Sprintf("%s/%v", c.name, dt), func(t *testing.T) {
				in := makeInputs(c, 1)
				want, err := singleRank(c, in, dt, tape)
				if err != nil {
					t.Fatal(err)
				}
				got, err := expertParallel(c, in, dt, tape)
				if err != nil {
					t.Fatal(err)
				}
				for e := range want.rows {
					sameBits(t, fmt.Sprintf("rows of expert %d", e), got.rows[e], want.rows[e])
				}
				for e, want := range refRows(c, in, dt) {
					sameBits(t, fmt.Sprintf("rows of expert %d (loop reference)", e), got.rows[e], want)
				}
				same := sameBits
				if dt == tensor.Float32 && !c.rowwise {
					same = closeTo(1e-5) // gonum's float32 gemm: see layerCase.rowwise
				}
				same(t, "y", got.y, want.y)
				same(t, "dx", got.dx, want.dx)
				same(t, "dprobs", got.dprobs, want.dprobs)
				same(t, "dw1", got.dw1, want.dw1)
				same(t, "dw2", got.dw2, want.dw2)
			})
		}
	}
}

// TestPlanRanksExperts: a plan over N in-process ranks of E experts reports N ranks, E/N local
// experts and rank·E/N as its first expert; a nil plan reports zeros.
func TestPlanRanksExperts(t *testing.T) {
	for _, c := range []struct{ N, E int }{{1, 4}, {2, 4}, {4, 8}} {
		grp, err := NewGroup(c.N)
		if err != nil {
			t.Fatal(err)
		}
		got := make([][3]int, c.N)
		err = grp.Run(func(comm Communicator) error {
			g := G.NewGraph()
			ids := G.NewMatrix(g, tensor.Int32, G.WithShape(2, 1), G.WithName("ids"),
				G.WithValue(tensor.New(tensor.WithShape(2, 1), tensor.WithBacking([]int32{0, int32(c.E - 1)}))))
			p, err := NewPlan(ids, nil, kernels.Geometry{E: c.E, A: 1}, comm)
			if err != nil {
				return err
			}
			got[comm.Rank()] = [3]int{p.Ranks(), p.LocalExperts(), p.FirstExpert()}
			return nil
		})
		if err != nil {
			t.Fatalf("N=%d E=%d: %v", c.N, c.E, err)
		}
		for r, v := range got {
			if want := [3]int{c.N, c.E / c.N, r * c.E / c.N}; v != want {
				t.Errorf("N=%d E=%d rank %d: Ranks, LocalExperts, FirstExpert = %v, want %v", c.N, c.E, r, v, want)
			}
		}
	}
	var nilPlan *Plan
	if v := fmt.Sprint(nilPlan.Ranks(), nilPlan.LocalExperts(), nilPlan.FirstExpert()); v != "0 0 0" {
		t.Errorf("nil plan: %s, want 0 0 0", v)
	}
}
