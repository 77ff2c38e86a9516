//go:build gomoecuda

package kernels

/*
#cgo LDFLAGS: -lcuda
#include <cuda.h>
#include <stdint.h>

static CUresult gomoe_stream_create(CUstream *s) { return cuStreamCreate(s, CU_STREAM_DEFAULT); }

static CUresult gomoe_memset(CUdeviceptr p, unsigned v, size_t n, int width, CUstream s) {
	switch (width) {
	case 1: return cuMemsetD8Async(p, (unsigned char)v, n, s);
	case 2: return cuMemsetD16Async(p, (unsigned short)v, n, s);
	}
	return cuMemsetD32Async(p, v, n, s);
}

static CUresult gomoe_copy_dtod(CUdeviceptr d, CUdeviceptr src, size_t n, CUstream s) {
	return cuMemcpyDtoDAsync(d, src, n, s);
}

static CUresult gomoe_copy_htod(CUdeviceptr d, const void *src, size_t n, CUstream s) {
	return cuMemcpyHtoDAsync(d, src, n, s);
}

static CUresult gomoe_copy_dtoh(void *d, CUdeviceptr src, size_t n, CUstream s) {
	CUresult r = cuMemcpyDtoHAsync(d, src, n, s);
	if (r != CUDA_SUCCESS) return r;
	return cuStreamSynchronize(s);
}

static CUresult gomoe_capture_begin(CUstream s) {
	return cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_RELAXED);
}

// gomoe_capture_end ends the capture of s and instantiates the graph (exec stays null when
// either fails).
static CUresult gomoe_capture_end(CUstream s, CUgraph *g, CUgraphExec *exec) {
	*g = 0;
	*exec = 0;
	CUresult r = cuStreamEndCapture(s, g);
	if (r != CUDA_SUCCESS) return r;
	if (*g == 0) return CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
	return cuGraphInstantiate(exec, *g, 0);
}

static CUresult gomoe_graph_destroy(CUgraph g, CUgraphExec exec) {
	CUresult r = CUDA_SUCCESS;
	if (exec) r = cuGraphExecDestroy(exec);
	if (g) {
		CUresult r2 = cuGraphDestroy(g);
		if (r == CUDA_SUCCESS) r = r2;
	}
	return r;
}

static CUresult gomoe_graph_nodes(CUgraph g, size_t *n) { return cuGraphGetNodes(g, 0, n); }
*/
import "C"

import (
	"fmt"
	"sync"
	"unsafe"

	"gorgonia.org/cu"
)

// The kernels' stream. Every launch, cuBLAS call, device memset and device copy of a CUDA
// value goes to its current stream: the legacy default stream, so that the work of other code
// (gorgonia's cu package, synchronous copies, a communicator's blocking stream) is ordered
// with it, except while Capture runs. Capture switches to a stream of its own, created with
// CU_STREAM_DEFAULT (which orders after the legacy stream's earlier work), because the legacy
// stream cannot be captured; anything that would wait for the capturing stream, or order with
// it through the legacy stream, fails the capture instead of running.

func cuErr(what string, r C.CUresult) error {
	if r == C.CUDA_SUCCESS {
		return nil
	}
	var name *C.char
	C.cuGetErrorName(r, &name)
	if name == nil {
		return fmt.Errorf("gomoe: %s: CUDA error %d", what, int(r))
	}
	return fmt.Errorf("gomoe: %s: CUDA error %d (%s)", what, int(r), C.GoString(name))
}

// destroyStream destroys the capture stream; it must run inside c.do.
func (c *CUDA) destroyStream() error {
	if c.capStream == nil {
		return nil
	}
	err := cuErr("destroying the capture stream", C.cuStreamDestroy(C.CUstream(c.capStream)))
	c.capStream = nil
	return err
}

func (c *CUDA) cstream() C.CUstream { return C.CUstream(c.stream) }

// Stream is the CUstream (a cudaStream_t) the kernels run on now, for code that enqueues its
// own work in order with them: nil (the legacy default stream) except inside Capture.
func (c *CUDA) Stream() unsafe.Pointer { return c.stream }

// Memset enqueues setting n elements of width bytes (1, 2 or 4) at p to v. It must run inside
// Do.
func (c *CUDA) Memset(p cu.DevicePtr, v uint32, n int64, width int) error {
	if width != 1 && width != 2 && width != 4 {
		return fmt.Errorf("gomoe: device memset of %d-byte elements", width)
	}
	if n <= 0 {
		return nil
	}
	return cuErr("device memset", C.gomoe_memset(C.CUdeviceptr(p), C.uint(v), C.size_t(n), C.int(width), c.cstream()))
}

// CopyDtoD enqueues a copy of n bytes between device buffers. It must run inside Do.
func (c *CUDA) CopyDtoD(dst, src cu.DevicePtr, n int64) error {
	if n <= 0 {
		return nil
	}
	return cuErr("device copy", C.gomoe_copy_dtod(C.CUdeviceptr(dst), C.CUdeviceptr(src), C.size_t(n), c.cstream()))
}

// CopyHtoD enqueues a copy of n bytes from host memory to the device; the host memory may be
// reused when it returns (pageable memory is staged first). It must run inside Do.
func (c *CUDA) CopyHtoD(dst cu.DevicePtr, src unsafe.Pointer, n int64) error {
	if n <= 0 {
		return nil
	}
	return cuErr("host-to-device copy", C.gomoe_copy_htod(C.CUdeviceptr(dst), src, C.size_t(n), c.cstream()))
}

// CopyDtoH copies n bytes from the device to host memory after the work enqueued before it,
// and waits. It must run inside Do.
func (c *CUDA) CopyDtoH(dst unsafe.Pointer, src cu.DevicePtr, n int64) error {
	if n <= 0 {
		return nil
	}
	return cuErr("device-to-host copy", C.gomoe_copy_dtoh(dst, C.CUdeviceptr(src), C.size_t(n), c.cstream()))
}

// Graph is device work captured once from the kernels' stream (Capture) that Launch replays
// with one call: the same kernels with the same arguments on the same memory, so a replay
// sees what the host has since written into that memory (new inputs) and nothing else.
type Graph struct {
	c     *CUDA
	mu    sync.Mutex
	g     C.CUgraph
	exec  C.CUgraphExec
	nodes int
}

// Capture runs f with the kernels' stream in capture mode and returns what f enqueued as a
// Graph, nothing of it having run. Whatever f does that waits for the device (a device-to-host
// copy, a stream or context synchronisation) or runs on the legacy default stream fails the
// capture: Capture then returns f's error (or its panic, as an error) or the CUDA error, and
// the stream is usable again. f must not call Capture, and no other goroutine may use c while
// it runs (its work would join the graph).
func (c *CUDA) Capture(f func() error) (*Graph, error) {
	c.capMu.Lock()
	defer c.capMu.Unlock()
	err := c.do(func() error {
		if c.capStream == nil {
			var s C.CUstream
			if err := cuErr("creating the capture stream", C.gomoe_stream_create(&s)); err != nil {
				return err
			}
			c.capStream = unsafe.Pointer(s)
		}
		if err := c.setStream(c.capStream); err != nil {
			return err
		}
		if err := cuErr("beginning a stream capture", C.gomoe_capture_begin(c.cstream())); err != nil {
			_ = c.setStream(nil)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ferr := runCaptured(f)
	g := &Graph{c: c}
	err = c.do(func() error {
		err := cuErr("ending the stream capture", C.gomoe_capture_end(c.cstream(), &g.g, &g.exec))
		if err2 := c.setStream(nil); err == nil {
			err = err2
		}
		if err == nil {
			var n C.size_t
			if r := C.gomoe_graph_nodes(g.g, &n); r == C.CUDA_SUCCESS {
				g.nodes = int(n)
			}
		}
		return err
	})
	if ferr != nil || err != nil {
		_ = c.do(func() error { return cuErr("destroying a graph", C.gomoe_graph_destroy(g.g, g.exec)) })
		if ferr != nil {
			if err != nil {
				return nil, fmt.Errorf("%w (and %v)", ferr, err)
			}
			return nil, ferr
		}
		return nil, err
	}
	return g, nil
}

// runCaptured runs f and turns a panic in it into an error, so that Capture always ends the
// capture and gives the stream back.
func runCaptured(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("gomoe: panic while capturing a graph: %v", r)
		}
	}()
	return f()
}

// Nodes is the number of operations in the graph (kernels, copies, memsets).
func (g *Graph) Nodes() int { return g.nodes }

// Launch enqueues one replay of the graph on the legacy default stream, in order with the
// kernels' other work, and returns without waiting.
func (g *Graph) Launch() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.exec == nil {
		return fmt.Errorf("gomoe: launch of a destroyed graph")
	}
	return g.c.do(func() error { return cuErr("launching a graph", C.cuGraphLaunch(g.exec, nil)) })
}

// Destroy frees the graph. Replays already enqueued finish first. It works after the
// kernels' Close too (a cleanup).
func (g *Graph) Destroy() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.exec == nil && g.g == nil {
		return nil
	}
	err := g.c.run(func() error { return cuErr("destroying a graph", C.gomoe_graph_destroy(g.g, g.exec)) })
	g.g, g.exec = nil, nil
	return err
}

// setStream makes s the kernels' stream (nil: the legacy default stream), cuBLAS's included.
// It must run inside c.do.
func (c *CUDA) setStream(s unsafe.Pointer) error {
	c.stream = s
	return c.blasStream()
}
