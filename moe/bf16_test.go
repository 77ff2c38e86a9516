package moe

import (
	"math"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
)

// TestBFloat16LayerForward: a bfloat16 layer's output on the CPU is the float32 layer's with
// the same (bfloat16-representable) weights and input, within bfloat16 rounding.
func TestBFloat16LayerForward(t *testing.T) {
	const T, H = 16, 8
	cfg := Config{Hidden: H, FFN: 12, Experts: 4, TopK: 2, Seed: 5}
	gb, g32 := G.NewGraph(), G.NewGraph()
	cb := cfg
	cb.Dtype = bfloat16.Dtype
	lb, err := New(gb, "moe", cb)
	if err != nil {
		t.Fatal(err)
	}
	if lb.Config().RouterDtype != tensor.Float32 {
		t.Fatalf("bfloat16 layer router dtype %v, want float32", lb.Config().RouterDtype)
	}
	l32, err := New(g32, "moe", cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Give the float32 layer the bfloat16 layer's weights, widened exactly.
	for i, n := range lb.Learnables() {
		v := n.Value().(*tensor.Dense)
		var w []float32
		if v.Dtype() == bfloat16.Dtype {
			b := v.Data().([]bfloat16.BFloat16)
			w = make([]float32, len(b))
			if err := bfloat16.ToFloat32s(w, b); err != nil {
				t.Fatal(err)
			}
		} else {
			w = append([]float32(nil), v.Float32s()...)
		}
		if err := G.Let(l32.Learnables()[i], tensor.New(tensor.WithShape(v.Shape().Clone()...), tensor.WithBacking(w))); err != nil {
			t.Fatal(err)
		}
	}
	xs := make([]float32, T*H)
	xb := make([]bfloat16.BFloat16, T*H)
	for i := range xs {
		xb[i] = bfloat16.FromFloat32(float32(math.Sin(float64(i))))
		xs[i] = xb[i].Float32()
	}
	x32 := G.NewMatrix(g32, tensor.Float32, G.WithShape(T, H), G.WithName("x"), G.WithValue(tensor.New(tensor.WithShape(T, H), tensor.WithBacking(xs))))
	x16 := G.NewMatrix(gb, bfloat16.Dtype, G.WithShape(T, H), G.WithName("x"), G.WithValue(tensor.New(tensor.WithShape(T, H), tensor.WithBacking(xb))))
	o32, err := l32.Forward(x32)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := lb.Forward(x16)
	if err != nil {
		t.Fatal(err)
	}
	var v32, vb G.Value
	G.Read(o32.Y, &v32)
	G.Read(ob.Y, &vb)
	for _, c := range []struct {
		g *G.ExprGraph
	}{{g32}, {gb}} {
		m := G.NewTapeMachine(c.g)
		if err := m.RunAll(); err != nil {
			t.Fatal(err)
		}
		m.Close()
	}
	if vb.Dtype() != bfloat16.Dtype {
		t.Fatalf("output dtype %v", vb.Dtype())
	}
	yb := vb.Data().([]bfloat16.BFloat16)
	var maxAbs, maxDiff float64
	for i, w := range v32.Data().([]float32) {
		maxAbs = math.Max(maxAbs, math.Abs(float64(w)))
		maxDiff = math.Max(maxDiff, math.Abs(float64(yb[i].Float32()-w)))
	}
	if maxDiff > 0.02*maxAbs {
		t.Errorf("bfloat16 output differs from float32 by %g (max |y| %g)", maxDiff, maxAbs)
	}
}

func TestBFloat16ConfigErrors(t *testing.T) {
	cfg := Config{Hidden: 4, FFN: 4, Experts: 2, TopK: 1, PreSoftmax: true, Dtype: bfloat16.Dtype, RouterDtype: tensor.Float64}
	if err := cfg.Validate(); err == nil {
		t.Error("bfloat16 layer with a float64 router: no error")
	}
	cfg.RouterDtype = bfloat16.Dtype
	if err := cfg.Validate(); err == nil {
		t.Error("bfloat16 router: no error")
	}
}
