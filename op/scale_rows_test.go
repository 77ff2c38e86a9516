package op

import (
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
)

// TestScaleRowsBF16 runs ScaleRows on a bfloat16 x with float32 row scales, forward and
// backward (G.Backpropagate: dx = dy·s in bfloat16, ds = Σ_c dy·x in float32), against
// products worked out in float64. The inputs have few significant bits, so every product and
// row sum is exact in bfloat16 and float32 and the expected values need no rounding.
func TestScaleRowsBF16(t *testing.T) {
	const R, F = 3, 4
	x := []float64{0.5, -1.25, 2, 3, -0.75, 1, 0, 4, 1.5, -2, 0.25, -3}
	s := []float64{2, -0.5, 1.5}
	dy := []float64{1, -0.5, 0.25, 2, -1, 0.5, 3, -0.25, 0.75, 1, -2, 0.5}
	gr := G.NewGraph()
	xn := G.NewMatrix(gr, bfloat16.Dtype, G.WithShape(R, F), G.WithName("x"), G.WithValue(bf16Of(x, R, F)))
	sn := G.NewVector(gr, tensor.Float32, G.WithShape(R), G.WithName("s"), G.WithValue(denseOf(tensor.Float32, s, R)))
	dyn := G.NewMatrix(gr, bfloat16.Dtype, G.WithShape(R, F), G.WithName("dy"), G.WithValue(bf16Of(dy, R, F)))
	y := must(ScaleRows(xn, sn))
	if y.Dtype() != bfloat16.Dtype {
		t.Fatalf("output dtype %v, want bfloat16", y.Dtype())
	}
	grads, err := G.Backpropagate(G.Nodes{y}, G.Nodes{dyn}, G.Nodes{xn, sn})
	if err != nil {
		t.Fatal(err)
	}
	vals := runRead(t, gr, y, grads[0], grads[1])
	wantY, wantDx, wantDs := make([]float64, R*F), make([]float64, R*F), make([]float64, R)
	for r := 0; r < R; r++ {
		for c := 0; c < F; c++ {
			i := r*F + c
			wantY[i] = x[i] * s[r]
			wantDx[i] = dy[i] * s[r]
			wantDs[r] += dy[i] * x[i]
		}
	}
	if vals[2].Dtype() != tensor.Float32 {
		t.Fatalf("ds dtype %v, want float32", vals[2].Dtype())
	}
	for _, c := range []struct {
		name      string
		got, want []float64
	}{
		{"y", widen64(bf16Widen(t, vals[0])), wantY},
		{"dx", widen64(bf16Widen(t, vals[1])), wantDx},
		{"ds", toF64(t, vals[2]), wantDs},
	} {
		if len(c.got) != len(c.want) {
			t.Fatalf("%s: %d elements, want %d", c.name, len(c.got), len(c.want))
		}
		for i := range c.want {
			if c.got[i] != c.want[i] {
				t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
				break
			}
		}
	}
}

func widen64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}
