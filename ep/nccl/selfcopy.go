package nccl

import (
	"fmt"

	"github.com/gomoe/gomoe/ep"
)

// copyRun is a copy of Len rows from row Src of the send buffer to row Dst of the receive
// buffer.
type copyRun struct{ Src, Dst, Len int }

// selfRuns pairs a rank's blocks to itself (sends[me] with recvs[me]) in order, skipping empty
// blocks as the exchange does, and merges neighbours that are contiguous on both sides, so that
// a device communicator can move them as a few device-to-device copies instead of one
// self-send per block. With one rank and alignment 1 the whole dispatch is one copy. Paired
// blocks must have the same length.
func selfRuns(sends, recvs []ep.Block) ([]copyRun, error) {
	var runs []copyRun
	i, j := 0, 0
	for {
		for i < len(sends) && sends[i].Len == 0 {
			i++
		}
		for j < len(recvs) && recvs[j].Len == 0 {
			j++
		}
		if i == len(sends) || j == len(recvs) {
			break
		}
		s, r := sends[i], recvs[j]
		if s.Len != r.Len {
			return nil, fmt.Errorf("ep: the %d-th non-empty block a rank sends itself has %d rows, the matching received block %d", len(runs), s.Len, r.Len)
		}
		if n := len(runs); n > 0 && runs[n-1].Src+runs[n-1].Len == s.Off && runs[n-1].Dst+runs[n-1].Len == r.Off {
			runs[n-1].Len += s.Len
		} else {
			runs = append(runs, copyRun{s.Off, r.Off, s.Len})
		}
		i++
		j++
	}
	for ; i < len(sends); i++ {
		if sends[i].Len != 0 {
			return nil, fmt.Errorf("ep: a rank sends itself more non-empty blocks than it receives from itself")
		}
	}
	for ; j < len(recvs); j++ {
		if recvs[j].Len != 0 {
			return nil, fmt.Errorf("ep: a rank receives more non-empty blocks from itself than it sends itself")
		}
	}
	return runs, nil
}
