package moe

import (
	"fmt"
	"math/rand"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// BenchmarkLayerForwardBackward times one training step's forward and backward pass of the
// layer (tape machine, float32), after one untimed step, and reports tokens per second.
func BenchmarkLayerForwardBackward(b *testing.B) {
	shapes := []struct {
		name string
		T    int
		cfg  Config
	}{
		{"T1024_H128_F256_E8_K2_swiglu", 1024, Config{Hidden: 128, FFN: 256, Experts: 8, TopK: 2, AuxLossCoeff: 1e-2, ZLossCoeff: 1e-3}},
		{"T1024_H128_F256_E8_K2_swiglu_cap1.25", 1024, Config{Hidden: 128, FFN: 256, Experts: 8, TopK: 2, AuxLossCoeff: 1e-2, CapacityFactor: 1.25}},
		{"T512_H256_F128_E32_K4_sigmoid_groups_shared", 512, Config{Hidden: 256, FFN: 128, Experts: 32, TopK: 4, Score: Sigmoid, Groups: 4, GroupsKept: 2, ExpertBias: true, SharedFFN: 128, SeqAuxLossCoeff: 1e-4, SeqLen: 128}},
	}
	for _, s := range shapes {
		b.Run(s.name, func(b *testing.B) {
			g := G.NewGraph()
			l, err := New(g, "moe", s.cfg)
			if err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewSource(1))
			v := make([]float32, s.T*s.cfg.Hidden)
			for i := range v {
				v[i] = float32(rng.NormFloat64())
			}
			x := G.NewMatrix(g, tensor.Float32, G.WithShape(s.T, s.cfg.Hidden), G.WithName("x"),
				G.WithValue(tensor.New(tensor.WithShape(s.T, s.cfg.Hidden), tensor.WithBacking(v))))
			out, err := l.Forward(x)
			if err != nil {
				b.Fatal(err)
			}
			cost := G.Must(G.Mean(G.Must(G.Square(out.Y))))
			if out.Loss != nil {
				cost = G.Must(G.Add(cost, out.Loss))
			}
			if _, err := G.Grad(cost, append(G.Nodes{x}, l.Learnables()...)...); err != nil {
				b.Fatal(err)
			}
			m := G.NewTapeMachine(g)
			defer m.Close()
			// One untimed step first: the machine's first run allocates every value, as
			// bench/torch_layer_bench.py's --warmup steps leave torch's allocations out of its
			// timings (with -benchtime 20x that first step was one of the 20 that the mean took).
			if err := m.RunAll(); err != nil {
				b.Fatal(err)
			}
			m.Reset()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := m.RunAll(); err != nil {
					b.Fatal(err)
				}
				m.Reset()
			}
			b.ReportMetric(float64(s.T)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		})
	}
	_ = fmt.Sprint
}
