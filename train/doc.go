// Package train holds what a training loop around a Gorgonia graph needs beyond the graph:
//
//   - optimisers that update weights in place on the CPU and on the GPU (Adam, SGD), with
//     global gradient-norm clipping (MaxGradNorm, ClipGradNorm);
//   - Step, which runs one step of a tape machine: forward, backward, read, update;
//     GraphStep, which captures a step on the GPU once as a CUDA graph and replays it;
//   - learning-rate schedules (Cosine and Linear, with warmup);
//   - seeded weight initialisers (Init), so that a whole program is reproducible;
//   - checkpoints (SaveCheckpoint, LoadCheckpoint): named weights and the optimiser's state
//     as safetensors, float32, float64 or bfloat16, from host or device values, from which a
//     run resumes bit for bit;
//   - an expert-load tracker (LoadTracker, with the max/mean imbalance) and a progress
//     report (Progress) that draws a bar on a terminal and prints plain lines elsewhere.
//
// Gorgonia's own solvers zero gradients and make dual values through raw host memory, so they
// cannot update device tensors. The
// optimisers here implement gorgonia.Solver without that: a weight on the host is updated
// with a plain loop (kernels.AdamUpdate, kernels.SGDUpdate), a weight in GPU memory (package
// device, build tag gomoecuda) with one CUDA kernel that reads the gradient and the moments
// and writes the weight, all in GPU memory. Both round every operation the same way, so a CPU
// and a GPU run of the same step give the same bits for the same gradients.
//
// A step with Step needs no BindDualValues: gradients are read from the gradient nodes.
//
//	if _, err := G.Grad(cost, params...); err != nil { ... }
//	vm := G.NewTapeMachine(g) // G.WithEngine(eng) on the GPU
//	opt := train.NewAdam(1e-3)
//	sched := train.Cosine{Peak: 1e-3, Floor: 0.1, Warmup: 100, Total: n}
//	for step := 0; step < n; step++ {
//		// refresh the inputs (G.Let, or eng.Upload into the bound device tensors)
//		opt.LR = sched.LR(step)
//		err := train.Step(vm, opt, params, func() error {
//			loss, err := train.Scalar(cost.Value()) // read outputs here, before the update
//			...
//			return err
//		})
//		if err != nil { ... }
//	}
//
// Example_trainAModel adds evaluation, saving and resuming.
package train
