package kernels

import "fmt"

// The expert load on the CPU, the kernel of op.ExpertLoad (no CUDA twin: on the device the op
// is not offered; the balancing loss's kernels count on the device themselves).

// ExpertLoad writes load [B,E]: load[b,e] is the number of pairs (t,k) of sequence b with
// ids[t,k] = e, for ids [T,K] (T = len(ids)/K) split into B equal, contiguous sequences. Ids of
// -1 are not counted; others outside [-1, E) are an error, and so is K < 1.
func ExpertLoad[F float32 | float64](load []F, ids []int32, K, E, B int) error {
	const name = "ExpertLoad"
	if K < 1 { // T is not known without slots
		return fmt.Errorf("gomoe: %s: K=%d slots per token, want K >= 1", name, K)
	}
	T := len(ids) / K
	if err := checkWidth(name, "E", E, B); err != nil { // B·E must not wrap
		return err
	}
	if E < 1 || B < 1 || len(ids) != T*K || T%B != 0 || len(load) != B*E {
		return fmt.Errorf("gomoe: %s: %d ids and %d loads for K=%d E=%d B=%d, want T·K ids (T a multiple of B) and B·E loads", name, len(ids), len(load), K, E, B)
	}
	counts, err := balanceCounts(name, ids, T, K, E, B)
	if err != nil {
		return err
	}
	for i, c := range counts {
		load[i] = F(c)
	}
	return nil
}
