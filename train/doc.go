// Package train holds what a training loop around a Gorgonia graph needs beyond the graph:
// optimisers that update weights in place (Adam, SGD) on the CPU and on the GPU, and Step,
// which runs one step of a tape machine.
//
// Gorgonia's own solvers zero gradients and make dual values through raw host memory, so they
// cannot update device tensors (see ../shared/docs/gorgonia-device-residency.md). The
// optimisers here implement gorgonia.Solver without that: a weight on the host is updated
// with a plain loop (kernels.AdamUpdate, kernels.SGDUpdate), a weight in GPU memory (package
// device, build tag gomoecuda) with one CUDA kernel that reads the gradient and the moments
// and writes the weight, all in GPU memory. Both round every operation the same way, so a CPU
// and a GPU run of the same step give the same bits for the same gradients.
//
// A step with Step needs no BindDualValues: gradients are read from the gradient nodes.
//
//	grads, _ := G.Grad(cost, params...)
//	vm := G.NewTapeMachine(g, G.WithEngine(eng)) // or no engine on the CPU
//	opt := train.NewAdam(1e-3)
//	for step := 0; step < n; step++ {
//		// refresh the inputs (eng.Upload into the bound device tensors)
//		if err := train.Step(vm, opt, params, eng); err != nil { ... }
//	}
package train
