package op

import (
	"fmt"
	"math/rand"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/kernels"
)

// The fake device's grouped matmul and pointwise methods run the host ops (see fakeDevice).

func (f *fakeDevice) GroupedMatMul(g kernels.Geometry, xp, w, plan G.Value) (G.Value, error) {
	return f.one("GroupedMatMul", func() (G.Value, error) { return gmmOp{geo: g}.Do(xp, w, plan) })
}

func (f *fakeDevice) GroupedMatMulRowsGrad(g kernels.Geometry, dz, w, plan G.Value) (G.Value, error) {
	return f.one("GroupedMatMulRowsGrad", func() (G.Value, error) { return gmmRowsGradOp{geo: g}.Do(dz, w, plan) })
}

func (f *fakeDevice) GroupedMatMulWeightsGrad(g kernels.Geometry, xp, dz, plan G.Value, H int) (G.Value, error) {
	return f.one("GroupedMatMulWeightsGrad", func() (G.Value, error) { return gmmWeightsGradOp{geo: g, h: H}.Do(xp, dz, plan) })
}

func (f *fakeDevice) Cast(x G.Value, to tensor.Dtype) (G.Value, error) {
	return f.one("Cast", func() (G.Value, error) { return castOp{from: x.Dtype(), to: to, dims: x.Shape().Dims()}.Do(x) })
}

func (f *fakeDevice) ScaleRows(x, s G.Value) (G.Value, error) {
	return f.one("ScaleRows", func() (G.Value, error) { return scaleRowsOp{}.Do(x, s) })
}

func (f *fakeDevice) RowDot(a, b G.Value) (G.Value, error) {
	return f.one("RowDot", func() (G.Value, error) { return rowDotOp{out: probsDtypeFor(a.Dtype())}.Do(a, b) })
}

func (f *fakeDevice) Upload(like G.Value, h *tensor.Dense) (G.Value, error) {
	return f.one("Upload", func() (G.Value, error) { return h.Clone().(*tensor.Dense), nil })
}

func (f *fakeDevice) Download(v G.Value) (*tensor.Dense, error) {
	f.calls["Download"]++
	c := v.(*tensor.Dense).Clone().(*tensor.Dense)
	tensor.WithEngine(tensor.StdEng{})(c) // a host copy: not the fake's
	return c, nil
}

func (f *fakeDevice) Write(dst G.Value, h *tensor.Dense) error {
	f.calls["Write"]++
	return tensor.Copy(dst.(*tensor.Dense), h)
}

func (f *fakeDevice) TopK(scores, bias G.Value, k, groups, kept int) (G.Value, error) {
	return f.one("TopK", func() (G.Value, error) {
		op := topkOp{k: k, e: scores.Shape()[1], groups: groups, kept: kept, bias: bias != nil}
		if bias == nil {
			return op.Do(scores)
		}
		return op.Do(scores, bias)
	})
}

func (f *fakeDevice) GatherTopK(scores, ids G.Value) (G.Value, error) {
	return f.one("GatherTopK", func() (G.Value, error) { return gatherTopKOp{e: scores.Shape()[1]}.Do(scores, ids) })
}

func (f *fakeDevice) GatherTopKGrad(g, ids G.Value, E int) (G.Value, error) {
	return f.one("GatherTopKGrad", func() (G.Value, error) { return gatherTopKGradOp{e: E}.Do(g, ids) })
}

func (f *fakeDevice) RouterTopK(logits, bias G.Value, k int, r kernels.Router) (G.Value, error) {
	return f.one("RouterTopK", func() (G.Value, error) {
		op := routerTopKOp{k: k, e: logits.Shape()[1], r: r, bias: bias != nil}
		if bias == nil {
			return op.Do(logits)
		}
		return op.Do(logits, bias)
	})
}

func (f *fakeDevice) RouterProbs(logits, ids G.Value, r kernels.Router) (G.Value, error) {
	return f.one("RouterProbs", func() (G.Value, error) {
		return routerProbsOp{e: logits.Shape()[1], k: ids.Shape()[1], r: r}.Do(logits, ids)
	})
}

func (f *fakeDevice) RouterProbsGrad(logits, ids, dprobs G.Value, r kernels.Router) (G.Value, error) {
	return f.one("RouterProbsGrad", func() (G.Value, error) {
		return routerProbsGradOp{p: routerProbsOp{e: logits.Shape()[1], k: ids.Shape()[1], r: r}}.Do(logits, ids, dprobs)
	})
}

// pwKindOf is the op kind of a device.Pointwise (by name).
func pwKindOf(d device.Pointwise) pwKind {
	for _, k := range []pwKind{pwSwiGLU, pwGELU, pwSigmoid, pwSoftmax, pwRowNormalize} {
		if k.String() == d.Name {
			return k
		}
	}
	return 0
}

func (f *fakeDevice) Pointwise(d device.Pointwise, in ...G.Value) (G.Value, error) {
	if d.Packed {
		return f.one("PointwiseSwiGLUPacked", func() (G.Value, error) { return swigluPackedOp{}.Do(in...) })
	}
	k := pwKindOf(d)
	return f.one("Pointwise"+k.String(), func() (G.Value, error) { return pwOp{k: k, dims: in[0].Shape().Dims()}.Do(in...) })
}

func (f *fakeDevice) PointwiseGrad(d device.Pointwise, in []G.Value, y, dy G.Value, want []bool) ([]G.Value, error) {
	if d.Packed {
		v, err := f.one("PointwiseGradSwiGLUPacked", func() (G.Value, error) { return swigluPackedGradOp{}.Do(in[0], dy) })
		return []G.Value{v}, err
	}
	k := pwKindOf(d)
	out := make([]G.Value, len(in))
	for i, w := range want {
		if !w {
			continue
		}
		vs := append(append(append([]G.Value{}, in...), y), dy)
		v, err := f.one("PointwiseGrad"+k.String(), func() (G.Value, error) { return pwGradOp{k: k, dims: y.Shape().Dims(), which: i}.Do(vs...) })
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// TestDeviceDispatchTrainOps runs the pointwise ops, TopK and GatherTopK forward and backward
// with every input on a (fake) device and checks that each went to its device method and gave
// the host result.
func TestDeviceDispatchTrainOps(t *testing.T) {
	t.Parallel()
	build := func() (*G.ExprGraph, []*G.Node, []*G.Node) {
		g := G.NewGraph()
		dt := tensor.Float64
		rng := rand.New(rand.NewSource(3))
		mk := func(name string, pos bool) *G.Node {
			v := gcRand(rng, 4*6)
			if pos {
				for i := range v {
					v[i] = 0.5 + v[i]/4
				}
			}
			return G.NewMatrix(g, dt, G.WithShape(4, 6), G.WithName(name), G.WithValue(gcDense(dt, tensor.Shape{4, 6}, v)))
		}
		x, a, b, pos := mk("x", false), mk("a", false), mk("b", false), mk("pos", true)
		s := must(Softmax(x))
		ids := must(TopK(s, 2, TopKOpts{Groups: 3, GroupsKept: 2}))
		p := must(GatherTopK(s, ids))
		ro := RouterOpts{Score: kernels.RouterSigmoid, Groups: 3, GroupsKept: 2, Scale: 2}
		rids := must(RouterTopK(x, 2, ro))
		rp := must(RouterProbs(x, rids, ro))
		rs := G.NewVector(g, dt, G.WithShape(4), G.WithName("rs"), G.WithValue(gcDense(dt, tensor.Shape{4}, gcRand(rng, 4))))
		in := []*G.Node{x, a, b, pos, rs}
		ys := []*G.Node{s, p, rp, must(SwiGLU(a, b)), must(SwiGLUPacked(a)), must(GELU(a)), must(Sigmoid(b)), must(RowNormalize(pos)), must(ScaleRows(a, rs)),
			must(Cast(must(Cast(must(Scale(b, 2)), tensor.Float32)), tensor.Float64))}
		var cost *G.Node
		for i, y := range ys {
			c, err := gcWeighted(g, dt, y, fmt.Sprintf("w%d", i), int64(i))
			if err != nil {
				t.Fatal(err)
			}
			if cost == nil {
				cost = c
			} else {
				cost = must(G.Add(cost, c))
			}
		}
		grads, err := G.Grad(cost, in...)
		if err != nil {
			t.Fatal(err)
		}
		return g, in, append(append(ys, ids, rids), grads...)
	}
	g, _, outs := build()
	want := runRead(t, g, outs...)

	f := newFakeDevice()
	g, _, outs = build()
	got := f.run(t, g, outs...)
	for i := range want {
		if !bitsEqual(got[i], want[i]) {
			t.Errorf("output %d (%v): device %v, host %v", i, outs[i], got[i], want[i])
		}
	}
	for _, k := range []pwKind{pwSoftmax, pwSwiGLU, pwGELU, pwSigmoid, pwRowNormalize} {
		for _, name := range []string{"Pointwise" + k.String(), "PointwiseGrad" + k.String()} {
			if f.calls[name] == 0 {
				t.Errorf("device method %s was never called (calls %v)", name, f.calls)
			}
		}
	}
	for _, name := range []string{"PointwiseSwiGLUPacked", "PointwiseGradSwiGLUPacked", "TopK", "GatherTopK", "GatherTopKGrad", "ScaleRows", "RowDot", "Cast", "RouterTopK", "RouterProbs", "RouterProbsGrad"} {
		if f.calls[name] == 0 {
			t.Errorf("device method %s was never called (calls %v)", name, f.calls)
		}
	}
}
