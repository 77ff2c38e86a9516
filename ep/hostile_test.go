package ep

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/hostmem"
	"github.com/gomoe/gomoe/kernels"
	"github.com/gomoe/gomoe/op"
)

// rankDeadline bounds how long the ranks of a hostile case may take in all: far more than
// they need (milliseconds), far less than "forever", which is what a missed abort costs with
// timeout 0.
const rankDeadline = 20 * time.Second

// runRanksAlone runs fn for every rank of g, each in its own goroutine, as NCCL ranks run (not
// through Group.Run, which aborts the group for them), and returns every rank's error. A case
// that does not finish within rankDeadline is a hang: the group is aborted to free the
// goroutines and the test fails.
func runRanksAlone(t *testing.T, g *Group, fn func(c Communicator) error) []error {
	t.Helper()
	errs := make([]error, g.Size())
	done := make(chan int, g.Size())
	for r := 0; r < g.Size(); r++ {
		c, err := g.Comm(r)
		if err != nil {
			t.Fatal(err)
		}
		go func(r int) {
			defer func() { done <- r }()
			errs[r] = fn(c)
		}(r)
	}
	deadline := time.After(rankDeadline)
	for range g.Size() {
		select {
		case <-done:
		case <-deadline:
			g.Abort(errors.New("test deadline")) // frees ranks waiting in a collective, if any
			t.Fatalf("the ranks did not all return within %v: a rank that failed did not abort the others", rankDeadline)
		}
	}
	return errs
}

// zeroDone tells rank 1 of the shared-communicator case that rank 0 is done.
var zeroDone chan struct{}

// waitPosted waits until c's rank has posted to the group's pending collective.
func waitPosted(c *inProcComm) {
	for {
		c.g.mu.Lock()
		ok := c.g.cur != nil && c.g.cur.posted[c.rank]
		c.g.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// TestHostileRanksAlone: one rank's error, on any path of an expert-parallel step, makes every
// rank return an error promptly, also with an in-process group that never times out
// (timeout 0), where only an abort can free a waiting rank. The failing rank's error names the
// cause; the others report the abort. Inputs are unchanged.
func TestHostileRanksAlone(t *testing.T) {
	base := layerCase{N: 2, T: 4, K: 2, E: 4, H: 3, F: 2, A: 1}
	step := func(c layerCase, in layerInputs, comm Communicator) error {
		rg, err := buildRank(c, in, tensor.Float64, comm)
		if err != nil {
			return err
		}
		_, _, err = runGraph(rg.g, tape, rg.cost, rg.wrt)
		return err
	}
	cases := []struct {
		name string
		fn   func(comm Communicator, in layerInputs) error
		want string // the failing rank's (rank 0) error
	}{
		{"bad expert id in rank 0's plan (no RunRank: the guarded send plan aborts)", func(comm Communicator, in layerInputs) error {
			if comm.Rank() == 0 {
				in.ids[2] = 9
			}
			return step(base, in, comm)
		}, "ids[1,0] = 9 is out of range [-1, 4)"},
		{"rank 0 fails before the counts exchange (RunRank)", func(comm Communicator, in layerInputs) error {
			return RunRank(comm, func() error {
				if comm.Rank() == 0 {
					return errors.New("rank 0 could not load its batch")
				}
				return step(base, in, comm)
			})
		}, "rank 0 could not load its batch"},
		{"rank 0 fails after the forward, before the optimiser's collectives (RunRank)", func(comm Communicator, in layerInputs) error {
			return RunRank(comm, func() error {
				if err := step(base, in, comm); err != nil {
					return err
				}
				if comm.Rank() == 0 {
					return errors.New("rank 0 found a NaN loss")
				}
				_, err := comm.ExchangeCounts(make([]int32, comm.Size())) // the next step's first collective
				return err
			})
		}, "rank 0 found a NaN loss"},
		{"rank 0 panics (RunRank)", func(comm Communicator, in layerInputs) error {
			return RunRank(comm, func() error {
				if comm.Rank() == 0 {
					var m map[string]int
					m["x"]++
				}
				return step(base, in, comm)
			})
		}, "rank 0 panicked: assignment to entry in nil map"},
		{"two goroutines share rank 0's communicator", func(comm Communicator, in layerInputs) error {
			if comm.Rank() != 0 {
				<-zeroDone // rank 1 comes late: the group is aborted by then
				_, err := comm.ExchangeCounts(make([]int32, 2))
				return err
			}
			defer close(zeroDone)
			first := make(chan error, 1)
			go func() {
				_, err := comm.ExchangeCounts(make([]int32, 2))
				first <- err
			}()
			waitPosted(comm.(*inProcComm))
			b, _ := HostBuffer(make([]float32, 2), 1)
			err := comm.AllToAll(b, b, [][]Block{{}, {}}, [][]Block{{}, {}})
			return errors.Join(err, <-first)
		}, "rank 0 called AllToAll while its ExchangeCounts was still waiting for the other ranks: two goroutines use the same rank's communicator"},
	}
	for _, c := range cases {
		zeroDone = make(chan struct{})
		t.Run(c.name, func(t *testing.T) {
			defer checkNoLeak(t)()
			g, err := NewGroupTimeout(base.N, 0) // wait forever: only an abort frees a rank
			if err != nil {
				t.Fatal(err)
			}
			in := makeInputs(base, 3)
			ids := slices.Clone(in.ids)
			x := slices.Clone(in.x)
			errs := runRanksAlone(t, g, func(comm Communicator) error {
				mine := in
				mine.ids = slices.Clone(in.ids) // each rank edits its own copy
				return c.fn(comm, mine)
			})
			all := errors.Join(errs...)
			if all == nil || !strings.Contains(all.Error(), c.want) {
				t.Errorf("errors %v, want one containing %q", all, c.want)
			}
			for r, err := range errs {
				if err == nil {
					t.Errorf("rank %d returned no error", r)
				} else if !strings.Contains(err.Error(), c.want) && !errors.Is(err, ErrAborted) {
					t.Errorf("rank %d: %v, want the cause or ErrAborted", r, err)
				}
			}
			if !slices.Equal(ids, in.ids) || !slices.Equal(x, in.x) {
				t.Error("the inputs were changed")
			}
			c0, _ := g.Comm(0)
			if _, err := c0.ExchangeCounts(make([]int32, 2)); !errors.Is(err, ErrAborted) {
				t.Errorf("a collective after the failure: %v, want ErrAborted", err)
			}
		})
	}
}

// TestHostileRunRankAndGuard: RunRank and Guard reject nil arguments with an error (and
// RunRank aborts then, since the rank will not run its step).
func TestHostileRunRankAndGuard(t *testing.T) {
	g, _ := NewGroupTimeout(1, 0)
	c, _ := g.Comm(0)
	if err := RunRank(nil, func() error { return nil }); err == nil || !strings.Contains(err.Error(), "communicator is nil") {
		t.Errorf("RunRank(nil): %v", err)
	}
	if err := RunRank(c, nil); err == nil || !strings.Contains(err.Error(), "fn is nil") {
		t.Errorf("RunRank(c, nil): %v", err)
	}
	if _, err := c.ExchangeCounts([]int32{1}); !errors.Is(err, ErrAborted) {
		t.Errorf("after RunRank(c, nil): %v, want ErrAborted", err)
	}
	if _, err := Guard(nil, nil); err == nil {
		t.Error("Guard(nil, nil): no error")
	}
	g2, _ := NewGroupTimeout(1, 0)
	c2, _ := g2.Comm(0)
	if _, err := Guard(c2, nil); err == nil || !strings.Contains(err.Error(), "build is nil") {
		t.Errorf("Guard(c, nil): %v", err)
	}
	if _, err := Guard(c2, nil, nil); err == nil {
		t.Error("Guard with a nil input: no error")
	}
	// A build that applies its op to a node it holds instead of its argument (it used to
	// panic walking a node Guard's graph does not have).
	gr := G.NewGraph()
	logits := G.NewMatrix(gr, tensor.Float64, G.WithShape(3, 4), G.WithName("logits"),
		G.WithValue(tensor.New(tensor.WithShape(3, 4), tensor.WithBacking(make([]float64, 12)))))
	if _, err := Guard(c2, func(in ...*G.Node) (*G.Node, error) {
		return op.TopK(logits, 2, op.TopKOpts{})
	}, logits); err == nil || !strings.Contains(err.Error(), "outside the graph of its arguments") {
		t.Errorf("Guard of a build that ignores its arguments: %v", err)
	}
}

// TestHostileGoexit: a rank whose step ends with runtime.Goexit (t.FailNow in a rank's
// goroutine, say) neither returns nor panics; RunRank and Group.Run still abort, so that the
// other ranks return instead of waiting forever in their collective.
func TestHostileGoexit(t *testing.T) {
	wait := func(what string, done <-chan error, g *Group) error {
		select {
		case err := <-done:
			return err
		case <-time.After(rankDeadline):
			g.Abort(errors.New("test cleanup"))
			t.Fatalf("%s: still waiting %v after a rank's Goexit", what, rankDeadline)
			return nil
		}
	}
	g, _ := NewGroupTimeout(2, 0)
	c0, _ := g.Comm(0)
	c1, _ := g.Comm(1)
	// The rank that calls Goexit never sees RunRank return; its abort reaches the other rank.
	go RunRank(c0, func() error { runtime.Goexit(); return nil })
	done := make(chan error, 1)
	go func() {
		done <- RunRank(c1, func() error { _, err := c1.ExchangeCounts(make([]int32, 2)); return err })
	}()
	if err := wait("RunRank", done, g); !errors.Is(err, ErrAborted) || !strings.Contains(err.Error(), "Goexit") {
		t.Errorf("RunRank of the rank left waiting: %v, want ErrAborted naming the Goexit", err)
	}
	g2, _ := NewGroupTimeout(2, 0)
	done2 := make(chan error, 1)
	go func() {
		done2 <- g2.Run(func(c Communicator) error {
			if c.Rank() == 0 {
				runtime.Goexit()
			}
			_, err := c.ExchangeCounts(make([]int32, 2))
			return err
		})
	}()
	if err := wait("Group.Run", done2, g2); err == nil || !strings.Contains(err.Error(), "Goexit") {
		t.Errorf("Group.Run: %v, want the Goexit error", err)
	}
}

// TestHostileLocalGeometry: rank counts whose products with T or C wrap around int are
// rejected with an error, not a negative geometry.
func TestHostileLocalGeometry(t *testing.T) {
	cases := []struct {
		name string
		g    kernels.Geometry
		n    int
		want string
	}{
		{"n·T wraps", kernels.Geometry{T: 1 << 40, K: 1, E: 1 << 20, A: 1}, 1 << 20, "exceed the int32 row id limit"},
		{"n·C beyond int32", kernels.Geometry{T: 4, K: 1, E: 8, A: 1, Mode: kernels.Capacity, C: 1 << 30}, 4, "C=1073741824"},
		{"0 ranks", kernels.Geometry{T: 4, K: 1, E: 8, A: 1}, 0, "0 ranks"},
		{"E not divisible", kernels.Geometry{T: 4, K: 1, E: 9, A: 1}, 2, "not divisible"},
		{"invalid geometry", kernels.Geometry{T: 4, K: 2, E: 4, A: 0}, 2, "ranks: plan: alignment A=0"},
	}
	for _, c := range cases {
		if _, err := LocalGeometry(c.g, c.n); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		} else if n := strings.Count(err.Error(), "gomoe: "); n != 1 {
			t.Errorf("%s: error %q carries the gomoe prefix %d times, want once", c.name, err, n)
		}
	}
}

// TestHostileRanksAloneAfterRun: a group whose Group.Run has finished well serves ranks that
// then run alone (RunRank, each in its own goroutine) and a later Run. Run's record of the
// ranks whose step had returned used to outlive it, so the first collective of the ranks alone
// aborted the group with "rank 1's step returned without joining ExchangeCounts".
func TestHostileRanksAloneAfterRun(t *testing.T) {
	defer checkNoLeak(t)()
	g, err := NewGroupTimeout(2, 0)
	if err != nil {
		t.Fatal(err)
	}
	step := func(c Communicator) error {
		recv, err := c.ExchangeCounts([]int32{int32(c.Rank()), int32(c.Rank())})
		if err == nil && (recv[0] != 0 || recv[1] != 1) {
			err = errors.New("wrong counts")
		}
		return err
	}
	if err := runWithin(t, g, rankDeadline, step); err != nil {
		t.Fatalf("Run: %v", err)
	}
	errs := runRanksAlone(t, g, func(c Communicator) error { return RunRank(c, func() error { return step(c) }) })
	for r, err := range errs {
		if err != nil {
			t.Errorf("rank %d alone after Run: %v", r, err)
		}
	}
	if err := runWithin(t, g, rankDeadline, step); err != nil {
		t.Errorf("Run after the ranks alone: %v", err)
	}
}

// TestHostileGroupSize: a group of more ranks than the memory this process may use can hold is
// an error before anything is allocated. NewGroup(math.MaxInt) used to allocate a communicator
// per rank until the process died of out-of-memory.
func TestHostileGroupSize(t *testing.T) {
	defer hostmem.SetLimit(hostmem.SetLimit(1 << 20)) // 1 MiB
	for _, n := range []int{1 << 20, 1 << 40, math.MaxInt} {
		g, err := NewGroupTimeout(n, 0)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("a group of %d ranks", n)) || !strings.Contains(err.Error(), "bytes of memory this process may use") {
			t.Fatalf("NewGroupTimeout(%d): group of %d ranks, error %v; want an error naming the ranks and the memory", n, g.Size(), err)
		}
	}
	if g, err := NewGroup(4); err != nil || g.Size() != 4 {
		t.Errorf("NewGroup(4) under a 1 MiB limit: %v", err)
	}
}

// badRankComm is a communicator whose Rank is outside [0, Size()).
type badRankComm struct{ Communicator }

func (badRankComm) Rank() int { return 3 }
func (badRankComm) Size() int { return 2 }

// TestHostileCommunicator: every entry point that takes a communicator refuses a nil one, a
// nil pointer in the interface (whose methods would dereference it) and one whose rank is
// outside its size, with an error and without calling it.
func TestHostileCommunicator(t *testing.T) {
	g, _ := NewGroupTimeout(1, 0)
	good, _ := g.Comm(0)
	if err := CheckCommunicator(good); err != nil {
		t.Fatalf("CheckCommunicator(a group's rank): %v", err)
	}
	comms := []struct {
		name string
		c    Communicator
		want string
	}{
		{"nil", nil, "communicator is nil"},
		{"nil pointer", (*inProcComm)(nil), "communicator is a nil *ep.inProcComm"},
		{"rank 3 of 2", badRankComm{}, "communicator says rank 3 of 2"},
	}
	gr := G.NewGraph()
	ids := G.NewMatrix(gr, tensor.Int32, G.WithShape(2, 1), G.WithName("ids"))
	entries := []struct {
		name string
		call func(c Communicator) error
	}{
		{"CheckCommunicator", CheckCommunicator},
		{"RunRank", func(c Communicator) error { return RunRank(c, func() error { return nil }) }},
		{"Guard", func(c Communicator) error {
			_, err := Guard(c, func(in ...*G.Node) (*G.Node, error) { return in[0], nil }, ids)
			return err
		}},
		{"NewPlan", func(c Communicator) error {
			_, err := NewPlan(ids, nil, kernels.Geometry{E: 2, K: 1, A: 1}, c)
			return err
		}},
		{"SumGradients", func(c Communicator) error { return SumGradients(c) }},
		{"SumCounts", func(c Communicator) error { _, err := SumCounts(c, []int32{1}); return err }},
		{"ClipGradNorm", func(c Communicator) error { _, err := ClipGradNorm(c, 1, nil, nil); return err }},
	}
	for _, e := range entries {
		for _, c := range comms {
			t.Run(e.name+"/"+c.name, func(t *testing.T) {
				var err error
				func() {
					defer func() {
						if r := recover(); r != nil {
							err = fmt.Errorf("panic: %v", r)
						}
					}()
					err = e.call(c.c)
				}()
				if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "panic") {
					t.Errorf("got %v, want an error mentioning %q", err, c.want)
				}
			})
		}
	}
}

// keyedComm is a group's communicator with a GroupKey of its choosing.
type keyedComm struct {
	Communicator
	key any
}

func (c keyedComm) GroupKey() any { return c.key }

// TestOneGraphOneRank: a graph runs one rank's part of the step, so NewPlan refuses a plan of
// a rank of a group whose other rank already has one in the graph (their collectives would wait
// for each other: until the group's timeout here, forever on NCCL). Layers of one rank, and
// ranks of different groups, may share a graph; a communicator without GroupKey is not
// checked; an uncomparable GroupKey is an error.
func TestOneGraphOneRank(t *testing.T) {
	comms := func() (a, b Communicator) {
		g, err := NewGroupTimeout(2, 0)
		if err != nil {
			t.Fatal(err)
		}
		a, _ = g.Comm(0)
		b, _ = g.Comm(1)
		return a, b
	}
	r0, r1 := comms()
	o0, o1 := comms() // another group
	for _, c := range []struct {
		name   string
		first  Communicator
		second Communicator
		want   string // "": no error
	}{
		{"two ranks of one group", r0, r1, "rank 0's plan"},
		{"one rank twice (two layers)", r0, r0, ""},
		{"ranks of two groups", r0, o1, ""},
		{"another group's rank, then this group's other rank", o0, r1, ""},
		{"no GroupKey", plainComm{r0}, plainComm{r1}, ""},
		{"uncomparable GroupKey", keyedComm{r0, []int{1}}, keyedComm{r1, []int{1}}, "cannot be compared"},
		// A comparable type holding an uncomparable value: == on two of them panicked.
		{"GroupKey of a comparable type holding a slice", keyedComm{r0, struct{ K any }{[]int{1}}}, keyedComm{r1, struct{ K any }{[]int{1}}}, "cannot be compared"},
	} {
		t.Run(c.name, func(t *testing.T) {
			gr := G.NewGraph()
			geo := kernels.Geometry{E: 4, A: 1}
			ids := func(name string) *G.Node {
				return G.NewMatrix(gr, tensor.Int32, G.WithShape(2, 1), G.WithName(name))
			}
			_, err1 := NewPlan(ids("ids0"), nil, geo, c.first)
			_, err2 := NewPlan(ids("ids1"), nil, geo, c.second)
			err := errors.Join(err1, err2)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("error %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("error %v, want one that says %q", err, c.want)
			}
		})
	}
}

// plainComm is a group's communicator without the GroupKey method.
type plainComm struct{ c Communicator }

func (b plainComm) Rank() int                                 { return b.c.Rank() }
func (b plainComm) Size() int                                 { return b.c.Size() }
func (b plainComm) ExchangeCounts(s []int32) ([]int32, error) { return b.c.ExchangeCounts(s) }
func (b plainComm) AllToAll(send, recv Buffer, s, r [][]Block) error {
	return b.c.AllToAll(send, recv, s, r)
}
func (b plainComm) Abort(err error) { b.c.Abort(err) }

// TestHostileDiffAborts: an error in an exchange's DoDiff before its collective (here a wrong
// input count; also a missing output gradient) aborts the group, as the forward's errors do:
// the other ranks used to wait in the collective until the timeout.
func TestHostileDiffAborts(t *testing.T) {
	g, cs := groupComms(t, 2, 0)
	e := exchange{c: cs[0]}
	if err := e.diff(dispatchName, true, nil, nil); err == nil {
		t.Fatal("diff with no inputs: no error")
	}
	if err := g.aborted(); err == nil || !strings.Contains(err.Error(), "DoDiff got 0 inputs") {
		t.Errorf("group after the failed diff: %v, want it aborted with the diff's error", err)
	}
	// Nil nodes are an error too (they panicked).
	if err := e.diff(dispatchName, true, G.Nodes{nil, nil}, nil); err == nil || !strings.Contains(err.Error(), "nil node") {
		t.Errorf("diff with nil nodes: %v, want an error naming them", err)
	}
}
