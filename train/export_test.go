package train

// AsFloats is asFloats (clip_test.go) for the external test package's GPU tests.
var AsFloats = asFloats
