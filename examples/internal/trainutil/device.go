package trainutil

import (
	"fmt"
	"strconv"
	"strings"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/hostmem"
	"github.com/gomoe/gomoe/train"
)

// Device is where an example trains: the CPU, or a GPU through gomoe's device
// engine (package device) when the binary is built with -tags gomoecuda. The
// examples use one code path for both: Bind the weights, feed the inputs through
// Feeds, make the tape machine with VMOpts, and copy what they read to the host
// with Host.
type Device struct {
	name string
	gpu  gpuEngine // nil on the CPU
}

// gpuEngine is the part of *device.Engine the examples use.
type gpuEngine interface {
	tensor.Engine
	Bind(nodes ...*G.Node) error
	NewTensor(dt tensor.Dtype, shape ...int) (*tensor.Dense, error)
	Upload(dst, src tensor.Tensor) error
	CopyOut(t tensor.Tensor) (*tensor.Dense, error)
	Owns(t tensor.Tensor) bool
	EndStep() int
	Status() error
	Close() error
}

// openGPU opens GPU ordinal; the gomoecuda build sets it (device_cuda.go).
var openGPU func(ordinal int) (gpuEngine, error)

// OpenDevice returns the device named name: "cpu", or "cuda" / "cuda:N" for
// GPU N (0 by default), which needs a binary built with -tags gomoecuda.
func OpenDevice(name string) (*Device, error) {
	switch {
	case name == "cpu":
		return &Device{name: "cpu"}, nil
	case name == "cuda" || strings.HasPrefix(name, "cuda:"):
		ordinal := 0
		if s, ok := strings.CutPrefix(name, "cuda:"); ok {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("device %q: want cuda:N with a GPU number N >= 0", name)
			}
			ordinal = n
		}
		if openGPU == nil {
			return nil, fmt.Errorf("device %q: this binary has no GPU support (build it with -tags gomoecuda)", name)
		}
		e, err := openGPU(ordinal)
		if err != nil {
			return nil, fmt.Errorf("device %q: %w", name, err)
		}
		return &Device{name: name, gpu: e}, nil
	}
	return nil, fmt.Errorf("unknown device %q (want cpu or cuda)", name)
}

// String is the device's name.
func (d *Device) String() string { return d.name }

// GPU reports whether d is a GPU.
func (d *Device) GPU() bool { return d.gpu != nil }

// Bind moves the values of nodes (the weights) to the device; on the CPU it
// does nothing. Call it before making the tape machine.
func (d *Device) Bind(nodes ...*G.Node) error {
	if d.gpu == nil {
		return nil
	}
	return d.gpu.Bind(nodes...)
}

// Learn adds to cost's graph the gradients of cost with respect to learn (the weights) and
// binds learn to d. Call it on the training graph before making its tape machine. On the CPU
// it first checks that training fits in the memory this process may use (TrainingBytes): a
// model too large for it would end the process with a fatal out-of-memory error, or be
// killed by its container, partway through the first step.
func (d *Device) Learn(cost *G.Node, learn G.Nodes) error {
	if _, err := G.Grad(cost, learn...); err != nil {
		return fmt.Errorf("gradients: %w", err)
	}
	if d.gpu == nil {
		if err := hostmem.Check("training this model (every node's value, the gradients and Adam's two moments of each weight)", TrainingBytes(cost.Graph(), learn)); err != nil {
			return err
		}
	}
	return d.Bind(learn...)
}

// TrainingBytes is a lower bound on the host memory of training g with Adam: a value for
// every node of g (the forward values and, once G.Grad has added them, the gradients; a tape
// machine keeps them all through a step) and two moments for each weight in learn, in floating
// point so that no product wraps around. The examples' peak resident memory measured 1.3–1.9
// times this (charlm at three sizes, 2026-12-07): the Go collector lets the heap grow past
// the live values, and the data, the evaluation graph and the solver's scratch come on top. So
// a model past the limit by this count surely cannot train, and one under it still may not.
func TrainingBytes(g *G.ExprGraph, learn G.Nodes) float64 {
	size := func(n *G.Node) float64 {
		var dt tensor.Dtype
		switch t := n.Type().(type) {
		case tensor.Dtype:
			dt = t
		case G.TensorType:
			dt, _ = t.Of.(tensor.Dtype)
		}
		if dt.Type == nil {
			return 0 // not a value (a type variable): nothing to allocate
		}
		b := float64(dt.Size())
		for _, s := range n.Shape() {
			b *= float64(s)
		}
		return b
	}
	var total float64
	for _, n := range g.AllNodes() {
		total += size(n)
	}
	for _, n := range learn {
		total += 2 * size(n)
	}
	return total
}

// VMOpts returns the tape machine options that run a graph on d.
func (d *Device) VMOpts() []G.VMOpt {
	if d.gpu == nil {
		return nil
	}
	return []G.VMOpt{G.WithEngine(d.gpu)}
}

// Host returns v as a host tensor, copying it from the GPU if it lives there.
func (d *Device) Host(v G.Value) (*tensor.Dense, error) {
	t, ok := v.(*tensor.Dense)
	if !ok {
		return nil, fmt.Errorf("value is a %T, want a *tensor.Dense", v)
	}
	if d.gpu != nil && d.gpu.Owns(t) {
		return d.gpu.CopyOut(t)
	}
	return t, nil
}

// Logits runs vm once (a forward-only evaluation graph) and returns the value of the node
// logits as host float32s; then it resets vm and ends the step (EndStep), also on an error.
func (d *Device) Logits(vm G.VM, logits *G.Node) ([]float32, error) {
	defer d.EndStep()
	defer vm.Reset()
	if err := vm.RunAll(); err != nil {
		return nil, err
	}
	t, err := d.Host(logits.Value())
	if err != nil {
		return nil, err
	}
	return t.Data().([]float32), nil
}

// TrackLoad adds the tokens per expert of a step (the value of counts, a block's
// BlockOut.Counts) to lt, out of slots routing slots (tokens·K), as train.LoadTracker.Add.
func (d *Device) TrackLoad(lt *train.LoadTracker, counts *G.Node, slots int) error {
	c, err := d.Host(counts.Value())
	if err != nil {
		return err
	}
	return lt.Add(c.Data().([]int32), slots)
}

// EndStep recycles the GPU memory of a run that did not go through
// train.Step (an evaluation batch) once its outputs have been read.
func (d *Device) EndStep() {
	if d.gpu != nil {
		d.gpu.EndStep()
	}
}

// Status waits for the GPU and reports what its kernels flagged (nil on the CPU).
func (d *Device) Status() error {
	if d.gpu == nil {
		return nil
	}
	return d.gpu.Status()
}

// Close releases the GPU.
func (d *Device) Close() error {
	if d.gpu == nil {
		return nil
	}
	return d.gpu.Close()
}

// Feed is an input node of a graph with a host buffer that the training loop
// refills every step: on the CPU the node holds the host tensor itself; on the
// GPU a device tensor made once, refreshed from the host tensor by Load (no
// allocation per step).
type Feed struct {
	d    *Device
	node *G.Node
	host *tensor.Dense
	dev  *tensor.Dense
}

// Feed binds node to host (on the GPU, to a device copy of it). Call it before
// making the tape machine.
func (d *Device) Feed(node *G.Node, host *tensor.Dense) (*Feed, error) {
	f := &Feed{d: d, node: node, host: host}
	var v G.Value = host
	if d.gpu != nil {
		t, err := d.gpu.NewTensor(host.Dtype(), host.Shape().Clone()...)
		if err != nil {
			return nil, fmt.Errorf("input %s: %w", node.Name(), err)
		}
		f.dev, v = t, t
	}
	if err := G.Let(node, v); err != nil {
		return nil, fmt.Errorf("input %s: %w", node.Name(), err)
	}
	return f, nil
}

// Load makes the node see the host tensor's current contents.
func (f *Feed) Load() error {
	if f.dev == nil {
		return G.Let(f.node, f.host)
	}
	if err := f.d.gpu.Upload(f.dev, f.host); err != nil {
		return fmt.Errorf("input %s: %w", f.node.Name(), err)
	}
	return nil
}
