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
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/hostmem"
	"github.com/gomoe/gomoe/train"
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

// TestSteps runs one Adam step on cost = Σ w² from w = (2, −1) with lr 0.25: the
// first Adam step moves each weight by lr against the sign of its gradient, so w
// becomes (1.75, −0.75); and checks the errors of Step, which leave w alone. A
// Stepper asked for CUDA graph replays on the CPU runs the same eager steps and
// says why.
func TestSteps(t *testing.T) {
	for _, graph := range []bool{false, true} {
		g := G.NewGraph()
		w := G.NewVector(g, G.Float64, G.WithShape(2), G.WithName("w"),
			G.WithValue(tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{2, -1}))))
		cost := G.Must(G.Sum(G.Must(G.HadamardProd(w, w))))
		if _, err := G.Grad(cost, w); err != nil {
			t.Fatal(err)
		}
		vm := G.NewTapeMachine(g)
		defer vm.Close()
		opt := train.NewAdam(1)
		st := NewStepper(vm, opt, G.Nodes{w}, graph)
		defer st.Close()
		read := func() (float64, error) { return train.Scalar(cost.Value()) }
		loss, err := st.Step(0.25, 0, read)
		if err != nil || loss != 5 {
			t.Fatalf("graph %v: Step = %v, %v; want 5, nil", graph, loss, err)
		}
		if opt.LR != 0.25 {
			t.Errorf("graph %v: learning rate %v, want 0.25", graph, opt.LR)
		}
		want := []float64{1.75, -0.75}
		got := w.Value().Data().([]float64)
		for i := range want {
			if !(math.Abs(got[i]-want[i]) <= 1e-6) {
				t.Errorf("graph %v: w after one step = %v, want %v", graph, got, want)
			}
		}
		before := append([]float64(nil), got...)
		for _, tc := range []struct {
			name string
			read func() (float64, error)
			want string
		}{
			{"nan", func() (float64, error) { return math.NaN(), nil }, "step 3: loss is NaN"},
			{"inf", func() (float64, error) { return math.Inf(1), nil }, "step 3: loss is +Inf"},
			{"read", func() (float64, error) { return 0, errors.New("no value read") }, "no value read"},
			{"nil", nil, "step 3: nil optimiser or read function"},
		} {
			_, err := st.Step(0.25, 3, tc.read)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("graph %v, %s: Step error %v, want %q", graph, tc.name, err, tc.want)
			}
			if now := w.Value().Data().([]float64); now[0] != before[0] || now[1] != before[1] {
				t.Errorf("graph %v, %s: a failed step changed w to %v", graph, tc.name, now)
			}
		}
		if r := st.Reason(); graph != strings.Contains(r, "not in GPU memory") {
			t.Errorf("graph %v: Reason %q", graph, r)
		}
	}
}

// TestOpenDevice: cpu works everywhere; bad names are errors; cuda is an error
// naming the build tag in a binary without GPU support.
func TestOpenDevice(t *testing.T) {
	d, err := OpenDevice("cpu")
	if err != nil || d.GPU() || d.String() != "cpu" || d.VMOpts() != nil {
		t.Fatalf("OpenDevice(cpu) = %v, %v", d, err)
	}
	for _, name := range []string{"gpu", "cuda:x", "cuda:-1", ""} {
		if _, err := OpenDevice(name); err == nil {
			t.Errorf("OpenDevice(%q): no error", name)
		}
	}
	if openGPU == nil {
		_, err := OpenDevice("cuda")
		if err == nil || !strings.Contains(err.Error(), "-tags gomoecuda") {
			t.Errorf("OpenDevice(cuda) without GPU support: %v", err)
		}
	}
	// A CPU feed binds the host tensor itself.
	g := G.NewGraph()
	x := G.NewVector(g, G.Float32, G.WithShape(3), G.WithName("x"))
	h := tensor.New(tensor.WithShape(3), tensor.WithBacking([]float32{1, 2, 3}))
	f, err := d.Feed(x, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Load(); err != nil || x.Value() != G.Value(h) {
		t.Errorf("feed: %v, node holds %v", err, x.Value())
	}
	if hv, err := d.Host(h); err != nil || hv != h {
		t.Errorf("Host of a host tensor = %v, %v", hv, err)
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

// TestLogSoftmaxAt: softmax of (0, ln 3, 0) is (1/5, 3/5, 1/5); large logits do not
// overflow.
func TestLogSoftmaxAt(t *testing.T) {
	row := []float32{0, float32(math.Log(3)), 0}
	for i, p := range []float64{0.2, 0.6, 0.2} {
		lp, best := LogSoftmaxAt(row, i)
		if !(math.Abs(lp-math.Log(p)) <= 1e-7) || best != 1 {
			t.Errorf("class %d: log p %v (want %v), argmax %d (want 1)", i, lp, math.Log(p), best)
		}
	}
	if lp, best := LogSoftmaxAt([]float32{1000, 1000}, 0); math.Abs(lp-math.Log(0.5)) > 1e-12 || best != 0 {
		t.Errorf("large logits: %v %d, want log 0.5 and 0", lp, best)
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

// TestLearnChecksMemory: TrainingBytes counts every node's value and Adam's two moments per
// weight, and Learn on the CPU refuses a model past the memory this process may use before
// anything trains.
func TestLearnChecksMemory(t *testing.T) {
	build := func() (*G.Node, *G.Node) {
		g := G.NewGraph()
		x := G.NewMatrix(g, G.Float64, G.WithShape(2, 3), G.WithName("x"))
		w := G.NewMatrix(g, G.Float64, G.WithShape(3, 4), G.WithName("w"), G.WithInit(G.Zeroes()))
		cost := G.Must(G.Sum(G.Must(G.Mul(x, w))))
		return cost, w
	}
	cost, w := build()
	// x 6, w 12, x·w 8, the sum 1 value; w's moments 2·12: 51 float64s.
	if got, want := TrainingBytes(cost.Graph(), G.Nodes{w}), 8.0*(6+12+8+1+2*12); got != want {
		t.Errorf("TrainingBytes before the gradients = %v, want %v", got, want)
	}
	d, err := OpenDevice("cpu")
	if err != nil {
		t.Fatal(err)
	}
	defer hostmem.SetLimit(hostmem.SetLimit(400)) // less than the 408 bytes counted above
	if err := d.Learn(cost, G.Nodes{w}); err == nil || !strings.Contains(err.Error(), "training this model") ||
		!strings.Contains(err.Error(), "more than the 400 bytes of memory this process may use") {
		t.Errorf("Learn past the limit: %v", err)
	}
	hostmem.SetLimit(1 << 20)
	cost, w = build()
	if err := d.Learn(cost, G.Nodes{w}); err != nil {
		t.Errorf("Learn within the limit: %v", err)
	}
	if got := TrainingBytes(cost.Graph(), G.Nodes{w}); got <= 408 {
		t.Errorf("TrainingBytes with the gradients = %v, want more than the 408 bytes without", got)
	}
}
