package kernels

import (
	"os"
	"regexp"
	"strconv"
	"testing"
)

// TestActivationNumbersMatchCUDA checks that the Activation constants are the kind numbers that
// the CUDA kernels read (activation.cuh's enum), which the prebuilt fatbin fixes.
func TestActivationNumbersMatchCUDA(t *testing.T) {
	src, err := os.ReadFile("activation.cuh")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`enum \{ PwSwiGLU = (\d+), PwGELU = (\d+), PwSigmoid = (\d+) \};`).FindSubmatch(src)
	if m == nil {
		t.Fatal("activation.cuh: no enum of the activation kinds")
	}
	for i, k := range []Activation{SwiGLU, GELU, Sigmoid} {
		if got := string(m[i+1]); got != strconv.Itoa(int(k)) {
			t.Errorf("%v is %d here and %s in activation.cuh", k, int(k), got)
		}
	}
}

// TestZeroKinds checks the zero values: no constant of DropPolicy or Activation is zero (so
// that package moe, whose zero Config reads them as DropByProb and SwiGLU, and a Geometry,
// whose zero Drop is DropByPosition, each keep their default), and a zero Geometry drops by
// position and validates.
func TestZeroKinds(t *testing.T) {
	for _, p := range []DropPolicy{DropByPosition, DropByProb} {
		if p == 0 {
			t.Errorf("%v is zero", p)
		}
	}
	for _, a := range []Activation{SwiGLU, GELU, Sigmoid} {
		if a == 0 || !a.valid() {
			t.Errorf("%v is zero or invalid", a)
		}
	}
	if Activation(0).valid() {
		t.Error("the zero Activation is valid")
	}
	g := Geometry{T: 4, K: 1, E: 2, A: 1, Mode: Capacity, C: 1}
	if g.DropPolicy() != DropByPosition {
		t.Errorf("a zero Drop applies %v, want position", g.DropPolicy())
	}
	if err := g.Validate(); err != nil {
		t.Errorf("a zero Drop: %v", err)
	}
	if s := DropPolicy(0).String(); s != "default" {
		t.Errorf("DropPolicy(0).String() = %q", s)
	}
}
