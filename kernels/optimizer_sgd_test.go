package kernels

import (
	"testing"

	"github.com/gomoe/gomoe/bfloat16"
)

// TestSGDUpdateHand checks SGDUpdate and SGDUpdateBF16 against values computed by hand,
// p − lr·(g + wd·p), on dyadic inputs whose results are exact in float32, float64 and
// bfloat16 (so the expected values do not depend on rounding).
func TestSGDUpdateHand(t *testing.T) {
	p := []float64{1, -2, 0.5, 4}
	g := []float64{0.5, 1, -0.25, 0}
	const lr, wd = 0.5, 0.25
	// 1 − 0.5·(0.5 + 0.25) = 0.625; −2 − 0.5·(1 − 0.5) = −2.25;
	// 0.5 − 0.5·(−0.25 + 0.125) = 0.5625; 4 − 0.5·(0 + 1) = 3.5.
	want := []float64{0.625, -2.25, 0.5625, 3.5}
	// Without weight decay: p − lr·g.
	wantNoWD := []float64{0.75, -2.5, 0.625, 4}

	for _, c := range []struct {
		wd   float64
		want []float64
	}{{wd, want}, {0, wantNoWD}} {
		p64 := append([]float64(nil), p...)
		if err := SGDUpdate(p64, g, lr, c.wd); err != nil {
			t.Fatal(err)
		}
		p32, g32 := make([]float32, len(p)), make([]float32, len(g))
		for i := range p {
			p32[i], g32[i] = float32(p[i]), float32(g[i])
		}
		if err := SGDUpdate(p32, g32, lr, c.wd); err != nil {
			t.Fatal(err)
		}
		pb, gb, w32 := make([]bfloat16.BFloat16, len(p)), make([]bfloat16.BFloat16, len(g)), make([]float32, len(p))
		for i := range p {
			pb[i], gb[i], w32[i] = bfloat16.FromFloat32(float32(p[i])), bfloat16.FromFloat32(float32(g[i])), float32(p[i])
		}
		if err := SGDUpdateBF16(pb, gb, w32, lr, c.wd); err != nil {
			t.Fatal(err)
		}
		for i, w := range c.want {
			if p64[i] != w || float64(p32[i]) != w || float64(w32[i]) != w || float64(pb[i].Float32()) != w {
				t.Errorf("wd=%g [%d]: float64 %v, float32 %v, bf16 master %v, bf16 %v; want %v", c.wd, i, p64[i], p32[i], w32[i], pb[i].Float32(), w)
			}
		}
	}

	// The step reads the float32 master copy, not the bfloat16 weights, and the master copy
	// keeps the bits bfloat16 cannot hold: 1.5 + 2⁻¹⁰ − 0.5·0.5 = 1.25 + 2⁻¹⁰ in w32, which
	// rounds to 1.25 in bfloat16 (8 significant bits).
	pb := []bfloat16.BFloat16{bfloat16.FromFloat32(3)}
	w32 := []float32{1.5 + 1.0/1024}
	gb := []bfloat16.BFloat16{bfloat16.FromFloat32(0.5)}
	if err := SGDUpdateBF16(pb, gb, w32, 0.5, 0); err != nil {
		t.Fatal(err)
	}
	if w32[0] != 1.25+1.0/1024 || pb[0].Float32() != 1.25 {
		t.Errorf("master step: master %v, bf16 %v; want %v and 1.25", w32[0], pb[0].Float32(), 1.25+1.0/1024)
	}

	if err := SGDUpdateBF16(pb, gb, make([]float32, 2), 0.5, 0); err == nil {
		t.Error("SGDUpdateBF16 with a master copy of another length: no error")
	}
}
