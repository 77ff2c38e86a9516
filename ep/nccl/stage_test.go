package nccl

import (
	"bytes"
	"fmt"
	"math/rand"
	"testing"

	"github.com/gomoe/gomoe/ep"
)

// stageCase is an exchange of N ranks: sends[r][j] and recvs[r][i] are rank r's block lists,
// over send buffers of sendRows[r] rows and receive buffers of recvRows[r] rows.
type stageCase struct {
	sends, recvs       [][][]ep.Block
	sendRows, recvRows []int
}

// expertMajorCase is the layout of an expert-parallel dispatch: rank r sends, for each peer j
// and each of j's el local experts, cnt[r][j][l] rows, contiguous per peer in the send buffer
// (expert-major over all experts); rank j receives them expert-major over its local experts,
// rows from rank 0 first, segments aligned to a. With full, no block is empty.
func expertMajorCase(rng *rand.Rand, n, el, maxRows, a int, full bool) stageCase {
	cnt := make([][][]int, n)
	for r := range cnt {
		cnt[r] = make([][]int, n)
		for j := range cnt[r] {
			cnt[r][j] = make([]int, el)
			for l := range cnt[r][j] {
				if full {
					cnt[r][j][l] = 1 + rng.Intn(maxRows)
				} else if rng.Intn(4) > 0 {
					cnt[r][j][l] = rng.Intn(maxRows + 1)
				}
			}
		}
	}
	c := stageCase{sends: make([][][]ep.Block, n), recvs: make([][][]ep.Block, n), sendRows: make([]int, n), recvRows: make([]int, n)}
	for r := 0; r < n; r++ {
		c.sends[r], c.recvs[r] = make([][]ep.Block, n), make([][]ep.Block, n)
		at := 0
		for j := 0; j < n; j++ {
			for l := 0; l < el; l++ {
				c.sends[r][j] = append(c.sends[r][j], ep.Block{Off: at, Len: cnt[r][j][l]})
				at += cnt[r][j][l]
			}
		}
		c.sendRows[r] = at
		at = 0
		for l := 0; l < el; l++ {
			seg := 0
			for i := 0; i < n; i++ {
				c.recvs[r][i] = append(c.recvs[r][i], ep.Block{Off: at + seg, Len: cnt[i][r][l]})
				seg += cnt[i][r][l]
			}
			at += (seg + a - 1) / a * a
		}
		c.recvRows[r] = at + a // spare rows at the end, left as they are
	}
	return c
}

// reversed is the combine direction of c: the receive lists become the send lists.
func (c stageCase) reversed() stageCase {
	return stageCase{sends: c.recvs, recvs: c.sends, sendRows: c.recvRows, recvRows: c.sendRows}
}

// shuffledCase pairs m blocks per (sender, receiver) with random lengths and places every
// rank's blocks in a random order with random gaps on both sides.
func shuffledCase(rng *rand.Rand, n, m, maxRows int) stageCase {
	c := stageCase{sends: make([][][]ep.Block, n), recvs: make([][][]ep.Block, n), sendRows: make([]int, n), recvRows: make([]int, n)}
	for r := 0; r < n; r++ {
		c.sends[r], c.recvs[r] = make([][]ep.Block, n), make([][]ep.Block, n)
		for j := 0; j < n; j++ {
			c.sends[r][j] = make([]ep.Block, m)
			c.recvs[r][j] = make([]ep.Block, m)
		}
	}
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			for k := 0; k < m; k++ {
				l := 0
				if rng.Intn(3) > 0 {
					l = rng.Intn(maxRows + 1)
				}
				c.sends[i][j][k].Len, c.recvs[j][i][k].Len = l, l
			}
		}
	}
	place := func(lists [][]ep.Block) int {
		type ref struct{ p, k int }
		var refs []ref
		for p := range lists {
			for k := range lists[p] {
				refs = append(refs, ref{p, k})
			}
		}
		rng.Shuffle(len(refs), func(a, b int) { refs[a], refs[b] = refs[b], refs[a] })
		at := 0
		for _, f := range refs {
			at += rng.Intn(2) // a gap
			lists[f.p][f.k].Off = at
			at += lists[f.p][f.k].Len
		}
		return at + 1
	}
	for r := 0; r < n; r++ {
		c.sendRows[r] = place(c.sends[r])
		c.recvRows[r] = place(c.recvs[r])
	}
	return c
}

// referenceExchange moves the k-th block rank i sends rank j into the k-th block j receives
// from i, straight from the block lists.
func referenceExchange(c stageCase, in, out [][]float32) {
	for i := range c.sends {
		for j := range c.sends[i] {
			for k, b := range c.sends[i][j] {
				d := c.recvs[j][i][k]
				copy(out[j][d.Off:d.Off+d.Len], in[i][b.Off:b.Off+b.Len])
			}
		}
	}
}

// simulateStaged runs every rank's staged exchange on host rows of width 1: gathers into the
// send staging, messages matched per (sender, receiver) in posting order, scatters and self
// copies. It checks that a chunk holds for each peer either one message or up to directBlocks
// unstaged ones, and that matched messages have the same length.
func simulateStaged(c stageCase, chunks int, in, out [][]float32) ([]stagedExchange, error) {
	n := len(c.sends)
	xs := make([]stagedExchange, n)
	sst, rst := make([][]float32, n), make([][]float32, n)
	type queued struct {
		m     message
		chunk int
	}
	sendQ := make([][][]queued, n) // [sender][receiver]
	recvQ := make([][][]queued, n) // [receiver][sender]
	for r := 0; r < n; r++ {
		x, err := planExchange(r, c.sends[r], c.recvs[r], chunks)
		if err != nil {
			return nil, fmt.Errorf("rank %d: %w", r, err)
		}
		xs[r] = x
		sst[r], rst[r] = make([]float32, x.SendStage), make([]float32, x.RecvStage)
		sendQ[r], recvQ[r] = make([][]queued, n), make([][]queued, n)
		for ci, ch := range x.Chunks {
			for dir, ms := range [][]message{ch.Sends, ch.Recvs} {
				per := map[int][]message{}
				for _, m := range ms {
					if m.Peer == r || m.Peer < 0 || m.Peer >= n || m.Rows <= 0 {
						return nil, fmt.Errorf("rank %d chunk %d: bad message %+v", r, ci, m)
					}
					per[m.Peer] = append(per[m.Peer], m)
					if dir == 0 {
						sendQ[r][m.Peer] = append(sendQ[r][m.Peer], queued{m, ci})
					} else {
						recvQ[r][m.Peer] = append(recvQ[r][m.Peer], queued{m, ci})
					}
				}
				for p, l := range per {
					if len(l) > 1 && (len(l) > directBlocks || l[0].Staged || l[1].Staged) {
						return nil, fmt.Errorf("rank %d chunk %d: %d messages for peer %d: %+v", r, ci, len(l), p, l)
					}
				}
			}
			for _, g := range ch.Gather {
				copy(sst[r][g.Dst:g.Dst+g.Len], in[r][g.Src:g.Src+g.Len])
			}
		}
		for _, s := range x.Self {
			copy(out[r][s.Dst:s.Dst+s.Len], in[r][s.Src:s.Src+s.Len])
		}
	}
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			sq, rq := sendQ[i][j], recvQ[j][i]
			if len(sq) != len(rq) {
				return nil, fmt.Errorf("rank %d posts %d messages to rank %d, which posts %d receives", i, len(sq), j, len(rq))
			}
			for k := range sq {
				s, d := sq[k].m, rq[k].m
				if s.Rows != d.Rows {
					return nil, fmt.Errorf("message %d from rank %d to %d: %d rows sent, %d received", k, i, j, s.Rows, d.Rows)
				}
				src, dst := in[i], out[j]
				if s.Staged {
					src = sst[i]
				}
				if d.Staged {
					dst = rst[j]
				}
				copy(dst[d.Off:d.Off+d.Rows], src[s.Off:s.Off+s.Rows])
			}
		}
	}
	for r, x := range xs {
		for _, ch := range x.Chunks {
			for _, s := range ch.Scatter {
				copy(out[r][s.Dst:s.Dst+s.Len], rst[r][s.Src:s.Src+s.Len])
			}
		}
	}
	return xs, nil
}

func TestPlanExchangeMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	type tc struct {
		name string
		c    stageCase
	}
	var cases []tc
	for _, n := range []int{1, 2, 3, 4} {
		for _, a := range []int{1, 3} {
			d := expertMajorCase(rng, n, 5, 4, a, false)
			cases = append(cases, tc{fmt.Sprintf("dispatch N%d A%d", n, a), d}, tc{fmt.Sprintf("combine N%d A%d", n, a), d.reversed()})
		}
		cases = append(cases, tc{fmt.Sprintf("shuffled N%d", n), shuffledCase(rng, n, 4, 3)})
		cases = append(cases, tc{fmt.Sprintf("empty N%d", n), expertMajorCase(rng, n, 3, 0, 1, false)})
	}
	for _, c := range cases {
		for _, chunks := range []int{1, 2, 3, 7} {
			name := fmt.Sprintf("%s chunks %d", c.name, chunks)
			n := len(c.c.sends)
			in, got, want := make([][]float32, n), make([][]float32, n), make([][]float32, n)
			for r := 0; r < n; r++ {
				in[r] = make([]float32, c.c.sendRows[r])
				for k := range in[r] {
					in[r][k] = float32(1000*r + k)
				}
				got[r], want[r] = make([]float32, c.c.recvRows[r]), make([]float32, c.c.recvRows[r])
				for k := range got[r] {
					got[r][k], want[r][k] = -1, -1
				}
			}
			referenceExchange(c.c, in, want)
			if _, err := simulateStaged(c.c, chunks, in, got); err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			for r := range got {
				for k := range got[r] {
					if got[r][k] != want[r][k] {
						t.Errorf("%s: rank %d row %d = %v, want %v", name, r, k, got[r][k], want[r][k])
						break
					}
				}
			}
		}
	}
}

// In the expert-parallel layouts the contiguous side needs no staging, the interleaved side
// stages every row from or to another rank (no block is empty, so the blocks of one peer are
// never contiguous there), and with one chunk each rank posts one message per peer and
// direction.
func TestPlanExchangeExpertMajorStaging(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	for _, n := range []int{2, 4} {
		d := expertMajorCase(rng, n, 8, 5, 1, true)
		few := expertMajorCase(rng, n, directBlocks, 5, 1, true)
		for dir, c := range []stageCase{few, few.reversed()} {
			for r := 0; r < n; r++ {
				x, err := planExchange(r, c.sends[r], c.recvs[r], 1)
				if err != nil {
					t.Fatal(err)
				}
				// directBlocks blocks per peer: one message each, nothing staged.
				if len(x.Chunks) != 1 || len(x.Chunks[0].Sends) != directBlocks*(n-1) || len(x.Chunks[0].Recvs) != directBlocks*(n-1) || x.SendStage+x.RecvStage != 0 {
					t.Errorf("N%d dir %d rank %d, %d blocks per peer: %+v", n, dir, r, directBlocks, x)
				}
			}
		}
		for dir, c := range []stageCase{d, d.reversed()} {
			for r := 0; r < n; r++ {
				x, err := planExchange(r, c.sends[r], c.recvs[r], 1)
				if err != nil {
					t.Fatal(err)
				}
				if len(x.Chunks) != 1 || len(x.Chunks[0].Sends) != n-1 || len(x.Chunks[0].Recvs) != n-1 {
					t.Errorf("N%d dir %d rank %d: %d chunks, want one with %d sends and receives: %+v", n, dir, r, len(x.Chunks), n-1, x.Chunks)
					continue
				}
				// Rows that cross ranks, counted from the lists.
				sent, recvd := 0, 0
				for j := 0; j < n; j++ {
					for k := range c.sends[r][j] {
						if j != r {
							sent += c.sends[r][j][k].Len
							recvd += c.recvs[r][j][k].Len
						}
					}
				}
				wantSend, wantRecv := 0, recvd // dispatch: direct sends, staged receives
				if dir == 1 {
					wantSend, wantRecv = sent, 0
				}
				if x.SendStage != wantSend || x.RecvStage != wantRecv {
					t.Errorf("N%d dir %d rank %d: staging %d send + %d receive rows, want %d + %d", n, dir, r, x.SendStage, x.RecvStage, wantSend, wantRecv)
				}
			}
		}
	}
}

func TestPlanExchangeErrors(t *testing.T) {
	for _, c := range []struct {
		name         string
		me           int
		sends, recvs [][]ep.Block
	}{
		{"lists differ in number", 0, [][]ep.Block{nil, nil}, [][]ep.Block{nil}},
		{"rank out of range", 2, [][]ep.Block{nil, nil}, [][]ep.Block{nil, nil}},
		{"self lengths differ", 0, [][]ep.Block{{{Off: 0, Len: 2}}}, [][]ep.Block{{{Off: 0, Len: 3}}}},
	} {
		if _, err := planExchange(c.me, c.sends, c.recvs, 1); err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
}

func TestAppendDescs(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	for it := 0; it < 50; it++ {
		// Runs from disjoint source rows to disjoint destination rows, rows of row bytes, some
		// runs longer than one piece.
		row := []int{2, 6, 16, 7168, 40000}[rng.Intn(5)]
		src, dst := rng.Perm(40), rng.Perm(40)
		var runs []copyRun
		for k := 0; k < rng.Intn(6); k++ { // merged where contiguous, as planExchange's
			runs = appendRun(runs, copyRun{Src: src[k] * 3, Dst: dst[k] * 3, Len: 1 + rng.Intn(3)})
		}
		in := make([]byte, 130*row)
		for i := range in {
			in[i] = byte(rng.Intn(256))
		}
		want, got := make([]byte, len(in)), make([]byte, len(in))
		for _, r := range runs {
			for k := 0; k < r.Len*row; k++ {
				want[r.Dst*row+k] = in[r.Src*row+k]
			}
		}
		prefix := []int64{7, 7, 7}
		d, n := appendDescs(prefix, runs, row)
		if len(d) != len(prefix)+3*n || d[0] != 7 || d[1] != 7 || d[2] != 7 {
			t.Fatalf("descriptors %v do not extend their prefix by %d triples", d, n)
		}
		pieces := 0 // the fewest pieces of at most copyPiece bytes
		for _, r := range runs {
			pieces += (r.Len*row + copyPiece - 1) / copyPiece
		}
		if n != pieces {
			t.Errorf("runs %v, row %d: %d descriptors, want %d", runs, row, n, pieces)
		}
		for k := 1; k <= n; k++ {
			s, o, b := d[3*k], d[3*k+1], d[3*k+2]
			// Only a run's last piece is short, so the others keep the run's alignment.
			short := b < copyPiece && k < n && d[3*k+3] == s+b && d[3*k+4] == o+b
			if b <= 0 || b > copyPiece || short {
				t.Fatalf("runs %v, row %d: piece %d has %d bytes", runs, row, k, b)
			}
			copy(got[o:o+b], in[s:s+b])
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("runs %v, row %d: the descriptors %v copy other bytes than the runs", runs, row, d[3:])
		}
	}
}
