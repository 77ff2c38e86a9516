//go:build amd64 && !noasm

#include "textflag.h"

// Weighted sums of k rows (the combine of UnpermuteForward and the slot sum of
// PermuteBackward), AVX2: d[i] = ((+0 + round(w[0]·s0[i])) + round(w[1]·s1[i])) + … for i < n,
// s_j = base + offs[j] elements. Each product is rounded on its own and added in j order in
// the data type (VMULPS then VADDPS, never a fused multiply-add), the kernels' rounding
// contract, so every element has the bits of the scalar loop. One pass over d: 32 float32
// (16 float64) columns of all k rows at a time, then 8 (4) at a time; n a multiple of 8 (4).

// func AccRowsF32AVX2(d, base *float32, offs *int, w *float32, k, n int)
TEXT ·AccRowsF32AVX2(SB), NOSPLIT, $0-48
	MOVQ d+0(FP), DI
	MOVQ base+8(FP), SI
	MOVQ offs+16(FP), R8
	MOVQ w+24(FP), R9
	MOVQ k+32(FP), R10
	MOVQ n+40(FP), CX
	SHLQ $2, CX
	XORQ R11, R11

blk32:
	MOVQ CX, AX
	SUBQ R11, AX
	CMPQ AX, $128
	JLT blk8
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
	XORQ BX, BX

k32:
	MOVQ (R8)(BX*8), DX
	LEAQ (SI)(DX*4), DX
	ADDQ R11, DX
	VBROADCASTSS (R9)(BX*4), Y4
	VMULPS (DX), Y4, Y5
	VMULPS 32(DX), Y4, Y6
	VMULPS 64(DX), Y4, Y7
	VMULPS 96(DX), Y4, Y8
	VADDPS Y5, Y0, Y0
	VADDPS Y6, Y1, Y1
	VADDPS Y7, Y2, Y2
	VADDPS Y8, Y3, Y3
	INCQ BX
	CMPQ BX, R10
	JLT k32
	VMOVUPS Y0, (DI)(R11*1)
	VMOVUPS Y1, 32(DI)(R11*1)
	VMOVUPS Y2, 64(DI)(R11*1)
	VMOVUPS Y3, 96(DI)(R11*1)
	ADDQ $128, R11
	JMP blk32

blk8:
	CMPQ AX, $32
	JLT done32
	VXORPS Y0, Y0, Y0
	XORQ BX, BX

k8:
	MOVQ (R8)(BX*8), DX
	LEAQ (SI)(DX*4), DX
	ADDQ R11, DX
	VBROADCASTSS (R9)(BX*4), Y4
	VMULPS (DX), Y4, Y5
	VADDPS Y5, Y0, Y0
	INCQ BX
	CMPQ BX, R10
	JLT k8
	VMOVUPS Y0, (DI)(R11*1)
	ADDQ $32, R11
	MOVQ CX, AX
	SUBQ R11, AX
	JMP blk8

done32:
	VZEROUPPER
	RET

// func AccRowsF64AVX2(d, base *float64, offs *int, w *float64, k, n int)
TEXT ·AccRowsF64AVX2(SB), NOSPLIT, $0-48
	MOVQ d+0(FP), DI
	MOVQ base+8(FP), SI
	MOVQ offs+16(FP), R8
	MOVQ w+24(FP), R9
	MOVQ k+32(FP), R10
	MOVQ n+40(FP), CX
	SHLQ $3, CX
	XORQ R11, R11

dblk16:
	MOVQ CX, AX
	SUBQ R11, AX
	CMPQ AX, $128
	JLT dblk4
	VXORPD Y0, Y0, Y0
	VXORPD Y1, Y1, Y1
	VXORPD Y2, Y2, Y2
	VXORPD Y3, Y3, Y3
	XORQ BX, BX

dk16:
	MOVQ (R8)(BX*8), DX
	LEAQ (SI)(DX*8), DX
	ADDQ R11, DX
	VBROADCASTSD (R9)(BX*8), Y4
	VMULPD (DX), Y4, Y5
	VMULPD 32(DX), Y4, Y6
	VMULPD 64(DX), Y4, Y7
	VMULPD 96(DX), Y4, Y8
	VADDPD Y5, Y0, Y0
	VADDPD Y6, Y1, Y1
	VADDPD Y7, Y2, Y2
	VADDPD Y8, Y3, Y3
	INCQ BX
	CMPQ BX, R10
	JLT dk16
	VMOVUPD Y0, (DI)(R11*1)
	VMOVUPD Y1, 32(DI)(R11*1)
	VMOVUPD Y2, 64(DI)(R11*1)
	VMOVUPD Y3, 96(DI)(R11*1)
	ADDQ $128, R11
	JMP dblk16

dblk4:
	CMPQ AX, $32
	JLT ddone
	VXORPD Y0, Y0, Y0
	XORQ BX, BX

dk4:
	MOVQ (R8)(BX*8), DX
	LEAQ (SI)(DX*8), DX
	ADDQ R11, DX
	VBROADCASTSD (R9)(BX*8), Y4
	VMULPD (DX), Y4, Y5
	VADDPD Y5, Y0, Y0
	INCQ BX
	CMPQ BX, R10
	JLT dk4
	VMOVUPD Y0, (DI)(R11*1)
	ADDQ $32, R11
	MOVQ CX, AX
	SUBQ R11, AX
	JMP dblk4

ddone:
	VZEROUPPER
	RET
