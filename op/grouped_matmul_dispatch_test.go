package op

import (
	"fmt"
	"math"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// gmmDispatchGraph builds plan -> GroupedMatMul with its two gradient ops applied to an
// independent dz, so that each op's Do runs once with every input given.
func gmmDispatchGraph(dt tensor.Dtype, H, N int) (*G.ExprGraph, []*G.Node, []*G.Node, map[string][]float64) {
	g := kernels.Geometry{T: 5, K: 2, E: 4, A: 2} // A=2: pad rows; expert 3 gets no row
	ids := []int32{0, 1, 2, 0, 1, -1, 2, 1, 0, 2}
	gr := G.NewGraph()
	rng := newRNG(17)
	p := must2(NewPlan(idsNode(gr, "ids", g.T, g.K, ids), nil, g))
	R := p.Rows()
	data := map[string][]float64{
		"xp": randFloats(rng, R*H),
		"w":  randFloats(rng, g.E*H*N),
		"dz": randFloats(rng, R*N),
	}
	mk := func(name string, shape ...int) *G.Node {
		v := gmmTestDense(dt, data[name], shape...)
		return G.NewTensor(gr, dt, len(shape), G.WithShape(shape...), G.WithName(name), G.WithValue(v))
	}
	xp, w, dz := mk("xp", R, H), mk("w", g.E, H, N), mk("dz", R, N)
	outs := []*G.Node{
		must(groupedMatMulWithPlan(xp, w, p.Node, g)),
		must(opkit.ApplyOp("GroupedMatMulRowsGrad", gmmRowsGradOp{geo: g}, dz, w, p.Node)),
		must(opkit.ApplyOp("GroupedMatMulWeightsGrad", gmmWeightsGradOp{geo: g, h: H}, xp, dz, p.Node)),
	}
	ins := []*G.Node{gr.ByName("ids")[0], xp, w, dz, p.Node}
	return gr, ins, outs, data
}

func gmmTestDense(dt tensor.Dtype, v []float64, shape ...int) *tensor.Dense {
	if dt == bfloat16.Dtype {
		o := make([]bfloat16.BFloat16, len(v))
		for i, x := range v {
			o[i] = bfloat16.FromFloat32(float32(x))
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(o))
	}
	return denseOf(dt, v, shape...)
}

// TestGroupedMatMulDeviceDispatch runs the grouped matmul and its two gradient ops with all
// inputs on a (fake) device: each must go to its device method and give the host result; a
// mix of host and device inputs is an error.
func TestGroupedMatMulDeviceDispatch(t *testing.T) {
	const H, N = 3, 5
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64, bfloat16.Dtype} {
		t.Run(fmt.Sprint(dt), func(t *testing.T) {
			gr, _, outs, _ := gmmDispatchGraph(dt, H, N)
			want := runRead(t, gr, outs...)

			f := newFakeDevice()
			gr, ins, outs, _ := gmmDispatchGraph(dt, H, N)
			got := f.run(t, gr, outs...)
			for i := range want {
				if got[i].Dtype() != dt || !bitsEqual(got[i], want[i]) {
					t.Errorf("output %d (%v): device %v, host %v", i, outs[i], got[i], want[i])
				}
				if !f.Owns(outs[i].Value()) {
					t.Errorf("output %d (%v) is not a device value", i, outs[i])
				}
			}
			for _, name := range []string{"GroupedMatMul", "GroupedMatMulRowsGrad", "GroupedMatMulWeightsGrad"} {
				if f.calls[name] != 1 {
					t.Errorf("device method %s called %d times, want 1 (calls %v)", name, f.calls[name], f.calls)
				}
			}

			// w on the host, xp and the plan on the device (as the run left them).
			w := ins[2].Value().(*tensor.Dense).Clone().(*tensor.Dense)
			tensor.WithEngine(tensor.StdEng{})(w)
			_, err := outs[0].Op().Do(ins[1].Value(), w, ins[4].Value())
			wantErr(t, "mixed inputs", err, "GroupedMatMul", "inputs mix device values (2) and host values (1)")
		})
	}
}

// TestGroupedMatMulBF16Host checks the host bfloat16 path (float32 kernels on the widened
// inputs, outputs rounded once) against float64 loops: within half a bfloat16 ulp of the
// exact result plus float32 rounding (1e-5 of Σ|a·b|), and pad rows exactly 0.
func TestGroupedMatMulBF16Host(t *testing.T) {
	const H, N = 3, 5
	gr, _, outs, data := gmmDispatchGraph(bfloat16.Dtype, H, N)
	got := runRead(t, gr, outs...)
	g := kernels.Geometry{T: 5, K: 2, E: 4, A: 2}
	ids := []int32{0, 1, 2, 0, 1, -1, 2, 1, 0, 2}
	rp := refPlan(g, ids, nil)
	R := g.Rows()
	round := func(v []float64) []float64 {
		o := make([]float64, len(v))
		for i, x := range v {
			o[i] = bfloat16.FromFloat32(float32(x)).Float64()
		}
		return o
	}
	xp, w, dz := round(data["xp"]), round(data["w"]), round(data["dz"])
	expertOf := make([]int, R)
	for r := range expertOf {
		expertOf[r] = -1
	}
	for e := 0; e < g.E; e++ {
		for r := rp.Offsets[e]; r < rp.Offsets[e]+rp.Counts[e]; r++ {
			expertOf[r] = e
		}
	}
	// z[r,j] = Σ_h xp[r,h]·w[e,h,j]; dxp[r,h] = Σ_j dz[r,j]·w[e,h,j]; dw[e,h,j] = Σ_r xp[r,h]·dz[r,j].
	z, zb := make([]float64, R*N), make([]float64, R*N)
	dxp, dxb := make([]float64, R*H), make([]float64, R*H)
	dw, dwb := make([]float64, g.E*H*N), make([]float64, g.E*H*N)
	for r, e := range expertOf {
		if e < 0 {
			continue
		}
		for h := 0; h < H; h++ {
			for j := 0; j < N; j++ {
				a, b, c := xp[r*H+h], w[e*H*N+h*N+j], dz[r*N+j]
				z[r*N+j] += a * b
				zb[r*N+j] += math.Abs(a * b)
				dxp[r*H+h] += c * b
				dxb[r*H+h] += math.Abs(c * b)
				dw[e*H*N+h*N+j] += a * c
				dwb[e*H*N+h*N+j] += math.Abs(a * c)
			}
		}
	}
	for i, c := range []struct {
		name        string
		want, bound []float64
	}{{"z", z, zb}, {"dxp", dxp, dxb}, {"dw", dw, dwb}} {
		if got[i].Dtype() != bfloat16.Dtype {
			t.Fatalf("%s has dtype %v, want bfloat16", c.name, got[i].Dtype())
		}
		b, ok := got[i].Data().([]bfloat16.BFloat16)
		if !ok {
			t.Fatalf("%s holds %T", c.name, got[i].Data())
		}
		gv := make([]float64, len(b))
		for j, x := range b {
			gv[j] = x.Float64()
		}
		for j := range gv {
			tol := math.Abs(c.want[j])/256 + 1e-5*c.bound[j]
			if !(math.Abs(gv[j]-c.want[j]) <= tol) || (c.bound[j] == 0 && gv[j] != 0) {
				t.Fatalf("%s[%d] = %g, want %g within %g", c.name, j, gv[j], c.want[j], tol)
			}
		}
	}
	// A bfloat16 xp with a float32 w is refused.
	geo := kernels.Geometry{T: 5, K: 2, E: 4, A: 2}
	_, err := gmmOp{geo: geo}.Do(gmmTestDense(bfloat16.Dtype, data["xp"], R, H), gmmTestDense(tensor.Float32, data["w"], g.E, H, N), int32Dense(rp.Flat(), geo.PlanLen()))
	wantErr(t, "bf16 xp with float32 w", err, "GroupedMatMul", "input 1 is float32")
}
