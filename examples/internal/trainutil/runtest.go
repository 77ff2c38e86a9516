package trainutil

import (
	"fmt"
	"math"
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
