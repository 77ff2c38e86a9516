package ep

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
	"github.com/gomoe/gomoe/op"
)

// Dispatch sends this rank's tokens x [T,H] to the ranks of their experts and returns the rows
// this rank's experts receive, xr [R',H] in the layout of p.Local() (expert-major over the local
// experts, rows from rank 0 first, segments aligned to A, pad and unused rows zero; R' is
// p.LocalGeometry.Rows(), see the function LocalGeometry).
//
// It is op.Permute with the send plan, which writes the tokens straight into the per-rank send
// layout, followed by the exchange: every rank sends each other rank one block per expert of
// that rank, and the blocks land in the receivers' expert-major layout (the NCCL communicator
// sends them as one message per peer into staging memory and copies them into place). Its
// gradient is
// the reverse exchange followed by the permute backward: dx[t] = Σ_k dxr[row of (t,k)].
//
// Dispatch is a collective: every rank must run it, in the same order relative to the other
// collectives.
func Dispatch(x *G.Node, p *Plan) (*G.Node, error) {
	const name = dispatchName
	if err := p.check(name); err != nil {
		return nil, err
	}
	if x == nil {
		return nil, opkit.Errorf(name, "x is nil")
	}
	// Guarded: a permute that fails on this rank (its memory check, say) aborts the
	// communicator, so the other ranks, waiting in the exchange, fail too.
	xs, err := Guard(p.Comm, func(in ...*G.Node) (*G.Node, error) {
		return op.Permute(in[0], &op.Plan{Node: in[1], Geometry: p.Send.Geometry})
	}, x, p.Send.Node)
	if err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return DispatchRows(xs, p)
}

// DispatchRows is the exchange half of Dispatch: xs [Rs,H] in the send layout of p.Send (for
// example from op.Permute with p.Send) -> xr [R',H] in the layout of p.Local().
func DispatchRows(xs *G.Node, p *Plan) (*G.Node, error) {
	const name = dispatchName
	if err := p.check(name); err != nil {
		return nil, err
	}
	if err := checkRowsNode(name, "xs", xs, p.Send.Rows()); err != nil {
		return nil, err
	}
	return opkit.ApplyOp(name, dispatchOp{exchange: exchange{gs: p.Send.Geometry, gl: p.LocalGeometry, c: p.Comm}}, xs, p.Node)
}

const (
	dispatchName = "ep.Dispatch"
	combineName  = "ep.Combine"
)

// check validates a plan passed to a node function.
func (p *Plan) check(name string) error {
	if p == nil || p.Send == nil || p.Send.Node == nil || p.Node == nil || p.Comm == nil {
		return opkit.Errorf(name, "plan is nil or incomplete; build it with ep.NewPlan")
	}
	return nil
}

// checkRowsNode checks a float matrix node [rows, H] of the plan's graph.
func checkRowsNode(name, what string, n *G.Node, rows int) error {
	dt, err := opkit.NodeDtype(name, what, n)
	if err != nil {
		return err
	}
	if dt != tensor.Float32 && dt != tensor.Float64 {
		return opkit.Errorf(name, "%s has dtype %v, want float32 or float64", what, dt)
	}
	return checkShape(name, what, n.Shape(), rows, -1)
}

// exchange is the state both exchange ops share: the send and local geometries and the
// communicator. forward moves send-layout rows to the local layout (dispatch); backward moves
// local-layout rows back to the send layout (combine). Each is the other's adjoint: both copy
// every real row to its partner row and leave the other rows zero.
type exchange struct {
	gs, gl kernels.Geometry
	c      Communicator
}

func (e exchange) key(kind string) string {
	return fmt.Sprintf("%s{send %s; local %s; %s}", kind, opkit.GeometryKey(e.gs), opkit.GeometryKey(e.gl), commKey(e.c))
}

// rows is the static row count of an exchange's input and output.
func (e exchange) rows(forward bool) (in, out int) {
	if forward {
		return e.gs.Rows(), e.gl.Rows()
	}
	return e.gl.Rows(), e.gs.Rows()
}

func exchangeType() hm.Type {
	m := G.TensorType{Dims: 2, Of: hm.TypeVariable('a')}
	return hm.NewFnType(m, G.TensorType{Dims: 1, Of: tensor.Int32}, m)
}

func (e exchange) inferShape(name string, forward bool, ds []G.DimSizer) (tensor.Shape, error) {
	ss, err := shapesOf(name, ds, 2)
	if err != nil {
		return nil, err
	}
	in, out := e.rows(forward)
	if err := checkShape(name, "rows", ss[0], in, -1); err != nil {
		return nil, err
	}
	if err := checkShape(name, "plan", ss[1], epPlanLen(e.gs, e.gl)); err != nil {
		return nil, err
	}
	return tensor.Shape{out, ss[0][1]}, nil
}

// run moves the rows of v (forward: send layout -> local layout; else the reverse). Any error
// aborts the communicator.
func (e exchange) run(name string, forward bool, v, plan G.Value) (G.Value, error) {
	out, err := e.runNoAbort(name, forward, v, plan)
	if err != nil {
		e.c.Abort(err)
	}
	return out, err
}

func (e exchange) runNoAbort(name string, forward bool, v, plan G.Value) (G.Value, error) {
	in, outRows := e.rows(forward)
	dev := device.Of(v)
	var src Buffer
	var err error
	if dev != nil {
		if err := checkShape(name, "rows", v.Shape(), in, -1); err != nil {
			return nil, err
		}
		src, err = deviceBuffer(v)
	} else {
		src, err = hostRows(name, "rows", v, in)
	}
	if err != nil {
		return nil, opkit.Wrap(name, err)
	}
	counts, offsets, lp, err := epPlanView(name, e.gs, e.gl, plan)
	if err != nil {
		return nil, err
	}
	n := e.c.Size()
	if e.gl.E*n != e.gs.E {
		return nil, opkit.Errorf(name, "local plan has %d experts, but %d ranks × %d != E=%d", e.gl.E, n, e.gl.E, e.gs.E)
	}
	sends := sendBlocks(counts, offsets, n, e.gl.E)
	recvs, err := recvBlocks(name, lp, n, e.gs.T)
	if err != nil {
		return nil, err
	}
	var out G.Value
	var dst Buffer
	if dev != nil {
		if out, err = dev.StepZeros(v, v.Dtype(), outRows, src.Width); err != nil {
			return nil, opkit.Wrap(name, err)
		}
		if dst, err = deviceBuffer(out); err != nil {
			return nil, opkit.Wrap(name, err)
		}
	} else {
		// The received rows (the local plan's, with its alignment padding) may be far more
		// than the rows sent: check that they fit, as every op checks an output larger than
		// its inputs (a failed allocation is fatal, not an error).
		if err := opkit.CheckAlloc(name, int(v.Dtype().Size()), outRows, src.Width); err != nil {
			return nil, err
		}
		out, dst = zeros(v.Dtype(), outRows, src.Width)
	}
	if forward {
		err = e.c.AllToAll(src, dst, sends, recvs)
	} else {
		err = e.c.AllToAll(src, dst, recvs, sends)
	}
	if err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return out, nil
}

// diff is the DoDiff of an exchange op: the adjoint exchange of the output's gradient, added
// into the rows input's gradient.
func (e exchange) diff(name string, forward bool, inputs G.Nodes, output *G.Node) (err error) {
	// Every error aborts the group, as the forward's do: one before the collective would leave
	// the other ranks waiting in it until the timeout. (Abort may be called more than once.)
	defer func() {
		if err != nil {
			e.c.Abort(err)
		}
	}()
	if len(inputs) != 2 {
		return opkit.Errorf(name, "DoDiff got %d inputs, want 2", len(inputs))
	}
	if inputs[0] == nil || inputs[1] == nil || output == nil {
		return opkit.Errorf(name, "DoDiff got a nil node")
	}
	gy, err := output.Grad()
	if err != nil {
		return opkit.Wrap(name, err)
	}
	d, err := e.run(name, !forward, gy, inputs[1].Value())
	if err != nil {
		return err
	}
	gx, err := inputs[0].Grad()
	if err != nil {
		return opkit.Wrap(name, err)
	}
	return addInto(name, gx, d)
}

// addInto adds src into dst (dst += src), the contract of DoDiff.
func addInto(name string, dst, src G.Value) error {
	if dst.Dtype() != src.Dtype() || !dst.Shape().Eq(src.Shape()) {
		return opkit.Errorf(name, "gradient has dtype %v shape %v, the update has %v %v", dst.Dtype(), opkit.ShapeString(dst.Shape()), src.Dtype(), opkit.ShapeString(src.Shape()))
	}
	if dev := device.Of(dst, src); dev != nil {
		return opkit.Wrap(name, dev.Add(dst, src))
	}
	d, ok := dst.(*tensor.Dense)
	if !ok || d.RequiresIterator() {
		return opkit.Errorf(name, "gradient is a %T view or non-dense value", dst)
	}
	s, err := opkit.HostDense(name, "update", src)
	if err != nil {
		return err
	}
	switch dd := d.Data().(type) {
	case []float32:
		for i, v := range s.Data().([]float32) {
			dd[i] += v
		}
	case []float64:
		for i, v := range s.Data().([]float64) {
			dd[i] += v
		}
	default:
		return opkit.Errorf(name, "gradient holds %T, want float32 or float64", d.Data())
	}
	return nil
}

// dispatchOp is the exchange of Dispatch: (xs [Rs,H], ep plan) -> xr [R',H].
type dispatchOp struct {
	opkit.Base
	exchange
}

var (
	_ G.Op   = dispatchOp{}
	_ G.SDOp = dispatchOp{}
	_ G.ADOp = dispatchOp{}
)

func (o dispatchOp) Arity() int            { return 2 }
func (o dispatchOp) Type() hm.Type         { return exchangeType() }
func (o dispatchOp) String() string        { return o.key(dispatchName) }
func (o dispatchOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, o) }
func (o dispatchOp) Hashcode() uint32      { return opkit.Hashcode(o) }

func (o dispatchOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	return o.inferShape(dispatchName, true, ds)
}

// Do is a collective: the forward exchange.
func (o dispatchOp) Do(vs ...G.Value) (G.Value, error) {
	if err := opkit.CheckArity(dispatchName, vs, 2); err != nil {
		o.c.Abort(err)
		return nil, err
	}
	return o.run(dispatchName, true, vs[0], vs[1])
}

// DiffWRT: the rows yes, the plan no.
func (o dispatchOp) DiffWRT(n int) []bool { return []bool{true, false} }

// SymDiff builds the reverse exchange of the gradient.
func (o dispatchOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 2 {
		return nil, opkit.Errorf(dispatchName, "SymDiff got %d inputs, want 2", len(inputs))
	}
	d, err := opkit.ApplyOp(combineName, combineOp(o), grad, inputs[1])
	if err != nil {
		return nil, err
	}
	return G.Nodes{d, nil}, nil
}

// DoDiff is a collective: it adds the reverse exchange of the output's gradient into xs's.
func (o dispatchOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	return o.diff(dispatchName, true, inputs, output)
}
