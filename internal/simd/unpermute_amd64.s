//go:build amd64 && !noasm

#include "textflag.h"

// One routed row of kernels.UnpermuteBackward in one pass over it (AVX2): read s (a row
// of dy) once, write the row of dyp (w·s, or s itself) and accumulate the float64 dot product
// ⟨yp, s⟩ in dot64's 8 lanes (lane j sums the terms of the elements h ≡ j (mod 8) in h order,
// from +0; Y0 holds lanes 0–3, Y1 lanes 4–7). Every element is the Go loops' operation with the
// same rounding: w·s one multiply in the data type; the float64 product yp·s is rounded (exact
// for float32 data), then added: no fused multiply-add, whose add has the longer latency on the
// lanes' dependency chains. n is a multiple of 8.
//
// flags: bit 0 accumulate the dot (l written), bit 1 write d, bit 2 scale by *w (else copy s),
// bit 3 non-temporal stores for d (d 32-byte aligned; an SFENCE ends the call).

#define UB_DOT 1
#define UB_STORE 2
#define UB_SCALE 4
#define UB_NT 8

// PFDIST is how far ahead in yp the dot loops prefetch: the rows of yp that one token reads lie
// in different experts' segments, and the hardware prefetcher starts afresh on each.
#define PFDIST 2048

// float32, 8 elements at (SI), (DX), (DI).
#define LD32 VMOVUPS (SI), Y2
#define SC32 VMULPS Y2, Y15, Y3
#define DOT32 \
	PREFETCHT0 PFDIST(DX); \
	VCVTPS2PD X2, Y4; \
	VEXTRACTF128 $1, Y2, X5; \
	VCVTPS2PD X5, Y5; \
	VCVTPS2PD (DX), Y6; \
	VCVTPS2PD 16(DX), Y7; \
	VMULPD Y6, Y4, Y4; \
	VMULPD Y7, Y5, Y5; \
	VADDPD Y4, Y0, Y0; \
	VADDPD Y5, Y1, Y1
#define ADV32 \
	ADDQ $32, SI; \
	ADDQ $32, DX; \
	ADDQ $32, DI; \
	DECQ CX

// func UnpermBwdF32AVX2(l *[8]float64, d, s, yp, w *float32, n, flags int)
TEXT ·UnpermBwdF32AVX2(SB), NOSPLIT, $0-56
	MOVQ l+0(FP), R10
	MOVQ d+8(FP), DI
	MOVQ s+16(FP), SI
	MOVQ yp+24(FP), DX
	MOVQ w+32(FP), R8
	MOVQ n+40(FP), CX
	MOVQ flags+48(FP), R9
	VXORPD Y0, Y0, Y0
	VXORPD Y1, Y1, Y1
	SHRQ $3, CX
	JZ f32done
	TESTQ $UB_SCALE, R9
	JZ f32noscale
	VBROADCASTSS (R8), Y15

f32noscale:
	MOVQ R9, AX
	ANDQ $(UB_DOT|UB_STORE|UB_SCALE|UB_NT), AX
	CMPQ AX, $(UB_DOT|UB_STORE|UB_SCALE)
	JEQ f32dst
	CMPQ AX, $(UB_DOT|UB_STORE|UB_SCALE|UB_NT)
	JEQ f32dsn
	CMPQ AX, $(UB_DOT|UB_STORE)
	JEQ f32dct
	CMPQ AX, $(UB_DOT|UB_STORE|UB_NT)
	JEQ f32dcn
	CMPQ AX, $(UB_STORE|UB_SCALE)
	JEQ f32st
	CMPQ AX, $(UB_STORE|UB_SCALE|UB_NT)
	JEQ f32sn
	CMPQ AX, $(UB_STORE)
	JEQ f32ct
	CMPQ AX, $(UB_STORE|UB_NT)
	JEQ f32cn
	TESTQ $UB_DOT, AX
	JNZ f32d
	JMP f32done

f32dst: // dot, scale, temporal stores
	LD32
	SC32
	VMOVUPS Y3, (DI)
	DOT32
	ADV32
	JNZ f32dst
	JMP f32done

f32dsn: // dot, scale, non-temporal stores
	LD32
	SC32
	VMOVNTPS Y3, (DI)
	DOT32
	ADV32
	JNZ f32dsn
	JMP f32done

f32dct: // dot, copy, temporal
	LD32
	VMOVUPS Y2, (DI)
	DOT32
	ADV32
	JNZ f32dct
	JMP f32done

f32dcn: // dot, copy, non-temporal
	LD32
	VMOVNTPS Y2, (DI)
	DOT32
	ADV32
	JNZ f32dcn
	JMP f32done

f32st: // scale, temporal
	LD32
	SC32
	VMOVUPS Y3, (DI)
	ADV32
	JNZ f32st
	JMP f32done

f32sn: // scale, non-temporal
	LD32
	SC32
	VMOVNTPS Y3, (DI)
	ADV32
	JNZ f32sn
	JMP f32done

f32ct: // copy, temporal
	LD32
	VMOVUPS Y2, (DI)
	ADV32
	JNZ f32ct
	JMP f32done

f32cn: // copy, non-temporal
	LD32
	VMOVNTPS Y2, (DI)
	ADV32
	JNZ f32cn
	JMP f32done

f32d: // dot only
	LD32
	DOT32
	ADV32
	JNZ f32d

f32done:
	TESTQ $UB_NT, R9
	JZ f32nofence
	SFENCE

f32nofence:
	TESTQ $UB_DOT, R9
	JZ f32ret
	VMOVUPD Y0, (R10)
	VMOVUPD Y1, 32(R10)

f32ret:
	VZEROUPPER
	RET

// float64, 8 elements at (SI), (DX), (DI).
#define LD64 \
	VMOVUPD (SI), Y2; \
	VMOVUPD 32(SI), Y3
#define SC64 \
	VMULPD Y2, Y15, Y4; \
	VMULPD Y3, Y15, Y5
#define DOT64 \
	PREFETCHT0 PFDIST(DX); \
	VMULPD (DX), Y2, Y6; \
	VMULPD 32(DX), Y3, Y7; \
	VADDPD Y6, Y0, Y0; \
	VADDPD Y7, Y1, Y1
#define ADV64 \
	ADDQ $64, SI; \
	ADDQ $64, DX; \
	ADDQ $64, DI; \
	DECQ CX

// func UnpermBwdF64AVX2(l *[8]float64, d, s, yp, w *float64, n, flags int)
TEXT ·UnpermBwdF64AVX2(SB), NOSPLIT, $0-56
	MOVQ l+0(FP), R10
	MOVQ d+8(FP), DI
	MOVQ s+16(FP), SI
	MOVQ yp+24(FP), DX
	MOVQ w+32(FP), R8
	MOVQ n+40(FP), CX
	MOVQ flags+48(FP), R9
	VXORPD Y0, Y0, Y0
	VXORPD Y1, Y1, Y1
	SHRQ $3, CX
	JZ f64done
	TESTQ $UB_SCALE, R9
	JZ f64noscale
	VBROADCASTSD (R8), Y15

f64noscale:
	MOVQ R9, AX
	ANDQ $(UB_DOT|UB_STORE|UB_SCALE|UB_NT), AX
	CMPQ AX, $(UB_DOT|UB_STORE|UB_SCALE)
	JEQ f64dst
	CMPQ AX, $(UB_DOT|UB_STORE|UB_SCALE|UB_NT)
	JEQ f64dsn
	CMPQ AX, $(UB_DOT|UB_STORE)
	JEQ f64dct
	CMPQ AX, $(UB_DOT|UB_STORE|UB_NT)
	JEQ f64dcn
	CMPQ AX, $(UB_STORE|UB_SCALE)
	JEQ f64st
	CMPQ AX, $(UB_STORE|UB_SCALE|UB_NT)
	JEQ f64sn
	CMPQ AX, $(UB_STORE)
	JEQ f64ct
	CMPQ AX, $(UB_STORE|UB_NT)
	JEQ f64cn
	TESTQ $UB_DOT, AX
	JNZ f64d
	JMP f64done

f64dst:
	LD64
	SC64
	VMOVUPD Y4, (DI)
	VMOVUPD Y5, 32(DI)
	DOT64
	ADV64
	JNZ f64dst
	JMP f64done

f64dsn:
	LD64
	SC64
	VMOVNTPD Y4, (DI)
	VMOVNTPD Y5, 32(DI)
	DOT64
	ADV64
	JNZ f64dsn
	JMP f64done

f64dct:
	LD64
	VMOVUPD Y2, (DI)
	VMOVUPD Y3, 32(DI)
	DOT64
	ADV64
	JNZ f64dct
	JMP f64done

f64dcn:
	LD64
	VMOVNTPD Y2, (DI)
	VMOVNTPD Y3, 32(DI)
	DOT64
	ADV64
	JNZ f64dcn
	JMP f64done

f64st:
	LD64
	SC64
	VMOVUPD Y4, (DI)
	VMOVUPD Y5, 32(DI)
	ADV64
	JNZ f64st
	JMP f64done

f64sn:
	LD64
	SC64
	VMOVNTPD Y4, (DI)
	VMOVNTPD Y5, 32(DI)
	ADV64
	JNZ f64sn
	JMP f64done

f64ct:
	LD64
	VMOVUPD Y2, (DI)
	VMOVUPD Y3, 32(DI)
	ADV64
	JNZ f64ct
	JMP f64done

f64cn:
	LD64
	VMOVNTPD Y2, (DI)
	VMOVNTPD Y3, 32(DI)
	ADV64
	JNZ f64cn
	JMP f64done

f64d:
	LD64
	DOT64
	ADV64
	JNZ f64d

f64done:
	TESTQ $UB_NT, R9
	JZ f64nofence
	SFENCE

f64nofence:
	TESTQ $UB_DOT, R9
	JZ f64ret
	VMOVUPD Y0, (R10)
	VMOVUPD Y1, 32(R10)

f64ret:
	VZEROUPPER
	RET
