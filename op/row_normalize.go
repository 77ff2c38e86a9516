package op

import G "gorgonia.org/gorgonia"

// RowNormalize divides every row of the matrix x [rows, cols] by its sum: y = x / Σ_j x[r,j]
// (the renormalisation of sigmoid router scores over the chosen experts).
//
// Gradient: dx = (dy − Σ_j dy·y) / Σ_j x. CPU kernels: kernels.RowForward/Backward with
// kernels.RowNormalize; on the device their CUDA twins.
func RowNormalize(x *G.Node) (*G.Node, error) { return applyPointwise(pwRowNormalize, x) }
