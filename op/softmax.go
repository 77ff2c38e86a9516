package op

import G "gorgonia.org/gorgonia"

// Softmax returns the softmax of every row of the matrix x [rows, cols]:
//
//	y[r,j] = exp(x[r,j] − max_j x[r,·]) / Σ_j exp(x[r,j] − max_j x[r,·])
//
// (subtracting each row's own maximum, so no row overflows; Gorgonia's SoftMax in tensor
// v0.9.24 starts every row's maximum from the tensor's first element and can give NaN).
//
// Gradient: dx = y·(dy − Σ_j dy·y). CPU kernels: kernels.RowForward/Backward with
// kernels.RowSoftmax; on the device their CUDA twins (one warp per row).
func Softmax(x *G.Node) (*G.Node, error) { return applyPointwise(pwSoftmax, x) }
