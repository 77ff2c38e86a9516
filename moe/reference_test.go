package moe

import (
	"fmt"
	"math"
	"math/rand"
	"sort"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/internal/reftest"
)

// The dense reference: routing decided by plain loops written here (scores, bias, groups,
// top-K, capacity), and the layer math written with Gorgonia built-ins only (no gomoe op):
// every expert runs on every token, and its output is weighted by a [T,E] matrix of probs
// that is zero where a token did not choose (or was dropped from) the expert. Gorgonia's
// autodiff of that dense graph gives the reference gradients.

// refRouting is the routing the test derives on its own.
type refRouting struct {
	chosen [][]bool // [T][E]: expert chosen by the token (before capacity)
	kept   [][]bool // [T][E]: chosen and within capacity
	probs  [][]float64
}

func refSoftmax(row []float64) []float64 {
	m := math.Inf(-1)
	for _, v := range row {
		m = math.Max(m, v)
	}
	out := make([]float64, len(row))
	var s float64
	for i, v := range row {
		out[i] = math.Exp(v - m)
		s += out[i]
	}
	for i := range out {
		out[i] /= s
	}
	return out
}

func refSigmoid(v float64) float64 { return 1 / (1 + math.Exp(-v)) }

// refRoute routes T tokens with logits [T*E] under cfg (defaults filled in).
func refRoute(cfg Config, T int, logits, bias []float64) refRouting {
	E, K := cfg.Experts, cfg.TopK
	r := refRouting{}
	for t := 0; t < T; t++ {
		row := logits[t*E : (t+1)*E]
		var score []float64 // weights source
		sel := make([]float64, E)
		switch {
		case cfg.Score == Sigmoid:
			score = make([]float64, E)
			for e := range row {
				score[e] = refSigmoid(row[e])
				sel[e] = score[e]
				if bias != nil {
					sel[e] += bias[e]
				}
			}
		case cfg.PreSoftmax:
			score = refSoftmax(row)
			copy(sel, score)
		default:
			copy(sel, row)
		}
		allowed := make([]bool, E)
		for e := range allowed {
			allowed[e] = true
		}
		if cfg.Groups > 1 {
			gs := E / cfg.Groups
			per := K / cfg.GroupsKept
			if per < 1 {
				per = 1
			}
			type grp struct {
				i int
				s float64
			}
			var groups []grp
			for g := 0; g < cfg.Groups; g++ {
				v := append([]float64(nil), sel[g*gs:(g+1)*gs]...)
				sort.Float64s(v)
				var s float64
				for j := 0; j < per && j < gs; j++ {
					s += v[gs-1-j]
				}
				groups = append(groups, grp{g, s})
			}
			sort.SliceStable(groups, func(a, b int) bool { return groups[a].s > groups[b].s })
			for e := range allowed {
				allowed[e] = false
			}
			for _, g := range groups[:cfg.GroupsKept] {
				for e := g.i * gs; e < (g.i+1)*gs; e++ {
					allowed[e] = true
				}
			}
		}
		ch := make([]bool, E)
		for k := 0; k < K; k++ { // repeated argmax, ties to the lower id
			best := -1
			for e := 0; e < E; e++ {
				if allowed[e] && !ch[e] && (best < 0 || sel[e] > sel[best]) {
					best = e
				}
			}
			ch[best] = true
		}
		p := make([]float64, E)
		switch {
		case cfg.Score == Sigmoid:
			var s float64
			for e := range ch {
				if ch[e] {
					s += score[e]
				}
			}
			for e := range ch {
				if ch[e] {
					p[e] = score[e]
					if K > 1 {
						p[e] /= s
					}
				}
			}
		case cfg.PreSoftmax:
			for e := range ch {
				if ch[e] {
					p[e] = score[e]
				}
			}
		default:
			var s float64
			for e := range ch {
				if ch[e] {
					s += math.Exp(row[e])
				}
			}
			for e := range ch {
				if ch[e] {
					p[e] = math.Exp(row[e]) / s
				}
			}
		}
		for e := range p {
			p[e] *= cfg.ScalingFactor
		}
		r.chosen = append(r.chosen, ch)
		r.probs = append(r.probs, p)
	}
	// Capacity.
	r.kept = make([][]bool, T)
	for t := range r.kept {
		r.kept[t] = append([]bool(nil), r.chosen[t]...)
	}
	if cfg.CapacityFactor > 0 {
		C := max(1, cfg.MinCapacity, int(math.Ceil(float64(T*K)/float64(E)*cfg.CapacityFactor)))
		for e := 0; e < E; e++ {
			var toks []int
			for t := 0; t < T; t++ {
				if r.chosen[t][e] {
					toks = append(toks, t)
				}
			}
			if len(toks) <= C {
				continue
			}
			if cfg.DropPolicy == DropByProb {
				sort.SliceStable(toks, func(a, b int) bool { return r.probs[toks[a]][e] > r.probs[toks[b]][e] })
			}
			for _, t := range toks[C:] {
				r.kept[t][e] = false
			}
		}
	}
	return r
}

func refMask(T, E int, f func(t, e int) float64) *tensor.Dense {
	v := make([]float64, T*E)
	for t := 0; t < T; t++ {
		for e := 0; e < E; e++ {
			v[t*E+e] = f(t, e)
		}
	}
	return tensor.New(tensor.WithShape(T, E), tensor.WithBacking(v))
}

func f64s(v G.Value) []float64 {
	switch d := v.Data().(type) {
	case []float64:
		return append([]float64(nil), d...)
	case []float32:
		o := make([]float64, len(d))
		for i, x := range d {
			o[i] = float64(x)
		}
		return o
	case float64:
		return []float64{d}
	case float32:
		return []float64{float64(d)}
	}
	panic(fmt.Sprintf("f64s: %T", v.Data()))
}

// mustFn returns a helper that fails t on a graph-building error.
func mustFn(t *testing.T) func(*G.Node, error) *G.Node {
	return func(n *G.Node, err error) *G.Node {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
}

// unpackGateUp splits a SwiGLU layer's packed input projection (rows of f gate values and f up
// values side by side) into the gate and up matrices; for GELU it returns w and nil.
func unpackGateUp(c Config, w []float64, f int) (gate, up []float64) {
	if c.Activation == GELU {
		return w, nil
	}
	for r := 0; r < len(w)/(2*f); r++ {
		gate = append(gate, w[2*r*f:2*r*f+f]...)
		up = append(up, w[2*r*f+f:2*(r+1)*f]...)
	}
	return gate, up
}

// packGateUp is the inverse of unpackGateUp.
func packGateUp(c Config, gate, up []float64, f int) []float64 {
	if c.Activation == GELU || gate == nil {
		return gate
	}
	var w []float64
	for r := 0; r < len(gate)/f; r++ {
		w = append(append(w, gate[r*f:(r+1)*f]...), up[r*f:(r+1)*f]...)
	}
	return w
}

// refParams are the float64 values of a layer's weights and of the input.
type refParams struct {
	x, router, w1, w3, w2, s1, s3, s2, bias []float64
}

func paramsOf(l *Layer, x []float64) refParams {
	c := l.Config()
	p := refParams{x: x, router: f64s(l.Router.Value()), w2: f64s(l.W2.Value())}
	p.w1, p.w3 = unpackGateUp(c, f64s(l.W1.Value()), c.FFN)
	if l.SharedW1 != nil {
		p.s1, p.s3 = unpackGateUp(c, f64s(l.SharedW1.Value()), c.SharedFFN)
		p.s2 = f64s(l.SharedW2.Value())
	}
	if l.Bias != nil {
		p.bias = f64s(l.Bias.Value())
	}
	return p
}

// refResult holds the reference output and gradients, in the layer's layouts.
type refResult struct {
	y, cost                    []float64
	dx, drouter, dw1, dw3, dw2 []float64
	ds1, ds3, ds2              []float64
	auxLoss, seqAuxLoss, zLoss float64
	chosen, kept               [][]bool
}

// refForwardBackward computes the dense reference for cfg (defaults filled in) on T tokens
// with the upstream weights rnd [T,H] (cost = Σ y⊙rnd + weighted losses).
func refForwardBackward(t *testing.T, cfg Config, T int, p refParams, rnd []float64) refResult {
	mk := mustFn(t)
	H, F, E, K := cfg.Hidden, cfg.FFN, cfg.Experts, cfg.TopK
	// Routing decisions with plain loops.
	logits := make([]float64, T*E)
	for tk := 0; tk < T; tk++ {
		for e := 0; e < E; e++ {
			for h := 0; h < H; h++ {
				logits[tk*E+e] += p.x[tk*H+h] * p.router[h*E+e]
			}
		}
	}
	rt := refRoute(cfg, T, logits, p.bias)

	g := G.NewGraph()
	mat := func(name string, v []float64, r, c int) *G.Node {
		return G.NewMatrix(g, tensor.Float64, G.WithShape(r, c), G.WithName(name),
			G.WithValue(tensor.New(tensor.WithShape(r, c), tensor.WithBacking(append([]float64(nil), v...)))))
	}
	x := mat("x", p.x, T, H)
	wr := mat("router", p.router, H, E)
	var w1, w3, w2 []*G.Node
	for e := 0; e < E; e++ {
		w1 = append(w1, mat(fmt.Sprintf("w1.%d", e), p.w1[e*H*F:(e+1)*H*F], H, F))
		if p.w3 != nil {
			w3 = append(w3, mat(fmt.Sprintf("w3.%d", e), p.w3[e*H*F:(e+1)*H*F], H, F))
		}
		w2 = append(w2, mat(fmt.Sprintf("w2.%d", e), p.w2[e*F*H:(e+1)*F*H], F, H))
	}
	c := func(v float64) *G.Node { return G.NewConstant(v) }
	ffn := func(a, m1, m3, m2 *G.Node) *G.Node {
		z1 := mk(G.Mul(a, m1))
		var hid *G.Node
		if cfg.Activation == GELU {
			z3 := mk(G.Cube(z1))
			in := mk(G.Mul(mk(G.Add(z1, mk(G.Mul(z3, c(0.044715))))), c(math.Sqrt(2/math.Pi))))
			hid = mk(G.HadamardProd(mk(G.Mul(z1, c(0.5))), mk(G.Add(mk(G.Tanh(in)), c(1)))))
		} else {
			hid = mk(G.HadamardProd(mk(G.HadamardProd(z1, mk(G.Sigmoid(z1)))), mk(G.Mul(a, m3))))
		}
		return mk(G.Mul(hid, m2))
	}
	lg := mk(G.Mul(x, wr))
	chosenM := G.NewConstant(refMask(T, E, func(tk, e int) float64 { return b2f(rt.chosen[tk][e]) }), G.WithName("chosen"))
	keptM := G.NewConstant(refMask(T, E, func(tk, e int) float64 { return b2f(rt.kept[tk][e]) }), G.WithName("kept"))
	rowDiv := func(m *G.Node) *G.Node {
		return mk(G.BroadcastHadamardDiv(m, mk(G.Sum(m, 1)), nil, []byte{1}))
	}
	var P, full *G.Node
	switch {
	case cfg.Score == Sigmoid:
		sg := mk(G.Sigmoid(lg))
		P = mk(G.HadamardProd(sg, chosenM))
		if K > 1 {
			P = rowDiv(P)
		}
		full = rowDiv(sg)
	case cfg.PreSoftmax:
		full = rowDiv(mk(G.Exp(lg)))
		P = mk(G.HadamardProd(full, chosenM))
	default:
		P = rowDiv(mk(G.HadamardProd(mk(G.Exp(lg)), chosenM)))
		full = rowDiv(mk(G.Exp(lg)))
	}
	P = mk(G.Mul(P, c(cfg.ScalingFactor)))
	P = mk(G.HadamardProd(P, keptM))
	var y *G.Node
	for e := 0; e < E; e++ {
		var m3 *G.Node
		if w3 != nil {
			m3 = w3[e]
		}
		col := mk(G.Slice(P, nil, G.S(e)))
		oe := mk(G.BroadcastHadamardProd(ffn(x, w1[e], m3, w2[e]), col, nil, []byte{1}))
		if y == nil {
			y = oe
		} else {
			y = mk(G.Add(y, oe))
		}
	}
	var s1, s3, s2 *G.Node
	if p.s1 != nil {
		S := cfg.SharedFFN
		s1, s2 = mat("s1", p.s1, H, S), mat("s2", p.s2, S, H)
		if p.s3 != nil {
			s3 = mat("s3", p.s3, H, S)
		}
		y = mk(G.Add(y, ffn(x, s1, s3, s2)))
	}
	rndN := G.NewConstant(tensor.New(tensor.WithShape(T, H), tensor.WithBacking(append([]float64(nil), rnd...))), G.WithName("rnd"))
	cost := mk(G.Sum(mk(G.HadamardProd(y, rndN))))
	// Losses: Σ_{t,e} full[t,e]·W[t,e] with W from the loads counted here.
	var auxN, seqN, zN *G.Node
	loadW := func(seqLen int, coeff float64) *G.Node {
		B := T / seqLen
		return G.NewConstant(refMask(T, E, func(tk, e int) float64 {
			b := tk / seqLen
			var n float64
			for t2 := b * seqLen; t2 < (b+1)*seqLen; t2++ {
				n += b2f(rt.chosen[t2][e])
			}
			return coeff * float64(E) / (float64(B) * float64(K) * float64(seqLen*seqLen)) * n
		}))
	}
	if cfg.AuxLossCoeff > 0 {
		auxN = mk(G.Sum(mk(G.HadamardProd(full, loadW(T, cfg.AuxLossCoeff)))))
		cost = mk(G.Add(cost, auxN))
	}
	if cfg.SeqAuxLossCoeff > 0 {
		seqN = mk(G.Sum(mk(G.HadamardProd(full, loadW(cfg.SeqLen, cfg.SeqAuxLossCoeff)))))
		cost = mk(G.Add(cost, seqN))
	}
	if cfg.ZLossCoeff > 0 {
		lse := mk(G.Log(mk(G.Sum(mk(G.Exp(lg)), 1))))
		zN = mk(G.Mul(mk(G.Sum(mk(G.Square(lse)))), c(cfg.ZLossCoeff/float64(T))))
		cost = mk(G.Add(cost, zN))
	}
	wrt := G.Nodes{x, wr}
	wrt = append(wrt, w1...)
	wrt = append(wrt, w3...)
	wrt = append(wrt, w2...)
	for _, n := range []*G.Node{s1, s3, s2} {
		if n != nil {
			wrt = append(wrt, n)
		}
	}
	grads, err := G.Grad(cost, wrt...)
	if err != nil {
		t.Fatalf("reference Grad: %v", err)
	}
	vals := make([]G.Value, len(grads))
	for i := range grads {
		G.Read(grads[i], &vals[i])
	}
	var yv, cv, av, sv, zv G.Value
	G.Read(y, &yv)
	G.Read(cost, &cv)
	for _, r := range []struct {
		n *G.Node
		v *G.Value
	}{{auxN, &av}, {seqN, &sv}, {zN, &zv}} {
		if r.n != nil {
			G.Read(r.n, r.v)
		}
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatalf("reference run: %v", err)
	}
	res := refResult{y: f64s(yv), cost: f64s(cv), chosen: rt.chosen, kept: rt.kept}
	if av != nil {
		res.auxLoss = f64s(av)[0]
	}
	if sv != nil {
		res.seqAuxLoss = f64s(sv)[0]
	}
	if zv != nil {
		res.zLoss = f64s(zv)[0]
	}
	i := 0
	next := func() []float64 { v := f64s(vals[i]); i++; return v }
	res.dx, res.drouter = next(), next()
	cat := func(n int) []float64 {
		var out []float64
		for e := 0; e < n; e++ {
			out = append(out, next()...)
		}
		return out
	}
	res.dw1 = cat(E)
	if w3 != nil {
		res.dw3 = cat(E)
	}
	res.dw2 = cat(E)
	if s1 != nil {
		res.ds1 = next()
		if s3 != nil {
			res.ds3 = next()
		}
		res.ds2 = next()
	}
	return res
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// layerResult is the fast path's output and gradients.
type layerResult struct {
	refResult
	counts []int32
	out    *Output
}

// runLayer builds the layer for cfg, applies it to x, and returns its output and gradients
// for cost = Σ y⊙rnd + out.Loss. setup may change the layer's weights before the run.
func runLayer(t *testing.T, cfg Config, T int, x, rnd []float64, setup func(*Layer)) (*Layer, layerResult) {
	t.Helper()
	mk := mustFn(t)
	g := G.NewGraph()
	l, err := New(g, "moe", cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if setup != nil {
		setup(l)
	}
	dt := l.cfg.Dtype
	xn := G.NewMatrix(g, dt, G.WithShape(T, cfg.Hidden), G.WithName("x"), G.WithValue(denseOf(dt, x, T, cfg.Hidden)))
	out, err := l.Forward(xn)
	if err != nil {
		t.Fatalf("Forward: %v", err)
	}
	rndN := G.NewConstant(denseOf(dt, rnd, T, cfg.Hidden), G.WithName("rnd"))
	cost := mk(G.Sum(mk(G.HadamardProd(out.Y, rndN))))
	if out.Loss != nil {
		cost = mk(G.Add(cost, out.Loss))
	}
	wrt := append(G.Nodes{xn}, l.Learnables()...)
	grads, err := G.Grad(cost, wrt...)
	if err != nil {
		t.Fatalf("Grad: %v", err)
	}
	vals := make([]G.Value, len(grads))
	for i := range grads {
		G.Read(grads[i], &vals[i])
	}
	var yv, cv, countsV, av, sv, zv G.Value
	G.Read(out.Y, &yv)
	G.Read(cost, &cv)
	G.Read(out.Counts, &countsV)
	for _, r := range []struct {
		n *G.Node
		v *G.Value
	}{{out.AuxLoss, &av}, {out.SeqAuxLoss, &sv}, {out.ZLoss, &zv}} {
		if r.n != nil {
			G.Read(r.n, r.v)
		}
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatalf("run: %v", err)
	}
	res := layerResult{out: out, counts: append([]int32(nil), countsV.Data().([]int32)...)}
	res.y, res.cost = f64s(yv), f64s(cv)
	if av != nil {
		res.auxLoss = f64s(av)[0]
	}
	if sv != nil {
		res.seqAuxLoss = f64s(sv)[0]
	}
	if zv != nil {
		res.zLoss = f64s(zv)[0]
	}
	i := 0
	next := func() []float64 { v := f64s(vals[i]); i++; return v }
	c := l.Config()
	res.dx, res.drouter = next(), next()
	res.dw1, res.dw3 = unpackGateUp(c, next(), c.FFN)
	res.dw2 = next()
	if l.SharedW1 != nil {
		res.ds1, res.ds3 = unpackGateUp(c, next(), c.SharedFFN)
		res.ds2 = next()
	}
	return l, res
}

func denseOf(dt tensor.Dtype, v []float64, shape ...int) *tensor.Dense {
	if dt == bfloat16.Dtype {
		b := make([]bfloat16.BFloat16, len(v))
		for i, x := range v {
			b[i] = bfloat16.FromFloat32(float32(x))
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(b))
	}
	if dt == tensor.Float32 {
		b := make([]float32, len(v))
		for i, x := range v {
			b[i] = float32(x)
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(b))
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), v...)))
}

func randVec(rng *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.NormFloat64()
	}
	return v
}

func maxAbs(a []float64) float64 {
	var m float64
	for _, v := range a {
		m = math.Max(m, math.Abs(v))
	}
	return m
}

// compareResults checks every output and gradient of got against want with a tolerance
// relative to the largest reference magnitude.
func compareResults(t *testing.T, name string, got layerResult, want refResult, tol float64) {
	t.Helper()
	for _, c := range []struct {
		what      string
		got, want []float64
	}{
		{"y", got.y, want.y}, {"cost", got.cost, want.cost},
		{"dx", got.dx, want.dx}, {"drouter", got.drouter, want.drouter},
		{"dw1", got.dw1, want.dw1}, {"dw3", got.dw3, want.dw3}, {"dw2", got.dw2, want.dw2},
		{"dshared1", got.ds1, want.ds1}, {"dshared3", got.ds3, want.ds3}, {"dshared2", got.ds2, want.ds2},
		{"aux", []float64{got.auxLoss}, []float64{want.auxLoss}},
		{"seqaux", []float64{got.seqAuxLoss}, []float64{want.seqAuxLoss}},
		{"z", []float64{got.zLoss}, []float64{want.zLoss}},
	} {
		scale := math.Max(1, maxAbs(c.want))
		if d := reftest.MaxDiff(c.got, c.want); !(d <= tol*scale) {
			t.Errorf("%s: %s: max abs diff %g (scale %g)\n got  %.6g\n want %.6g", name, c.what, d, scale, head(c.got), head(c.want))
		}
	}
	// counts: the reference's kept pairs per expert (E from the reference: a short counts
	// vector must not shorten the loop)
	E := len(want.kept[0])
	if len(got.counts) != E {
		t.Errorf("%s: counts = %v, want %d experts", name, got.counts, E)
		return
	}
	for e := 0; e < E; e++ {
		n := 0
		for tk := range want.kept {
			if want.kept[tk][e] {
				n++
			}
		}
		if int(got.counts[e]) != n {
			t.Errorf("%s: counts = %v; reference expert %d has %d kept tokens", name, got.counts, e, n)
			break
		}
	}
}

func head(v []float64) []float64 {
	if len(v) > 8 {
		return v[:8]
	}
	return v
}
