//go:build !race

package op

// raceDetector is true under -race (see race_on_reliability_test.go).
const raceDetector = false
