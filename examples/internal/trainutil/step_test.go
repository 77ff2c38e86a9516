package trainutil

import (
	"errors"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
)

func TestAddFlags(t *testing.T) {
	def := BlockConfig{Experts: 8, TopK: 2, Hidden: 64, FFN: 128, Act: "swiglu", Drop: "probs", AuxCoef: 0.01, Seed: 7}
	tests := []struct {
		name string
		args []string
		want BlockConfig
	}{
		{"defaults", nil, def},
		{"all", []string{"-experts=4", "-topk=1", "-hidden=16", "-ffn=24", "-act=gelu", "-capacity=1.25",
			"-drop=position", "-aux=0.02", "-zloss=0.001", "-dense"},
			BlockConfig{Experts: 4, TopK: 1, Hidden: 16, FFN: 24, Act: "gelu", Capacity: 1.25, Drop: "position",
				AuxCoef: 0.02, ZCoef: 0.001, Seed: 7, Dense: true}},
	}
	for _, tc := range tests {
		cfg := def
		fs := flag.NewFlagSet(tc.name, flag.ContinueOnError)
		cfg.AddFlags(fs, "dense help")
		if err := fs.Parse(tc.args); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if cfg != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, cfg, tc.want)
		}
		if u := fs.Lookup("dense").Usage; u != "dense help" {
			t.Errorf("%s: -dense usage %q, want %q", tc.name, u, "dense help")
		}
	}
}

// TestSteps runs one step of gradient descent on cost = w² from w = 2 with lr 0.25: the
// gradient is 4, so w becomes 1; and checks the errors of RunStep.
func TestSteps(t *testing.T) {
	g := G.NewGraph()
	w := G.NewScalar(g, G.Float64, G.WithName("w"), G.WithValue(2.0))
	cost := G.Must(G.Mul(w, w))
	if _, err := G.Grad(cost, w); err != nil {
		t.Fatal(err)
	}
	var costVal G.Value
	G.Read(cost, &costVal)
	vm := G.NewTapeMachine(g, G.BindDualValues(w))
	defer vm.Close()
	read := func() (float64, error) { return costVal.Data().(float64), nil }
	loss, err := RunStep(vm, 0, read)
	if err != nil || loss != 4 {
		t.Fatalf("RunStep = %v, %v; want 4, nil", loss, err)
	}
	solver := G.NewVanillaSolver(G.WithLearnRate(1))
	if err := SolverStep(vm, solver, G.Nodes{w}, 0.25, 0); err != nil {
		t.Fatal(err)
	}
	if got := w.Value().Data().(float64); got != 1 {
		t.Errorf("w after one step = %v, want 1", got)
	}

	for _, tc := range []struct {
		name string
		read func() (float64, error)
		want string
	}{
		{"nan", func() (float64, error) { return math.NaN(), nil }, "step 3: loss is NaN"},
		{"inf", func() (float64, error) { return math.Inf(1), nil }, "step 3: loss is +Inf"},
		{"read", func() (float64, error) { return 0, errors.New("no value read") }, "no value read"},
	} {
		_, err := RunStep(vm, 3, tc.read)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: RunStep error %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestMean(t *testing.T) {
	for _, tc := range []struct {
		v    []float64
		want float64
	}{
		{[]float64{2}, 2},
		{[]float64{1, 2, 3, 6}, 3},
		{[]float64{-1.5, 1.5}, 0},
	} {
		if got := Mean(tc.v); got != tc.want {
			t.Errorf("Mean(%v) = %v, want %v", tc.v, got, tc.want)
		}
	}
	if got := Mean(nil); !math.IsNaN(got) {
		t.Errorf("Mean(nil) = %v, want NaN", got)
	}
}

func TestCheckPNG(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.png")
	if err := os.WriteFile(good, append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, 2000)...), 0o644); err != nil {
		t.Fatal(err)
	}
	small := filepath.Join(dir, "small.png")
	if err := os.WriteFile(small, []byte("\x89PNG\r\n\x1a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	text := filepath.Join(dir, "text.png")
	if err := os.WriteFile(text, make([]byte, 3000), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, want string
	}{
		{good, ""},
		{small, "not a plausible PNG (8 bytes)"},
		{text, "not a plausible PNG (3000 bytes)"},
		{filepath.Join(dir, "missing.png"), "plot not written"},
	} {
		err := CheckPNG(tc.path)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.path, err)
			}
		} else if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.path, err, tc.want)
		}
	}
}
