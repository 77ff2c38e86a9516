package op

import (
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
)

// The fake device's loss methods (device.Backend's) run the CPU kernels and return the loss as a
// tensor of scalar shape, as the CUDA backend does.

// fakeScalar is v as a 0-d tensor of dtype dt.
func fakeScalar(dt tensor.Dtype, v float64) G.Value {
	if dt == tensor.Float32 {
		return tensor.New(tensor.FromScalar(float32(v)))
	}
	return tensor.New(tensor.FromScalar(v))
}

// fakeDy is the output gradient: dy's value if given, else dyv.
func fakeDy(dy G.Value, dyv float64) float64 {
	if dy == nil {
		return dyv
	}
	switch x := dy.Data().(type) {
	case float32:
		return float64(x)
	case float64:
		return x
	}
	return dyv
}

func (f *fakeDevice) BalanceLoss(ids, x G.Value, experts, topK, seqs int, scale float64, score kernels.RouterScore) (G.Value, error) {
	return f.one("BalanceLoss", func() (G.Value, error) {
		T := ids.Shape()[0]
		idv := ids.Data().([]int32)
		var v float64
		var err error
		switch s := x.Data().(type) {
		case []float32:
			var y float32
			if score == 0 {
				y, err = kernels.BalanceLossForward(idv, s, T, topK, experts, seqs, scale)
			} else {
				y, err = kernels.RouterBalanceLossForward(idv, s, T, topK, experts, seqs, scale, score)
			}
			v = float64(y)
		case []float64:
			if score == 0 {
				v, err = kernels.BalanceLossForward(idv, s, T, topK, experts, seqs, scale)
			} else {
				v, err = kernels.RouterBalanceLossForward(idv, s, T, topK, experts, seqs, scale, score)
			}
		}
		if err != nil {
			return nil, err
		}
		return fakeScalar(x.Dtype(), v), nil
	})
}

func (f *fakeDevice) BalanceLossGrad(ids, x G.Value, dt tensor.Dtype, experts, topK, seqs int, scale float64, dy G.Value, dyv float64, score kernels.RouterScore) (G.Value, error) {
	return f.one("BalanceLossGrad", func() (G.Value, error) {
		T := ids.Shape()[0]
		idv := ids.Data().([]int32)
		g := fakeDy(dy, dyv)
		if dt == tensor.Float32 {
			out, ds := newDense[float32](T, experts)
			if score == 0 {
				return out, kernels.BalanceLossBackward(ds, idv, T, topK, experts, seqs, scale, g)
			}
			return out, kernels.RouterBalanceLossBackward(ds, idv, x.Data().([]float32), T, topK, experts, seqs, scale, g, score)
		}
		out, ds := newDense[float64](T, experts)
		if score == 0 {
			return out, kernels.BalanceLossBackward(ds, idv, T, topK, experts, seqs, scale, g)
		}
		return out, kernels.RouterBalanceLossBackward(ds, idv, x.Data().([]float64), T, topK, experts, seqs, scale, g, score)
	})
}

func (f *fakeDevice) ZLoss(logits G.Value, scale float64) (G.Value, error) {
	return f.one("ZLoss", func() (G.Value, error) {
		T, E := logits.Shape()[0], logits.Shape()[1]
		var v float64
		var err error
		switch x := logits.Data().(type) {
		case []float32:
			var y float32
			y, err = kernels.ZLossForward(x, T, E, scale)
			v = float64(y)
		case []float64:
			v, err = kernels.ZLossForward(x, T, E, scale)
		}
		if err != nil {
			return nil, err
		}
		return fakeScalar(logits.Dtype(), v), nil
	})
}

func (f *fakeDevice) ZLossGrad(logits G.Value, scale float64, dy G.Value, dyv float64) (G.Value, error) {
	return f.one("ZLossGrad", func() (G.Value, error) {
		T, E := logits.Shape()[0], logits.Shape()[1]
		g := fakeDy(dy, dyv)
		switch x := logits.Data().(type) {
		case []float32:
			out, dx := newDense[float32](T, E)
			return out, kernels.ZLossBackward(dx, x, T, E, scale, g)
		default:
			out, dx := newDense[float64](T, E)
			return out, kernels.ZLossBackward(dx, x.([]float64), T, E, scale, g)
		}
	})
}

// TestDeviceDispatchLosses runs BalanceLoss (one sequence and several, sharing the scores)
// and ZLoss forward and backward with every tensor on a (fake) device and the gradients
// seeded with host scalars, as G.Grad seeds a cost: each op goes to its device method, the
// losses come back as tensors of scalar shape, and the values equal the host run's bits.
func TestDeviceDispatchLosses(t *testing.T) {
	t.Parallel()
	const T, K, E = 12, 2, 5
	idv := lossIDs(T, K, E, 11)
	sv := randFloats(newRNG(12), T*E)
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		build := func() (*G.ExprGraph, []*G.Node) {
			g := G.NewGraph()
			ids := idsNode(g, "ids", T, K, idv)
			s := G.NewMatrix(g, dt, G.WithShape(T, E), G.WithName("s"), G.WithValue(denseOf(dt, sv, T, E)))
			l1 := must(BalanceLoss(ids, s, E, K, 1, 0.01))
			l2 := must(BalanceLoss(ids, s, E, K, 3, 0.02))
			l3 := must(ZLoss(s, 0.001))
			l4 := must(RouterBalanceLoss(ids, s, E, K, 1, 0.01, kernels.RouterSoftmax))
			l5 := must(RouterBalanceLoss(ids, s, E, K, 3, 0.02, kernels.RouterSigmoid))
			seeds := G.Nodes{lossConst(1, dt), lossConst(0.5, dt), lossConst(2, dt), lossConst(0.7, dt), lossConst(1.3, dt)}
			grads, err := G.Backpropagate(G.Nodes{l1, l2, l3, l4, l5}, seeds, G.Nodes{s})
			if err != nil {
				t.Fatal(err)
			}
			return g, []*G.Node{l1, l2, l3, l4, l5, grads[0]}
		}
		g, outs := build()
		want := runRead(t, g, outs...)

		f := newFakeDevice()
		g, outs = build()
		got := f.run(t, g, outs...)
		for i := range want {
			if !bitsEqual(got[i], want[i]) {
				t.Errorf("%v output %d (%v): device %v, host %v", dt, i, outs[i], got[i], want[i])
			}
		}
		for i := 0; i < 5; i++ {
			d, ok := got[i].(*tensor.Dense)
			if !ok || d.Shape().Dims() != 0 || d.Dtype() != dt {
				t.Errorf("%v loss %d on the device is %T %v, want a %v tensor of scalar shape", dt, i, got[i], got[i].Shape(), dt)
			}
		}
		for _, name := range []string{"BalanceLoss", "BalanceLossGrad", "ZLoss", "ZLossGrad"} {
			if f.calls[name] == 0 {
				t.Errorf("%v: device method %s was never called (calls %v)", dt, name, f.calls)
			}
		}
	}
}

// TestDeviceLossSeeds runs the gradient ops on device inputs with the output gradient on the
// device (a scalar-shaped tensor) and on the host, and checks the mixes that are errors.
func TestDeviceLossSeeds(t *testing.T) {
	t.Parallel()
	const T, K, E = 6, 2, 3
	f := newFakeDevice()
	ids := int32Dense(lossIDs(T, K, E, 1), T, K)
	s := denseOf(tensor.Float64, randFloats(newRNG(2), T*E), T, E)
	bg := balanceLossGradOp{f: balanceLossOp{e: E, k: K, seqs: 2, coeff: 0.5}}
	zg := zLossGradOp{coeff: 0.5}

	// Host everything: the reference.
	wantB, err := bg.Do(ids, s, G.NewF64(0.75))
	if err != nil {
		t.Fatal(err)
	}
	wantZ, err := zg.Do(s, G.NewF64(0.75))
	if err != nil {
		t.Fatal(err)
	}
	if f.calls["BalanceLossGrad"]+f.calls["ZLossGrad"] != 0 {
		t.Fatalf("host values went to the device: %v", f.calls)
	}
	// A device dy with host inputs is an error.
	dyDev := fakeScalar(tensor.Float64, 0.75)
	f.own(dyDev)
	if _, err := bg.Do(ids, s, dyDev); err == nil || !strings.Contains(err.Error(), "output gradient is on the device but the inputs are on the host") {
		t.Errorf("device dy, host inputs: %v", err)
	}
	f.own(ids)
	f.own(s)
	for _, dy := range []G.Value{G.NewF64(0.75), dyDev} {
		b, err := bg.Do(ids, s, dy)
		if err != nil {
			t.Fatalf("dy %T: %v", dy, err)
		}
		z, err := zg.Do(s, dy)
		if err != nil {
			t.Fatalf("dy %T: %v", dy, err)
		}
		if !f.Owns(b) || !f.Owns(z) || !bitsEqual(b, wantB) || !bitsEqual(z, wantZ) {
			t.Errorf("dy %T: device gradients %v %v, want %v %v on the device", dy, b, z, wantB, wantZ)
		}
	}
	// dy on another device than the inputs: an error (it went to the inputs' backend, which
	// does not own it).
	dyOther := fakeScalar(tensor.Float64, 0.75)
	newFakeDevice().own(dyOther)
	calls := f.calls["BalanceLossGrad"] + f.calls["ZLossGrad"]
	_, err = bg.Do(ids, s, dyOther)
	wantErr(t, "BalanceLossGrad, dy on another device", err, "output gradient is on another device than the inputs")
	_, err = zg.Do(s, dyOther)
	wantErr(t, "ZLossGrad, dy on another device", err, "output gradient is on another device than the inputs")
	if n := f.calls["BalanceLossGrad"] + f.calls["ZLossGrad"]; n != calls {
		t.Errorf("a dy of another device went to the device methods (%d calls, was %d)", n, calls)
	}
	// ids on the host, scores on the device: an error.
	hostIDs := int32Dense(lossIDs(T, K, E, 1), T, K)
	if _, err := (balanceLossOp{e: E, k: K, seqs: 1, coeff: 1}).Do(hostIDs, s); err == nil || !strings.Contains(err.Error(), "mix device values") {
		t.Errorf("mixed inputs: %v", err)
	}
}
