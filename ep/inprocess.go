package ep

import (
	"errors"
	"fmt"
	"sync"
	"time"
	"unsafe"

	"github.com/gomoe/gomoe/internal/hostmem"
)

// Group is an in-process expert-parallel group of N ranks that run as goroutines of one
// process and exchange host buffers by copying. It implements the same collectives as the NCCL
// communicator, with the same ordering rules, and checks more: every collective validates what
// all ranks passed (the same collective, matching block lengths, dtypes and widths) and fails
// on every rank alike when they disagree, instead of corrupting memory or hanging.
//
// A rank that waits longer than the group's timeout for the others aborts the group, so a rank
// that dies or skips a collective makes every rank return an error instead of deadlocking.
type Group struct {
	n       int
	timeout time.Duration

	mu       sync.Mutex
	cur      *phase        // the collective being assembled, nil between collectives
	abort    chan struct{} // closed by Abort
	err      error         // the abort cause
	abortBy  int           // the rank whose Abort (or whose wait's timeout) aborted the group; -1: none or another cause
	comms    []*inProcComm
	returned []bool // returned[r]: rank r's fn of the current Run has returned nil; nil outside Run
	running  bool   // a Run is in progress
}

// phase is one collective: ranks post their arguments, the last one to arrive validates them
// all and releases the rest; after copying, a second barrier keeps every send buffer alive
// and unchanged until all ranks have read it.
type phase struct {
	posts    []post
	posted   []bool // posted[r]: rank r has posted
	arrived  int
	done     chan struct{} // closed when all ranks have posted
	verdict  error         // set before done is closed
	finished int
	released chan struct{} // closed when all ranks have copied
}

type post struct {
	kind         string
	counts       []int32
	send, recv   Buffer
	sends, recvs [][]Block
}

// DefaultTimeout is how long a rank of a Group waits for the others in one collective before it
// aborts the group.
const DefaultTimeout = time.Minute

// NewGroup makes an in-process group of n ranks with the DefaultTimeout.
func NewGroup(n int) (*Group, error) { return NewGroupTimeout(n, DefaultTimeout) }

// NewGroupTimeout makes an in-process group of n ranks whose collectives abort the group after
// waiting timeout for the other ranks (timeout <= 0: wait forever).
func NewGroupTimeout(n int, timeout time.Duration) (*Group, error) {
	if n < 1 {
		return nil, fmt.Errorf("ep: group of %d ranks, want at least 1", n)
	}
	// Each rank's communicator, its place in a collective and in Run's records.
	const rankBytes = unsafe.Sizeof(inProcComm{}) + unsafe.Sizeof(&inProcComm{}) + unsafe.Sizeof(post{}) + unsafe.Sizeof(error(nil)) + 2
	if err := hostmem.Check(fmt.Sprintf("ep: a group of %d ranks", n), float64(n)*float64(rankBytes)); err != nil {
		return nil, err
	}
	g := &Group{n: n, timeout: timeout, abort: make(chan struct{}), abortBy: -1}
	for r := 0; r < n; r++ {
		g.comms = append(g.comms, &inProcComm{g: g, rank: r})
	}
	return g, nil
}

// Size is the number of ranks.
func (g *Group) Size() int {
	if g == nil {
		return 0
	}
	return g.n
}

// Comm returns rank r's communicator.
func (g *Group) Comm(r int) (Communicator, error) {
	if g == nil {
		return nil, errors.New("ep: Comm of a nil Group")
	}
	if r < 0 || r >= g.n {
		return nil, fmt.Errorf("ep: rank %d of a group of %d ranks", r, g.n)
	}
	return g.comms[r], nil
}

// Abort fails every pending and later collective of the group with an error wrapping
// ErrAborted and err.
func (g *Group) Abort(err error) {
	if g == nil {
		return
	}
	g.abortFrom(-1, err)
}

// abortFrom is Abort by rank r (-1: not a rank's own failure).
func (g *Group) abortFrom(r int, err error) {
	if err == nil {
		err = errors.New("aborted without a cause")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err == nil {
		g.abortBy = r
	}
	g.abortLocked(err)
}

// aborted returns the abort error, or nil.
func (g *Group) aborted() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrAborted, g.err)
}

// Run calls fn once per rank, each in its own goroutine, and waits for all of them. The first
// rank whose fn fails (or panics) aborts the group, so that ranks blocked in a collective
// return too. Run returns nil if every fn succeeded, else the first failure's cause: the error
// of the rank that aborted the group (errors of other ranks that only report the abort are
// left out). One Run at a time: a Run called while
// another is in progress returns an error (the two would share each rank's communicator).
func (g *Group) Run(fn func(c Communicator) error) error {
	if g == nil {
		return errors.New("ep: Run of a nil Group")
	}
	if fn == nil {
		return errors.New("ep: Group.Run: fn is nil")
	}
	g.mu.Lock()
	if g.running {
		g.mu.Unlock()
		return errors.New("ep: Group.Run: another Run of this group is in progress (one at a time: both would use each rank's communicator)")
	}
	g.running, g.returned = true, make([]bool, g.n)
	g.mu.Unlock()
	errs := make([]error, g.n)
	var wg sync.WaitGroup
	for r := 0; r < g.n; r++ {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			c := g.comms[r]
			// RunRank aborts the group on an error, a panic or runtime.Goexit; after a Goexit
			// it does not return, and this error stays.
			errs[r] = fmt.Errorf("rank %d: fn exited without returning (runtime.Goexit)", r)
			if err := RunRank(c, func() error { return fn(c) }); err != nil {
				errs[r] = fmt.Errorf("rank %d: %w", r, err)
			} else {
				errs[r] = nil
				g.rankReturned(r)
			}
		}(r)
	}
	wg.Wait()
	g.mu.Lock()
	g.running, g.returned = false, nil // Run is over: ranks that now run alone (RunRank) have not returned
	by := g.abortBy
	g.mu.Unlock()
	// The rank that aborted the group failed first. The others' errors report the abort, but
	// may not wrap ErrAborted: a Gorgonia machine's errors do not wrap the op's.
	if by >= 0 && errs[by] != nil {
		return errs[by]
	}
	var first error
	for _, err := range errs {
		if err == nil {
			continue
		}
		if !errors.Is(err, ErrAborted) {
			return err
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// rankReturned records that rank r's fn of Run returned nil: a collective that r has not
// joined can never complete, so one being assembled now, or any later one of this Run, aborts
// the group (with no timeout the others would wait forever).
func (g *Group) rankReturned(r int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.returned[r] = true
	if ph := g.cur; ph != nil && !ph.posted[r] {
		g.abortLocked(missingRank(ph, r))
	}
}

// missingRank is the error of a collective that rank r, whose step has returned, never joins.
func missingRank(ph *phase, r int) error {
	what := "a collective"
	for i, ok := range ph.posted {
		if ok {
			what = fmt.Sprintf("%s (rank %d is in it)", ph.posts[i].kind, i)
			break
		}
	}
	return fmt.Errorf("ep: rank %d's step returned without joining %s: every rank must call the same collectives", r, what)
}

// abortLocked is Abort with g.mu held.
func (g *Group) abortLocked(err error) {
	if g.err == nil {
		g.err = err
		close(g.abort)
	}
}

// inProcComm is one rank's view of a Group.
type inProcComm struct {
	g    *Group
	rank int
}

func (c *inProcComm) Rank() int       { return c.rank }
func (c *inProcComm) Size() int       { return c.g.n }
func (c *inProcComm) Abort(err error) { c.g.abortFrom(c.rank, err) }
func (c *inProcComm) GroupKey() any   { return c.g }
func (c *inProcComm) String() string {
	return fmt.Sprintf("ep.Group(%p)[rank %d of %d]", c.g, c.rank, c.g.n)
}
func (c *inProcComm) wait(ch chan struct{}, what string) error {
	var timer <-chan time.Time
	if c.g.timeout > 0 {
		t := time.NewTimer(c.g.timeout)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-ch:
		return nil
	case <-c.g.abort:
		// A rank that returned from this collective may abort the group before this one gets
		// here; select then picks either of the two closed channels at random, and the
		// collective, which completed, reported that later abort.
		select {
		case <-ch:
			return nil
		default:
		}
		return c.g.aborted()
	case <-timer:
		select {
		case <-ch: // completed as the time ran out
			return nil
		default:
		}
		c.g.abortFrom(c.rank, fmt.Errorf("rank %d waited %v for the other ranks in %s", c.rank, c.g.timeout, what))
		return c.g.aborted()
	}
}

// enter posts this rank's arguments to the current collective and waits for all ranks; the
// last to arrive validates the posts.
func (c *inProcComm) enter(p post) (*phase, error) {
	g := c.g
	g.mu.Lock()
	if g.err != nil {
		g.mu.Unlock()
		return nil, g.aborted()
	}
	ph := g.cur
	if ph == nil {
		ph = &phase{posts: make([]post, g.n), posted: make([]bool, g.n), done: make(chan struct{}), released: make(chan struct{})}
		g.cur = ph
	}
	if ph.posted[c.rank] {
		// Two goroutines share this rank's communicator: the collectives would pair up wrongly.
		g.mu.Unlock()
		err := fmt.Errorf("ep: rank %d called %s while its %s was still waiting for the other ranks: two goroutines use the same rank's communicator", c.rank, p.kind, ph.posts[c.rank].kind)
		g.abortFrom(c.rank, err)
		return nil, g.aborted()
	}
	ph.posted[c.rank] = true
	ph.posts[c.rank] = p
	ph.arrived++
	for r, gone := range g.returned {
		if gone && !ph.posted[r] {
			g.abortLocked(missingRank(ph, r))
			g.mu.Unlock()
			return nil, g.aborted()
		}
	}
	if ph.arrived == g.n {
		g.cur = nil
		ph.verdict = validate(ph.posts)
		if ph.verdict != nil {
			// The ranks disagree: the group cannot go on (a rank that retried would wait
			// for partners that gave up), so the verdict aborts it.
			g.abortLocked(ph.verdict)
		}
		close(ph.done)
	}
	g.mu.Unlock()
	if err := c.wait(ph.done, p.kind); err != nil {
		return nil, err
	}
	return ph, ph.verdict
}

// leave is the second barrier of a collective.
func (c *inProcComm) leave(ph *phase, what string) error {
	c.g.mu.Lock()
	ph.finished++
	if ph.finished == c.g.n {
		close(ph.released)
	}
	c.g.mu.Unlock()
	return c.wait(ph.released, what)
}

// validate checks that all ranks called the same collective with matching arguments. Every
// rank gets the same verdict.
func validate(ps []post) error {
	n := len(ps)
	for r := 1; r < n; r++ {
		if ps[r].kind != ps[0].kind {
			return fmt.Errorf("ep: collectives out of order: rank 0 called %s but rank %d called %s", ps[0].kind, r, ps[r].kind)
		}
	}
	switch ps[0].kind {
	case kindCounts:
		for r, p := range ps {
			if len(p.counts) != len(ps[0].counts) {
				return fmt.Errorf("ep: ExchangeCounts: rank %d sends %d counts but rank 0 sends %d", r, len(p.counts), len(ps[0].counts))
			}
			if len(p.counts)%n != 0 {
				return fmt.Errorf("ep: ExchangeCounts: rank %d sends %d counts, not a multiple of the %d ranks", r, len(p.counts), n)
			}
		}
	case kindAllToAll:
		for r, p := range ps {
			if err := p.send.Check(fmt.Sprintf("rank %d send", r)); err != nil {
				return err
			}
			if err := p.recv.Check(fmt.Sprintf("rank %d receive", r)); err != nil {
				return err
			}
			if p.send.Host == nil || p.recv.Host == nil {
				return fmt.Errorf("ep: AllToAll: rank %d passed a device buffer to an in-process group", r)
			}
			if p.send.Dtype != ps[0].send.Dtype || p.recv.Dtype != ps[0].send.Dtype || p.send.Width != ps[0].send.Width || p.recv.Width != ps[0].send.Width {
				return fmt.Errorf("ep: AllToAll: rank %d has send %v×%d and receive %v×%d but rank 0 sends %v×%d", r, p.send.Dtype, p.send.Width, p.recv.Dtype, p.recv.Width, ps[0].send.Dtype, ps[0].send.Width)
			}
			if err := CheckBlocks(fmt.Sprintf("rank %d sends", r), p.sends, n, p.send.Rows); err != nil {
				return err
			}
			if err := CheckBlocks(fmt.Sprintf("rank %d receives", r), p.recvs, n, p.recv.Rows); err != nil {
				return err
			}
		}
		for i := range ps {
			for j := range ps {
				if overlap(ps[i].send, ps[j].recv) { // the message is made only for an error
					return CheckDisjoint(fmt.Sprintf("AllToAll: rank %d's receive and rank %d's send", j, i), ps[i].send, ps[j].recv)
				}
				if i < j && overlap(ps[i].recv, ps[j].recv) {
					return fmt.Errorf("ep: AllToAll: rank %d's and rank %d's receive buffers share memory (each rank receives into its own)", i, j)
				}
				s, d := ps[i].sends[j], ps[j].recvs[i]
				if len(s) != len(d) {
					return fmt.Errorf("ep: AllToAll: rank %d sends %d blocks to rank %d, which expects %d", i, len(s), j, len(d))
				}
				for k := range s {
					if s[k].Len != d[k].Len {
						return fmt.Errorf("ep: AllToAll: block %d from rank %d to rank %d has %d rows, but the receiver expects %d", k, i, j, s[k].Len, d[k].Len)
					}
				}
			}
		}
	}
	return nil
}

const (
	kindCounts   = "ExchangeCounts"
	kindAllToAll = "AllToAll"
)

// ExchangeCounts implements Communicator.
func (c *inProcComm) ExchangeCounts(send []int32) ([]int32, error) {
	ph, err := c.enter(post{kind: kindCounts, counts: send})
	if err != nil {
		return nil, err
	}
	n := len(send) / c.g.n
	recv := make([]int32, len(send))
	for i, p := range ph.posts {
		copy(recv[i*n:(i+1)*n], p.counts[c.rank*n:(c.rank+1)*n])
	}
	return recv, c.leave(ph, kindCounts)
}

// AllToAll implements Communicator for host buffers: each rank copies the blocks addressed to
// it out of the senders' buffers.
func (c *inProcComm) AllToAll(send, recv Buffer, sends, recvs [][]Block) error {
	ph, err := c.enter(post{kind: kindAllToAll, send: send, recv: recv, sends: sends, recvs: recvs})
	if err != nil {
		return err
	}
	w := recv.Width
	for i, p := range ph.posts {
		for k, s := range p.sends[c.rank] {
			d := recvs[i][k]
			copyRows(recv.Host, p.send.Host, d.Off*w, s.Off*w, s.Len*w)
		}
	}
	return c.leave(ph, kindAllToAll)
}

// copyRows copies n elements from src[so:] to dst[do:]; both have the same (checked) type.
func copyRows(dst, src any, do, so, n int) {
	switch d := dst.(type) {
	case []float32:
		copy(d[do:do+n], src.([]float32)[so:so+n])
	case []float64:
		copy(d[do:do+n], src.([]float64)[so:so+n])
	case []int32:
		copy(d[do:do+n], src.([]int32)[so:so+n])
	}
}
