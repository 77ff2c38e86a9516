package hf

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/internal/hostmem"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/moe"
	"github.com/gomoe/gomoe/safetensors"
)

// Load builds the moe.Layer named name in g with the config cfg (from Config.MoEConfig, with
// any Dtype, losses or capacity set on it) and the weights of one transformers MoE block,
// the tensors of ts whose names start with prefix ("model.layers.3.mlp." for Qwen3-MoE,
// OLMoE and DeepSeek-V3, "model.layers.3.block_sparse_moe." for Mixtral checkpoints; "" for
// a block's own state dict):
//
//	gate.weight [E,H]                          → Router [H,E] (transposed)
//	gate.e_score_correction_bias [E]           → Bias (DeepSeek-V3)
//	experts.gate_up_proj [E,2F,H]               → W1 [E,H,2F] (transposed: gate, then up)
//	experts.down_proj [E,H,F]                   → W2 [E,F,H]
//	experts.N.gate_proj.weight [F,H] (or w1)    → W1[N][:, 0:F]   (per-expert nn.Linear
//	experts.N.up_proj.weight [F,H]   (or w3)    → W1[N][:, F:2F]   weights, [out,in])
//	experts.N.down_proj.weight [H,F] (or w2)    → W2[N]
//	shared_experts.{gate,up}_proj.weight        → SharedW1 [H,2S] (gate, then up)
//	shared_experts.down_proj.weight             → SharedW2
//
// The fused layout is the one transformers v5 writes; its transposed form ([E,H,2F] and
// [E,F,H]) is read too, told apart by the shapes (by the one tensor whose two forms differ
// when H = 2F or H = F; the two tensors must be in the same layout). Tensors may be
// F32, F64, BF16 or F16; they are converted to the layer's dtypes. Every tensor under prefix
// must be used and every weight of the layer found, with the shapes cfg gives, or Load
// returns an error and adds nothing to g (ts.Select leaves out tensors the layer has no
// place for). ts comes from safetensors.Open (a checkpoint's shards) or safetensors.Parse.
func Load(g *G.ExprGraph, name string, cfg moe.Config, ts *safetensors.Tensors, prefix string) (*moe.Layer, error) {
	if ts == nil {
		return nil, fmt.Errorf("gomoe: hf: Load: nil tensors")
	}
	if err := cfg.Validate(); err != nil {
		return nil, opkit.Wrap("hf: Load", err)
	}
	if cfg.Activation == moe.GELU { // after Validate: SwiGLU, zero (SwiGLU) or GELU
		return nil, fmt.Errorf("gomoe: hf: Load: the layer has %v experts, transformers' blocks are SwiGLU", cfg.Activation)
	}
	if err := checkLoadMemory(cfg); err != nil {
		return nil, opkit.Wrap("hf: Load", err)
	}
	w, err := readBlock(cfg, ts, prefix)
	if err != nil {
		if hint := prefixHint(ts, prefix); hint != "" {
			return nil, fmt.Errorf("%w (%s)", opkit.Wrap(fmt.Sprintf("hf: Load %q", prefix), err), hint)
		}
		return nil, opkit.Wrap(fmt.Sprintf("hf: Load %q", prefix), err)
	}
	l, err := moe.New(g, name, cfg)
	if err != nil {
		return nil, err
	}
	sets := []struct {
		n *G.Node
		v []float64
	}{{l.Router, w.router}, {l.W1, packGateUp(w.w1, w.w3, cfg.FFN)}, {l.W2, w.w2}, {l.Bias, w.bias},
		{l.SharedW1, packGateUp(w.s1, w.s3, cfg.SharedFFN)}, {l.SharedW2, w.s2}}
	for _, s := range sets {
		if s.n == nil {
			continue
		}
		if err := setValue(s.n, s.v); err != nil {
			return nil, opkit.Wrap(fmt.Sprintf("hf: Load: %s", s.n.Name()), err)
		}
	}
	return l, nil
}

// prefixHint returns a hint for a prefix that names a block but lacks its final dot
// ("model.layers.0.mlp" for "model.layers.0.mlp."), or "".
func prefixHint(ts *safetensors.Tensors, prefix string) string {
	if prefix == "" || strings.HasSuffix(prefix, ".") {
		return ""
	}
	for _, n := range ts.Names() {
		if strings.HasPrefix(n, prefix+".") {
			return fmt.Sprintf("the prefix should end with a dot: %q", prefix+".")
		}
	}
	return ""
}

// checkLoadMemory returns an error, before anything is allocated, if loading a block of cfg
// cannot fit in the memory this process may use: at most eight float64 copies of the expert weights while
// they are read and converted (the file's tensor, gate, up, down and their transposes, then the
// packed W1), six of the shared experts' and two of the router's, beside the layer's own
// weights (at most 8 bytes an element). Sizes are in floating point, so no product wraps
// around.
func checkLoadMemory(cfg moe.Config) error {
	H, F, E, S := float64(cfg.Hidden), float64(cfg.FFN), float64(cfg.Experts), float64(cfg.SharedFFN)
	staging := 8 * (8*E*H*F + 6*H*S + 2*(H*E+E))
	layer := 8 * (3*(E*H*F+H*S) + H*E + E)
	return hostmem.Check(fmt.Sprintf("the weights of Experts=%d Hidden=%d FFN=%d SharedFFN=%d, read as float64 and converted to the layer's dtypes,", cfg.Experts, cfg.Hidden, cfg.FFN, cfg.SharedFFN), staging+layer)
}

// block is one MoE block's weights in gomoe's layouts, as float64, with the gate (w1, s1) and
// up (w3, s3) projections apart.
type block struct {
	router, bias, w1, w3, w2, s1, s3, s2 []float64
}

// readBlock reads and converts the weights under prefix for cfg.
func readBlock(cfg moe.Config, ts *safetensors.Tensors, prefix string) (*block, error) {
	H, F, E, S := cfg.Hidden, cfg.FFN, cfg.Experts, cfg.SharedFFN
	dts := cfg.WithDefaults()
	used := map[string]bool{}
	get := func(name string, shape ...int) ([]float64, error) {
		full := prefix + name
		// The shape before the values: a tensor of another shape (a larger model's, under
		// another config or prefix) is not read, whatever its size.
		if s, ok := ts.Shape(full); ok && !slices.Equal(s, shape) {
			return nil, fmt.Errorf("tensor %q has shape %v, want %v", full, s, shape)
		}
		v, _, err := ts.Float64s(full)
		if err != nil {
			return nil, err
		}
		dt := dts.Dtype // the router and its bias ("gate.") are in the router's dtype
		if strings.HasPrefix(name, "gate.") {
			dt = dts.RouterDtype
		}
		if i := firstUnfit(v, dt); i >= 0 {
			return nil, fmt.Errorf("tensor %q: element %d is %g, not a finite %v", full, i, v[i], dt)
		}
		used[full] = true
		return v, nil
	}
	has := func(name string) bool { _, ok := ts.Shape(prefix + name); return ok }
	w := &block{}
	var err error
	r, err := get("gate.weight", E, H)
	if err != nil {
		return nil, err
	}
	w.router = transpose(r, E, H)
	switch {
	case cfg.ExpertBias:
		if w.bias, err = get("gate.e_score_correction_bias", E); err != nil {
			return nil, err
		}
	case has("gate.e_score_correction_bias"):
		return nil, fmt.Errorf("the block has an expert bias (gate.e_score_correction_bias) and the config no ExpertBias")
	}
	fused, perExpert := has("experts.gate_up_proj"), has("experts.0.gate_proj.weight") || has("experts.0.w1.weight")
	switch {
	case fused && perExpert:
		return nil, fmt.Errorf("the block has both fused (experts.gate_up_proj) and per-expert (experts.0....) weights")
	case fused:
		if err := w.fusedExperts(get, ts, prefix, E, H, F); err != nil {
			return nil, err
		}
	case perExpert:
		names := [3]string{"gate_proj", "up_proj", "down_proj"}
		if has("experts.0.w1.weight") {
			names = [3]string{"w1", "w3", "w2"}
		}
		w.w1, w.w3, w.w2 = make([]float64, E*H*F), make([]float64, E*H*F), make([]float64, E*F*H)
		for e := 0; e < E; e++ {
			gp, err := get(fmt.Sprintf("experts.%d.%s.weight", e, names[0]), F, H)
			if err != nil {
				return nil, err
			}
			up, err := get(fmt.Sprintf("experts.%d.%s.weight", e, names[1]), F, H)
			if err != nil {
				return nil, err
			}
			dn, err := get(fmt.Sprintf("experts.%d.%s.weight", e, names[2]), H, F)
			if err != nil {
				return nil, err
			}
			copy(w.w1[e*H*F:], transpose(gp, F, H))
			copy(w.w3[e*H*F:], transpose(up, F, H))
			copy(w.w2[e*F*H:], transpose(dn, H, F))
		}
	default:
		return nil, fmt.Errorf("no expert weights (experts.gate_up_proj, experts.0.gate_proj.weight or experts.0.w1.weight) under the prefix")
	}
	if S > 0 {
		sg, err := get("shared_experts.gate_proj.weight", S, H)
		if err != nil {
			return nil, err
		}
		su, err := get("shared_experts.up_proj.weight", S, H)
		if err != nil {
			return nil, err
		}
		sd, err := get("shared_experts.down_proj.weight", H, S)
		if err != nil {
			return nil, err
		}
		w.s1, w.s3, w.s2 = transpose(sg, S, H), transpose(su, S, H), transpose(sd, H, S)
	}
	var unused []string
	for _, n := range ts.Names() {
		if strings.HasPrefix(n, prefix) && !used[n] {
			unused = append(unused, n)
		}
	}
	if len(unused) > 0 {
		sort.Strings(unused)
		if len(unused) > 5 {
			unused = append(unused[:5], "...")
		}
		return nil, fmt.Errorf("tensors the layer has no place for: %s", strings.Join(unused, ", "))
	}
	return w, nil
}

// fusedExperts reads experts.gate_up_proj and experts.down_proj, in transformers v5's layout
// [E,2F,H] and [E,H,F] or the transposed [E,H,2F] and [E,F,H]. A tensor's shape tells its
// layout unless its two forms coincide (H = 2F for gate_up_proj, H = F for down_proj); they
// never both do, so the other tensor then decides, and the two must agree.
func (w *block) fusedExperts(get func(string, ...int) ([]float64, error), ts *safetensors.Tensors, prefix string, E, H, F int) error {
	gus, _ := ts.Shape(prefix + "experts.gate_up_proj")
	dns, _ := ts.Shape(prefix + "experts.down_proj")
	guT, guKnown := fusedLayout(gus, []int{E, 2 * F, H}, []int{E, H, 2 * F})
	dnT, dnKnown := fusedLayout(dns, []int{E, H, F}, []int{E, F, H})
	if guKnown && dnKnown && guT != dnT {
		return fmt.Errorf("experts.gate_up_proj %v and experts.down_proj %v are in different layouts (want [E,2F,H] and [E,H,F], or [E,H,2F] and [E,F,H]; E=%d H=%d F=%d)", gus, dns, E, H, F)
	}
	transposed := (guKnown && guT) || (!guKnown && dnKnown && dnT)
	var gu []float64
	var err error
	if transposed {
		gu, err = get("experts.gate_up_proj", E, H, 2*F)
	} else {
		gu, err = get("experts.gate_up_proj", E, 2*F, H)
	}
	if err != nil {
		return err
	}
	w.w1, w.w3 = make([]float64, E*H*F), make([]float64, E*H*F)
	for e := 0; e < E; e++ {
		for h := 0; h < H; h++ {
			for f := 0; f < F; f++ {
				o := e*H*F + h*F + f
				if transposed {
					w.w1[o] = gu[e*H*2*F+h*2*F+f]
					w.w3[o] = gu[e*H*2*F+h*2*F+F+f]
				} else {
					w.w1[o] = gu[e*2*F*H+f*H+h]
					w.w3[o] = gu[e*2*F*H+(F+f)*H+h]
				}
			}
		}
	}
	if transposed {
		w.w2, err = get("experts.down_proj", E, F, H)
		return err
	}
	dn, err := get("experts.down_proj", E, H, F)
	if err != nil {
		return err
	}
	w.w2 = make([]float64, E*F*H)
	for e := 0; e < E; e++ {
		copy(w.w2[e*F*H:], transpose(dn[e*H*F:(e+1)*H*F], H, F))
	}
	return nil
}

// fusedLayout reports whether shape is the transposed form t rather than transformers v5's
// form v5 of a fused expert tensor, and whether its shape tells (not when the two forms are
// the same shape, nor when it is neither).
func fusedLayout(shape, v5, t []int) (transposed, known bool) {
	switch {
	case slices.Equal(v5, t):
		return false, false
	case slices.Equal(shape, t):
		return true, true
	case slices.Equal(shape, v5):
		return false, true
	}
	return false, false
}

// packGateUp puts the rows of f gate values and f up values side by side, as the layer's W1
// and SharedW1 hold them (nil for no rows).
func packGateUp(gate, up []float64, f int) []float64 {
	if f == 0 || len(gate) == 0 {
		return nil
	}
	v := make([]float64, 0, 2*len(gate))
	for r := 0; r < len(gate)/f; r++ {
		v = append(append(v, gate[r*f:(r+1)*f]...), up[r*f:(r+1)*f]...)
	}
	return v
}

// transpose returns the [c,r] transpose of the row-major [r,c] matrix m.
func transpose(m []float64, r, c int) []float64 {
	out := make([]float64, len(m))
	for i := 0; i < r; i++ {
		for j := 0; j < c; j++ {
			out[j*r+i] = m[i*c+j]
		}
	}
	return out
}

// firstUnfit returns the index of the first value of v that is not finite, or not once
// converted to dt (float32 or bfloat16: beyond their range it rounds to ±Inf), or -1.
func firstUnfit(v []float64, dt tensor.Dtype) int {
	for i, x := range v {
		switch {
		case math.IsNaN(x) || math.IsInf(x, 0):
			return i
		case dt == tensor.Float32 && math.IsInf(float64(float32(x)), 0):
			return i
		case dt == bfloat16.Dtype && math.IsInf(float64(bfloat16.FromFloat64(x).Float32()), 0):
			return i
		}
	}
	return -1
}

// setValue writes v into the host value of the weight node n, in n's dtype.
func setValue(n *G.Node, v []float64) error {
	d, ok := n.Value().(*tensor.Dense)
	if !ok {
		return fmt.Errorf("value is a %T", n.Value())
	}
	if d.Shape().TotalSize() != len(v) {
		return fmt.Errorf("value has %d elements, the checkpoint %d", d.Shape().TotalSize(), len(v))
	}
	switch b := d.Data().(type) {
	case []float32:
		for i, x := range v {
			b[i] = float32(x)
		}
	case []float64:
		copy(b, v)
	case []bfloat16.BFloat16:
		for i, x := range v {
			b[i] = bfloat16.FromFloat64(x)
		}
	default:
		return fmt.Errorf("value holds %T", d.Data())
	}
	return nil
}
