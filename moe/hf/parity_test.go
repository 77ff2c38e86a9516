package hf

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/moe"
	"github.com/gomoe/gomoe/safetensors"
)

// parityTol is the float32 tolerance of TestParity: the largest difference allowed, relative
// to the largest value compared (and at least absolute).
const parityTol = 1e-4

// parityKinds are the blocks of testdata/ (make_testdata.py).
var parityKinds = []string{"mixtral", "qwen3_moe", "olmoe", "deepseek_v3"}

func isWeight(name string) bool {
	switch name {
	case "input", "output", "grad_output", "grad_input":
		return false
	}
	return !strings.HasPrefix(name, "grad.")
}

// TestParity checks gomoe's output and gradients against transformers' on the blocks of
// testdata/ (float32; see the package documentation for how they are made).
func TestParity(t *testing.T) {
	if _, err := os.Stat("testdata"); err != nil {
		t.Skip("no moe/hf/testdata: generate it with python3 moe/hf/make_testdata.py moe/hf/testdata (torch, transformers 5.x)")
	}
	for _, kind := range parityKinds {
		t.Run(kind, func(t *testing.T) {
			ts, err := safetensors.Open(filepath.Join("testdata", kind+".safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			defer ts.Close()
			md := ts.Metadata()
			hc, err := ParseConfig([]byte(md["config"]))
			if err != nil {
				t.Fatal(err)
			}
			if hc.ModelType != kind {
				t.Fatalf("model_type %q in %s.safetensors", hc.ModelType, kind)
			}
			cfg, err := hc.MoEConfig()
			if err != nil {
				t.Fatal(err)
			}
			g := G.NewGraph()
			l, err := Load(g, kind, cfg, ts.Select(isWeight), "")
			if err != nil {
				t.Fatal(err)
			}
			dense := func(name string) (*tensor.Dense, []float64) {
				v, s, err := ts.Float64s(name)
				if err != nil {
					t.Fatal(err)
				}
				f := make([]float32, len(v))
				for i, x := range v {
					f[i] = float32(x)
				}
				return tensor.New(tensor.WithShape(s...), tensor.WithBacking(f)), v
			}
			xv, _ := dense("input")
			gy, _ := dense("grad_output")
			_, wantY := dense("output")
			_, wantDx := dense("grad_input")
			x := G.NewTensor(g, tensor.Float32, xv.Dims(), G.WithShape(xv.Shape()...), G.WithName("x"), G.WithValue(xv))
			out, err := l.Forward(x) // [B,S,H], as transformers takes it
			if err != nil {
				t.Fatal(err)
			}
			cost := G.Must(G.Sum(G.Must(G.HadamardProd(out.Y, G.NewConstant(gy)))))
			wrt := append(G.Nodes{x}, l.Learnables()...)
			grads, err := G.Grad(cost, wrt...)
			if err != nil {
				t.Fatal(err)
			}
			vals := make([]G.Value, len(grads))
			for i := range grads {
				G.Read(grads[i], &vals[i])
			}
			var y G.Value
			G.Read(out.Y, &y)
			m := G.NewTapeMachine(g)
			defer m.Close()
			if err := m.RunAll(); err != nil {
				t.Fatal(err)
			}
			// transformers' weight gradients in gomoe's layouts, through the loader's own
			// index maps (pinned by TestTransposeAndFusedIndexing and the forward check).
			gcfg := cfg
			if _, ok := ts.Shape("grad.gate.e_score_correction_bias"); !ok {
				gcfg.ExpertBias, gcfg.Score = false, moe.Softmax
			}
			gw, err := readBlock(gcfg, ts.Select(func(n string) bool { return strings.HasPrefix(n, "grad.") }), "grad.")
			if err != nil {
				t.Fatalf("transformers' gradients: %v", err)
			}
			checks := []struct {
				what      string
				got, want []float64
			}{{"output", float64s(y), wantY}, {"input gradient", float64s(vals[0]), wantDx}}
			i := 1
			add := func(what string, got, want []float64) {
				checks = append(checks, struct {
					what      string
					got, want []float64
				}{what, got, want})
			}
			for _, w := range []struct {
				what     string
				n        *G.Node
				want, up []float64 // up: the packed W1's second half (gate in want)
				f        int
			}{{"router gradient", l.Router, gw.router, nil, 0}, {"W1 gradient", l.W1, gw.w1, gw.w3, cfg.FFN},
				{"W2 (down_proj) gradient", l.W2, gw.w2, nil, 0}, {"shared W1 gradient", l.SharedW1, gw.s1, gw.s3, cfg.SharedFFN},
				{"shared W2 gradient", l.SharedW2, gw.s2, nil, 0}} {
				if w.n == nil {
					continue
				}
				got := float64s(vals[i])
				i++
				if w.up == nil {
					add(w.what, got, w.want)
					continue
				}
				// columns 0..f-1 of each row of 2f are the gate, f..2f-1 the up projection
				var gate, up []float64
				for r := 0; r < len(got)/(2*w.f); r++ {
					gate = append(gate, got[2*r*w.f:2*r*w.f+w.f]...)
					up = append(up, got[2*r*w.f+w.f:2*(r+1)*w.f]...)
				}
				add(w.what+", gate half (gate_proj)", gate, w.want)
				add(w.what+", up half (up_proj)", up, w.up)
			}
			for _, c := range checks {
				d, s := maxAbsDiff(c.got, c.want)
				if !(d <= parityTol*math.Max(1, s)) || s == 0 {
					t.Errorf("%s: max |gomoe − transformers| = %g (max |transformers| %g, tolerance %g)", c.what, d, s, parityTol*math.Max(1, s))
				} else {
					t.Logf("%s: max diff %.3g of max %.3g", c.what, d, s)
				}
			}
			// The per-expert layout of the same weights loads the same layer.
			if kind == "mixtral" || kind == "qwen3_moe" {
				pe, err := safetensors.Open(filepath.Join("testdata", kind+"_per_expert.safetensors"))
				if err != nil {
					t.Fatal(err)
				}
				defer pe.Close()
				l2, err := Load(G.NewGraph(), kind, cfg, pe, "")
				if err != nil {
					t.Fatal(err)
				}
				for j, n := range l.Learnables() {
					if d, _ := maxAbsDiff(float64s(l2.Learnables()[j].Value()), float64s(n.Value())); d != 0 {
						t.Errorf("per-expert layout: %s differs from the fused layout's by %g", n.Name(), d)
					}
				}
			}
		})
	}
}
