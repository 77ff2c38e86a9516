package train

import (
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// gpu updates weights in GPU memory. The default build registers none; the gomoecuda build
// registers one (device_cuda.go) that works on package device's engines.
type gpu interface {
	// Owns reports whether v lives in GPU memory.
	Owns(v G.Value) bool
	// Same returns an error unless a and b live on the same GPU.
	Same(a, b *tensor.Dense) error
	// Zeros returns a persistent zeroed device tensor of w's size and dtype dt, on w's GPU;
	// Master returns a persistent float32 copy of the bfloat16 device weight w; Matches
	// reports whether st (from Zeros or Master) still fits w with dtype dt; Release frees it.
	Zeros(w *tensor.Dense, dt tensor.Dtype) (any, error)
	Master(w *tensor.Dense) (any, error)
	Matches(st any, w *tensor.Dense, dt tensor.Dtype) bool
	Release(st any)
	// Adam and SGD launch the update kernels (w32: the float32 master of a bfloat16 w, else nil).
	Adam(w, g *tensor.Dense, w32, m, v any, lr, b1, b2, eps, c1, c2, wd float64) error
	SGD(w, g *tensor.Dense, w32 any, lr, wd float64) error
	// EndStep recycles the step memory of the engine holding v; Scalar copies a device
	// scalar to the host.
	EndStep(v G.Value)
	Scalar(v G.Value) (float64, error)
	// Download returns a host copy of the device tensor t; Upload copies the host tensor src
	// into the device tensor dst of the same dtype and size (checkpoints).
	Download(t *tensor.Dense) (*tensor.Dense, error)
	Upload(dst, src *tensor.Dense) error
	// SumSquares returns Σ g² of the device tensor g (rows of the accumulator type summed in
	// float64 on the host); Scale multiplies g by s in place (gradient clipping).
	SumSquares(g *tensor.Dense) (float64, error)
	Scale(g *tensor.Dense, s float64) error
}

var device gpu
