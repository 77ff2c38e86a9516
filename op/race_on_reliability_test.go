//go:build race

package op

// raceDetector is true under -race. Gorgonia v0.9.18's lisp machine, run with backprop,
// races on its own error path (RunAll's deferred m.q = nil, vm_genera.go:131, against the
// still-running runall goroutine, vm_genera.go:284), so the tests that make a lisp machine
// fail run it forward-only under -race.
const raceDetector = true
