// Package ranktest runs one function per rank of a communicator group in tests: each rank in
// its own goroutine, the first failure aborting every rank, and a deadline that fails the test
// instead of hanging it. The NCCL tests of packages ep and ep/nccl share it. It also holds the
// exchange-counts check (CountsSend, CheckCounts) that ep/nccl's test and package ep's
// in-process one both run.
package ranktest

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// Aborter is a rank that can be told to give up (ep.Communicator has Abort).
type Aborter interface {
	Abort(err error)
}

// Deadline is how long Run waits for every rank before it fails the test.
const Deadline = 2 * time.Minute

// Run calls fn once per rank, each in its own goroutine. When a rank's fn fails, every rank is
// aborted with that error, so ranks blocked in a collective return. It returns the ranks'
// errors joined, and fails t (from the calling goroutine) if they are not all done within
// Deadline.
func Run[C Aborter](t testing.TB, comms []C, fn func(C) error) error {
	t.Helper()
	errs := make([]error, len(comms))
	var wg sync.WaitGroup
	for r, c := range comms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[r] = fn(c); errs[r] != nil {
				for _, o := range comms {
					o.Abort(errs[r])
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(Deadline):
		t.Fatalf("ranks did not finish within %v", Deadline)
	}
	return errors.Join(errs...)
}

// CountsSend is what rank sends in the exchange-counts check among n ranks, m entries to each:
// entry k to rank j is 100·rank + 10·j + k.
func CountsSend(rank, n, m int) []int32 {
	send := make([]int32, n*m)
	for j := 0; j < n; j++ {
		for k := 0; k < m; k++ {
			send[j*m+k] = int32(100*rank + 10*j + k) // from rank, to rank j, entry k
		}
	}
	return send
}

// CheckCounts checks got[j], what rank j received in the exchange-counts check (m entries from
// each rank i, in rank order), against CountsSend.
func CheckCounts(t testing.TB, got [][]int32, m int) {
	t.Helper()
	n := len(got)
	for j := 0; j < n; j++ {
		for i := 0; i < n; i++ {
			for k := 0; k < m; k++ {
				if want := int32(100*i + 10*j + k); got[j][i*m+k] != want {
					t.Fatalf("rank %d got %d from rank %d entry %d, want %d", j, got[j][i*m+k], i, k, want)
				}
			}
		}
	}
}
