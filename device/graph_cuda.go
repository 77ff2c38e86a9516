//go:build gomoecuda

package device

import (
	"fmt"
	"sync"

	"github.com/gomoe/gomoe/kernels"
)

// CUDAGraph is device work captured once by Engine.Capture, replayed by Replay: the same kernels
// with the same arguments on the same device memory. A replay sees what the host wrote into
// that memory since (new inputs through Upload) and nothing else of the host: a value computed
// on the host during the capture is a constant of the graph.
//
// The memory the captured work allocated (its outputs, the values of the graph's nodes)
// belongs to the CUDAGraph until Close: EndStep keeps it, and no other value gets it.
type CUDAGraph struct {
	e      *Engine
	g      *kernels.Graph
	mu     sync.Mutex
	blocks []uintptr
}

// Capture runs f (for example a tape machine's RunAll and a solver's update) with the engine's
// kernels recording into a CUDA graph instead of running, and returns the graph; nothing f
// enqueued has run. If f waits for the device (a copy to the host, a Sync, Status) or fails,
// Capture returns the error (a panic in f too) and no graph, and frees what f allocated. f must
// not Capture, and no other goroutine may use the engine while it runs.
func (e *Engine) Capture(f func() error) (*CUDAGraph, error) {
	if err := e.ok(); err != nil {
		return nil, err
	}
	if err := e.pool.Hold(); err != nil {
		return nil, err
	}
	kg, err := e.k.Capture(f)
	blocks := e.pool.Unhold()
	if err != nil {
		for _, p := range blocks {
			_ = e.pool.Free(p)
		}
		return nil, fmt.Errorf("device: capturing a graph: %w", err)
	}
	return &CUDAGraph{e: e, g: kg, blocks: blocks}, nil
}

// Replay enqueues one run of the graph and returns without waiting.
func (g *CUDAGraph) Replay() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.g == nil {
		return fmt.Errorf("device: Replay of a closed graph")
	}
	if err := g.e.ok(); err != nil { // its memory is freed, and may be another engine's now
		return fmt.Errorf("device: Replay of a graph of a closed engine: %w", err)
	}
	return g.g.Launch()
}

// Nodes is the number of device operations (kernels, copies, memsets) in the graph.
func (g *CUDAGraph) Nodes() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.g == nil {
		return 0
	}
	return g.g.Nodes()
}

// Close waits for the replays, destroys the graph and frees its memory. Values that point into
// that memory (node values bound during the capture) must not be used after.
func (g *CUDAGraph) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.g == nil {
		return nil
	}
	err := g.e.Sync()
	if err2 := g.g.Destroy(); err == nil {
		err = err2
	}
	for _, p := range g.blocks {
		if err2 := g.e.pool.Free(p); err == nil {
			err = err2
		}
	}
	g.g, g.blocks = nil, nil
	return err
}
