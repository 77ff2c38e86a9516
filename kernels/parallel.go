package kernels

import (
	"runtime"
	"sync"
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
	var wg sync.WaitGroup
	wg.Add(workers)
	for w := 0; w < workers; w++ {
		lo, hi := chunkRange(n, workers, w)
		go func() {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				f(i)
			}
		}()
	}
	wg.Wait()
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
