package moe

import (
	G "gorgonia.org/gorgonia"

	"github.com/gomoe/gomoe/kernels"
	"github.com/gomoe/gomoe/op"
)

// expertPaths moves the tokens of one Forward to the routed experts and back. The default
// (localPaths) keeps everything on one rank; NewExpertParallel's (epPaths, ep.go) shards the
// experts over the ranks of an ep.Communicator.
type expertPaths interface {
	// route builds the routing of one Forward from the expert ids [T,K] (and the probs for
	// capacity mode with drop by prob, else nil).
	route(ids, planProbs *G.Node, geo kernels.Geometry) (expertRoute, error)
	// rows is the number of expert rows this rank's layer holds for plan geometry geo (more
	// than geo.Rows() with expert parallelism: the rows of N ranks' tokens).
	rows(geo kernels.Geometry) (int, error)
}

// expertRoute is the routing of one Forward.
type expertRoute interface {
	// plan is the plan of this rank's tokens over all E experts (Output.Plan).
	plan() *op.Plan
	// expertPlan is the plan of the rows the layer's expert weights see.
	expertPlan() *op.Plan
	// dispatch moves x [T,H] to the experts' rows.
	dispatch(x *G.Node) (*G.Node, error)
	// dispatchProbs moves probs [T,K] to a vector with one prob per expert row.
	dispatchProbs(probs *G.Node) (*G.Node, error)
	// combine moves the experts' output rows back to the tokens, weighted by probs (nil:
	// unweighted).
	combine(yp, probs *G.Node) (*G.Node, error)
}

// localPaths runs every expert on this rank.
type localPaths struct{}

func (localPaths) rows(geo kernels.Geometry) (int, error) { return geo.Rows(), nil }

func (localPaths) route(ids, planProbs *G.Node, geo kernels.Geometry) (expertRoute, error) {
	p, err := op.NewPlan(ids, planProbs, geo)
	if err != nil {
		return nil, err
	}
	return localRoute{p}, nil
}

type localRoute struct{ p *op.Plan }

func (r localRoute) plan() *op.Plan                               { return r.p }
func (r localRoute) expertPlan() *op.Plan                         { return r.p }
func (r localRoute) dispatch(x *G.Node) (*G.Node, error)          { return op.Permute(x, r.p) }
func (r localRoute) dispatchProbs(probs *G.Node) (*G.Node, error) { return op.PermuteProbs(probs, r.p) }
func (r localRoute) combine(yp, probs *G.Node) (*G.Node, error)   { return op.Unpermute(yp, probs, r.p) }
