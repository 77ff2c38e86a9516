//go:build amd64 && !noasm

#include "textflag.h"

// float32 rows with float64 arithmetic (AVX2 + FMA), for RMSNorm and the float64 dot products
// of package kernels (dot64). The sums keep 8 float64 lanes: lane j adds the terms of the
// elements h ≡ j (mod 8) in h order (Y0 holds lanes 0–3, Y1 lanes 4–7), so the order is fixed
// by the length alone; the caller adds the lanes in its fixed tree. The element formulas are
// the Go loops' operations in the same order, each rounded to float64 (a fused multiply-add
// only where the product of two float32 is exact in float64), so results are bitwise those of
// the Go code. n is a multiple of 8 everywhere.

// func DotLanesF32AVX2(l *[8]float64, a, b *float32, n int)
// l[j] = Σ_{h ≡ j mod 8} a[h]·b[h], summed from +0 in h order. (l is written, never read: a
// 32-byte load of what Go just stored 8 bytes at a time would stall on store forwarding.)
TEXT ·DotLanesF32AVX2(SB), NOSPLIT, $0-32
	MOVQ l+0(FP), DI
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DX
	MOVQ n+24(FP), CX
	VXORPD Y0, Y0, Y0
	VXORPD Y1, Y1, Y1
	SHRQ $3, CX
	JZ dldone

dlloop:
	VCVTPS2PD (SI), Y2
	VCVTPS2PD 16(SI), Y3
	VCVTPS2PD (DX), Y4
	VCVTPS2PD 16(DX), Y5
	VFMADD231PD Y4, Y2, Y0
	VFMADD231PD Y5, Y3, Y1
	ADDQ $32, SI
	ADDQ $32, DX
	DECQ CX
	JNZ dlloop

dldone:
	VMOVUPD Y0, (DI)
	VMOVUPD Y1, 32(DI)
	VZEROUPPER
	RET

// func Dot3LanesF32AVX2(l *[8]float64, a, b, c *float32, n int)
// l[j] = Σ_{h ≡ j mod 8} round(a[h]·b[h]·c[h]) from +0 in h order (a·b exact, times c
// rounded, then added: no fused multiply-add).
TEXT ·Dot3LanesF32AVX2(SB), NOSPLIT, $0-40
	MOVQ l+0(FP), DI
	MOVQ a+8(FP), SI
	MOVQ b+16(FP), DX
	MOVQ c+24(FP), R8
	MOVQ n+32(FP), CX
	VXORPD Y0, Y0, Y0
	VXORPD Y1, Y1, Y1
	SHRQ $3, CX
	JZ d3done

d3loop:
	VCVTPS2PD (SI), Y2
	VCVTPS2PD 16(SI), Y3
	VCVTPS2PD (DX), Y4
	VCVTPS2PD 16(DX), Y5
	VMULPD Y4, Y2, Y2
	VMULPD Y5, Y3, Y3
	VCVTPS2PD (R8), Y4
	VCVTPS2PD 16(R8), Y5
	VMULPD Y4, Y2, Y2
	VMULPD Y5, Y3, Y3
	VADDPD Y2, Y0, Y0
	VADDPD Y3, Y1, Y1
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, R8
	DECQ CX
	JNZ d3loop

d3done:
	VMOVUPD Y0, (DI)
	VMOVUPD Y1, 32(DI)
	VZEROUPPER
	RET

// func RMSScaleF32AVX2(y, x, gain *float32, r *float64, n int)
// y[i] = float32((x[i]·r)·gain[i]), each product rounded to float64.
TEXT ·RMSScaleF32AVX2(SB), NOSPLIT, $0-40
	MOVQ y+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ gain+16(FP), DX
	MOVQ r+24(FP), AX
	MOVQ n+32(FP), CX
	VBROADCASTSD (AX), Y6
	SHRQ $3, CX
	JZ rsdone

rsloop:
	VCVTPS2PD (SI), Y0
	VCVTPS2PD 16(SI), Y1
	VMULPD Y6, Y0, Y0
	VMULPD Y6, Y1, Y1
	VCVTPS2PD (DX), Y2
	VCVTPS2PD 16(DX), Y3
	VMULPD Y2, Y0, Y0
	VMULPD Y3, Y1, Y1
	VCVTPD2PSY Y0, X0
	VCVTPD2PSY Y1, X1
	VMOVUPS X0, (DI)
	VMOVUPS X1, 16(DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, DI
	DECQ CX
	JNZ rsloop

rsdone:
	VZEROUPPER
	RET

// func RMSBackF32AVX2(dx, x, gain, dy *float32, rc *[2]float64, n int)
// dx[i] = float32((r·gain[i])·dy[i] − x[i]·c) with r, c = rc[0], rc[1], each operation rounded
// to float64.
TEXT ·RMSBackF32AVX2(SB), NOSPLIT, $0-48
	MOVQ dx+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ gain+16(FP), DX
	MOVQ dy+24(FP), R8
	MOVQ rc+32(FP), AX
	MOVQ n+40(FP), CX
	VBROADCASTSD (AX), Y6
	VBROADCASTSD 8(AX), Y7
	SHRQ $3, CX
	JZ rbdone

rbloop:
	VCVTPS2PD (DX), Y0
	VCVTPS2PD 16(DX), Y1
	VMULPD Y6, Y0, Y0
	VMULPD Y6, Y1, Y1
	VCVTPS2PD (R8), Y2
	VCVTPS2PD 16(R8), Y3
	VMULPD Y2, Y0, Y0
	VMULPD Y3, Y1, Y1
	VCVTPS2PD (SI), Y2
	VCVTPS2PD 16(SI), Y3
	VMULPD Y7, Y2, Y2
	VMULPD Y7, Y3, Y3
	VSUBPD Y2, Y0, Y0
	VSUBPD Y3, Y1, Y1
	VCVTPD2PSY Y0, X0
	VCVTPD2PSY Y1, X1
	VMOVUPS X0, (DI)
	VMOVUPS X1, 16(DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $32, R8
	ADDQ $32, DI
	DECQ CX
	JNZ rbloop

rbdone:
	VZEROUPPER
	RET
