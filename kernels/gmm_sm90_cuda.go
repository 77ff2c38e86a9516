//go:build gomoecuda

package kernels

/*
#cgo LDFLAGS: ${SRCDIR}/gmm_host_linux_amd64.a -lcudart -lstdc++ -lcuda
#include <cuda.h>
#include <stdint.h>

// The host library's interface (gmm_sm90_host.cu).
typedef struct {
	int kernel;
	int groups;
	int sm_count;
	int device_id;
	uint64_t shapes, ptrA, ptrB, ptrC, ptrD, ldA, ldB, ldC, ldD;
	float alpha, beta;
	uint64_t workspace;
	int raster;
	int swizzle;
} gomoe_gmm90_args;

typedef struct {
	unsigned long long params_bytes;
	unsigned long long workspace_bytes;
	unsigned int smem_bytes;
	unsigned int block[3], cluster[3], grid[3];
} gomoe_gmm90_info;

int gomoe_gmm90_build(const gomoe_gmm90_args *a, void *params, unsigned long long cap, gomoe_gmm90_info *info);

// The same code built for CUDA 13's layout of CUTLASS's Params (build_fatbin.sh, "cu13"): it
// pairs with gomoe_sm90_cu13.fatbin.
int gomoe13_gmm90_build(const gomoe_gmm90_args *a, void *params, unsigned long long cap, gomoe_gmm90_info *info);

// gomoe_gmm90_build_for calls the host library of the nvcc 13 pair (cu13) or the nvcc 12 one.
static int gomoe_gmm90_build_for(int cu13, const gomoe_gmm90_args *a, void *params, unsigned long long cap,
		gomoe_gmm90_info *info) {
	return cu13 ? gomoe13_gmm90_build(a, params, cap, info) : gomoe_gmm90_build(a, params, cap, info);
}

// gomoe_launch_cluster launches f on stream s with one by-value parameter (params) and a
// cluster shape; with pdl, also with programmatic stream serialization (launch_cuda.go).
static CUresult gomoe_launch_cluster(CUfunction f, const unsigned *grid, const unsigned *block,
		const unsigned *cluster, unsigned smem, void *params, CUstream s, int pdl) {
	CUlaunchConfig cfg = {0};
	CUlaunchAttribute attr[2];
	void *args[1];
	cfg.gridDimX = grid[0];
	cfg.gridDimY = grid[1];
	cfg.gridDimZ = grid[2];
	cfg.blockDimX = block[0];
	cfg.blockDimY = block[1];
	cfg.blockDimZ = block[2];
	cfg.sharedMemBytes = smem;
	cfg.hStream = s;
	attr[0].id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
	attr[0].value.clusterDim.x = cluster[0];
	attr[0].value.clusterDim.y = cluster[1];
	attr[0].value.clusterDim.z = cluster[2];
	attr[1].id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
	attr[1].value.programmaticStreamSerializationAllowed = 1;
	cfg.attrs = attr;
	cfg.numAttrs = pdl ? 2 : 1;
	args[0] = params;
	return cuLaunchKernelEx(&cfg, f, args, 0);
}

// gomoe_set_smem allows f bytes of dynamic shared memory.
static CUresult gomoe_set_smem(CUfunction f, int bytes) {
	return cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes);
}

// gomoe_device_info reads the current context's device ordinal, compute capability and SM
// count (also declared in gmm_simt_cuda.go).
CUresult gomoe_device_info(int *ordinal, int *major, int *minor, int *sms) {
	CUdevice d;
	CUresult r = cuCtxGetDevice(&d);
	if (r != CUDA_SUCCESS) return r;
	*ordinal = (int)d;
	r = cuDeviceGetAttribute(major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, d);
	if (r == CUDA_SUCCESS) r = cuDeviceGetAttribute(minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, d);
	if (r == CUDA_SUCCESS) r = cuDeviceGetAttribute(sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, d);
	return r;
}
*/
import "C"

import (
	_ "embed"
	"fmt"
	"math"
	"sync"
	"unsafe"

	"gorgonia.org/cu"
)

// The bfloat16 grouped matmul on Hopper: CUTLASS's ptr-array grouped GEMM (gmm_sm90.cuh), with
// the per-expert sizes read on the device from the plan. A call enqueues two launches and
// waits for nothing:
//
//  1. gmm_prepare writes the group table (problem sizes, pointers, leading dimensions) from the
//     plan's counts and offsets and, unless the call accumulates, clears what belongs to no
//     expert (pad rows; the weight gradient of an expert with no rows);
//  2. the GEMM kernel reads the table.
//
// The GEMM's Params (built by CUTLASS's host code in the committed host library) hold only the
// addresses of the group table and of the kernel's workspace, which stay put for a given
// number of groups, so they are built once and reused: the launches depend on the shapes,
// never on the routing, and can be replayed (CUDA graphs).

//go:embed gomoe_sm90.fatbin
var sm90Fatbin string

// sm90Fatbin13 is the same kernels built by nvcc 13, whose code is faster (docs/grouped-gemm.md,
// "Measured"); its cubins load only with a driver for CUDA 13 or later, and its Params have
// CUDA 13's layout, which the cu13 host library builds.
//
//go:embed gomoe_sm90_cu13.fatbin
var sm90Fatbin13 string

// gmm90CU13 reports whether a driver of version driver (cuDriverGetVersion: 1000 × major +
// 10 × minor; -1 unknown) gets the nvcc 13 pair of sm_90a fatbin and host library: from CUDA
// 13.0 on, unless gmm90NoCU13 (a test hook).
func gmm90CU13(driver int) bool { return driver >= 13000 && !gmm90NoCU13 }

// gmm90Fatbin returns the file name (for errors) and contents of the sm_90a fatbin of the nvcc
// 13 pair (cu13) or of the nvcc 12 one.
func gmm90Fatbin(cu13 bool) (file, fatbin string) {
	if cu13 {
		return "gomoe_sm90_cu13.fatbin", sm90Fatbin13
	}
	return "gomoe_sm90.fatbin", sm90Fatbin
}

// gmm90NoCU13 makes gmm90CU13 take the nvcc 12 pair on every driver (tests run both).
var gmm90NoCU13 = false

// gmm90Scheds are the schedules of the sm_90a kernels (gmm_sm90.cuh's S0, S1): CUTLASS's
// cooperative or pingpong kernel, tile m×n×k and cluster m×n.
var gmm90Scheds = [...]string{
	"coop", // cooperative 128×256×64, cluster 2×1
	"ping", // pingpong 64×128×128, cluster 2×1
}

// gmm90Kernels are the sm_90a kernels (gmm_sm90.cuh's KernelOf): index len(gmm90Scheds)·form +
// schedule for those that overwrite their output (no C operand), and that plus gmm90Accumulating
// for the backward forms' kernels that add into it (D = A·B + C; the forward never accumulates).
var gmm90Kernels = func() (k [5 * len(gmm90Scheds)]string) {
	for f, form := range []string{"fwd", "rows", "wgrad"} {
		for s, sched := range gmm90Scheds {
			i := f*len(gmm90Scheds) + s
			k[i] = "gmm90_" + form + "_" + sched
			if f != gmmForward {
				k[i+gmm90Accumulating] = k[i] + "_acc"
			}
		}
	}
	return k
}()

// gmm90Accumulating is the index offset of the accumulating sm_90a kernels.
const gmm90Accumulating = 2 * len(gmm90Scheds)

// gmm90ForceSched, when not negative, makes every sm_90a grouped GEMM use that schedule
// (benchmarks compare them).
var gmm90ForceSched = -1

// The grouped matmul's three forms (gmm.cu).
const (
	gmmForward = iota
	gmmRows
	gmmWeights
)

// gomoeGMMFatbin is gomoe_gmm.fatbin (gmm.cu: the group-table and zeroing kernels of every
// device-sized grouped matmul, and the sync probe; sm_80, sm_90a and compute_80 PTX).
//
//go:embed gomoe_gmm.fatbin
var gomoeGMMFatbin string

// gmmModuleKernels are the kernels of gomoe_gmm.fatbin; NewCUDA loads them beside the others.
var gmmModuleKernels = []string{"gmm_prepare", "wait_flag"}

// loadGMM loads gomoe_gmm.fatbin into c (its functions join c.fn). It runs inside c.do.
func (c *CUDA) loadGMM() error {
	mod, err := cu.LoadData(gomoeGMMFatbin)
	if err != nil {
		return fmt.Errorf("gomoe: loading the grouped matmul kernels: %w", err)
	}
	c.gmod = mod
	for _, n := range gmmModuleKernels {
		f, err := mod.Function(n)
		if err != nil {
			return fmt.Errorf("gomoe: CUDA kernel %s: %w", n, err)
		}
		c.fn[n] = f
	}
	return nil
}

// gmm90 is the sm_90a grouped matmul state of one CUDA value.
type gmm90 struct {
	mu sync.Mutex
	// unsupported says why this GPU cannot run the sm_90a kernels (not compute capability
	// 9.0): its bfloat16 grouped matmuls take cuBLAS. err says why kernels that should run here
	// did not load (a broken build, e.g. a fatbin and host library from different builds):
	// every grouped matmul that needs them returns it rather than silently taking cuBLAS.
	unsupported error
	err         error
	mod         cu.Module
	fn          [len(gmm90Kernels)]C.CUfunction
	ordinal     int
	sms         int
	cu13        bool       // the nvcc 13 pair (gmm90CU13)
	slots       [3]gmmSlot // one per form
}

// gmmSlot is one form's group table and workspace, and the Params built for them.
type gmmSlot struct {
	table   gmmTable
	ws      cu.DevicePtr // the GEMM kernels' workspace
	wsBytes int64
	oldWS   []cu.DevicePtr // workspaces outgrown, kept until close (see gmmTable)
	built   map[gmmKey]*gmmLaunch
}

type gmmKey struct {
	kernel      int
	groups      int // the call's number of experts
	alpha, beta float32
	tiles       gmm90Tiles
}

// gmm90Tiles is the order in which the sm_90a kernels' persistent blocks walk the tiles:
// raster 0 along m (the default), 1 along n, and CUTLASS's max swizzle size (1: none).
type gmm90Tiles struct{ raster, swizzle int }

// gmm90TileOrder is the tile order of every sm_90a grouped GEMM (a test hook may change it to
// measure others).
var gmm90TileOrder = gmm90Tiles{0, 1}

// gmmLaunch is a built launch of one kernel.
type gmmLaunch struct {
	params  []byte
	smem    uint32
	grid    [3]C.uint
	block   [3]C.uint
	cluster [3]C.uint
}

// gmm90Of returns c's sm_90a grouped matmul state, loading the kernels on first use (its
// unsupported and err say why they are unusable). It must run inside c.do.
func (c *CUDA) gmm90Of() *gmm90 {
	c.gmm90Once.Do(func() {
		st := &gmm90{}
		c.g90 = st
		var ordinal, major, minor, sms C.int
		if r := C.gomoe_device_info(&ordinal, &major, &minor, &sms); r != C.CUDA_SUCCESS {
			st.err = fmt.Errorf("gomoe: reading the device's attributes: CUDA error %d", int(r))
			return
		}
		if major != 9 || minor != 0 {
			st.unsupported = fmt.Errorf("gomoe: the sm_90a grouped GEMM needs compute capability 9.0, this GPU has %d.%d", major, minor)
			return
		}
		st.ordinal, st.sms = int(ordinal), int(sms)
		var fns []C.CUfunction
		st.cu13 = gmm90CU13(cu.Version())
		file, fatbin := gmm90Fatbin(st.cu13)
		st.mod, fns, st.err = loadCUTLASS(file, fatbin, "gmm90_params_bytes", gmm90Kernels[:], gmm90HostInfo(int(sms), st.cu13))
		copy(st.fn[:], fns)
	})
	return c.g90
}

// gmm90HostInfo returns, for loadCUTLASS, the host library's (cu13: the nvcc 13 pair's) Params
// size and dynamic shared memory of sm_90a kernel i on a GPU with sms SMs.
func gmm90HostInfo(sms int, cu13 bool) func(i int) (uint64, int, error) {
	return func(i int) (uint64, int, error) {
		var info C.gomoe_gmm90_info
		a := C.gomoe_gmm90_args{kernel: C.int(i), groups: 1, sm_count: C.int(sms)}
		if rc := C.gomoe_gmm90_build_for(cbool(cu13), &a, nil, 0, &info); rc != 0 && rc != 3 {
			return 0, 0, fmt.Errorf("host library returned %d", int(rc))
		}
		return uint64(info.params_bytes), int(info.smem_bytes), nil
	}
}

// loadCUTLASS loads a fatbin of CUTLASS kernels (file names it in errors) and looks up names.
// Each kernel's Params size as compiled (the device array sizesSym) must equal the host
// library's (host(i) returns it and the kernel's dynamic shared memory, which is then allowed),
// so that a fatbin and a host library from different builds are an error, not a bad launch. It
// runs inside c.do.
func loadCUTLASS(file, fatbin, sizesSym string, names []string, host func(i int) (params uint64, smem int, err error)) (cu.Module, []C.CUfunction, error) {
	mod, err := cu.LoadData(fatbin)
	if err != nil {
		return mod, nil, fmt.Errorf("gomoe: loading %s: %w", file, err)
	}
	g, size, err := mod.Global(sizesSym)
	if err != nil || size != int64(8*len(names)) {
		return mod, nil, fmt.Errorf("gomoe: %s: no Params size table (%v)", file, err)
	}
	devBytes := make([]uint64, len(names))
	if err := cu.MemcpyDtoH(unsafe.Pointer(&devBytes[0]), g, size); err != nil {
		return mod, nil, fmt.Errorf("gomoe: %s: reading the Params sizes: %w", file, err)
	}
	fns := make([]C.CUfunction, len(names))
	for i, n := range names {
		f, err := mod.Function(n)
		if err != nil {
			return mod, nil, fmt.Errorf("gomoe: CUDA kernel %s: %w", n, err)
		}
		fns[i] = handle(f)
		params, smem, err := host(i)
		if err != nil {
			return mod, nil, fmt.Errorf("gomoe: kernel %s: %w", n, err)
		}
		if params != devBytes[i] {
			return mod, nil, fmt.Errorf("gomoe: kernel %s: the host library's Params are %d bytes, the kernel's %d: %s and gmm_host_linux_amd64.a come from different builds", n, params, devBytes[i], file)
		}
		if r := C.gomoe_set_smem(fns[i], C.int(smem)); r != C.CUDA_SUCCESS {
			return mod, nil, fmt.Errorf("gomoe: kernel %s: setting %d bytes of shared memory: CUDA error %d", n, smem, int(r))
		}
	}
	return mod, fns, nil
}

// close frees the tables and workspaces and unloads the sm_90a module. It runs inside c.do.
func (st *gmm90) close() error {
	if st == nil {
		return nil
	}
	var err error
	for i := range st.slots {
		s := &st.slots[i]
		if e := s.table.free(); err == nil {
			err = e
		}
		if e := memFreeAll(append(s.oldWS, s.ws)); err == nil {
			err = e
		}
		*s = gmmSlot{}
	}
	if st.mod != (cu.Module{}) {
		if e := st.mod.Unload(); err == nil {
			err = e
		}
	}
	return err
}

// unloadGMM unloads gomoe_gmm.fatbin. It runs inside c.do.
func (c *CUDA) unloadGMM() error {
	if c.gmod == (cu.Module{}) {
		return nil
	}
	return c.gmod.Unload()
}

// gmmTable is a group table (gmm.cu) on the device, with room for groups groups.
//
// A table that a call outgrows is not freed but kept (old) until close, and so is an outgrown
// workspace (gmmSlot.oldWS): a CUDA graph captured earlier (train.GraphStep) has their
// addresses in its kernels' parameters, and an eager call with more experts between its
// replays must not hand that memory back to the allocator while a replay still writes and reads
// it. Each move at least doubles the room, so what is kept is less than what is in use, and a
// move never waits for the device.
type gmmTable struct {
	groups int
	ptr    cu.DevicePtr
	old    []cu.DevicePtr
}

// ensure gives t room for groups groups, moving it when it has less; moved says that anything
// built on its old address is stale. It runs inside c.do.
func (t *gmmTable) ensure(groups int) (moved bool, err error) {
	if t.ptr != 0 && t.groups >= groups {
		return false, nil
	}
	if t.ptr != 0 {
		groups = max(groups, 2*t.groups)
	}
	bytes := (12*int64(groups)+15)&^15 + 64*int64(groups)
	p, err := cu.MemAlloc(bytes)
	if err != nil {
		return false, fmt.Errorf("gomoe: grouped matmul group table: %w", err)
	}
	if t.ptr != 0 {
		t.old = append(t.old, t.ptr)
	}
	t.ptr, t.groups = p, groups
	return true, nil
}

// free releases t's memory, old tables included, once earlier launches, which may still read
// it, are done.
func (t *gmmTable) free() error {
	if t.ptr == 0 && len(t.old) == 0 {
		return nil
	}
	if err := cu.Synchronize(); err != nil {
		return err
	}
	err := memFreeAll(append(t.old, t.ptr))
	*t = gmmTable{}
	return err
}

// memFreeAll frees every non-zero pointer of ps and returns the first error.
func memFreeAll(ps []cu.DevicePtr) error {
	var err error
	for _, p := range ps {
		if p == 0 {
			continue
		}
		if e := cu.MemFree(p); err == nil {
			err = e
		}
	}
	return err
}

// at is the address of the shapes (i = -1) or of the i-th 8·G-byte array (ptrA, ptrB, ptrC,
// ptrD, ldA, ldB, ldC, ldD for i = 0..7) of the table laid out for G groups, as gmm_prepare
// lays it out for a call with E = G: the layout depends on G, so Params must be built for the
// call's number of experts, not for the table's room.
func (t *gmmTable) at(i int64, G int) uint64 {
	if i < 0 {
		return uint64(t.ptr)
	}
	g := int64(G)
	return uint64(t.ptr) + uint64((12*g+15)&^15+8*g*i)
}

// slot returns form's slot with a table of at least groups groups; a moved table forgets the
// launches built on the old one.
func (st *gmm90) slot(form, groups int) (*gmmSlot, error) {
	s := &st.slots[form]
	moved, err := s.table.ensure(groups)
	if err != nil {
		return nil, err
	}
	if moved || s.built == nil {
		s.built = map[gmmKey]*gmmLaunch{}
	}
	return s, nil
}

// launchFor returns the built launch of kernel k for calls with groups experts on slot s
// (form's group table), building the Params on first use.
func (st *gmm90) launchFor(s *gmmSlot, k, groups int, alpha, beta float32) (*gmmLaunch, error) {
	key := gmmKey{k, groups, alpha, beta, gmm90TileOrder}
	if l := s.built[key]; l != nil {
		return l, nil
	}
	at := func(i int64) C.uint64_t { return C.uint64_t(s.table.at(i, groups)) }
	a := C.gomoe_gmm90_args{
		kernel: C.int(k), groups: C.int(groups), sm_count: C.int(st.sms), device_id: C.int(st.ordinal),
		shapes: at(-1),
		ptrA:   at(0), ptrB: at(1), ptrC: at(2), ptrD: at(3),
		ldA: at(4), ldB: at(5), ldC: at(6), ldD: at(7),
		alpha: C.float(alpha), beta: C.float(beta),
		raster: C.int(gmm90TileOrder.raster), swizzle: C.int(gmm90TileOrder.swizzle),
	}
	var info C.gomoe_gmm90_info
	if rc := C.gomoe_gmm90_build_for(cbool(st.cu13), &a, nil, 0, &info); rc != 0 {
		return nil, fmt.Errorf("gomoe: sm_90a grouped GEMM %s: CUTLASS cannot run these arguments (code %d)", gmm90Kernels[k], int(rc))
	}
	if need := int64(info.workspace_bytes); need > s.wsBytes {
		// The old workspace is kept, not freed: a captured graph may use it (see gmmTable).
		p, err := cu.MemAlloc(max(need, 2*s.wsBytes, 256))
		if err != nil {
			return nil, fmt.Errorf("gomoe: grouped GEMM workspace: %w", err)
		}
		if s.ws != 0 {
			s.oldWS = append(s.oldWS, s.ws)
			s.built = map[gmmKey]*gmmLaunch{} // the old launches point at the old workspace
		}
		s.ws, s.wsBytes = p, max(need, 2*s.wsBytes, 256)
	}
	a.workspace = C.uint64_t(s.ws)
	l := &gmmLaunch{params: make([]byte, int(info.params_bytes))}
	if rc := C.gomoe_gmm90_build_for(cbool(st.cu13), &a, unsafe.Pointer(&l.params[0]), C.ulonglong(len(l.params)), &info); rc != 0 {
		return nil, fmt.Errorf("gomoe: sm_90a grouped GEMM %s: building its parameters failed (code %d)", gmm90Kernels[k], int(rc))
	}
	l.smem = uint32(info.smem_bytes)
	for i := 0; i < 3; i++ {
		l.grid[i], l.block[i], l.cluster[i] = info.grid[i], info.block[i], info.cluster[i]
	}
	s.built[key] = l
	return l, nil
}

// gmm90Kernel picks the kernel of form for these static sizes: the pingpong schedule when the
// average problem's m or n is at most 128 (as torch._grouped_mm does), else cooperative. It
// depends on the geometry only, never on the routing.
func gmm90Kernel(form int, g Geometry, H, N int) int {
	if gmm90ForceSched >= 0 {
		return form*len(gmm90Scheds) + gmm90ForceSched
	}
	m, n := g.Rows()/max(g.E, 1), N
	switch form {
	case gmmRows:
		n = H
	case gmmWeights:
		m = H
	}
	s := 0
	if m <= 128 || n <= 128 {
		s = 1
	}
	return form*len(gmm90Scheds) + s
}

// gmm90Usable reports whether the sm_90a kernels can run this bfloat16 problem: 16-byte rows
// and 16-byte aligned bases (TMA's requirement).
func gmm90Usable(H, N int, ptrs ...cu.DevicePtr) bool {
	if H%8 != 0 || N%8 != 0 {
		return false
	}
	for _, p := range ptrs {
		if p%16 != 0 {
			return false
		}
	}
	return true
}

// runGMM90 enqueues one grouped matmul of form on the sm_90a kernels: out (z, dxp or dw) from
// a and b (xp and w, dz and w, or xp and dz). It must run inside c.do.
func (c *CUDA) runGMM90(st *gmm90, form int, g Geometry, H, N int, out, a, b, plan cu.DevicePtr, accumulate bool) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	s, err := st.slot(form, g.E)
	if err != nil {
		return err
	}
	k, beta := gmm90Kernel(form, g, H, N), float32(0)
	if accumulate {
		if form == gmmForward {
			return fmt.Errorf("gomoe: the grouped matmul forward has no accumulating kernel")
		}
		k, beta = k+gmm90Accumulating, 1
	}
	l, err := st.launchFor(s, k, g.E, 1, beta)
	if err != nil {
		return err
	}
	if err := c.gmmSetup(form, BF16, g, H, N, out, a, b, plan, s.table.ptr, accumulate); err != nil {
		return err
	}
	return cuErr("launching "+gmm90Kernels[k], C.gomoe_launch_cluster(st.fn[k], &l.grid[0], &l.block[0], &l.cluster[0], C.uint(l.smem), unsafe.Pointer(&l.params[0]), c.cstream(), cbool(c.eagerPDL())))
}

// gmmSetup enqueues what every device-sized grouped matmul runs before its GEMM: gmm_prepare
// writes form's group table from the plan's counts and offsets and, unless the call
// accumulates, clears what of out belongs to no expert (rows whose tokenOf is negative for
// forms 0 and 1; dw[e] of the experts with no rows or a segment outside the rows for form 2),
// in one launch. It must run inside c.do.
func (c *CUDA) gmmSetup(form int, d DType, g Geometry, H, N int, out, a, b, plan, table cu.DevicePtr, accumulate bool) error {
	counts, offsets, _, tokenOf := planParts(g, plan)
	grid, zero, chunks := (g.E+255)/256, 0, 0
	if !accumulate {
		zero = 1
		if form == gmmWeights {
			mat := int64(H) * int64(N) * int64(d.Size())
			chunks = int(min((mat/16+255)/256, 64))
			grid = max(grid, min(g.E*chunks, 1024))
		} else {
			grid = max(grid, min(gridFor(int64(g.Rows()), 256), 1024))
		}
	}
	var pa args
	pa.i(form).p(counts).p(offsets).i(g.E).l(int64(g.Rows())).l(int64(H)).l(int64(N)).l(int64(d.Size())).p(a).p(b).p(out).p(table).p(c.status).p(tokenOf).i(zero).i(chunks)
	return c.launch("gmm_prepare", grid, 256, 0, pa)
}

// StatusBadPlan is the status bit the device-sized grouped matmul sets when the plan gives an
// expert a segment outside [0, R) (gmm.cu's GMM_STATUS_BAD_PLAN): that expert gets no GEMM and,
// in the weight gradient, dW = 0. The cuBLAS path reads the offsets on the host and refuses
// such a plan at once instead.
const StatusBadPlan = 32

// gmmForceCUBLAS makes every grouped matmul take the cuBLAS path (tests compare the two).
var gmmForceCUBLAS = false

var errGMMUnavailable = fmt.Errorf("gomoe: no device-sized grouped GEMM for this call")

// gmmDevice runs a grouped matmul of form with sizes read on the device, where a kernel for
// it exists (bfloat16 on sm_90a with 16-byte rows; float32 and float64 on compute capability
// 8.0 and later); done false means the caller takes the cuBLAS path. Kernels that apply to
// this GPU but did not load are an error, not a fallback: the cuBLAS path reads the sizes on
// the host, which would break a captured step far from the cause. It checks the arguments
// as the cuBLAS path does, except the plan's offsets, which stay on the device: a segment
// outside the rows is skipped and flagged (StatusBadPlan).
func (c *CUDA) gmmDevice(what string, form int, d DType, g Geometry, H, N int, out, a, b, plan cu.DevicePtr, accumulate bool) (done bool, err error) {
	sm90 := d == BF16 && gmm90Usable(H, N, out, a, b)
	simt := d == F32 || d == F64
	if gmmForceCUBLAS || !(sm90 || simt) {
		return false, nil
	}
	if err := g.Validate(); err != nil {
		return true, err
	}
	if H < 1 || N < 1 || H > math.MaxInt32 || N > math.MaxInt32 || int64(g.Rows()) > math.MaxInt32 {
		return true, fmt.Errorf("gomoe: grouped matmul %s: H=%d N=%d R=%d, want each in [1, 2^31)", what, H, N, g.Rows())
	}
	for _, p := range []cu.DevicePtr{out, a, b, plan} {
		if p == 0 {
			return true, fmt.Errorf("gomoe: grouped matmul %s: null device pointer", what)
		}
	}
	err = c.do(func() error {
		if simt {
			st := c.gmmSimtOf()
			if err := gmmLoaded(what, st.unsupported, st.err); err != nil {
				return err
			}
			c.lastGMM = "simt"
			return c.runGMMSimt(st, form, d, g, H, N, out, a, b, plan, accumulate)
		}
		st := c.gmm90Of()
		if err := gmmLoaded(what, st.unsupported, st.err); err != nil {
			return err
		}
		c.lastGMM = "sm90"
		return c.runGMM90(st, form, g, H, N, out, a, b, plan, accumulate)
	})
	if err == errGMMUnavailable {
		return false, nil
	}
	return true, err
}

// gmmLoaded turns a kernel state's two reasons into gmmDevice's answer: errGMMUnavailable
// (take cuBLAS) when this GPU cannot run the kernels, an error naming the call when they
// should run here but did not load, nil when they are ready.
func gmmLoaded(what string, unsupported, err error) error {
	switch {
	case unsupported != nil:
		return errGMMUnavailable
	case err != nil:
		return fmt.Errorf("gomoe: grouped matmul %s: the device-sized GEMM did not load: %w", what, err)
	}
	return nil
}
