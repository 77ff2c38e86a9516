//go:build gomoecuda

package kernels

import (
	_ "embed"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"gorgonia.org/cu"
)

// gomoeFatbin is gomoe.fatbin (sm_80, sm_90a and compute_80 PTX), built by build_fatbin.sh.
//
//go:embed gomoe.fatbin
var gomoeFatbin string

// DType is the element type of device data.
type DType int

const (
	// F32 is float32 data with float32 probs.
	F32 DType = iota
	// F64 is float64 data with float64 probs.
	F64
	// BF16 is bfloat16 data with float32 probs, accumulated in float32.
	BF16
)

func (d DType) String() string {
	switch d {
	case F32:
		return "float32"
	case F64:
		return "float64"
	case BF16:
		return "bfloat16"
	}
	return fmt.Sprintf("DType(%d)", int(d))
}

// Size is the element size in bytes.
func (d DType) Size() int {
	switch d {
	case F64:
		return 8
	case BF16:
		return 2
	}
	return 4
}

// ProbSize is the size in bytes of the probs that go with data of type d.
func (d DType) ProbSize() int {
	if d == F64 {
		return 8
	}
	return 4
}

func (d DType) suffix() string {
	switch d {
	case F32:
		return "f32"
	case F64:
		return "f64"
	}
	return "bf16"
}

func (d DType) valid() bool { return d == F32 || d == F64 || d == BF16 }

// Status bits written by the device kernels (see gomoe.cu).
const (
	StatusBadID    = 1 // an expert id outside [-1, E)
	StatusRepeated = 2 // a token named one expert twice
	StatusNaNProb  = 4 // a NaN prob under drop-by-prob
)

// StatusError describes what the device kernels flagged since the last check.
type StatusError int32

func (s StatusError) Error() string {
	var parts []string
	if s&StatusBadID != 0 {
		parts = append(parts, "an expert id was outside [-1, E) (treated as -1)")
	}
	if s&StatusRepeated != 0 {
		parts = append(parts, "a token named the same expert twice")
	}
	if s&StatusNaNProb != 0 {
		parts = append(parts, "a prob was NaN under drop-by-prob (ranked lowest)")
	}
	if s&StatusNaNScore != 0 {
		parts = append(parts, "a top-k selection score was NaN (ranked lowest)")
	}
	if s&StatusBadIndex != 0 {
		parts = append(parts, "an embedding id was outside [0, V) (its row set to 0)")
	}
	return "gomoe: device kernels: " + strings.Join(parts, "; ")
}

// CUDA is gomoe's kernels loaded into one CUDA context. Its methods take device pointers,
// enqueue the kernels on the context's default stream and return without waiting: nothing
// synchronises with the host except Sync and Status. Each method locks its goroutine to its OS
// thread and makes the context current there for the duration of the call, so it may be called
// from any goroutine (the cost is one cuCtxSetCurrent per call, not a channel hop), and launches
// through one cgo call to cuLaunchKernel with no allocation (launch_cuda.go).
//
// The kernels check nothing that would need a host sync: the plan builder flags bad ids in a
// status word that Status reads. Pointers must be device memory of the documented sizes; a
// plan passed to the data kernels must come from BuildPlan (a hand-made plan must be checked
// with Plan.Check on the host before it is copied to the device).
type CUDA struct {
	ctx    cu.CUContext
	mod    cu.Module
	fn     map[string]cu.Function
	status cu.DevicePtr

	gmod      cu.Module // gomoe_gmm.fatbin (gmm_sm90_cuda.go)
	gmm90Once sync.Once
	g90       *gmm90 // sm_90a grouped GEMM state (gmm_sm90_cuda.go)

	gmmSimtOnce sync.Once
	gsimt       *gmmSimt // float32/float64 grouped GEMM state (gmm_simt_cuda.go)
	lastGMM     string   // the path of the last grouped matmul: "sm90", "simt" or "cublas" (tests)
}

var kernelNames = []string{
	"plan_count", "plan_assign", "plan_select_f32", "plan_select_f64",
	"permute_fwd_v16", "permute_fwd_v8", "permute_fwd_v4", "permute_fwd_v2",
	"permute_probs_fwd_b4", "permute_probs_fwd_b8", "permute_probs_bwd_b4", "permute_probs_bwd_b8",
	"add_f32", "add_f64", "add_bf16",
}

func init() {
	for _, d := range []DType{F32, F64, BF16} {
		for _, v := range []string{"v", "s"} {
			for _, k := range []string{"permute_bwd", "unpermute_fwd", "unpermute_bwd", "unpermute_bwdseq", "unpermute_bwd_rows", "unpermute_bwd_rows4"} {
				kernelNames = append(kernelNames, k+"_"+d.suffix()+"_"+v)
			}
		}
	}
}

// NewCUDA loads the embedded fatbin into ctx.
func NewCUDA(ctx cu.CUContext) (*CUDA, error) {
	c := &CUDA{ctx: ctx, fn: map[string]cu.Function{}}
	err := c.do(func() error {
		mod, err := cu.LoadData(gomoeFatbin)
		if err != nil {
			return fmt.Errorf("gomoe: loading the CUDA kernels: %w", err)
		}
		c.mod = mod
		for _, n := range kernelNames {
			f, err := mod.Function(n)
			if err != nil {
				return fmt.Errorf("gomoe: CUDA kernel %s: %w", n, err)
			}
			c.fn[n] = f
		}
		if err := c.loadGMM(); err != nil {
			return err
		}
		if c.status, err = cu.MemAlloc(4); err != nil {
			return fmt.Errorf("gomoe: allocating the status word: %w", err)
		}
		return cu.MemsetD32(c.status, 0, 1)
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Close frees the cuBLAS handle, the grouped GEMM's tables, the status word and unloads the
// modules.
func (c *CUDA) Close() error {
	err := c.closeBLAS()
	if err2 := c.do(c.g90.close); err == nil {
		err = err2
	}
	if err2 := c.do(c.gsimt.close); err == nil {
		err = err2
	}
	if err2 := c.do(func() error {
		err := cu.MemFree(c.status)
		if err2 := c.mod.Unload(); err == nil {
			err = err2
		}
		if err2 := c.unloadGMM(); err == nil {
			err = err2
		}
		return err
	}); err == nil {
		err = err2
	}
	return err
}

// Context is the CUDA context the kernels live in.
func (c *CUDA) Context() cu.CUContext { return c.ctx }

// Do runs f on a goroutine locked to its OS thread with c's context current.
func (c *CUDA) Do(f func() error) error { return c.do(f) }

func (c *CUDA) do(f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cu.SetCurrentContext(c.ctx); err != nil {
		return fmt.Errorf("gomoe: making the CUDA context current: %w", err)
	}
	return f()
}

// Sync waits for all enqueued work.
func (c *CUDA) Sync() error { return c.do(cu.Synchronize) }

// Status waits for all enqueued work, then returns and clears what the kernels flagged
// (nil, or a StatusError).
func (c *CUDA) Status() error {
	var s int32
	err := c.do(func() error {
		if err := cu.Synchronize(); err != nil {
			return err
		}
		if err := cu.MemcpyDtoH(unsafe.Pointer(&s), c.status, 4); err != nil {
			return err
		}
		if s != 0 {
			return cu.MemsetD32(c.status, 0, 1)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if s != 0 {
		return StatusError(s)
	}
	return nil
}

// args packs kernel arguments into 8-byte slots (cu's Launch reads 8 bytes per argument; the
// kernel reads the low 4 bytes of an int: little-endian).
type args []uint64

func (a *args) p(v cu.DevicePtr) *args { *a = append(*a, uint64(v)); return a }
func (a *args) i(v int) *args          { *a = append(*a, uint64(uint32(int32(v)))); return a }
func (a *args) l(v int64) *args        { *a = append(*a, uint64(v)); return a }

// smemPad rounds a dynamic shared memory size up to 16 bytes and adds 16: nvcc may read a few
// bytes past the last element with one vector load (compute-sanitizer flagged a 12-byte read
// of an 8-byte array).
func smemPad(n int) int { return (n+15)&^15 + 16 }

func (c *CUDA) launch(name string, grid, block, smem int, a args) error {
	f, ok := c.fn[name]
	if !ok {
		return fmt.Errorf("gomoe: no CUDA kernel %s", name)
	}
	if grid < 1 {
		return nil
	}
	if err := launchRaw(f, grid, block, smemPad(smem), a); err != nil {
		return fmt.Errorf("gomoe: launching %s: %w", name, err)
	}
	return nil
}

// Plan pointers inside a flat plan vector on the device.
func planParts(g Geometry, plan cu.DevicePtr) (counts, offsets, rowOf, tokenOf cu.DevicePtr) {
	e, tk := int64(g.E), int64(g.T)*int64(g.K)
	counts = plan
	offsets = plan + cu.DevicePtr(4*e)
	rowOf = plan + cu.DevicePtr(4*(2*e+1))
	tokenOf = plan + cu.DevicePtr(4*(2*e+1+tk))
	return
}

// MaxDeviceExperts is the largest E the device plan builder takes (its shared memory holds
// 11·E+1 int32 per block, within the default 48 KiB).
const MaxDeviceExperts = 1024

// planChunks splits the T tokens into chunks of about 512 pairs, at most maxPlanChunks of them.
// Every plan_assign block sums the per-chunk counts of all chunks, so the plan costs
// O(T·K + E·chunks²) work: linear in T·K with the chunk count capped.
func planChunks(g Geometry) (ct, nchunks int) {
	ct = (512 + g.K - 1) / g.K
	if (g.T+ct-1)/ct > maxPlanChunks {
		ct = (g.T + maxPlanChunks - 1) / maxPlanChunks
	}
	return ct, (g.T + ct - 1) / ct
}

const maxPlanChunks = 128

func align256(n int64) int64 { return (n + 255) &^ 255 }

// PlanWorkBytes is the size of the scratch buffer BuildPlan needs for geometry g.
func PlanWorkBytes(g Geometry) int64 {
	_, nc := planChunks(g)
	n := align256(4 * int64(g.E) * int64(nc))
	if g.Mode == Capacity && g.Drop == DropByProb {
		tk := int64(g.T) * int64(g.K)
		n += 3*align256(4*int64(g.E+1)) + align256(4*tk) + align256(tk)
	}
	return n
}

// BuildPlan fills the flat plan vector plan (g.PlanLen() int32) from ids [T,K] int32, with
// probs [T,K] (float32 for F32 and BF16, float64 for F64; only read under DropByProb, else
// may be 0) and a scratch buffer of PlanWorkBytes(g) bytes. It gives the same plan as the CPU
// BuildPlan for valid ids. Bad ids cannot be reported without a host sync: they are treated as
// -1 and flagged for Status.
func (c *CUDA) BuildPlan(g Geometry, plan, ids, probs cu.DevicePtr, probsType DType, work cu.DevicePtr) error {
	if err := g.Validate(); err != nil {
		return err
	}
	if g.E > MaxDeviceExperts {
		return fmt.Errorf("gomoe: device plan: E=%d experts, the GPU plan builder takes at most %d", g.E, MaxDeviceExperts)
	}
	byProb := g.Mode == Capacity && g.Drop == DropByProb
	if byProb && probs == 0 {
		return fmt.Errorf("gomoe: device plan: drop by prob needs probs")
	}
	if !probsType.valid() {
		return fmt.Errorf("gomoe: device plan: unknown probs type %v", probsType)
	}
	counts, offsets, rowOf, tokenOf := planParts(g, plan)
	ct, nc := planChunks(g)
	R := int64(g.Rows())
	E := g.E
	chunk := work
	return c.do(func() error {
		count := func(keep cu.DevicePtr, check int) error {
			return c.launch("plan_count", nc, 256, 4*E, *new(args).p(ids).i(g.T).i(g.K).i(E).i(ct).i(nc).p(keep).p(chunk).p(tokenOf).l(R).i(check).p(c.status))
		}
		assign := func(A, C, pad, limit int, keep, cnt, off, load, list cu.DevicePtr) error {
			return c.launch("plan_assign", nc, 256, 4*(11*E+1), *new(args).p(ids).i(g.T).i(g.K).i(E).i(ct).i(nc).p(chunk).i(A).i(C).i(pad).i(limit).p(keep).p(cnt).p(off).p(load).p(rowOf).p(tokenOf).p(list))
		}
		pad := 0
		if g.Mode == Capacity && g.PadToCapacity {
			pad = 1
		}
		capC := 0
		limit := int(^uint32(0) >> 1)
		if g.Mode == Capacity {
			capC, limit = g.C, g.C
		}
		var keep cu.DevicePtr
		if byProb {
			// Pass 1: list every pair expert-major (unpadded), then keep the C best of each
			// over-full expert.
			o := align256(4 * int64(E) * int64(nc))
			lcounts := work + cu.DevicePtr(o)
			loffs := lcounts + cu.DevicePtr(align256(4*int64(E+1)))
			load := loffs + cu.DevicePtr(align256(4*int64(E+1)))
			list := load + cu.DevicePtr(align256(4*int64(E+1)))
			keep = list + cu.DevicePtr(align256(4*int64(g.T)*int64(g.K)))
			if err := count(0, 1); err != nil {
				return err
			}
			if err := assign(1, 0, 0, limit, 0, lcounts, loffs, load, list); err != nil {
				return err
			}
			tk := int64(g.T) * int64(g.K)
			sel := "plan_select_f32"
			if probsType == F64 {
				sel = "plan_select_f64"
			}
			if err := c.launch(sel, gridFor(tk, 256), 256, 0, *new(args).p(ids).p(probs).l(tk).i(E).i(g.C).p(loffs).p(load).p(list).p(keep).p(c.status)); err != nil {
				return err
			}
		}
		check := 1
		if byProb {
			check = 0
		}
		if err := count(keep, check); err != nil {
			return err
		}
		return assign(g.A, capC, pad, limit, keep, counts, offsets, 0, 0)
	})
}

func gridFor(n int64, block int) int {
	g := (n + int64(block) - 1) / int64(block)
	if g > 1<<20 {
		g = 1 << 20
	}
	return int(g)
}

// rowThreads picks the block size for a kernel that moves rows of nvec packs, u packs per
// thread per step.
func rowThreads(nvec int64, u int) int {
	t := (nvec + int64(u) - 1) / int64(u)
	t = (t + 31) &^ 31
	if t < 32 {
		t = 32
	}
	if t > 256 {
		t = 256
	}
	return int(t)
}

const zeroRowsPerBlock = 32

// storeMode is the cache policy of the scatter stores and loads in permute forward and
// unpermute backward (smode in gomoe.cu). 0 (streaming stores and loads) measured best on an
// H200; the GPU benchmark's -gomoe.modes flag compares the others.
var storeMode = 0

func zeroBlocks(R int64) int { return int((R + zeroRowsPerBlock - 1) / zeroRowsPerBlock) }

// vec reports whether rows of H elements of d can move as 16-byte packs: the row is a
// multiple of 16 bytes and every pointer is 16-byte aligned.
func vec(d DType, H int, ptrs ...cu.DevicePtr) bool {
	if H*d.Size()%16 != 0 {
		return false
	}
	for _, p := range ptrs {
		if p%16 != 0 {
			return false
		}
	}
	return true
}

func (c *CUDA) check(d DType, g Geometry, H int) error {
	if !d.valid() {
		return fmt.Errorf("gomoe: device kernels: unknown dtype %v", d)
	}
	if H < 1 {
		return fmt.Errorf("gomoe: device kernels: H=%d, want H >= 1", H)
	}
	return g.Validate()
}

// PermuteForward writes xp [R,H] from x [T,H]: each token's row to its K rows, pad rows 0.
func (c *CUDA) PermuteForward(d DType, g Geometry, H int, xp, x, plan cu.DevicePtr) error {
	if err := c.check(d, g, H); err != nil {
		return err
	}
	_, _, rowOf, tokenOf := planParts(g, plan)
	rowBytes := int64(H) * int64(d.Size())
	name, w := "permute_fwd_v2", int64(2)
	for _, cand := range []struct {
		n string
		w int64
	}{{"permute_fwd_v16", 16}, {"permute_fwd_v8", 8}, {"permute_fwd_v4", 4}} {
		if rowBytes%cand.w == 0 && int64(xp)%cand.w == 0 && int64(x)%cand.w == 0 {
			name, w = cand.n, cand.w
			break
		}
	}
	if w == 2 && rowBytes%2 != 0 {
		return fmt.Errorf("gomoe: device permute: row of %d bytes", rowBytes)
	}
	nvec := rowBytes / w
	R := int64(g.Rows())
	u := 4 // packs in flight per thread, as in gomoe.cu
	if name == "permute_fwd_v16" {
		u = 8
	}
	return c.do(func() error {
		return c.launch(name, g.T+zeroBlocks(R), rowThreads(nvec, u), 4*g.K,
			*new(args).p(x).p(xp).p(rowOf).p(tokenOf).i(g.T).i(g.K).l(R).l(nvec).i(zeroRowsPerBlock).i(storeMode))
	})
}

func typedName(kind string, d DType, v bool) (string, int64) {
	n := kind + "_" + d.suffix() + "_s"
	if v {
		return kind + "_" + d.suffix() + "_v", int64(16 / d.Size())
	}
	return n, 1
}

// PermuteBackward writes dx [T,H] = Σ_k dxp[rowOf[t,k]] (k order, data-type accumulation;
// bfloat16 in float32, rounded once).
func (c *CUDA) PermuteBackward(d DType, g Geometry, H int, dx, dxp, plan cu.DevicePtr) error {
	if err := c.check(d, g, H); err != nil {
		return err
	}
	_, _, rowOf, _ := planParts(g, plan)
	name, n := typedName("permute_bwd", d, vec(d, H, dx, dxp))
	return c.do(func() error {
		return c.launch(name, g.T, rowThreads(int64(H)/n, 1), 4*g.K, *new(args).p(dxp).p(dx).p(rowOf).i(g.K).l(int64(H)))
	})
}

// UnpermuteForward writes y [T,H] = Σ_k probs[t,k]·yp[rowOf[t,k]] (probs 0: unweighted).
func (c *CUDA) UnpermuteForward(d DType, g Geometry, H int, y, yp, probs, plan cu.DevicePtr) error {
	if err := c.check(d, g, H); err != nil {
		return err
	}
	_, _, rowOf, _ := planParts(g, plan)
	name, n := typedName("unpermute_fwd", d, vec(d, H, y, yp))
	acc := 4
	if d == F64 {
		acc = 8
	}
	return c.do(func() error {
		return c.launch(name, g.T, rowThreads(int64(H)/n, 1), (acc+4)*g.K, *new(args).p(yp).p(probs).p(y).p(rowOf).i(g.K).l(int64(H)))
	})
}

// UnpermuteBackward writes dyp [R,H] (if not 0; pad rows 0) and dprobs [T,K] (if not 0) from
// dy [T,H], yp [R,H] (read only for dprobs) and probs [T,K] (0: unweighted forward).
func (c *CUDA) UnpermuteBackward(d DType, g Geometry, H int, dyp, dprobs, dy, yp, probs, plan cu.DevicePtr) error {
	if err := c.check(d, g, H); err != nil {
		return err
	}
	if dyp == 0 && dprobs == 0 {
		return nil
	}
	if dprobs != 0 && yp == 0 {
		return fmt.Errorf("gomoe: device unpermute backward: dprobs needs yp")
	}
	_, _, rowOf, tokenOf := planParts(g, plan)
	ptrs := []cu.DevicePtr{dy}
	if dyp != 0 {
		ptrs = append(ptrs, dyp)
	}
	if yp != 0 {
		ptrs = append(ptrs, yp)
	}
	acc := 4
	if d == F64 {
		acc = 8
	}
	R := int64(g.Rows())
	if dprobs == 0 {
		// Rows only: a scatter like permute forward, several packs of dy in flight per thread.
		kname, u := "unpermute_bwd_rows", 8
		if d == BF16 && g.K == 1 {
			kname, u = "unpermute_bwd_rows4", 4
		}
		name, n := typedName(kname, d, vec(d, H, ptrs...))
		return c.do(func() error {
			return c.launch(name, g.T+zeroBlocks(R), rowThreads(int64(H)/n, u), (acc+4)*g.K,
				*new(args).p(dy).p(probs).p(dyp).p(rowOf).p(tokenOf).i(g.T).i(g.K).l(int64(H)).l(R).i(zeroRowsPerBlock).i(storeMode))
		})
	}
	// Batched yp loads win for float32/float64 with K > 2 and lose for K <= 2 and bfloat16
	// (register pressure), measured on an H200.
	kname := "unpermute_bwdseq"
	if d != BF16 && g.K > 2 {
		kname = "unpermute_bwd"
	}
	name, n := typedName(kname, d, vec(d, H, ptrs...))
	grid := g.T
	if dyp != 0 {
		grid += zeroBlocks(R)
	}
	return c.do(func() error {
		return c.launch(name, grid, rowThreads(int64(H)/n, 1), 32*8*8+(acc+4)*g.K,
			*new(args).p(dy).p(yp).p(probs).p(dyp).p(dprobs).p(rowOf).p(tokenOf).i(g.T).i(g.K).l(int64(H)).l(R).i(zeroRowsPerBlock).i(storeMode))
	})
}

// PermuteProbsForward writes pp [R] from probs [T,K] (0 for rows that hold no slot).
func (c *CUDA) PermuteProbsForward(d DType, g Geometry, pp, probs, plan cu.DevicePtr) error {
	if err := c.check(d, g, 1); err != nil {
		return err
	}
	_, _, rowOf, tokenOf := planParts(g, plan)
	name := "permute_probs_fwd_b4"
	if d.ProbSize() == 8 {
		name = "permute_probs_fwd_b8"
	}
	R := int64(g.Rows())
	return c.do(func() error {
		return c.launch(name, gridFor(R, 256), 256, 0, *new(args).p(probs).p(pp).p(rowOf).p(tokenOf).i(g.K).l(R))
	})
}

// PermuteProbsBackward writes dprobs [T,K] = dpp[rowOf[t,k]] (0 for dropped slots).
func (c *CUDA) PermuteProbsBackward(d DType, g Geometry, dprobs, dpp, plan cu.DevicePtr) error {
	if err := c.check(d, g, 1); err != nil {
		return err
	}
	_, _, rowOf, _ := planParts(g, plan)
	name := "permute_probs_bwd_b4"
	if d.ProbSize() == 8 {
		name = "permute_probs_bwd_b8"
	}
	tk := int64(g.T) * int64(g.K)
	return c.do(func() error {
		return c.launch(name, gridFor(tk, 256), 256, 0, *new(args).p(dpp).p(dprobs).p(rowOf).l(tk))
	})
}

// Add writes out[i] = a[i] + b[i] for n elements of d (bfloat16 adds in float32 and rounds
// once). out may alias a or b.
func (c *CUDA) Add(d DType, out, a, b cu.DevicePtr, n int64) error {
	if !d.valid() {
		return fmt.Errorf("gomoe: device add: unknown dtype %v", d)
	}
	return c.do(func() error {
		return c.launch("add_"+d.suffix(), gridFor(n, 256), 256, 0, *new(args).p(a).p(b).p(out).l(n))
	})
}
