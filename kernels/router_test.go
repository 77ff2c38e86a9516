package kernels

import (
	"fmt"
	"math"
	"math/rand"
	"slices"
	"sort"
	"strings"
	"testing"
)

// refRouter is the router written out in float64 for one token: scores, the group-limited
// top-k by sorting, and the probs by their formulas.
func refRouter(x, bias []float64, K int, r Router) (ids []int32, probs []float64) {
	E := len(x)
	s := make([]float64, E)
	switch r.Score {
	case RouterSoftmax:
		m := slices.Max(x)
		var z float64
		for _, v := range x {
			z += math.Exp(v - m)
		}
		for e, v := range x {
			s[e] = math.Exp(v-m) / z
		}
	case RouterSigmoid:
		for e, v := range x {
			s[e] = 1 / (1 + math.Exp(-v))
		}
	}
	sel := make([]float64, E)
	for e := range sel {
		sel[e] = s[e]
		if r.Score == RouterSoftmax && !r.Pre {
			sel[e] = x[e]
		}
		if bias != nil {
			sel[e] += bias[e]
		}
	}
	desc := func(v []float64, among []int) []int { // among sorted by descending v, ties to the lower index
		o := slices.Clone(among)
		sort.SliceStable(o, func(a, b int) bool { return v[o[a]] > v[o[b]] })
		return o
	}
	gs := E / r.Groups
	gscore := make([]float64, r.Groups)
	groups := make([]int, r.Groups)
	for g := range gscore {
		groups[g] = g
		members := make([]int, gs)
		for i := range members {
			members[i] = g*gs + i
		}
		for _, e := range desc(sel, members)[:min(gs, max(1, K/r.Kept))] {
			gscore[g] += sel[e]
		}
	}
	var allowed []int
	for _, g := range desc(gscore, groups)[:r.Kept] {
		for e := g * gs; e < (g+1)*gs; e++ {
			allowed = append(allowed, e)
		}
	}
	slices.Sort(allowed)
	for _, e := range desc(sel, allowed)[:K] {
		ids = append(ids, int32(e))
	}
	probs = make([]float64, K)
	var z float64
	for k, e := range ids {
		switch {
		case r.Score == RouterSoftmax && !r.Pre:
			probs[k] = math.Exp(x[e] - x[ids[0]]) // ids[0] has the largest logit
		default:
			probs[k] = s[e]
		}
		z += probs[k]
	}
	for k := range probs {
		if r.Score == RouterSoftmax && !r.Pre || r.Score == RouterSigmoid && K > 1 {
			probs[k] /= z
		}
		probs[k] *= r.Scale
	}
	return ids, probs
}

var routerTestCases = []struct {
	name string
	E, K int
	r    Router
	bias bool
}{
	{"softmax post", 16, 4, Router{Score: RouterSoftmax, Groups: 1, Kept: 1, Scale: 1}, false},
	{"softmax post scaled bias", 8, 2, Router{Score: RouterSoftmax, Groups: 1, Kept: 1, Scale: 2.5}, true},
	{"softmax pre", 12, 3, Router{Score: RouterSoftmax, Pre: true, Groups: 1, Kept: 1, Scale: 1}, true},
	{"softmax pre groups", 24, 4, Router{Score: RouterSoftmax, Pre: true, Groups: 4, Kept: 2, Scale: 1}, false},
	{"sigmoid groups", 32, 6, Router{Score: RouterSigmoid, Groups: 8, Kept: 3, Scale: 2.5}, true},
	{"sigmoid K=1", 6, 1, Router{Score: RouterSigmoid, Groups: 1, Kept: 1, Scale: 1}, true},
}

// TestRouterAgainstReference: ids equal and probs within 1e-12 of the router written out in
// float64, for every score function, groups, bias, scale and K = 1 (float64 data; float32
// data within float32 rounding).
func TestRouterAgainstReference(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	const T = 300 // more than one parallel block of TopK
	for _, c := range routerTestCases {
		x := make([]float64, T*c.E)
		for i := range x {
			x[i] = rng.NormFloat64() * 2
		}
		var bias []float64
		if c.bias {
			bias = make([]float64, c.E)
			for i := range bias {
				bias[i] = rng.NormFloat64() * 0.1
			}
		}
		ids := make([]int32, T*c.K)
		probs := make([]float64, T*c.K)
		if err := RouterTopK(ids, x, bias, c.E, c.K, c.r); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if err := RouterProbs(probs, x, ids, c.E, c.K, c.r); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		x32 := make([]float32, len(x))
		for i, v := range x {
			x32[i] = float32(v)
		}
		var b32 []float32
		for _, v := range bias {
			b32 = append(b32, float32(v))
		}
		ids32 := make([]int32, T*c.K)
		probs32 := make([]float32, T*c.K)
		if err := RouterTopK(ids32, x32, b32, c.E, c.K, c.r); err != nil {
			t.Fatalf("%s f32: %v", c.name, err)
		}
		if err := RouterProbs(probs32, x32, ids32, c.E, c.K, c.r); err != nil {
			t.Fatalf("%s f32: %v", c.name, err)
		}
		for tok := 0; tok < T; tok++ {
			wantIDs, wantP := refRouter(x[tok*c.E:(tok+1)*c.E], bias, c.K, c.r)
			row := tok * c.K
			if !slices.Equal(ids[row:row+c.K], wantIDs) {
				t.Fatalf("%s: token %d: ids %v, want %v", c.name, tok, ids[row:row+c.K], wantIDs)
			}
			for k, w := range wantP {
				if !(math.Abs(probs[row+k]-w) <= 1e-12) {
					t.Fatalf("%s: token %d: probs[%d] = %v, want %v", c.name, tok, k, probs[row+k], w)
				}
			}
			// float32: the rounded logits give the same choice here (no near ties: a test, not a
			// guard, or a float32 path that chose wrongly would skip the probs check), probs
			// within float32 rounding of the float64 ones
			if !slices.Equal(ids32[row:row+c.K], wantIDs) {
				t.Fatalf("%s f32: token %d: ids %v, want %v", c.name, tok, ids32[row:row+c.K], wantIDs)
			}
			for k, w := range wantP {
				if !(math.Abs(float64(probs32[row+k])-w) <= 2e-6*(1+math.Abs(w))) {
					t.Fatalf("%s f32: token %d: probs[%d] = %v, want %v", c.name, tok, k, probs32[row+k], w)
				}
			}
		}
	}
}

// TestRouterHand: hand-computed ids and probs for a one-token router.
func TestRouterHand(t *testing.T) {
	x := []float64{1, 2, 3, 0}
	r := Router{Score: RouterSoftmax, Groups: 1, Kept: 1, Scale: 1}
	ids := make([]int32, 2)
	probs := make([]float64, 2)
	if err := RouterTopK(ids, x, nil, 4, 2, r); err != nil {
		t.Fatal(err)
	}
	if err := RouterProbs(probs, x, ids, 4, 2, r); err != nil {
		t.Fatal(err)
	}
	// softmax over the chosen logits 3 and 2: e/(e+1) and 1/(e+1)
	if !slices.Equal(ids, []int32{2, 1}) || math.Abs(probs[0]-0.7310585786300049) > 1e-15 || math.Abs(probs[1]-0.2689414213699951) > 1e-15 {
		t.Fatalf("ids %v probs %v, want [2 1] [0.7310585786300049 0.2689414213699951]", ids, probs)
	}
	// a bias of +3 on expert 0 makes it the first choice; its weight stays the unbiased one
	if err := RouterTopK(ids, x, []float64{3, 0, 0, 0}, 4, 2, r); err != nil {
		t.Fatal(err)
	}
	if err := RouterProbs(probs, x, ids, 4, 2, r); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids, []int32{0, 2}) || math.Abs(probs[0]-0.11920292202211755) > 1e-15 {
		t.Fatalf("biased: ids %v probs %v, want [0 2] with probs[0] = 1/(1+e²) = 0.11920292202211755", ids, probs)
	}
}

// TestRouterGradient: RouterProbsBackward equals the central difference of Σ w·probs with
// respect to every logit (the ids held fixed), in float64.
func TestRouterGradient(t *testing.T) {
	rng := rand.New(rand.NewSource(12))
	const T, h = 5, 1e-6
	for _, c := range routerTestCases {
		x := make([]float64, T*c.E)
		for i := range x {
			x[i] = rng.NormFloat64()
		}
		ids := make([]int32, T*c.K)
		if err := RouterTopK(ids, x, nil, c.E, c.K, c.r); err != nil {
			t.Fatal(err)
		}
		w := make([]float64, T*c.K)
		for i := range w {
			w[i] = rng.NormFloat64()
		}
		loss := func() float64 {
			p := make([]float64, T*c.K)
			if err := RouterProbs(p, x, ids, c.E, c.K, c.r); err != nil {
				t.Fatal(err)
			}
			var l float64
			for i := range p {
				l += w[i] * p[i]
			}
			return l
		}
		dx := make([]float64, T*c.E)
		if err := RouterProbsBackward(dx, x, ids, w, c.E, c.K, c.r); err != nil {
			t.Fatal(err)
		}
		for i := range x {
			v := x[i]
			x[i] = v + h
			lp := loss()
			x[i] = v - h
			lm := loss()
			x[i] = v
			if num := (lp - lm) / (2 * h); math.Abs(num-dx[i]) > 1e-7*(1+math.Abs(num)) {
				t.Fatalf("%s: dlogits[%d] = %v, central difference %v", c.name, i, dx[i], num)
			}
		}
	}
}

// TestRouterErrors: bad configurations and sizes, ids out of range and NaN logits are errors,
// not panics.
func TestRouterErrors(t *testing.T) {
	ok := Router{Score: RouterSoftmax, Groups: 1, Kept: 1, Scale: 1}
	x := []float64{1, 2, 3, 4, 5, 6, 7, 8}
	for _, c := range []struct {
		name string
		r    Router
		E, K int
		ids  []int32
		x    []float64
		bias []float64
		want string
	}{
		{"score", Router{Score: 7, Groups: 1, Kept: 1, Scale: 1}, 4, 2, make([]int32, 4), x, nil, "score function"},
		{"scale", Router{Score: RouterSoftmax, Groups: 1, Kept: 1, Scale: math.NaN()}, 4, 2, make([]int32, 4), x, nil, "not finite"},
		{"K > E", ok, 4, 5, make([]int32, 5), x[:4], nil, "K=5"},
		{"groups", Router{Score: RouterSigmoid, Groups: 3, Kept: 1, Scale: 1}, 4, 2, make([]int32, 4), x, nil, "equal groups"},
		{"kept", Router{Score: RouterSigmoid, Groups: 2, Kept: 3, Scale: 1}, 4, 2, make([]int32, 4), x, nil, "GroupsKept"},
		{"K does not fit", Router{Score: RouterSigmoid, Groups: 4, Kept: 1, Scale: 1}, 4, 2, make([]int32, 4), x, nil, "do not fit"},
		{"sizes", ok, 4, 2, make([]int32, 3), x, nil, "want T·E and T·K"},
		{"bias", ok, 4, 2, make([]int32, 4), x, []float64{1}, "bias has 1"},
		{"NaN", ok, 4, 2, make([]int32, 4), []float64{1, math.NaN(), 3, 4, 5, 6, 7, 8}, nil, "NaN"},
	} {
		err := RouterTopK(c.ids, c.x, c.bias, c.E, c.K, c.r)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: RouterTopK error %v, want one containing %q", c.name, err, c.want)
		}
	}
	p := make([]float64, 4)
	if err := RouterProbs(p, x, []int32{0, 9, 1, 2}, 4, 2, ok); err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("id 9 of 4: RouterProbs error %v", err)
	}
	if err := RouterProbs(p[:3], x, []int32{0, 1, 1, 2}, 4, 2, ok); err == nil {
		t.Errorf("3 probs for T·K = 4: no error")
	}
	if err := RouterProbsBackward(make([]float64, 8), x, []int32{0, -2, 1, 2}, p, 4, 2, ok); err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Errorf("id -2: RouterProbsBackward error %v", err)
	}
	// A scale beyond float32's range (the probs would be ±Inf and NaN) or one that rounds to 0
	// there (every prob 0, no gradient): an error for float32 data, fine for float64.
	x32, p32 := []float32{1, 2, 3, 4, 5, 6, 7, 8}, make([]float32, 4)
	for _, c := range []struct {
		scale float64
		want  string
	}{{1e39, "overflows float32"}, {1e-46, "rounds to 0 in float32"}} {
		r := Router{Score: RouterSoftmax, Groups: 1, Kept: 1, Scale: c.scale}
		if err := RouterTopK(make([]int32, 4), x32, nil, 4, 2, r); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("scale %g, float32: RouterTopK error %v", c.scale, err)
		}
		if err := RouterProbs(p32, x32, []int32{0, 1, 1, 2}, 4, 2, r); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("scale %g, float32: RouterProbs error %v", c.scale, err)
		}
		if err := RouterProbsBackward(make([]float32, 8), x32, []int32{0, 1, 1, 2}, p32, 4, 2, r); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("scale %g, float32: RouterProbsBackward error %v", c.scale, err)
		}
		if err := RouterProbs(p, x, []int32{0, 1, 1, 2}, 4, 2, r); err != nil {
			t.Errorf("scale %g, float64: RouterProbs error %v", c.scale, err)
		}
	}
	buf := append(slices.Clone(x), 0)
	if err := RouterProbsBackward(buf[1:9], buf[:8], []int32{0, 1, 1, 2}, p, 4, 2, ok); err == nil {
		t.Errorf("dlogits overlapping logits: no error")
	}
}

// FuzzRouter runs the CPU router on fuzzed sizes, configurations and logits (NaN and ±Inf
// among them): it never panics; a bad configuration and a NaN selection score are errors; with
// finite logits the ids and probs equal the router written out (refRouter), and the gradient
// has the logits' shape and is finite.
func FuzzRouter(f *testing.F) {
	f.Add(uint8(3), uint8(8), uint8(2), uint8(1), uint8(1), uint8(0), uint8(4), []byte{1, 9, 3, 200, 7, 5})
	f.Add(uint8(2), uint8(12), uint8(4), uint8(4), uint8(2), uint8(5), uint8(10), []byte{0, 0, 0, 0})
	f.Add(uint8(4), uint8(6), uint8(6), uint8(3), uint8(3), uint8(2), uint8(0), []byte{255, 254, 128})
	f.Fuzz(func(t *testing.T, t8, e8, k8, g8, kept8, mode8, scale8 uint8, raw []byte) {
		T, E, K := int(t8%6)+1, int(e8%16)+1, int(k8%6)+1
		r := Router{Score: RouterScore(mode8%3 + 1), Pre: mode8&4 != 0, Groups: int(g8%5) + 1, Kept: int(kept8%5) + 1,
			Scale: float64(scale8%12) / 4}
		x := make([]float64, T*E)
		finite := true
		for i := range x {
			var b byte
			if len(raw) > 0 {
				b = raw[i%len(raw)] + byte(i/len(raw))
			}
			switch b {
			case 255:
				x[i], finite = math.NaN(), false
			case 254:
				x[i], finite = math.Inf(1), false
			case 253:
				x[i], finite = math.Inf(-1), false
			default:
				x[i] = float64(int(b)-128) / 16
			}
		}
		ids := make([]int32, T*K)
		err := RouterTopK(ids, x, nil, E, K, r)
		if r.Check(E, K) != nil {
			if err == nil {
				t.Fatalf("%v E=%d K=%d: no error", r, E, K)
			}
			return
		}
		if err != nil {
			if finite {
				t.Fatalf("%v E=%d K=%d: finite logits: %v", r, E, K, err)
			}
			return
		}
		probs := make([]float64, T*K)
		dx := make([]float64, T*E)
		if err := RouterProbs(probs, x, ids, E, K, r); err != nil {
			t.Fatal(err)
		}
		if err := RouterProbsBackward(dx, x, ids, probs, E, K, r); err != nil {
			t.Fatal(err)
		}
		if !finite {
			return
		}
		for tok := 0; tok < T; tok++ {
			wantIDs, wantP := refRouter(x[tok*E:(tok+1)*E], nil, K, r)
			if !slices.Equal(ids[tok*K:(tok+1)*K], wantIDs) {
				t.Fatalf("%v token %d: ids %v, want %v", r, tok, ids[tok*K:(tok+1)*K], wantIDs)
			}
			for k, w := range wantP {
				if !(math.Abs(probs[tok*K+k]-w) <= 1e-12) {
					t.Fatalf("%v token %d: probs[%d] = %v, want %v", r, tok, k, probs[tok*K+k], w)
				}
			}
		}
		for i, v := range dx {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("%v: dlogits[%d] = %v for finite logits", r, i, v)
			}
		}
	})
}

// logSigmoid is log σ(x) without overflow or cancellation.
func logSigmoid(x float64) float64 {
	if x >= 0 {
		return -math.Log1p(math.Exp(-x))
	}
	return x - math.Log1p(math.Exp(x))
}

// sigmoidNormRef is n_j = σ(x_j)/Σ_k σ(x_k) and each ∂L/∂x_j = n_j·σ(−x_j)·(g_j − Σ_k g_k·n_k),
// in float64 through log σ, so that it holds where σ itself underflows.
func sigmoidNormRef(x, g []float64) (n, dx []float64) {
	ls := make([]float64, len(x))
	for j, v := range x {
		ls[j] = logSigmoid(v)
	}
	m, z := slices.Max(ls), 0.0
	for _, l := range ls {
		z += math.Exp(l - m)
	}
	n, dx = make([]float64, len(x)), make([]float64, len(x))
	d := 0.0
	for j, l := range ls {
		n[j] = math.Exp(l-m) / z
		d += g[j] * n[j]
	}
	for j := range x {
		dx[j] = n[j] * math.Exp(logSigmoid(-x[j])) * (g[j] - d)
	}
	return n, dx
}

// TestRouterSigmoidTinyScores: a sigmoid router whose chosen scores are tiny still gives
// σ(x_j)/Σσ(x_k) and its gradient: for logits x, x−0.5, x−1, x−2 and K = 2, probs near
// (0.62, 0.38) for every x down to −10⁴, against a float64 reference through log σ, where the
// chain of single ops lost precision among subnormal numbers and then divided 0 by 0 (NaN
// from x ≈ −105 in float32, x ≈ −745 in float64). The router's balancing loss, which normalises
// all of a token's sigmoids, likewise.
func TestRouterSigmoidTinyScores(t *testing.T) {
	xs := []float64{5, -10, -30, -43, -45, -60, -87, -90, -100, -103, -105, -200, -700, -740, -745, -800, -1e4}
	t.Run("float32", func(t *testing.T) { routerTinyCheck[float32](t, xs, 4e-7) })
	t.Run("float64", func(t *testing.T) { routerTinyCheck[float64](t, xs, 1e-14) })
}

// TinySigmoidRouter is the sigmoid router test case of TestRouterSigmoidTinyScores and
// TestCUDARouterSigmoidTinyScores: E = 4, K = 2, scale 2.5, token i's logits xs[i] − (0, 0.5,
// 1, 2) and its dprobs (0.75, −1.25).
func TinySigmoidRouter[F float32 | float64](xs []float64) (r Router, E, K int, logits, dprobs []F) {
	E, K = 4, 2
	r = Router{Score: RouterSigmoid, Groups: 1, Kept: 1, Scale: 2.5}
	logits, dprobs = make([]F, len(xs)*E), make([]F, len(xs)*K)
	for i, x := range xs {
		for e, off := range []float64{0, -0.5, -1, -2} {
			logits[i*E+e] = F(x + off)
		}
		dprobs[i*K], dprobs[i*K+1] = 0.75, -1.25
	}
	return r, E, K, logits, dprobs
}

func routerTinyCheck[F float32 | float64](t *testing.T, xs []float64, tol float64) {
	r, E, K, logits, dprobs := TinySigmoidRouter[F](xs)
	scale, T := r.Scale, len(xs)
	ids, probs, dl := make([]int32, T*K), make([]F, T*K), make([]F, T*E)
	must(t, RouterTopK(ids, logits, nil, E, K, r))
	must(t, RouterProbs(probs, logits, ids, E, K, r))
	must(t, RouterProbsBackward(dl, logits, ids, dprobs, E, K, r))
	near := func(what string, x float64, got F, want float64) {
		t.Helper()
		if g := float64(got); !(math.Abs(g-want) <= tol*(1+math.Abs(want))) {
			t.Errorf("x=%g: %s = %v, want %v", x, what, g, want)
		}
	}
	for i, x := range xs {
		if ids[i*K] != 0 || ids[i*K+1] != 1 {
			t.Fatalf("x=%g: ids %v, want [0 1]", x, ids[i*K:i*K+K])
		}
		c := []float64{float64(logits[i*E]), float64(logits[i*E+1])}
		n, dx := sigmoidNormRef(c, []float64{scale * 0.75, scale * -1.25})
		for j := range K {
			near("prob", x, probs[i*K+j], scale*n[j])
			near("dlogit", x, dl[i*E+j], dx[j])
		}
		for e := K; e < E; e++ {
			if dl[i*E+e] != 0 {
				t.Errorf("x=%g: dlogits[%d] = %v, want 0 (not chosen)", x, e, dl[i*E+e])
			}
		}
	}

	// The balancing loss over all E sigmoids of each token (B = 1, one sequence).
	const bscale, dy = 0.37, 1.3
	loss, err := RouterBalanceLossForward(ids, logits, T, K, E, 1, bscale, r.Score)
	must(t, err)
	counts := make([]float64, E)
	for _, e := range ids {
		counts[e]++
	}
	dlb := make([]F, T*E)
	must(t, RouterBalanceLossBackward(dlb, ids, logits, T, K, E, 1, bscale, dy, r.Score))
	want := 0.0
	for i, x := range xs {
		row := to64(logits[i*E : (i+1)*E])
		g := make([]float64, E)
		for e := range g {
			g[e] = bscale * dy * counts[e]
		}
		s, dx := sigmoidNormRef(row, g)
		for e := range E {
			want += bscale * counts[e] * s[e]
			near(fmt.Sprintf("balance dlogits[%d]", e), x, dlb[i*E+e], dx[e])
		}
	}
	if !(math.Abs(float64(loss)-want) <= tol*math.Abs(want)) { // a NaN fails too
		t.Errorf("balance loss = %v, want %v", loss, want)
	}
}

// TestRouterProbsRejectsOverlap: RouterProbs and RouterProbsBackward reject an output that
// shares memory with an input, in place included, and write nothing. They used to take one
// in place and give wrong values for a sigmoid router's token whose chosen scores sum below
// 2⁻⁶⁴: it reads its logits (and dprobs) after the output is written (probs in place for the
// logits [-50 -51 -52] came out [0.451 0.296 0.253], not [0.665 0.245 0.090]).
func TestRouterProbsRejectsOverlap(t *testing.T) {
	r := Router{Score: RouterSigmoid, Groups: 1, Kept: 1, Scale: 1}
	const E, K = 3, 3
	ids := []int32{0, 1, 2, 2, 1, 0}
	dprobs := []float64{1, -2, 0.5, 0.3, 0.1, -1}
	for _, c := range []struct {
		name string
		call func(b []float64) error
		want string
	}{
		{"probs = logits", func(b []float64) error { return RouterProbs(b, b, ids, E, K, r) }, "RouterProbs: output probs overlaps input logits"},
		{"dlogits = logits", func(b []float64) error { return RouterProbsBackward(b, b, ids, dprobs, E, K, r) }, "RouterProbsBackward: output dlogits overlaps input logits"},
		{"dlogits = dprobs", func(b []float64) error {
			logits := []float64{-50, -51, -52, 1, 2, 3}
			return RouterProbsBackward(b, logits, ids, b, E, K, r)
		}, "RouterProbsBackward: output dlogits overlaps input dprobs"},
		{"probs over logits", func(b []float64) error {
			return RouterProbs(b[1:4], b[3:6], ids[:3], E, K, Router{Score: RouterSoftmax, Pre: true, Groups: 1, Kept: 1, Scale: 1})
		}, "RouterProbs: output probs overlaps input logits"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := []float64{-50, -51, -52, 1, 2, 3}
			before := slices.Clone(b)
			err := c.call(b)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%v, want an error containing %q", err, c.want)
			}
			if !slices.Equal(b, before) {
				t.Errorf("written: %v", b)
			}
		})
	}
}
