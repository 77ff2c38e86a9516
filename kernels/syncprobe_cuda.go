//go:build gomoecuda

package kernels

/*
#cgo LDFLAGS: -lcuda
#include <cuda.h>

// The probe's two ints (the flag, then timedOut) live in pinned host memory mapped into the
// device's address space: the host sets the flag with a plain store and reads timedOut after
// the spin, so releasing the probe needs no stream, no copy and no kernel of its own (a release
// through a second stream could land on the hardware queue the spin holds and wait for it).
static CUresult gomoe_probe_alloc(void **host, CUdeviceptr *dev) {
	CUresult r = cuMemHostAlloc(host, 8, CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_PORTABLE);
	if (r != CUDA_SUCCESS) return r;
	((volatile int *)*host)[0] = 0;
	((volatile int *)*host)[1] = 0;
	r = cuMemHostGetDevicePointer(dev, *host, 0);
	if (r != CUDA_SUCCESS) cuMemFreeHost(*host);
	return r;
}

static void gomoe_probe_set(void *host) {
	__atomic_store_n((int *)host, 1, __ATOMIC_SEQ_CST);
}

static int gomoe_probe_timed_out(void *host) {
	return __atomic_load_n((int *)host + 1, __ATOMIC_SEQ_CST);
}

static CUresult gomoe_clock_khz(int *khz) {
	CUdevice d;
	CUresult r = cuCtxGetDevice(&d);
	if (r != CUDA_SUCCESS) return r;
	return cuDeviceGetAttribute(khz, CU_DEVICE_ATTRIBUTE_CLOCK_RATE, d);
}
*/
import "C"

import (
	"fmt"
	"time"
	"unsafe"

	"gorgonia.org/cu"
)

// SyncProbe holds the default stream so that a test can prove that code never waits for the
// device. StartSyncProbe enqueues a kernel that spins until Release (or until maxWait runs
// out); everything enqueued after it waits behind it. If the code under test synchronises with
// the host in any way (a device-to-host copy, a stream or context synchronisation, a host
// read of a device value), it blocks until the spin gives up, and Release reports that.
type SyncProbe struct {
	c    *CUDA
	host unsafe.Pointer // flag, timedOut: pinned host memory the kernel reads and writes
	dev  cu.DevicePtr   // their device address
}

// StartSyncProbe enqueues the spinning kernel; maxWait bounds the spin.
func (c *CUDA) StartSyncProbe(maxWait time.Duration) (*SyncProbe, error) {
	p := &SyncProbe{c: c}
	err := c.do(func() error {
		var khz C.int
		if r := C.gomoe_clock_khz(&khz); r != C.CUDA_SUCCESS {
			return fmt.Errorf("gomoe: sync probe: reading the clock rate: CUDA error %d", int(r))
		}
		var host unsafe.Pointer
		var dev C.CUdeviceptr
		if r := C.gomoe_probe_alloc(&host, &dev); r != C.CUDA_SUCCESS {
			return fmt.Errorf("gomoe: sync probe: mapped host memory: CUDA error %d", int(r))
		}
		p.host, p.dev = host, cu.DevicePtr(dev)
		cycles := int64(khz) * maxWait.Milliseconds()
		var a args
		a.p(p.dev).l(cycles).p(p.dev + 4)
		// A plain launch: the probe must start only when the work before it is done, and it
		// lets nothing after it launch early (wait_flag has no gdcEnter: blocks waiting on it
		// could take the SMs the release needs).
		if err := c.launchWith("wait_flag", 1, 1, 0, a, false); err != nil {
			C.cuMemFreeHost(p.host)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Release lets the spinning kernel finish, waits for all enqueued work, and reports whether
// the spin ran out of time: true means the code run since StartSyncProbe waited for the
// device. A second Release is an error; after c's Close the probe's 8 bytes of pinned host
// memory are not freed.
func (p *SyncProbe) Release() (waited bool, err error) {
	if p.host == nil {
		return false, fmt.Errorf("gomoe: sync probe: released twice")
	}
	C.gomoe_probe_set(p.host)
	err = p.c.do(func() error {
		err := cu.Synchronize()
		waited = C.gomoe_probe_timed_out(p.host) != 0
		if r := C.cuMemFreeHost(p.host); r != C.CUDA_SUCCESS && err == nil {
			err = fmt.Errorf("gomoe: sync probe: freeing its memory: CUDA error %d", int(r))
		}
		p.host = nil
		return err
	})
	return waited, err
}
