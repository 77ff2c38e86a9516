package kernels

import "fmt"

// The top-k gather on the CPU, the kernels of op.GatherTopK and its gradient. The CUDA twins are
// (*CUDA).GatherTopK and (*CUDA).GatherTopKBackward (gather_topk_cuda.go, kernels in
// gather_topk.cuh); both copy values, so the two agree bit for bit.

// gatherTopKCheck checks s-like [T,E] against ids and out [T,K] (T = len(ids)/K) and every id
// against [-1, E).
func gatherTopKCheck(name string, ns, nids, nout int, ids []int32, E, K int) error {
	T, ok := 0, E >= 0 && K >= 0 && nout == nids
	if K > 0 {
		T = nids / K
		if err := checkWidth(name, "E", E, T); err != nil { // T·E must not wrap
			return err
		}
		ok = ok && nids == T*K && ns == T*E
	} else { // no slots: T is not known from the ids
		ok = ok && nids == 0 && (E == 0 && ns == 0 || E > 0 && ns%E == 0)
	}
	if !ok {
		return fmt.Errorf("gomoe: %s: %d scores, %d ids and %d outputs, want T·E, T·K and T·K for E=%d K=%d", name, ns, nids, nout, E, K)
	}
	for i, x := range ids {
		if x < -1 || int(x) >= E {
			return fmt.Errorf("gomoe: %s: ids[%d,%d] = %d is out of range [-1, %d)", name, i/K, i%K, x, E)
		}
	}
	return nil
}

// GatherTopK writes out[t,k] = s[t, ids[t,k]] for s [T,E] and ids [T,K] (T = len(ids)/K): 0
// for an id of -1; an id outside [-1, E) is an error.
func GatherTopK[F float32 | float64](out, s []F, ids []int32, E, K int) error {
	if err := gatherTopKCheck("GatherTopK", len(s), len(ids), len(out), ids, E, K); err != nil {
		return err
	}
	if err := checkDisjoint("GatherTopK", []span{spanOf("out", out)}, []span{spanOf("s", s), spanOf("ids", ids)}); err != nil {
		return err
	}
	for i, e := range ids {
		if e >= 0 {
			out[i] = s[(i/K)*E+int(e)]
		} else {
			out[i] = 0
		}
	}
	return nil
}

// GatherTopKBackward adds g[t,k] into ds[t, ids[t,k]] for ds [T,E] and g, ids [T,K], slots in
// k order (a repeated id adds in k order). ds is not cleared first, so a gradient accumulates
// (the CUDA twin writes ds, 0 where no slot points). An id of -1 adds nothing; one outside
// [-1, E) is an error.
func GatherTopKBackward[F float32 | float64](ds, g []F, ids []int32, E, K int) error {
	if err := gatherTopKCheck("GatherTopKGrad", len(ds), len(ids), len(g), ids, E, K); err != nil {
		return err
	}
	if err := checkDisjoint("GatherTopKGrad", []span{spanOf("ds", ds)}, []span{spanOf("g", g), spanOf("ids", ids)}); err != nil {
		return err
	}
	for i, e := range ids {
		if e >= 0 {
			ds[(i/K)*E+int(e)] += g[i]
		}
	}
	return nil
}
