package kernels

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
)

// Float is the element type of the CPU kernels' data: float32 or float64.
type Float interface{ ~float32 | ~float64 }

// parallelFor calls f(i) for every i in [0,n), spreading contiguous blocks of i over up to
// GOMAXPROCS goroutines. Which goroutine runs an index never changes a result: every kernel
// writes disjoint outputs per index and accumulates in a fixed order.
func parallelFor(n int, f func(i int)) {
	workers := runtime.GOMAXPROCS(0)
	if workers > n {
		workers = n
	}
	if workers <= 1 {
		for i := 0; i < n; i++ {
			f(i)
		}
		return
	}
	runWorkers(workers, func(w int) {
		lo, hi := chunkRange(n, workers, w)
		for i := lo; i < hi; i++ {
			f(i)
		}
	})
}

// runTasks runs f(i) for every i in [0,n) on workers goroutines (inline for one), each
// taking the next task from a shared counter: tasks of different sizes balance better than
// fixed blocks. Every caller's tasks write disjoint outputs, so the schedule never changes a
// result.
func runTasks(workers, n int, f func(i int)) {
	if workers <= 1 {
		for i := 0; i < n; i++ {
			f(i)
		}
		return
	}
	var next atomic.Int64
	runWorkers(workers, func(int) {
		for {
			i := int(next.Add(1) - 1)
			if i >= n {
				return
			}
			f(i)
		}
	})
}

// runWorkers runs f(0), …, f(workers−1), each in a goroutine of its own, and waits for all of
// them. A panic in one is raised again on the calling goroutine once all have returned, as a
// WorkerPanic, so that the caller can recover it: a panic left in a goroutine of its own ends
// the process.
func runWorkers(workers int, f func(w int)) {
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first *WorkerPanic
	)
	wg.Add(workers)
	for w := 0; w < workers; w++ {
		go func() {
			defer wg.Done()
			defer func() {
				if r := recover(); r != nil {
					once.Do(func() { first = &WorkerPanic{Value: r, Stack: debug.Stack()} })
				}
			}()
			f(w)
		}()
	}
	wg.Wait()
	if first != nil {
		panic(first)
	}
}

// WorkerPanic is what a CPU kernel panics with when one of its worker goroutines panicked
// (a bug: the kernels check their inputs and return errors): the worker's panic value and
// stack, raised again on the goroutine that called the kernel, where it can be recovered.
type WorkerPanic struct {
	Value any
	Stack []byte
}

func (p *WorkerPanic) Error() string {
	return fmt.Sprintf("gomoe: a kernel worker goroutine panicked: %v\n%s", p.Value, p.Stack)
}

// parallelRange splits [0,n) into blocks of at least minBlock items and runs f on each block
// in parallel. Small n runs inline.
func parallelRange(n, minBlock int, f func(lo, hi int)) {
	blocks := chunkCount(n, minBlock)
	if w := runtime.GOMAXPROCS(0); blocks > 4*w {
		blocks = 4 * w
	}
	if blocks <= 1 {
		if n > 0 {
			f(0, n)
		}
		return
	}
	parallelFor(blocks, func(b int) {
		lo, hi := chunkRange(n, blocks, b)
		f(lo, hi)
	})
}

// chunkCount is the number of chunks of at least minChunk items that n items split into
// (at least 1). It depends on n alone, never on GOMAXPROCS, so chunked algorithms are
// deterministic across machines.
func chunkCount(n, minChunk int) int {
	if minChunk < 1 {
		minChunk = 1
	}
	c := n / minChunk
	if c < 1 {
		c = 1
	}
	return c
}

// chunkRange is the half-open range of chunk c when n items are split into chunks parts.
func chunkRange(n, chunks, c int) (lo, hi int) {
	return n * c / chunks, n * (c + 1) / chunks
}

// actBlock is the least number of elements of one parallel block of the element-wise kernels
// (activations, optimiser updates).
const actBlock = 8192
