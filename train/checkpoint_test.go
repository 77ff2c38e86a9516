package train_test

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/moe"
	"github.com/gomoe/gomoe/op"
	"github.com/gomoe/gomoe/safetensors"
	"github.com/gomoe/gomoe/train"
)

// resumeCase is one model and optimiser of the resume tests.
type resumeCase struct {
	name    string
	dtype   tensor.Dtype
	sgd     bool
	maxNorm float64
	bias    bool // sigmoid router with the expert bias, kept in the checkpoint
	ffn     int  // the experts' FFN size (0: 12)
}

var resumeCases = []resumeCase{
	{name: "f32 adam", dtype: tensor.Float32},
	{name: "f64 adam clip", dtype: tensor.Float64, maxNorm: 0.05},
	{name: "bf16 adam", dtype: bfloat16.Dtype},
	{name: "bf16 sgd clip", dtype: bfloat16.Dtype, sgd: true, maxNorm: 0.05},
	{name: "f32 adam expert bias", dtype: tensor.Float32, bias: true},
}

// tinyModel is a one-layer MoE classifier of random tokens into H classes:
// cost = crossEntropy(Y, onehot) + the routing losses. With an engine it runs on the GPU.
type tinyModel struct {
	g            *G.ExprGraph
	layer        *moe.Layer
	x, y         *G.Node
	cost, counts *G.Node
	costV, cntV  G.Value
	vm           G.VM
	opt          G.Solver
	eng          engine
	xd, yd       *tensor.Dense // device inputs (GPU only)
}

// engine is the part of the gomoecuda build's *device.Engine the tests use.
type engine interface {
	tensor.Engine
	Bind(nodes ...*G.Node) error
	NewTensor(dt tensor.Dtype, shape ...int) (*tensor.Dense, error)
	Upload(dst, src tensor.Tensor) error
	CopyOut(t tensor.Tensor) (*tensor.Dense, error)
}

const tinyT, tinyH = 24, 8

func newTinyModel(t *testing.T, c resumeCase, eng engine) *tinyModel {
	t.Helper()
	m := &tinyModel{g: G.NewGraph(), eng: eng}
	ffn := 12
	if c.ffn > 0 {
		ffn = c.ffn
	}
	cfg := moe.Config{Hidden: tinyH, FFN: ffn, Experts: 4, TopK: 2, Dtype: c.dtype, AuxLossCoeff: 0.01, ZLossCoeff: 1e-3, Seed: 7}
	if c.bias {
		cfg.Score, cfg.ExpertBias, cfg.BiasUpdateRate = moe.Sigmoid, true, 0.01
	}
	var err error
	if m.layer, err = moe.New(m.g, "moe", cfg); err != nil {
		t.Fatal(err)
	}
	ydt := tensor.Float32
	if c.dtype == tensor.Float64 {
		ydt = tensor.Float64
	}
	m.x = G.NewMatrix(m.g, c.dtype, G.WithShape(tinyT, tinyH), G.WithName("x"))
	m.y = G.NewMatrix(m.g, ydt, G.WithShape(tinyT, tinyH), G.WithName("target"))
	out, err := m.layer.Forward(m.x)
	if err != nil {
		t.Fatal(err)
	}
	ce := G.Must(op.CrossEntropy(G.Must(op.Cast(out.Y, ydt)), m.y))
	m.cost = G.Must(op.AddScalars(ce, out.Loss))
	m.counts = out.Counts
	if _, err := G.Grad(m.cost, m.layer.Learnables()...); err != nil {
		t.Fatal(err)
	}
	G.Read(m.cost, &m.costV)
	G.Read(m.counts, &m.cntV)
	if eng != nil {
		if err := eng.Bind(m.params()...); err != nil {
			t.Fatal(err)
		}
		if m.xd, err = eng.NewTensor(c.dtype, tinyT, tinyH); err != nil {
			t.Fatal(err)
		}
		if m.yd, err = eng.NewTensor(ydt, tinyT, tinyH); err != nil {
			t.Fatal(err)
		}
		if err := G.Let(m.x, m.xd); err != nil {
			t.Fatal(err)
		}
		if err := G.Let(m.y, m.yd); err != nil {
			t.Fatal(err)
		}
		m.vm = G.NewTapeMachine(m.g, G.WithEngine(eng))
	} else {
		m.vm = G.NewTapeMachine(m.g)
	}
	if c.sgd {
		m.opt = &train.SGD{LR: 0.05, MaxGradNorm: c.maxNorm}
	} else {
		a := train.NewAdam(0.01)
		a.MaxGradNorm = c.maxNorm
		m.opt = a
	}
	return m
}

// params is what the checkpoint holds: the learnables and, with the expert bias, the bias.
func (m *tinyModel) params() G.Nodes {
	ps := append(G.Nodes{}, m.layer.Learnables()...)
	if m.layer.Bias != nil {
		ps = append(ps, m.layer.Bias)
	}
	return ps
}

// batch makes step s's input and one-hot target from a source seeded by s alone, as a
// resumable data loader does.
func (m *tinyModel) batch(t *testing.T, s int, dt tensor.Dtype) {
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(s), 99))
	xs := make([]float64, tinyT*tinyH)
	ys := make([]float64, tinyT*tinyH)
	for r := 0; r < tinyT; r++ {
		best := 0
		for j := 0; j < tinyH; j++ {
			xs[r*tinyH+j] = rng.NormFloat64()
			if xs[r*tinyH+j] > xs[r*tinyH+best] {
				best = j
			}
		}
		ys[r*tinyH+(best+1)%tinyH] = 1 // a class the layer must learn to map to
	}
	var xv, yv *tensor.Dense
	switch dt {
	case tensor.Float64:
		xv = tensor.New(tensor.WithShape(tinyT, tinyH), tensor.WithBacking(xs))
		yv = tensor.New(tensor.WithShape(tinyT, tinyH), tensor.WithBacking(ys))
	default:
		x32, y32 := make([]float32, len(xs)), make([]float32, len(ys))
		for i := range xs {
			x32[i], y32[i] = float32(xs[i]), float32(ys[i])
		}
		yv = tensor.New(tensor.WithShape(tinyT, tinyH), tensor.WithBacking(y32))
		xv = tensor.New(tensor.WithShape(tinyT, tinyH), tensor.WithBacking(x32))
		if dt == bfloat16.Dtype {
			xb := make([]bfloat16.BFloat16, len(x32))
			if err := bfloat16.FromFloat32s(xb, x32); err != nil {
				t.Fatal(err)
			}
			xv = tensor.New(tensor.WithShape(tinyT, tinyH), tensor.WithBacking(xb))
		}
	}
	if m.eng != nil {
		if err := m.eng.Upload(m.xd, xv); err != nil {
			t.Fatal(err)
		}
		if err := m.eng.Upload(m.yd, yv); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := G.Let(m.x, xv); err != nil {
		t.Fatal(err)
	}
	if err := G.Let(m.y, yv); err != nil {
		t.Fatal(err)
	}
}

// steps runs steps [from, to) and returns their costs.
func (m *tinyModel) steps(t *testing.T, c resumeCase, from, to int) []float64 {
	t.Helper()
	var losses []float64
	for s := from; s < to; s++ {
		m.batch(t, s, c.dtype)
		var counts G.Value
		m.costV, m.cntV = nil, nil // G.Read targets are step memory on the GPU
		err := train.Step(m.vm, m.opt, m.layer.Learnables(), func() error {
			l, err := train.Scalar(m.costV)
			losses = append(losses, l)
			if err != nil || !c.bias {
				return err
			}
			counts, err = m.host(m.cntV)
			return err
		})
		if err != nil {
			t.Fatalf("step %d: %v", s, err)
		}
		if c.bias {
			if err := m.layer.UpdateExpertBias(counts); err != nil {
				t.Fatal(err)
			}
		}
	}
	return losses
}

// host returns a host copy of v (from the GPU when it lives there).
func (m *tinyModel) host(v G.Value) (*tensor.Dense, error) {
	if m.eng != nil {
		return m.eng.CopyOut(v.(tensor.Tensor))
	}
	return v.(*tensor.Dense).Clone().(*tensor.Dense), nil
}

// bits returns the raw bits of every element of the params' values.
func (m *tinyModel) bits(t *testing.T) map[string][]uint64 {
	t.Helper()
	out := map[string][]uint64{}
	for _, n := range m.params() {
		h, err := m.host(n.Value())
		if err != nil {
			t.Fatal(err)
		}
		var b []uint64
		switch x := h.Data().(type) {
		case []float32:
			for _, v := range x {
				b = append(b, uint64(math.Float32bits(v)))
			}
		case []float64:
			for _, v := range x {
				b = append(b, math.Float64bits(v))
			}
		case []bfloat16.BFloat16:
			for _, v := range x {
				b = append(b, uint64(v))
			}
		default:
			t.Fatalf("%s: data %T", n.Name(), x)
		}
		out[n.Name()] = b
	}
	return out
}

// TestResumeIsBitwise: N steps straight, against k steps, SaveCheckpoint, LoadCheckpoint
// into a fresh graph and solver, and N−k more: every loss and every final weight is
// bitwise equal, for float32, float64 and bfloat16 layers, Adam and SGD, with and without
// gradient clipping, and with the expert bias (state outside the gradient) in the file.
func TestResumeIsBitwise(t *testing.T) {
	const N, k = 8, 3
	for _, c := range resumeCases {
		t.Run(c.name, func(t *testing.T) {
			ref := newTinyModel(t, c, nil)
			defer ref.vm.Close()
			want := ref.steps(t, c, 0, N)

			a := newTinyModel(t, c, nil)
			got := a.steps(t, c, 0, k)
			path := filepath.Join(t.TempDir(), "ckpt.safetensors")
			if err := train.SaveCheckpoint(path, train.Checkpoint{Params: a.params(), Optimizer: a.opt, Meta: map[string]string{"step": "3"}}); err != nil {
				t.Fatal(err)
			}
			a.vm.Close()

			b := newTinyModel(t, c, nil) // fresh graph, fresh solver, initial weights
			defer b.vm.Close()
			if ad, ok := b.opt.(*train.Adam); ok {
				ad.LR, ad.Beta1 = 123, 0.5 // restored from the file
			}
			meta, err := train.LoadCheckpoint(path, train.Checkpoint{Params: b.params(), Optimizer: b.opt})
			if err != nil {
				t.Fatal(err)
			}
			if meta["step"] != "3" || len(meta) != 1 {
				t.Errorf("metadata %v, want only step=3", meta)
			}
			if ad, ok := b.opt.(*train.Adam); ok && (ad.Steps() != k || ad.LR != 0.01 || ad.Beta1 != 0.9) {
				t.Errorf("loaded Adam: steps %d, lr %v, beta1 %v; want %d, 0.01, 0.9", ad.Steps(), ad.LR, ad.Beta1, k)
			}
			got = append(got, b.steps(t, c, k, N)...)
			for s := range want {
				if math.Float64bits(got[s]) != math.Float64bits(want[s]) {
					t.Errorf("step %d: loss %v resumed, %v straight", s, got[s], want[s])
				}
			}
			wb, gb := ref.bits(t), b.bits(t)
			for name, w := range wb {
				g := gb[name]
				for i := range w {
					if g[i] != w[i] {
						t.Fatalf("%s[%d]: bits %x resumed, %x straight", name, i, g[i], w[i])
					}
				}
			}
			// The run moved every weight, and clipping (when on) was active.
			init := newTinyModel(t, c, nil)
			defer init.vm.Close()
			for name, w0 := range init.bits(t) {
				if name == "moe.expert_bias" {
					continue
				}
				same := 0
				for i := range w0 {
					if w0[i] == wb[name][i] {
						same++
					}
				}
				if same == len(w0) {
					t.Errorf("%s did not move in %d steps", name, N)
				}
			}
			type normed interface{ GradNorm() float64 }
			if n := ref.opt.(normed).GradNorm(); c.maxNorm > 0 && !(n > c.maxNorm) {
				t.Errorf("gradient norm %v at the last step: clipping to %v never acted", n, c.maxNorm)
			}
		})
	}
}

// TestResumeNeedsTheState: a resumed run without the optimiser state (weights only, fresh
// Adam) does not give the same losses: the test above would notice a checkpoint that lost
// the moments.
func TestResumeNeedsTheState(t *testing.T) {
	c := resumeCases[0]
	ref := newTinyModel(t, c, nil)
	defer ref.vm.Close()
	want := ref.steps(t, c, 0, 6)
	a := newTinyModel(t, c, nil)
	a.steps(t, c, 0, 3)
	path := filepath.Join(t.TempDir(), "w.safetensors")
	if err := train.SaveCheckpoint(path, train.Checkpoint{Params: a.params(), Optimizer: a.opt}); err != nil {
		t.Fatal(err)
	}
	b := newTinyModel(t, c, nil)
	defer b.vm.Close()
	if _, err := train.LoadCheckpoint(path, train.Checkpoint{Params: b.params()}); err != nil {
		t.Fatal(err)
	}
	got := b.steps(t, c, 3, 6)
	if got[0] != want[3] {
		t.Errorf("step 3 (before any update): loss %v, want %v (the weights were loaded)", got[0], want[3])
	}
	if got[2] == want[5] {
		t.Errorf("step 5 with fresh Adam moments gave the resumed loss %v", got[2])
	}
}

// TestCheckpointFile reads a saved file with a parser written here from the safetensors
// spec (8-byte little-endian header length, JSON header, raw little-endian data): names,
// dtypes, shapes and values are the nodes', and the Adam state is beside them.
func TestCheckpointFile(t *testing.T) {
	g := G.NewGraph()
	w32 := G.NewMatrix(g, tensor.Float32, G.WithShape(2, 3), G.WithName("a.w"), G.WithValue(tensor.New(tensor.WithShape(2, 3), tensor.WithBacking([]float32{1, -2, 3.5, 0, 1e-30, -7}))))
	w64 := G.NewVector(g, tensor.Float64, G.WithShape(2), G.WithName("b"), G.WithValue(tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{math.Pi, -1}))))
	wb := G.NewVector(g, bfloat16.Dtype, G.WithShape(3), G.WithName("c"), G.WithValue(tensor.New(tensor.WithShape(3), tensor.WithBacking([]bfloat16.BFloat16{0x3f80, 0xc000, 0x0001}))))
	opt := train.NewAdam(0.1)
	path := filepath.Join(t.TempDir(), "f.safetensors")
	if err := train.SaveCheckpoint(path, train.Checkpoint{Params: G.Nodes{w32, w64, wb}, Optimizer: opt, Meta: map[string]string{"note": "x"}}); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	hdr, data := parseSafetensors(t, raw)
	if hdr.meta["note"] != "x" || hdr.meta["gomoe.optimizer"] != "adam" || hdr.meta["gomoe.adam.step"] != "0" || hdr.meta["gomoe.adam.lr"] != "0.1" {
		t.Errorf("metadata %v", hdr.meta)
	}
	cases := []struct {
		name, dtype string
		shape       []int
		le          []byte
	}{
		{"a.w", "F32", []int{2, 3}, le32(1, -2, 3.5, 0, 1e-30, -7)},
		{"b", "F64", []int{2}, le64(math.Pi, -1)},
		{"c", "BF16", []int{3}, []byte{0x80, 0x3f, 0x00, 0xc0, 0x01, 0x00}},
	}
	if len(hdr.tensors) != len(cases) {
		t.Errorf("%d tensors, want %d (no Adam state before the first step)", len(hdr.tensors), len(cases))
	}
	for _, c := range cases {
		ti, ok := hdr.tensors[c.name]
		if !ok {
			t.Fatalf("no tensor %q", c.name)
		}
		if ti.dtype != c.dtype || !slices.Equal(ti.shape, c.shape) || string(data[ti.off[0]:ti.off[1]]) != string(c.le) {
			t.Errorf("%s: %s %v % x, want %s %v % x", c.name, ti.dtype, ti.shape, data[ti.off[0]:ti.off[1]], c.dtype, c.shape, c.le)
		}
	}
	// After one step the moments and the bfloat16 master are saved too.
	gr := func(n int, dt tensor.Dtype) *tensor.Dense { return tensor.New(tensor.Of(dt), tensor.WithShape(n)) }
	step := []G.ValueGrad{vg{w32.Value(), gr(6, tensor.Float32)}, vg{w64.Value(), gr(2, tensor.Float64)}, vg{wb.Value(), gr(3, bfloat16.Dtype)}}
	if err := opt.Step(step); err != nil {
		t.Fatal(err)
	}
	if err := train.SaveCheckpoint(path, train.Checkpoint{Params: G.Nodes{w32, w64, wb}, Optimizer: opt}); err != nil {
		t.Fatal(err)
	}
	raw, _ = os.ReadFile(path)
	hdr, _ = parseSafetensors(t, raw)
	for name, dt := range map[string]string{"optimizer.adam.m.a.w": "F32", "optimizer.adam.v.b": "F64", "optimizer.adam.m.c": "F32", "optimizer.master.c": "F32"} {
		if ti, ok := hdr.tensors[name]; !ok || ti.dtype != dt {
			t.Errorf("tensor %s: %+v, want dtype %s", name, ti, dt)
		}
	}
	if hdr.meta["gomoe.adam.step"] != "1" {
		t.Errorf("step %q, want 1", hdr.meta["gomoe.adam.step"])
	}
	if _, ok := hdr.meta["note"]; ok {
		t.Errorf("metadata of the previous save kept: %v", hdr.meta)
	}
}

// TestLoadCheckpointErrors: every bad file or mismatch is an error naming the problem, and
// neither the nodes nor the optimiser change.
func TestLoadCheckpointErrors(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string, shape []int, v []float32) *G.Node {
		g := G.NewGraph()
		return G.NewTensor(g, tensor.Float32, len(shape), G.WithShape(shape...), G.WithName(name), G.WithValue(tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float32(nil), v...)))))
	}
	a, b := mk("a", []int{2}, []float32{1, 2}), mk("b", []int{1}, []float32{3})
	adam := train.NewAdam(0.1)
	if err := adam.Step([]G.ValueGrad{vg{a.Value(), tensor.New(tensor.WithShape(2), tensor.WithBacking([]float32{1, 1}))}}); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.safetensors")
	if err := train.SaveCheckpoint(good, train.Checkpoint{Params: G.Nodes{a, b}, Optimizer: adam}); err != nil {
		t.Fatal(err)
	}
	weightsOnly := filepath.Join(dir, "w.safetensors")
	if err := train.SaveCheckpoint(weightsOnly, train.Checkpoint{Params: G.Nodes{a, b}}); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(good)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// rewritten is good with its tensors or metadata changed by edit (every tensor of good is
	// float32), written at a path named label.
	rewritten := func(label string, edit func(tensors map[string]safetensors.Tensor, meta map[string]string)) string {
		ts, err := safetensors.Open(good)
		if err != nil {
			t.Fatal(err)
		}
		defer ts.Close()
		tensors := map[string]safetensors.Tensor{}
		for _, n := range ts.Names() {
			shape, _ := ts.Shape(n)
			data := make([]float32, max(1, tensor.Shape(shape).TotalSize()))
			if err := ts.Read(n, data); err != nil {
				t.Fatal(err)
			}
			tensors[n] = safetensors.Tensor{Shape: shape, Data: data}
		}
		meta := ts.Metadata()
		edit(tensors, meta)
		return writeTensors(t, filepath.Join(dir, label), tensors, meta)
	}
	// withMeta is good with one metadata value changed.
	withMeta := func(key, value string) string {
		return rewritten(key+"="+value, func(_ map[string]safetensors.Tensor, meta map[string]string) {
			if _, ok := meta[key]; !ok {
				t.Fatalf("good has no metadata %q", key)
			}
			meta[key] = value
		})
	}
	// withTensor is good with the values of one tensor replaced.
	withTensor := func(name string, v []float32) string {
		return rewritten(fmt.Sprintf("%s=%v", name, v), func(tensors map[string]safetensors.Tensor, _ map[string]string) {
			if _, ok := tensors[name]; !ok {
				t.Fatalf("good has no tensor %q", name)
			}
			tensors[name] = safetensors.Tensor{Shape: tensors[name].Shape, Data: v}
		})
	}
	inf32 := float32(math.Inf(1))
	truncated := write("trunc.safetensors", raw[:len(raw)-3])
	garbage := write("garbage.safetensors", []byte("not a checkpoint at all"))
	foreign := write("foreign.safetensors", foreignFile())

	cases := []struct {
		name   string
		path   string
		params G.Nodes
		opt    G.Solver
		want   string
	}{
		{"missing file", filepath.Join(dir, "none"), G.Nodes{a, b}, nil, "no such file"},
		{"garbage", garbage, G.Nodes{a, b}, nil, "not a safetensors file"},
		{"truncated", truncated, G.Nodes{a, b}, nil, "not a safetensors file"},
		{"not gomoe", foreign, G.Nodes{a, b}, nil, "not a gomoe checkpoint"},
		{"missing param", good, G.Nodes{a, b, mk("c", []int{1}, []float32{0})}, nil, `no tensor "c"`},
		{"shape", good, G.Nodes{a, mk("b", []int{2}, []float32{0, 0})}, nil, `tensor "b" is F32 [1] in the file`},
		{"extra tensor", good, G.Nodes{a}, nil, `tensor "b", which is not one of the 1 params`},
		{"sgd for adam", good, G.Nodes{a, b}, &train.SGD{LR: 1}, "holds adam state, but the optimiser is sgd"},
		{"no state", weightsOnly, G.Nodes{a, b}, train.NewAdam(1), "holds no optimiser state"},
		{"duplicate names", good, G.Nodes{a, mk("a", []int{2}, nil)}, nil, `two params are named "a"`},
		{"reserved name", good, G.Nodes{mk("optimizer.x", []int{1}, []float32{0})}, nil, "not starting with"},
		// Settings a Step would refuse: the load used to take them, and the weights.
		{"learning rate NaN", withMeta("gomoe.adam.lr", "NaN"), G.Nodes{a, b}, train.NewAdam(1), "the file's adam settings: learning rate NaN"},
		{"beta1 1", withMeta("gomoe.adam.beta1", "1"), G.Nodes{a, b}, train.NewAdam(1), "betas 1, 0.999, want each in [0, 1)"},
		{"beta2 -3", withMeta("gomoe.adam.beta2", "-3"), G.Nodes{a, b}, train.NewAdam(1), "betas 0.9, -3"},
		{"eps 0", withMeta("gomoe.adam.eps", "0"), G.Nodes{a, b}, train.NewAdam(1), "eps 0, want a finite eps > 0"},
		{"weight decay -1", withMeta("gomoe.adam.weight_decay", "-1"), G.Nodes{a, b}, train.NewAdam(1), "weight decay -1"},
		{"max grad norm -7", withMeta("gomoe.adam.max_grad_norm", "-7"), G.Nodes{a, b}, train.NewAdam(1), "MaxGradNorm -7"},
		// Settings the float32 params' update rounds to 0 or +Inf (see TestOptimizerSettingsFitTheDtype).
		{"eps 1e-50", withMeta("gomoe.adam.eps", "1e-50"), G.Nodes{a, b}, train.NewAdam(1), `the file's adam settings: eps 1e-50 rounds to 0 in the float32 update of param "a"`},
		{"learning rate 1e39", withMeta("gomoe.adam.lr", "1e39"), G.Nodes{a, b}, train.NewAdam(1), `learning rate 1e+39 does not fit the float32 update of param "a" (at most 3.4028234663852886e+38)`},
		// Adam state no step makes: it used to load, and the next step turned the weight NaN.
		{"v negative", withTensor("optimizer.adam.v.a", []float32{-1, 0.5}), G.Nodes{a, b}, train.NewAdam(1), `optimiser state of "a": optimizer.adam.v.a[0] = -1, want a value >= 0 (a mean of squares)`},
		{"v -Inf", withTensor("optimizer.adam.v.a", []float32{0.5, -inf32}), G.Nodes{a, b}, train.NewAdam(1), "optimizer.adam.v.a[1] = -Inf, want a value >= 0 (a mean of squares)"},
		// A nil pointer in the interface: the load used to write the nodes, then panic.
		{"nil *Adam", good, G.Nodes{a, b}, (*train.Adam)(nil), "optimiser is a nil *train.Adam"},
		{"nil *SGD", weightsOnly, G.Nodes{a, b}, (*train.SGD)(nil), "optimiser is a nil *train.SGD"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fresh := mk("a", []int{2}, []float32{9, 9})
			ps := make(G.Nodes, len(c.params))
			copy(ps, c.params)
			for i, p := range ps {
				if p == a {
					ps[i] = fresh
				}
			}
			opt := c.opt
			var before *train.Adam
			if ad, ok := opt.(*train.Adam); ok {
				before = ad
			}
			_, err := train.LoadCheckpoint(c.path, train.Checkpoint{Params: ps, Optimizer: opt})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			if strings.Contains(c.want, "want a value >= 0") && !strings.HasSuffix(err.Error(), c.want) {
				t.Errorf("error %q, want one ending with %q", err, c.want)
			}
			if n := strings.Count(err.Error(), "gomoe: "); n != 1 {
				t.Errorf("error %q carries the gomoe prefix %d times, want once", err, n)
			}
			if v := fresh.Value().Data().([]float32); v[0] != 9 || v[1] != 9 {
				t.Errorf("a failed load wrote the node: %v", v)
			}
			if before != nil && (before.Steps() != 0 || before.LR != 1) {
				t.Errorf("a failed load changed the optimiser")
			}
		})
	}
	if err := train.SaveCheckpoint("", train.Checkpoint{Params: G.Nodes{a}}); err == nil || err.Error() != "gomoe: train: SaveCheckpoint: the path is empty" {
		t.Errorf("empty path: %v", err)
	}
	if err := train.SaveCheckpoint(filepath.Join(dir, "x"), train.Checkpoint{Params: G.Nodes{a}, Meta: map[string]string{"gomoe.step": "1"}}); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Errorf("reserved metadata key: %v", err)
	}
	// Several bad keys: the error names the first in byte order, every call (map order gave a
	// different one each time).
	for i := range 50 {
		err := train.SaveCheckpoint(filepath.Join(dir, "x"), train.Checkpoint{Params: G.Nodes{a}, Meta: map[string]string{"gomoe.d": "4", "gomoe.b": "2", "gomoe.a": "1", "gomoe.c": "3"}})
		if err == nil || !strings.Contains(err.Error(), `metadata key "gomoe.a" is reserved`) {
			t.Fatalf("call %d: %v, want the error of gomoe.a", i, err)
		}
	}
	for _, c := range []struct {
		name string
		ck   train.Checkpoint
		want string
	}{
		// A tensor named __metadata__ would take the place of the header's metadata.
		{"param named __metadata__", train.Checkpoint{Params: G.Nodes{mk("__metadata__", []int{1}, []float32{0})}}, `not "__metadata__"`},
		// The header is JSON: a name or a value that is not UTF-8 would come back changed.
		{"param name not UTF-8", train.Checkpoint{Params: G.Nodes{mk("w\xff", []int{1}, []float32{0})}}, "UTF-8 name"},
		{"metadata value not UTF-8", train.Checkpoint{Params: G.Nodes{a}, Meta: map[string]string{"k": "\xff\x00raw"}}, "is not UTF-8"},
		{"metadata key not UTF-8", train.Checkpoint{Params: G.Nodes{a}, Meta: map[string]string{"k\xfe": "v"}}, "is not UTF-8"},
		// A nil pointer in the interface used to panic.
		{"nil *Adam", train.Checkpoint{Params: G.Nodes{a}, Optimizer: (*train.Adam)(nil)}, "optimiser is a nil *train.Adam"},
		{"nil *SGD", train.Checkpoint{Params: G.Nodes{a}, Optimizer: (*train.SGD)(nil)}, "optimiser is a nil *train.SGD"},
	} {
		if err := train.SaveCheckpoint(filepath.Join(dir, "x"), c.ck); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.want)
		}
	}
	i32 := G.NewVector(G.NewGraph(), tensor.Int32, G.WithShape(2), G.WithName("i"), G.WithValue(tensor.New(tensor.WithShape(2), tensor.WithBacking([]int32{1, 2}))))
	if err := train.SaveCheckpoint(filepath.Join(dir, "x"), train.Checkpoint{Params: G.Nodes{i32}}); err == nil || !strings.Contains(err.Error(), "want float32, float64 or bfloat16") {
		t.Errorf("int32 param: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "x")); err == nil {
		t.Errorf("a refused save wrote the file")
	}
}

// TestAdamStepLimit: a checkpoint may not claim more than MaxAdamSteps steps, and an Adam at
// the limit refuses the next step without touching the weights (the count would wrap around
// and the bias corrections with it).
func TestAdamStepLimit(t *testing.T) {
	dir := t.TempDir()
	file := func(step string) string {
		meta := map[string]string{"gomoe.format": "gomoe-checkpoint/1", "gomoe.optimizer": "adam",
			"gomoe.adam.step": step, "gomoe.adam.lr": "0.1", "gomoe.adam.beta1": "0.9",
			"gomoe.adam.beta2": "0.999", "gomoe.adam.eps": "1e-8", "gomoe.adam.weight_decay": "0", "gomoe.adam.max_grad_norm": "0"}
		return writeTensors(t, filepath.Join(dir, "c"+step+".safetensors"), map[string]safetensors.Tensor{"a": {Shape: []int{2}, Data: []float32{1, 2}}}, meta)
	}
	node := func() *G.Node {
		return G.NewVector(G.NewGraph(), tensor.Float32, G.WithShape(2), G.WithName("a"),
			G.WithValue(tensor.New(tensor.WithShape(2), tensor.WithBacking([]float32{7, 7}))))
	}
	over := fmt.Sprint(int64(train.MaxAdamSteps) + 1)
	if _, err := train.LoadCheckpoint(file(over), train.Checkpoint{Params: G.Nodes{node()}, Optimizer: train.NewAdam(1)}); err == nil || !strings.Contains(err.Error(), "gomoe.adam.step") {
		t.Errorf("step %s: got %v, want an error naming gomoe.adam.step", over, err)
	}
	a, opt := node(), train.NewAdam(1)
	if _, err := train.LoadCheckpoint(file(fmt.Sprint(train.MaxAdamSteps)), train.Checkpoint{Params: G.Nodes{a}, Optimizer: opt}); err != nil {
		t.Fatal(err)
	}
	g := tensor.New(tensor.WithShape(2), tensor.WithBacking([]float32{1, 1}))
	if err := opt.Step([]G.ValueGrad{vg{a.Value(), g}}); err == nil || !strings.Contains(err.Error(), "the most it counts") {
		t.Errorf("a step past MaxAdamSteps: got %v, want an error", err)
	}
	if v := a.Value().Data().([]float32); v[0] != 1 || v[1] != 2 || opt.Steps() != train.MaxAdamSteps {
		t.Errorf("the refused step changed the weights %v or the count %d", v, opt.Steps())
	}
}

// FuzzLoadCheckpoint: no file makes LoadCheckpoint panic, a file that loads wrote only
// values of the right size, and a file refused changed nothing: not the nodes (a float32 and
// a bfloat16 one) and not the Adam, which has stepped them once.
func FuzzLoadCheckpoint(f *testing.F) {
	nodes := func() (G.Nodes, []G.ValueGrad) {
		g := G.NewGraph()
		a := G.NewVector(g, tensor.Float32, G.WithShape(2), G.WithName("a"), G.WithValue(tensor.New(tensor.WithShape(2), tensor.WithBacking([]float32{1, 2}))))
		c := G.NewVector(g, bfloat16.Dtype, G.WithShape(1), G.WithName("c"), G.WithValue(tensor.New(tensor.Of(bfloat16.Dtype), tensor.WithShape(1), tensor.WithBacking([]bfloat16.BFloat16{bfloat16.FromFloat32(3)}))))
		return G.Nodes{a, c}, []G.ValueGrad{
			vg{a.Value(), tensor.New(tensor.WithShape(2), tensor.WithBacking([]float32{1, 1}))},
			vg{c.Value(), tensor.New(tensor.Of(bfloat16.Dtype), tensor.WithShape(1), tensor.WithBacking([]bfloat16.BFloat16{bfloat16.FromFloat32(1)}))},
		}
	}
	bits := func(ns G.Nodes) string { return fmt.Sprint(ns[0].Value().Data(), ns[1].Value().Data()) }
	ns, vgs := nodes()
	dir := f.TempDir()
	p := filepath.Join(dir, "seed")
	opt := train.NewAdam(0.1)
	if err := opt.Step(vgs); err != nil {
		f.Fatal(err)
	}
	if err := train.SaveCheckpoint(p, train.Checkpoint{Params: ns, Optimizer: opt}); err != nil {
		f.Fatal(err)
	}
	seed, _ := os.ReadFile(p)
	f.Add(seed)
	f.Add(foreignFile())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		ns, vgs := nodes()
		opt := train.NewAdam(1)
		if err := opt.Step(vgs); err != nil {
			t.Fatal(err)
		}
		before := bits(ns)
		_, err := train.LoadCheckpoint(path, train.Checkpoint{Params: ns, Optimizer: opt})
		if len(ns[0].Value().Data().([]float32)) != 2 || len(ns[1].Value().Data().([]bfloat16.BFloat16)) != 1 {
			t.Fatal("a node's value changed size")
		}
		if err == nil {
			return
		}
		if after := bits(ns); after != before || opt.Steps() != 1 || opt.LR != 1 {
			t.Fatalf("the refused file (%v) changed the nodes %s to %s, or the optimiser (step %d, LR %v)", err, before, after, opt.Steps(), opt.LR)
		}
		// The Adam's own state is kept too: its next step is the one it would have taken.
		ref, refVgs := nodes()
		refOpt := train.NewAdam(1)
		for _, o := range []struct {
			opt *train.Adam
			vgs []G.ValueGrad
		}{{refOpt, refVgs}, {refOpt, refVgs}, {opt, vgs}} {
			if err := o.opt.Step(o.vgs); err != nil {
				t.Fatal(err)
			}
		}
		if got, want := bits(ns), bits(ref); got != want {
			t.Fatalf("after the refused file (%v), the next step gave %s, want %s", err, got, want)
		}
	})
}

// ---- an independent reader of the format -------------------------------------------------

type stInfo struct {
	dtype string
	shape []int
	off   [2]int
}

type stHeader struct {
	meta    map[string]string
	tensors map[string]stInfo
}

func parseSafetensors(t *testing.T, raw []byte) (stHeader, []byte) {
	t.Helper()
	if len(raw) < 8 {
		t.Fatalf("file of %d bytes", len(raw))
	}
	n := int(uint64(raw[0]) | uint64(raw[1])<<8 | uint64(raw[2])<<16 | uint64(raw[3])<<24)
	if raw[4]|raw[5]|raw[6]|raw[7] != 0 || 8+n > len(raw) {
		t.Fatalf("header length %d", n)
	}
	var h map[string]any
	if err := jsonUnmarshal(raw[8:8+n], &h); err != nil {
		t.Fatal(err)
	}
	out := stHeader{meta: map[string]string{}, tensors: map[string]stInfo{}}
	for k, v := range h {
		m := v.(map[string]any)
		if k == "__metadata__" {
			for mk, mv := range m {
				out.meta[mk] = mv.(string)
			}
			continue
		}
		var ti stInfo
		ti.dtype = m["dtype"].(string)
		for _, s := range m["shape"].([]any) {
			ti.shape = append(ti.shape, int(s.(float64)))
		}
		offs := m["data_offsets"].([]any)
		ti.off = [2]int{int(offs[0].(float64)), int(offs[1].(float64))}
		out.tensors[k] = ti
	}
	return out, raw[8+n:]
}

func le32(v ...float32) []byte {
	var b []byte
	for _, f := range v {
		u := math.Float32bits(f)
		b = append(b, byte(u), byte(u>>8), byte(u>>16), byte(u>>24))
	}
	return b
}

func le64(v ...float64) []byte {
	var b []byte
	for _, f := range v {
		u := math.Float64bits(f)
		for i := 0; i < 8; i++ {
			b = append(b, byte(u>>(8*i)))
		}
	}
	return b
}

// foreignFile is a valid safetensors file that is not a gomoe checkpoint (no metadata).
func foreignFile() []byte {
	hdr := []byte(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`)
	for len(hdr)%8 != 0 {
		hdr = append(hdr, ' ')
	}
	b := []byte{byte(len(hdr)), 0, 0, 0, 0, 0, 0, 0}
	b = append(b, hdr...)
	return append(b, le32(1, 2)...)
}

// vg is a ValueGrad made of two values.
type vg struct{ w, g G.Value }

func (p vg) Value() G.Value         { return p.w }
func (p vg) Grad() (G.Value, error) { return p.g, nil }

// TestCheckpointScalar: a 0-D tensor (shape [] in the file, one element) round-trips.
func TestCheckpointScalar(t *testing.T) {
	mk := func(v float64) *G.Node {
		return G.NewTensor(G.NewGraph(), tensor.Float64, 0, G.WithName("s"), G.WithValue(tensor.New(tensor.FromScalar(v))))
	}
	p := filepath.Join(t.TempDir(), "s.safetensors")
	if err := train.SaveCheckpoint(p, train.Checkpoint{Params: G.Nodes{mk(3.5)}}); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(p)
	hdr, data := parseSafetensors(t, raw)
	if ti := hdr.tensors["s"]; ti.dtype != "F64" || len(ti.shape) != 0 || string(data[ti.off[0]:ti.off[1]]) != string(le64(3.5)) {
		t.Errorf("scalar in the file: %+v", ti)
	}
	n := mk(0)
	if _, err := train.LoadCheckpoint(p, train.Checkpoint{Params: G.Nodes{n}}); err != nil {
		t.Fatal(err)
	}
	if v := n.Value().Data(); v != 3.5 {
		t.Errorf("loaded %v, want 3.5", v)
	}
}

// TestCheckpointScalarAllDtypes: scalar-shaped float32 and bfloat16 weights, with Adam's state
// (the bfloat16 one's float32 master included), round-trip: the loaded weights and the next
// step equal the saved run's bit for bit.
func TestCheckpointScalarAllDtypes(t *testing.T) {
	mk := func(g *G.ExprGraph, name string, v any) *G.Node {
		d := tensor.New(tensor.FromScalar(v))
		return G.NewTensor(g, d.Dtype(), 0, G.WithName(name), G.WithValue(d))
	}
	grads := []G.Value{tensor.New(tensor.FromScalar(float32(0.25))), tensor.New(tensor.FromScalar(bfloat16.FromFloat32(-0.5)))}
	build := func() (G.Nodes, *train.Adam) {
		g := G.NewGraph()
		return G.Nodes{mk(g, "a", float32(1.5)), mk(g, "b", bfloat16.FromFloat32(2.5))}, &train.Adam{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}
	}
	step := func(ns G.Nodes, a *train.Adam) {
		if err := a.Step([]G.ValueGrad{vg{ns[0].Value(), grads[0]}, vg{ns[1].Value(), grads[1]}}); err != nil {
			t.Fatal(err)
		}
	}
	bits := func(ns G.Nodes) [2]uint32 {
		return [2]uint32{math.Float32bits(ns[0].Value().Data().(float32)), uint32(ns[1].Value().Data().(uint16))}
	}
	ns, a := build()
	step(ns, a)
	p := filepath.Join(t.TempDir(), "s.safetensors")
	if err := train.SaveCheckpoint(p, train.Checkpoint{Params: ns, Optimizer: a}); err != nil {
		t.Fatal(err)
	}
	saved := bits(ns)
	step(ns, a)
	want := bits(ns)
	ns2, a2 := build()
	if _, err := train.LoadCheckpoint(p, train.Checkpoint{Params: ns2, Optimizer: a2}); err != nil {
		t.Fatal(err)
	}
	if got := bits(ns2); got != saved {
		t.Fatalf("loaded weights %x, saved %x", got, saved)
	}
	step(ns2, a2)
	if got := bits(ns2); got != want || got == saved {
		t.Errorf("the step after loading gives %x, the saved run %x", got, want)
	}
}

// TestLoadWeightsOnlyThenRelease: weights loaded with Optimizer nil into a bfloat16 node that
// a solver has stepped are kept by that solver's next step once it is released, as by a fresh
// solver's. Without the Release the solver's float32 master copy, made before the load, is
// what its next step updates and rounds into the node: the load is undone (LoadCheckpoint's
// doc says so).
func TestLoadWeightsOnlyThenRelease(t *testing.T) {
	g := G.NewGraph()
	w := G.NewVector(g, bfloat16.Dtype, G.WithShape(1), G.WithName("w"), G.WithValue(tensor.New(tensor.Of(bfloat16.Dtype), tensor.WithShape(1), tensor.WithBacking([]bfloat16.BFloat16{bfloat16.FromFloat32(5)}))))
	grad := vg{w.Value(), tensor.New(tensor.Of(bfloat16.Dtype), tensor.WithShape(1), tensor.WithBacking([]bfloat16.BFloat16{bfloat16.FromFloat32(1)}))}
	step := func(a *train.Adam) float32 {
		if err := a.Step([]G.ValueGrad{grad}); err != nil {
			t.Fatal(err)
		}
		return w.Value().Data().([]bfloat16.BFloat16)[0].Float32()
	}
	p := filepath.Join(t.TempDir(), "w.safetensors")
	if err := train.SaveCheckpoint(p, train.Checkpoint{Params: G.Nodes{w}}); err != nil { // w = 5
		t.Fatal(err)
	}
	a := train.NewAdam(0.5)
	for range 4 {
		step(a) // 5 - 4·0.5 = 3 (each step of a constant gradient moves by about LR)
	}
	load := func() {
		if _, err := train.LoadCheckpoint(p, train.Checkpoint{Params: G.Nodes{w}}); err != nil {
			t.Fatal(err)
		}
	}
	load()
	want := step(train.NewAdam(0.5)) // a fresh solver's first step from 5
	load()
	a.Release()
	if got := step(a); got != want || want != 4.5 {
		t.Errorf("after the load and a Release the step gives %v, a fresh solver's %v, want 4.5", got, want)
	}
}

// TestLoadCheckpointAdamStateMismatch: an Adam checkpoint whose state for a param is not the
// moments (and, for a bfloat16 param, the float32 master copy) together is an error that
// changes neither the node nor the optimiser. A master copy without moments used to load,
// and Adam's next step dropped it for fresh state made from the bfloat16 weight.
func TestLoadCheckpointAdamStateMismatch(t *testing.T) {
	meta := map[string]string{"gomoe.format": "gomoe-checkpoint/1", "gomoe.optimizer": "adam",
		"gomoe.adam.step": "1", "gomoe.adam.lr": "0.1", "gomoe.adam.beta1": "0.9", "gomoe.adam.beta2": "0.999",
		"gomoe.adam.eps": "1e-08", "gomoe.adam.weight_decay": "0", "gomoe.adam.max_grad_norm": "0"}
	bf := safetensors.Tensor{Shape: []int{1}, Data: []bfloat16.BFloat16{bfloat16.FromFloat32(2.5)}}
	f32 := safetensors.Tensor{Shape: []int{1}, Data: []float32{0.25}}
	// withState writes a checkpoint of the bfloat16 param "w" with the optimiser state given.
	withState := func(state map[string]safetensors.Tensor) string {
		tensors := map[string]safetensors.Tensor{"w": bf}
		maps.Copy(tensors, state)
		return writeTensors(t, filepath.Join(t.TempDir(), "c.safetensors"), tensors, meta)
	}
	weight := func() *G.Node {
		return G.NewTensor(G.NewGraph(), bfloat16.Dtype, 1, G.WithShape(1), G.WithName("w"), G.WithValue(tensor.New(tensor.WithShape(1), tensor.WithBacking([]bfloat16.BFloat16{7}))))
	}
	for _, c := range []struct {
		name  string
		state map[string]safetensors.Tensor
		err   string
	}{
		{"master without moments", map[string]safetensors.Tensor{"optimizer.master.w": {Shape: []int{1}, Data: []float32{2.5001}}},
			`param "w" has a master copy but no Adam moments`},
		{"moments without master", map[string]safetensors.Tensor{"optimizer.adam.m.w": f32, "optimizer.adam.v.w": f32},
			`param "w": Adam moments and master copy disagree (bfloat16: true, master: false)`},
		{"one moment", map[string]safetensors.Tensor{"optimizer.adam.m.w": f32, "optimizer.master.w": f32},
			`param "w" has one Adam moment but not the other`},
	} {
		w, p := weight(), withState(c.state)
		opt := train.NewAdam(1)
		_, err := train.LoadCheckpoint(p, train.Checkpoint{Params: G.Nodes{w}, Optimizer: opt})
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.err)
		}
		if v := w.Value().Data().([]bfloat16.BFloat16); v[0] != 7 || opt.Steps() != 0 || opt.LR != 1 {
			t.Errorf("%s: a failed load changed the node (%v) or the optimiser (step %d, LR %v)", c.name, v[0], opt.Steps(), opt.LR)
		}
	}
	// State that steps make from overflowing or NaN gradients, and SaveCheckpoint writes,
	// loads back: an infinite master copy, NaN moments.
	inf, nan := float32(math.Inf(-1)), float32(math.NaN())
	p := withState(map[string]safetensors.Tensor{"optimizer.master.w": {Shape: []int{1}, Data: []float32{inf}},
		"optimizer.adam.m.w": {Shape: []int{1}, Data: []float32{nan}}, "optimizer.adam.v.w": {Shape: []int{1}, Data: []float32{nan}}})
	if _, err := train.LoadCheckpoint(p, train.Checkpoint{Params: G.Nodes{weight()}, Optimizer: train.NewAdam(1)}); err != nil {
		t.Errorf("state a step makes (master -Inf, NaN moments): %v", err)
	}
}

// TestLoadCheckpointSharedParams: params that share memory (one tensor bound to two nodes,
// or overlapping views of one buffer) are refused, as Adam's and SGD's Step refuse such
// weights, before anything is written. The load used to write the second over the first,
// and Adam's state (keyed by the address) with it.
func TestLoadCheckpointSharedParams(t *testing.T) {
	node := func(name string, d *tensor.Dense) *G.Node {
		return G.NewTensor(G.NewGraph(), tensor.Float32, 1, G.WithShape(2), G.WithName(name), G.WithValue(d))
	}
	vec := func(v ...float32) *tensor.Dense { return tensor.New(tensor.WithShape(len(v)), tensor.WithBacking(v)) }
	x, y := node("x", vec(1, 2)), node("y", vec(3, 4))
	adam := train.NewAdam(0.1)
	if err := adam.Step([]G.ValueGrad{vg{x.Value(), vec(1, 1)}, vg{y.Value(), vec(1, 1)}}); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "c.safetensors")
	if err := train.SaveCheckpoint(file, train.Checkpoint{Params: G.Nodes{x, y}, Optimizer: adam}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		opt  *train.Adam
		// params returns the two nodes and the buffer they share.
		params func() (G.Nodes, []float32)
		want   string
	}{
		{"one tensor, two nodes", nil, func() (G.Nodes, []float32) {
			d := vec(9, 9)
			return G.Nodes{node("x", d), node("y", d)}, d.Data().([]float32)
		}, `param "y" appears twice (as param "x", or shares its memory)`},
		{"one tensor, two nodes, Adam", train.NewAdam(1), func() (G.Nodes, []float32) {
			d := vec(9, 9)
			return G.Nodes{node("y", d), node("x", d)}, d.Data().([]float32)
		}, `param "x" appears twice (as param "y", or shares its memory)`},
		{"overlapping views, Adam", train.NewAdam(1), func() (G.Nodes, []float32) {
			buf := []float32{9, 9, 9}
			return G.Nodes{node("x", vec(buf[:2]...)), node("y", vec(buf[1:]...))}, buf
		}, `param "y" appears twice (as param "x", or shares its memory)`},
	} {
		ps, buf := c.params()
		var opt G.Solver
		if c.opt != nil {
			opt = c.opt
		}
		_, err := train.LoadCheckpoint(file, train.Checkpoint{Params: ps, Optimizer: opt})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.want)
		}
		if slices.ContainsFunc(buf, func(v float32) bool { return v != 9 }) {
			t.Errorf("%s: a failed load wrote the nodes: %v", c.name, buf)
		}
		if c.opt != nil && (c.opt.Steps() != 0 || c.opt.LR != 1) {
			t.Errorf("%s: a failed load changed the optimiser (step %d, LR %v)", c.name, c.opt.Steps(), c.opt.LR)
		}
	}
}

// writeTensors writes tensors and meta as a safetensors file at path and returns path.
func writeTensors(t *testing.T, path string, tensors map[string]safetensors.Tensor, meta map[string]string) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := safetensors.Write(f, tensors, meta); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLoadCheckpointCheck: Check sees the caller's metadata (not the reserved gomoe.* keys) of
// the file being loaded, before anything is written; its error loads nothing and is returned.
func TestLoadCheckpointCheck(t *testing.T) {
	mk := func(v float64) *G.Node {
		return G.NewTensor(G.NewGraph(), tensor.Float64, 0, G.WithName("s"), G.WithValue(tensor.New(tensor.FromScalar(v))))
	}
	p := filepath.Join(t.TempDir(), "s.safetensors")
	if err := train.SaveCheckpoint(p, train.Checkpoint{Params: G.Nodes{mk(3.5)}, Meta: map[string]string{"step": "7"}}); err != nil {
		t.Fatal(err)
	}
	stale := errors.New("stale run")
	n := mk(1)
	var seen map[string]string
	_, err := train.LoadCheckpoint(p, train.Checkpoint{Params: G.Nodes{n}, Check: func(m map[string]string) error {
		seen = m
		return stale
	}})
	if !errors.Is(err, stale) {
		t.Errorf("error %v, want Check's", err)
	}
	if fmt.Sprint(seen) != "map[step:7]" {
		t.Errorf("Check saw %v, want map[step:7]", seen)
	}
	if v := n.Value().Data(); v != 1.0 {
		t.Errorf("a refused load wrote %v, want the node unchanged (1)", v)
	}
	if _, err := train.LoadCheckpoint(p, train.Checkpoint{Params: G.Nodes{n}, Check: func(map[string]string) error { return nil }}); err != nil || n.Value().Data() != 3.5 {
		t.Errorf("accepted load: %v, node %v, want 3.5", err, n.Value().Data())
	}
}
