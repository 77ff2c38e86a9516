package ep

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// gradNode returns a weight whose gradient, after running the returned machine, is grad
// (cost = Σ w·grad): a vector of len(grad) elements, or of the shape given.
func gradNode(t *testing.T, dt tensor.Dtype, name string, grad []float64, shape ...int) (*G.Node, G.VM) {
	t.Helper()
	g := G.NewGraph()
	if len(shape) == 0 {
		shape = []int{len(grad)}
	}
	w := G.NewTensor(g, dt, len(shape), G.WithShape(shape...), G.WithName(name), G.WithInit(G.Zeroes()))
	c := G.NewTensor(g, dt, len(shape), G.WithShape(shape...), G.WithName(name+"_c"), G.WithValue(dense(dt, grad, shape...)))
	cost := G.Must(G.Sum(G.Must(G.HadamardProd(w, c))))
	if _, err := G.Grad(cost, w); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	return w, vm
}

// gradFloats is w's gradient as float64s.
func gradFloats(t *testing.T, w *G.Node) []float64 {
	t.Helper()
	gv, err := w.Grad()
	if err != nil {
		t.Fatal(err)
	}
	return floats(gv)
}

// sumOnRanks runs SumGradients on n in-process ranks over the weights build makes for each
// rank (done releases them) and returns every rank's gradients after it, as float64s.
func sumOnRanks(t *testing.T, n int, build func(r int) (ws []*G.Node, done func(), err error)) [][][]float64 {
	t.Helper()
	grp, err := NewGroupTimeout(n, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	got := make([][][]float64, n)
	err = grp.Run(func(c Communicator) error {
		ws, done, err := build(c.Rank())
		if err != nil {
			return err
		}
		defer done()
		if err := SumGradients(c, ws...); err != nil {
			return err
		}
		gs := make([][]float64, len(ws))
		for i, w := range ws {
			gs[i] = gradFloats(t, w)
		}
		mu.Lock()
		got[c.Rank()] = gs
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// errsOnRanks runs fn on every rank of a fresh group of n ranks (a 10 s exchange timeout, a
// 15 s deadline for the whole run) and returns each rank's error.
func errsOnRanks(t *testing.T, n int, fn func(c Communicator) error) []error {
	t.Helper()
	grp, err := NewGroupTimeout(n, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	errs := make([]error, n)
	_ = runWithin(t, grp, 15*time.Second, func(c Communicator) error {
		errs[c.Rank()] = fn(c)
		return errs[c.Rank()]
	})
	return errs
}

// sameOnEveryRank fails unless every rank's gradient k is want[k], bit for bit.
func sameOnEveryRank(t *testing.T, got [][][]float64, want [][]float64) {
	t.Helper()
	for r := range got {
		for k := range want {
			for i := range want[k] {
				if got[r][k][i] != want[k][i] {
					t.Fatalf("rank %d weight %d: %v, want %v", r, k, got[r][k], want[k])
				}
			}
		}
	}
}

// TestSumGradients: after SumGradients every rank holds, for each weight, the sum of the
// ranks' gradients in rank order in float64, rounded once to the dtype: the same bits on every
// rank. Rank r's gradient of "a" is 1 on rank 0 and 2⁻²⁴ on the others, so float32 additions
// in turn would give 1 (each 2⁻²⁴ rounds away) where the sum rounded once gives 1 + 2⁻²³ on 3
// or more ranks.
func TestSumGradients(t *testing.T) {
	defer checkNoLeak(t)()
	grads := func(r int) (a, b []float64) {
		a = []float64{math.Ldexp(1, -24), -0.5 * float64(r+1), 3}
		if r == 0 {
			a[0] = 1
		}
		b = []float64{0.25 * float64(r), float64(r*r) - 2}
		return a, b
	}
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		for _, n := range []int{1, 2, 3, 4} {
			t.Run(fmt.Sprintf("%v/N%d", dt, n), func(t *testing.T) {
				wantA, wantB := make([]float64, 3), make([]float64, 2)
				for r := 0; r < n; r++ {
					a, b := grads(r)
					for i := range a {
						wantA[i] += a[i]
					}
					for i := range b {
						wantB[i] += b[i]
					}
				}
				round := func(v []float64) {
					if dt == tensor.Float32 {
						for i := range v {
							v[i] = float64(float32(v[i]))
						}
					}
				}
				round(wantA)
				round(wantB)
				got := sumOnRanks(t, n, func(r int) ([]*G.Node, func(), error) {
					a, b := grads(r)
					wa, vma := gradNode(t, dt, "a", a)
					wb, vmb := gradNode(t, dt, "b", b)
					return []*G.Node{wa, wb}, func() { vma.Close(); vmb.Close() }, nil
				})
				sameOnEveryRank(t, got, [][]float64{wantA, wantB})
			})
		}
	}
}

// TestSumGradientsErrors: a rank that passes other weights, a nil weight or one without a
// gradient fails, and every other rank returns an error instead of waiting.
func TestSumGradientsErrors(t *testing.T) {
	defer checkNoLeak(t)()
	if err := SumGradients(nil); err == nil {
		t.Error("nil communicator: no error")
	}
	noGrad := G.NewVector(G.NewGraph(), tensor.Float64, G.WithShape(2), G.WithName("nograd"), G.WithInit(G.Zeroes()))
	cases := []struct {
		name string
		bad  func(t *testing.T) ([]*G.Node, func())
		want string
	}{
		{"another size", func(t *testing.T) ([]*G.Node, func()) {
			w, vm := gradNode(t, tensor.Float64, "a", []float64{1, 2, 3, 4})
			return []*G.Node{w}, func() { vm.Close() }
		}, "every rank must pass the same weights"},
		{"another dtype", func(t *testing.T) ([]*G.Node, func()) {
			w, vm := gradNode(t, tensor.Float32, "a", []float64{1, 2, 3})
			return []*G.Node{w}, func() { vm.Close() }
		}, "every rank must pass the same weights"},
		{"fewer weights", func(t *testing.T) ([]*G.Node, func()) { return nil, func() {} }, "every rank must pass the same weights"},
		{"nil weight", func(t *testing.T) ([]*G.Node, func()) { return []*G.Node{nil}, func() {} }, "nil node"},
		{"no gradient", func(t *testing.T) ([]*G.Node, func()) { return []*G.Node{noGrad}, func() {} }, "has no gradient"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			errs := errsOnRanks(t, 2, func(c Communicator) error {
				ws, done := []*G.Node(nil), func() {}
				if c.Rank() == 1 {
					ws, done = tc.bad(t)
				} else {
					w, vm := gradNode(t, tensor.Float64, "a", []float64{1, 2, 3})
					ws, done = []*G.Node{w}, func() { vm.Close() }
				}
				defer done()
				return SumGradients(c, ws...)
			})
			for r, err := range errs {
				if err == nil {
					t.Errorf("rank %d: no error", r)
				}
			}
			if errs[1] == nil || !strings.Contains(errs[1].Error(), tc.want) {
				t.Errorf("rank 1: %v, want an error containing %q", errs[1], tc.want)
			} else if n := strings.Count(errs[1].Error(), "gomoe: "); n != 1 {
				t.Errorf("rank 1: error %q carries the gomoe prefix %d times, want once", errs[1], n)
			}
		})
	}
}

// TestSumCounts: every rank gets the element-wise sum of the ranks' counts; sums beyond int32
// and counts of different lengths are errors on every rank.
func TestSumCounts(t *testing.T) {
	defer checkNoLeak(t)()
	if _, err := SumCounts(nil, nil); err == nil {
		t.Error("nil communicator: no error")
	}
	counts := func(r int) []int32 { return []int32{int32(r), 7, int32(10 * r * r), 0} }
	for _, n := range []int{1, 2, 4} {
		want := make([]int32, 4)
		for r := 0; r < n; r++ {
			for e, v := range counts(r) {
				want[e] += v
			}
		}
		grp, err := NewGroupTimeout(n, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got := make([][]int32, n)
		err = grp.Run(func(c Communicator) error {
			s, err := SumCounts(c, counts(c.Rank()))
			got[c.Rank()] = s
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		for r := range got {
			for e := range want {
				if got[r][e] != want[e] {
					t.Fatalf("N=%d rank %d: %v, want %v", n, r, got[r], want)
				}
			}
		}
	}
	for _, tc := range []struct {
		name string
		bad  []int32
		want string
	}{
		{"beyond int32", []int32{math.MaxInt32, 1, 0}, "beyond int32"},
		{"another length", []int32{1, 2}, "every rank must pass one count per expert"},
	} {
		errs := errsOnRanks(t, 2, func(c Communicator) error {
			mine := []int32{1, 1, 1}
			if c.Rank() == 1 {
				mine = tc.bad
			}
			_, err := SumCounts(c, mine)
			return err
		})
		for r, err := range errs {
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: rank %d: %v, want an error containing %q", tc.name, r, err, tc.want)
			}
		}
	}
}

// TestClipGradNormErrors: a rank whose clip fails before the norm exchange (a nil weight, a
// bad maxNorm) fails, and the other ranks return an error instead of waiting. (The clipped
// values are checked against the single-rank layer in package moe's TestExpertParallelLayer.)
func TestClipGradNormErrors(t *testing.T) {
	defer checkNoLeak(t)()
	if _, err := ClipGradNorm(nil, 1, nil, nil); err == nil {
		t.Error("nil communicator: no error")
	}
	for _, tc := range []struct {
		name    string
		maxNorm float64
		nilW    bool
		want    string
	}{
		{"nil weight", 1, true, "weight 0 is nil"},
		{"maxNorm 0", 0, false, "maxNorm 0"},
		{"maxNorm NaN", math.NaN(), false, "maxNorm NaN"},
	} {
		errs := errsOnRanks(t, 2, func(c Communicator) error {
			w, vm := gradNode(t, tensor.Float64, "a", []float64{3, 4})
			defer vm.Close()
			ws, maxNorm := G.Nodes{w}, 1.0
			if c.Rank() == 1 {
				maxNorm = tc.maxNorm
				if tc.nilW {
					ws = G.Nodes{nil}
				}
			}
			_, err := ClipGradNorm(c, maxNorm, ws, nil)
			return err
		})
		if errs[0] == nil {
			t.Errorf("%s: rank 0: no error", tc.name)
		}
		if errs[1] == nil || !strings.Contains(errs[1].Error(), tc.want) {
			t.Errorf("%s: rank 1: %v, want an error containing %q", tc.name, errs[1], tc.want)
		}
	}
}

// TestSumGradientsSharedGradient: Gorgonia gives both inputs of an Add one gradient buffer;
// SumGradients sums that buffer once (summing it once per weight multiplied it by N again),
// and a weight listed twice is an error on every rank.
func TestSumGradientsSharedGradient(t *testing.T) {
	defer checkNoLeak(t)()
	const n = 2
	build := func(r int) (w1, w2 *G.Node, vm G.VM, err error) {
		g := G.NewGraph()
		v := func(name string, d ...float64) *G.Node {
			return G.NewVector(g, tensor.Float64, G.WithShape(2), G.WithName(name), G.WithValue(dense(tensor.Float64, d, 2)))
		}
		w1, w2, c := v("w1", 1, 2), v("w2", 3, 4), v("c", float64(r+1), 10*float64(r+1))
		cost := G.Must(G.Sum(G.Must(G.HadamardProd(G.Must(G.Add(w1, w2)), c))))
		if _, err := G.Grad(cost, w1, w2); err != nil {
			return nil, nil, nil, err
		}
		vm = G.NewTapeMachine(g)
		return w1, w2, vm, vm.RunAll()
	}
	got := sumOnRanks(t, n, func(r int) ([]*G.Node, func(), error) {
		w1, w2, vm, err := build(r)
		if err != nil {
			if vm != nil {
				vm.Close()
			}
			return nil, nil, err
		}
		g1, _ := w1.Grad()
		g2, _ := w2.Grad()
		if g1.(*tensor.Dense).Uintptr() != g2.(*tensor.Dense).Uintptr() {
			vm.Close()
			return nil, nil, fmt.Errorf("the weights' gradients are two buffers: the test does not share one")
		}
		return []*G.Node{w1, w2}, func() { vm.Close() }, nil
	})
	want := []float64{1 + 2, 10 + 20} // Σ_r c_r, once
	sameOnEveryRank(t, got, [][]float64{want, want})

	errs := errsOnRanks(t, n, func(c Communicator) error {
		w, vm := gradNode(t, tensor.Float64, "a", []float64{1, 2})
		defer vm.Close()
		return SumGradients(c, w, w)
	})
	for r, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "twice") {
			t.Errorf("a weight listed twice: rank %d: %v, want an error saying so", r, err)
		}
	}
}

// TestClipGradNormRanksDisagree: ranks that list other replicated weights would clip by
// different norms (each counts its own replicated weights once and sends the rest as sharded),
// so the replicas would drift apart silently: every rank returns an error instead. A
// replicated weight missing from ws is an error too (it would not be clipped). So are ranks
// that pass another maxNorm: they would scale by different factors (they used to, silently).
// No gradient changes.
func TestClipGradNormRanksDisagree(t *testing.T) {
	defer checkNoLeak(t)()
	for _, tc := range []struct {
		name string
		rep1 func(a, b *G.Node) (ws, rep G.Nodes)
		max1 float64 // rank 1's maxNorm (rank 0's is 1)
		want string
	}{
		{"another replicated list", func(a, b *G.Node) (G.Nodes, G.Nodes) { return G.Nodes{a, b}, nil }, 1, "replicated"},
		{"replicated not in ws", func(a, b *G.Node) (G.Nodes, G.Nodes) { return G.Nodes{a}, G.Nodes{b} }, 1, "not among"},
		{"another maxNorm", func(a, b *G.Node) (G.Nodes, G.Nodes) { return G.Nodes{a, b}, G.Nodes{b} }, 2, "rank 0 clips to maxNorm 1 and rank 1 to 2"},
	} {
		errs := errsOnRanks(t, 2, func(c Communicator) error {
			a, vma := gradNode(t, tensor.Float64, "a", []float64{3, 4})
			defer vma.Close()
			b, vmb := gradNode(t, tensor.Float64, "b", []float64{1, 2})
			defer vmb.Close()
			ws, rep, maxNorm := G.Nodes{a, b}, G.Nodes{b}, 1.0
			if c.Rank() == 1 {
				ws, rep = tc.rep1(a, b)
				maxNorm = tc.max1
			}
			_, err := ClipGradNorm(c, maxNorm, ws, rep)
			if ga, gb := gradFloats(t, a), gradFloats(t, b); ga[0] != 3 || ga[1] != 4 || gb[0] != 1 || gb[1] != 2 {
				t.Errorf("%s: rank %d: the gradients changed to %v %v", tc.name, c.Rank(), ga, gb)
			}
			return err
		})
		if errs[0] == nil {
			t.Errorf("%s: rank 0: no error", tc.name)
		}
		if errs[1] == nil || !strings.Contains(errs[1].Error(), tc.want) {
			t.Errorf("%s: rank 1: %v, want an error containing %q", tc.name, errs[1], tc.want)
		}
	}
}

// countingComm counts the rows each AllToAll of its rank sends to other ranks.
type countingComm struct {
	Communicator
	sent *int
}

func (c countingComm) AllToAll(send, recv Buffer, sends, recvs [][]Block) error {
	for j, bs := range sends {
		for _, b := range bs {
			if j != c.Rank() {
				*c.sent += b.Len * send.Width
			}
		}
	}
	return c.Communicator.AllToAll(send, recv, sends, recvs)
}

// TestSumGradientsBytes: each rank sends 2·(N−1)/N of a gradient's elements to the other
// ranks, as a ring all-reduce does (a gather of every rank's whole gradient sent N−1 times
// them), and the sums are still the rank-order float64 sums.
func TestSumGradientsBytes(t *testing.T) {
	defer checkNoLeak(t)()
	const size = 1000
	for _, n := range []int{2, 3, 4, 5} {
		t.Run(fmt.Sprintf("N%d", n), func(t *testing.T) {
			grad := func(r int) []float64 {
				g := make([]float64, size)
				for i := range g {
					g[i] = float64((i*7+r*13)%17) - 8
				}
				return g
			}
			want := make([]float64, size)
			for r := 0; r < n; r++ {
				for i, v := range grad(r) {
					want[i] += v
				}
			}
			sent := make([]int, n)
			var mu sync.Mutex
			errs := errsOnRanks(t, n, func(c Communicator) error {
				w, vm := gradNode(t, tensor.Float64, "w", grad(c.Rank()))
				defer vm.Close()
				var s int
				if err := SumGradients(countingComm{c, &s}, w); err != nil {
					return err
				}
				got := gradFloats(t, w)
				for i := range got {
					if got[i] != want[i] {
						return fmt.Errorf("rank %d: element %d is %v, want %v", c.Rank(), i, got[i], want[i])
					}
				}
				mu.Lock()
				sent[c.Rank()] = s
				mu.Unlock()
				return nil
			})
			for r, err := range errs {
				if err != nil {
					t.Fatalf("rank %d: %v", r, err)
				}
			}
			// The exchange that checks the weights agree sends a few counts, not rows: only
			// AllToAll is counted.
			for r, s := range sent {
				lo, hi := chunk(size, n, r)
				// The other ranks' chunks of its gradient, then its summed chunk to each of them.
				if wantSent := size - (hi - lo) + (n-1)*(hi-lo); s != wantSent {
					t.Errorf("rank %d sent %d elements, want %d", r, s, wantSent)
				}
			}
		})
	}
}
