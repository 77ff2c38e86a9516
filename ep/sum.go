package ep

import (
	"fmt"
	"hash/fnv"
	"math"
	"slices"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
	"github.com/gomoe/gomoe/train"
)

// SumGradients replaces the gradient of each of ws by its sum over the ranks of c: the
// data-parallel all-reduce of the weights every rank holds whole (moe.Layer.Replicated: the
// router and the shared experts), whose gradient on each rank is its own tokens' share. Call
// it on every rank with the same weights, in the same order, after the backward pass and
// before the solver's step (in train.Step's after).
//
// Each rank gathers every rank's gradient (one AllToAll per weight) and adds them in rank
// order in float64, rounding once (kernels.ColSum's order, on the host and on the GPU), so
// every rank ends with the same bits and the replicas stay equal. That moves N times the bytes
// of a ring all-reduce: it suits the router and shared experts of an MoE layer, not large
// dense models. The gradients must be float32 or float64, host or device values, of the same
// sizes on every rank: one ExchangeCounts checks that first (on the GPU, a host sync). Weights
// that share one gradient buffer (Gorgonia gives both inputs of an Add one gradient) have it
// summed once; a weight listed twice, or gradients that share memory in part, are an error. On
// any error c is aborted, so the other ranks return too.
func SumGradients(c Communicator, ws ...*G.Node) error {
	if err := CheckCommunicator(c); err != nil {
		return fmt.Errorf("gomoe: ep.SumGradients: %w", err)
	}
	fail := func(err error) error {
		err = fmt.Errorf("gomoe: ep.SumGradients: %w", err)
		c.Abort(err)
		return err
	}
	gs, vgs := make([]*tensor.Dense, len(ws)), make([]G.ValueGrad, len(ws))
	for i, w := range ws {
		g, err := gradOf(w)
		if err != nil {
			return fail(fmt.Errorf("weight %d: %w", i, err))
		}
		gs[i], vgs[i] = g, w
	}
	shared, err := train.SharedGradients(vgs)
	if err != nil {
		return fail(err)
	}
	// Every rank sends the number of its weights and a hash of their sizes, dtypes and shared
	// buffers to every rank (a fixed length, so that ranks that disagree still exchange) and
	// checks them.
	h := fnv.New32a()
	for i, g := range gs {
		fmt.Fprintf(h, "%d %v %t;", g.Shape().TotalSize(), g.Dtype(), shared[i])
	}
	hdr := []int32{int32(len(gs)), int32(h.Sum32())}
	if r, theirs, err := agree(c, hdr); err != nil {
		return fail(err)
	} else if r >= 0 {
		return fail(fmt.Errorf("rank %d passes %d weights and rank %d %d, or their sizes, dtypes or shared gradient buffers differ: every rank must pass the same weights", r, theirs[0], c.Rank(), hdr[0]))
	}
	// Every rank's row goes to every rank, where rank j's lands in row j.
	sends, recvs := make([][]Block, c.Size()), make([][]Block, c.Size())
	for j := range sends {
		sends[j] = []Block{{Off: 0, Len: 1}}
		recvs[j] = []Block{{Off: j, Len: 1}}
	}
	for i, g := range gs {
		if shared[i] {
			continue // summed with the first weight that has this buffer
		}
		if err := sumOverRanks(c, g, sends, recvs); err != nil {
			return fail(fmt.Errorf("weight %d (%s): %w", i, ws[i].Name(), err))
		}
	}
	return nil
}

// gradOf returns w's gradient as a contiguous float32 or float64 *tensor.Dense.
func gradOf(w *G.Node) (*tensor.Dense, error) {
	if w == nil {
		return nil, fmt.Errorf("nil node")
	}
	gv, err := w.Grad()
	if err != nil {
		return nil, fmt.Errorf("%s has no gradient: %w", w.Name(), err)
	}
	g, ok := gv.(*tensor.Dense)
	if !ok || g == nil || g.Shape().TotalSize() == 0 {
		return nil, fmt.Errorf("%s's gradient is %T, want a non-empty *tensor.Dense", w.Name(), gv)
	}
	if g.Dtype() != tensor.Float32 && g.Dtype() != tensor.Float64 {
		return nil, fmt.Errorf("%s's gradient is %v, want float32 or float64", w.Name(), g.Dtype())
	}
	if g.RequiresIterator() || g.IsView() {
		return nil, fmt.Errorf("%s's gradient is a view; the exchange needs contiguous values", w.Name())
	}
	if g.Shape().TotalSize() > kernels.MaxRows {
		return nil, fmt.Errorf("%s's gradient has %d elements, more than %d", w.Name(), g.Shape().TotalSize(), kernels.MaxRows)
	}
	return g, nil
}

// sumOverRanks replaces g by Σ_ranks g: every rank's g lands in row i of an [N, n] buffer
// (one AllToAll with the block lists sends and recvs), whose column sums (kernels.ColSum) are
// the result.
func sumOverRanks(c Communicator, g *tensor.Dense, sends, recvs [][]Block) error {
	n, me := c.Size(), c.Rank()
	size := g.Shape().TotalSize()
	if b := device.Of(g); b != nil {
		asDense := func(v G.Value) (*tensor.Dense, error) {
			d, ok := v.(*tensor.Dense)
			if !ok || d == nil {
				return nil, fmt.Errorf("the device backend returned a %T, want a *tensor.Dense", v)
			}
			return d, nil
		}
		all, err := b.StepZeros(g, g.Dtype(), n, size)
		if err != nil {
			return err
		}
		ad, err := asDense(all)
		if err != nil {
			return err
		}
		row := Buffer{Device: g.Uintptr(), Dtype: g.Dtype(), Rows: 1, Width: size}
		if err := c.AllToAll(row, Buffer{Device: ad.Uintptr(), Dtype: g.Dtype(), Rows: n, Width: size}, sends, recvs); err != nil {
			return err
		}
		sum, err := b.ColSum(all)
		if err != nil {
			return err
		}
		sd, err := asDense(sum)
		if err != nil {
			return err
		}
		// Back into g: an exchange of one block with this rank itself, a device-to-device copy.
		self := make([][]Block, n)
		self[me] = []Block{{Off: 0, Len: 1}}
		return c.AllToAll(Buffer{Device: sd.Uintptr(), Dtype: g.Dtype(), Rows: 1, Width: size}, row, self, self)
	}
	switch d := g.Data().(type) {
	case []float32:
		return sumHost(c, d, sends, recvs)
	case []float64:
		return sumHost(c, d, sends, recvs)
	}
	return fmt.Errorf("gradient data is %T", g.Data())
}

func sumHost[F float32 | float64](c Communicator, d []F, sends, recvs [][]Block) error {
	all := make([]F, c.Size()*len(d))
	send, err := HostBuffer(d, len(d))
	if err != nil {
		return err
	}
	recv, err := HostBuffer(all, len(d))
	if err != nil {
		return err
	}
	if err := c.AllToAll(send, recv, sends, recvs); err != nil {
		return err
	}
	return kernels.ColSum(d, all)
}

// SumCounts returns counts (this rank's per-expert counts: Output.Counts' host data; the same
// length on every rank) summed over the ranks of c, the same on every rank: given to
// UpdateExpertBias as a tensor (tensor.New(tensor.WithBacking(sum))), they keep the expert
// bias identical everywhere. It is two ExchangeCounts, the lengths' and the counts' (on the
// GPU, host syncs). On any error c is aborted, so the other ranks return too.
func SumCounts(c Communicator, counts []int32) ([]int32, error) {
	if err := CheckCommunicator(c); err != nil {
		return nil, fmt.Errorf("gomoe: ep.SumCounts: %w", err)
	}
	fail := func(err error) ([]int32, error) {
		err = fmt.Errorf("gomoe: ep.SumCounts: %w", err)
		c.Abort(err)
		return nil, err
	}
	// The lengths first, in an exchange of a fixed size: ranks that pass different lengths
	// would otherwise exchange different sizes, which NCCL does not check.
	if r, theirs, err := agree(c, []int32{int32(min(len(counts), math.MaxInt32))}); err != nil {
		return fail(err)
	} else if r >= 0 {
		return fail(fmt.Errorf("rank %d passes %d counts and rank %d %d: every rank must pass one count per expert", r, theirs[0], c.Rank(), len(counts)))
	}
	n := c.Size()
	recv, err := allGather(c, counts)
	if err != nil {
		return fail(err)
	}
	out := make([]int32, len(counts))
	for e := range counts {
		var s int64
		for i := 0; i < n; i++ {
			s += int64(recv[i*len(counts)+e])
		}
		if s > math.MaxInt32 || s < math.MinInt32 {
			return fail(fmt.Errorf("expert %d's counts sum to %d, beyond int32", e, s))
		}
		out[e] = int32(s)
	}
	return out, nil
}

// ClipGradNorm clips the gradients of ws (this rank's weights: the sharded ones, and the
// replicated ones, listed in replicated too, whose gradients SumGradients has already summed)
// by their global L2 norm over the ranks of c, and returns that norm: the sharded weights'
// squares summed over the ranks, the replicated weights' counted once (every rank holds the
// same). Every rank gets the same norm bits and scale, so the replicas take the same step.
// The sums of squares and the scaling are train.ClipGradNorm's (train.ClipGradNormWith), the
// scale maxNorm/(norm+1e-6) applied when below 1. Call it on every rank in train.Step's after,
// after SumGradients, with the optimiser's MaxGradNorm at 0 (which clips by this rank's norm
// only). Every weight of replicated must be among ws, and every rank must list the same
// replicated weights at the same places of ws and pass the same maxNorm (the exchange checks
// the weights' number and sizes, and maxNorm). One
// ExchangeCounts (on the GPU, besides the host sync of the norm itself). On any error c is
// aborted, so the other ranks return too.
func ClipGradNorm(c Communicator, maxNorm float64, ws, replicated G.Nodes) (float64, error) {
	if err := CheckCommunicator(c); err != nil {
		return 0, fmt.Errorf("gomoe: ep.ClipGradNorm: %w", err)
	}
	fail := func(err error) (float64, error) {
		err = fmt.Errorf("gomoe: ep.ClipGradNorm: %w", err)
		c.Abort(err)
		return 0, err
	}
	rep := make(map[*G.Node]bool, len(replicated))
	for _, w := range replicated {
		rep[w] = true
	}
	vgs := make([]G.ValueGrad, len(ws))
	// The replicated weights' number and sizes go with the sums, so that ranks that count
	// other weights once (and would clip by different norms) fail instead.
	h := fnv.New32a()
	nrep := 0
	for i, w := range ws {
		if w == nil {
			return fail(fmt.Errorf("weight %d is nil", i))
		}
		vgs[i] = w
		if rep[w] {
			fmt.Fprintf(h, "%d %d %v;", i, w.Shape().TotalSize(), w.Dtype())
			nrep++
		}
	}
	if nrep != len(rep) {
		for i, w := range replicated {
			if !slices.Contains(ws, w) {
				return fail(fmt.Errorf("replicated weight %d is not among the weights ws", i))
			}
		}
	}
	hdr := []int32{int32(nrep), int32(h.Sum32())}
	total := func(sq []float64) (float64, error) {
		var sharded, replicated float64
		for i, s := range sq {
			if rep[ws[i]] {
				replicated += s
			} else {
				sharded += s
			}
		}
		// Every rank's sharded sum and maxNorm, as the two halves of their float64 bits, and
		// hdr to every rank.
		bits, mbits := math.Float64bits(sharded), math.Float64bits(maxNorm)
		mine := []int32{int32(uint32(bits >> 32)), int32(uint32(bits)), hdr[0], hdr[1], int32(uint32(mbits >> 32)), int32(uint32(mbits))}
		recv, err := allGather(c, mine)
		if err != nil {
			return 0, err
		}
		sum := 0.0
		for i := 0; i < c.Size(); i++ {
			r := recv[len(mine)*i : len(mine)*(i+1)]
			if r[2] != hdr[0] || r[3] != hdr[1] {
				return 0, fmt.Errorf("rank %d lists %d replicated weights and rank %d %d, or their places or sizes differ: every rank must pass the same replicated weights", i, r[2], c.Rank(), hdr[0])
			}
			if r[4] != mine[4] || r[5] != mine[5] {
				theirs := math.Float64frombits(uint64(uint32(r[4]))<<32 | uint64(uint32(r[5])))
				return 0, fmt.Errorf("rank %d clips to maxNorm %v and rank %d to %v: every rank must pass the same maxNorm (the replicas would take different steps)", i, theirs, c.Rank(), maxNorm)
			}
			sum += math.Float64frombits(uint64(uint32(r[0]))<<32 | uint64(uint32(r[1])))
		}
		return sum + replicated, nil
	}
	norm, err := train.ClipGradNormWith(vgs, maxNorm, total)
	if err != nil {
		err = opkit.Wrap("ep.ClipGradNorm", err)
		c.Abort(err)
	}
	return norm, err
}

// agree sends hdr (the same length on every rank) to every rank of c and returns the first rank
// whose hdr differs from this rank's, with that rank's hdr; -1 and nil when all agree.
func agree(c Communicator, hdr []int32) (int, []int32, error) {
	recv, err := allGather(c, hdr)
	if err != nil {
		return -1, nil, err
	}
	for i := 0; i < c.Size(); i++ {
		if theirs := recv[i*len(hdr) : (i+1)*len(hdr)]; !slices.Equal(theirs, hdr) {
			return i, theirs, nil
		}
	}
	return -1, nil, nil
}

// allGather sends mine to every rank of c (one ExchangeCounts; every rank passes the same
// length) and returns every rank's, rank i's at [i·len(mine), (i+1)·len(mine)).
func allGather(c Communicator, mine []int32) ([]int32, error) {
	send := make([]int32, 0, c.Size()*len(mine))
	for j := 0; j < c.Size(); j++ {
		send = append(send, mine...)
	}
	recv, err := c.ExchangeCounts(send)
	if err != nil {
		return nil, err
	}
	if len(recv) != len(send) {
		return nil, fmt.Errorf("the exchange returned %d entries, want %d", len(recv), len(send))
	}
	return recv, nil
}
