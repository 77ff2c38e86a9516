package ep

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/ranktest"
	"github.com/gomoe/gomoe/kernels"
)

// checkNoLeak fails if goroutines started during a test are still running after it (polling
// for a second, since exiting goroutines take a moment to be counted out).
func checkNoLeak(t *testing.T) func() {
	t.Helper()
	before := runtime.NumGoroutine()
	return func() {
		t.Helper()
		deadline := time.Now().Add(time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			t.Errorf("%d goroutines before, %d after: a rank leaked", before, n)
		}
	}
}

// runWithin runs g.Run(fn) and fails the test if it takes longer than d (a deadlock).
func runWithin(t *testing.T, g *Group, d time.Duration, fn func(c Communicator) error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- g.Run(fn) }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		g.Abort(errors.New("test deadline"))
		t.Fatalf("group did not finish within %v: deadlock", d)
		return nil
	}
}

func TestAllToAll(t *testing.T) {
	defer checkNoLeak(t)()
	for _, n := range []int{1, 2, 3, 4} {
		for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64, tensor.Int32} {
			t.Run(fmt.Sprintf("N%d/%v", n, dt), func(t *testing.T) {
				rng := rand.New(rand.NewSource(int64(n)))
				const w = 3
				// lens[i][j][k]: rows of the k-th block from rank i to rank j.
				nb := 3
				lens := make([][][]int, n)
				for i := range lens {
					lens[i] = make([][]int, n)
					for j := range lens[i] {
						for k := 0; k < nb; k++ {
							lens[i][j] = append(lens[i][j], rng.Intn(4))
						}
					}
				}
				// Rank i's send rows: blocks to rank 0, 1, ... packed; values encode (i, row).
				// Rank j's receive rows: blocks from the highest rank first, with a gap row
				// between blocks, to test arbitrary placement.
				sendRows := make([]int, n)
				recvRows := make([]int, n)
				for i := 0; i < n; i++ {
					for j := 0; j < n; j++ {
						for k := 0; k < nb; k++ {
							sendRows[i] += lens[i][j][k]
							recvRows[j] += lens[i][j][k] + 1
						}
					}
				}
				val := func(i, row, col int) float64 { return float64(i*1000 + row*10 + col) }
				mk := func(rows int, f func(r, c int) float64) any {
					switch dt {
					case tensor.Float32:
						s := make([]float32, rows*w)
						for i := range s {
							s[i] = float32(f(i/w, i%w))
						}
						return s
					case tensor.Float64:
						s := make([]float64, rows*w)
						for i := range s {
							s[i] = f(i/w, i%w)
						}
						return s
					}
					s := make([]int32, rows*w)
					for i := range s {
						s[i] = int32(f(i/w, i%w))
					}
					return s
				}
				got := make([]any, n)
				g, err := NewGroupTimeout(n, 10*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				err = runWithin(t, g, 20*time.Second, func(c Communicator) error {
					me := c.Rank()
					send, err := HostBuffer(mk(sendRows[me], func(r, col int) float64 { return val(me, r, col) }), w)
					if err != nil {
						return err
					}
					recv, err := HostBuffer(mk(recvRows[me], func(int, int) float64 { return -1 }), w)
					if err != nil {
						return err
					}
					sends, recvs := make([][]Block, n), make([][]Block, n)
					at := 0
					for j := 0; j < n; j++ {
						for k := 0; k < nb; k++ {
							sends[j] = append(sends[j], Block{at, lens[me][j][k]})
							at += lens[me][j][k]
						}
					}
					at = 0
					for i := n - 1; i >= 0; i-- {
						for k := 0; k < nb; k++ {
							recvs[i] = append(recvs[i], Block{at, lens[i][me][k]})
							at += lens[i][me][k] + 1
						}
					}
					got[me] = recv.Host
					return c.AllToAll(send, recv, sends, recvs)
				})
				if err != nil {
					t.Fatal(err)
				}
				// Reference: walk the same layout with plain loops.
				for j := 0; j < n; j++ {
					want := make([]float64, recvRows[j]*w)
					for i := range want {
						want[i] = -1
					}
					at := 0
					for i := n - 1; i >= 0; i-- {
						// Rows of rank i's blocks to j start after its blocks to ranks < j.
						src := 0
						for jj := 0; jj < j; jj++ {
							for k := 0; k < nb; k++ {
								src += lens[i][jj][k]
							}
						}
						for k := 0; k < nb; k++ {
							for r := 0; r < lens[i][j][k]; r++ {
								for col := 0; col < w; col++ {
									want[(at+r)*w+col] = val(i, src+r, col)
								}
							}
							src += lens[i][j][k]
							at += lens[i][j][k] + 1
						}
					}
					var gotF []float64
					switch s := got[j].(type) {
					case []float32:
						for _, v := range s {
							gotF = append(gotF, float64(v))
						}
					case []float64:
						gotF = s
					case []int32:
						for _, v := range s {
							gotF = append(gotF, float64(v))
						}
					}
					for i := range want {
						if gotF[i] != want[i] {
							t.Fatalf("rank %d element %d = %v, want %v", j, i, gotF[i], want[i])
						}
					}
				}
			})
		}
	}
}

func TestExchangeCounts(t *testing.T) {
	defer checkNoLeak(t)()
	const n, m = 4, 3
	g, err := NewGroup(n)
	if err != nil {
		t.Fatal(err)
	}
	got := make([][]int32, n)
	err = runWithin(t, g, 10*time.Second, func(c Communicator) error {
		var err error
		got[c.Rank()], err = c.ExchangeCounts(ranktest.CountsSend(c.Rank(), n, m))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ranktest.CheckCounts(t, got, m)
}

// TestCollectiveErrors: every bad call gives an error on every rank (the same verdict), and
// no rank hangs or leaks.
func TestCollectiveErrors(t *testing.T) {
	f32 := func(rows int) Buffer { b, _ := HostBuffer(make([]float32, rows*2), 2); return b }
	sharedSend := make([]float32, 6)
	sharedRecv := make([]float32, 4)
	blocks := func(n int, lens ...int) [][]Block {
		l := make([][]Block, n)
		at := 0
		for j := 0; j < n; j++ {
			l[j] = []Block{{at, lens[j]}}
			at += lens[j]
		}
		return l
	}
	cases := []struct {
		name string
		n    int
		fn   func(c Communicator) error
		want string
	}{
		{"block length mismatch", 2, func(c Communicator) error {
			if c.Rank() == 0 {
				return c.AllToAll(f32(4), f32(4), blocks(2, 1, 2), blocks(2, 1, 2))
			}
			return c.AllToAll(f32(4), f32(4), blocks(2, 1, 2), blocks(2, 3, 1)) // expects 3 from rank 0
		}, "has 2 rows, but the receiver expects 3"},
		{"block count mismatch", 2, func(c Communicator) error {
			r := blocks(2, 1, 1)
			if c.Rank() == 1 {
				r[0] = append(r[0], Block{3, 0})
			}
			return c.AllToAll(f32(4), f32(4), blocks(2, 1, 1), r)
		}, "sends 1 blocks to rank 1, which expects 2"},
		{"block out of range", 2, func(c Communicator) error {
			return c.AllToAll(f32(2), f32(4), blocks(2, 2, 2), blocks(2, 2, 2))
		}, "outside the buffer"},
		{"block offset wraps around", 2, func(c Communicator) error {
			s := blocks(2, 1, 1)
			if c.Rank() == 1 {
				s[0][0] = Block{math.MaxInt, 1}
			}
			return c.AllToAll(f32(2), f32(2), s, blocks(2, 1, 1))
		}, "rank 1 sends[0][0] = 1 rows at row 9223372036854775807 is outside the buffer's 2 rows"},
		{"block length wraps around", 2, func(c Communicator) error {
			r := blocks(2, 1, 1)
			if c.Rank() == 0 {
				r[1][0] = Block{1, math.MaxInt}
			}
			return c.AllToAll(f32(2), f32(2), blocks(2, 1, 1), r)
		}, "rank 0 receives[1][0] = 9223372036854775807 rows at row 1 is outside"},
		{"wrong number of block lists", 3, func(c Communicator) error {
			return c.AllToAll(f32(2), f32(2), blocks(2, 1, 1), blocks(2, 1, 1))
		}, "block lists for 2 ranks, want 3"},
		{"dtype mismatch", 2, func(c Communicator) error {
			send := f32(2)
			if c.Rank() == 1 {
				send, _ = HostBuffer(make([]float64, 4), 2)
			}
			return c.AllToAll(send, f32(2), blocks(2, 1, 1), blocks(2, 1, 1))
		}, "but rank 0 sends"},
		// Shared memory: the in-place exchange used to return wrong rows (and race).
		{"in place", 2, func(c Communicator) error {
			b := f32(2)
			return c.AllToAll(b, b, blocks(2, 1, 1), blocks(2, 1, 1))
		}, "AllToAll: rank 0's receive and rank 0's send: the receive buffer shares memory with the send buffer"},
		{"receive overlaps a send", 2, func(c Communicator) error {
			send := f32(2)
			recv := f32(2)
			if c.Rank() == 1 { // rank 1 receives into the second row of rank 0's send
				recv = Buffer{Host: sharedSend[2:], Dtype: tensor.Float32, Rows: 2, Width: 2}
			} else {
				send = Buffer{Host: sharedSend[:4], Dtype: tensor.Float32, Rows: 2, Width: 2}
			}
			return c.AllToAll(send, recv, blocks(2, 1, 1), blocks(2, 1, 1))
		}, "rank 1's receive and rank 0's send: the receive buffer shares memory"},
		// Two ranks receiving into one buffer wrote it from two goroutines at once (a data
		// race, and rows that depended on the schedule).
		{"two ranks receive into one buffer", 2, func(c Communicator) error {
			recv := Buffer{Host: sharedRecv[:4], Dtype: tensor.Float32, Rows: 2, Width: 2}
			return c.AllToAll(f32(2), recv, blocks(2, 1, 1), blocks(2, 1, 1))
		}, "AllToAll: rank 0's and rank 1's receive buffers share memory"},
		{"counts length mismatch", 2, func(c Communicator) error {
			_, err := c.ExchangeCounts(make([]int32, 2+2*c.Rank()))
			return err
		}, "sends 4 counts but rank 0 sends 2"},
		{"counts not a multiple of the rank count", 3, func(c Communicator) error {
			_, err := c.ExchangeCounts(make([]int32, 4))
			return err
		}, "not a multiple of the 3 ranks"},
		{"collectives out of order", 2, func(c Communicator) error {
			if c.Rank() == 0 {
				_, err := c.ExchangeCounts(make([]int32, 2))
				return err
			}
			return c.AllToAll(f32(2), f32(2), blocks(2, 1, 1), blocks(2, 1, 1))
		}, "collectives out of order"},
		{"rank fails before a collective", 4, func(c Communicator) error {
			if c.Rank() == 2 {
				return errors.New("rank 2 broke")
			}
			_, err := c.ExchangeCounts(make([]int32, 4))
			return err
		}, "rank 2 broke"},
		{"rank panics", 2, func(c Communicator) error {
			if c.Rank() == 1 {
				panic("boom")
			}
			_, err := c.ExchangeCounts(make([]int32, 2))
			return err
		}, "panicked: boom"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			defer checkNoLeak(t)()
			g, err := NewGroupTimeout(tc.n, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			failed := 0
			err = runWithin(t, g, 15*time.Second, func(c Communicator) error {
				err := tc.fn(c)
				if err != nil {
					mu.Lock()
					failed++
					mu.Unlock()
				}
				return err
			})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if failed != tc.n && !strings.Contains(tc.name, "panic") {
				t.Errorf("%d of %d ranks returned an error, want all", failed, tc.n)
			}
			// The group stays aborted: a later collective fails at once.
			c0, _ := g.Comm(0)
			if _, err := c0.ExchangeCounts(make([]int32, tc.n)); !errors.Is(err, ErrAborted) {
				t.Errorf("collective after the failure: %v, want ErrAborted", err)
			}
		})
	}
}

func TestTimeoutAborts(t *testing.T) {
	defer checkNoLeak(t)()
	g, err := NewGroupTimeout(3, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	err = runWithin(t, g, 5*time.Second, func(c Communicator) error {
		if c.Rank() == 1 {
			time.Sleep(time.Second) // late: past the others' timeout
			return nil
		}
		_, err := c.ExchangeCounts(make([]int32, 3))
		return err
	})
	if !errors.Is(err, ErrAborted) || !strings.Contains(err.Error(), "waited") {
		t.Fatalf("error %v, want an abort after the timeout", err)
	}
}

// TestRunRankReturnsEarly: in Group.Run, a rank whose step returns without an error while the
// others wait in a collective (uneven batches: one rank takes a step fewer) aborts the group at
// once, also with no timeout, where the others used to wait forever; the same group then runs
// a good step.
func TestRunRankReturnsEarly(t *testing.T) {
	defer checkNoLeak(t)()
	g, err := NewGroupTimeout(3, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, early := range []time.Duration{0, 50 * time.Millisecond} { // before and after the others wait
		err = runWithin(t, g, 5*time.Second, func(c Communicator) error {
			if c.Rank() == 0 {
				time.Sleep(early)
				return nil
			}
			_, err := c.ExchangeCounts(make([]int32, 3))
			return err
		})
		if !errors.Is(err, ErrAborted) || !strings.Contains(err.Error(), "rank 0's step returned without joining ExchangeCounts") {
			t.Fatalf("early %v: error %v, want an abort naming rank 0", early, err)
		}
		g, _ = NewGroupTimeout(3, 0) // an aborted group stays aborted
	}
	if err := runWithin(t, g, 5*time.Second, func(c Communicator) error {
		_, err := c.ExchangeCounts(make([]int32, 3))
		return err
	}); err != nil {
		t.Fatalf("a good step after the early returns: %v", err)
	}
}

// TestRunReturnsTheCause: Group.Run returns the error of the rank whose failure aborted the
// group, not another rank's report of the abort, also when the ranks' errors come through a
// Gorgonia machine, whose errors do not wrap (errors.Is finds no ErrAborted in them): Run
// used to return rank 0's "communicator aborted" for a bad expert id on rank 1 or 2. (The
// tape machine only: Gorgonia's lisp machine leaves a goroutine behind after a failed run, and
// races with it.)
func TestRunReturnsTheCause(t *testing.T) {
	defer checkNoLeak(t)()
	c := layerCase{N: 3, T: 4, K: 2, E: 6, H: 3, F: 2, A: 1}
	// The gradient of one graph first, on this goroutine: Gorgonia hashes its constant nodes,
	// which all graphs share, on their first use, and the ranks' first G.Grad race on it.
	if _, err := singleRank(c, makeInputs(c, 5), tensor.Float64, tape); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []int{1, 2} {
		g, err := NewGroupTimeout(c.N, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		errs := make([]error, c.N)
		err = runWithin(t, g, 15*time.Second, func(comm Communicator) error {
			in := makeInputs(c, 5)
			if comm.Rank() == bad {
				in.ids[bad*c.T*c.K+1] = 77
			}
			rg, err := buildRank(c, in, tensor.Float64, comm)
			if err == nil {
				_, _, err = runGraph(rg.g, tape, rg.cost, rg.wrt)
			}
			errs[comm.Rank()] = err
			return err
		})
		want := fmt.Sprintf("rank %d: %v", bad, errs[bad])
		if err == nil || err.Error() != want {
			t.Errorf("bad id on rank %d: Run returned %v, want rank %d's error %q", bad, err, bad, want)
		}
		if !strings.Contains(fmt.Sprint(err), "ids[0,1] = 77 is out of range") {
			t.Errorf("bad id on rank %d: Run returned %v, want the bad id named", bad, err)
		}
	}
}

func TestGroupArgs(t *testing.T) {
	if _, err := NewGroup(0); err == nil {
		t.Error("NewGroup(0): no error")
	}
	g, err := NewGroup(2)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []int{-1, 2} {
		if _, err := g.Comm(r); err == nil {
			t.Errorf("Comm(%d) of 2 ranks: no error", r)
		}
	}
	if _, err := HostBuffer([]float32{1, 2, 3}, 2); err == nil {
		t.Error("HostBuffer of 3 elements in rows of 2: no error")
	}
	if _, err := HostBuffer([]int{1}, 1); err == nil {
		t.Error("HostBuffer([]int): no error")
	}
}

// TestLayerErrors: bad geometry, mismatched ranks and a failing rank give errors on every
// rank, without deadlock.
func TestLayerErrors(t *testing.T) {
	base := layerCase{N: 2, T: 4, K: 2, E: 4, H: 3, F: 2, A: 1}
	t.Run("E not divisible by N", func(t *testing.T) {
		g, _ := NewGroup(3)
		c, _ := g.Comm(0)
		gr := G.NewGraph()
		n := newLayerNodes(gr, tensor.Float64, base, base.T, 1, make([]float64, 12), make([]float64, 8), nil, nil, make([]float64, 12), make([]int32, 8))
		if _, err := NewPlan(n.ids, nil, kernels.Geometry{E: 4, A: 1}, c); err == nil || !strings.Contains(err.Error(), "not divisible by N=3") {
			t.Errorf("error %v, want E not divisible", err)
		}
		if _, err := NewPlan(n.ids, nil, kernels.Geometry{E: 4, A: 1}, nil); err == nil {
			t.Error("nil communicator: no error")
		}
		if _, err := NewPlan(nil, nil, kernels.Geometry{E: 3, A: 1}, c); err == nil {
			t.Error("nil ids: no error")
		}
		if _, err := Dispatch(n.x, nil); err == nil {
			t.Error("Dispatch with a nil plan: no error")
		}
		if _, err := Combine(n.x, nil, nil); err == nil {
			t.Error("Combine with a nil plan: no error")
		}
	})
	run := func(t *testing.T, mutate func(r int, c *layerCase, in *layerInputs), want string) {
		t.Helper()
		defer checkNoLeak(t)()
		g, err := NewGroupTimeout(base.N, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		failed := 0
		err = runWithin(t, g, 15*time.Second, func(comm Communicator) error {
			c, in := base, makeInputs(base, 5)
			mutate(comm.Rank(), &c, &in)
			err := func() error {
				rg, err := buildRank(c, in, tensor.Float64, comm)
				if err != nil {
					return err
				}
				_, _, err = runGraph(rg.g, tape, rg.cost, rg.wrt)
				return err
			}()
			if err != nil {
				mu.Lock()
				failed++
				mu.Unlock()
			}
			return err
		})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("error %v, want one containing %q", err, want)
		}
		if failed != base.N {
			t.Errorf("%d of %d ranks returned an error, want all", failed, base.N)
		}
	}
	t.Run("ranks with different T", func(t *testing.T) {
		run(t, func(r int, c *layerCase, in *layerInputs) {
			if r == 1 {
				c.T = 3
			}
		}, "T=3 K=")
	})
	t.Run("ranks with different E", func(t *testing.T) {
		run(t, func(r int, c *layerCase, in *layerInputs) {
			if r == 1 {
				c.E, c.N = 2, 2
				*in = makeInputs(*c, 5)
			}
		}, "rank 1 sends 20 counts but rank 0 sends 22")
	})
	t.Run("bad expert id on one rank", func(t *testing.T) {
		run(t, func(r int, c *layerCase, in *layerInputs) {
			if r == 0 {
				in.ids[3] = 9
			}
		}, "out of range")
	})
}

// TestUnweightedCombineAndShapes: Combine without probs sums a token's returned rows in slot
// order (reference: the same sum as a loop), and the node functions reject wrong shapes.
func TestUnweightedCombineAndShapes(t *testing.T) {
	defer checkNoLeak(t)()
	c := layerCase{N: 2, T: 5, K: 3, E: 4, H: 2, drop: 0.3, rowwise: true}
	in := makeInputs(c, 9)
	got := make([][]float64, c.N)
	g, _ := NewGroupTimeout(c.N, 10*time.Second)
	err := runWithin(t, g, 15*time.Second, func(comm Communicator) error {
		r := comm.Rank()
		gr := G.NewGraph()
		n := newLayerNodes(gr, tensor.Float64, c, c.T, 0, in.x[r*c.T*c.H:(r+1)*c.T*c.H], in.probs[r*c.T*c.K:(r+1)*c.T*c.K], nil, nil, in.rw[r*c.T*c.H:(r+1)*c.T*c.H], in.ids[r*c.T*c.K:(r+1)*c.T*c.K])
		plan, err := NewPlan(n.ids, nil, kernels.Geometry{E: c.E, A: 2}, comm)
		if err != nil {
			return err
		}
		// Wrong shapes are build-time errors, and no collective runs.
		if _, err := DispatchRows(n.x, plan); err == nil || !strings.Contains(err.Error(), "xs has shape (5, 2)") {
			return fmt.Errorf("DispatchRows of x [T,H]: error %v, want a shape error", err)
		}
		if _, err := CombineRows(n.x, plan); err == nil || !strings.Contains(err.Error(), "yr has shape") {
			return fmt.Errorf("CombineRows of x [T,H]: error %v, want a shape error", err)
		}
		xr, err := Dispatch(n.x, plan)
		if err != nil {
			return err
		}
		y, err := Combine(xr, nil, plan)
		if err != nil {
			return err
		}
		m := G.NewTapeMachine(gr)
		defer m.Close()
		if err := m.RunAll(); err != nil {
			return err
		}
		got[r] = floats(y.Value())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for r := 0; r < c.N; r++ {
		for t0 := 0; t0 < c.T; t0++ {
			tok := r*c.T + t0
			for h := 0; h < c.H; h++ {
				var want float64
				for k := 0; k < c.K; k++ {
					if in.ids[tok*c.K+k] >= 0 {
						want += in.x[tok*c.H+h]
					}
				}
				if g := got[r][t0*c.H+h]; g != want {
					t.Fatalf("rank %d y[%d,%d] = %v, want %v", r, t0, h, g, want)
				}
			}
		}
	}
}

// TestCheckDisjoint: buffers share memory only where their byte ranges overlap, host with host
// or device with device.
func TestCheckDisjoint(t *testing.T) {
	dev := func(addr uintptr) Buffer { return Buffer{Device: addr, Dtype: tensor.Float32, Rows: 2, Width: 2} } // 16 bytes
	host := make([]float64, 8)
	hb := func(lo, hi int) Buffer {
		return Buffer{Host: host[lo:hi], Dtype: tensor.Float64, Rows: (hi - lo) / 2, Width: 2}
	}
	cases := []struct {
		name       string
		send, recv Buffer
		overlap    bool
	}{
		{"device, adjacent", dev(0x1000), dev(0x1010), false},
		{"device, 4 bytes shared", dev(0x1000), dev(0x100c), true},
		{"device, the same", dev(0x1000), dev(0x1000), true},
		{"device, recv first", dev(0x1010), dev(0x1004), true},
		{"device, empty", dev(0x1000), Buffer{Device: 0x1000, Dtype: tensor.Float32, Width: 2}, false},
		{"host, halves", hb(0, 4), hb(4, 8), false},
		{"host, one row shared", hb(0, 4), hb(2, 6), true},
		{"host and device at the same number", Buffer{Host: host, Dtype: tensor.Float64, Rows: 4, Width: 2}, dev(uintptr(unsafe.Pointer(&host[0]))), false},
	}
	for _, c := range cases {
		err := CheckDisjoint("x", c.send, c.recv)
		if (err != nil) != c.overlap {
			t.Errorf("%s: %v, want an error: %v", c.name, err, c.overlap)
		}
	}
	// A device buffer without an element dtype: Check refuses it, and CheckDisjoint returns
	// that error (it used to panic computing the buffer's bytes).
	nodt := Buffer{Device: 0x1000, Rows: 2, Width: 2}
	if err := nodt.Check("x"); err == nil || !strings.Contains(err.Error(), "no element dtype") {
		t.Errorf("device buffer without a dtype: Check error %v", err)
	}
	if err := CheckDisjoint("x", nodt, dev(0x2000)); err == nil || !strings.Contains(err.Error(), "no element dtype") {
		t.Errorf("device buffer without a dtype: CheckDisjoint error %v", err)
	}
	if err := CheckDisjoint("x", hb(0, 4), Buffer{Host: host, Dtype: tensor.Float32, Rows: 4, Width: 2}); err == nil {
		t.Error("host buffer whose dtype is not its data's: CheckDisjoint gave no error")
	}
}

// TestGroupRunOneAtATime: a Run called while another Run of the group is in progress returns
// an error at once and leaves the first one to finish (the two used to share each rank's
// communicator, pairing ranks of different steps in one collective).
func TestGroupRunOneAtATime(t *testing.T) {
	defer checkNoLeak(t)()
	g, err := NewGroupTimeout(2, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	started, release := make(chan struct{}, 2), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- g.Run(func(c Communicator) error {
			started <- struct{}{}
			<-release
			_, err := c.ExchangeCounts([]int32{int32(c.Rank()), 1})
			return err
		})
	}()
	<-started
	<-started
	err = g.Run(func(c Communicator) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "another Run of this group is in progress") {
		t.Errorf("second Run: %v, want an error", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Errorf("first Run: %v", err)
	}
	if err := g.Run(func(c Communicator) error { return nil }); err != nil {
		t.Errorf("a Run after the first ended: %v", err)
	}
}

// TestWaitCompletedBeforeAbort: a collective that completed returns no error even when the
// group was aborted after it (both channels closed; select picked either, so a rank that
// aborted right after its own call returned failed the other rank's completed call).
func TestWaitCompletedBeforeAbort(t *testing.T) {
	g, cs := groupComms(t, 2, 1)
	c := cs[0]
	done := make(chan struct{})
	close(done)
	g.Abort(errors.New("rank 0 found something wrong after the exchange"))
	for i := range 200 {
		if err := c.(*inProcComm).wait(done, "a test"); err != nil {
			t.Fatalf("call %d: %v, want nil: the collective had completed before the abort", i, err)
		}
	}
}

// TestPlanSameDropPolicyAlike: ranks whose geometries name the same drop policy in different
// words (Drop 0, which a Geometry reads as DropByPosition, and DropByPosition; in dropless
// mode, where no pair is dropped, any policy) build their plans together; they used to fail
// with "every rank must use the same geometry". Each rank's rows equal a loop reference.
func TestPlanSameDropPolicyAlike(t *testing.T) {
	defer checkNoLeak(t)()
	c := layerCase{N: 2, T: 5, K: 2, E: 4, H: 2, A: 1, rowwise: true}
	in := makeInputs(c, 4)
	for _, geos := range [][2]kernels.Geometry{
		{{E: 4, A: 1, Mode: kernels.Capacity, C: 2}, {E: 4, A: 1, Mode: kernels.Capacity, C: 2, Drop: kernels.DropByPosition}},
		{{E: 4, A: 1}, {E: 4, A: 1, Drop: kernels.DropByProb}},
	} {
		t.Run(fmt.Sprintf("%v/%v", geos[0].Mode, geos[1].DropPolicy()), func(t *testing.T) {
			cc := c
			if geos[0].Mode == kernels.Capacity {
				cc.capacity = geos[0].C
			}
			got := make([][][]float64, c.N) // got[r][l]: rank r's rows of local expert l
			g, _ := NewGroupTimeout(c.N, 10*time.Second)
			err := runWithin(t, g, 15*time.Second, func(comm Communicator) error {
				r := comm.Rank()
				gr := G.NewGraph()
				n := newLayerNodes(gr, tensor.Float64, c, c.T, 0, in.x[r*c.T*c.H:(r+1)*c.T*c.H], in.probs[r*c.T*c.K:(r+1)*c.T*c.K], nil, nil, in.rw[r*c.T*c.H:(r+1)*c.T*c.H], in.ids[r*c.T*c.K:(r+1)*c.T*c.K])
				p, err := NewPlan(n.ids, nil, geos[r], comm)
				if err != nil {
					return err
				}
				xr, err := Dispatch(n.x, p)
				if err != nil {
					return err
				}
				var xv, pv G.Value
				G.Read(xr, &xv)
				G.Read(p.Node, &pv)
				m := G.NewTapeMachine(gr)
				defer m.Close()
				if err := m.RunAll(); err != nil {
					return err
				}
				lp, err := p.LocalGeometry.View(pv.Data().([]int32)[2*c.E+1:])
				if err != nil {
					return err
				}
				got[r] = segmentRows(lp, floats(xv), c.H)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			el := c.E / c.N
			for e, want := range refRows(cc, in, tensor.Float64) {
				sameBits(t, fmt.Sprintf("rows of expert %d", e), got[e/el][e%el], want)
			}
		})
	}
	// Policies that differ in capacity mode still fail on every rank.
	g, _ := NewGroupTimeout(c.N, 10*time.Second)
	var mu sync.Mutex
	failed := 0
	err := runWithin(t, g, 15*time.Second, func(comm Communicator) error {
		r := comm.Rank()
		gr := G.NewGraph()
		n := newLayerNodes(gr, tensor.Float64, c, c.T, 0, in.x[:c.T*c.H], in.probs[:c.T*c.K], nil, nil, in.rw[:c.T*c.H], in.ids[:c.T*c.K])
		geo := kernels.Geometry{E: 4, A: 1, Mode: kernels.Capacity, C: 2, Drop: []kernels.DropPolicy{kernels.DropByPosition, kernels.DropByProb}[r]}
		_, err := NewPlan(n.ids, n.probs, geo, comm)
		if err == nil {
			m := G.NewTapeMachine(gr)
			defer m.Close()
			err = m.RunAll()
		}
		if err != nil {
			mu.Lock()
			failed++
			mu.Unlock()
		}
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "drop=2") || failed != c.N {
		t.Errorf("capacity mode, drop by position on rank 0 and by prob on rank 1: %d ranks failed, error %v, want every rank's error, naming drop=2", failed, err)
	}
}

// groupComms makes an in-process group of n ranks and returns it with the communicators of
// ranks, in that order.
func groupComms(t *testing.T, n int, ranks ...int) (*Group, []Communicator) {
	t.Helper()
	g, err := NewGroup(n)
	if err != nil {
		t.Fatal(err)
	}
	cs := make([]Communicator, len(ranks))
	for i, r := range ranks {
		if cs[i], err = g.Comm(r); err != nil {
			t.Fatal(err)
		}
	}
	return g, cs
}
