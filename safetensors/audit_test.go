package safetensors

import (
	"strings"
	"testing"
)

// TestParseTensorInfoExactKeys: a tensor's header entry is read as the format's reference
// reader (serde) reads it: the keys "dtype", "shape" and "data_offsets" exactly, each once,
// none missing or null. encoding/json matched "DTYPE" or "Dtype" to the dtype field (so a
// BF16 tensor read as F16: other values), kept the last of a repeated key, and read a missing
// or null shape as a scalar.
func TestParseTensorInfoExactKeys(t *testing.T) {
	one := le(uint16(0x3c00)) // F16 1, BF16 2⁻⁷
	for _, c := range []struct{ name, hdr, err string }{
		{"key in another case", `{"a":{"dtype":"BF16","shape":[1],"data_offsets":[0,2],"DTYPE":"F16"}}`, `"DTYPE"`},
		{"key in another case only", `{"a":{"Dtype":"F16","shape":[1],"data_offsets":[0,2]}}`, `"Dtype"`},
		{"key twice", `{"a":{"dtype":"BF16","shape":[1],"data_offsets":[0,2],"dtype":"F16"}}`, `"dtype" appears twice`},
		{"no shape", `{"a":{"dtype":"F16","data_offsets":[0,2]}}`, `no "shape"`},
		{"null shape", `{"a":{"dtype":"F16","shape":null,"data_offsets":[0,2]}}`, `"shape" is null`},
	} {
		ts, err := Parse(rawFile(c.hdr, one))
		if err == nil {
			dt, _ := ts.Dtype("a")
			v, _, _ := ts.Float64s("a")
			t.Errorf("%s: parsed as %s %v; want an error containing %q", c.name, dt, v, c.err)
		} else if !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), "gomoe: safetensors: not a safetensors file") {
			t.Errorf("%s: got %v; want an error containing %q", c.name, err, c.err)
		}
	}
}
