package ep

// Ranks that fail alone, or pass values that only the exchange can compare. Each runs the
// ranks alone on a group with no time-out (runRanksAlone, whose deadline reports a hang
// instead of waiting on it).

import (
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/hostmem"
	"github.com/gomoe/gomoe/kernels"
)

func groupNoTimeout(t *testing.T, n int) *Group {
	t.Helper()
	g, err := NewGroupTimeout(n, 0)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestSumCountsNegative: a negative count fails on every rank (a count is a whole number >= 0,
// as UpdateExpertBias and Stats require). {-5,5} + {7,-3} used to sum to {2,2}.
func TestSumCountsNegative(t *testing.T) {
	defer checkNoLeak(t)()
	var sums [2][]int32
	errs := runRanksAlone(t, groupNoTimeout(t, 2), func(c Communicator) error {
		cs := []int32{-5, 5}
		if c.Rank() == 1 {
			cs = []int32{7, -3}
		}
		s, err := SumCounts(c, cs)
		sums[c.Rank()] = s
		return err
	})
	for r, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "rank 0's count of expert 0 is -5") {
			t.Errorf("rank %d: %v, sum %v; want the error that names rank 0's count -5", r, err, sums[r])
		}
	}
}

// TestSumGradientsShapes: a (2, 3) gradient on rank 0 and a (3, 2) one on rank 1 fail on both
// ranks; the exchange compared their sizes only, and they were summed element by element.
func TestSumGradientsShapes(t *testing.T) {
	defer checkNoLeak(t)()
	var ws [2]*G.Node
	for r, shape := range [][]int{{2, 3}, {3, 2}} {
		w, vm := gradNode(t, tensor.Float64, "w", []float64{1, 2, 3, 4, 5, 6}, shape...)
		defer vm.Close()
		ws[r] = w
	}
	errs := runRanksAlone(t, groupNoTimeout(t, 2), func(c Communicator) error { return SumGradients(c, ws[c.Rank()]) })
	for r, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "shapes, dtypes or shared gradient buffers differ") {
			t.Errorf("rank %d: %v, want the error for a (2, 3) and a (3, 2) gradient", r, err)
		}
	}
}

// TestDispatchChecksItsOutput: Dispatch's [R', H] receive buffer must fit in memory, as every
// op's output larger than its inputs must. The send plan has alignment 1, so op.Permute's
// output is T·K rows; the local plan's alignment padding, E/N·(A−1) rows, exists only in
// Dispatch's output. With a 32 MB limit each rank's Dispatch used to make a 128 MB output with
// no error (with H in the thousands, the same geometry was a fatal out-of-memory).
func TestDispatchChecksItsOutput(t *testing.T) {
	defer checkNoLeak(t)()
	defer hostmem.SetLimit(hostmem.SetLimit(32 << 20))
	const E, H = 4, 64
	geo := kernels.Geometry{E: E, A: 1 << 17}
	var rows [2]int
	errs := runRanksAlone(t, groupNoTimeout(t, 2), func(c Communicator) error {
		xr, err := dispatchOnes(c, geo, H)
		if err != nil {
			return err
		}
		rows[c.Rank()] = xr.Shape()[0]
		return runTape(xr.Graph())
	})
	for r, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "memory") { // the rank that fails names it, the other is aborted
			t.Errorf("rank %d: %v; want a memory error: the receive buffer is %d×%d float64 = %d MB, the limit 32 MB", r, err, rows[r], H, rows[r]*H*8>>20)
		}
	}
}

// TestDispatchPermuteGuarded: Dispatch's permute fails on one rank only (its output memory
// check: rank 1 has H=64, rank 0 H=8; on NCCL, hosts with different memory limits) and aborts
// the communicator, so rank 0 does not wait in the exchange for ever (no time-out). The
// permute used to be unguarded: rank 1 returned, rank 0 hung.
func TestDispatchPermuteGuarded(t *testing.T) {
	defer hostmem.SetLimit(hostmem.SetLimit(32 << 20))
	const E, C = 4, 1 << 16
	geo := kernels.Geometry{E: E, A: 1, Mode: kernels.Capacity, C: C}
	errs := runRanksAlone(t, groupNoTimeout(t, 2), func(c Communicator) error {
		H := 8
		if c.Rank() == 1 {
			H = 64 // (E·C = 262144 rows)·64·8 B = 128 MB > 32 MB; rank 0: 16 MB
		}
		xr, err := dispatchOnes(c, geo, H)
		if err != nil {
			return err
		}
		return runTape(xr.Graph())
	})
	for r, err := range errs {
		if err == nil {
			t.Errorf("rank %d: no error", r)
		}
	}
}

// TestPlanAgree: ranks that pass different Agree values fail the plan on every rank, naming
// what; the same values pass.
func TestPlanAgree(t *testing.T) {
	for _, c := range []struct {
		v0, v1 uint32
		want   string
	}{{7, 7, ""}, {7, 9, "rank 1's layer setting differs from rank 0's (0x9, 0x7)"}} {
		defer checkNoLeak(t)()
		errs := runRanksAlone(t, groupNoTimeout(t, 2), func(cm Communicator) error {
			g := G.NewGraph()
			ids := G.NewMatrix(g, tensor.Int32, G.WithShape(2, 2), G.WithName("ids"),
				G.WithValue(tensor.New(tensor.WithShape(2, 2), tensor.WithBacking([]int32{0, 1, 2, 3}))))
			v := c.v0
			if cm.Rank() == 1 {
				v = c.v1
			}
			p, err := NewPlan(ids, nil, kernels.Geometry{E: 4, A: 1}, cm, Agree("layer setting", v))
			if err != nil {
				return err
			}
			_ = p
			m := G.NewTapeMachine(g)
			defer m.Close()
			return m.RunAll()
		})
		for r, err := range errs {
			if c.want == "" && err != nil {
				t.Errorf("rank %d: %v, want none (same values)", r, err)
			}
			if c.want != "" && (err == nil || (r == 0 && !strings.Contains(err.Error(), c.want))) {
				t.Errorf("rank %d: %v, want an error (rank 0's containing %q)", r, err, c.want)
			}
		}
	}
}

// TestNilPlanOptionAndInput: a nil PlanOption and a nil x are errors that name them.
func TestNilPlanOptionAndInput(t *testing.T) {
	grp := groupNoTimeout(t, 1)
	c, _ := grp.Comm(0)
	g := G.NewGraph()
	ids := G.NewMatrix(g, tensor.Int32, G.WithShape(2, 1), G.WithName("ids"), G.WithValue(tensor.New(tensor.WithShape(2, 1), tensor.WithBacking([]int32{0, 1}))))
	if _, err := NewPlan(ids, nil, kernels.Geometry{E: 2, A: 1}, c, nil); err == nil || !strings.Contains(err.Error(), "a nil PlanOption") {
		t.Errorf("NewPlan with a nil option: %v", err)
	}
	p, err := NewPlan(ids, nil, kernels.Geometry{E: 2, A: 1}, c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Dispatch(nil, p); err == nil || !strings.Contains(err.Error(), "ep.Dispatch: x is nil") {
		t.Errorf("Dispatch(nil): %v", err)
	}
}

// dispatchOnes builds, in a graph of its own, rank c's Dispatch of a [4, H] input of ones
// routed by the ids [[0 2] [1 3] [0 1] [2 3]] with geometry geo.
func dispatchOnes(c Communicator, geo kernels.Geometry, H int) (*G.Node, error) {
	const T, K = 4, 2
	g := G.NewGraph()
	ids := G.NewMatrix(g, tensor.Int32, G.WithShape(T, K), G.WithName("ids"),
		G.WithValue(tensor.New(tensor.WithShape(T, K), tensor.WithBacking([]int32{0, 2, 1, 3, 0, 1, 2, 3}))))
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(T, H), G.WithName("x"), G.WithInit(G.Ones()))
	p, err := NewPlan(ids, nil, geo, c)
	if err != nil {
		return nil, err
	}
	return Dispatch(x, p)
}

// runTape runs g once on a tape machine.
func runTape(g *G.ExprGraph) error {
	m := G.NewTapeMachine(g)
	defer m.Close()
	return m.RunAll()
}
