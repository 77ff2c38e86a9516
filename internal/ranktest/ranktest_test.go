package ranktest

import (
	"errors"
	"testing"
)

// rank blocks in wait until it is aborted (a collective that needs every rank).
type rank struct{ abort chan error }

func (r *rank) Abort(err error) {
	select {
	case r.abort <- err:
	default:
	}
}

func TestRunAbortsEveryRankOnAFailure(t *testing.T) {
	ranks := []*rank{{make(chan error, 1)}, {make(chan error, 1)}, {make(chan error, 1)}}
	bad := errors.New("rank 1 failed")
	err := Run(t, ranks, func(r *rank) error {
		if r == ranks[1] {
			return bad
		}
		return <-r.abort // blocks until rank 1's failure aborts it
	})
	if !errors.Is(err, bad) {
		t.Fatalf("Run: %v, want it to hold %v", err, bad)
	}
}

func TestRunAllSucceed(t *testing.T) {
	ranks := []*rank{{make(chan error, 1)}, {make(chan error, 1)}}
	n := make(chan int, 2)
	if err := Run(t, ranks, func(r *rank) error { n <- 1; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(n) != 2 {
		t.Fatalf("fn ran %d times, want 2", len(n))
	}
}
