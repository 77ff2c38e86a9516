package ep

import (
	"fmt"
	"math/rand"
	"sync"
	"testing"

	"github.com/gomoe/gomoe/kernels"
)

// BenchmarkExchange measures the dispatch exchange of the in-process group (every rank copies
// the blocks addressed to it, one per peer and expert, out of the senders' send layouts into
// its expert-major layout) against copy() of the same bytes with the same number of
// goroutines, in the same run. Shapes are the docs/design.md mixtral and dsv3-like routings scaled
// to this machine (T tokens per rank, float32 rows).
//
//	go test -run '^$' -bench Exchange -benchtime 20x ./ep/
func BenchmarkExchange(b *testing.B) {
	type shape struct {
		name       string
		T, E, K, H int
	}
	for _, s := range []shape{{"mixtral-T2048-H1024", 2048, 8, 2, 1024}, {"dsv3-T1024-H1024", 1024, 64, 8, 1024}} {
		for _, n := range []int{1, 2, 4} {
			states, bytes := exchangeSetup(b, s.T, s.E, s.K, s.H, n)
			g, err := NewGroup(n)
			if err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("%s/N%d/exchange", s.name, n), func(b *testing.B) {
				b.SetBytes(int64(bytes))
				for i := 0; i < b.N; i++ {
					if err := g.Run(func(c Communicator) error {
						st := states[c.Rank()]
						return c.AllToAll(st.send, st.recv, st.sends, st.recvs)
					}); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(fmt.Sprintf("%s/N%d/copy", s.name, n), func(b *testing.B) {
				b.SetBytes(int64(bytes))
				for i := 0; i < b.N; i++ {
					var wg sync.WaitGroup
					for _, st := range states {
						wg.Add(1)
						go func(st *exchangeState) {
							defer wg.Done()
							copy(st.recv.Host.([]float32), st.send.Host.([]float32)[:st.rows*s.H])
						}(st)
					}
					wg.Wait()
				}
			})
		}
	}
}

type exchangeState struct {
	send, recv   Buffer
	sends, recvs [][]Block
	rows         int // rows this rank sends
}

// exchangeSetup builds each rank's send plan from random balanced routing and the block lists
// of the dispatch exchange (as the plan op would), with the counts exchanged by loops.
func exchangeSetup(b *testing.B, T, E, K, H, n int) ([]*exchangeState, int) {
	el := E / n
	plans := make([]kernels.Plan, n)
	for r := 0; r < n; r++ {
		rng := rand.New(rand.NewSource(int64(r)))
		ids := make([]int32, T*K)
		for t := 0; t < T; t++ {
			for k, e := range rng.Perm(E)[:K] {
				ids[t*K+k] = int32(e)
			}
		}
		g := kernels.Geometry{T: T, K: K, E: E, A: 1}
		flat := make([]int32, g.PlanLen())
		if err := kernels.BuildPlan[float32](flat, g, ids, nil); err != nil {
			b.Fatal(err)
		}
		plans[r], _ = g.View(flat)
	}
	gl, err := LocalGeometry(kernels.Geometry{T: T, K: K, E: E, A: 1}, n)
	if err != nil {
		b.Fatal(err)
	}
	states := make([]*exchangeState, n)
	total := 0
	for me := 0; me < n; me++ {
		st := &exchangeState{sends: sendBlocks(plans[me].Counts, plans[me].Offsets, n, el), recvs: make([][]Block, n)}
		at := 0
		for l := 0; l < el; l++ {
			for i := 0; i < n; i++ {
				c := int(plans[i].Counts[me*el+l])
				st.recvs[i] = append(st.recvs[i], Block{at, c})
				at += c
			}
		}
		for _, l := range st.sends {
			for _, bl := range l {
				st.rows += bl.Len
			}
		}
		total += st.rows * H * 4
		send := make([]float32, plans[me].Rows()*H)
		for i := range send {
			send[i] = float32(i)
		}
		st.send, _ = HostBuffer(send, H)
		st.recv, _ = HostBuffer(make([]float32, gl.Rows()*H), H)
		states[me] = st
	}
	return states, total
}

// BenchmarkExchangeCounts measures the counts exchange of the in-process group (the
// rendezvous of all ranks; with NCCL this is the step's host sync).
func BenchmarkExchangeCounts(b *testing.B) {
	for _, n := range []int{2, 4} {
		b.Run(fmt.Sprintf("N%d", n), func(b *testing.B) {
			g, err := NewGroup(n)
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			err = g.Run(func(c Communicator) error {
				send := make([]int32, n*40)
				for i := 0; i < b.N; i++ {
					if _, err := c.ExchangeCounts(send); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}
