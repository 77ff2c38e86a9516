package op

import G "gorgonia.org/gorgonia"

// SwiGLU returns silu(a)·b = a·σ(a)·b element-wise for a and b of one shape and float dtype
// (the gated activation of a SwiGLU FFN, with a = x·Wgate and b = x·Wup; see SwiGLUPacked for
// the two as the halves of one matmul's output).
//
// Gradients: da = dy·b·σ(a)·(1 + a·(1−σ(a))), db = dy·a·σ(a). CPU kernels:
// kernels.ActivationForward/Backward with kernels.SwiGLU; on the device their CUDA twins.
func SwiGLU(a, b *G.Node) (*G.Node, error) { return applyPointwise(pwSwiGLU, a, b) }
