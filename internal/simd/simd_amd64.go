//go:build amd64 && !noasm

package simd

// The micro-kernels of package kernels' CPU paths, in Go assembly (gemm_amd64.s,
// sigmoid_amd64.s, rmsnorm_amd64.s, accrows_amd64.s, adam_amd64.s, unpermute_amd64.s). Their
// contracts are in those files and at their callers (kernels/gemm_amd64.go,
// kernels/sigmoid_amd64.go, kernels/softmax_amd64.go, kernels/rmsnorm_amd64.go,
// kernels/accrows_amd64.go, kernels/optimizer_adam_amd64.go, kernels/unpermute_amd64.go), which
// check every length before they call them.

// Sgemm6x16AVX2 computes a 6×16 float32 tile from packed slivers (AVX2 + FMA).
//
//go:noescape
func Sgemm6x16AVX2(kc int, a, b, c *float32, ldc int, add int)

// Dgemm6x8AVX2 computes a 6×8 float64 tile from packed slivers (AVX2 + FMA).
//
//go:noescape
func Dgemm6x8AVX2(kc int, a, b, c *float64, ldc int, add int)

// Sgemm12x32AVX512 computes a 12×32 float32 tile from packed slivers (AVX-512).
//
//go:noescape
func Sgemm12x32AVX512(kc int, a, b, c *float32, ldc int, add int)

// Dgemm12x16AVX512 computes a 12×16 float64 tile from packed slivers (AVX-512).
//
//go:noescape
func Dgemm12x16AVX512(kc int, a, b, c *float64, ldc int, add int)

// SigmoidPairAVX2 sets s[i] = σ(x[i]) and sm[i] = σ(−x[i]) for i < n, n a multiple of 8
// (AVX2 + FMA).
//
//go:noescape
func SigmoidPairAVX2(s, sm, x *float32, n int)

// AdamAVX runs the float32 Adam step over n elements (a multiple of 8) with the constants k
// (AVX) and returns how many it updated: all n, unless a group of 8 has an overflowing g·g or v/C2,
// where it stops (adam_amd64.s).
//
//go:noescape
func AdamAVX(p, grad, m, v *float32, n int, k *[10]float32) int

// AccRowsF32AVX2 sets d[i] = Σ_j round(w[j]·base[offs[j]+i]) for i < n, summed from +0 in j
// order with one rounding per product and per add; k ≥ 1 rows, n a multiple of 8 (AVX2).
//
//go:noescape
func AccRowsF32AVX2(d, base *float32, offs *int, w *float32, k, n int)

// AccRowsF64AVX2 is AccRowsF32AVX2 for float64; n a multiple of 4 (AVX2).
//
//go:noescape
func AccRowsF64AVX2(d, base *float64, offs *int, w *float64, k, n int)

// ExpSubAVX2 sets y[i] = exp(x[i] − *m) for i < n, n a multiple of 8, *m finite and every
// x[i] <= *m or −Inf (AVX2 + FMA).
//
//go:noescape
func ExpSubAVX2(y, x *float32, n int, m *float32)

// DotLanesF32AVX2 sets lane j of l to the sum from +0 of a[h]·b[h] (exact in float64) over
// h ≡ j (mod 8), h < n, in h order; n a multiple of 8 (AVX2 + FMA).
//
//go:noescape
func DotLanesF32AVX2(l *[8]float64, a, b *float32, n int)

// Dot3LanesF32AVX2 sets lane j of l to the sum from +0 of round((a[h]·b[h])·c[h]) over
// h ≡ j (mod 8), h < n, in h order; n a multiple of 8 (AVX2).
//
//go:noescape
func Dot3LanesF32AVX2(l *[8]float64, a, b, c *float32, n int)

// RMSScaleF32AVX2 sets y[i] = float32((x[i]·*r)·gain[i]) in float64 for i < n; n a multiple of 8
// (AVX2).
//
//go:noescape
func RMSScaleF32AVX2(y, x, gain *float32, r *float64, n int)

// RMSBackF32AVX2 sets dx[i] = float32((rc[0]·gain[i])·dy[i] − x[i]·rc[1]) in float64 for i < n;
// n a multiple of 8 (AVX2).
//
//go:noescape
func RMSBackF32AVX2(dx, x, gain, dy *float32, rc *[2]float64, n int)

// UnpermBwdF32AVX2 runs one routed row of the unpermute backward over n elements (a multiple
// of 8) in one pass: with flag 2 it writes d[i] = *w·s[i] (flag 4) or s[i] (flag 4 clear),
// with non-temporal stores under flag 8 (d then 32-byte aligned); with flag 1 it sets lane j of
// l to the sum from +0 of yp[h]·s[h] (exact in float64) over h ≡ j (mod 8) in h order
// (AVX2). Pointers a clear flag leaves unused may be nil.
//
//go:noescape
func UnpermBwdF32AVX2(l *[8]float64, d, s, yp, w *float32, n, flags int)

// UnpermBwdF64AVX2 is UnpermBwdF32AVX2 for float64: the products yp[h]·s[h] are rounded to
// float64, then added (no fused multiply-add) (AVX2).
//
//go:noescape
func UnpermBwdF64AVX2(l *[8]float64, d, s, yp, w *float64, n, flags int)
