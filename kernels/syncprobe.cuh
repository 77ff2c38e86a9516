// syncprobe.cuh: a kernel that holds the default stream, for the tests that prove a training
// step never waits for the device (included by gmm.cu, so it lives in gomoe_gmm.fatbin; see syncprobe_cuda.go).
#pragma once

// wait_flag spins (one thread) until *flag is non-zero or about maxCycles clock cycles have
// passed, and then writes 1 to *timedOut if the time ran out. Tests use it to prove that a
// training step never waits for the device: they enqueue it first, run the step (every launch
// queues behind it), and only then set the flag (pinned host memory mapped into the device, a
// plain store by the host: syncprobe_cuda.go). A step that synchronised with the host would
// block until the time ran out.
// It is the one kernel without gdcEnter (gdc.cuh): it is always launched plain, and it must not
// let the next kernel launch while it spins.
extern "C" __global__ void wait_flag(volatile int *flag, long long maxCycles, int *timedOut) {
  long long start = clock64();
  while (*flag == 0) {
    if (clock64() - start > maxCycles) {
      *timedOut = 1;
      return;
    }
    __nanosleep(1000);
  }
}
