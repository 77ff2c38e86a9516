package train

// AsFloats is asFloats (clip_test.go) for the external test package's GPU tests.
var AsFloats = asFloats

// SetCaptureEnd makes every later GraphStep capture end with f (nil: nothing) and returns the
// previous setting.
func SetCaptureEnd(f func() error) func() error { old := captureEnd; captureEnd = f; return old }

// StateReady is GraphStep.stateReady: whether the solver's next Step makes no state.
func StateReady(s *GraphStep) bool { return s.stateReady() }
