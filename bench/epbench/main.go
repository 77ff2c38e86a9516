//go:build gomoecuda

// Command epbench measures the expert-parallel exchanges of package ep over NCCL, one rank per
// visible GPU (one goroutine each), on the docs/design.md shapes: the dispatch exchange (send layout
// -> expert-major local layout, one ncclSend/ncclRecv per (peer, expert) block), the combine
// exchange (the reverse), and, in the same run, a raw NCCL all-to-all of the same bytes (one
// block per peer) and a device-to-device copy of them. It also times the counts exchange (the
// host sync of every expert-parallel step).
//
//	source ep/nccl_env.sh && go run -tags gomoecuda ./bench/epbench [-gpus N] [-shapes dsv3,mixtral] [-dtype bf16|f32] [-iters 20] [-procs]
//
// With -procs every rank runs in its own process (the program starts itself once per GPU), as
// in multi-node training, so the ranks do not share one CUDA runtime.
//
// GB/s is the algorithm bandwidth of one rank: the bytes of the rows it sends (its own rows
// included) divided by the time of the exchange, median over iterations.
package main

/*
#cgo LDFLAGS: -lcudart
#include <cuda_runtime.h>
*/
import "C"

import (
	"encoding/hex"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"time"
	"unsafe"

	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/ep"
	"github.com/gomoe/gomoe/ep/nccl"
	"github.com/gomoe/gomoe/kernels"
)

type shape struct {
	name       string
	T, E, K, H int
}

var shapes = []shape{
	{"dsv3", 4096, 256, 8, 7168},
	{"te16k", 16384, 128, 6, 4096},
	{"mixtral", 4096, 8, 2, 4096},
	{"top1", 16384, 4, 1, 7168},
}

func main() {
	gpus := flag.Int("gpus", 0, "ranks (GPUs) to use; 0: all visible")
	only := flag.String("shapes", "", "comma-separated shape names (default all)")
	dtype := flag.String("dtype", "bf16", "bf16 or f32 (the exchange moves bytes; bf16 uses 2-byte rows)")
	iters := flag.Int("iters", 20, "timed iterations per measurement")
	align := flag.Int("A", 1, "alignment of the local expert segments")
	procs := flag.Bool("procs", false, "one process per GPU (as in multi-node training) instead of one goroutine per GPU")
	rank := flag.Int("rank", -1, "internal: this process's rank (with -procs)")
	idHex := flag.String("id", "", "internal: the NCCL unique id (with -procs)")
	cpuProf := flag.String("cpuprofile", "", "write a CPU profile of the run to this file")
	flag.Parse()
	// Bad counts used to panic (-iters 0 indexed an empty list of times, a negative one made
	// a slice of negative length); an unknown dtype ran as bf16.
	switch {
	case *iters < 1:
		fail(fmt.Errorf("-iters %d: want >= 1", *iters))
	case *gpus < 0:
		fail(fmt.Errorf("-gpus %d: want >= 0 (0: all visible)", *gpus))
	case *align < 1:
		fail(fmt.Errorf("-A %d: want >= 1", *align))
	case *dtype != "bf16" && *dtype != "f32":
		fail(fmt.Errorf("-dtype %q: want bf16 or f32", *dtype))
	}
	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			fail(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fail(err)
		}
		defer pprof.StopCPUProfile()
	}
	n, err := nccl.DeviceCount()
	if err != nil || n == 0 {
		fail(fmt.Errorf("no CUDA device: %v", err))
	}
	if *gpus > 0 {
		n = min(n, *gpus)
	}
	dt := tensor.Uint16 // a 2-byte stand-in for bfloat16: the exchange copies bytes
	if *dtype == "f32" {
		dt = tensor.Float32
	}
	if *procs && *rank < 0 {
		spawn(n)
		return
	}
	var comms []*nccl.Comm
	if *procs {
		var id nccl.ID
		b, err := hex.DecodeString(*idHex)
		if err != nil || len(b) != len(id) {
			fail(fmt.Errorf("bad -id"))
		}
		copy(id[:], b)
		c, err := nccl.New(id, *rank, n, *rank)
		if err != nil {
			fail(err)
		}
		comms = []*nccl.Comm{c}
	} else {
		devs := make([]int, n)
		for i := range devs {
			devs[i] = i
		}
		if comms, err = nccl.NewGroup(devs); err != nil {
			fail(err)
		}
	}
	defer func() {
		for _, c := range comms {
			c.Close()
		}
	}()
	lead := comms[0].Rank() == 0
	if lead {
		mode := "one goroutine per GPU"
		if *procs {
			mode = "one process per GPU"
		}
		fmt.Printf("epbench: %d rank(s), %s, dtype %s, NCCL_NVLS_ENABLE=%s, median of %d\n", n, mode, *dtype, os.Getenv("NCCL_NVLS_ENABLE"), *iters)
		fmt.Println("| shape | N | MB sent/rank | counts µs | dispatch ms | GB/s | combine ms | GB/s | raw a2a ms | GB/s | D2D copy GB/s | dispatch/raw |")
		fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|")
	}
	for _, s := range shapes {
		if *only != "" && !strings.Contains(","+*only+",", ","+s.name+",") {
			continue
		}
		if s.E%n != 0 {
			if !lead {
				continue
			}
			fmt.Printf("| %s | %d | E=%d not divisible by N | | | | | | | | | |\n", s.name, n, s.E)
			continue
		}
		if err := bench(comms, s, dt, *iters, *align); err != nil {
			fail(fmt.Errorf("%s: %w", s.name, err))
		}
	}
}

// spawn runs this program once per rank with -rank and the NCCL id of a communicator made
// here (its bootstrap root lives in this process, which waits for the ranks).
func spawn(n int) {
	id, err := nccl.NewID()
	if err != nil {
		fail(err)
	}
	cmds := make([]*exec.Cmd, n)
	for r := range cmds {
		args := append([]string{}, os.Args[1:]...)
		args = append(args, "-rank", fmt.Sprint(r), "-id", hex.EncodeToString(id[:]))
		cmds[r] = exec.Command(os.Args[0], args...)
		cmds[r].Stdout, cmds[r].Stderr = os.Stdout, os.Stderr
		if err := cmds[r].Start(); err != nil {
			fail(err)
		}
	}
	for r, c := range cmds {
		if err := c.Wait(); err != nil {
			fail(fmt.Errorf("rank %d: %w", r, err))
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "epbench:", err)
	os.Exit(1)
}

// rankState is one rank's buffers and block lists for one shape.
type rankState struct {
	send, recv, raw   *nccl.DeviceBuffer
	sends, recvs      [][]ep.Block // per-expert blocks (dispatch direction)
	rawS, rawR        [][]ep.Block // one block per peer
	counts            []int32      // what the counts exchange sends
	sentRows, rawRows int
}

func bench(comms []*nccl.Comm, s shape, dt tensor.Dtype, iters, A int) error {
	n := comms[0].Size()
	states := make([]*rankState, n)
	// Routing: random balanced top-K with distinct experts, per rank.
	err := all(comms, func(c *nccl.Comm) error {
		st, err := setup(c, s, dt, A, int64(c.Rank()))
		states[c.Rank()] = st
		return err
	})
	if err != nil {
		return err
	}
	defer func() {
		for _, st := range states {
			if st != nil {
				st.send.Free()
				st.recv.Free()
				st.raw.Free()
			}
		}
	}()
	row := s.H * int(dt.Type.Size())
	st0 := states[comms[0].Rank()]
	mb := float64(st0.sentRows*row) / 1e6
	counts := timeIt(comms, iters, func(c *nccl.Comm) error {
		_, err := c.ExchangeCounts(states[c.Rank()].counts)
		return err
	})
	var host []time.Duration // rank 0's time inside AllToAll (host work: planning, enqueueing)
	disp := timeIt(comms, iters, func(c *nccl.Comm) error {
		st := states[c.Rank()]
		t0 := time.Now()
		if err := c.AllToAll(st.send.Buffer, st.recv.Buffer, st.sends, st.recvs); err != nil {
			return err
		}
		if c.Rank() == 0 {
			host = append(host, time.Since(t0))
		}
		return c.Sync()
	})
	if len(host) > warmups { // rank 0's process only: leave out timeIt's untimed warm-up calls
		host = host[warmups:]
	}
	comb := timeIt(comms, iters, func(c *nccl.Comm) error {
		st := states[c.Rank()]
		if err := c.AllToAll(st.recv.Buffer, st.send.Buffer, st.recvs, st.sends); err != nil {
			return err
		}
		return c.Sync()
	})
	raw := timeIt(comms, iters, func(c *nccl.Comm) error {
		st := states[c.Rank()]
		if err := c.AllToAll(st.send.Buffer, st.raw.Buffer, st.rawS, st.rawR); err != nil {
			return err
		}
		return c.Sync()
	})
	copyGBs, err := d2d(comms[0], st0, row, iters)
	if err != nil {
		return err
	}
	if comms[0].Rank() != 0 {
		return nil
	}
	gbs := func(d time.Duration) float64 { return float64(st0.sentRows*row) / d.Seconds() / 1e9 }
	fmt.Printf("| %s | %d | %.1f | %.0f | %.3f | %.0f | %.3f | %.0f | %.3f | %.0f | %.0f | %.2f |\n",
		s.name, n, mb, float64(counts.Nanoseconds())/1e3,
		ms(disp), gbs(disp), ms(comb), gbs(comb), ms(raw), gbs(raw), copyGBs, raw.Seconds()/disp.Seconds())
	sort.Slice(host, func(a, b int) bool { return host[a] < host[b] })
	fmt.Fprintf(os.Stderr, "%s N=%d: dispatch host time in AllToAll (rank 0, median of %d): %.3f ms\n", s.name, n, len(host), ms(host[len(host)/2]))
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }

// setup builds rank c's send plan from random routing, exchanges the counts once to learn the
// receive layout, and allocates the device buffers.
func setup(c *nccl.Comm, s shape, dt tensor.Dtype, A int, seed int64) (*rankState, error) {
	n := c.Size()
	el := s.E / n
	rng := rand.New(rand.NewSource(seed))
	ids := make([]int32, s.T*s.K)
	for t := 0; t < s.T; t++ {
		for k, e := range rng.Perm(s.E)[:s.K] {
			ids[t*s.K+k] = int32(e)
		}
	}
	g := kernels.Geometry{T: s.T, K: s.K, E: s.E, A: 1}
	flat := make([]int32, g.PlanLen())
	if err := kernels.BuildPlan[float32](flat, g, ids, nil); err != nil {
		return nil, err
	}
	sp, err := g.View(flat)
	if err != nil {
		return nil, err
	}
	st := &rankState{counts: append([]int32(nil), sp.Counts...)}
	cnt, err := c.ExchangeCounts(st.counts)
	if err != nil {
		return nil, err
	}
	// cnt[i*el+l]: rows from rank i for local expert l.
	st.sends, st.recvs = make([][]ep.Block, n), make([][]ep.Block, n)
	st.rawS, st.rawR = make([][]ep.Block, n), make([][]ep.Block, n)
	for j := 0; j < n; j++ {
		lo := int(sp.Offsets[j*el])
		hi := int(sp.Offsets[(j+1)*el])
		for l := 0; l < el; l++ {
			e := j*el + l
			st.sends[j] = append(st.sends[j], ep.Block{Off: int(sp.Offsets[e]), Len: int(sp.Counts[e])})
		}
		st.rawS[j] = []ep.Block{{Off: lo, Len: hi - lo}}
		st.sentRows += hi - lo
	}
	at := 0
	for l := 0; l < el; l++ {
		seg := 0
		for i := 0; i < n; i++ {
			st.recvs[i] = append(st.recvs[i], ep.Block{Off: at + seg, Len: int(cnt[i*el+l])})
			seg += int(cnt[i*el+l])
		}
		at += (seg + A - 1) / A * A
	}
	rawAt := 0
	for i := 0; i < n; i++ {
		m := 0
		for l := 0; l < el; l++ {
			m += int(cnt[i*el+l])
		}
		st.rawR[i] = []ep.Block{{Off: rawAt, Len: m}}
		rawAt += m
	}
	st.rawRows = rawAt
	gl, err := ep.LocalGeometry(kernels.Geometry{T: s.T, K: s.K, E: s.E, A: A}, n)
	if err != nil {
		return nil, err
	}
	if st.send, err = c.NewDeviceBuffer(ep.Buffer{Dtype: dt, Rows: sp.Rows(), Width: s.H}); err != nil {
		return nil, err
	}
	if st.recv, err = c.NewDeviceBuffer(ep.Buffer{Dtype: dt, Rows: gl.Rows(), Width: s.H}); err != nil {
		return nil, err
	}
	if st.raw, err = c.NewDeviceBuffer(ep.Buffer{Dtype: dt, Rows: max(rawAt, 1), Width: s.H}); err != nil {
		return nil, err
	}
	return st, nil
}

// all runs fn on every rank at once, one goroutine (locked to its thread) per rank.
func all(comms []*nccl.Comm, fn func(c *nccl.Comm) error) error {
	errs := make([]error, len(comms))
	var wg sync.WaitGroup
	for r, c := range comms {
		wg.Add(1)
		go func(r int, c *nccl.Comm) {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			errs[r] = fn(c)
		}(r, c)
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			return fmt.Errorf("rank %d: %w", r, err)
		}
	}
	return nil
}

// warmups is how many untimed calls of fn timeIt makes on every rank first.
const warmups = 2

// timeIt runs fn on all ranks warmups times to warm up, then iters times, and returns the
// median wall time of one collective (fn waits for its rank's stream).
func timeIt(comms []*nccl.Comm, iters int, fn func(c *nccl.Comm) error) time.Duration {
	for i := 0; i < warmups; i++ {
		if err := all(comms, fn); err != nil {
			fail(err)
		}
	}
	ds := make([]time.Duration, iters)
	for i := range ds {
		t0 := time.Now()
		if err := all(comms, fn); err != nil {
			fail(err)
		}
		ds[i] = time.Since(t0)
	}
	sort.Slice(ds, func(a, b int) bool { return ds[a] < ds[b] })
	return ds[len(ds)/2]
}

// d2d times cudaMemcpy device-to-device of rank 0's sent bytes on its GPU (GB/s, median).
func d2d(c *nccl.Comm, st *rankState, row, iters int) (float64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	C.cudaSetDevice(C.int(c.Device()))
	bytes := C.size_t(st.sentRows * row)
	if bytes == 0 {
		return 0, nil
	}
	src := *(*unsafe.Pointer)(unsafe.Pointer(&st.send.Device))
	dst := *(*unsafe.Pointer)(unsafe.Pointer(&st.recv.Device))
	ds := make([]time.Duration, iters)
	for i := -2; i < iters; i++ {
		C.cudaDeviceSynchronize()
		t0 := time.Now()
		if r := C.cudaMemcpy(dst, src, bytes, C.cudaMemcpyDeviceToDevice); r != C.cudaSuccess {
			return 0, fmt.Errorf("cudaMemcpy: %d", int(r))
		}
		C.cudaDeviceSynchronize()
		if i >= 0 {
			ds[i] = time.Since(t0)
		}
	}
	sort.Slice(ds, func(a, b int) bool { return ds[a] < ds[b] })
	return float64(bytes) / ds[len(ds)/2].Seconds() / 1e9, nil
}
