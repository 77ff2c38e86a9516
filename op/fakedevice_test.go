package op

import (
	"fmt"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// fakeDevice is a device backend for tests: it "owns" the tensors whose engine is its
// fakeEngine (those it was told about with own or made, and every value of a graph run on
// it with run), and runs the host kernels on them, so that the dispatch in every op's Do can be
// tested without a GPU. The ops find it as they find a real device, with device.Of (the
// values' engine is a device.BackendEngine): nothing global is swapped, so tests with fakes
// run in parallel. It embeds a nil device.Backend for the methods op's ops never call (the
// optimizer and expert-parallel ones).
type fakeDevice struct {
	device.Backend
	eng   *fakeEngine
	off   bool // running the host ops: the fake owns nothing
	calls map[string]int
}

// fakeEngine is the fake device's tensor engine: Gorgonia's standard engine that names its
// backend.
type fakeEngine struct {
	tensor.StdEng
	f *fakeDevice
}

func (e *fakeEngine) Backend() device.Backend { return e.f }

func newFakeDevice() *fakeDevice {
	f := &fakeDevice{calls: map[string]int{}}
	f.eng = &fakeEngine{f: f}
	return f
}

func (f *fakeDevice) Owns(v G.Value) bool {
	d, ok := v.(*tensor.Dense)
	return ok && d != nil && !f.off && d.Engine() == tensor.Engine(f.eng)
}

// own makes v a value of the fake device.
func (f *fakeDevice) own(v G.Value) {
	if d, ok := v.(*tensor.Dense); ok {
		tensor.WithEngine(f.eng)(d)
	}
}

// run runs the graph on a tape machine with the fake's engine, which makes every value of the
// graph a fake device value (Gorgonia sets the machine's engine on every node's value), and
// returns the nodes' values.
func (f *fakeDevice) run(t testing.TB, gr *G.ExprGraph, nodes ...*G.Node) []G.Value {
	t.Helper()
	return runReadWith(t, gr, []G.VMOpt{G.WithEngine(f.eng)}, nodes...)
}

// host runs fn with the fake owning nothing (so the ops run their host kernels) and marks its
// results as device values.
func (f *fakeDevice) host(name string, fn func() (G.Value, G.Value, error)) (G.Value, G.Value, error) {
	f.calls[name]++
	f.off = true
	defer func() { f.off = false }()
	a, b, err := fn()
	if err != nil {
		return nil, nil, err
	}
	f.own(a)
	f.own(b)
	return a, b, nil
}

func (f *fakeDevice) one(name string, fn func() (G.Value, error)) (G.Value, error) {
	v, _, err := f.host(name, func() (G.Value, G.Value, error) { v, err := fn(); return v, nil, err })
	return v, err
}

func (f *fakeDevice) BuildPlan(g kernels.Geometry, ids, probs G.Value) (G.Value, error) {
	return f.one("BuildPlan", func() (G.Value, error) {
		if probs == nil {
			return planOp{g: g}.Do(ids)
		}
		return planOp{g: g, withProbs: true}.Do(ids, probs)
	})
}

func (f *fakeDevice) PermuteForward(g kernels.Geometry, x, plan G.Value) (G.Value, error) {
	return f.one("PermuteForward", func() (G.Value, error) { return permuteForward(g, x, plan, nil) })
}

func (f *fakeDevice) PermuteBackward(g kernels.Geometry, dxp, plan G.Value) (G.Value, error) {
	return f.one("PermuteBackward", func() (G.Value, error) { return permuteBackward(g, dxp, plan, nil) })
}

func (f *fakeDevice) PermuteProbsForward(g kernels.Geometry, probs, plan G.Value) (G.Value, error) {
	return f.one("PermuteProbsForward", func() (G.Value, error) { return permuteProbsForward(g, probs, plan, nil) })
}

func (f *fakeDevice) PermuteProbsBackward(g kernels.Geometry, dpp, plan G.Value) (G.Value, error) {
	return f.one("PermuteProbsBackward", func() (G.Value, error) { return permuteProbsBackward(g, dpp, plan, nil) })
}

func (f *fakeDevice) UnpermuteForward(g kernels.Geometry, yp, probs, plan G.Value) (G.Value, error) {
	return f.one("UnpermuteForward", func() (G.Value, error) { return unpermuteForward(g, yp, probs, plan, nil) })
}

func (f *fakeDevice) UnpermuteBackward(g kernels.Geometry, dy, yp, probs, plan G.Value, wantRows, wantProbs bool) (G.Value, G.Value, error) {
	return f.host("UnpermuteBackward", func() (G.Value, G.Value, error) {
		return unpermuteBackward("fake", g, dy, yp, probs, plan, wantRows, wantProbs, nil, nil)
	})
}

// TestDeviceDispatch runs every op with all inputs on a (fake) device, checks that each went
// to the device method and gave the host result, and that a mix of host and device inputs is
// an error.
func TestDeviceDispatch(t *testing.T) {
	t.Parallel()
	const H = 4
	g := kernels.Geometry{E: 3, A: 2, Mode: kernels.Capacity, C: 2, Drop: kernels.DropByProb}
	build := func() (*G.ExprGraph, []*G.Node, []*G.Node) {
		gr := G.NewGraph()
		rng := newRNG(9)
		dt := tensor.Float32
		ids := idsNode(gr, "ids", 4, 2, okIDs)
		probs := G.NewMatrix(gr, dt, G.WithShape(4, 2), G.WithName("probs"), G.WithValue(denseOf(dt, randProbs(rng, 8), 4, 2)))
		x := G.NewMatrix(gr, dt, G.WithShape(4, H), G.WithName("x"), G.WithValue(denseOf(dt, randFloats(rng, 4*H), 4, H)))
		p := must2(NewPlan(ids, probs, g))
		R := p.Rows()
		dxp := G.NewMatrix(gr, dt, G.WithShape(R, H), G.WithName("dxp"), G.WithValue(denseOf(dt, randFloats(rng, R*H), R, H)))
		dpp := G.NewVector(gr, dt, G.WithShape(R), G.WithName("dpp"), G.WithValue(denseOf(dt, randFloats(rng, R), R)))
		dy := G.NewMatrix(gr, dt, G.WithShape(4, H), G.WithName("dy"), G.WithValue(denseOf(dt, randFloats(rng, 4*H), 4, H)))
		xp := must(Permute(x, p))
		outs := []*G.Node{
			p.Node, xp,
			must(Unpermute(xp, probs, p)),
			must(Unpermute(xp, nil, p)),
			must(PermuteProbs(probs, p)),
			must(opkit.ApplyOp(permuteGradName, permuteGradOp{g: p.Geometry}, dxp, p.Node)),
			must(opkit.ApplyOp(permuteProbsGradName, permuteProbsGradOp{g: p.Geometry}, dpp, p.Node)),
			must(opkit.ApplyOp(unpermuteGradRowsName, unpermuteGradRowsOp{g: p.Geometry, weighted: true}, dy, probs, p.Node)),
			must(opkit.ApplyOp(unpermuteGradProbsName, unpermuteGradProbsOp{g: p.Geometry, pdt: dt}, dy, xp, p.Node)),
		}
		return gr, []*G.Node{ids, probs, x, dxp, dpp, dy}, outs
	}
	gr, _, outs := build()
	want := runRead(t, gr, outs...)

	f := newFakeDevice()
	gr, _, outs = build()
	got := f.run(t, gr, outs...)
	for i := range want {
		if !bitsEqual(got[i], want[i]) {
			t.Errorf("output %d (%v): device %v, host %v", i, outs[i], got[i], want[i])
		}
	}
	for _, name := range []string{"BuildPlan", "PermuteForward", "PermuteBackward", "PermuteProbsForward", "PermuteProbsBackward", "UnpermuteForward", "UnpermuteBackward"} {
		if f.calls[name] == 0 {
			t.Errorf("device method %s was never called (calls %v)", name, f.calls)
		}
	}

	// x on the device, the plan on the host.
	gr, ins, outs := build()
	plan := runRead(t, gr, outs[0])[0]
	x := ins[2].Value().(*tensor.Dense).Clone().(*tensor.Dense)
	f.own(x)
	_, err := outs[1].Op().Do(x, plan)
	wantErr(t, "mixed inputs", err, "Permute", "inputs mix device values (1) and host values (1)")
}

// TestWriteBackPlaces: WriteBack copies a host tensor into a host or (fake) device value, and
// refuses a source that is a device value, leaving the destination as it was: into a host
// destination it was copied on the host, reading device memory from the host.
func TestWriteBackPlaces(t *testing.T) {
	t.Parallel()
	f := newFakeDevice()
	src := []float64{1, 2, 3, 4}
	for _, dev := range []bool{false, true} {
		dst := denseOf(tensor.Float64, []float64{9, 9, 9, 9}, 2, 2)
		if dev {
			f.own(dst)
		}
		writes := f.calls["Write"]
		if err := WriteBack(dst, denseOf(tensor.Float64, src, 4)); err != nil {
			t.Fatalf("device dst %v: %v", dev, err)
		}
		if got := dst.Float64s(); fmt.Sprint(got) != fmt.Sprint(src) {
			t.Errorf("device dst %v: WriteBack gave %v, want %v", dev, got, src)
		}
		if n := f.calls["Write"] - writes; n != map[bool]int{false: 0, true: 1}[dev] {
			t.Errorf("device dst %v: %d device writes", dev, n)
		}
		for _, other := range []*fakeDevice{f, newFakeDevice()} {
			h := denseOf(tensor.Float64, []float64{5, 6, 7, 8}, 2, 2)
			other.own(h)
			err := WriteBack(dst, h)
			wantErr(t, fmt.Sprintf("device dst %v, device source", dev), err, "WriteBack: the source is a device value")
			if got := dst.Float64s(); fmt.Sprint(got) != fmt.Sprint(src) {
				t.Errorf("device dst %v: a refused WriteBack changed the destination to %v", dev, got)
			}
		}
	}
}

// TestHostOnlyOpsOnDevice: RowLogSumExp and ExpertLoad have no CUDA twin (package doc): on a
// device value they fail with an error that says so, and JitterNoise draws its noise on the
// host and uploads it.
func TestHostOnlyOpsOnDevice(t *testing.T) {
	f := newFakeDevice()
	x := tensor.New(tensor.WithShape(2, 3), tensor.WithBacking([]float64{1, 2, 3, 4, 5, 6}))
	ids := tensor.New(tensor.WithShape(2, 1), tensor.WithBacking([]int32{0, 2}))
	f.own(x)
	f.own(ids)
	for _, c := range []struct {
		op G.Op
		in []G.Value
	}{{lseOp{}, []G.Value{x}}, {expertLoadOp{e: 3, seqs: 1, dt: tensor.Float64}, []G.Value{ids}}} {
		if _, err := c.op.Do(c.in...); err == nil || !strings.Contains(err.Error(), "has no CUDA kernel") {
			t.Errorf("%v on a device value: %v, want the no-CUDA-kernel error", c.op, err)
		}
	}
	v, err := (&jitterNoiseOp{eps: 0.1, seed: 1, dims: 2}).Do(x)
	if err != nil || !f.Owns(v) || f.calls["Upload"] != 1 {
		t.Errorf("JitterNoise on a device value: %v (device value %v, uploads %d), want the host noise uploaded", err, err == nil && f.Owns(v), f.calls["Upload"])
	}
}
