package kernels

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"unsafe"
)

// A packed, cache-blocked GEMM engine for the CPU kernels: c = op(a)·op(b) + beta·c on
// row-major float32 or float64 matrices, op(x) = x or xᵀ.
//
// The loops are the usual five around a register-tiled micro-kernel (Goto/BLIS): for each
// block of nc columns and kc of the inner dimension, op(b) is packed into slivers of nr
// columns; for each block of mc rows, op(a) is packed into slivers of mr rows, and the
// micro-kernel computes one mr×nr tile of c from one sliver of each, holding the whole tile in
// registers. On amd64 the micro-kernels are Go assembly (AVX2 + FMA, or AVX-512), chosen at
// run time from the CPU's features; elsewhere, and under the noasm build tag, a portable Go
// micro-kernel runs.
//
// Rounding and determinism. Each element c[i,j] is computed the same way whatever the
// blocking into rows and columns, the thread count or the tile it falls in: for each block of
// gemmKC along the inner dimension (fixed, never derived from the thread count) an accumulator
// starting at +0 takes the products in k order (fused multiply-adds in the assembly
// kernels), and c is then set to the first block's sum (beta = 0), or the block's sum is
// added to c (beta = 1, and every later block). Any other beta first scales c by beta. So the
// results are bitwise identical across runs and GOMAXPROCS, and the AVX2 and AVX-512 kernels
// give the same bits; the portable kernel rounds each product on amd64 and may differ from
// them in the last bits.

// gemmKC is the k-blocking of every path: the number of inner-dimension terms summed in one
// accumulator before it is added into c.
const gemmKC = 256

// gemmKern is one micro-kernel and its blocking.
type gemmKern[T float32 | float64] struct {
	name   string
	mr, nr int // tile rows and columns
	mc, nc int // rows of a packed block of a, columns of a packed block of b (multiples of mr, nr)
	// fn computes the mr×nr tile from a packed sliver a (kc·mr values, mr per k) and b (kc·nr
	// values, nr per k) into c (row stride ldc): c = acc, or c += acc when add.
	fn func(kc int, a, b, c []T, ldc int, add bool)
	// whole, when set, replaces the engine: it computes gemmSerial's whole product itself (an
	// external BLAS, the openblas build tag); fn and the blocking are then unused.
	whole func(tA, tB bool, m, n, k int, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int)
}

// gemmExtraPaths holds kernel paths beyond this CPU's built-in ones, by name (the openblas
// build tag adds "openblas"); gemmSetPath selects them too.
var gemmExtraPaths = map[string]func(){}

// gemmF32 and gemmF64 are the kernels in use: the portable ones until the init function of
// gemm_amd64.go picks assembly for this CPU.
var (
	gemmF32 = gemmGoKern[float32]()
	gemmF64 = gemmGoKern[float64]()
)

func gemmGoKern[T float32 | float64]() *gemmKern[T] {
	return &gemmKern[T]{name: "go", mr: 4, nr: 4, mc: 128, nc: 1024, fn: gemmMicroGo[T]}
}

// gemmKernel returns the kernel the engine uses for T.
func gemmKernel[T float32 | float64]() *gemmKern[T] {
	var z T
	if _, ok := any(z).(float32); ok {
		return any(gemmF32).(*gemmKern[T])
	}
	return any(gemmF64).(*gemmKern[T])
}

// gemmWS is one goroutine's packing space.
type gemmWS[T float32 | float64] struct{ a, b, tile []T }

var gemmPool32, gemmPool64 sync.Pool

// gemmGetWS returns packing space for an m×n×kk product (blocks no larger than the problem's).
func gemmGetWS[T float32 | float64](k *gemmKern[T], m, n, kk int) *gemmWS[T] {
	var z T
	pool := &gemmPool64
	if _, ok := any(z).(float32); ok {
		pool = &gemmPool32
	}
	ws, _ := pool.Get().(*gemmWS[T])
	if ws == nil {
		ws = &gemmWS[T]{}
	}
	kc := min(gemmKC, kk)
	if need := min(k.mc, (m+k.mr-1)/k.mr*k.mr) * kc; len(ws.a) < need {
		ws.a = make([]T, need)
	}
	if need := min(k.nc, (n+k.nr-1)/k.nr*k.nr) * kc; len(ws.b) < need {
		ws.b = make([]T, need)
	}
	if n := k.mr * k.nr; len(ws.tile) < n {
		ws.tile = make([]T, n)
	}
	return ws
}

func gemmPutWS[T float32 | float64](ws *gemmWS[T]) {
	var z T
	if _, ok := any(z).(float32); ok {
		gemmPool32.Put(ws)
	} else {
		gemmPool64.Put(ws)
	}
}

// gemmScale sets the m×n block of c to beta·c (to 0 when beta is 0, whatever c held).
func gemmScale[T float32 | float64](m, n int, beta T, c []T, ldc int) {
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		switch beta {
		case 0:
			clear(row)
		case 1:
		default:
			for j := range row {
				row[j] *= beta
			}
		}
	}
}

// gemmSerial is c = op(a)·op(b) + beta·c on the calling goroutine: op(a) is m×k, op(b) k×n;
// tA says a is stored k×m (row stride lda), tB that b is stored n×k.
func gemmSerial[T float32 | float64](tA, tB bool, m, n, k int, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	if m <= 0 || n <= 0 {
		return
	}
	if k <= 0 || (beta != 0 && beta != 1) {
		gemmScale(m, n, beta, c, ldc)
		if k <= 0 {
			return
		}
		beta = 1
	}
	kern := gemmKernel[T]()
	if kern.whole != nil {
		kern.whole(tA, tB, m, n, k, a, lda, b, ldb, beta, c, ldc)
		return
	}
	ws := gemmGetWS(kern, m, n, k)
	defer gemmPutWS(ws)
	mr, nr := kern.mr, kern.nr
	for jc := 0; jc < n; jc += kern.nc {
		nc := min(kern.nc, n-jc)
		for pc := 0; pc < k; pc += gemmKC {
			kc := min(gemmKC, k-pc)
			add := pc > 0 || beta == 1
			gemmPackB(ws.b, tB, b, ldb, pc, jc, kc, nc, nr)
			for ic := 0; ic < m; ic += kern.mc {
				mc := min(kern.mc, m-ic)
				gemmPackA(ws.a, tA, a, lda, ic, pc, mc, kc, mr)
				for jr := 0; jr < nc; jr += nr {
					bs := ws.b[jr*kc : (jr+nr)*kc]
					nn := min(nr, nc-jr)
					for ir := 0; ir < mc; ir += mr {
						as := ws.a[ir*kc : (ir+mr)*kc]
						mm := min(mr, mc-ir)
						co := (ic+ir)*ldc + jc + jr
						if mm == mr && nn == nr {
							kern.fn(kc, as, bs, c[co:co+(mr-1)*ldc+nr], ldc, add)
							continue
						}
						// Edge tile: compute the full tile aside, then move its real part.
						t := ws.tile[:mr*nr]
						kern.fn(kc, as, bs, t, nr, false)
						for i := 0; i < mm; i++ {
							dst, src := c[co+i*ldc:co+i*ldc+nn], t[i*nr:i*nr+nn]
							if add {
								for j := range dst {
									dst[j] += src[j]
								}
							} else {
								copy(dst, src)
							}
						}
					}
				}
			}
		}
	}
}

// gemmPackA packs rows [ic,ic+mc) and inner indices [pc,pc+kc) of op(a) into slivers of mr
// rows: dst[s·mr·kc + p·mr + i] = op(a)[ic+s·mr+i, pc+p], zero past row mc.
func gemmPackA[T float32 | float64](dst []T, tA bool, a []T, lda, ic, pc, mc, kc, mr int) {
	for s := 0; s < mc; s += mr {
		d := dst[s*kc : (s+mr)*kc]
		rows := min(mr, mc-s)
		if tA { // op(a)[i,p] = a[p,i]: row p of a holds the sliver's mr values contiguously
			for p := 0; p < kc; p++ {
				src := a[(pc+p)*lda+ic+s:]
				dd := d[p*mr : p*mr+mr]
				copy(dd, src[:rows])
				clear(dd[rows:])
			}
			continue
		}
		gemmGather(d, mr, a, (ic+s)*lda+pc, lda, rows, kc)
	}
}

// gemmPackB packs inner indices [pc,pc+kc) and columns [jc,jc+nc) of op(b) into slivers of
// nr columns: dst[s·nr·kc + p·nr + j] = op(b)[pc+p, jc+s·nr+j], zero past column nc.
func gemmPackB[T float32 | float64](dst []T, tB bool, b []T, ldb, pc, jc, kc, nc, nr int) {
	for s := 0; s < nc; s += nr {
		d := dst[s*kc : (s+nr)*kc]
		cols := min(nr, nc-s)
		if !tB { // row pc+p of b holds the sliver's values contiguously
			for p := 0; p < kc; p++ {
				src := b[(pc+p)*ldb+jc+s:]
				dd := d[p*nr : p*nr+nr]
				copy(dd, src[:cols])
				clear(dd[cols:])
			}
			continue
		}
		gemmGather(d, nr, b, (jc+s)*ldb+pc, ldb, cols, kc) // op(b)[p,j] = b[j,p]
	}
}

// gemmGather transposes rows rows of kc values of src (row i at off+i·ld) into dst with
// stride w: dst[p·w+i] = src[off+i·ld+p], and zeroes columns rows..w-1 of dst's kc rows.
func gemmGather[T float32 | float64](dst []T, w int, src []T, off, ld, rows, kc int) {
	i := 0
	for ; i+4 <= rows; i += 4 {
		o := off + i*ld
		r0 := src[o : o+kc]
		r1 := src[o+ld : o+ld+kc]
		r2 := src[o+2*ld : o+2*ld+kc]
		r3 := src[o+3*ld : o+3*ld+kc]
		r1, r2, r3 = r1[:len(r0)], r2[:len(r0)], r3[:len(r0)]
		for p := range r0 {
			dd := dst[p*w+i : p*w+i+4 : p*w+i+4]
			dd[0], dd[1], dd[2], dd[3] = r0[p], r1[p], r2[p], r3[p]
		}
	}
	for ; i < rows; i++ {
		r := src[off+i*ld : off+i*ld+kc]
		for p, v := range r {
			dst[p*w+i] = v
		}
	}
	if rows < w {
		for p := 0; p < kc; p++ {
			clear(dst[p*w+rows : p*w+w])
		}
	}
}

// gemmMicroGo is the portable 4×4 micro-kernel.
func gemmMicroGo[T float32 | float64](kc int, a, b, c []T, ldc int, add bool) {
	var c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33 T
	a, b = a[:4*kc], b[:4*kc]
	for p := 0; p < kc; p++ {
		aa, bb := a[4*p:4*p+4:4*p+4], b[4*p:4*p+4:4*p+4]
		a0, a1, a2, a3 := aa[0], aa[1], aa[2], aa[3]
		b0, b1, b2, b3 := bb[0], bb[1], bb[2], bb[3]
		c00 += a0 * b0
		c01 += a0 * b1
		c02 += a0 * b2
		c03 += a0 * b3
		c10 += a1 * b0
		c11 += a1 * b1
		c12 += a1 * b2
		c13 += a1 * b3
		c20 += a2 * b0
		c21 += a2 * b1
		c22 += a2 * b2
		c23 += a2 * b3
		c30 += a3 * b0
		c31 += a3 * b1
		c32 += a3 * b2
		c33 += a3 * b3
	}
	rows := [4][4]T{{c00, c01, c02, c03}, {c10, c11, c12, c13}, {c20, c21, c22, c23}, {c30, c31, c32, c33}}
	for i := range rows {
		d := c[i*ldc : i*ldc+4]
		if add {
			d[0] += rows[i][0]
			d[1] += rows[i][1]
			d[2] += rows[i][2]
			d[3] += rows[i][3]
		} else {
			d[0], d[1], d[2], d[3] = rows[i][0], rows[i][1], rows[i][2], rows[i][3]
		}
	}
}

// Gemm is c = op(a)·op(b) + beta·c for row-major m×n c: op(a) is m×k, stored k×m (row stride
// lda) when tA and m×k otherwise; op(b) is k×n, stored n×k when tB. With beta = 0, c is
// overwritten whatever it held. Blocks of c run in parallel over up to GOMAXPROCS goroutines,
// each block written by one goroutine; the result does not depend on the split (see above).
//
// A negative size, a leading dimension below the row length, a slice too short for its
// matrix or a c whose elements share memory with those of a or b is an error, and c is left
// untouched; c may lie between a's rows in one buffer (an [a | c] layout with one leading
// dimension), as it shares no element with a.
func Gemm[T float32 | float64](tA, tB bool, m, n, k int, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) error {
	if err := gemmCheckArgs(tA, tB, m, n, k, len(a), lda, len(b), ldb, len(c), ldc); err != nil {
		return err
	}
	if m == 0 || n == 0 {
		return nil
	}
	// The blocks of c are written while other blocks still read a and b: c must not share
	// memory with the part of a or b the product reads (none when k = 0).
	ar, ac, br, bc := m, k, k, n
	if tA {
		ar, ac = k, m
	}
	if tB {
		br, bc = n, k
	}
	cm := matOf("c", c, m, n, ldc)
	for _, in := range []matSpan{matOf("a", a, ar, ac, lda), matOf("b", b, br, bc, ldb)} {
		if cm.shares(in) {
			return overlapErr("Gemm", cm.span, "input", in.span)
		}
	}
	workers := runtime.GOMAXPROCS(0)
	// Blocks of rb rows and cb columns; shrink them until there are enough for the workers
	// (the split never changes a result, only the balance).
	rb, cb := 192, 512
	blocks := func() int { return ((m + rb - 1) / rb) * ((n + cb - 1) / cb) }
	for workers > 1 && blocks() < 2*workers {
		if rb > 48 && ((m+rb-1)/rb <= (n+cb-1)/cb || cb <= 64) {
			rb /= 2
		} else if cb > 64 {
			cb /= 2
		} else {
			break
		}
	}
	if workers <= 1 || blocks() == 1 || 2*float64(m)*float64(n)*float64(k) < 1<<17 {
		gemmSerial(tA, tB, m, n, k, a, lda, b, ldb, beta, c, ldc)
		return nil
	}
	nbr, nbc := (m+rb-1)/rb, (n+cb-1)/cb
	gmmRun(nbr*nbc, func(t int) {
		i0, j0 := (t/nbc)*rb, (t%nbc)*cb
		mm, nn := min(rb, m-i0), min(cb, n-j0)
		var ao, bo int
		if tA {
			ao = i0
		} else {
			ao = i0 * lda
		}
		if tB {
			bo = j0 * ldb
		} else {
			bo = j0
		}
		gemmSerial(tA, tB, mm, nn, k, a[ao:], lda, b[bo:], ldb, beta, c[i0*ldc+j0:], ldc)
	})
	return nil
}

// matSpan is the memory of a row-major matrix of rows×cols elements of size bytes, its rows
// ld elements apart, inside span (from its first element to its last).
type matSpan struct {
	span
	rows, cols, ld int
	size           uintptr
}

func matOf[T any](name string, s []T, rows, cols, ld int) matSpan {
	var z T
	return matSpan{spanOf(name, s[:gemmExtent(rows, cols, ld)]), rows, cols, ld, unsafe.Sizeof(z)}
}

// shares reports whether x and y have an element in common: their rows, not only their spans,
// overlap (an [a | c] layout, a and c side by side in the rows of one buffer, shares none).
func (x matSpan) shares(y matSpan) bool {
	if x.lo == x.hi || y.lo == y.hi || !(x.lo < y.hi && y.lo < x.hi) {
		return false
	}
	// Byte offsets from the lower span's start; y's rows that can meet x's row i are those
	// whose start is below the row's end and whose end is above its start.
	base := min(x.lo, y.lo)
	xo, yo := int64(x.lo-base), int64(y.lo-base)
	xs, ys := int64(x.ld)*int64(x.size), int64(y.ld)*int64(y.size)
	xw, yw := int64(x.cols)*int64(x.size), int64(y.cols)*int64(y.size)
	// A one-row matrix's ld is unused and unbounded (ld·size could wrap around int64); with
	// more rows the slice's length bounds it.
	if x.rows == 1 {
		xs = xw
	}
	if y.rows == 1 {
		ys = yw
	}
	floorDiv := func(a, b int64) int64 {
		q := a / b
		if a%b != 0 && a < 0 {
			q--
		}
		return q
	}
	for i := int64(0); i < int64(x.rows); i++ {
		lo := xo + i*xs
		hi := lo + xw
		jmin := max(floorDiv(lo-yo-yw, ys)+1, 0)            // yo + j·ys + yw > lo
		jmax := min(floorDiv(hi-yo-1, ys), int64(y.rows-1)) // yo + j·ys < hi
		if jmin <= jmax {
			return true
		}
	}
	return false
}

// gemmExtent is the number of elements a stored rows×cols matrix with row stride ld spans
// (0 when it is empty); gemmCheckArgs has checked that it fits its slice.
func gemmExtent(rows, cols, ld int) int {
	if rows == 0 || cols == 0 {
		return 0
	}
	return (rows-1)*ld + cols
}

// gemmCheckArgs reports arguments Gemm cannot take, without overflowing on huge ones.
func gemmCheckArgs(tA, tB bool, m, n, k, la, lda, lb, ldb, lc, ldc int) error {
	if m < 0 || n < 0 || k < 0 {
		return fmt.Errorf("gomoe: Gemm: m=%d n=%d k=%d, want all >= 0", m, n, k)
	}
	// need checks a stored rows×cols matrix with row stride ld in a slice of l elements.
	need := func(name string, rows, cols, ld, l int) error {
		if ld < max(1, cols) {
			return fmt.Errorf("gomoe: Gemm: ld%s = %d, want >= %d", name, ld, max(1, cols))
		}
		if rows > 0 && cols > 0 && (rows-1 > (math.MaxInt-cols)/ld || l < (rows-1)*ld+cols) {
			return fmt.Errorf("gomoe: Gemm: %s has %d elements, want (%d-1)·%d+%d", name, l, rows, ld, cols)
		}
		return nil
	}
	ra, ca, rb, cb := m, k, k, n
	if tA {
		ra, ca = k, m
	}
	if tB {
		rb, cb = n, k
	}
	if err := need("a", ra, ca, lda, la); err != nil {
		return err
	}
	if err := need("b", rb, cb, ldb, lb); err != nil {
		return err
	}
	return need("c", m, n, ldc, lc)
}
