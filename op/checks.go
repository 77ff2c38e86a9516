package op

import (
	"fmt"
	"reflect"
	"strings"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// The checks that the ops' node functions, InferShape and Do share: shapes (with the wanted
// sizes named in the error), dtypes, graph membership, and a value's dtype and shape from its
// metadata alone (safe on device values). What package ep shares too (errors, hashes, node
// building, arity and host-value checks) is in internal/opkit.

// shapeOf returns the tensor.Shape of a DimSizer (Gorgonia passes a tensor.Shape for every
// ordinary node).
func shapeOf(name, what string, d G.DimSizer) (tensor.Shape, error) {
	s, ok := d.(tensor.Shape)
	if !ok {
		return nil, opkit.Errorf(name, "%s: shape is a %T, want a tensor.Shape", what, d)
	}
	return s, nil
}

// shapesOf checks that ds holds len(whats) shapes and returns them.
func shapesOf(name string, ds []G.DimSizer, whats ...string) ([]tensor.Shape, error) {
	if len(ds) != len(whats) {
		return nil, opkit.Errorf(name, "got %d input shapes, want %d (%s)", len(ds), len(whats), strings.Join(whats, ", "))
	}
	out := make([]tensor.Shape, len(ds))
	for i, d := range ds {
		s, err := shapeOf(name, whats[i], d)
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

// dim is a wanted dimension for checkShape: a size (n >= 0) or any size >= 1 (n < 0).
type dim struct {
	label string
	n     int
}

// checkShape checks that s has len(want) dims of the wanted sizes. The error shows the wanted
// shape with its labels, e.g. "x has shape (5, 3), want (T=4, H)".
func checkShape(name, what string, s tensor.Shape, want ...dim) error {
	ok := len(s) == len(want)
	for i := 0; ok && i < len(s); i++ {
		if want[i].n >= 0 {
			ok = s[i] == want[i].n
		} else {
			ok = s[i] >= 1
		}
	}
	if ok {
		return nil
	}
	parts := make([]string, len(want))
	for i, w := range want {
		switch {
		case w.n >= 0 && w.label != "":
			parts[i] = fmt.Sprintf("%s=%d", w.label, w.n)
		case w.n >= 0:
			parts[i] = fmt.Sprint(w.n)
		default:
			parts[i] = w.label + ">=1"
		}
	}
	return opkit.Errorf(name, "%s has shape %v, want (%s)", what, opkit.ShapeString(s), strings.Join(parts, ", "))
}

// isFloat reports whether dt is a data dtype the CPU kernels support.
func isFloat(dt tensor.Dtype) bool { return dt == tensor.Float32 || dt == tensor.Float64 }

// wantFloat checks that dt is float32 or float64, for node functions that prefix the error
// with their own name.
func wantFloat(dt tensor.Dtype) error {
	if !isFloat(dt) {
		return fmt.Errorf("dtype %v, want float32 or float64", dt)
	}
	return nil
}

// checkFloat checks that dt is float32 or float64.
func checkFloat(name, what string, dt tensor.Dtype) error {
	if !isFloat(dt) {
		return opkit.Errorf(name, "%s has dtype %v, want float32 or float64", what, dt)
	}
	return nil
}

// isData reports whether dt is a data dtype of permute and unpermute: float32, float64 or
// bfloat16 (which the CPU path widens to float32 and rounds back once; see bf16.go).
func isData(dt tensor.Dtype) bool { return isFloat(dt) || dt == bfloat16.Dtype }

// checkData checks that dt is a data dtype of permute and unpermute.
func checkData(name, what string, dt tensor.Dtype) error {
	if !isData(dt) {
		return opkit.Errorf(name, "%s has dtype %v, want float32 or float64 or bfloat16", what, dt)
	}
	return nil
}

// probsDtypeFor is the probs dtype that goes with data of dtype data: the data dtype itself,
// except float32 for bfloat16 data.
func probsDtypeFor(data tensor.Dtype) tensor.Dtype {
	if data == bfloat16.Dtype {
		return tensor.Float32
	}
	return data
}

// checkProbsDtype checks the router probs' dtype against the data dtype: the probs have the
// data dtype, except that bfloat16 data takes float32 probs.
func checkProbsDtype(name string, data, probs tensor.Dtype) error {
	if want := probsDtypeFor(data); probs != want {
		if data == bfloat16.Dtype {
			return opkit.Errorf(name, "probs have dtype %v but the data has dtype %v: bfloat16 data takes float32 probs", probs, data)
		}
		return opkit.Errorf(name, "probs have dtype %v but the data has dtype %v: probs must have the data dtype", probs, data)
	}
	return nil
}

// checkInt32 checks that dt is int32, the dtype of every index tensor.
func checkInt32(name, what string, dt tensor.Dtype) error {
	if dt != tensor.Int32 {
		return opkit.Errorf(name, "%s has dtype %v, want int32", what, dt)
	}
	return nil
}

// checkNodes checks that the nodes a node function gets are not nil and share one graph.
func checkNodes(name string, nodes []*G.Node, whats ...string) error {
	var g *G.ExprGraph
	for i, n := range nodes {
		if n == nil {
			return opkit.Errorf(name, "%s is nil", whats[i])
		}
		if i == 0 {
			g = n.Graph()
		} else if n.Graph() != g {
			return opkit.Errorf(name, "%s belongs to another graph than %s", whats[i], whats[0])
		}
	}
	return nil
}

// anyData is the dtype argument of checkValue that accepts every data dtype (isData).
var anyData = tensor.Dtype{Type: reflect.TypeOf(struct{ anyData byte }{})}

// checkValue checks a value's dtype (0: any float dtype; anyData: any data dtype) and shape
// from its metadata alone, so it is safe on device values.
func checkValue(name, what string, v G.Value, dt tensor.Dtype, want ...dim) error {
	if v == nil {
		return opkit.Errorf(name, "%s is nil", what)
	}
	switch {
	case dt == anyData:
		if err := checkData(name, what, v.Dtype()); err != nil {
			return err
		}
	case dt == (tensor.Dtype{}):
		if err := checkFloat(name, what, v.Dtype()); err != nil {
			return err
		}
	case v.Dtype() != dt:
		return opkit.Errorf(name, "%s has dtype %v, want %v", what, v.Dtype(), dt)
	}
	return checkShape(name, what, v.Shape(), want...)
}

// planDim is the wanted shape of a plan vector.
func planDim(g kernels.Geometry) dim { return dim{"PlanLen", g.PlanLen()} }

// checkPlanShape checks a plan node's or value's shape in InferShape or Do.
func checkPlanShape(name string, g kernels.Geometry, s tensor.Shape) error {
	return checkShape(name, "plan", s, planDim(g))
}
