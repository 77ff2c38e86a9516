package trainutil

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// CheckLossFalls marks t failed (t.Error) unless the mean of the last 10 of the per-step
// losses is below ratio times the mean of the first 10: the examples' test that a run learns.
func CheckLossFalls(t testing.TB, losses []float64, ratio float64) {
	t.Helper()
	if first, last := Mean(losses[:10]), Mean(losses[len(losses)-10:]); !(last < ratio*first) {
		t.Errorf("loss did not fall: first 10 steps %.4f, last 10 steps %.4f", first, last)
	}
}

// ResumedLosses compares the per-step losses of a run stopped with -save (a) and resumed
// with -resume (b) with those of the unbroken run (whole): it returns an error naming the
// first step where a then b differ from whole, bit for bit, or the step counts when they do
// not add up.
func ResumedLosses(a, b, whole []float64) error {
	got := append(append([]float64(nil), a...), b...)
	if len(got) != len(whole) {
		return fmt.Errorf("%d + %d steps, want %d", len(a), len(b), len(whole))
	}
	for s := range got {
		if got[s] != whole[s] {
			return fmt.Errorf("step %d: loss %v resumed, %v unbroken", s+1, got[s], whole[s])
		}
	}
	return nil
}

// ResumeFinished runs an example to its end with a checkpoint saved in a new folder, then
// again resumed from that checkpoint (run's arguments: the -save and -resume folders, "" for
// none, and where the run prints), and returns both results, the resumed run's output and the
// folder; it stops t at the first error.
func ResumeFinished[R any](t testing.TB, run func(save, resume string, out io.Writer) (R, error)) (done, resumed R, out, dir string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "ckpt")
	done, err := run(dir, "", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if resumed, err = run("", dir, &b); err != nil {
		t.Fatalf("resuming a finished run: %v", err)
	}
	return done, resumed, b.String(), dir
}

// RunCPUAndGPU runs an example's run on the CPU and on the GPU (run's argument is the
// -device value: "cpu", then "cuda") and stops t at the first error.
func RunCPUAndGPU[R any](t testing.TB, run func(device string) (R, error)) (cpu, gpu R) {
	t.Helper()
	cpu, err := run("cpu")
	if err != nil {
		t.Fatal(err)
	}
	gpu, err = run("cuda")
	if err != nil {
		t.Fatal(err)
	}
	return cpu, gpu
}

// CheckFirstLossesAgree marks t failed (t.Error) for each of the first 5 steps where the GPU
// run's loss is more than 1e-3 relative from the CPU run's: float32 matmuls in another order
// differ by a few ulps per op; later steps may route a token differently and drift.
func CheckFirstLossesAgree(t testing.TB, gpu, cpu []float64) {
	t.Helper()
	for s := 0; s < 5; s++ {
		if d := math.Abs(gpu[s]-cpu[s]) / cpu[s]; d > 1e-3 {
			t.Errorf("step %d: GPU loss %.6f, CPU %.6f", s, gpu[s], cpu[s])
		}
	}
}

// StopAndResume runs an example's run of cfg twice: stopped after step stop with -save in a
// fresh folder (its output discarded), then resumed from that folder with -resume (its output
// to out). loop gives the config's LoopConfig. It returns both results and the folder, and
// stops t at the first error.
func StopAndResume[C, R any](t testing.TB, cfg C, loop func(*C) *LoopConfig, stop int, run func(C, io.Writer) (R, error), out io.Writer) (a, b R, dir string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "ckpt")
	first := cfg
	loop(&first).Save, loop(&first).StopAt = dir, stop
	a, err := run(first, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	second := cfg
	loop(&second).Resume = dir
	if b, err = run(second, out); err != nil {
		t.Fatal(err)
	}
	return a, b, dir
}

// CheckOutNotWritable checks that an example's run of cfg with an -out folder that cannot be
// written (/proc/self, even as root; Linux only) fails before any training step with an error
// naming -out. setOut sets cfg's -out; run runs it with its output to the writer.
func CheckOutNotWritable[C, R any](t *testing.T, cfg C, setOut func(*C, string), run func(C, io.Writer) (R, error)) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("needs /proc/self")
	}
	setOut(&cfg, "/proc/self")
	var out bytes.Buffer
	if _, err := run(cfg, &out); err == nil || !strings.Contains(err.Error(), "-out /proc/self: the folder cannot be written") || strings.Contains(out.String(), "step ") {
		t.Errorf("-out /proc/self: got %v after output:\n%s", err, out.String())
	}
}
