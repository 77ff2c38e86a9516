//go:build gomoecuda

package nccl

/*
#include <nccl.h>
#include <cuda_runtime.h>
*/
import "C"

import (
	"unsafe"

	"gorgonia.org/cu"

	"github.com/gomoe/gomoe/ep/internal/ncclknob"
	"github.com/gomoe/gomoe/kernels"
)

// The tuning knobs of the exchange (ExchangeChunks, KernelRuns, SelfGrid) and the tests'
// count of block-copy launches live in package ep/internal/ncclknob, where package ep's GPU
// tests can reach them too.

// A rowMove is a list of copy runs, moved either as copies or as one block-copy launch of n
// descriptors starting at triple off of the exchange's uploaded descriptors.
type rowMove struct {
	runs   []copyRun
	kernel bool
	off, n int
}

// exchange enqueues rank c's part x of an exchange between device rows sp (send) and rp
// (receive) of row bytes each. The self copies and the staging copies run on the side stream,
// forked from the communicator's stream at the start and joined back at the end: the gathers
// of a chunk before its NCCL group, its scatters after it, the self copies beside the NCCL
// kernels. Called between enter and done.
func (c *Comm) exchange(x stagedExchange, sp, rp unsafe.Pointer, row int) error {
	desc := c.descBuf[:0]
	defer func() { c.descBuf = desc[:0] }()
	plan := func(runs []copyRun) rowMove {
		if len(runs) <= ncclknob.KernelRuns || c.kernels() == nil {
			return rowMove{runs: runs}
		}
		m := rowMove{kernel: true, off: len(desc) / 3}
		desc, m.n = appendDescs(desc, runs, row)
		return m
	}
	self := plan(x.Self)
	gathers, scatters := make([]rowMove, len(x.Chunks)), make([]rowMove, len(x.Chunks))
	for ci, ch := range x.Chunks {
		gathers[ci], scatters[ci] = plan(ch.Gather), plan(ch.Scatter)
	}
	var descDev unsafe.Pointer
	if len(desc) > 0 {
		var err error
		if descDev, err = c.uploadDescs(desc); err != nil {
			return err
		}
	}
	move := func(m rowMove, dst, src unsafe.Pointer, s C.cudaStream_t, grid int) error {
		if m.kernel {
			ncclknob.CopyLaunches.Add(1)
			return c.kern.CopyBlocksGrid(unsafe.Pointer(s), cu.DevicePtr(uintptr(dst)), cu.DevicePtr(uintptr(src)),
				cu.DevicePtr(uintptr(descDev)+uintptr(24*m.off)), m.n, grid)
		}
		for _, r := range m.runs {
			if err := cudaErr("cudaMemcpyAsync", C.cudaMemcpyAsync(unsafe.Add(dst, r.Dst*row), unsafe.Add(src, r.Src*row), C.size_t(r.Len*row), C.cudaMemcpyDeviceToDevice, s)); err != nil {
				return err
			}
		}
		return nil
	}
	if len(x.Chunks) == 0 { // one rank, or nothing crosses ranks: no NCCL, no fork
		return move(self, rp, sp, c.stream, 0)
	}
	sendStage, recvStage, err := c.staging(x.SendStage*row, x.RecvStage*row)
	if err != nil {
		return err
	}
	if err := c.sideStream(2*len(x.Chunks) + 2); err != nil {
		return err
	}
	ev := c.events
	record := func(e C.cudaEvent_t, s C.cudaStream_t) error {
		return cudaErr("cudaEventRecord", C.cudaEventRecord(e, s))
	}
	wait := func(s C.cudaStream_t, e C.cudaEvent_t) error {
		return cudaErr("cudaStreamWaitEvent", C.cudaStreamWaitEvent(s, e, 0))
	}
	if err := record(ev[0], c.stream); err != nil {
		return err
	}
	if err := wait(c.side, ev[0]); err != nil {
		return err
	}
	for ci, ch := range x.Chunks {
		if len(ch.Gather) > 0 {
			if err := move(gathers[ci], sendStage, sp, c.side, 0); err != nil {
				return err
			}
			if err := record(ev[1+2*ci], c.side); err != nil {
				return err
			}
			if err := wait(c.stream, ev[1+2*ci]); err != nil {
				return err
			}
		}
		if err := ncclErr("ncclGroupStart", C.ncclGroupStart()); err != nil {
			return err
		}
		for _, m := range ch.Sends {
			p := sp
			if m.Staged {
				p = sendStage
			}
			if r := C.ncclSend(unsafe.Add(p, m.Off*row), C.size_t(m.Rows*row), C.ncclUint8, C.int(m.Peer), c.comm, c.stream); r != C.ncclSuccess {
				C.ncclGroupEnd()
				return ncclErr("ncclSend", r)
			}
		}
		for _, m := range ch.Recvs {
			p := rp
			if m.Staged {
				p = recvStage
			}
			if r := C.ncclRecv(unsafe.Add(p, m.Off*row), C.size_t(m.Rows*row), C.ncclUint8, C.int(m.Peer), c.comm, c.stream); r != C.ncclSuccess {
				C.ncclGroupEnd()
				return ncclErr("ncclRecv", r)
			}
		}
		if err := ncclErr("ncclGroupEnd", C.ncclGroupEnd()); err != nil {
			return err
		}
		if len(ch.Scatter) > 0 {
			if err := record(ev[2+2*ci], c.stream); err != nil {
				return err
			}
		}
	}
	if err := move(self, rp, sp, c.side, ncclknob.SelfGrid); err != nil {
		return err
	}
	for ci, ch := range x.Chunks {
		if len(ch.Scatter) > 0 {
			if err := wait(c.side, ev[2+2*ci]); err != nil {
				return err
			}
			if err := move(scatters[ci], rp, recvStage, c.side, 0); err != nil {
				return err
			}
		}
	}
	last := ev[len(ev)-1]
	if err := record(last, c.side); err != nil {
		return err
	}
	return wait(c.stream, last)
}

// kernels loads gomoe's kernels into the device's primary context (the one the CUDA runtime
// and package device use) on first use; nil if that failed, and the exchange then moves every
// list of runs as copies.
func (c *Comm) kernels() *kernels.CUDA {
	if c.kern == nil && !c.kernFailed {
		k, err := func() (*kernels.CUDA, error) {
			dev, err := cu.GetDevice(c.device)
			if err != nil {
				return nil, err
			}
			ctx, err := dev.RetainPrimaryCtx()
			if err != nil {
				return nil, err
			}
			k, err := kernels.NewCUDA(ctx)
			if err != nil {
				_ = dev.ReleasePrimaryCtx()
				return nil, err
			}
			c.kernDev = dev
			return k, nil
		}()
		c.kern, c.kernFailed = k, err != nil
	}
	return c.kern
}

// descSlots is the number of pinned host buffers the block-copy descriptors rotate through:
// writing one waits for the upload from it four exchanges ago, normally long done.
const descSlots = 4

// A descSlot is a pinned host buffer and a device buffer of cap int64 for the block-copy
// descriptors of one exchange, and the event after their upload.
type descSlot struct {
	host, dev unsafe.Pointer
	cap       int
	ev        C.cudaEvent_t
	used      bool
}

// uploadDescs copies desc to device memory on the stream (from pinned memory, so without a
// host sync) and returns its device address, valid for the work enqueued after it until
// descSlots more exchanges have run.
func (c *Comm) uploadDescs(desc []int64) (unsafe.Pointer, error) {
	s := &c.slots[c.slot]
	c.slot = (c.slot + 1) % descSlots
	if s.ev == nil {
		if err := cudaErr("cudaEventCreateWithFlags", C.cudaEventCreateWithFlags(&s.ev, C.cudaEventDisableTiming)); err != nil {
			s.ev = nil
			return nil, err
		}
	} else if s.used {
		if err := cudaErr("cudaEventSynchronize", C.cudaEventSynchronize(s.ev)); err != nil {
			return nil, err
		}
	}
	if s.cap < len(desc) {
		if s.dev != nil {
			if err := c.sync(); err != nil { // kernels may still read the device buffer
				return nil, err
			}
			C.cudaFree(s.dev)
			C.cudaFreeHost(s.host)
			s.host, s.dev, s.cap = nil, nil, 0
		}
		n := len(desc) + len(desc)/4 // some room to grow
		if err := cudaErr("cudaMallocHost", C.cudaMallocHost(&s.host, C.size_t(8*n))); err != nil {
			s.host = nil
			return nil, err
		}
		if err := cudaErr("cudaMalloc", C.cudaMalloc(&s.dev, C.size_t(8*n))); err != nil {
			C.cudaFreeHost(s.host)
			s.host, s.dev = nil, nil
			return nil, err
		}
		s.cap = n
	}
	copy(unsafe.Slice((*int64)(s.host), len(desc)), desc)
	if err := cudaErr("cudaMemcpyAsync", C.cudaMemcpyAsync(s.dev, s.host, C.size_t(8*len(desc)), C.cudaMemcpyHostToDevice, c.stream)); err != nil {
		return nil, err
	}
	s.used = true
	return s.dev, cudaErr("cudaEventRecord", C.cudaEventRecord(s.ev, c.stream))
}

// closeStaging releases the staging memory, the side stream, the events, the descriptor buffers and
// the kernels (under mu, with the device current).
func (c *Comm) closeStaging() {
	if c.stage != nil {
		C.cudaFree(c.stage)
		c.stage, c.stageCap = nil, 0
	}
	for _, e := range c.events {
		C.cudaEventDestroy(e)
	}
	c.events = nil
	if c.side != nil {
		C.cudaStreamDestroy(c.side)
		c.side = nil
	}
	for i := range c.slots {
		s := &c.slots[i]
		if s.dev != nil {
			C.cudaFree(s.dev)
			C.cudaFreeHost(s.host)
		}
		if s.ev != nil {
			C.cudaEventDestroy(s.ev)
		}
		*s = descSlot{}
	}
	if c.kern != nil {
		c.kern.Close()
		c.kern = nil
		// The retain in kernels: the primary context lives on while the engine's retain does.
		_ = c.kernDev.ReleasePrimaryCtx()
	}
}

// staging returns device staging memory of send and recv bytes (the send part first), growing
// the communicator's buffer when needed. The old buffer is freed after the stream's work, which
// includes every earlier exchange's side work, is done.
func (c *Comm) staging(send, recv int) (unsafe.Pointer, unsafe.Pointer, error) {
	need := C.size_t(send + recv)
	if need > c.stageCap {
		if c.stage != nil {
			if err := c.sync(); err != nil {
				return nil, nil, err
			}
			C.cudaFree(c.stage)
			c.stage, c.stageCap = nil, 0
		}
		if err := cudaErr("cudaMalloc", C.cudaMalloc(&c.stage, need)); err != nil {
			return nil, nil, err
		}
		c.stageCap = need
	}
	return c.stage, unsafe.Add(c.stage, send), nil
}

// sideStream makes the side stream and at least n events.
func (c *Comm) sideStream(n int) error {
	if c.side == nil {
		// A blocking stream, as the communicator's own: ordered with the legacy default stream.
		if err := cudaErr("cudaStreamCreate", C.cudaStreamCreate(&c.side)); err != nil {
			c.side = nil
			return err
		}
	}
	for len(c.events) < n {
		var e C.cudaEvent_t
		if err := cudaErr("cudaEventCreateWithFlags", C.cudaEventCreateWithFlags(&e, C.cudaEventDisableTiming)); err != nil {
			return err
		}
		c.events = append(c.events, e)
	}
	return nil
}
