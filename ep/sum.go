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
// Each weight's gradient is cut into N chunks; rank j gathers chunk j from every rank, adds
// them in rank order in float64, rounding once (kernels.ColSum's order, on the host and on the
// GPU), and sends its sum to every rank (two AllToAlls per weight: a reduce-scatter and an
// all-gather). Every rank ends with the same bits, so the replicas stay equal, and each rank
// sends and receives 2·(N−1)/N of the gradient's bytes, as a ring all-reduce does. The
// gradients must be float32 or float64, host or device values, of the same
// sizes on every rank: one ExchangeCounts checks that first (on the GPU, a host sync). Weights
// that share one gradient buffer (Gorgonia gives both inputs of an Add one gradient) have it
// summed once; a weight listed twice, or gradients that share memory in part, are an error. On
// any error c is aborted, so the other ranks return too.
func SumGradients(c Communicator, ws ...*G.Node) error {
	if err := CheckCommunicator(c); err != nil {
		return opkit.Wrap("ep.SumGradients", err)
	}
	fail := func(err error) error {
		err = opkit.Wrap("ep.SumGradients", err)
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
		fmt.Fprintf(h, "%v %v %t;", g.Shape(), g.Dtype(), shared[i]) // the shape, not only the size: a (2, 3) and a (3, 2) gradient were summed element by element
	}
	hdr := []int32{int32(len(gs)), int32(h.Sum32())}
	if r, theirs, err := agree(c, hdr); err != nil {
		return fail(err)
	} else if r >= 0 {
		return fail(fmt.Errorf("rank %d passes %d weights and rank %d %d, or their shapes, dtypes or shared gradient buffers differ: every rank must pass the same weights", r, theirs[0], c.Rank(), hdr[0]))
	}
	for i, g := range gs {
		if shared[i] {
			continue // summed with the first weight that has this buffer
		}
		if err := sumOverRanks(c, g); err != nil {
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

// chunk is the range [lo, hi) of the elements of a gradient of size elements that rank j of
// n sums.
func chunk(size, n, j int) (lo, hi int) { return size * j / n, size * (j + 1) / n }

// sumBlocks returns the block lists of the two exchanges of rank me of n, for a gradient of
// size elements exchanged as rows of width 1: the reduce-scatter (chunk j of this rank's
// gradient to rank j, rank i's chunk me to row i·m of an [n, m] buffer, m the size of chunk
// me) and the all-gather (the summed chunk me to every rank, rank i's to chunk i of the
// gradient). Empty chunks have no blocks.
func sumBlocks(size, n, me int) (scatterS, scatterR, gatherS, gatherR [][]Block) {
	lo, hi := chunk(size, n, me)
	m := hi - lo
	scatterS, scatterR = make([][]Block, n), make([][]Block, n)
	gatherS, gatherR = make([][]Block, n), make([][]Block, n)
	for j := range n {
		if l, h := chunk(size, n, j); h > l {
			scatterS[j] = []Block{{Off: l, Len: h - l}}
			gatherR[j] = []Block{{Off: l, Len: h - l}}
		}
		if m > 0 {
			scatterR[j] = []Block{{Off: j * m, Len: m}}
			gatherS[j] = []Block{{Off: 0, Len: m}}
		}
	}
	return scatterS, scatterR, gatherS, gatherR
}

// sumOverRanks replaces g by Σ_ranks g: this rank's chunk of every rank's g lands in row i
// of an [N, m] buffer (the reduce-scatter), whose column sums (kernels.ColSum) go back to
// every rank's g (the all-gather).
func sumOverRanks(c Communicator, g *tensor.Dense) error {
	n, me := c.Size(), c.Rank()
	size := g.Shape().TotalSize()
	lo, hi := chunk(size, n, me)
	m := hi - lo
	scatterS, scatterR, gatherS, gatherR := sumBlocks(size, n, me)
	if b := device.Of(g); b != nil {
		asDense := func(v G.Value) (*tensor.Dense, error) {
			d, ok := v.(*tensor.Dense)
			if !ok || d == nil {
				return nil, fmt.Errorf("the device backend returned a %T, want a *tensor.Dense", v)
			}
			return d, nil
		}
		whole := Buffer{Device: g.Uintptr(), Dtype: g.Dtype(), Rows: size, Width: 1}
		parts, sum := Buffer{Dtype: g.Dtype(), Width: 1}, Buffer{Dtype: g.Dtype(), Width: 1}
		var pd *tensor.Dense
		if m > 0 {
			all, err := b.StepZeros(g, g.Dtype(), n, m)
			if err != nil {
				return err
			}
			if pd, err = asDense(all); err != nil {
				return err
			}
			parts.Device, parts.Rows = pd.Uintptr(), n*m
		}
		if err := c.AllToAll(whole, parts, scatterS, scatterR); err != nil {
			return err
		}
		if m > 0 {
			s, err := b.ColSum(pd)
			if err != nil {
				return err
			}
			sd, err := asDense(s)
			if err != nil {
				return err
			}
			sum.Device, sum.Rows = sd.Uintptr(), m
		}
		return c.AllToAll(sum, whole, gatherS, gatherR)
	}
	switch d := g.Data().(type) {
	case []float32:
		return sumHost(c, d, m, scatterS, scatterR, gatherS, gatherR)
	case []float64:
		return sumHost(c, d, m, scatterS, scatterR, gatherS, gatherR)
	}
	return fmt.Errorf("gradient data is %T", g.Data())
}

// sumHost is sumOverRanks for host gradients; m is the size of this rank's chunk.
func sumHost[F float32 | float64](c Communicator, d []F, m int, scatterS, scatterR, gatherS, gatherR [][]Block) error {
	parts, sum := make([]F, c.Size()*m), make([]F, m)
	bufs := make([]Buffer, 3)
	for i, x := range [][]F{d, parts, sum} {
		var err error
		if bufs[i], err = HostBuffer(x, 1); err != nil {
			return err
		}
	}
	if err := c.AllToAll(bufs[0], bufs[1], scatterS, scatterR); err != nil {
		return err
	}
	if m > 0 {
		if err := kernels.ColSum(sum, parts); err != nil {
			return err
		}
	}
	return c.AllToAll(bufs[2], bufs[0], gatherS, gatherR)
}

// SumCounts returns counts (this rank's per-expert counts: Output.Counts' host data; the same
// length on every rank) summed over the ranks of c, the same on every rank: given to
// UpdateExpertBias as a tensor (tensor.New(tensor.WithBacking(sum))), they keep the expert
// bias identical everywhere. It is two ExchangeCounts, the lengths' and the counts' (on the
// GPU, host syncs). On any error c is aborted, so the other ranks return too.
func SumCounts(c Communicator, counts []int32) ([]int32, error) {
	if err := CheckCommunicator(c); err != nil {
		return nil, opkit.Wrap("ep.SumCounts", err)
	}
	fail := func(err error) ([]int32, error) {
		err = opkit.Wrap("ep.SumCounts", err)
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
			v := recv[i*len(counts)+e]
			if v < 0 { // every rank sees the same counts, so every rank fails alike
				return fail(fmt.Errorf("rank %d's count of expert %d is %d, want a count >= 0", i, e, v))
			}
			s += int64(v)
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
		return 0, opkit.Wrap("ep.ClipGradNorm", err)
	}
	fail := func(err error) (float64, error) {
		err = opkit.Wrap("ep.ClipGradNorm", err)
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
