package kernels

// ReLU and its gradient, element-wise. Each has a CUDA twin of the same name on *CUDA
// (relu_cuda.go, relu.cuh).

// ReLU writes y = max(x, 0) element-wise; a NaN stays NaN.
func ReLU[F Float](y, x []F) error {
	if err := sameLen("ReLU", len(y), len(x)); err != nil {
		return err
	}
	if err := checkInPlace("ReLU", []span{spanOf("y", y)}, []span{spanOf("x", x)}); err != nil {
		return err
	}
	for i, v := range x {
		if v > 0 || v != v {
			y[i] = v
		} else {
			y[i] = 0
		}
	}
	return nil
}

// ReLUBackward writes dx = dy where x > 0 and 0 elsewhere.
func ReLUBackward[F Float](dx, x, dy []F) error {
	if err := sameLen("ReLUBackward", len(dx), len(x), len(dy)); err != nil {
		return err
	}
	if err := checkInPlace("ReLUBackward", []span{spanOf("dx", dx)}, []span{spanOf("x", x), spanOf("dy", dy)}); err != nil {
		return err
	}
	for i, v := range x {
		if v > 0 {
			dx[i] = dy[i]
		} else {
			dx[i] = 0
		}
	}
	return nil
}
