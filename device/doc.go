// Package device keeps Gorgonia values in GPU memory: a tensor.Engine over the CUDA driver
// (gorgonia.org/cu) with a caching allocator on plain cuMemAlloc (never managed memory), and
// helpers to copy tensors in and out.
//
// The engine is built only with the build tag `gomoecuda` (see engine_cuda.go; Gorgonia's own
// `cuda` tag swaps in its CUDA tape machine and needs cuDNN 7/8, so gomoe uses its own tag); the
// default build holds the allocator ([Pool]), which is plain Go and tested on the CPU.
//
// # Using the engine
//
//	eng, err := device.New(0)               // GPU 0
//	x, err := eng.CopyIn(hostX)             // device copy, kept until eng.Release(x)
//	m := G.NewTapeMachine(g, G.WithEngine(eng))
//	m.RunAll()                              // gomoe's ops run their CUDA kernels
//	y, err := eng.CopyOut(node.Value().(tensor.Tensor)) // host copy; reports device-side errors
//	m.Reset(); eng.EndStep()                // recycle the step's device buffers
//
// Values that ops allocate while a graph runs belong to the current step: EndStep returns
// their memory to the cache, so copy out what you need first. Tensors made by CopyIn and
// NewTensor persist until Release. Gorgonia never frees engine memory itself.
//
// # Limits
//
// On device values run gomoe's ops (package op), element-wise Add, Sub, Mul and Div (and
// their scalar forms), and MatMul / MatVecMul on cuBLAS (Gorgonia's G.Mul and its gradient).
// Other Gorgonia ops (reductions such as G.Sum, Gorgonia's own activations, softmax and
// printing a device tensor) would read device memory from the host or return an engine error.
// Values read with G.Read are step memory: see train.Step.
//
// # The device backend
//
// Backend is the one contract between a device and gomoe's packages: op's ops, train's
// optimizers and ep's row moves call it on device values, and Of returns the backend of some
// values (the Engine's CUDA implementation in the gomoecuda build, backend*_cuda.go; nil in the
// default build). It is declared in a file without build tags, so that the default build
// type-checks every call against it. A BackendEngine lets another tensor engine bring its own
// backend, which is how gomoe's tests run the ops' device paths on a fake device.
package device
