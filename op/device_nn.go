package op

import (
	G "gorgonia.org/gorgonia"

	"github.com/gomoe/gomoe/internal/opkit"
)

// deviceNN runs the building blocks of the examples' models (BiasAdd, ReLU, RMSNorm,
// CrossEntropy, Embedding) on device values. The registered device backend implements it in the cuda
// build (device_cuda_nn.go); the ops reach it through nnDevice. Like deviceKernels, every
// method allocates its output on the device and gives the CPU kernel's result (package kernels,
// nn.go) within the rounding stated there.
type deviceNN interface {
	// BiasAdd returns y [N,D] = x [N,D] + b [D] (b broadcast over the rows).
	BiasAdd(x, b G.Value) (G.Value, error)
	// ColSum returns out [D] = Σ_rows x [N,D].
	ColSum(x G.Value) (G.Value, error)
	// ReLU returns max(x, 0); ReLUGrad returns dy where x > 0, else 0.
	ReLU(x G.Value) (G.Value, error)
	ReLUGrad(x, dy G.Value) (G.Value, error)
	// RMSNorm returns x [N,D] / sqrt(mean_row(x²) + eps) · gain [D].
	RMSNorm(x, gain G.Value, eps float64) (G.Value, error)
	// RMSNormGrad returns the gradient of input which (0: x [N,D], 1: gain [D]) from dy [N,D].
	RMSNormGrad(x, gain, dy G.Value, eps float64, which int) (G.Value, error)
	// CrossEntropy returns the mean softmax cross-entropy of logits [N,C] against target
	// [N,C] as a 0-d device tensor (one element).
	CrossEntropy(logits, target G.Value) (G.Value, error)
	// CrossEntropyGrad returns dlogits [N,C] = g·scale·(softmax(logits) − target), where g is
	// the one-element device value dy, or 1 when dy is nil (the host loss gradient is then
	// folded into scale).
	CrossEntropyGrad(logits, target, dy G.Value, scale float64) (G.Value, error)
	// Embedding returns out [N,D] = table [V,D] rows ids [N] int32; EmbeddingGrad returns
	// dtable [V,D] from dy [N,D] and ids.
	Embedding(table, ids G.Value) (G.Value, error)
	EmbeddingGrad(dy, ids G.Value, V int) (G.Value, error)
}

// nnDevice returns the registered backend's nn methods, or an error when it has none.
func nnDevice(name string) (deviceNN, error) {
	d, ok := device.(deviceNN)
	if !ok {
		return nil, opkit.Errorf(name, "the device backend has no kernels for this op")
	}
	return d, nil
}
