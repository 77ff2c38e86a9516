//go:build gomoecuda

package kernels

/*
#cgo LDFLAGS: -lcuda
#include <cuda.h>

static CUresult gomoe_probe_release(CUdeviceptr flag) {
	CUstream s;
	CUresult r = cuStreamCreate(&s, CU_STREAM_NON_BLOCKING);
	if (r != CUDA_SUCCESS) return r;
	r = cuMemsetD32Async(flag, 1, 1, s);
	CUresult r2 = cuStreamSynchronize(s);
	if (r == CUDA_SUCCESS) r = r2;
	r2 = cuStreamDestroy(s);
	if (r == CUDA_SUCCESS) r = r2;
	return r;
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
	c   *CUDA
	mem cu.DevicePtr // flag, timedOut
}

// StartSyncProbe enqueues the spinning kernel; maxWait bounds the spin.
func (c *CUDA) StartSyncProbe(maxWait time.Duration) (*SyncProbe, error) {
	p := &SyncProbe{c: c}
	err := c.do(func() error {
		var khz C.int
		if r := C.gomoe_clock_khz(&khz); r != C.CUDA_SUCCESS {
			return fmt.Errorf("gomoe: sync probe: reading the clock rate: CUDA error %d", int(r))
		}
		var err error
		if p.mem, err = cu.MemAlloc(8); err != nil {
			return err
		}
		if err := cu.MemsetD32(p.mem, 0, 2); err != nil {
			return err
		}
		cycles := int64(khz) * maxWait.Milliseconds()
		var a args
		a.p(p.mem).l(cycles).p(p.mem + 4)
		// A plain launch: the probe must start only when the work before it is done, and it
		// lets nothing after it launch early (wait_flag has no gdcEnter: blocks waiting on it
		// could take the SMs the release needs).
		return c.launchWith("wait_flag", 1, 1, 0, a, false)
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// Release lets the spinning kernel finish, waits for all enqueued work, and reports whether
// the spin ran out of time: true means the code run since StartSyncProbe waited for the
// device.
func (p *SyncProbe) Release() (waited bool, err error) {
	err = p.c.do(func() error {
		if r := C.gomoe_probe_release(C.CUdeviceptr(p.mem)); r != C.CUDA_SUCCESS {
			return fmt.Errorf("gomoe: sync probe: setting the flag: CUDA error %d", int(r))
		}
		if err := cu.Synchronize(); err != nil {
			return err
		}
		var timedOut int32
		if err := cu.MemcpyDtoH(unsafe.Pointer(&timedOut), p.mem+4, 4); err != nil {
			return err
		}
		waited = timedOut != 0
		return cu.MemFree(p.mem)
	})
	return waited, err
}
