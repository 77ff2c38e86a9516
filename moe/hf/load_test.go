package hf

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"

	nst "github.com/nlpodyssey/safetensors"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/internal/hostmem"
	"github.com/gomoe/gomoe/moe"
	"github.com/gomoe/gomoe/safetensors"
)

// The tests here write transformers-named tensors with Go, load them, and check the layer's
// output against refBlock, an independent float64 implementation of the transformers blocks'
// forward on their own layouts (softmax over all experts, top-K, renormalisation; DeepSeek's
// sigmoid, correction bias, group mask filled with 0, scaling, shared experts).

// hfWeights are a block's weights in transformers' layouts.
type hfWeights struct {
	router, bias     []float64 // [E,H], [E]
	gate, up, down   []float64 // [E,F,H], [E,F,H], [E,H,F]
	sGate, sUp, sDwn []float64 // [S,H], [S,H], [H,S]
}

func randVals(rng *rand.Rand, n int, scale float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.NormFloat64() * scale
	}
	return v
}

func newWeights(rng *rand.Rand, c Config, m moe.Config) hfWeights {
	H, F, E, S := m.Hidden, m.FFN, m.Experts, m.SharedFFN
	w := hfWeights{
		router: randVals(rng, E*H, 2/math.Sqrt(float64(H))),
		gate:   randVals(rng, E*F*H, 1/math.Sqrt(float64(H))),
		up:     randVals(rng, E*F*H, 1/math.Sqrt(float64(H))),
		down:   randVals(rng, E*H*F, 1/math.Sqrt(float64(F))),
	}
	if m.ExpertBias {
		w.bias = make([]float64, E)
		for e := range w.bias {
			w.bias[e] = 0.3 * rng.Float64()
		}
	}
	if S > 0 {
		w.sGate = randVals(rng, S*H, 1/math.Sqrt(float64(H)))
		w.sUp = randVals(rng, S*H, 1/math.Sqrt(float64(H)))
		w.sDwn = randVals(rng, H*S, 1/math.Sqrt(float64(S)))
	}
	return w
}

// refBlock is transformers' block forward for x [T,H].
func refBlock(c Config, m moe.Config, w hfWeights, x []float64, T int) []float64 {
	H, F, E, K, S := m.Hidden, m.FFN, m.Experts, m.TopK, m.SharedFFN
	silu := func(v float64) float64 { return v / (1 + math.Exp(-v)) }
	y := make([]float64, T*H)
	for t := 0; t < T; t++ {
		xt := x[t*H : (t+1)*H]
		logits := make([]float64, E)
		for e := range logits {
			for h := 0; h < H; h++ {
				logits[e] += w.router[e*H+h] * xt[h]
			}
		}
		var ids []int
		var wts []float64
		if c.ModelType == "deepseek_v3" {
			scores := make([]float64, E)
			choice := make([]float64, E)
			for e := range scores {
				scores[e] = 1 / (1 + math.Exp(-logits[e]))
				choice[e] = scores[e] + w.bias[e]
			}
			// The groups and renormalisation of the transformers config, not the layer's.
			G, kept := c.NGroup, c.TopKGroup
			if G == 0 {
				G = 8
			}
			if kept == 0 {
				kept = 4
			}
			per := E / G
			norm := !c.given.normNull // a null norm_topk_prob is None, false in transformers
			if c.NormTopKProb != nil {
				norm = *c.NormTopKProb
			}
			gs := make([]float64, G)
			for g := 0; g < G; g++ {
				v := append([]float64(nil), choice[g*per:(g+1)*per]...)
				sort.Sort(sort.Reverse(sort.Float64Slice(v)))
				gs[g] = v[0]
				if per > 1 {
					gs[g] += v[1]
				}
			}
			keep := topIdx(gs, kept)
			masked := make([]float64, E) // dropped groups filled with 0, as transformers does
			for _, g := range keep {
				copy(masked[g*per:(g+1)*per], choice[g*per:(g+1)*per])
			}
			ids = topIdx(masked, K)
			var sum float64
			for _, e := range ids {
				wts = append(wts, scores[e])
				sum += scores[e]
			}
			for j := range wts {
				if norm {
					wts[j] /= sum + 1e-20
				}
				wts[j] *= m.ScalingFactor
			}
		} else {
			mx := math.Inf(-1)
			for _, v := range logits {
				mx = math.Max(mx, v)
			}
			p := make([]float64, E)
			var z float64
			for e := range p {
				p[e] = math.Exp(logits[e] - mx)
				z += p[e]
			}
			for e := range p {
				p[e] /= z
			}
			ids = topIdx(p, K)
			var sum float64
			for _, e := range ids {
				wts = append(wts, p[e])
				sum += p[e]
			}
			if !m.PreSoftmax {
				for j := range wts {
					wts[j] /= sum
				}
			}
		}
		for j, e := range ids {
			hid := make([]float64, F)
			for f := 0; f < F; f++ {
				var a, b float64
				for h := 0; h < H; h++ {
					a += w.gate[(e*F+f)*H+h] * xt[h]
					b += w.up[(e*F+f)*H+h] * xt[h]
				}
				hid[f] = silu(a) * b
			}
			for h := 0; h < H; h++ {
				var o float64
				for f := 0; f < F; f++ {
					o += w.down[(e*H+h)*F+f] * hid[f]
				}
				y[t*H+h] += wts[j] * o
			}
		}
		if S > 0 {
			hid := make([]float64, S)
			for s := 0; s < S; s++ {
				var a, b float64
				for h := 0; h < H; h++ {
					a += w.sGate[s*H+h] * xt[h]
					b += w.sUp[s*H+h] * xt[h]
				}
				hid[s] = silu(a) * b
			}
			for h := 0; h < H; h++ {
				for s := 0; s < S; s++ {
					y[t*H+h] += w.sDwn[h*S+s] * hid[s]
				}
			}
		}
	}
	return y
}

// topIdx is the indices of the k largest values, largest first, ties to the lower index.
func topIdx(v []float64, k int) []int {
	idx := make([]int, len(v))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return v[idx[a]] > v[idx[b]] })
	return idx[:k]
}

// tensorsOf lays the weights out under transformers' names in the given layout:
// "fused" (v5), "fusedT" (transposed fused), "proj" (experts.N.gate_proj/up_proj/down_proj)
// or "w123" (Mixtral's experts.N.w1/w3/w2).
// fixture returns c's layer configuration and random weights for it from seed.
func fixture(t *testing.T, c Config, seed int64) (moe.Config, hfWeights) {
	t.Helper()
	m, err := c.MoEConfig()
	if err != nil {
		t.Fatal(err)
	}
	return m, newWeights(rand.New(rand.NewSource(seed)), c, m)
}

// parsed encodes ts as a float32 safetensors file, names under prefix, and parses it.
func parsed(t *testing.T, ts map[string]hfTensor, prefix string) *safetensors.Tensors {
	t.Helper()
	st, err := safetensors.Parse(encode(t, ts, prefix, nst.F32, nil))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func tensorsOf(m moe.Config, w hfWeights, layout string) map[string]hfTensor {
	H, F, E, S := m.Hidden, m.FFN, m.Experts, m.SharedFFN
	ts := map[string]hfTensor{"gate.weight": {[]int{E, H}, w.router}}
	if w.bias != nil {
		ts["gate.e_score_correction_bias"] = hfTensor{[]int{E}, w.bias}
	}
	switch layout {
	case "fused", "fusedT":
		gu := make([]float64, E*2*F*H)
		for e := 0; e < E; e++ {
			copy(gu[e*2*F*H:], w.gate[e*F*H:(e+1)*F*H])
			copy(gu[e*2*F*H+F*H:], w.up[e*F*H:(e+1)*F*H])
		}
		if layout == "fused" {
			ts["experts.gate_up_proj"] = hfTensor{[]int{E, 2 * F, H}, gu}
			ts["experts.down_proj"] = hfTensor{[]int{E, H, F}, w.down}
			break
		}
		guT, dnT := make([]float64, E*H*2*F), make([]float64, E*F*H)
		for e := 0; e < E; e++ {
			copy(guT[e*H*2*F:], transpose(gu[e*2*F*H:(e+1)*2*F*H], 2*F, H))
			copy(dnT[e*F*H:], transpose(w.down[e*H*F:(e+1)*H*F], H, F))
		}
		ts["experts.gate_up_proj"] = hfTensor{[]int{E, H, 2 * F}, guT}
		ts["experts.down_proj"] = hfTensor{[]int{E, F, H}, dnT}
	default:
		names := [3]string{"gate_proj", "up_proj", "down_proj"}
		if layout == "w123" {
			names = [3]string{"w1", "w3", "w2"}
		}
		for e := 0; e < E; e++ {
			ts[fmt.Sprintf("experts.%d.%s.weight", e, names[0])] = hfTensor{[]int{F, H}, w.gate[e*F*H : (e+1)*F*H]}
			ts[fmt.Sprintf("experts.%d.%s.weight", e, names[1])] = hfTensor{[]int{F, H}, w.up[e*F*H : (e+1)*F*H]}
			ts[fmt.Sprintf("experts.%d.%s.weight", e, names[2])] = hfTensor{[]int{H, F}, w.down[e*H*F : (e+1)*H*F]}
		}
	}
	if S > 0 {
		ts["shared_experts.gate_proj.weight"] = hfTensor{[]int{S, H}, w.sGate}
		ts["shared_experts.up_proj.weight"] = hfTensor{[]int{S, H}, w.sUp}
		ts["shared_experts.down_proj.weight"] = hfTensor{[]int{H, S}, w.sDwn}
	}
	return ts
}

type hfTensor struct {
	shape []int
	data  []float64
}

// round rounds every weight to what a file of dtype dt stores, so that the reference sees
// the loaded values.
func (w *hfWeights) round(dt nst.DType) {
	for _, v := range [][]float64{w.router, w.bias, w.gate, w.up, w.down, w.sGate, w.sUp, w.sDwn} {
		for i := range v {
			switch dt {
			case nst.F32:
				v[i] = float64(float32(v[i]))
			case nst.BF16:
				v[i] = float64(math.Float32frombits((math.Float32bits(float32(v[i])) + 0x8000) &^ 0xffff))
			}
		}
	}
}

// encode writes the tensors (names under prefix) as a safetensors file with elements of dt
// (F32, F64 or BF16; BF16 and F32 round the data in place, so the reference sees the stored
// values).
func encode(t testing.TB, ts map[string]hfTensor, prefix string, dt nst.DType, meta map[string]string) []byte {
	t.Helper()
	views := map[string]nst.TensorView{}
	for name, x := range ts {
		var b []byte
		for i, v := range x.data {
			switch dt {
			case nst.F64:
				b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
			case nst.F32:
				f := float32(v)
				x.data[i] = float64(f)
				b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
			case nst.BF16:
				u := math.Float32bits(float32(v)) + 0x8000 // round half up to 16 bits: any rounding will do
				u &^= 0xffff
				x.data[i] = float64(math.Float32frombits(u))
				b = binary.LittleEndian.AppendUint16(b, uint16(u>>16))
			}
		}
		shape := make([]uint64, len(x.shape))
		for i, d := range x.shape {
			shape[i] = uint64(d)
		}
		v, err := nst.NewTensorView(dt, shape, b)
		if err != nil {
			t.Fatal(err)
		}
		views[prefix+name] = v
	}
	buf, err := nst.Serialize(views, meta)
	if err != nil {
		t.Fatal(err)
	}
	return buf
}

func boolp(b bool) *bool      { return &b }
func intp(i int) *int         { return &i }
func f64p(f float64) *float64 { return &f }

// runY applies l to x [T,H] and returns Y.
func runY(t *testing.T, g *G.ExprGraph, l *moe.Layer, x []float64, T int) []float64 {
	t.Helper()
	c := l.Config()
	var xv *tensor.Dense
	if c.Dtype == tensor.Float64 {
		xv = tensor.New(tensor.WithShape(T, c.Hidden), tensor.WithBacking(append([]float64(nil), x...)))
	} else {
		f := make([]float32, len(x))
		for i, v := range x {
			f[i] = float32(v)
		}
		xv = tensor.New(tensor.WithShape(T, c.Hidden), tensor.WithBacking(f))
	}
	xn := G.NewMatrix(g, c.Dtype, G.WithShape(T, c.Hidden), G.WithName("x"), G.WithValue(xv))
	out, err := l.Forward(xn)
	if err != nil {
		t.Fatal(err)
	}
	var y G.Value
	G.Read(out.Y, &y)
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	return float64s(y)
}

func float64s(v G.Value) []float64 {
	switch d := v.Data().(type) {
	case []float64:
		return append([]float64(nil), d...)
	case []float32:
		out := make([]float64, len(d))
		for i, x := range d {
			out[i] = float64(x)
		}
		return out
	}
	panic(fmt.Sprintf("float64s: %T", v.Data()))
}

func maxAbsDiff(a, b []float64) (d, scale float64) {
	if len(a) != len(b) {
		return math.Inf(1), 0
	}
	for i := range a {
		d = math.Max(d, math.Abs(a[i]-b[i]))
		scale = math.Max(scale, math.Abs(b[i]))
	}
	return d, scale
}

// TestLoadMatchesTransformersMath: each block type and layout, written with transformers'
// names, loads into a layer whose output is refBlock's.
func TestLoadMatchesTransformersMath(t *testing.T) {
	const H, F, E, T = 6, 4, 8, 10
	cases := []struct {
		name   string
		cfg    Config
		layout string
		prefix string
		dt     nst.DType
		layer  tensor.Dtype
		tol    float64
	}{
		{"mixtral fused", Config{ModelType: "mixtral", HiddenSize: H, IntermediateSize: F, NumLocalExperts: E, NumExpertsPerTok: 2, HiddenAct: "silu"},
			"fused", "", nst.F64, tensor.Float64, 1e-12},
		{"mixtral w1/w3/w2 checkpoint", Config{ModelType: "mixtral", HiddenSize: H, IntermediateSize: F, NumLocalExperts: E, NumExpertsPerTok: 2},
			"w123", "model.layers.0.block_sparse_moe.", nst.F32, tensor.Float32, 1e-5},
		{"qwen3 renormalised per-expert", Config{ModelType: "qwen3_moe", HiddenSize: H, IntermediateSize: 32, MoEIntermediateSize: F, NumExperts: E, NumExpertsPerTok: 3, NormTopKProb: boolp(true)},
			"proj", "model.layers.5.mlp.", nst.F64, tensor.Float64, 1e-12},
		{"qwen3 not renormalised fused", Config{ModelType: "qwen3_moe", HiddenSize: H, MoEIntermediateSize: F, NumExperts: E, NumExpertsPerTok: 3},
			"fused", "", nst.F64, tensor.Float64, 1e-12},
		{"olmoe bf16 checkpoint", Config{ModelType: "olmoe", HiddenSize: H, IntermediateSize: F, NumExperts: E, NumExpertsPerTok: 4},
			"fused", "model.layers.1.mlp.", nst.BF16, tensor.Float64, 1e-12},
		{"deepseek fused", Config{ModelType: "deepseek_v3", HiddenSize: H, MoEIntermediateSize: F, NRoutedExperts: E, NumExpertsPerTok: 2, NGroup: 2, TopKGroup: 1, RoutedScalingFactor: f64p(2.5), NSharedExperts: intp(2)},
			"fused", "model.layers.3.mlp.", nst.F64, tensor.Float64, 1e-12},
		{"deepseek transposed fused float32", Config{ModelType: "deepseek_v3", HiddenSize: H, MoEIntermediateSize: F, NRoutedExperts: E, NumExpertsPerTok: 4, NGroup: 4, TopKGroup: 2, RoutedScalingFactor: f64p(1.5), NSharedExperts: intp(1)},
			"fusedT", "", nst.F32, tensor.Float32, 1e-5},
		{"deepseek no groups per-expert", Config{ModelType: "deepseek_v3", HiddenSize: H, MoEIntermediateSize: F, NRoutedExperts: E, NumExpertsPerTok: 3, NGroup: 1, TopKGroup: 1, NSharedExperts: intp(0)},
			"proj", "", nst.F64, tensor.Float64, 1e-12},
		// Every group kept: transformers' group mask keeps all E (it used to be refused).
		{"deepseek all groups kept", Config{ModelType: "deepseek_v3", HiddenSize: H, MoEIntermediateSize: F, NRoutedExperts: E, NumExpertsPerTok: 2, NGroup: 4, TopKGroup: 4, NSharedExperts: intp(1)},
			"fused", "", nst.F64, tensor.Float64, 1e-12},
		// "norm_topk_prob": null is None in transformers: no renormalisation, σ·2.5 (it used to
		// be read as the default true, and refused for K = 1).
		{"deepseek null norm_topk_prob top-1", Config{ModelType: "deepseek_v3", HiddenSize: H, MoEIntermediateSize: F, NRoutedExperts: E, NumExpertsPerTok: 1, NGroup: 1, TopKGroup: 1, given: given{normNull: true}},
			"proj", "", nst.F64, tensor.Float64, 1e-12},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := tc.cfg.MoEConfig()
			if err != nil {
				t.Fatal(err)
			}
			m.Dtype = tc.layer
			rng := rand.New(rand.NewSource(int64(i + 1)))
			w := newWeights(rng, tc.cfg, m)
			w.round(tc.dt)
			buf := encode(t, tensorsOf(m, w, tc.layout), tc.prefix, tc.dt, map[string]string{"format": "pt"})
			ts, err := safetensors.Parse(buf)
			if err != nil {
				t.Fatal(err)
			}
			g := G.NewGraph()
			l, err := Load(g, "moe", m, ts, tc.prefix)
			if err != nil {
				t.Fatal(err)
			}
			x := randVals(rng, T*H, 1)
			if tc.layer == tensor.Float32 {
				for j := range x {
					x[j] = float64(float32(x[j]))
				}
			}
			got := runY(t, g, l, x, T)
			want := refBlock(tc.cfg, l.Config(), w, x, T)
			if d, s := maxAbsDiff(got, want); !(d <= tc.tol*math.Max(1, s)) {
				t.Errorf("Y differs from transformers' math by %g (max |y| %g)\n got  %.5g\n want %.5g", d, s, got[:6], want[:6])
			}
		})
	}
}

// TestLayoutsLoadTheSameLayer: the fused, transposed fused and per-expert layouts of one
// block give bitwise equal weights, also where one fused tensor's two forms have the same
// shape (H = 2F: gate_up_proj; H = F: down_proj) and the other tensor tells the layout.
func TestLayoutsLoadTheSameLayer(t *testing.T) {
	for _, hf := range [][2]int{{6, 4}, {8, 4}, {4, 4}} {
		t.Run(fmt.Sprintf("H%d_F%d", hf[0], hf[1]), func(t *testing.T) {
			c := Config{ModelType: "deepseek_v3", HiddenSize: hf[0], MoEIntermediateSize: hf[1], NRoutedExperts: 4, NumExpertsPerTok: 2, NGroup: 1, TopKGroup: 1, NSharedExperts: intp(1)}
			m, w := fixture(t, c, 3)
			var first []G.Value
			for _, layout := range []string{"proj", "fused", "fusedT", "w123"} {
				ts := parsed(t, tensorsOf(m, w, layout), "p.")
				l, err := Load(G.NewGraph(), "moe", m, ts, "p.")
				if err != nil {
					t.Fatalf("%s: %v", layout, err)
				}
				var vals []G.Value
				for _, n := range append(l.Learnables(), l.Bias) {
					vals = append(vals, n.Value())
				}
				if first == nil {
					first = vals
					continue
				}
				for j := range vals {
					if d, _ := maxAbsDiff(float64s(vals[j]), float64s(first[j])); d != 0 {
						t.Errorf("%s: weight %d differs from the per-expert layout's by %g", layout, j, d)
					}
				}
			}
		})
	}
}

// TestLoadMixedFusedLayouts: gate_up_proj in one fused layout and down_proj in the other is an
// error, not a silently wrong layer.
func TestLoadMixedFusedLayouts(t *testing.T) {
	c := Config{ModelType: "olmoe", HiddenSize: 6, IntermediateSize: 4, NumExperts: 4, NumExpertsPerTok: 2}
	m, w := fixture(t, c, 8)
	ts := tensorsOf(m, w, "fused")
	ts["experts.down_proj"] = tensorsOf(m, w, "fusedT")["experts.down_proj"]
	st := parsed(t, ts, "")
	if _, err := Load(G.NewGraph(), "moe", m, st, ""); err == nil || !strings.Contains(err.Error(), "different layouts") {
		t.Errorf("got %v, want an error naming different layouts", err)
	}
}

// TestLoadTooLargeForMemory: a config whose weights cannot be converted in the memory this
// process may use is an error before any tensor is read or allocated.
func TestLoadTooLargeForMemory(t *testing.T) {
	c := Config{ModelType: "olmoe", HiddenSize: 64, IntermediateSize: 64, NumExperts: 8, NumExpertsPerTok: 2}
	m, w := fixture(t, c, 9)
	st := parsed(t, tensorsOf(m, w, "proj"), "")
	// 8 float64 copies of 8·64·64 expert weights are 2 MiB: over a 1 MiB limit, under 64 MiB.
	old := hostmem.SetLimit(1 << 20)
	defer hostmem.SetLimit(old)
	if _, err := Load(G.NewGraph(), "moe", m, st, ""); err == nil || !strings.Contains(err.Error(), "more than the 1048576 bytes of memory this process may use") {
		t.Errorf("1 MiB of memory: got %v, want a memory error", err)
	}
	hostmem.SetLimit(64 << 20)
	if _, err := Load(G.NewGraph(), "moe", m, st, ""); err != nil {
		t.Errorf("64 MiB of memory: %v", err)
	}
}

// TestLoadBFloat16Layer: a bfloat16 layer gets the checkpoint's values rounded to bfloat16
// (float32 router and bias).
func TestLoadBFloat16Layer(t *testing.T) {
	c := Config{ModelType: "deepseek_v3", HiddenSize: 6, MoEIntermediateSize: 4, NRoutedExperts: 4, NumExpertsPerTok: 2, NGroup: 1, TopKGroup: 1, NSharedExperts: intp(1)}
	m, w := fixture(t, c, 5)
	ts := parsed(t, tensorsOf(m, w, "fused"), "")
	l32, err := Load(G.NewGraph(), "moe", m, ts, "")
	if err != nil {
		t.Fatal(err)
	}
	mb := m
	mb.Dtype = bfloat16.Dtype
	lb, err := Load(G.NewGraph(), "moe", mb, ts, "")
	if err != nil {
		t.Fatal(err)
	}
	if lb.Router.Dtype() != tensor.Float32 || lb.W1.Dtype() != bfloat16.Dtype {
		t.Fatalf("dtypes: router %v, W1 %v", lb.Router.Dtype(), lb.W1.Dtype())
	}
	for j, n := range lb.Learnables() {
		want := n.Value().Data()
		switch b := want.(type) {
		case []bfloat16.BFloat16:
			src := l32.Learnables()[j].Value().Data().([]float32)
			for i := range b {
				if b[i] != bfloat16.FromFloat32(src[i]) {
					t.Fatalf("%s[%d] = %v, want bfloat16(%v)", n.Name(), i, b[i], src[i])
				}
			}
		case []float32:
			if d, _ := maxAbsDiff(float64s(n.Value()), float64s(l32.Learnables()[j].Value())); d != 0 {
				t.Errorf("%s differs from the float32 layer's by %g", n.Name(), d)
			}
		}
	}
}

// TestTransposeAndFusedIndexing pins the index maps on hand-made values.
func TestTransposeAndFusedIndexing(t *testing.T) {
	if got := transpose([]float64{1, 2, 3, 4, 5, 6}, 2, 3); fmt.Sprint(got) != "[1 4 2 5 3 6]" {
		t.Errorf("transpose of [[1 2 3] [4 5 6]] = %v", got)
	}
	// E=1, F=1, H=2: gate_up_proj [1,2,2] = [[g0 g1] [u0 u1]], down_proj [1,2,1] = [[d0] [d1]].
	ts := map[string]hfTensor{
		"gate.weight":          {[]int{1, 2}, []float64{7, 8}},
		"experts.gate_up_proj": {[]int{1, 2, 2}, []float64{1, 2, 3, 4}},
		"experts.down_proj":    {[]int{1, 2, 1}, []float64{5, 6}},
	}
	cfg := moe.Config{Hidden: 2, FFN: 1, Experts: 1, TopK: 1, PreSoftmax: true, Dtype: tensor.Float64}
	st, err := safetensors.Parse(encode(t, ts, "", nst.F64, nil))
	if err != nil {
		t.Fatal(err)
	}
	w, err := readBlock(cfg, st, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what string
		got  []float64
		want string
	}{{"router [H,E]", w.router, "[7 8]"}, {"W1 [E,H,F]", w.w1, "[1 2]"}, {"W3", w.w3, "[3 4]"}, {"W2 [E,F,H]", w.w2, "[5 6]"}} {
		if fmt.Sprint(c.got) != c.want {
			t.Errorf("%s = %v, want %s", c.what, c.got, c.want)
		}
	}
}

func TestMoEConfig(t *testing.T) {
	cases := []struct {
		name string
		json string
		want moe.Config
		err  string
	}{
		{"mixtral", `{"model_type":"mixtral","hidden_size":8,"intermediate_size":16,"num_local_experts":4,"num_experts_per_tok":2,"hidden_act":"silu","router_jitter_noise":0.1}`,
			moe.Config{Hidden: 8, FFN: 16, Experts: 4, TopK: 2, Activation: moe.SwiGLU}, ""},
		{"qwen3 default (no renormalisation)", `{"model_type":"qwen3_moe","hidden_size":8,"intermediate_size":64,"moe_intermediate_size":16,"num_experts":4,"num_experts_per_tok":2}`,
			moe.Config{Hidden: 8, FFN: 16, Experts: 4, TopK: 2, Activation: moe.SwiGLU, PreSoftmax: true}, ""},
		{"qwen3 norm_topk_prob", `{"model_type":"qwen3_moe","hidden_size":8,"moe_intermediate_size":16,"num_experts":4,"num_experts_per_tok":2,"norm_topk_prob":true}`,
			moe.Config{Hidden: 8, FFN: 16, Experts: 4, TopK: 2, Activation: moe.SwiGLU}, ""},
		{"olmoe", `{"model_type":"olmoe","hidden_size":8,"intermediate_size":16,"num_experts":4,"num_experts_per_tok":1,"norm_topk_prob":false}`,
			moe.Config{Hidden: 8, FFN: 16, Experts: 4, TopK: 1, Activation: moe.SwiGLU, PreSoftmax: true}, ""},
		{"deepseek-v3 (671B routing)", `{"model_type":"deepseek_v3","hidden_size":16,"intermediate_size":64,"moe_intermediate_size":8,"n_routed_experts":256,"num_experts_per_tok":8,"n_group":8,"topk_group":4,"routed_scaling_factor":2.5,"n_shared_experts":1,"norm_topk_prob":true}`,
			moe.Config{Hidden: 16, FFN: 8, Experts: 256, TopK: 8, Activation: moe.SwiGLU, Score: moe.Sigmoid, ExpertBias: true, Groups: 8, GroupsKept: 4, ScalingFactor: 2.5, SharedFFN: 8}, ""},
		{"deepseek defaults", `{"model_type":"deepseek_v3","hidden_size":16,"moe_intermediate_size":8,"n_routed_experts":16,"num_experts_per_tok":8}`,
			moe.Config{Hidden: 16, FFN: 8, Experts: 16, TopK: 8, Activation: moe.SwiGLU, Score: moe.Sigmoid, ExpertBias: true, Groups: 8, GroupsKept: 4, ScalingFactor: 2.5, SharedFFN: 8}, ""},
		{"gelu", `{"model_type":"mixtral","hidden_size":8,"intermediate_size":16,"num_local_experts":4,"num_experts_per_tok":2,"hidden_act":"gelu"}`,
			moe.Config{}, `hidden_act "gelu"`},
		{"unknown model", `{"model_type":"llama","hidden_size":8}`, moe.Config{}, `model_type "llama"`},
		{"no model type", `{"hidden_size":8}`, moe.Config{}, "no model_type"},
		{"deepseek no renormalisation", `{"model_type":"deepseek_v3","hidden_size":16,"moe_intermediate_size":8,"n_routed_experts":16,"num_experts_per_tok":4,"n_group":1,"topk_group":1,"norm_topk_prob":false}`,
			moe.Config{}, "norm_topk_prob false"},
		{"deepseek group score not top-2", `{"model_type":"deepseek_v3","hidden_size":16,"moe_intermediate_size":8,"n_routed_experts":16,"num_experts_per_tok":4,"n_group":4,"topk_group":1}`,
			moe.Config{}, "top 2 experts"},
		// Keeping every group keeps every expert, whatever the group score (it used to be refused).
		{"deepseek every group kept", `{"model_type":"deepseek_v3","hidden_size":16,"moe_intermediate_size":8,"n_routed_experts":16,"num_experts_per_tok":4,"n_group":4,"topk_group":4}`,
			moe.Config{Hidden: 16, FFN: 8, Experts: 16, TopK: 4, Activation: moe.SwiGLU, Score: moe.Sigmoid, ExpertBias: true, Groups: 1, GroupsKept: 1, ScalingFactor: 2.5, SharedFFN: 8}, ""},
		{"deepseek groups of one", `{"model_type":"deepseek_v3","hidden_size":16,"moe_intermediate_size":8,"n_routed_experts":16,"num_experts_per_tok":8,"n_group":16,"topk_group":4}`,
			moe.Config{}, "fails on groups of one"},
		// transformers keeps a null as None: false for norm_topk_prob (not the default true),
		// a failure for the others (which used to load as their defaults), as is a 0 n_group.
		{"deepseek null norm_topk_prob", `{"model_type":"deepseek_v3","hidden_size":16,"moe_intermediate_size":8,"n_routed_experts":16,"num_experts_per_tok":4,"n_group":1,"topk_group":1,"norm_topk_prob":null}`,
			moe.Config{}, "norm_topk_prob false"},
		{"deepseek null norm_topk_prob top-1", `{"model_type":"deepseek_v3","hidden_size":16,"moe_intermediate_size":8,"n_routed_experts":16,"num_experts_per_tok":1,"n_group":1,"topk_group":1,"norm_topk_prob":null,"n_shared_experts":0}`,
			moe.Config{Hidden: 16, FFN: 8, Experts: 16, TopK: 1, Activation: moe.SwiGLU, Score: moe.Sigmoid, ExpertBias: true, Groups: 1, GroupsKept: 1, ScalingFactor: 2.5}, ""},
		{"deepseek null scaling factor", `{"model_type":"deepseek_v3","hidden_size":16,"moe_intermediate_size":8,"n_routed_experts":16,"num_experts_per_tok":8,"routed_scaling_factor":null}`,
			moe.Config{}, "is null"},
		{"deepseek null shared", `{"model_type":"deepseek_v3","hidden_size":16,"moe_intermediate_size":8,"n_routed_experts":16,"num_experts_per_tok":8,"n_shared_experts":null}`,
			moe.Config{}, "is null"},
		{"deepseek null n_group", `{"model_type":"deepseek_v3","hidden_size":16,"moe_intermediate_size":8,"n_routed_experts":16,"num_experts_per_tok":8,"n_group":null}`,
			moe.Config{}, "is null"},
		{"deepseek zero n_group", `{"model_type":"deepseek_v3","hidden_size":16,"moe_intermediate_size":8,"n_routed_experts":16,"num_experts_per_tok":8,"n_group":0}`,
			moe.Config{}, "0 groups"},
		{"deepseek zero topk_group", `{"model_type":"deepseek_v3","hidden_size":16,"moe_intermediate_size":8,"n_routed_experts":16,"num_experts_per_tok":8,"topk_group":0}`,
			moe.Config{}, "0 groups"},
		{"qwen3 null norm_topk_prob", `{"model_type":"qwen3_moe","hidden_size":8,"moe_intermediate_size":16,"num_experts":4,"num_experts_per_tok":2,"norm_topk_prob":null}`,
			moe.Config{Hidden: 8, FFN: 16, Experts: 4, TopK: 2, Activation: moe.SwiGLU, PreSoftmax: true}, ""},
		// ACT2FN["swish"] is SiLU, as "silu" is (it used to be refused).
		{"swish", `{"model_type":"mixtral","hidden_size":8,"intermediate_size":16,"num_local_experts":4,"num_experts_per_tok":2,"hidden_act":"swish"}`,
			moe.Config{Hidden: 8, FFN: 16, Experts: 4, TopK: 2, Activation: moe.SwiGLU}, ""},
		// transformers weighs DeepSeek's one expert by σ/σ = 1 (it used to load, with σ·2.5).
		{"deepseek renormalised top-1", `{"model_type":"deepseek_v3","hidden_size":2,"moe_intermediate_size":2,"n_routed_experts":2,"num_experts_per_tok":1,"n_group":1,"topk_group":1,"n_shared_experts":0}`,
			moe.Config{}, "norm_topk_prob true with num_experts_per_tok=1"},
		{"renormalised top-1", `{"model_type":"mixtral","hidden_size":8,"intermediate_size":16,"num_local_experts":4,"num_experts_per_tok":1}`,
			moe.Config{}, "num_experts_per_tok=1"},
		{"invalid sizes", `{"model_type":"mixtral","hidden_size":8,"intermediate_size":16,"num_local_experts":4,"num_experts_per_tok":5}`,
			moe.Config{}, "TopK=5 > Experts=4"},
		// An explicit 0 used to load as the default 2.5; moe.Config would read it as 1.
		{"deepseek zero scaling factor", `{"model_type":"deepseek_v3","hidden_size":16,"moe_intermediate_size":8,"n_routed_experts":16,"num_experts_per_tok":8,"routed_scaling_factor":0}`,
			moe.Config{}, "routed_scaling_factor 0 zeroes every routed expert's output"},
		{"deepseek negative scaling factor", `{"model_type":"deepseek_v3","hidden_size":16,"moe_intermediate_size":8,"n_routed_experts":16,"num_experts_per_tok":8,"routed_scaling_factor":-1}`,
			moe.Config{}, "ScalingFactor=-1, want > 0"},
		{"deepseek scaling factor 1", `{"model_type":"deepseek_v3","hidden_size":16,"moe_intermediate_size":8,"n_routed_experts":16,"num_experts_per_tok":8,"routed_scaling_factor":1}`,
			moe.Config{Hidden: 16, FFN: 8, Experts: 16, TopK: 8, Activation: moe.SwiGLU, Score: moe.Sigmoid, ExpertBias: true, Groups: 8, GroupsKept: 4, ScalingFactor: 1, SharedFFN: 8}, ""},
		{"negative shared", `{"model_type":"deepseek_v3","hidden_size":16,"moe_intermediate_size":8,"n_routed_experts":16,"num_experts_per_tok":8,"n_shared_experts":-1}`,
			moe.Config{}, "n_shared_experts=-1"},
		{"shared width wraps around", `{"model_type":"deepseek_v3","hidden_size":16,"moe_intermediate_size":4,"n_routed_experts":16,"num_experts_per_tok":8,"n_shared_experts":4611686018427387904}`,
			moe.Config{}, "n_shared_experts=4611686018427387904"},
	}
	for _, c := range cases {
		hc, err := ParseConfig([]byte(c.json))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got, err := hc.MoEConfig()
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: got %+v, %v; want an error containing %q", c.name, got, err, c.err)
			} else if n := strings.Count(err.Error(), "gomoe: "); n != 1 {
				t.Errorf("%s: error %q carries the gomoe prefix %d times, want once", c.name, err, n)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: got %+v, %v\nwant %+v", c.name, got, err, c.want)
		}
	}
	if _, err := ParseConfig([]byte("{")); err == nil {
		t.Error("ParseConfig of bad JSON: no error")
	}
	// Keys match exactly, as transformers reads them: a key equal to one of Config's only when
	// case is ignored used to override it (Go's JSON decoder ignores case) and load a layer
	// transformers does not build.
	for _, c := range []struct{ json, want string }{
		{`{"model_type":"mixtral","hidden_size":8,"intermediate_size":16,"num_local_experts":4,"num_experts_per_tok":2,"hidden_act":"gelu","HIDDEN_ACT":"silu"}`,
			`key "HIDDEN_ACT": transformers reads "hidden_act" (keys are case-sensitive)`},
		{`{"model_type":"qwen3_moe","hidden_size":8,"moe_intermediate_size":16,"num_experts":4,"num_experts_per_tok":2,"norm_topk_prob":true,"Norm_TopK_Prob":false}`,
			`key "Norm_TopK_Prob": transformers reads "norm_topk_prob"`},
		{`{"Model_Type":"mixtral","hidden_size":8,"intermediate_size":16,"num_local_experts":4,"num_experts_per_tok":2}`,
			`key "Model_Type": transformers reads "model_type"`},
	} {
		if hc, err := ParseConfig([]byte(c.json)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseConfig(%s): %+v, %v; want an error containing %q", c.json, hc, err, c.want)
		}
	}
}

func TestLoadRejects(t *testing.T) {
	c := Config{ModelType: "deepseek_v3", HiddenSize: 6, MoEIntermediateSize: 4, NRoutedExperts: 4, NumExpertsPerTok: 2, NGroup: 1, TopKGroup: 1, NSharedExperts: intp(1)}
	m, w := fixture(t, c, 4)
	noBias := m
	noBias.ExpertBias, noBias.Score = false, moe.Softmax
	gelu := m
	gelu.Activation = moe.GELU
	cases := []struct {
		name string
		mod  func(map[string]hfTensor)
		cfg  moe.Config
		err  string
	}{
		{"no router", func(ts map[string]hfTensor) { delete(ts, "gate.weight") }, m, `no tensor "p.gate.weight"`},
		{"router shape", func(ts map[string]hfTensor) { ts["gate.weight"] = hfTensor{[]int{6, 4}, w.router} }, m, "has shape [6 4], want [4 6]"},
		{"no bias", func(ts map[string]hfTensor) { delete(ts, "gate.e_score_correction_bias") }, m, "e_score_correction_bias"},
		{"bias not in config", func(ts map[string]hfTensor) {}, noBias, "config no ExpertBias"},
		{"no experts", func(ts map[string]hfTensor) { delete(ts, "experts.gate_up_proj"); delete(ts, "experts.down_proj") }, m, "no expert weights"},
		{"both layouts", func(ts map[string]hfTensor) { ts["experts.0.gate_proj.weight"] = hfTensor{[]int{4, 6}, w.gate[:24]} }, m, "both fused"},
		{"down shape", func(ts map[string]hfTensor) { ts["experts.down_proj"] = hfTensor{[]int{4, 6, 3}, w.down[:72]} }, m, `"p.experts.down_proj" has shape [4 6 3]`},
		{"no shared", func(ts map[string]hfTensor) { delete(ts, "shared_experts.up_proj.weight") }, m, "shared_experts.up_proj.weight"},
		{"unused tensor", func(ts map[string]hfTensor) { ts["shared_expert_gate.weight"] = hfTensor{[]int{1, 6}, w.router[:6]} }, m, "no place for: p.shared_expert_gate.weight"},
		{"gelu layer", func(ts map[string]hfTensor) {}, gelu, "SwiGLU"},
		{"invalid config", func(ts map[string]hfTensor) {}, moe.Config{Hidden: 6}, "gomoe: hf: Load: moe config: FFN=0"},
	}
	for _, tc := range cases {
		ts := tensorsOf(m, w, "fused")
		tc.mod(ts)
		st := parsed(t, ts, "p.")
		g := G.NewGraph()
		l, err := Load(g, "moe", tc.cfg, st, "p.")
		if err == nil || l != nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: got %v; want an error containing %q", tc.name, err, tc.err)
		} else if n := strings.Count(err.Error(), "gomoe: "); n != 1 {
			t.Errorf("%s: error %q carries the gomoe prefix %d times, want once", tc.name, err, n)
		}
		if n := len(g.AllNodes()); n != 0 {
			t.Errorf("%s: Load added %d nodes despite the error", tc.name, n)
		}
	}
	if _, err := Load(G.NewGraph(), "moe", m, nil, ""); err == nil {
		t.Error("nil tensors: no error")
	}
	// A prefix without its final dot: the error says so.
	if _, err := Load(G.NewGraph(), "moe", m, parsed(t, tensorsOf(m, w, "fused"), "p."), "p"); err == nil ||
		!strings.Contains(err.Error(), `the prefix should end with a dot: "p."`) {
		t.Errorf("prefix without its dot: %v", err)
	}
	// Values the layer cannot hold: NaN or ±Inf in the file, or a float64 beyond the layer's
	// float32 or bfloat16 range (it used to load as ±Inf).
	bf16 := m
	bf16.Dtype = bfloat16.Dtype
	f64 := m
	f64.Dtype, f64.RouterDtype = tensor.Float64, tensor.Float64
	for _, c := range []struct {
		name, tensor string
		i            int
		v            float64
		cfg          moe.Config
		err          string // "" = loads
	}{
		{"NaN expert weight", "experts.down_proj", 5, math.NaN(), m, `tensor "p.experts.down_proj": element 5 is NaN, not a finite float32`},
		{"+Inf router weight", "gate.weight", 0, math.Inf(1), m, `tensor "p.gate.weight": element 0 is +Inf`},
		{"1e300 into float32", "experts.gate_up_proj", 7, 1e300, m, "element 7 is 1e+300, not a finite float32"},
		{"1e300 into a float32 router of a bfloat16 layer", "gate.e_score_correction_bias", 1, -1e300, bf16, "element 1 is -1e+300, not a finite float32"},
		{"3.4e38 into bfloat16 (rounds up past its largest)", "experts.gate_up_proj", 2, 3.4e38, bf16, "element 2 is 3.4e+38, not a finite BFloat16"},
		// Just below the point halfway between bfloat16's largest and 2¹²⁸: it rounds down to
		// the largest (rounded through float32 first it landed on that point and went to +Inf).
		{"(2¹²⁸ − 2¹¹⁹)(1 − 2⁻⁴⁰) into bfloat16 (rounds to its largest)", "experts.gate_up_proj", 2, (0x1p128 - 0x1p119) * (1 - 0x1p-40), bf16, ""},
		{"2¹²⁸ − 2¹¹⁹ into bfloat16 (a tie, to even: +Inf)", "experts.gate_up_proj", 2, 0x1p128 - 0x1p119, bf16, "not a finite BFloat16"},
		{"1e300 into float64", "experts.gate_up_proj", 7, 1e300, f64, ""},
	} {
		ts := tensorsOf(m, w, "fused")
		d := slices.Clone(ts[c.tensor].data)
		d[c.i] = c.v
		ts[c.tensor] = hfTensor{ts[c.tensor].shape, d}
		st, err := safetensors.Parse(encode(t, ts, "p.", nst.F64, nil))
		if err != nil {
			t.Fatal(err)
		}
		g := G.NewGraph()
		_, err = Load(g, "moe", c.cfg, st, "p.")
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%s: got %v; want an error containing %q", c.name, err, c.err)
		case c.err != "" && len(g.AllNodes()) != 0:
			t.Errorf("%s: Load added %d nodes despite the error", c.name, len(g.AllNodes()))
		}
	}
}

// TestReadConfig reads a config.json from disk: the fields ParseConfig fills, and the error of
// a missing file.
func TestReadConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.json")
	js := `{"model_type":"mixtral","hidden_size":8,"intermediate_size":16,"num_local_experts":4,"num_experts_per_tok":2}`
	if err := os.WriteFile(path, []byte(js), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := ReadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.ModelType != "mixtral" || c.HiddenSize != 8 || c.IntermediateSize != 16 || c.NumLocalExperts != 4 || c.NumExpertsPerTok != 2 {
		t.Errorf("ReadConfig: %+v", c)
	}
	if _, err := ReadConfig(filepath.Join(t.TempDir(), "missing.json")); err == nil || !strings.Contains(err.Error(), "gomoe: hf:") {
		t.Errorf("ReadConfig of a missing file: %v, want a gomoe: hf: error", err)
	}
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadConfig(path); err == nil {
		t.Error("ReadConfig of bad JSON: no error")
	}
}

// TestLoadChecksShapesBeforeReading: a tensor of another shape than the config gives is an
// error before its values are read, whatever its size. Each file here holds a block of the
// config with one tensor replaced by a 64 MiB one (sparse on disk): Load used to read it whole,
// 256 MiB of allocations, before it compared the shape (a larger model's tensors, under
// another config or prefix, died allocating).
func TestLoadChecksShapesBeforeReading(t *testing.T) {
	c := Config{ModelType: "olmoe", HiddenSize: 6, IntermediateSize: 4, NumExperts: 4, NumExpertsPerTok: 2}
	m, w := fixture(t, c, 10)
	for _, tc := range []struct {
		name, layout, tensor string
		shape                []int
		err                  string
	}{
		{"router", "fused", "gate.weight", []int{4096, 4096}, `tensor "gate.weight" has shape [4096 4096], want [4 6]`},
		{"fused gate_up_proj", "fused", "experts.gate_up_proj", []int{4, 4096, 1024}, `tensor "experts.gate_up_proj" has shape [4 4096 1024], want [4 8 6]`},
		{"per-expert down_proj", "proj", "experts.1.down_proj.weight", []int{4096, 4096}, `tensor "experts.1.down_proj.weight" has shape [4096 4096], want [6 4]`},
	} {
		ts := tensorsOf(m, w, tc.layout)
		delete(ts, tc.tensor)
		st, err := safetensors.Open(sparseFile(t, ts, tc.tensor, tc.shape))
		if err != nil {
			t.Fatal(err)
		}
		g := G.NewGraph()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err = Load(g, "moe", m, st, "")
		runtime.ReadMemStats(&after)
		st.Close()
		if err == nil || !strings.Contains(err.Error(), tc.err) || len(g.AllNodes()) != 0 {
			t.Errorf("%s: got %v (%d nodes added), want an error containing %q", tc.name, err, len(g.AllNodes()), tc.err)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > 8<<20 {
			t.Errorf("%s: Load allocated %d MiB before refusing the shape", tc.name, n>>20)
		}
	}
}

// sparseFile writes ts as an F32 safetensors file with one more tensor, big, of shape bigShape
// and zero values, last in the data section and not written (sparse), and returns its path.
func sparseFile(t *testing.T, ts map[string]hfTensor, big string, bigShape []int) string {
	t.Helper()
	names := slices.Sorted(maps.Keys(ts))
	var hdr strings.Builder
	var data []byte
	hdr.WriteString("{")
	for _, n := range names {
		begin := len(data)
		for _, v := range ts[n].data {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(float32(v)))
		}
		fmt.Fprintf(&hdr, `%q:{"dtype":"F32","shape":%s,"data_offsets":[%d,%d]},`, n, strings.ReplaceAll(fmt.Sprint(ts[n].shape), " ", ","), begin, len(data))
	}
	size := 4
	for _, d := range bigShape {
		size *= d
	}
	fmt.Fprintf(&hdr, `%q:{"dtype":"F32","shape":%s,"data_offsets":[%d,%d]}}`, big, strings.ReplaceAll(fmt.Sprint(bigShape), " ", ","), len(data), len(data)+size)
	path := filepath.Join(t.TempDir(), "block.safetensors")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := append(binary.LittleEndian.AppendUint64(nil, uint64(hdr.Len())), hdr.String()...)
	if _, err := f.Write(append(buf, data...)); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(len(buf) + len(data) + size)); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestMoEConfigNullHiddenAct: "hidden_act": null is transformers' None, on which its experts
// fail (ACT2FN[None]); it loaded as silu. A missing key stays the default silu.
func TestMoEConfigNullHiddenAct(t *testing.T) {
	base := `"model_type":"mixtral","hidden_size":8,"intermediate_size":16,"num_local_experts":4,"num_experts_per_tok":2`
	c, err := ParseConfig([]byte(`{` + base + `,"hidden_act":null}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.MoEConfig(); err == nil || !strings.Contains(err.Error(), "hidden_act is null") {
		t.Errorf("null hidden_act: got %v; want an error", err)
	}
	c, err = ParseConfig([]byte(`{` + base + `}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.MoEConfig(); err != nil {
		t.Errorf("no hidden_act: %v", err)
	}
}

// TestConfigUnmarshalJSON: json.Unmarshal into a Config (alone or inside another struct) gives
// ParseConfig's Config and errors. It skipped ParseConfig's checks: a DeepSeek-V3 config's
// "norm_topk_prob": null (transformers' None, false) loaded as renormalised, "hidden_act":
// null loaded as silu, and "HIDDEN_ACT" overrode "hidden_act".
func TestConfigUnmarshalJSON(t *testing.T) {
	describe := func(hc Config, err error) string {
		if err != nil {
			return "error: " + err.Error()
		}
		m, err := hc.MoEConfig()
		return fmt.Sprintf("%+v %v", m, err)
	}
	for _, c := range []struct{ json, want string }{
		{`{"model_type":"deepseek_v3","hidden_size":16,"moe_intermediate_size":8,"n_routed_experts":16,"num_experts_per_tok":4,"n_group":1,"topk_group":1,"norm_topk_prob":null}`, "norm_topk_prob"},
		{`{"model_type":"mixtral","hidden_size":8,"intermediate_size":16,"num_local_experts":4,"num_experts_per_tok":2,"hidden_act":null}`, "hidden_act is null"},
		{`{"model_type":"mixtral","hidden_size":8,"intermediate_size":16,"num_local_experts":4,"num_experts_per_tok":2,"hidden_act":"gelu","HIDDEN_ACT":"silu"}`, `key "HIDDEN_ACT"`},
		{`{"model_type":"mixtral","hidden_size":8,"intermediate_size":16,"num_local_experts":4,"num_experts_per_tok":2}`, "Hidden:8"},
	} {
		want := describe(ParseConfig([]byte(c.json)))
		var hc Config
		got := describe(hc, json.Unmarshal([]byte(c.json), &hc))
		var wrapped struct {
			Model Config `json:"model"`
		}
		inside := describe(wrapped.Model, json.Unmarshal([]byte(`{"model":`+c.json+`}`), &wrapped))
		if got != want || inside != want || !strings.Contains(want, c.want) {
			t.Errorf("%s:\njson.Unmarshal:  %s\ninside a struct: %s\nParseConfig:     %s\nwant %q in all three", c.json, got, inside, want, c.want)
		}
	}
	// json.Marshal then json.Unmarshal gives the same Config back, explicit nulls and zeros
	// included (a nil routed_scaling_factor used to come back as an explicit null, which
	// MoEConfig refuses).
	for _, js := range []string{
		`{"model_type":"deepseek_v3","hidden_size":16,"moe_intermediate_size":8,"n_routed_experts":16,"num_experts_per_tok":4}`,
		`{"model_type":"deepseek_v3","hidden_size":16,"moe_intermediate_size":8,"n_routed_experts":16,"num_experts_per_tok":4,"routed_scaling_factor":null}`,
		`{"model_type":"deepseek_v3","hidden_size":16,"moe_intermediate_size":8,"n_routed_experts":16,"num_experts_per_tok":4,"n_group":0}`,
		`{"model_type":"deepseek_v3","hidden_size":16,"moe_intermediate_size":8,"n_routed_experts":16,"num_experts_per_tok":1,"norm_topk_prob":null,"n_shared_experts":2}`,
		`{"model_type":"mixtral","hidden_size":8,"intermediate_size":16,"num_local_experts":4,"num_experts_per_tok":2,"hidden_act":null}`,
		`{"model_type":"qwen3_moe","hidden_size":8,"moe_intermediate_size":16,"num_experts":4,"num_experts_per_tok":2,"norm_topk_prob":true}`,
	} {
		c, err := ParseConfig([]byte(js))
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var back Config
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if want, got := describe(c, nil), describe(back, nil); got != want || !reflect.DeepEqual(back, c) {
			t.Errorf("%s → %s:\nback %+v: %s\nwant %+v: %s", js, b, back, got, c, want)
		}
	}
	// JSON null leaves a Config as it was.
	hc := Config{ModelType: "mixtral"}
	if err := json.Unmarshal([]byte(`null`), &hc); err != nil || hc.ModelType != "mixtral" {
		t.Errorf("null: %+v, %v; want the Config unchanged", hc, err)
	}
}
