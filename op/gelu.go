package op

import G "gorgonia.org/gorgonia"

// GELU returns the tanh approximation of the GELU activation element-wise:
//
//	0.5·a·(1 + tanh(√(2/π)·(a + 0.044715·a³)))
//
// Gradient: dy·(½(1+th) + ½a(1−th²)·√(2/π)·(1 + 3·0.044715·a²)) with th the tanh above. CPU
// kernels: kernels.ActivationForward/Backward with kernels.GELU; on the device their CUDA twins.
func GELU(a *G.Node) (*G.Node, error) { return applyPointwise(pwGELU, a) }
