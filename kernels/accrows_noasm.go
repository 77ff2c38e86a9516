//go:build !amd64 || noasm

package kernels

// hasAccRowsAsm is false: accRows runs the row loops of vec.go here.
const hasAccRowsAsm = false

// accRows sets d[i] = Σ_j round(w[j]·src[offs[j]+i]), summed from +0 in j order in the data
// type (setScaledRow, then addScaledRow for each further row); the AVX2 kernel of amd64 gives
// the same bits.
func accRows[F Float](d, src []F, offs []int, w []F) { accRowsGo(d, src, offs, w) }
