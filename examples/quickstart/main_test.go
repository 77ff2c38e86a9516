package main

// Example_main runs the tour. The expected lines were printed by the version of this program
// that trained with Gorgonia's own G.NewAdamSolver (BindDualValues, RunAll, solver.Step,
// Reset): train.Adam and train.Step give the same numbers, and the MoE fit ends far below the
// best single linear map.
func Example_main() {
	main()
	// Output:
	// MoE layer: T=256 tokens, H=8, E=4 experts, top-2, R=512 permuted rows
	// best single linear map (least squares): loss 0.58488
	// step   0  loss 1.13800  |dL/d router| 0.1305  tokens per expert [137 117 110 148]
	// step 100  loss 0.26141  |dL/d router| 0.0155  tokens per expert [145 118 116 133]
	// step 200  loss 0.03555  |dL/d router| 0.0073  tokens per expert [135 121 123 133]
	// step 300  loss 0.02267  |dL/d router| 0.0038  tokens per expert [133 124 123 132]
	// step 400  loss 0.01719  |dL/d router| 0.0027  tokens per expert [132 125 122 133]
}
