//go:build gomoecuda

package op_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/op"
)

// mlp is logits = BiasAdd(RMSNorm(ReLU(BiasAdd(Embedding(table, ids)·W1, b1)), gain)·W2, b2) and the mean
// cross-entropy against one-hot targets, with the gradients of every weight.
type mlp struct {
	g                     *G.ExprGraph
	x, t                  *G.Node
	params                G.Nodes
	loss                  *G.Node
	grads                 G.Nodes
	lossV                 G.Value
	gradV                 []G.Value
	hidden, relu, normed  *G.Node
	hiddenV, reluV, normV G.Value
}

func buildMLP(t *testing.T, dt tensor.Dtype, N, In, H, C int, seed uint64) *mlp {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	m := &mlp{g: G.NewGraph()}
	mk := func(name string, scale float64, s ...int) *G.Node {
		n := 1
		for _, d := range s {
			n *= d
		}
		v := make([]float64, n)
		for i := range v {
			v[i] = rng.NormFloat64() * scale
		}
		return G.NewTensor(m.g, dt, len(s), G.WithShape(s...), G.WithName(name), G.WithValue(asTensor(v, dt, s...)))
	}
	// x = Embedding(table, ids): 11 table rows.
	table := mk("table", 1, 11, In)
	idv := make([]float64, N)
	for i := range idv {
		idv[i] = float64(rng.IntN(11))
	}
	m.x = G.NewVector(m.g, tensor.Int32, G.WithShape(N), G.WithName("ids"), G.WithValue(asTensor(idv, tensor.Int32, N)))
	oh := make([]float64, N*C)
	for r := 0; r < N; r++ {
		oh[r*C+rng.IntN(C)] = 1
	}
	m.t = G.NewMatrix(m.g, dt, G.WithShape(N, C), G.WithName("t"), G.WithValue(asTensor(oh, dt, N, C)))
	w1, b1, gain := mk("w1", 0.3, In, H), mk("b1", 0.1, H), mk("gain", 1, H)
	w2, b2 := mk("w2", 0.3, H, C), mk("b2", 0.1, C)
	m.params = G.Nodes{table, w1, b1, gain, w2, b2}
	must := mustOf(t)
	m.hidden = must(op.BiasAdd(must(G.Mul(must(op.Embedding(table, m.x)), w1)), b1))
	m.relu = must(op.ReLU(m.hidden))
	m.normed = must(op.RMSNorm(m.relu, gain, 1e-6))
	logits := must(op.BiasAdd(must(G.Mul(m.normed, w2)), b2))
	m.loss = must(op.CrossEntropy(logits, m.t))
	var err error
	if m.grads, err = G.Grad(m.loss, m.params...); err != nil {
		t.Fatal(err)
	}
	G.Read(m.loss, &m.lossV)
	G.Read(m.hidden, &m.hiddenV)
	G.Read(m.relu, &m.reluV)
	G.Read(m.normed, &m.normV)
	m.gradV = make([]G.Value, len(m.grads))
	for i, n := range m.grads {
		G.Read(n, &m.gradV[i])
	}
	return m
}

// TestNNOpsOnGPU: the MLP's forward values, loss and weight gradients on the GPU (device
// engine, cuBLAS matmuls, the nn kernels) against the CPU, float32 and float64.
func TestNNOpsOnGPU(t *testing.T) {
	e, err := device.New(0)
	if err != nil {
		t.Skipf("no GPU: %v", err)
	}
	defer e.Close()
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		for _, s := range [][4]int{{64, 20, 32, 10}, {37, 9, 70, 3}} {
			t.Run(fmt.Sprintf("%v/%v", dt, s), func(t *testing.T) {
				tol := 2e-5
				if dt == tensor.Float64 {
					tol = 1e-12
				}
				cpu := buildMLP(t, dt, s[0], s[1], s[2], s[3], 3)
				gpu := buildMLP(t, dt, s[0], s[1], s[2], s[3], 3)
				if err := e.Bind(append(G.Nodes{gpu.x, gpu.t}, gpu.params...)...); err != nil {
					t.Fatal(err)
				}
				runCPUAndGPU(t, e, cpu.g, gpu.g)
				if d, ok := gpu.loss.Value().(*tensor.Dense); !ok || !e.Owns(d) || !d.Shape().IsScalar() {
					t.Fatalf("loss value is a %T, want a 0-d device tensor", gpu.loss.Value())
				}
				check := func(what string, a, b G.Value) {
					t.Helper()
					hg, hc := hostFloats(t, e, a), hostFloats(t, nil, b)
					if len(hg) != len(hc) {
						t.Fatalf("%s: %d values on the GPU, %d on the CPU", what, len(hg), len(hc))
					}
					var dmax, m float64
					for i := range hc {
						dmax = max(dmax, abs(hg[i]-hc[i]))
						m = max(m, abs(hc[i]))
					}
					if dmax > tol*max(m, 1) {
						t.Errorf("%s: max diff %g (max |cpu| %g)", what, dmax, m)
					}
				}
				check("loss", gpu.lossV, cpu.lossV)
				check("hidden", gpu.hiddenV, cpu.hiddenV)
				check("relu", gpu.reluV, cpu.reluV)
				check("rmsnorm", gpu.normV, cpu.normV)
				for i, p := range cpu.params {
					check("d/d"+p.Name(), gpu.gradV[i], cpu.gradV[i])
				}
				e.EndStep()
			})
		}
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
