//go:build gomoecuda

package kernels

import (
	"fmt"
	"unsafe"

	"gorgonia.org/cu"
)

func init() { kernelNames = append(kernelNames, "block_copy") }

// copyBlocksGrid is the most thread blocks of one CopyBlocks launch: they walk the
// descriptors grid-stride, so more would only wait.
const copyBlocksGrid = 1024

// CopyBlocks enqueues on stream (a CUstream, that is a cudaStream_t, of c's device; nil is the
// default stream) n byte copies in one launch of the block_copy kernel. desc is device memory
// of n triples of int64: a source byte offset from src, a destination byte offset from dst and
// a length in bytes. Each triple is one thread block's work in turn, so a caller with long
// copies should split them into pieces (package ep uses 64 KiB) at multiples of 16 bytes,
// which keeps their alignment: copies whose addresses and length are multiples of 16 move in
// 16-byte words. The copies must not overlap. A byte copy, so the data arrive bit for bit
// whatever their element type. It returns without waiting. Package ep uses it to move the
// blocks of an all-to-all between the caller's layout and its staging memory with one launch
// instead of one cudaMemcpyAsync per block.
func (c *CUDA) CopyBlocks(stream unsafe.Pointer, dst, src, desc cu.DevicePtr, n int) error {
	return c.CopyBlocksGrid(stream, dst, src, desc, n, copyBlocksGrid)
}

// CopyBlocksGrid is CopyBlocks with at most grid thread blocks (1 to 1024; other values mean
// 1024), for copies that run beside other kernels (an NCCL transfer) and should leave them
// most of the SMs.
func (c *CUDA) CopyBlocksGrid(stream unsafe.Pointer, dst, src, desc cu.DevicePtr, n, grid int) error {
	if grid < 1 || grid > copyBlocksGrid {
		grid = copyBlocksGrid
	}
	if n < 0 {
		return fmt.Errorf("gomoe: device block copy: %d copies", n)
	}
	if n == 0 {
		return nil
	}
	f, ok := c.fn["block_copy"]
	if !ok {
		return fmt.Errorf("gomoe: no CUDA kernel block_copy")
	}
	a := *new(args).p(src).p(dst).p(desc).i(n)
	// A plain launch: it runs on the caller's stream beside NCCL's kernels.
	return c.do(func() error { return launchRaw("block_copy", stream, f, min(n, grid), 256, 0, a, false) })
}
