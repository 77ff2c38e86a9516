// Package ranktest runs one function per rank of a communicator group in tests: each rank in
// its own goroutine, the first failure aborting every rank, and a deadline that fails the test
// instead of hanging it. The NCCL tests of packages ep and ep/nccl share it.
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
