package ep

import (
	"errors"
	"strings"
	"testing"

	"gorgonia.org/tensor"
)

// FuzzExchangeFaultyRank runs an expert-parallel step (plan, dispatch, experts, combine,
// gradients) on N ranks, each in its own goroutine with an in-process group that never times
// out, from fuzzed per-rank expert ids, where one rank may be faulty: a bad expert id, a
// repeated expert, a geometry that differs from the others', an error or a panic of its own
// code before or after the step, or another collective than the others after it. Every rank must return within
// rankDeadline; with no fault every rank succeeds, with a fault every rank returns an error.
func FuzzExchangeFaultyRank(f *testing.F) {
	f.Add(uint8(2), uint8(3), uint8(2), uint8(1), uint8(0), uint8(0), []byte{1, 2, 3, 4, 5, 6, 7, 8})
	f.Add(uint8(3), uint8(2), uint8(1), uint8(2), uint8(1), uint8(2), []byte{9, 9, 9})
	f.Add(uint8(4), uint8(5), uint8(2), uint8(1), uint8(2), uint8(3), []byte{0, 255, 17})
	f.Add(uint8(2), uint8(1), uint8(3), uint8(2), uint8(3), uint8(1), []byte{})
	f.Add(uint8(3), uint8(4), uint8(2), uint8(1), uint8(4), uint8(0), []byte{200, 1})
	f.Add(uint8(2), uint8(4), uint8(2), uint8(2), uint8(5), uint8(1), []byte{3})
	f.Add(uint8(2), uint8(4), uint8(2), uint8(2), uint8(6), uint8(1), []byte{3, 1})
	f.Add(uint8(2), uint8(4), uint8(2), uint8(2), uint8(7), uint8(0), []byte{3, 1, 4})
	f.Fuzz(func(t *testing.T, nb, tb, kb, eb, fault, who uint8, ids []byte) {
		n := 2 + int(nb)%3 // 2..4 ranks
		c := layerCase{N: n, T: 1 + int(tb)%6, K: 1 + int(kb)%3, H: 2, F: 2, A: 1 + int(eb)%2}
		c.E = n * (1 + int(eb)%3) // 1..3 experts per rank
		c.K = min(c.K, c.E)
		bad := int(who) % n
		kind := int(fault) % 8 // 0: no fault
		in := makeInputs(c, int64(len(ids)))
		for i := range in.ids { // fuzzed routing: distinct experts per token, some -1
			in.ids[i] = -1
		}
		for tk := 0; tk < n*c.T; tk++ {
			for k := 0; k < c.K; k++ {
				var b byte
				if i := tk*c.K + k; i < len(ids) {
					b = ids[i]
				}
				e := int32((tk + k + int(b)) % c.E)
				if b == 255 {
					e = -1
				}
				for j := 0; j < k; j++ {
					if in.ids[tk*c.K+j] == e {
						e = -1
					}
				}
				in.ids[tk*c.K+k] = e
			}
		}
		g, err := NewGroupTimeout(n, 0)
		if err != nil {
			t.Fatal(err)
		}
		errs := runRanksAlone(t, g, func(comm Communicator) error {
			r := comm.Rank()
			mine, cs := in, c
			mine.ids = append([]int32(nil), in.ids...)
			faulty := kind != 0 && r == bad
			step := func() error {
				rg, err := buildRank(cs, mine, tensor.Float64, comm)
				if err != nil {
					return err
				}
				_, _, err = runGraph(rg.g, tape, rg.cost, rg.wrt)
				return err
			}
			if faulty {
				switch kind {
				case 1:
					mine.ids[r*c.T*c.K] = int32(c.E + 3)
				case 2:
					if c.K < 2 {
						mine.ids[r*c.T*c.K] = -7
					} else {
						mine.ids[r*c.T*c.K+1] = mine.ids[r*c.T*c.K]
						if mine.ids[r*c.T*c.K] < 0 {
							mine.ids[r*c.T*c.K], mine.ids[r*c.T*c.K+1] = 0, 0
						}
					}
				case 3:
					cs.A++ // another alignment than the other ranks
				case 4:
					return RunRank(comm, func() error { return errors.New("injected error before the step") })
				case 5:
					return RunRank(comm, func() error {
						if err := step(); err != nil {
							return err
						}
						panic("injected panic after the step")
					})
				case 6:
					return RunRank(comm, func() error {
						if err := step(); err != nil {
							return err
						}
						b, _ := HostBuffer(make([]float32, 1), 1) // another collective than the others'
						return comm.AllToAll(b, b, make([][]Block, n), make([][]Block, n))
					})
				case 7:
					cs.T++ // more tokens than the others
					mine = makeInputs(layerCase{N: n, T: cs.T, K: c.K, E: c.E, H: c.H, F: c.F}, 1)
				}
			}
			return RunRank(comm, func() error {
				if err := step(); err != nil {
					return err
				}
				if kind >= 5 { // the faulty rank's extra work after the step: the others wait in the next step's first collective
					_, err := comm.ExchangeCounts(make([]int32, n))
					return err
				}
				return nil
			})
		})
		for r, err := range errs {
			switch {
			case kind == 0 && err != nil:
				t.Errorf("rank %d: no fault, but %v", r, err)
			case kind != 0 && err == nil:
				t.Errorf("fault %d on rank %d: rank %d returned no error", kind, bad, r)
			case kind != 0 && r != bad && !errors.Is(err, ErrAborted) && !strings.Contains(err.Error(), "rank") && !strings.Contains(err.Error(), "geometry"):
				t.Errorf("fault %d on rank %d: rank %d: %v does not name the cause", kind, bad, r, err)
			}
		}
	})
}
