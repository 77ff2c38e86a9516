//go:build gomoecuda

package op_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"gorgonia.org/cu"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/kernels"
	"github.com/gomoe/gomoe/op"
)

// Reliability on the GPU: determinism over repeated runs, sizes past 2^31 elements,
// out-of-memory errors and flat memory over many steps. The large and repeated tests are
// skipped with -short (the compute-sanitizer runs use -short).

func newTestEngine(t testing.TB) *device.Engine {
	t.Helper()
	e, err := device.New(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e
}

// TestGPUDeterminism runs plan, permute, weighted unpermute and permuted probs forward and
// backward 100 times on the GPU (a new graph each time, the same inputs) and wants every
// output and gradient bitwise identical to the first run's.
func TestGPUDeterminism(t *testing.T) {
	runs := 100
	geo := kernels.Geometry{T: 2048, K: 8, E: 64, A: 8}
	H := 512
	if testing.Short() {
		runs, geo, H = 3, kernels.Geometry{T: 256, K: 4, E: 16, A: 8}, 64
	}
	e := newTestEngine(t)
	for _, c := range []struct {
		name string
		geo  kernels.Geometry
	}{
		{"dropless", geo},
		{"capacityProb", kernels.Geometry{T: geo.T, K: geo.K, E: geo.E, A: 1, Mode: kernels.Capacity, C: geo.T * geo.K / geo.E / 2, Drop: kernels.DropByProb}},
	} {
		for _, dt := range []tensor.Dtype{tensor.Float32, bfloat16.Dtype} {
			t.Run(fmt.Sprintf("%s/%v", c.name, dt), func(t *testing.T) {
				in := hostInputs(rand.New(rand.NewPCG(11, 12)), c.geo, H)
				first := runGraph(t, c.geo, H, dt, in, e)
				for r := 1; r < runs; r++ {
					got := runGraph(t, c.geo, H, dt, in, e)
					for i := range first {
						if !sameBits(first[i], got[i]) {
							t.Fatalf("run %d: output %d (plan, y, pp, dx, dprobs) differs from run 0", r, i)
						}
					}
				}
			})
		}
	}
}

// sameBits compares two host tensors' bytes.
func sameBits(a, b *tensor.Dense) bool {
	if a.Dtype() != b.Dtype() || !a.Shape().Eq(b.Shape()) || a.MemSize() != b.MemSize() {
		return false
	}
	return string(hostBytes(a)) == string(hostBytes(b))
}

// hostBytes is the backing memory of a host tensor.
func hostBytes(a *tensor.Dense) []byte {
	switch d := a.Data().(type) {
	case []float32:
		return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(d))), 4*len(d))
	case []float64:
		return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(d))), 8*len(d))
	case []int32:
		return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(d))), 4*len(d))
	case []bfloat16.BFloat16:
		return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(d))), 2*len(d))
	}
	panic(fmt.Sprintf("hostBytes: %T", a.Data()))
}

// bfPattern is a cheap deterministic finite bfloat16 value for element i: magnitudes in
// [2^-8, 2^8), both signs.
func bfPattern(i uint64) bfloat16.BFloat16 {
	h := i * 0x9e3779b97f4a7c15
	h ^= h >> 29
	sign := uint16(h>>63) << 15
	exp := uint16(127-8+(h>>40)%16) << 7
	return bfloat16.BFloat16(sign | exp | uint16(h&0x7f))
}

// TestGPULargeSizes permutes and unpermutes a buffer of more than 2^31 elements in bfloat16
// (T=65536, K=8, E=64, A=8, H=4160: R·H = 524736·4160 ≈ 2.18e9 elements, 4.4 GB), forward
// and backward through the ops on the device engine. Sampled rows of the permuted buffer,
// among them rows that lie past element 2^31, are checked against the source on the host;
// unpermute(permute(x)) with probs 1/K must give x bit for bit, the gradient of x must be dy
// (the same exact arithmetic), and sampled dprobs must be ⟨x[t], dy[t]⟩ (summed as kernels.DotBF16 does).
func TestGPULargeSizes(t *testing.T) {
	if testing.Short() {
		t.Skip("large: skipped with -short")
	}
	const T, K, E, A, H = 65536, 8, 64, 8, 4160
	geo := kernels.Geometry{T: T, K: K, E: E, A: A}
	R := geo.Rows()
	if int64(R)*H <= 1<<31 {
		t.Fatalf("R·H = %d is not past 2^31", int64(R)*H)
	}
	e := newTestEngine(t)
	rng := rand.New(rand.NewPCG(21, 22))
	ids := make([]int32, T*K)
	for tk := 0; tk < T; tk++ {
		for k, v := range rng.Perm(E)[:K] {
			ids[tk*K+k] = int32(v)
		}
	}
	probs := make([]float32, T*K)
	for i := range probs {
		probs[i] = 1.0 / K
	}
	x := make([]bfloat16.BFloat16, T*H)
	dy := make([]bfloat16.BFloat16, T*H)
	for i := range x {
		x[i] = bfPattern(uint64(i))
		dy[i] = bfPattern(uint64(i) + 1<<40)
	}
	hx := tensor.New(tensor.WithShape(T, H), tensor.WithBacking(x))
	hdy := tensor.New(tensor.WithShape(T, H), tensor.WithBacking(dy))

	g := G.NewGraph()
	idsN := G.NewTensor(g, tensor.Int32, 2, G.WithShape(T, K), G.WithName("ids"))
	probsN := G.NewTensor(g, tensor.Float32, 2, G.WithShape(T, K), G.WithName("probs"))
	xN := G.NewTensor(g, bfloat16.Dtype, 2, G.WithShape(T, H), G.WithName("x"))
	dyN := G.NewTensor(g, bfloat16.Dtype, 2, G.WithShape(T, H), G.WithName("dy"))
	p, err := op.NewPlan(idsN, nil, geo)
	if err != nil {
		t.Fatal(err)
	}
	xp, err := op.Permute(xN, p)
	if err != nil {
		t.Fatal(err)
	}
	y, err := op.Unpermute(xp, probsN, p)
	if err != nil {
		t.Fatal(err)
	}
	grads, err := G.Backpropagate(G.Nodes{y}, G.Nodes{dyN}, G.Nodes{xN, probsN})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []struct {
		n *G.Node
		v *tensor.Dense
	}{
		{idsN, tensor.New(tensor.WithShape(T, K), tensor.WithBacking(ids))},
		{probsN, tensor.New(tensor.WithShape(T, K), tensor.WithBacking(probs))},
		{xN, hx}, {dyN, hdy},
	} {
		letOn(t, e, b.n, b.v)
	}
	vm := G.NewTapeMachine(g, G.WithEngine(e))
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	copyOut := func(n *G.Node) *tensor.Dense {
		h, err := e.CopyOut(n.Value().(*tensor.Dense))
		if err != nil {
			t.Fatalf("%s: %v", n.Name(), err)
		}
		return h
	}
	plan := copyOut(p.Node).Data().([]int32)
	tokenOf := plan[2*E+1+T*K:]
	if len(tokenOf) != R {
		t.Fatalf("tokenOf has %d rows, want %d", len(tokenOf), R)
	}

	// Sampled rows of xp: the first and last rows, every row that starts past element 2^31,
	// and 2000 random rows.
	xpT := xp.Value().(*tensor.Dense)
	if !e.Owns(xpT) {
		t.Fatal("xp is not on the GPU")
	}
	rows := []int{0, 1, R - 1}
	for r := (1<<31)/H + 1; r < R; r += 7 {
		rows = append(rows, r)
	}
	for i := 0; i < 2000; i++ {
		rows = append(rows, rng.IntN(R))
	}
	row := make([]bfloat16.BFloat16, H)
	pastLimit := 0
	for _, r := range rows {
		off := int64(r) * H * 2
		if err := e.Kernels().Do(func() error {
			return cu.MemcpyDtoH(unsafe.Pointer(&row[0]), cu.DevicePtr(xpT.Uintptr())+cu.DevicePtr(off), H*2)
		}); err != nil {
			t.Fatal(err)
		}
		tok := tokenOf[r]
		for h := 0; h < H; h++ {
			want := bfloat16.BFloat16(0)
			if tok >= 0 {
				want = x[int(tok)*H+h]
			}
			if row[h] != want {
				t.Fatalf("xp[%d,%d] = %#04x, want %#04x (token %d)", r, h, uint16(row[h]), uint16(want), tok)
			}
		}
		if tok >= 0 && int64(r)*H > 1<<31 {
			pastLimit++
		}
	}
	if pastLimit == 0 {
		t.Fatal("no sampled data row lies past element 2^31")
	}
	t.Logf("R=%d H=%d: %d elements in xp; checked %d rows, %d data rows past element 2^31", R, H, int64(R)*H, len(rows), pastLimit)

	// y = x and dx = dy bitwise.
	if got := copyOut(y); !sameBits(got, hx) {
		t.Error("unpermute(permute(x), 1/K) differs from x")
	}
	if got := copyOut(grads[0]); !sameBits(got, hdy) {
		t.Error("the gradient of x differs from dy")
	}
	// dprobs[t,k] = ⟨x[t], dy[t]⟩ for sampled tokens, bit for bit as kernels.DotBF16 sums it.
	dprobs := copyOut(grads[1]).Data().([]float32)
	xw, dyw := make([]float32, H), make([]float32, H)
	for i := 0; i < 256; i++ {
		tok := rng.IntN(T)
		for h := 0; h < H; h++ {
			xw[h], dyw[h] = x[tok*H+h].Float32(), dy[tok*H+h].Float32()
		}
		dot := kernels.DotBF16(xw, dyw)
		for k := 0; k < K; k++ {
			if got := dprobs[tok*K+k]; math.Float32bits(got) != math.Float32bits(dot) {
				t.Fatalf("dprobs[%d,%d] = %g, want %g", tok, k, got, dot)
			}
		}
	}
	e.EndStep()
}

// TestGPUSizeLimits checks that geometries whose rows do not fit int32 row ids are rejected
// with an error, by the ops before anything is allocated and by the launchers.
func TestGPUSizeLimits(t *testing.T) {
	e := newTestEngine(t)
	for _, geo := range []kernels.Geometry{
		{T: 1 << 28, K: 8, E: 64, A: 1},                                     // T·K = 2^31
		{T: 1 << 20, K: 2, E: 1 << 10, A: 1 << 21},                          // pad rows push R past 2^31
		{T: 16, K: 2, E: 4, A: 1, Mode: kernels.Capacity, C: 1 << 30},       // E·C = 2^32
		{T: 16, K: 2, E: 4, A: 1 << 30, Mode: kernels.Capacity, C: 1 << 29}, // roundup(C, A) = 2^30
	} {
		g := G.NewGraph()
		ids := G.NewTensor(g, tensor.Int32, 2, G.WithShape(geo.T, geo.K), G.WithName("ids"))
		_, err := op.NewPlan(ids, nil, geo)
		if err == nil || !strings.Contains(err.Error(), "int32 row id limit") {
			t.Errorf("%v: NewPlan error %v, want the int32 row id limit", geo, err)
		}
		for name, f := range map[string]func() error{
			"BuildPlan":      func() error { return e.Kernels().BuildPlan(geo, 1, 1, 0, kernels.F32, 1) },
			"PermuteForward": func() error { return e.Kernels().PermuteForward(kernels.BF16, geo, 8, 1, 1, 1) },
			"UnpermuteForward": func() error {
				return e.Kernels().UnpermuteForward(kernels.BF16, geo, 8, 1, 1, 1, 1)
			},
		} {
			if err := f(); err == nil || !strings.Contains(err.Error(), "int32 row id limit") {
				t.Errorf("%v: %s error %v, want the int32 row id limit", geo, name, err)
			}
		}
	}
	if err := e.Sync(); err != nil {
		t.Fatalf("engine unusable after the rejected launches: %v", err)
	}
}

// TestGPUOutOfMemory runs a graph whose permuted buffer (2^30 rows of 128 float32, 512 GiB)
// is larger than the GPU: RunAll must return an out-of-memory error, and the engine must then
// run a normal graph and give the CPU's results.
func TestGPUOutOfMemory(t *testing.T) {
	e := newTestEngine(t)
	geo := kernels.Geometry{T: 2, K: 1, E: 1, A: 1, Mode: kernels.Capacity, C: 1 << 30}
	const H = 128
	g := G.NewGraph()
	ids := G.NewTensor(g, tensor.Int32, 2, G.WithShape(2, 1), G.WithName("ids"))
	x := G.NewTensor(g, tensor.Float32, 2, G.WithShape(2, H), G.WithName("x"))
	p, err := op.NewPlan(ids, nil, geo)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := op.Permute(x, p); err != nil {
		t.Fatal(err)
	}
	for n, v := range map[*G.Node]*tensor.Dense{
		ids: tensor.New(tensor.WithShape(2, 1), tensor.WithBacking([]int32{0, 0})),
		x:   tensor.New(tensor.WithShape(2, H), tensor.WithBacking(make([]float32, 2*H))),
	} {
		letOn(t, e, n, v)
	}
	vm := G.NewTapeMachine(g, G.WithEngine(e))
	err = vm.RunAll()
	vm.Close()
	if err == nil {
		t.Fatal("a 512 GiB permute: no error")
	}
	if !strings.Contains(strings.ToLower(err.Error()), "memory") {
		t.Errorf("error %q does not say out of memory", err)
	}
	t.Logf("out-of-memory error: %v", err)
	e.EndStep()

	// Still usable: a normal graph equals the CPU.
	geo2 := kernels.Geometry{T: 64, K: 2, E: 8, A: 4}
	in := hostInputs(rand.New(rand.NewPCG(1, 2)), geo2, 32)
	cpu := runGraph(t, geo2, 32, tensor.Float32, in, nil)
	gpu := runGraph(t, geo2, 32, tensor.Float32, in, e)
	for i := 0; i < 4; i++ { // plan, y, pp, dx: bitwise
		if !sameBits(cpu[i], gpu[i]) {
			t.Errorf("after the out-of-memory error, output %d differs from the CPU", i)
		}
	}
}

// TestGPUStepMemoryFlat runs forward + backward 1000 times on one tape machine (Reset and
// EndStep between steps) and wants the device allocator to stop calling cuMemAlloc after the
// first step; it logs the host heap growth.
func TestGPUStepMemoryFlat(t *testing.T) {
	steps := 1000
	if testing.Short() {
		steps = 5
	}
	e := newTestEngine(t)
	geo := kernels.Geometry{T: 256, K: 4, E: 16, A: 8}
	const H = 64
	d := buildDevGraph(t, geo, H, bfloat16.Dtype)
	in := hostInputs(rand.New(rand.NewPCG(3, 4)), geo, H)
	for _, b := range []struct {
		n *G.Node
		v *tensor.Dense
	}{
		{d.ids, asTensor(in["ids"], tensor.Int32, geo.T, geo.K)},
		{d.probs, asTensor(in["probs"], tensor.Float32, geo.T, geo.K)},
		{d.x, asTensor(in["x"], bfloat16.Dtype, geo.T, H)},
		{d.dy, asTensor(in["dy"], bfloat16.Dtype, geo.T, H)},
		{d.dpp, asTensor(in["dpp"], tensor.Float32, geo.Rows())},
	} {
		letOn(t, e, b.n, b.v)
	}
	vm := G.NewTapeMachine(d.g, G.WithEngine(e))
	defer vm.Close()
	var first device.PoolStats
	var m0, m1 runtime.MemStats
	for s := 0; s < steps; s++ {
		if err := vm.RunAll(); err != nil {
			t.Fatal(err)
		}
		vm.Reset()
		e.EndStep()
		if s == 0 {
			first = e.Pool().Stats()
			runtime.GC()
			runtime.ReadMemStats(&m0)
		}
	}
	if err := e.Status(); err != nil {
		t.Fatal(err)
	}
	last := e.Pool().Stats()
	runtime.GC()
	runtime.ReadMemStats(&m1)
	if last.BackendAlloc != first.BackendAlloc || last.LiveBytes != first.LiveBytes {
		t.Errorf("after step 1: %+v; after %d steps: %+v", first, steps, last)
	}
	t.Logf("%d steps: device cuMemAlloc calls %d after step 1, %d at the end; live %d B, cached %d B; host heap %d -> %d B",
		steps, first.BackendAlloc, last.BackendAlloc, last.LiveBytes, last.CachedBytes, m0.HeapAlloc, m1.HeapAlloc)
}
