package moe

import (
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/ep"
)

// TestNewExpertParallelNameCollision: NewExpertParallel checked only "name.router" in g, so a
// user's node "m.w2" of the rank's shape [E/N,F,H] was silently taken as the layer's W2.
func TestNewExpertParallelNameCollision(t *testing.T) {
	grp, err := ep.NewGroup(2)
	if err != nil {
		t.Fatal(err)
	}
	c, err := grp.Comm(0)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Hidden: 4, FFN: 4, Experts: 4, TopK: 2, PreSoftmax: true, Score: Softmax, ExpertBias: false}
	for _, n := range []struct {
		name  string
		shape []int
	}{{"m.w2", []int{2, 4, 4}}, {"m.w1", []int{2, 4, 8}}} {
		g := G.NewGraph()
		user := G.NewTensor(g, tensor.Float32, len(n.shape), G.WithShape(n.shape...), G.WithName(n.name),
			G.WithValue(tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(n.shape...))))
		l, err := NewExpertParallel(g, "m", cfg, c)
		if err == nil {
			if l.W1 == user || l.W2 == user {
				t.Errorf("%s: NewExpertParallel took the user's node as its own weight", n.name)
			} else {
				t.Errorf("%s: no error for a node of the layer's weight name", n.name)
			}
			continue
		}
		if !strings.HasPrefix(err.Error(), "gomoe: ") || !strings.Contains(err.Error(), n.name) {
			t.Errorf("%s: error %q", n.name, err)
		}
	}
}
