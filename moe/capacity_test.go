package moe

import (
	"fmt"
	"runtime"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestCapacityHandTable routes 4 tokens to 4 experts (K=2) with an identity router, so the
// logits are the input rows, and checks which pairs each drop policy keeps against tables
// computed by hand.
//
//	token  logits                   top-2   softmax prob of the chosen experts
//	t0     [0.9  0.8  0.1  0.0 ]    e0 e1   e0 .3622  e1 .3278
//	t1     [0.7  0.1  0.9  0.0 ]    e2 e0   e2 .3739  e0 .3061
//	t2     [0.95 0.0  0.0  0.85]    e0 e3   e0 .3734  e3 .3378
//	t3     [0.1  0.2  0.3  0.99]    e3 e2   e3 .4226  e2 .2120
//
// Expert e0 is chosen by t0, t1, t2; e1 by t0; e2 by t1, t3; e3 by t2, t3. With C = 1, drop
// by position keeps t2's second choice of e3 over t3's first: token order (Megatron), not the
// slot-major order of GShard and Tutel, which would keep t3.
func TestCapacityHandTable(t *testing.T) {
	x := []float64{
		0.9, 0.8, 0.1, 0.0,
		0.7, 0.1, 0.9, 0.0,
		0.95, 0.0, 0.0, 0.85,
		0.1, 0.2, 0.3, 0.99,
	}
	type pair struct{ t, e int }
	cases := []struct {
		name   string
		cf     float64
		policy DropPolicy
		kept   []pair
		counts []int
	}{
		// C = ceil(8/4·0.5) = 1
		{"C=1 position", 0.5, DropByPosition, []pair{{0, 0}, {0, 1}, {1, 2}, {2, 3}}, []int{1, 1, 1, 1}},
		{"C=1 prob", 0.5, DropByProb, []pair{{2, 0}, {0, 1}, {1, 2}, {3, 3}}, []int{1, 1, 1, 1}},
		// C = 2: only e0 (3 tokens) drops one
		{"C=2 position", 1, DropByPosition, []pair{{0, 0}, {1, 0}, {0, 1}, {1, 2}, {3, 2}, {2, 3}, {3, 3}}, []int{2, 1, 2, 2}},
		{"C=2 prob", 1, DropByProb, []pair{{0, 0}, {2, 0}, {0, 1}, {1, 2}, {3, 2}, {2, 3}, {3, 3}}, []int{2, 1, 2, 2}},
	}
	for _, c := range cases {
		cfg := Config{Hidden: 4, FFN: 2, Experts: 4, TopK: 2, PreSoftmax: true, Dtype: tensor.Float64,
			CapacityFactor: c.cf, DropPolicy: c.policy}
		g := G.NewGraph()
		l, err := New(g, "moe", cfg)
		if err != nil {
			t.Fatal(err)
		}
		eye := l.Router.Value().Data().([]float64)
		for i := range eye {
			eye[i] = 0
		}
		for i := 0; i < 4; i++ {
			eye[i*4+i] = 1
		}
		xn := G.NewMatrix(g, tensor.Float64, G.WithShape(4, 4), G.WithName("x"), G.WithValue(denseOf(tensor.Float64, x, 4, 4)))
		out, err := l.Forward(xn)
		if err != nil {
			t.Fatal(err)
		}
		var planV, countsV G.Value
		G.Read(out.Plan.Node, &planV)
		G.Read(out.Counts, &countsV)
		m := G.NewTapeMachine(g)
		if err := m.RunAll(); err != nil {
			t.Fatal(err)
		}
		m.Close()
		geo := out.Plan.Geometry
		if geo.C != map[float64]int{0.5: 1, 1: 2}[c.cf] {
			t.Fatalf("%s: capacity %d", c.name, geo.C)
		}
		p, err := geo.View(planV.Data().([]int32))
		if err != nil {
			t.Fatal(err)
		}
		// The ids tell which expert each slot names; rowOf tells whether it was kept.
		ids := make([]int, 0, 8)
		for tk := 0; tk < 4; tk++ {
			row := x[tk*4 : tk*4+4]
			a, b := argTop2(row)
			ids = append(ids, a, b)
		}
		var kept []pair
		for i, r := range p.RowOf {
			if r >= 0 {
				kept = append(kept, pair{i / 2, ids[i]})
			}
		}
		if len(kept) != len(c.kept) {
			t.Errorf("%s: kept %v, want %v", c.name, kept, c.kept)
			continue
		}
		for _, w := range c.kept {
			found := false
			for _, k := range kept {
				found = found || k == w
			}
			if !found {
				t.Errorf("%s: kept %v, want %v", c.name, kept, c.kept)
				break
			}
		}
		st, err := out.Stats(countsV)
		if err != nil {
			t.Fatal(err)
		}
		for e, n := range c.counts {
			if st.TokensPerExpert[e] != n {
				t.Errorf("%s: tokens per expert %v, want %v", c.name, st.TokensPerExpert, c.counts)
				break
			}
		}
		if want := 8 - len(c.kept); st.Dropped != want {
			t.Errorf("%s: dropped %d, want %d", c.name, st.Dropped, want)
		}
	}
}

func argTop2(row []float64) (int, int) {
	a := 0
	for i := range row {
		if row[i] > row[a] {
			a = i
		}
	}
	b := -1
	for i := range row {
		if i != a && (b < 0 || row[i] > row[b]) {
			b = i
		}
	}
	return a, b
}

// TestCapacityAboveT: a capacity above T keeps every pair, as a capacity of T does, so the
// layer sizes its buffers for T rows an expert (PadToCapacity keeps the C rows asked for): the
// same cost and gradients, and a forward + backward of 8 tokens with a factor of 10⁵ allocates
// about what a factor of 1 does (it allocated 988 MB for C = 800000).
func TestCapacityAboveT(t *testing.T) {
	run := func(factor float64, pad bool) (cost float64, grads [][]float64, rows int, alloc uint64) {
		g := G.NewGraph()
		cfg := Config{Hidden: 4, FFN: 4, Experts: 4, TopK: 4, Dtype: tensor.Float64, CapacityFactor: factor, PadToCapacity: pad, Seed: 1}
		l, err := New(g, "m", cfg)
		if err != nil {
			t.Fatal(err)
		}
		xs := make([]float64, 8*4)
		for i := range xs {
			xs[i] = float64(i%7) - 3
		}
		x := G.NewMatrix(g, tensor.Float64, G.WithShape(8, 4), G.WithName("x"),
			G.WithValue(tensor.New(tensor.WithShape(8, 4), tensor.WithBacking(xs))))
		out, err := l.Forward(x)
		if err != nil {
			t.Fatal(err)
		}
		c := G.Must(G.Sum(G.Must(G.Square(out.Y))))
		ws := append(l.Learnables(), x)
		if _, err := G.Grad(c, ws...); err != nil {
			t.Fatal(err)
		}
		var a, b runtime.MemStats
		runtime.ReadMemStats(&a)
		m := G.NewTapeMachine(g)
		defer m.Close()
		if err := m.RunAll(); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&b)
		for _, w := range ws {
			gv, err := w.Grad()
			if err != nil {
				t.Fatal(err)
			}
			grads = append(grads, append([]float64(nil), gv.Data().([]float64)...))
		}
		geo, err := l.cfg.geometry(8, factor)
		if err != nil {
			t.Fatal(err)
		}
		return c.Value().Data().(float64), grads, geo.Rows(), b.TotalAlloc - a.TotalAlloc
	}
	c1, g1, r1, a1 := run(1, false) // C = 8 = T: nothing dropped
	c2, g2, r2, a2 := run(1e5, false)
	if c1 != c2 || fmt.Sprint(g1) != fmt.Sprint(g2) {
		t.Errorf("factor 1e5: cost %v, want factor 1's %v (and the same gradients)", c2, c1)
	}
	if r1 != 32 || r2 != 32 {
		t.Errorf("permuted rows %d and %d, want E·T = 32 for both", r1, r2)
	}
	if a2 > 4*a1+(1<<20) {
		t.Errorf("factor 1e5 allocated %d bytes, factor 1 %d", a2, a1)
	}
	// PadToCapacity keeps C rows an expert, as asked: here C = ceil(8·4/4·10) = 80.
	c3, g3, r3, _ := run(10, true)
	if c3 != c1 || fmt.Sprint(g3) != fmt.Sprint(g1) || r3 != 4*80 {
		t.Errorf("PadToCapacity, factor 10: cost %v, %d rows; want %v and 320", c3, r3, c1)
	}
}
