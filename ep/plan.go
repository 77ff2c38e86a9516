package ep

import (
	"fmt"
	"hash"
	"reflect"
	"strings"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
	"github.com/gomoe/gomoe/op"
)

// Plan is the routing plan of one rank of an expert-parallel group. Its parts:
//
//   - Send is the ordinary routing plan of this rank's T tokens over all E experts, with
//     alignment 1. Experts are numbered rank-major (rank r holds experts [r·E/N, (r+1)·E/N)),
//     so its expert-major layout is also the per-rank send layout: the rows for rank j are
//     one contiguous run, expert-major inside.
//   - Local() is a plan of geometry LocalGeometry(g, N) for the E/N experts this rank holds: the
//     rows it receives, expert-major, each expert's segment holding the rows from rank 0 in
//     token order, then those from rank 1, and so on (so ascending global token index
//     rank·T + t), aligned to g.A. Its tokenOf holds those global token indices and its rowOf
//     is filled accordingly, so it passes kernels.Plan.Check; pass it to op.GroupedMatMul for
//     the experts.
//
// Building the plan is a collective (a counts exchange and an exchange of token indices), and
// with device values it is the one host synchronisation of the layer: the send plan is copied
// to the host there.
type Plan struct {
	// Send is the routing plan of this rank's tokens over all experts (the send layout).
	Send *op.Plan
	// LocalGeometry is the geometry of the local plan, LocalGeometry(Geometry, N).
	LocalGeometry kernels.Geometry
	// Node is the expert-parallel plan vector, always in host memory: the send plan's counts
	// [E] and offsets [E+1], then the local plan (layout of Local). Dispatch and Combine read
	// their block lists from it, so they need no host sync of their own.
	Node *G.Node
	// Comm is the communicator the plan's collectives run on.
	Comm Communicator
	// Geometry is the layer's geometry with T and K filled in.
	Geometry kernels.Geometry

	local *op.Plan // made by Local on first use
}

// Local returns the plan of the rows this rank receives (geometry LocalGeometry), for the
// experts' ops such as op.GroupedMatMul. Its node is made on the first call, so a graph that
// does not need it has no unused node (the lisp machine wants a single root). With device
// values it is uploaded to the device; it never costs a host sync.
func (p *Plan) Local() (*op.Plan, error) {
	if err := p.check("ep.Plan.Local"); err != nil {
		return nil, err
	}
	if p.local == nil {
		n, err := opkit.ApplyOp(localPlanName, localPlanOp{gs: p.Send.Geometry, gl: p.LocalGeometry}, p.Node, p.Send.Node)
		if err != nil {
			return nil, err
		}
		p.local = &op.Plan{Node: n, Geometry: p.LocalGeometry}
	}
	return p.local, nil
}

// Ranks is the number of ranks N.
func (p *Plan) Ranks() int {
	if p == nil || p.Comm == nil {
		return 0
	}
	return p.Comm.Size()
}

// LocalExperts is E/N, the number of experts each rank holds.
func (p *Plan) LocalExperts() int {
	if n := p.Ranks(); n > 0 {
		return p.Geometry.E / n
	}
	return 0
}

// FirstExpert is the global id of this rank's first expert.
func (p *Plan) FirstExpert() int {
	if p.Ranks() == 0 {
		return 0
	}
	return p.Comm.Rank() * p.LocalExperts()
}

// LocalGeometry is the geometry of the plan of the rows a rank receives, for a layer of
// geometry g (T, K filled in) over n ranks:
//
//   - T' = n·T global tokens and K' = min(K, E/n): a token names at most K' of one rank's
//     experts, since a token never names an expert twice;
//   - E' = E/n local experts, alignment g.A;
//   - dropless: R' = n·T·K' + E'·(A−1) rows, the static upper bound (every token of every
//     rank sends K' rows here). It is also what the receive buffer allocates, so in the
//     worst case of balanced routing it is about n·K'/K times the rows actually used;
//   - capacity: each rank keeps at most C rows per expert before sending, so an expert
//     receives at most n·C: C' = n·C and R' = E'·roundup(n·C, A).
func LocalGeometry(g kernels.Geometry, n int) (kernels.Geometry, error) {
	if n < 1 {
		return kernels.Geometry{}, fmt.Errorf("gomoe: ep: %d ranks, want at least 1", n)
	}
	if g.E%n != 0 {
		return kernels.Geometry{}, fmt.Errorf("gomoe: ep: E=%d experts are not divisible by N=%d ranks", g.E, n)
	}
	if float64(n)*float64(g.T) > kernels.MaxRows || float64(n)*float64(g.C) > kernels.MaxRows {
		return kernels.Geometry{}, fmt.Errorf("gomoe: ep: %d ranks of T=%d tokens (C=%d) exceed the int32 row id limit %d", n, g.T, g.C, kernels.MaxRows)
	}
	el := g.E / n
	gl := kernels.Geometry{T: n * g.T, K: min(g.K, el), E: el, A: g.A, Mode: g.Mode, Drop: g.Drop, PadToCapacity: g.PadToCapacity}
	if g.Mode == kernels.Capacity {
		gl.C = n * g.C
	}
	if err := gl.Validate(); err != nil {
		return kernels.Geometry{}, opkit.Wrap(fmt.Sprintf("ep: local geometry for %d ranks", n), err)
	}
	return gl, nil
}

// sendGeometry is the geometry of the send plan: g with alignment 1 and packed segments, so
// that only real rows are sent and the send buffer is as small as possible.
func sendGeometry(g kernels.Geometry) kernels.Geometry {
	g.A = 1
	g.PadToCapacity = false
	return g
}

// NewPlan builds rank c.Rank()'s expert-parallel plan from its expert ids [T,K] int32 (global
// expert ids, -1 for none) and, for capacity mode with kernels.DropByProb, its probs [T,K]
// (else probs may be nil). g is the layer's geometry over all E experts, as for op.NewPlan;
// E must be divisible by c.Size(), and every rank must use the same geometry (checked when
// the plan runs). In capacity mode C is the capacity of each expert per sending rank.
//
// All ranks must build the same graph, each its own: the plan, Dispatch and Combine nodes run
// collectives, which every rank must reach in the same order. A graph that already holds
// another rank's plan of c's group is refused (GroupKeyer). Options add checks to the plan's
// exchange (Agree).
func NewPlan(ids, probs *G.Node, g kernels.Geometry, c Communicator, opts ...PlanOption) (*Plan, error) {
	const name = planName
	if err := CheckCommunicator(c); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	if ids == nil {
		return nil, opkit.Errorf(name, "ids is nil")
	}
	if err := checkOneRank(ids.Graph(), c); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	if s := ids.Shape(); len(s) == 2 {
		g.T, g.K = s[0], s[1]
	}
	if g.E%c.Size() != 0 {
		return nil, opkit.Errorf(name, "E=%d experts are not divisible by N=%d ranks", g.E, c.Size())
	}
	// The send plan fails on bad ids (or a NaN prob) before the first collective: guarded, it
	// aborts the communicator then, so the other ranks do not wait for this one.
	sg := sendGeometry(g)
	in := []*G.Node{ids}
	if probs != nil && sg.Mode == kernels.Capacity && sg.Drop == kernels.DropByProb {
		in = append(in, probs)
	}
	var built kernels.Geometry // the send plan's geometry, T and K filled in
	sendNode, err := Guard(c, func(in ...*G.Node) (*G.Node, error) {
		var pr *G.Node
		if len(in) > 1 {
			pr = in[1]
		}
		p, err := op.NewPlan(in[0], pr, sg)
		if err != nil {
			return nil, err
		}
		built = p.Geometry
		return p.Node, nil
	}, in...)
	if err != nil {
		return nil, opkit.Wrap(name, err)
	}
	send := &op.Plan{Node: sendNode, Geometry: built}
	g.T, g.K = send.Geometry.T, send.Geometry.K
	gl, err := LocalGeometry(g, c.Size())
	if err != nil {
		return nil, opkit.Wrap(name, err)
	}
	po := planOp{gs: send.Geometry, gl: gl, c: c}
	for _, o := range opts {
		if o == nil {
			return nil, opkit.Errorf(name, "a nil PlanOption")
		}
		o(&po)
	}
	n, err := opkit.ApplyOp(name, po, send.Node)
	if err != nil {
		return nil, err
	}
	return &Plan{Send: send, LocalGeometry: gl, Node: n, Comm: c, Geometry: g}, nil
}

const planName = "ep.NewPlan"

// A PlanOption adds to what NewPlan's plan checks when it runs.
type PlanOption func(*planOp)

// Agree makes the plan's counts exchange (which every rank runs anyway) also check that every
// rank passes the same value for what, a hash of something the ranks must share: a rank
// whose value differs fails the plan on every rank, with an error naming what. moe's
// expert-parallel layer passes a hash of its Config, so that ranks built with another seed,
// FFN width or score function (their replicated router and shared experts would differ from
// the start) fail instead of training apart.
func Agree(what string, value uint32) PlanOption {
	return func(o *planOp) { o.agreeWhat, o.agree = what, value }
}

// checkOneRank refuses c when g already holds an expert-parallel plan of another rank of c's
// group (GroupKeyer); communicators without GroupKey are not checked.
func checkOneRank(g *G.ExprGraph, c Communicator) error {
	k, ok := c.(GroupKeyer)
	if !ok || g == nil {
		return nil
	}
	key := k.GroupKey()
	if key == nil {
		return nil
	}
	// The value, not only its type: a struct or array of a comparable type may hold an
	// uncomparable value in an interface field, and == on it panics.
	if !reflect.ValueOf(key).Comparable() {
		return fmt.Errorf("%s: GroupKey gives a %T, which cannot be compared", commKey(c), key)
	}
	for _, n := range g.AllNodes() {
		p, ok := n.Op().(planOp)
		if !ok || p.c.Rank() == c.Rank() {
			continue
		}
		if pk, ok := p.c.(GroupKeyer); ok && pk.GroupKey() == key { // key is comparable: no panic
			return fmt.Errorf("the graph already holds rank %d's plan (%s), and this one is rank %d's: one graph runs one rank's part of the step, so build a graph per rank (package ep's documentation)",
				p.c.Rank(), commKey(p.c), c.Rank())
		}
	}
	return nil
}

// epPlanLen is the length of the expert-parallel plan vector: send counts [E], send offsets
// [E+1], local plan [PlanLen(gl)].
func epPlanLen(gs, gl kernels.Geometry) int { return 2*gs.E + 1 + gl.PlanLen() }

// planOp builds the expert-parallel plan from the send plan: send plan [PlanLen(gs)] int32 ->
// ep plan [epPlanLen] int32 in host memory. Its Do is a collective.
type planOp struct {
	opkit.Base
	opkit.NoGrad
	gs, gl kernels.Geometry
	c      Communicator
	// agreeWhat and agree are Agree's: a value every rank must pass ("": none, agree 0).
	agreeWhat string
	agree     uint32
}

var (
	_ G.Op   = planOp{}
	_ G.SDOp = planOp{}
	_ G.ADOp = planOp{}
)

func (o planOp) Arity() int { return 1 }

func (o planOp) Type() hm.Type {
	v := G.TensorType{Dims: 1, Of: tensor.Int32}
	return hm.NewFnType(v, G.TensorType{Dims: 1, Of: tensor.Int32})
}

func (o planOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	ss, err := shapesOf(planName, ds, 1)
	if err != nil {
		return nil, err
	}
	if err := checkShape(planName, "send plan", ss[0], o.gs.PlanLen()); err != nil {
		return nil, err
	}
	return tensor.Shape{epPlanLen(o.gs, o.gl)}, nil
}

func (o planOp) String() string {
	return fmt.Sprintf("ep.Plan{send %s; local %s; %s; agree %q %#x}", opkit.GeometryKey(o.gs), opkit.GeometryKey(o.gl), commKey(o.c), o.agreeWhat, o.agree)
}
func (o planOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, o) }
func (o planOp) Hashcode() uint32      { return opkit.Hashcode(o) }

// Do exchanges the counts and the token indices and builds the local plan. Any error aborts
// the communicator, so that no other rank waits for this one.
func (o planOp) Do(vs ...G.Value) (G.Value, error) {
	v, err := o.do(vs)
	if err != nil {
		o.c.Abort(err)
	}
	return v, err
}

// header is what every rank sends every other rank ahead of its counts, so that a rank whose
// geometry differs is caught before any row moves. The drop policy is the one the plan
// applies (Drop 0 is DropByPosition), and none in dropless mode, which drops no pair.
func (o planOp) header() []int32 {
	g := o.gs
	var drop int32
	if g.Mode == kernels.Capacity {
		drop = int32(g.DropPolicy())
	}
	return []int32{int32(g.T), int32(g.K), int32(g.E), int32(o.gl.A), int32(g.Mode), int32(g.C), drop, b2i(o.gl.PadToCapacity), int32(o.agree)}
}

// headerString names the geometry fields of a header: "T=8 K=2 E=4 A=1 mode=0 C=0 drop=0
// pad=0" (not the last, Agree's value).
func headerString(h []int32) string {
	h = h[:len(h)-1]
	names := []string{"T", "K", "E", "A", "mode", "C", "drop", "pad"}
	var b strings.Builder
	for i, v := range h {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", names[i], v)
	}
	return b.String()
}

func b2i(b bool) int32 {
	if b {
		return 1
	}
	return 0
}

func (o planOp) do(vs []G.Value) (G.Value, error) {
	const name = planName
	if err := opkit.CheckArity(name, vs, 1); err != nil {
		return nil, err
	}
	n, me := o.c.Size(), o.c.Rank()
	el := o.gl.E
	if el*n != o.gs.E {
		return nil, opkit.Errorf(name, "local geometry has %d experts, but %d ranks × %d != E=%d", el, n, el, o.gs.E)
	}
	sp, err := hostPlan(name, "send plan", o.gs, vs[0])
	if err != nil {
		return nil, err
	}
	// Counts exchange: to rank j, our header then our counts for j's experts.
	hdr := o.header()
	hl := len(hdr)
	send := make([]int32, 0, n*(hl+el))
	for j := 0; j < n; j++ {
		send = append(send, hdr...)
		send = append(send, sp.Counts[j*el:(j+1)*el]...)
	}
	recv, err := o.c.ExchangeCounts(send)
	if err != nil {
		return nil, opkit.Wrap(name, err)
	}
	if len(recv) != len(send) {
		return nil, opkit.Errorf(name, "counts exchange returned %d entries, want %d", len(recv), len(send))
	}
	cnt := make([]int32, n*el) // cnt[i*el+l]: rows from rank i for local expert l
	for i := 0; i < n; i++ {
		part := recv[i*(hl+el) : (i+1)*(hl+el)]
		for f := range hdr[:hl-1] {
			if part[f] != hdr[f] {
				return nil, opkit.Errorf(name, "rank %d has %s but rank %d has %s: every rank must use the same geometry (the same T tokens, K, E, capacity and alignment)", i, headerString(part[:hl]), me, headerString(hdr))
			}
		}
		if part[hl-1] != hdr[hl-1] {
			what := o.agreeWhat
			if what == "" {
				what = "value of ep.Agree"
			}
			return nil, opkit.Errorf(name, "rank %d's %s differs from rank %d's (%#x, %#x): every rank must pass the same", i, what, me, uint32(part[hl-1]), uint32(hdr[hl-1]))
		}
		copy(cnt[i*el:(i+1)*el], part[hl:])
	}
	// The ep plan: send counts and offsets, then the local plan.
	E := o.gs.E
	flat := make([]int32, epPlanLen(o.gs, o.gl))
	copy(flat, sp.Counts)
	copy(flat[E:], sp.Offsets)
	lp, err := o.gl.View(flat[2*E+1:])
	if err != nil {
		return nil, opkit.Wrap(name, err)
	}
	perSource := int32(o.gs.T * o.gl.K)
	if o.gs.Mode == kernels.Capacity {
		perSource = int32(o.gs.C)
	}
	var off int32
	for l := 0; l < el; l++ {
		var seg int32
		for i := 0; i < n; i++ {
			c := cnt[i*el+l]
			if c < 0 || c > perSource {
				return nil, opkit.Errorf(name, "rank %d sends %d rows to expert %d of rank %d, want 0 to %d", i, c, me*el+l, me, perSource)
			}
			seg += c
		}
		lp.Counts[l] = seg
		lp.Offsets[l] = off
		if o.gl.Mode == kernels.Capacity && o.gl.PadToCapacity {
			off += int32(roundUp(o.gl.C, o.gl.A))
		} else {
			off += int32(roundUp(int(seg), o.gl.A))
		}
	}
	lp.Offsets[el] = off
	if int(off) > o.gl.Rows() {
		return nil, opkit.Errorf(name, "received rows need %d rows, more than the bound R=%d", off, o.gl.Rows())
	}
	// Token indices exchange: the global index rank·T + t of every row, into tokenOf.
	ids := make([]int32, len(sp.TokenOf))
	for r, t := range sp.TokenOf {
		ids[r] = -1
		if t >= 0 {
			ids[r] = int32(me*o.gs.T) + t
		}
	}
	for r := range lp.TokenOf {
		lp.TokenOf[r] = -1
	}
	sends := sendBlocks(sp.Counts, sp.Offsets, n, el)
	recvs := make([][]Block, n)
	for l := 0; l < el; l++ {
		at := int(lp.Offsets[l])
		for i := 0; i < n; i++ {
			c := int(cnt[i*el+l])
			recvs[i] = append(recvs[i], Block{at, c})
			at += c
		}
	}
	sb := Buffer{Host: ids, Dtype: tensor.Int32, Rows: len(ids), Width: 1}
	rb := Buffer{Host: lp.TokenOf, Dtype: tensor.Int32, Rows: len(lp.TokenOf), Width: 1}
	if err := o.c.AllToAll(sb, rb, sends, recvs); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	// rowOf from tokenOf: a token's local slots in local expert order.
	for i := range lp.RowOf {
		lp.RowOf[i] = -1
	}
	next := make([]int32, o.gl.T)
	for l := 0; l < el; l++ {
		for r := lp.Offsets[l]; r < lp.Offsets[l]+lp.Counts[l]; r++ {
			t := lp.TokenOf[r]
			if t < 0 || int(t) >= o.gl.T {
				return nil, opkit.Errorf(name, "received token index %d at row %d, want [0, %d)", t, r, o.gl.T)
			}
			if int(next[t]) >= o.gl.K {
				return nil, opkit.Errorf(name, "token %d of rank %d names more than %d experts of rank %d", int(t)%o.gs.T, int(t)/o.gs.T, o.gl.K, me)
			}
			lp.RowOf[int(t)*o.gl.K+int(next[t])] = r
			next[t]++
		}
	}
	if err := lp.Check(); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return tensor.New(tensor.WithShape(len(flat)), tensor.WithBacking(flat)), nil
}

func roundUp(n, a int) int { return (n + a - 1) / a * a }

// sendBlocks lists the blocks of the send layout from the send plan's counts and offsets: to
// rank j, one block per expert of j (its real rows, which the send plan packs without padding).
func sendBlocks(counts, offsets []int32, n, el int) [][]Block {
	sends := make([][]Block, n)
	for j := 0; j < n; j++ {
		for l := 0; l < el; l++ {
			e := j*el + l
			sends[j] = append(sends[j], Block{int(offsets[e]), int(counts[e])})
		}
	}
	return sends
}

// recvBlocks lists the blocks of the local layout: from rank i, one block per local expert,
// read off the local plan's token indices (rows of one expert come from rank 0, then rank 1,
// ...). It checks that the plan has that form.
func recvBlocks(name string, lp kernels.Plan, n, tokens int) ([][]Block, error) {
	recvs := make([][]Block, n)
	for l := 0; l < lp.E; l++ {
		r, end := int(lp.Offsets[l]), int(lp.Offsets[l]+lp.Counts[l])
		for i := 0; i < n; i++ {
			start := r
			for r < end && lp.TokenOf[r] >= 0 && int(lp.TokenOf[r])/tokens == i {
				r++
			}
			recvs[i] = append(recvs[i], Block{start, r - start})
		}
		if r != end {
			return nil, opkit.Errorf(name, "local plan row %d (expert %d) holds token %d, out of source-rank order", r, l, lp.TokenOf[r])
		}
	}
	return recvs, nil
}

// epPlanView checks an expert-parallel plan value and returns the send counts and offsets and
// the local plan.
func epPlanView(name string, gs, gl kernels.Geometry, v G.Value) (counts, offsets []int32, lp kernels.Plan, err error) {
	if onDevice(v) {
		return nil, nil, lp, opkit.Errorf(name, "the expert-parallel plan is on the device; it must stay in host memory")
	}
	if v.Dtype() != tensor.Int32 {
		return nil, nil, lp, opkit.Errorf(name, "plan has dtype %v, want int32", v.Dtype())
	}
	if err := checkShape(name, "plan", v.Shape(), epPlanLen(gs, gl)); err != nil {
		return nil, nil, lp, err
	}
	d, err := opkit.HostDense(name, "plan", v)
	if err != nil {
		return nil, nil, lp, err
	}
	flat, ok := d.Data().([]int32)
	if !ok || len(flat) != epPlanLen(gs, gl) {
		return nil, nil, lp, opkit.Errorf(name, "plan holds %T, want []int32 of %d", d.Data(), epPlanLen(gs, gl))
	}
	E := gs.E
	counts, offsets = flat[:E:E], flat[E:2*E+1:2*E+1]
	for e := 0; e < E; e++ {
		if counts[e] < 0 || offsets[e] < 0 || offsets[e]+counts[e] > offsets[e+1] {
			return nil, nil, lp, opkit.Errorf(name, "plan: expert %d has send offset %d, count %d, next offset %d", e, offsets[e], counts[e], offsets[e+1])
		}
	}
	if int(offsets[E]) > gs.Rows() {
		return nil, nil, lp, opkit.Errorf(name, "plan: send offsets end at %d, past R=%d", offsets[E], gs.Rows())
	}
	if lp, err = gl.View(flat[2*E+1:]); err != nil {
		return nil, nil, lp, opkit.Wrap(name, err)
	}
	if err := lp.Check(); err != nil {
		return nil, nil, lp, opkit.Wrap(name, fmt.Errorf("local plan: %w", err))
	}
	return counts, offsets, lp, nil
}
