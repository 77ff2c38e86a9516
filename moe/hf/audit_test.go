package hf

import (
	"strings"
	"testing"
)

// TestMoEConfigNullHiddenAct: "hidden_act": null is transformers' None, on which its experts
// fail (ACT2FN[None]); it loaded as silu. A missing key stays the default silu.
func TestMoEConfigNullHiddenAct(t *testing.T) {
	base := `"model_type":"mixtral","hidden_size":8,"intermediate_size":16,"num_local_experts":4,"num_experts_per_tok":2`
	c, err := ParseConfig([]byte(`{` + base + `,"hidden_act":null}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.MoEConfig(); err == nil || !strings.Contains(err.Error(), "hidden_act is null") {
		t.Errorf("null hidden_act: got %v; want an error", err)
	}
	c, err = ParseConfig([]byte(`{` + base + `}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.MoEConfig(); err != nil {
		t.Errorf("no hidden_act: %v", err)
	}
}
