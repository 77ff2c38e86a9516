package nccl

import (
	"fmt"

	"github.com/gomoe/gomoe/ep"
)

// This file lays out the staged exchange of a device communicator (NCCL): one message per
// peer (and chunk) instead of one per block. The in-process Group does not need it; it is
// plain Go so that the CPU tests check it.
//
// An expert-parallel exchange has one block per (peer, expert). On the side where a peer's
// blocks are contiguous (the send layout in Dispatch, the receive side of Combine) the message
// goes straight from or into the caller's buffer. On the other side (the expert-major local
// layout, where the blocks from one rank are interleaved with the other ranks') the message
// goes through a staging region: gathered there with one device copy per block (merged where
// contiguous) before it is sent, or scattered from there after it is received.

// A message is one point-to-point transfer of a staged exchange: Rows rows to or from rank
// Peer, starting at row Off of the caller's buffer, or of the staging region when Staged.
type message struct {
	Peer, Off, Rows int
	Staged          bool
}

// An exchangeChunk is one NCCL group of a staged exchange: its messages to and from each peer
// (one, or up to directBlocks unstaged ones), the copies that fill the send staging before the group (Gather: Src in the
// send buffer, Dst in the send staging) and those that empty the receive staging after it
// (Scatter: Src in the receive staging, Dst in the receive buffer).
type exchangeChunk struct {
	Sends, Recvs    []message
	Gather, Scatter []copyRun
}

// A stagedExchange is a rank's part of an exchange: its chunks in order, the copies of its
// blocks to itself (Self: send buffer -> receive buffer), and the rows of send and receive
// staging it needs.
type stagedExchange struct {
	Chunks               []exchangeChunk
	Self                 []copyRun
	SendStage, RecvStage int
}

// directBlocks is the most non-empty blocks per peer (and chunk) that go as one message each,
// straight from and into the caller's buffers, without staging. Measured on 2 and 4 H200s
// (2026-11-26), staging made peers with 2 blocks slower (top1 E4 on 2 ranks: 0.85 of the raw
// all-to-all against 0.95; mixtral E8 on 4: combine 0.79 against 0.90) and peers with 4 or more
// faster (mixtral E8 on 2 ranks: 0.87 against 0.79; dsv3 with 128: 0.57 against 0.30). Both
// ranks of a pair count the same non-empty blocks, so they agree on the messages.
const directBlocks = 2

// planExchange lays out rank me's part of the exchange of the block lists sends and recvs
// (the arguments of ep.Communicator.AllToAll) in at most chunks chunks. Chunk c holds, of every
// list of m blocks, the blocks [c·m/chunks, (c+1)·m/chunks): the k-th block rank i sends
// rank j pairs with the k-th block j receives from i, so both ranks put the pair in the same
// chunk, and their messages of a chunk have the same lengths. A peer's blocks of a chunk go as
// one message each if there are at most directBlocks non-empty ones, else as one message,
// staged on a side where they are not contiguous. Chunks without messages or
// copies are dropped: a rank's groups may differ in number from its peers', since NCCL pairs
// a peer's sends and receives in posting order, not by group.
func planExchange(me int, sends, recvs [][]ep.Block, chunks int) (stagedExchange, error) {
	var x stagedExchange
	if len(sends) != len(recvs) || me < 0 || me >= len(sends) {
		return x, fmt.Errorf("ep: exchange of rank %d has %d send and %d receive lists", me, len(sends), len(recvs))
	}
	if chunks < 1 {
		chunks = 1
	}
	self, err := selfRuns(sends[me], recvs[me])
	if err != nil {
		return x, err
	}
	x.Self = self
	part := func(l []ep.Block, c int) []ep.Block { return l[c*len(l)/chunks : (c+1)*len(l)/chunks] }
	for c := 0; c < chunks; c++ {
		var ch exchangeChunk
		for j := range sends {
			if j == me {
				continue
			}
			ms, runs := pack(j, part(sends[j], c), &x.SendStage)
			ch.Sends = append(ch.Sends, ms...)
			ch.Gather = append(ch.Gather, runs...)
		}
		for i := range recvs {
			if i == me {
				continue
			}
			ms, runs := pack(i, part(recvs[i], c), &x.RecvStage)
			ch.Recvs = append(ch.Recvs, ms...)
			for _, r := range runs {
				ch.Scatter = appendRun(ch.Scatter, copyRun{Src: r.Dst, Dst: r.Src, Len: r.Len})
			}
		}
		if len(ch.Sends)+len(ch.Recvs) > 0 {
			x.Chunks = append(x.Chunks, ch)
		}
	}
	return x, nil
}

// pack makes the messages to or from peer of the blocks bs: one per non-empty block if there
// are at most directBlocks of them; otherwise one message, which is the blocks' run of the
// buffer if they are contiguous there, or else is staged at row *at of the staging region
// (which grows by its rows), runs then being the copies between the buffer (Src) and the
// staging (Dst), merged where contiguous on both sides. No rows, no messages.
func pack(peer int, bs []ep.Block, at *int) (ms []message, runs []copyRun) {
	rows, blocks, first, end, contiguous := 0, 0, -1, 0, true
	for _, b := range bs {
		if b.Len == 0 {
			continue
		}
		if first < 0 {
			first = b.Off
		} else if b.Off != end {
			contiguous = false
		}
		end = b.Off + b.Len
		rows += b.Len
		blocks++
	}
	switch {
	case rows == 0:
		return nil, nil
	case blocks <= directBlocks:
		for _, b := range bs {
			if b.Len != 0 {
				ms = append(ms, message{Peer: peer, Off: b.Off, Rows: b.Len})
			}
		}
		return ms, nil
	case contiguous:
		return []message{{Peer: peer, Off: first, Rows: rows}}, nil
	}
	ms = []message{{Peer: peer, Off: *at, Rows: rows, Staged: true}}
	for _, b := range bs {
		if b.Len == 0 {
			continue
		}
		runs = appendRun(runs, copyRun{Src: b.Off, Dst: *at, Len: b.Len})
		*at += b.Len
	}
	return ms, runs
}

// appendRun appends r to runs, merged into the last run when contiguous with it on both sides.
func appendRun(runs []copyRun, r copyRun) []copyRun {
	if n := len(runs); n > 0 && runs[n-1].Src+runs[n-1].Len == r.Src && runs[n-1].Dst+runs[n-1].Len == r.Dst {
		runs[n-1].Len += r.Len
		return runs
	}
	return append(runs, r)
}

// copyPiece is the most bytes one descriptor of the block-copy kernel moves
// (kernels.CUDA.CopyBlocks walks the descriptors one thread block at a time): longer runs are
// split, so that a run of many rows spreads over thread blocks. A multiple of 16, so that the
// pieces keep the alignment of their run.
const copyPiece = 64 << 10

// appendDescs appends to d the block-copy descriptors of runs of rows of row bytes: triples
// (source byte offset, destination byte offset, bytes), one per piece of at most copyPiece
// bytes, in the order of runs. It returns the longer d and the number of triples appended.
func appendDescs(d []int64, runs []copyRun, row int) ([]int64, int) {
	n := 0
	for _, r := range runs {
		src, dst, left := int64(r.Src)*int64(row), int64(r.Dst)*int64(row), int64(r.Len)*int64(row)
		for left > 0 {
			b := min(left, copyPiece)
			d = append(d, src, dst, b)
			src, dst, left = src+b, dst+b, left-b
			n++
		}
	}
	return d, n
}
