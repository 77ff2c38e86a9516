package op

import G "gorgonia.org/gorgonia"

// Sigmoid returns σ(x) = 1/(1+e^−x) element-wise, computed without overflow for either sign.
// Unlike G.Sigmoid (which runs a Go closure through the engine's Map) it runs on the device
// engine too.
//
// Gradient: dy·y·(1−y). CPU kernels: kernels.ActivationForward/Backward with kernels.Sigmoid;
// on the device their CUDA twins.
func Sigmoid(x *G.Node) (*G.Node, error) { return applyPointwise(pwSigmoid, x) }
