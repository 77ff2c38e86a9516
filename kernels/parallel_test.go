package kernels

import (
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
)

// TestWorkersRaisePanicsOnTheCaller: a panic in a worker goroutine of parallelFor, gmmRun or
// topkParallel comes back on the calling goroutine as a *WorkerPanic, after every worker has
// returned, where a recover catches it (left in its own goroutine, it would end the process);
// without a panic every index runs once.
func TestWorkersRaisePanicsOnTheCaller(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4)) // several workers even on a 1-core machine
	const n = 1000
	runners := map[string]func(f func(i int)){
		"parallelFor": func(f func(int)) { parallelFor(n, f) },
		"gmmRun":      func(f func(int)) { gmmRun(n, f) },
		"topkParallel": func(f func(int)) {
			topkParallel(n, func(lo, hi int) {
				for i := lo; i < hi; i++ {
					f(i)
				}
			})
		},
	}
	for name, run := range runners {
		var calls atomic.Int64
		run(func(int) { calls.Add(1) })
		if calls.Load() != n {
			t.Errorf("%s: %d calls, want %d", name, calls.Load(), n)
		}
		var running, finished atomic.Int64
		got := func() (r any) {
			defer func() { r = recover() }()
			run(func(i int) {
				running.Add(1)
				defer finished.Add(1)
				if i == n-1 {
					panic("index out of range [7] with length 3")
				}
			})
			return nil
		}()
		var wp *WorkerPanic
		if err, ok := got.(error); !ok || !errors.As(err, &wp) || wp.Value != "index out of range [7] with length 3" || !strings.Contains(wp.Error(), "parallel_test.go") {
			t.Errorf("%s: recovered %v, want a *WorkerPanic with the worker's value and stack", name, got)
		}
		if running.Load() != finished.Load() {
			t.Errorf("%s: the panic came back while %d of %d calls were still running", name, running.Load()-finished.Load(), running.Load())
		}
	}
}
