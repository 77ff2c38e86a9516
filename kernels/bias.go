package kernels

// The bias add of the examples' models and its gradient, the column sum. Each has a CUDA twin
// of the same name on *CUDA (bias_cuda.go, bias.cuh). Matrices are row-major [rows, cols]; the
// column sums run in float64 in row order and are rounded once, so they are deterministic.

// BiasAdd writes y[r,c] = x[r,c] + b[c] for x and y [rows, len(b)].
func BiasAdd[F Float](y, x, b []F) error {
	if _, err := nnShape("BiasAdd", len(b), len(x), len(y)); err != nil {
		return err
	}
	if err := checkInPlace("BiasAdd", []span{spanOf("y", y)}, []span{spanOf("x", x), spanOf("b", b)}); err != nil {
		return err
	}
	cols := len(b)
	for i := range x {
		y[i] = x[i] + b[i%cols]
	}
	return nil
}

// ColSum writes out[c] = Σ_r x[r,c] for x [rows, len(out)] (the bias gradient).
func ColSum[F Float](out, x []F) error {
	rows, err := nnShape("ColSum", len(out), len(x))
	if err != nil {
		return err
	}
	if err := checkDisjoint("ColSum", []span{spanOf("out", out)}, []span{spanOf("x", x)}); err != nil {
		return err
	}
	cols := len(out)
	for c := range out {
		var s float64
		for r := 0; r < rows; r++ {
			s += float64(x[r*cols+c])
		}
		out[c] = F(s)
	}
	return nil
}
