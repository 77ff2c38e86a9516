package trainutil

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"
)

const secondInterruptEnv = "GOMOE_TEST_SECOND_INTERRUPT"

// TestSecondInterruptEndsTheProgram: a second Ctrl-C ends the program at once, even when the
// loop has not yet looked at the first (it is in the middle of a step). The child process
// catches interrupts as a Session does, gets two interrupts 100 ms apart without the loop
// looking in between, and must die by the second (a child that survives also says whether it
// kept the first). It used to survive: the second interrupt was dropped until the step ended.
func TestSecondInterruptEndsTheProgram(t *testing.T) {
	if os.Getenv(secondInterruptEnv) != "" {
		w := watchInterrupts()
		defer w.stop()
		syscall.Kill(os.Getpid(), syscall.SIGINT)
		time.Sleep(100 * time.Millisecond)
		syscall.Kill(os.Getpid(), syscall.SIGINT)
		time.Sleep(5 * time.Second)
		if _, ok := w.caught(); !ok {
			os.Exit(3) // the first interrupt was lost
		}
		os.Exit(0) // survived the second interrupt
	}
	if runtime.GOOS == "windows" {
		t.Skip("no interrupts to send on Windows")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSecondInterruptEndsTheProgram$")
	cmd.Env = append(os.Environ(), secondInterruptEnv+"=1")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		t.Fatalf("the child survived both interrupts (%v); output:\n%s", err, out)
	}
	ws, ok := exit.Sys().(syscall.WaitStatus)
	if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
		t.Fatalf("the child ended with %v, want death by the second interrupt; output:\n%s", err, out)
	}
}

// TestInterruptCaughtOnce: the first interrupt waits for the loop, which sees it once; a
// second stop does nothing.
func TestInterruptCaughtOnce(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no interrupts to send on Windows")
	}
	w := watchInterrupts()
	defer w.stop()
	if s, ok := w.caught(); ok {
		t.Fatalf("caught %v before any interrupt", s)
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	var got os.Signal
	for got == nil && time.Now().Before(deadline) {
		if s, ok := w.caught(); ok {
			got = s
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got != syscall.SIGTERM {
		t.Fatalf("caught %v, want SIGTERM", got)
	}
	if s, ok := w.caught(); ok {
		t.Errorf("caught %v a second time", s)
	}
	w.stop()
	w.stop()
}
