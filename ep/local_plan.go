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
)

const localPlanName = "ep.NewPlan (local plan)"

// localPlanOp extracts the local plan from the expert-parallel plan: (ep plan [epPlanLen] in
// host memory, send plan) -> local plan [PlanLen(gl)], placed where the send plan lives (on the
// device when the layer runs there, for the experts' ops). The send plan is an input only to
// tell where that is; no data of it is read.
type localPlanOp struct {
	opkit.Base
	opkit.NoGrad
	gs, gl kernels.Geometry
}

var (
	_ G.Op   = localPlanOp{}
	_ G.SDOp = localPlanOp{}
	_ G.ADOp = localPlanOp{}
)

func (o localPlanOp) Arity() int { return 2 }

func (o localPlanOp) Type() hm.Type {
	v := G.TensorType{Dims: 1, Of: tensor.Int32}
	return hm.NewFnType(v, G.TensorType{Dims: 1, Of: tensor.Int32}, G.TensorType{Dims: 1, Of: tensor.Int32})
}

func (o localPlanOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	ss, err := shapesOf(localPlanName, ds, 2)
	if err != nil {
		return nil, err
	}
	if err := checkShape(localPlanName, "plan", ss[0], epPlanLen(o.gs, o.gl)); err != nil {
		return nil, err
	}
	if err := checkShape(localPlanName, "send plan", ss[1], o.gs.PlanLen()); err != nil {
		return nil, err
	}
	return tensor.Shape{o.gl.PlanLen()}, nil
}

func (o localPlanOp) String() string {
	return fmt.Sprintf("ep.LocalPlan{send %s; local %s}", opkit.GeometryKey(o.gs), opkit.GeometryKey(o.gl))
}
func (o localPlanOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, o) }
func (o localPlanOp) Hashcode() uint32      { return opkit.Hashcode(o) }

// Do copies the local part out of the ep plan (and uploads it if the send plan is on the
// device: a copy to the device, no host sync).
func (o localPlanOp) Do(vs ...G.Value) (G.Value, error) {
	const name = localPlanName
	if err := opkit.CheckArity(name, vs, 2); err != nil {
		return nil, err
	}
	_, _, lp, err := epPlanView(name, o.gs, o.gl, vs[0])
	if err != nil {
		return nil, err
	}
	flat := make([]int32, o.gl.PlanLen())
	copy(flat, lp.Counts)
	copy(flat[o.gl.E:], lp.Offsets)
	copy(flat[2*o.gl.E+1:], lp.RowOf)
	copy(flat[2*o.gl.E+1+len(lp.RowOf):], lp.TokenOf)
	out := tensor.New(tensor.WithShape(len(flat)), tensor.WithBacking(flat))
	if dev := device.Of(vs[1]); dev != nil {
		v, err := dev.Upload(vs[1], out)
		return v, opkit.Wrap(name, err)
	}
	return out, nil
}
