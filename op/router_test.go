package op

import (
	"fmt"
	"math"
	"math/rand"
	"slices"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
)

// routerOpCases are the router configurations of the op tests: each score function, groups,
// bias, scale and K = 1.
var routerOpCases = []struct {
	name string
	E, K int
	o    RouterOpts
	bias bool
}{
	{"softmax post", 6, 2, RouterOpts{Score: kernels.RouterSoftmax}, false},
	{"softmax post bias scale", 6, 3, RouterOpts{Score: kernels.RouterSoftmax, Scale: 2.5}, true},
	{"softmax pre groups", 8, 2, RouterOpts{Score: kernels.RouterSoftmax, PreSoftmax: true, Groups: 4, GroupsKept: 2}, false},
	{"sigmoid groups bias scale", 8, 3, RouterOpts{Score: kernels.RouterSigmoid, Groups: 4, GroupsKept: 2, Scale: 2.5}, true},
	{"sigmoid K=1", 5, 1, RouterOpts{Score: kernels.RouterSigmoid}, true},
}

// routerChain builds the single-op chain the fused router replaces: ids and probs.
func routerChain(logits *G.Node, K int, o RouterOpts) (ids, probs *G.Node, err error) {
	topts := TopKOpts{Groups: o.Groups, GroupsKept: o.GroupsKept, Bias: o.Bias}
	defer func() {
		if r := recover(); r != nil {
			err = r.(buildErr).err
		}
	}()
	switch {
	case o.Score == kernels.RouterSoftmax && !o.PreSoftmax:
		ids = must(TopK(logits, K, topts))
		probs = must(Softmax(must(GatherTopK(logits, ids))))
	case o.Score == kernels.RouterSoftmax:
		s := must(Softmax(logits))
		ids = must(TopK(s, K, topts))
		probs = must(GatherTopK(s, ids))
	default:
		s := must(Sigmoid(logits))
		ids = must(TopK(s, K, topts))
		probs = must(GatherTopK(s, ids))
		if K > 1 {
			probs = must(RowNormalize(probs))
		}
	}
	if o.Scale != 0 && o.Scale != 1 {
		probs = must(Scale(probs, o.Scale))
	}
	return ids, probs, nil
}

// TestRouterEqualsChain: RouterTopK and RouterProbs give the chain's ids, probs and logits
// gradient bit for bit, in float32 and float64, on the tape machine.
func TestRouterEqualsChain(t *testing.T) {
	const T = 40
	for _, c := range routerOpCases {
		for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
			t.Run(fmt.Sprintf("%s/%v", c.name, dt), func(t *testing.T) {
				rng := rand.New(rand.NewSource(int64(c.E*10 + c.K)))
				x := make([]float64, T*c.E)
				for i := range x {
					x[i] = rng.NormFloat64() * 2
				}
				b := gcRand(rng, c.E)
				run := func(fused bool) []G.Value {
					g := G.NewGraph()
					logits := G.NewMatrix(g, dt, G.WithShape(T, c.E), G.WithName("logits"), G.WithValue(gcDense(dt, tensor.Shape{T, c.E}, x)))
					o := c.o
					if c.bias {
						o.Bias = G.NewVector(g, dt, G.WithShape(c.E), G.WithName("bias"), G.WithValue(gcDense(dt, tensor.Shape{c.E}, b)))
					}
					var ids, probs *G.Node
					var err error
					if fused {
						if ids, err = RouterTopK(logits, c.K, o); err == nil {
							probs, err = RouterProbs(logits, ids, o)
						}
					} else {
						ids, probs, err = routerChain(logits, c.K, o)
					}
					if err != nil {
						t.Fatal(err)
					}
					cost, err := gcWeighted(g, dt, probs, "w", 7)
					if err != nil {
						t.Fatal(err)
					}
					grads, err := G.Grad(cost, logits)
					if err != nil {
						t.Fatal(err)
					}
					return runRead(t, g, ids, probs, grads[0])
				}
				want, got := run(false), run(true)
				for i, what := range []string{"ids", "probs", "dlogits"} {
					if !bitsEqual(got[i], want[i]) {
						t.Errorf("%s: fused %v, chain %v", what, got[i], want[i])
					}
				}
			})
		}
	}
}

// TestRouterGradCheck: RouterProbs's gradient (symbolic, dual value and lisp machine) against
// float64 central differences, for every configuration.
func TestRouterGradCheck(t *testing.T) {
	const T = 4
	for _, c := range routerOpCases {
		rng := rand.New(rand.NewSource(int64(c.E + c.K)))
		x := make([]float64, T*c.E)
		for i := range x {
			x[i] = rng.NormFloat64()
		}
		b := gcRand(rng, c.E)
		c := c
		gcRun(t, gcCase{
			name:   "router " + c.name,
			inputs: []gcInput{{"logits", tensor.Shape{T, c.E}, x}},
			build: func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
				o := c.o
				if c.bias {
					o.Bias = G.NewVector(g, dt, G.WithShape(c.E), G.WithName("bias"), G.WithValue(gcDense(dt, tensor.Shape{c.E}, b)))
				}
				ids, err := RouterTopK(in[0], c.K, o)
				if err != nil {
					return nil, err
				}
				p, err := RouterProbs(in[0], ids, o)
				if err != nil {
					return nil, err
				}
				return gcWeighted(g, dt, p, "w", 3)
			},
		})
	}
}

// TestRouterBuildErrors: bad nodes and configurations are errors when the graph is built.
func TestRouterBuildErrors(t *testing.T) {
	g := G.NewGraph()
	x := G.NewMatrix(g, tensor.Float32, G.WithShape(3, 4), G.WithName("x"))
	v := G.NewVector(g, tensor.Float32, G.WithShape(4), G.WithName("v"))
	b64 := G.NewVector(g, tensor.Float64, G.WithShape(4), G.WithName("b64"))
	b3 := G.NewVector(g, tensor.Float32, G.WithShape(3), G.WithName("b3"))
	ids := G.NewMatrix(g, tensor.Int32, G.WithShape(3, 2), G.WithName("ids"))
	fids := G.NewMatrix(g, tensor.Float32, G.WithShape(3, 2), G.WithName("fids"))
	sm := RouterOpts{Score: kernels.RouterSoftmax}
	_, err := RouterTopK(nil, 2, sm)
	wantErr(t, "nil logits", err, "logits is nil")
	_, err = RouterTopK(v, 2, sm)
	wantErr(t, "vector logits", err, "logits have shape (4), want (T, E)")
	_, err = RouterTopK(x, 2, RouterOpts{Score: kernels.RouterSoftmax, Scale: math.Inf(1)})
	wantErr(t, "infinite scale", err, "RouterTopK: router: scale +Inf is not finite")
	_, err = RouterTopK(x, 5, sm)
	wantErr(t, "K > E", err, "K=5")
	_, err = RouterTopK(x, 2, RouterOpts{})
	wantErr(t, "no score function", err, "RouterTopK: router: unknown score function 0 (set Score to RouterSoftmax or RouterSigmoid)")
	_, err = RouterTopK(x, 2, RouterOpts{Score: kernels.RouterSigmoid, Groups: 3})
	wantErr(t, "groups", err, "equal groups")
	_, err = RouterTopK(x, 2, RouterOpts{Score: kernels.RouterSoftmax, Bias: b64})
	wantErr(t, "bias dtype", err, "bias is float64 but logits are float32")
	_, err = RouterTopK(x, 2, RouterOpts{Score: kernels.RouterSoftmax, Bias: b3})
	wantErr(t, "bias shape", err, "bias has shape")
	_, err = RouterProbs(x, fids, sm)
	wantErr(t, "float ids", err, "ids have dtype float32, want int32")
	_, err = RouterProbs(x, G.NewMatrix(g, tensor.Int32, G.WithShape(2, 2), G.WithName("ids2")), sm)
	wantErr(t, "ids of other T", err, "logits (3, 4) and ids (2, 2), want (T, E) and (T, K) with T, E, K >= 1")
	_, err = RouterProbs(x, nil, sm)
	wantErr(t, "nil ids", err, "ids")
	_, err = RouterProbs(x, ids, RouterOpts{Score: kernels.RouterSoftmax, Scale: math.Inf(-1)})
	wantErr(t, "infinite scale", err, "not finite")
}

// TestRouterRunErrors: a NaN logit and an id out of range fail the run with an error.
func TestRouterRunErrors(t *testing.T) {
	g := G.NewGraph()
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 3), G.WithName("x"),
		G.WithValue(tensor.New(tensor.WithShape(2, 3), tensor.WithBacking([]float64{1, 2, 3, 4, math.NaN(), 6}))))
	if _, err := RouterTopK(x, 2, RouterOpts{Score: kernels.RouterSigmoid}); err != nil {
		t.Fatal(err)
	}
	m := G.NewTapeMachine(g)
	err := m.RunAll()
	m.Close()
	wantErr(t, "NaN logit", err, "NaN")

	h := G.NewGraph()
	y := G.NewMatrix(h, tensor.Float64, G.WithShape(2, 3), G.WithName("y"),
		G.WithValue(tensor.New(tensor.WithShape(2, 3), tensor.WithBacking([]float64{1, 2, 3, 4, 5, 6}))))
	bad := G.NewMatrix(h, tensor.Int32, G.WithShape(2, 2), G.WithName("bad"),
		G.WithValue(tensor.New(tensor.WithShape(2, 2), tensor.WithBacking([]int32{0, 1, 2, 3}))))
	if _, err := RouterProbs(y, bad, RouterOpts{Score: kernels.RouterSoftmax}); err != nil {
		t.Fatal(err)
	}
	m = G.NewTapeMachine(h)
	err = m.RunAll()
	m.Close()
	wantErr(t, "id 3 of 3 experts", err, "out of range")

	// Do called directly with nil values: an error, not a panic, and a nil bias is not taken
	// for no bias (logits [3 2 1] with bias [0 0 10] pick expert 2, without it expert 0).
	k := G.NewGraph()
	l := matNode(k, tensor.Float64, "l", 1, 3, []float64{3, 2, 1})
	b := G.NewVector(k, tensor.Float64, G.WithShape(3), G.WithName("b"),
		G.WithValue(tensor.New(tensor.WithBacking([]float64{0, 0, 10}))))
	withBias, err := RouterTopK(l, 1, RouterOpts{Score: kernels.RouterSoftmax, Scale: 1, Bias: b})
	if err != nil {
		t.Fatal(err)
	}
	_, err = withBias.Op().Do(l.Value(), nil)
	wantErr(t, "nil bias", err, "input 1 is nil")
	noBias, err := RouterTopK(l, 1, RouterOpts{Score: kernels.RouterSoftmax, Scale: 1})
	if err != nil {
		t.Fatal(err)
	}
	jit, err := JitterNoise(l, 0.1, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []*G.Node{noBias, jit} {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("%v.Do(nil) panicked: %v", n.Op(), p)
				}
			}()
			if _, err := n.Op().Do(nil); err == nil {
				t.Errorf("%v.Do(nil): no error", n.Op())
			}
		}()
	}
}

// TestRouterProbsGradCheckGivenIDs: RouterProbs's gradient for ids that do not come from
// RouterTopK on the same logits (slots of -1, experts other than the top ones), for every
// score function, with a scale, and for a sigmoid token whose
// chosen scores sum below 2⁻⁶⁴ (its probs are the softmax of its chosen logits), against
// float64 central differences.
func TestRouterProbsGradCheckGivenIDs(t *testing.T) {
	const T, E, K = 4, 5, 3
	ids := []int32{4, -1, 0, 1, 3, 2, -1, 3, -1, 2, 0, 4}
	rng := rand.New(rand.NewSource(51))
	x := make([]float64, T*E)
	for i := range x {
		x[i] = rng.NormFloat64()
	}
	tiny := append([]float64(nil), x...)
	for e := 0; e < E; e++ {
		tiny[3*E+e] = -50 - 0.3*float64(e) // token 3: σ ≈ 10⁻²², the softmax fallback
	}
	for _, c := range []struct {
		name string
		o    RouterOpts
		x    []float64
	}{
		{"softmax post scale", RouterOpts{Score: kernels.RouterSoftmax, Scale: 1.5}, x},
		{"softmax pre scale", RouterOpts{Score: kernels.RouterSoftmax, PreSoftmax: true, Scale: 1.5}, x},
		{"sigmoid scale", RouterOpts{Score: kernels.RouterSigmoid, Scale: 2.5}, x},
		{"sigmoid tiny scores", RouterOpts{Score: kernels.RouterSigmoid, Scale: 2.5}, tiny},
	} {
		c := c
		gcRun(t, gcCase{
			name:   "router given ids " + c.name,
			inputs: []gcInput{{"logits", tensor.Shape{T, E}, c.x}},
			build: func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
				p, err := RouterProbs(in[0], gcInt32Node(g, "ids", tensor.Shape{T, K}, ids), c.o)
				if err != nil {
					return nil, err
				}
				return gcWeighted(g, dt, p, "w", 52)
			},
		})
	}
}

// TestRouterProbsDroppedSlots: ids of -1 given to RouterProbs (a slot that names no expert)
// against the router written out with the slot's chosen value 0 before the normalisation, as
// the device kernel takes it too (router.cuh's routerChosen): prob 0 for the pre-softmax and
// sigmoid routers, but a post-softmax router's -1 slot is a logit 0 in the softmax over the
// K chosen, so it gets that logit's weight (> 0) and the token's other probs sum below Scale
// (a token of only -1 slots: Scale/K each); a sigmoid router's token of only -1 slots (K > 1) gets NaN
// probs (0/0). dlogits is the reference's gradient (central differences), 0 for the NaN token:
// no expert gets a gradient through a -1 slot itself.
func TestRouterProbsDroppedSlots(t *testing.T) {
	const T, E, K = 4, 4, 3
	x := []float64{0.5, -1.2, 2, 0.3, 1.1, -0.4, 0.9, -2, -0.7, 1.6, 0.2, 2.4, 3, 1, -1, 0}
	ids := []int32{2, -1, 0, -1, -1, -1, 3, 1, -1, 1, 2, 3}
	w := []float64{0.7, -1.3, 0.4, 0.9, 0.2, -0.6, 1.5, -0.8, 2.1, 0.3, -0.5, 1.1}
	for _, c := range []struct {
		name string
		o    RouterOpts
		// probs of token 0 (ids 2, -1, 0) and token 1 (only -1), by hand
		tok0, tok1 []float64
	}{
		{"softmax post", RouterOpts{Score: kernels.RouterSoftmax, Scale: 1.5},
			[]float64{1.5 * math.Exp(2) / (math.Exp(2) + 1 + math.Exp(0.5)), 1.5 / (math.Exp(2) + 1 + math.Exp(0.5)), 1.5 * math.Exp(0.5) / (math.Exp(2) + 1 + math.Exp(0.5))},
			[]float64{0.5, 0.5, 0.5}},
		{"softmax pre", RouterOpts{Score: kernels.RouterSoftmax, PreSoftmax: true, Scale: 1.5},
			[]float64{1.5 * math.Exp(2) / (math.Exp(0.5) + math.Exp(-1.2) + math.Exp(2) + math.Exp(0.3)), 0, 1.5 * math.Exp(0.5) / (math.Exp(0.5) + math.Exp(-1.2) + math.Exp(2) + math.Exp(0.3))},
			[]float64{0, 0, 0}},
		{"sigmoid", RouterOpts{Score: kernels.RouterSigmoid, Scale: 1.5},
			[]float64{1.5 * refSigmoid(2) / (refSigmoid(2) + refSigmoid(0.5)), 0, 1.5 * refSigmoid(0.5) / (refSigmoid(2) + refSigmoid(0.5))},
			[]float64{math.NaN(), math.NaN(), math.NaN()}},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := routerProbsRef(c.o, x, ids, E, K)
			for k := 0; k < K; k++ {
				if !closeOrNaN(want[k], c.tok0[k]) || !closeOrNaN(want[K+k], c.tok1[k]) {
					t.Fatalf("the reference's tokens 0 and 1 %v, by hand %v %v", want[:2*K], c.tok0, c.tok1)
				}
			}
			g := G.NewGraph()
			logits := matNode(g, tensor.Float64, "logits", T, E, x)
			probs, err := RouterProbs(logits, gcInt32Node(g, "ids", tensor.Shape{T, K}, ids), c.o)
			if err != nil {
				t.Fatal(err)
			}
			cost := must(G.Sum(must(G.HadamardProd(probs, matNode(g, tensor.Float64, "w", T, K, w)))))
			grads, err := G.Grad(cost, logits)
			if err != nil {
				t.Fatal(err)
			}
			v := runRead(t, g, probs, grads[0])
			got, dx := gcFloats(v[0]), gcFloats(v[1])
			for i := range want {
				if !closeOrNaN(got[i], want[i]) {
					t.Errorf("probs[%d,%d] = %v, want %v", i/K, i%K, got[i], want[i])
				}
			}
			// dlogits: central differences of Σ w·ref; 0 for a token whose probs are NaN.
			const h = 1e-6
			for i := range x {
				tok := i / E
				wd := 0.0
				if !math.IsNaN(want[tok*K]) {
					xp, xm := append([]float64(nil), x...), append([]float64(nil), x...)
					xp[i] += h
					xm[i] -= h
					pp, pm := routerProbsRef(c.o, xp, ids, E, K), routerProbsRef(c.o, xm, ids, E, K)
					for k := tok * K; k < (tok+1)*K; k++ {
						wd += w[k] * (pp[k] - pm[k]) / (2 * h)
					}
				}
				if !(math.Abs(dx[i]-wd) <= 1e-7*(1+math.Abs(wd))) {
					t.Errorf("dlogits[%d,%d] = %v, want %v", tok, i%E, dx[i], wd)
				}
			}
		})
	}
}

// TestRouterProbsIgnoresBias: RouterOpts.Bias moves RouterTopK's selection but not the probs
// (DeepSeek-V3's expert bias): with a bias of 5 on expert 3 every token picks expert 3 first,
// and RouterProbs with that bias set gives the probs of the unbiased scores at those ids (the
// router written out), the same bits as RouterProbs without it.
func TestRouterProbsIgnoresBias(t *testing.T) {
	const T, E, K = 2, 4, 2
	x := []float64{2, 1, 0.5, -1, 0.3, 1.2, -0.4, 0.8}
	bias := []float64{0, 0, 0, 5}
	// RouterTopK's ids without and with the bias, by hand (the same for every score function:
	// each is monotonic in the logit, and the bias outweighs any score)
	noBiasIDs, biasIDs := []int32{0, 1, 1, 3}, []int32{3, 0, 3, 1}
	for _, c := range []struct {
		name string
		o    RouterOpts
		p00  float64 // token 0's prob of expert 3 (logit -1), by hand
	}{
		{"softmax post", RouterOpts{Score: kernels.RouterSoftmax, Scale: 2}, 2 * math.Exp(-1) / (math.Exp(-1) + math.Exp(2))},
		{"softmax pre", RouterOpts{Score: kernels.RouterSoftmax, PreSoftmax: true, Scale: 2},
			2 * math.Exp(-1) / (math.Exp(2) + math.Exp(1) + math.Exp(0.5) + math.Exp(-1))},
		{"sigmoid", RouterOpts{Score: kernels.RouterSigmoid, Scale: 2}, 2 * refSigmoid(-1) / (refSigmoid(-1) + refSigmoid(2))},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := G.NewGraph()
			logits := matNode(g, tensor.Float64, "logits", T, E, x)
			biased := c.o
			biased.Bias = G.NewVector(g, tensor.Float64, G.WithShape(E), G.WithName("bias"), G.WithValue(gcDense(tensor.Float64, tensor.Shape{E}, bias)))
			plain := must(RouterTopK(logits, K, c.o))
			ids := must(RouterTopK(logits, K, biased))
			withBias := must(RouterProbs(logits, ids, biased))
			without := must(RouterProbs(logits, ids, c.o))
			v := runRead(t, g, plain, ids, withBias, without)
			if got := v[0].Data().([]int32); !slices.Equal(got, noBiasIDs) {
				t.Fatalf("ids without the bias %v, want %v", got, noBiasIDs)
			}
			if got := v[1].Data().([]int32); !slices.Equal(got, biasIDs) {
				t.Fatalf("ids with the bias %v, want %v", got, biasIDs)
			}
			want := routerProbsRef(c.o, x, biasIDs, E, K)
			if !closeOrNaN(want[0], c.p00) {
				t.Fatalf("the reference's probs[0,0] = %v, by hand %v", want[0], c.p00)
			}
			got := gcFloats(v[2])
			for i := range want {
				if !closeOrNaN(got[i], want[i]) {
					t.Errorf("probs[%d,%d] with the bias = %v, want the unbiased %v", i/K, i%K, got[i], want[i])
				}
			}
			if !bitsEqual(v[2], v[3]) {
				t.Errorf("probs with the bias %v, without %v", v[2], v[3])
			}
		})
	}
}

// closeOrNaN reports whether a and b agree within 1e-12 (relative), or are both NaN.
func closeOrNaN(a, b float64) bool {
	return math.IsNaN(a) && math.IsNaN(b) || math.Abs(a-b) <= 1e-12*(1+math.Abs(b))
}

// routerProbsRef is RouterProbs written out in float64 for logits x [T,E] and ids [T,K]: the
// chosen values c (the chosen logits for a post-softmax router, else the chosen scores; 0 for
// an id of -1), then the softmax over the K chosen (post-softmax) or c/Σc (sigmoid), times the
// scale (o.Scale, not 0). The bias takes no part.
func routerProbsRef(o RouterOpts, x []float64, ids []int32, E, K int) []float64 {
	p := make([]float64, len(ids))
	for tok := 0; tok*K < len(ids); tok++ {
		xr, c := x[tok*E:(tok+1)*E], p[tok*K:(tok+1)*K]
		var z float64 // the pre-softmax's denominator
		for _, v := range xr {
			z += math.Exp(v)
		}
		for k, e := range ids[tok*K : (tok+1)*K] {
			switch {
			case e < 0:
				c[k] = 0
			case o.Score == kernels.RouterSigmoid:
				c[k] = refSigmoid(xr[e])
			case o.PreSoftmax:
				c[k] = math.Exp(xr[e]) / z
			default:
				c[k] = xr[e]
			}
		}
		var s float64
		for k := range c {
			if o.Score == kernels.RouterSoftmax && !o.PreSoftmax {
				c[k] = math.Exp(c[k])
			}
			s += c[k]
		}
		for k := range c {
			if o.Score == kernels.RouterSigmoid && K > 1 || o.Score == kernels.RouterSoftmax && !o.PreSoftmax {
				c[k] /= s
			}
			c[k] *= o.Scale
		}
	}
	return p
}
