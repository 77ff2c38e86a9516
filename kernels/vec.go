package kernels

// Row loops of the CPU kernels. On amd64 they run through SIMD assembly (axpyAsm); elsewhere
// they are unrolled by 8 so that the scalar code Go emits keeps several independent loads,
// multiplies and adds in flight. Each keeps the rounding contract: every
// product is rounded on its own (the explicit conversion forbids a fused multiply-add) and
// every sum starts from +0.

// addRow sets d += s.
func addRow[F Float](d, s []F) {
	if axpyAsm(d, s, 1) { // 1·s is exact
		return
	}
	s = s[:len(d)]
	i := 0
	for ; i+8 <= len(d); i += 8 {
		dd, ss := d[i:i+8:i+8], s[i:i+8:i+8]
		dd[0], dd[1], dd[2], dd[3] = dd[0]+ss[0], dd[1]+ss[1], dd[2]+ss[2], dd[3]+ss[3]
		dd[4], dd[5], dd[6], dd[7] = dd[4]+ss[4], dd[5]+ss[5], dd[6]+ss[6], dd[7]+ss[7]
	}
	for ; i < len(d); i++ {
		d[i] += s[i]
	}
}

// setScaledRow sets d = 0 + round(w·s).
func setScaledRow[F Float](d, s []F, w F) {
	if hasAxpyAsm && w != 0 { // axpyAsm declines w = 0
		clear(d)
		if axpyAsm(d, s, w) { // it declines a named float type too: the loop below writes d
			return
		}
	}
	s = s[:len(d)]
	i := 0
	for ; i+8 <= len(d); i += 8 {
		dd, ss := d[i:i+8:i+8], s[i:i+8:i+8]
		dd[0], dd[1], dd[2], dd[3] = 0+F(w*ss[0]), 0+F(w*ss[1]), 0+F(w*ss[2]), 0+F(w*ss[3])
		dd[4], dd[5], dd[6], dd[7] = 0+F(w*ss[4]), 0+F(w*ss[5]), 0+F(w*ss[6]), 0+F(w*ss[7])
	}
	for ; i < len(d); i++ {
		d[i] = 0 + F(w*s[i])
	}
}

// addScaledRow sets d += round(w·s).
func addScaledRow[F Float](d, s []F, w F) {
	if axpyAsm(d, s, w) {
		return
	}
	s = s[:len(d)]
	i := 0
	for ; i+8 <= len(d); i += 8 {
		dd, ss := d[i:i+8:i+8], s[i:i+8:i+8]
		dd[0], dd[1], dd[2], dd[3] = dd[0]+F(w*ss[0]), dd[1]+F(w*ss[1]), dd[2]+F(w*ss[2]), dd[3]+F(w*ss[3])
		dd[4], dd[5], dd[6], dd[7] = dd[4]+F(w*ss[4]), dd[5]+F(w*ss[5]), dd[6]+F(w*ss[6]), dd[7]+F(w*ss[7])
	}
	for ; i < len(d); i++ {
		d[i] += F(w * s[i])
	}
}

// scaleRow sets d = w·s (one rounding per element).
func scaleRow[F Float](d, s []F, w F) {
	s = s[:len(d)]
	i := 0
	for ; i+8 <= len(d); i += 8 {
		dd, ss := d[i:i+8:i+8], s[i:i+8:i+8]
		dd[0], dd[1], dd[2], dd[3] = w*ss[0], w*ss[1], w*ss[2], w*ss[3]
		dd[4], dd[5], dd[6], dd[7] = w*ss[4], w*ss[5], w*ss[6], w*ss[7]
	}
	for ; i < len(d); i++ {
		d[i] = w * s[i]
	}
}

// dot64 is Σ_h a[h]·b[h] in float64: each product is rounded to float64, lane j of 8 sums the
// products with h ≡ j (mod 8) in h order, and the lanes are added pairwise in a fixed tree
// ((0+4)+(2+6))+((1+5)+(3+7)). The order depends on len(a) alone, so the result is
// reproducible everywhere; the 8 independent chains keep the adder busy.
//
// For float32 on amd64 the whole groups of 8 run in AVX2 (dotLanes32) with the same lanes and
// roundings, so the result is bitwise the same.
func dot64[F Float](a, b []F) float64 {
	var l [8]float64
	b = b[:len(a)]
	i := 0
	if a32, ok := any(a).([]float32); ok {
		i = dotLanes32(&l, a32, any(b).([]float32))
	}
	return dot64Lanes(&l, a, b, i)
}

// dot64Lanes finishes dot64: it adds the products from element i on (a multiple of 8) to the
// lanes l, which hold dot64's lanes of the first i elements, and adds the lanes in dot64's tree.
func dot64Lanes[F Float](l *[8]float64, a, b []F, i int) float64 {
	b = b[:len(a)]
	for ; i+8 <= len(a); i += 8 {
		aa, bb := a[i:i+8:i+8], b[i:i+8:i+8]
		l[0] += float64(float64(aa[0]) * float64(bb[0]))
		l[1] += float64(float64(aa[1]) * float64(bb[1]))
		l[2] += float64(float64(aa[2]) * float64(bb[2]))
		l[3] += float64(float64(aa[3]) * float64(bb[3]))
		l[4] += float64(float64(aa[4]) * float64(bb[4]))
		l[5] += float64(float64(aa[5]) * float64(bb[5]))
		l[6] += float64(float64(aa[6]) * float64(bb[6]))
		l[7] += float64(float64(aa[7]) * float64(bb[7]))
	}
	for j := 0; i < len(a); i, j = i+1, j+1 {
		l[j] += float64(float64(a[i]) * float64(b[i]))
	}
	return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

// accRowsGo is accRows with the row loops above: d = 0 + round(w[0]·row 0), then
// d += round(w[j]·row j) for j = 1, 2, … (d cleared when there are no rows).
func accRowsGo[F Float](d, src []F, offs []int, w []F) {
	n := len(d)
	if len(offs) == 0 {
		clear(d)
		return
	}
	for j, o := range offs {
		if j == 0 {
			setScaledRow(d, src[o:o+n], w[j])
		} else {
			addScaledRow(d, src[o:o+n], w[j])
		}
	}
}

// accRowsTail computes the columns i >= from of accRows one at a time: the same roundings as
// the vector kernel (each product rounded, added from +0 in j order).
func accRowsTail[F Float](d, src []F, offs []int, w []F, from int) {
	for i := from; i < len(d); i++ {
		var acc F
		for j, o := range offs {
			acc += F(w[j] * src[o+i])
		}
		d[i] = acc
	}
}

// dot3_64 is Σ_h round(round(a[h]·b[h])·c[h]) in float64 (each product rounded to float64: for
// float32 data a·b is exact), in dot64's fixed lane order and lane tree; for float32 on amd64
// the whole groups of 8 run in AVX2 (dot3Lanes32) with the same roundings.
func dot3_64[F Float](a, b, c []F) float64 {
	var l [8]float64
	b, c = b[:len(a)], c[:len(a)]
	i := 0
	if a32, ok := any(a).([]float32); ok {
		i = dot3Lanes32(&l, a32, any(b).([]float32), any(c).([]float32))
	}
	for j := 0; i < len(a); i, j = i+1, (j+1)&7 {
		p := float64(float64(a[i]) * float64(b[i]))
		l[j] += float64(p * float64(c[i]))
	}
	return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
}

// LossLanes is the number of lanes of the losses' final sums.
const LossLanes = 256

// laneSum adds v[i] into lane i mod LossLanes (in order) and the lanes with a fixed pairwise
// tree: the order of the GPU's one-block reduction.
func laneSum(n int, v func(i int) float64) float64 {
	var lanes [LossLanes]float64
	for i := 0; i < n; i++ {
		l := i % LossLanes
		lanes[l] = float64(lanes[l] + v(i))
	}
	for s := LossLanes / 2; s > 0; s >>= 1 {
		for j := 0; j < s; j++ {
			lanes[j] = float64(lanes[j] + lanes[j+s])
		}
	}
	return lanes[0]
}
