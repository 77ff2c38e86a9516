package op

import (
	"math/rand"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The fake device's nn methods (device.Backend's) run the host ops (see fakeDevice).

func (f *fakeDevice) BiasAdd(x, b G.Value) (G.Value, error) {
	return f.one("BiasAdd", func() (G.Value, error) { return biasAddOp{}.Do(x, b) })
}

func (f *fakeDevice) ColSum(x G.Value) (G.Value, error) {
	return f.one("ColSum", func() (G.Value, error) { return colSumOp{}.Do(x) })
}

func (f *fakeDevice) ReLU(x G.Value) (G.Value, error) {
	return f.one("ReLU", func() (G.Value, error) { return reluOp{dims: x.Shape().Dims()}.Do(x) })
}

func (f *fakeDevice) ReLUGrad(x, dy G.Value) (G.Value, error) {
	return f.one("ReLUGrad", func() (G.Value, error) { return reluGradOp{dims: x.Shape().Dims()}.Do(x, dy) })
}

func (f *fakeDevice) RMSNorm(x, gain G.Value, eps float64) (G.Value, error) {
	return f.one("RMSNorm", func() (G.Value, error) { return rmsOp{eps: eps}.Do(x, gain) })
}

func (f *fakeDevice) RMSNormGrad(x, gain, dy G.Value, eps float64, which int) (G.Value, error) {
	return f.one("RMSNormGrad", func() (G.Value, error) { return rmsGradOp{eps: eps, which: which}.Do(x, gain, dy) })
}

// CrossEntropy returns the loss as a 0-d tensor, as the CUDA backend does.
func (f *fakeDevice) CrossEntropy(logits, target G.Value) (G.Value, error) {
	return f.one("CrossEntropy", func() (G.Value, error) {
		v, err := ceOp{}.Do(logits, target)
		if err != nil {
			return nil, err
		}
		return tensor.New(tensor.FromScalar(v.Data())), nil
	})
}

func (f *fakeDevice) CrossEntropyGrad(logits, target, dy G.Value, scale float64) (G.Value, error) {
	name := "CrossEntropyGrad host dy"
	if dy != nil {
		name = "CrossEntropyGrad device dy"
		scale *= gcFloats(dy)[0]
	}
	return f.one(name, func() (G.Value, error) {
		if logits.Dtype() == tensor.Float32 {
			return ceGradHost[float32](logits, target, scale)
		}
		return ceGradHost[float64](logits, target, scale)
	})
}

func (f *fakeDevice) Embedding(table, ids G.Value) (G.Value, error) {
	return f.one("Embedding", func() (G.Value, error) { return embedOp{v: table.Shape()[0]}.Do(table, ids) })
}

func (f *fakeDevice) EmbeddingGrad(dy, ids G.Value, V int) (G.Value, error) {
	return f.one("EmbeddingGrad", func() (G.Value, error) { return embedGradOp{v: V}.Do(dy, ids) })
}

// TestDeviceDispatchNNOps runs Embedding, BiasAdd, ReLU, RMSNorm and CrossEntropy forward and backward
// with every input on a (fake) device: each op goes to its device method and gives the host
// result bit for bit; the loss-gradient seed of G.Grad stays a host scalar, which the
// cross-entropy gradient accepts with device logits.
func TestDeviceDispatchNNOps(t *testing.T) {
	t.Parallel()
	const N, D = 4, 6
	rng := rand.New(rand.NewSource(9))
	const V = 7
	xs, bs, gs := gcRand(rng, V*D), gcRand(rng, D), gcRand(rng, D)
	build := func() (*G.ExprGraph, G.Nodes, *G.Node) {
		g := G.NewGraph()
		dt := tensor.Float64
		x := G.NewMatrix(g, dt, G.WithShape(V, D), G.WithName("table"), G.WithValue(gcDense(dt, tensor.Shape{V, D}, xs)))
		ids := gcInt32Node(g, "ids", tensor.Shape{N}, []int32{6, 0, 6, 2})
		b := G.NewVector(g, dt, G.WithShape(D), G.WithName("b"), G.WithValue(gcDense(dt, tensor.Shape{D}, bs)))
		gain := G.NewVector(g, dt, G.WithShape(D), G.WithName("gain"), G.WithValue(gcDense(dt, tensor.Shape{D}, gs)))
		tg := G.NewMatrix(g, dt, G.WithShape(N, D), G.WithName("t"), G.WithValue(gcDense(dt, tensor.Shape{N, D}, oneHot([]int{1, 5, 0, 3}, D))))
		h1 := must(BiasAdd(must(Embedding(x, ids)), b))
		h2 := must(ReLU(h1))
		h3 := must(RMSNorm(h2, gain, 1e-6))
		ce := must(CrossEntropy(h3, tg))
		grads, err := G.Grad(ce, x, b, gain)
		if err != nil {
			t.Fatal(err)
		}
		return g, append(G.Nodes{h1, h2, h3}, grads...), ce
	}
	g, outs, ce := build()
	want := runRead(t, g, append(outs, ce)...)

	f := newFakeDevice()
	g, outs, ce = build()
	got := f.run(t, g, append(outs, ce)...)
	for i := range outs {
		if !bitsEqual(got[i], want[i]) {
			t.Errorf("output %d (%v): device %v, host %v", i, outs[i], got[i], want[i])
		}
	}
	if d, ok := got[len(outs)].(*tensor.Dense); !ok || !d.Shape().IsScalar() || gcFloats(d)[0] != gcFloats(want[len(outs)])[0] {
		t.Errorf("loss: device %v (%T), host %v", got[len(outs)], got[len(outs)], want[len(outs)])
	}
	for _, name := range []string{"BiasAdd", "ColSum", "ReLU", "ReLUGrad", "RMSNorm", "RMSNormGrad", "CrossEntropy", "CrossEntropyGrad host dy", "Embedding", "EmbeddingGrad"} {
		if f.calls[name] == 0 {
			t.Errorf("device method %s was never called (calls %v)", name, f.calls)
		}
	}
}

// TestDeviceNNGradDy: a loss gradient on the device goes to the kernel as a device value; a
// mix of device and host data values is an error.
func TestDeviceNNGradDy(t *testing.T) {
	t.Parallel()
	f := newFakeDevice()
	logits := gcDense(tensor.Float64, tensor.Shape{4, 2}, []float64{1, 2, 3, 4, 0, 0, -1, 1})
	target := gcDense(tensor.Float64, tensor.Shape{4, 2}, []float64{1, 0, 0, 1, 1, 0, 0, 1})
	dy := tensor.New(tensor.FromScalar(2.5))
	// Host reference: the host scalar 2.5 (2.5/4 and 2.5·(1/4) are both exact).
	want, err := ceGradOp{}.Do(logits, target, G.NewF64(2.5))
	if err != nil {
		t.Fatal(err)
	}
	f.own(logits)
	f.own(target)
	f.own(dy)
	got, err := ceGradOp{}.Do(logits, target, dy)
	if err != nil {
		t.Fatal(err)
	}
	if f.calls["CrossEntropyGrad device dy"] != 1 || !bitsEqual(got, want) {
		t.Errorf("device dy: got %v (calls %v), want %v", got, f.calls, want)
	}
	host := gcDense(tensor.Float64, tensor.Shape{4, 2}, make([]float64, 8))
	_, err = ceGradOp{}.Do(logits, host, G.NewF64(1))
	wantErr(t, "host target", err, "CrossEntropyGrad", "inputs mix device values (1) and host values (1)")
	_, err = ceGradOp{}.Do(host, gcDense(tensor.Float64, tensor.Shape{4, 2}, make([]float64, 8)), dy)
	wantErr(t, "device dy, host logits", err, "CrossEntropyGrad", "dy lives on the device")
	_, err = ceOp{}.Do(logits, host)
	wantErr(t, "CrossEntropy mix", err, "CrossEntropy", "inputs mix")
	_, err = biasAddOp{}.Do(logits, gcDense(tensor.Float64, tensor.Shape{2}, []float64{1, 2}))
	wantErr(t, "BiasAdd mix", err, "BiasAdd", "inputs mix")
}
