//go:build amd64 && !noasm

#include "textflag.h"

// Vectorised logistic sigmoid in float32 (AVX2 + FMA), 8 lanes per step.
//
// For each x: e = exp(−|x|) by range reduction (n = round(−|x|·log₂e), r = −|x| − n·ln2 in
// two parts, the Cephes expf polynomial for exp(r), times 2^n as two exact power-of-two
// factors so that subnormal results round once), −|x| clamped to −104 (exp underflows to 0
// below); d = 1 + e; σ(x) = 1/d and σ(−x) = e/d for x >= +0, the other way round for x < 0
// (and −0). A NaN x gives NaN in both. See sigmoid_amd64.go for the measured accuracy.

DATA sgmSign<>+0(SB)/4, $0x80000000
DATA sgmSign<>+4(SB)/4, $0x80000000
DATA sgmSign<>+8(SB)/4, $0x80000000
DATA sgmSign<>+12(SB)/4, $0x80000000
DATA sgmSign<>+16(SB)/4, $0x80000000
DATA sgmSign<>+20(SB)/4, $0x80000000
DATA sgmSign<>+24(SB)/4, $0x80000000
DATA sgmSign<>+28(SB)/4, $0x80000000
GLOBL sgmSign<>(SB), RODATA|NOPTR, $32

DATA sgmMin<>+0(SB)/4, $0xc2d00000
DATA sgmMin<>+4(SB)/4, $0xc2d00000
DATA sgmMin<>+8(SB)/4, $0xc2d00000
DATA sgmMin<>+12(SB)/4, $0xc2d00000
DATA sgmMin<>+16(SB)/4, $0xc2d00000
DATA sgmMin<>+20(SB)/4, $0xc2d00000
DATA sgmMin<>+24(SB)/4, $0xc2d00000
DATA sgmMin<>+28(SB)/4, $0xc2d00000
GLOBL sgmMin<>(SB), RODATA|NOPTR, $32

DATA sgmLog2e<>+0(SB)/4, $0x3fb8aa3b
DATA sgmLog2e<>+4(SB)/4, $0x3fb8aa3b
DATA sgmLog2e<>+8(SB)/4, $0x3fb8aa3b
DATA sgmLog2e<>+12(SB)/4, $0x3fb8aa3b
DATA sgmLog2e<>+16(SB)/4, $0x3fb8aa3b
DATA sgmLog2e<>+20(SB)/4, $0x3fb8aa3b
DATA sgmLog2e<>+24(SB)/4, $0x3fb8aa3b
DATA sgmLog2e<>+28(SB)/4, $0x3fb8aa3b
GLOBL sgmLog2e<>(SB), RODATA|NOPTR, $32

DATA sgmC1<>+0(SB)/4, $0x3f318000
DATA sgmC1<>+4(SB)/4, $0x3f318000
DATA sgmC1<>+8(SB)/4, $0x3f318000
DATA sgmC1<>+12(SB)/4, $0x3f318000
DATA sgmC1<>+16(SB)/4, $0x3f318000
DATA sgmC1<>+20(SB)/4, $0x3f318000
DATA sgmC1<>+24(SB)/4, $0x3f318000
DATA sgmC1<>+28(SB)/4, $0x3f318000
GLOBL sgmC1<>(SB), RODATA|NOPTR, $32

DATA sgmC2<>+0(SB)/4, $0xb95e8083
DATA sgmC2<>+4(SB)/4, $0xb95e8083
DATA sgmC2<>+8(SB)/4, $0xb95e8083
DATA sgmC2<>+12(SB)/4, $0xb95e8083
DATA sgmC2<>+16(SB)/4, $0xb95e8083
DATA sgmC2<>+20(SB)/4, $0xb95e8083
DATA sgmC2<>+24(SB)/4, $0xb95e8083
DATA sgmC2<>+28(SB)/4, $0xb95e8083
GLOBL sgmC2<>(SB), RODATA|NOPTR, $32

DATA sgmP0<>+0(SB)/4, $0x39506967
DATA sgmP0<>+4(SB)/4, $0x39506967
DATA sgmP0<>+8(SB)/4, $0x39506967
DATA sgmP0<>+12(SB)/4, $0x39506967
DATA sgmP0<>+16(SB)/4, $0x39506967
DATA sgmP0<>+20(SB)/4, $0x39506967
DATA sgmP0<>+24(SB)/4, $0x39506967
DATA sgmP0<>+28(SB)/4, $0x39506967
GLOBL sgmP0<>(SB), RODATA|NOPTR, $32

DATA sgmP1<>+0(SB)/4, $0x3ab743ce
DATA sgmP1<>+4(SB)/4, $0x3ab743ce
DATA sgmP1<>+8(SB)/4, $0x3ab743ce
DATA sgmP1<>+12(SB)/4, $0x3ab743ce
DATA sgmP1<>+16(SB)/4, $0x3ab743ce
DATA sgmP1<>+20(SB)/4, $0x3ab743ce
DATA sgmP1<>+24(SB)/4, $0x3ab743ce
DATA sgmP1<>+28(SB)/4, $0x3ab743ce
GLOBL sgmP1<>(SB), RODATA|NOPTR, $32

DATA sgmP2<>+0(SB)/4, $0x3c088908
DATA sgmP2<>+4(SB)/4, $0x3c088908
DATA sgmP2<>+8(SB)/4, $0x3c088908
DATA sgmP2<>+12(SB)/4, $0x3c088908
DATA sgmP2<>+16(SB)/4, $0x3c088908
DATA sgmP2<>+20(SB)/4, $0x3c088908
DATA sgmP2<>+24(SB)/4, $0x3c088908
DATA sgmP2<>+28(SB)/4, $0x3c088908
GLOBL sgmP2<>(SB), RODATA|NOPTR, $32

DATA sgmP3<>+0(SB)/4, $0x3d2aa9c1
DATA sgmP3<>+4(SB)/4, $0x3d2aa9c1
DATA sgmP3<>+8(SB)/4, $0x3d2aa9c1
DATA sgmP3<>+12(SB)/4, $0x3d2aa9c1
DATA sgmP3<>+16(SB)/4, $0x3d2aa9c1
DATA sgmP3<>+20(SB)/4, $0x3d2aa9c1
DATA sgmP3<>+24(SB)/4, $0x3d2aa9c1
DATA sgmP3<>+28(SB)/4, $0x3d2aa9c1
GLOBL sgmP3<>(SB), RODATA|NOPTR, $32

DATA sgmP4<>+0(SB)/4, $0x3e2aaaaa
DATA sgmP4<>+4(SB)/4, $0x3e2aaaaa
DATA sgmP4<>+8(SB)/4, $0x3e2aaaaa
DATA sgmP4<>+12(SB)/4, $0x3e2aaaaa
DATA sgmP4<>+16(SB)/4, $0x3e2aaaaa
DATA sgmP4<>+20(SB)/4, $0x3e2aaaaa
DATA sgmP4<>+24(SB)/4, $0x3e2aaaaa
DATA sgmP4<>+28(SB)/4, $0x3e2aaaaa
GLOBL sgmP4<>(SB), RODATA|NOPTR, $32

DATA sgmP5<>+0(SB)/4, $0x3f000000
DATA sgmP5<>+4(SB)/4, $0x3f000000
DATA sgmP5<>+8(SB)/4, $0x3f000000
DATA sgmP5<>+12(SB)/4, $0x3f000000
DATA sgmP5<>+16(SB)/4, $0x3f000000
DATA sgmP5<>+20(SB)/4, $0x3f000000
DATA sgmP5<>+24(SB)/4, $0x3f000000
DATA sgmP5<>+28(SB)/4, $0x3f000000
GLOBL sgmP5<>(SB), RODATA|NOPTR, $32

DATA sgmOne<>+0(SB)/4, $0x3f800000
DATA sgmOne<>+4(SB)/4, $0x3f800000
DATA sgmOne<>+8(SB)/4, $0x3f800000
DATA sgmOne<>+12(SB)/4, $0x3f800000
DATA sgmOne<>+16(SB)/4, $0x3f800000
DATA sgmOne<>+20(SB)/4, $0x3f800000
DATA sgmOne<>+24(SB)/4, $0x3f800000
DATA sgmOne<>+28(SB)/4, $0x3f800000
GLOBL sgmOne<>(SB), RODATA|NOPTR, $32

DATA sgmBias<>+0(SB)/4, $0x0000007f
DATA sgmBias<>+4(SB)/4, $0x0000007f
DATA sgmBias<>+8(SB)/4, $0x0000007f
DATA sgmBias<>+12(SB)/4, $0x0000007f
DATA sgmBias<>+16(SB)/4, $0x0000007f
DATA sgmBias<>+20(SB)/4, $0x0000007f
DATA sgmBias<>+24(SB)/4, $0x0000007f
DATA sgmBias<>+28(SB)/4, $0x0000007f
GLOBL sgmBias<>(SB), RODATA|NOPTR, $32

// func sigmoidPairAVX2(s, sm, x *float32, n int)
// s[i] = σ(x[i]), sm[i] = σ(−x[i]) for i < n; n a multiple of 8.
TEXT ·SigmoidPairAVX2(SB), NOSPLIT, $0-32
	MOVQ s+0(FP), DI
	MOVQ sm+8(FP), R9
	MOVQ x+16(FP), SI
	MOVQ n+24(FP), CX
	SHRQ $3, CX
	JZ done
	VMOVUPS sgmOne<>(SB), Y7
	VMOVUPS sgmBias<>(SB), Y8

loop:
	VMOVUPS (SI), Y0
	VORPS sgmSign<>(SB), Y0, Y1
	VMAXPS sgmMin<>(SB), Y1, Y1
	VMULPS sgmLog2e<>(SB), Y1, Y2
	VROUNDPS $0, Y2, Y2
	VFNMADD231PS sgmC1<>(SB), Y2, Y1
	VFNMADD231PS sgmC2<>(SB), Y2, Y1
	VMOVUPS sgmP0<>(SB), Y3
	VFMADD213PS sgmP1<>(SB), Y1, Y3
	VFMADD213PS sgmP2<>(SB), Y1, Y3
	VFMADD213PS sgmP3<>(SB), Y1, Y3
	VFMADD213PS sgmP4<>(SB), Y1, Y3
	VFMADD213PS sgmP5<>(SB), Y1, Y3
	VMULPS Y1, Y1, Y4
	VFMADD213PS Y1, Y4, Y3
	VADDPS Y7, Y3, Y3
	VCVTPS2DQ Y2, Y5
	VPSRAD $1, Y5, Y6
	VPSUBD Y6, Y5, Y5
	VPADDD Y8, Y6, Y6
	VPSLLD $23, Y6, Y6
	VPADDD Y8, Y5, Y5
	VPSLLD $23, Y5, Y5
	VMULPS Y6, Y3, Y3
	VMULPS Y5, Y3, Y3
	VADDPS Y7, Y3, Y4
	VDIVPS Y4, Y7, Y5
	VDIVPS Y4, Y3, Y6
	VBLENDVPS Y0, Y6, Y5, Y1
	VBLENDVPS Y0, Y5, Y6, Y2
	VCMPPS $3, Y0, Y0, Y4
	VBLENDVPS Y4, Y0, Y1, Y1
	VBLENDVPS Y4, Y0, Y2, Y2
	VMOVUPS Y1, (DI)
	VMOVUPS Y2, (R9)
	ADDQ $32, SI
	ADDQ $32, DI
	ADDQ $32, R9
	DECQ CX
	JNZ loop

done:
	VZEROUPPER
	RET

// func ExpSubAVX2(y, x *float32, n int, m *float32)
// y[i] = exp(x[i] − m) for i < n, n a multiple of 8, m finite and x[i] <= m or −Inf (the row
// softmax's numerators). The difference is kept exactly as s + lo (TwoSum, no fused ops) and
// lo joins the reduced argument, so the rounding of x − m costs no accuracy; then the same
// range reduction, polynomial and two-factor scaling as above. s <= −104 (and x = −Inf) gives
// +0. See kernels/softmax_amd64.go for the measured accuracy.
TEXT ·ExpSubAVX2(SB), NOSPLIT, $0-32
	MOVQ y+0(FP), DI
	MOVQ x+8(FP), SI
	MOVQ n+16(FP), CX
	MOVQ m+24(FP), AX
	VBROADCASTSS (AX), Y9
	VXORPS sgmSign<>(SB), Y9, Y10
	SHRQ $3, CX
	JZ edone
	VMOVUPS sgmOne<>(SB), Y7
	VMOVUPS sgmBias<>(SB), Y8
	VMOVUPS sgmMin<>(SB), Y11

eloop:
	VMOVUPS (SI), Y0
	VADDPS Y10, Y0, Y1
	VSUBPS Y0, Y1, Y2
	VSUBPS Y2, Y1, Y3
	VSUBPS Y3, Y0, Y3
	VSUBPS Y2, Y10, Y4
	VADDPS Y4, Y3, Y3
	VCMPPS $0x1e, Y11, Y1, Y4
	VANDPS Y4, Y3, Y3
	VMAXPS Y11, Y1, Y1
	VMULPS sgmLog2e<>(SB), Y1, Y2
	VROUNDPS $0, Y2, Y2
	VFNMADD231PS sgmC1<>(SB), Y2, Y1
	VFNMADD231PS sgmC2<>(SB), Y2, Y1
	VADDPS Y3, Y1, Y1
	VMOVUPS sgmP0<>(SB), Y3
	VFMADD213PS sgmP1<>(SB), Y1, Y3
	VFMADD213PS sgmP2<>(SB), Y1, Y3
	VFMADD213PS sgmP3<>(SB), Y1, Y3
	VFMADD213PS sgmP4<>(SB), Y1, Y3
	VFMADD213PS sgmP5<>(SB), Y1, Y3
	VMULPS Y1, Y1, Y4
	VFMADD213PS Y1, Y4, Y3
	VADDPS Y7, Y3, Y3
	VCVTPS2DQ Y2, Y5
	VPSRAD $1, Y5, Y6
	VPSUBD Y6, Y5, Y5
	VPADDD Y8, Y6, Y6
	VPSLLD $23, Y6, Y6
	VPADDD Y8, Y5, Y5
	VPSLLD $23, Y5, Y5
	VMULPS Y6, Y3, Y3
	VMULPS Y5, Y3, Y3
	VMOVUPS Y3, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	DECQ CX
	JNZ eloop

edone:
	VZEROUPPER
	RET
