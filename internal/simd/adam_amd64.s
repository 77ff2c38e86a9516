//go:build amd64 && !noasm

#include "textflag.h"

// func AdamAVX(p, grad, m, v *float32, n int, k *[10]float32) int
//
// AdamUpdate's float32 step on n elements (n a multiple of 8), 8 lanes at a time, with the same
// operations in the same order as the Go loop in kernels/optimizer.go, each rounded to float32 on
// its own (no fused multiply-add; the square root is IEEE's, correctly rounded), so the bits are
// the loop's. k holds L, B1, B2, Eps, C1, C2, W, 1−B1, 1−B2, +Inf. It stops before the first
// group of 8 in which some g·g or v/C2 is +Inf (the Go loop takes those another way; g·g can
// overflow while v/C2 does not, with v = −Inf) and returns how many elements it updated.
TEXT ·AdamAVX(SB), NOSPLIT, $0-56
	MOVQ p+0(FP), DI
	MOVQ grad+8(FP), SI
	MOVQ m+16(FP), R9
	MOVQ v+24(FP), R10
	MOVQ n+32(FP), CX
	MOVQ k+40(FP), R8
	XORQ R11, R11
	SHRQ $3, CX
	JZ done
	VBROADCASTSS 0(R8), Y15  // L
	VBROADCASTSS 4(R8), Y8   // B1
	VBROADCASTSS 8(R8), Y10  // B2
	VBROADCASTSS 12(R8), Y14 // Eps
	VBROADCASTSS 16(R8), Y12 // C1
	VBROADCASTSS 20(R8), Y13 // C2
	VBROADCASTSS 24(R8), Y7  // W
	VBROADCASTSS 28(R8), Y9  // 1-B1
	VBROADCASTSS 32(R8), Y11 // 1-B2
	VBROADCASTSS 36(R8), Y6  // +Inf

loop:
	VMOVUPS (DI), Y0  // x
	VMOVUPS (SI), Y1  // g
	VMOVUPS (R9), Y2  // m
	VMOVUPS (R10), Y3 // v
	VMULPS  Y8, Y2, Y2  // B1·m
	VMULPS  Y9, Y1, Y4  // (1-B1)·g
	VADDPS  Y4, Y2, Y2  // mi
	VMULPS  Y1, Y1, Y4  // g·g
	VCMPPS  $0, Y6, Y4, Y1 // the lanes where g·g is +Inf
	VMULPS  Y11, Y4, Y4 // (1-B2)·g·g
	VMULPS  Y10, Y3, Y3 // B2·v
	VADDPS  Y4, Y3, Y3  // vi
	VDIVPS  Y13, Y3, Y5 // vi/C2
	VCMPPS  $0, Y6, Y5, Y4 // the lanes where vi/C2 is +Inf
	VORPS   Y4, Y1, Y1
	VMOVMSKPS Y1, AX
	TESTL   AX, AX
	JNZ     done        // this group and the rest go to the Go loop
	VMOVUPS Y2, (R9)
	VMOVUPS Y3, (R10)
	VDIVPS  Y12, Y2, Y4 // mi/C1
	VSQRTPS Y5, Y5
	VADDPS  Y14, Y5, Y5 // + Eps
	VDIVPS  Y5, Y4, Y4  // step
	VMULPS  Y7, Y0, Y5  // W·x
	VADDPS  Y5, Y4, Y4  // step + W·x
	VMULPS  Y15, Y4, Y4 // L·(…)
	VSUBPS  Y4, Y0, Y0  // x − L·(…)
	VMOVUPS Y0, (DI)
	ADDQ    $32, DI
	ADDQ    $32, SI
	ADDQ    $32, R9
	ADDQ    $32, R10
	ADDQ    $8, R11
	DECQ    CX
	JNZ     loop

done:
	MOVQ R11, ret+48(FP)
	VZEROUPPER
	RET
