package kernels

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// readRecord parses gomoe.fatbin.sha256 (lines "key value").
func readRecord(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("gomoe.fatbin.sha256")
	if err != nil {
		t.Fatalf("the fatbin's hash record is missing (run kernels/build_fatbin.sh): %v", err)
	}
	rec := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if ok {
			rec[k] = strings.TrimSpace(v)
		}
	}
	return rec
}

// The source groups of the CUDA artifacts (build_fatbin.sh): each .cu and .cuh file belongs to
// one, except gdc.cuh, which both include.
var (
	mainSources = []string{"activation.cuh", "balance_loss.cuh", "bias.cuh", "binary.cuh", "blockcopy.cuh", "cast.cuh",
		"cross_entropy.cuh", "embedding.cuh", "gather_topk.cuh", "gdc.cuh", "gomoe.cu", "gomoe.cuh", "grad_norm.cuh", "optimizer.cuh", "permute.cuh",
		"permute_probs.cuh", "plan.cuh", "relu.cuh", "rmsnorm.cuh", "router.cuh", "rowop.cuh", "scale_rows.cuh", "split_bf16.cuh", "topk.cuh", "unpermute.cuh",
		"z_loss.cuh"}
	gmmSources = []string{"gdc.cuh", "gmm.cu", "gmm_simt.cu", "gmm_simt.cuh", "gmm_simt_host.cu", "gmm_sm90.cu", "gmm_sm90.cuh", "gmm_sm90_host.cu", "syncprobe.cuh"}
)

// hashSources hashes files as build_fatbin.sh does: in byte order of their names, each name, a
// newline and its bytes.
func hashSources(t *testing.T, files []string) string {
	t.Helper()
	names := append([]string(nil), files...)
	sort.Strings(names)
	h := sha256.New()
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		h.Write([]byte(n + "\n"))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestFatbinMatchesSources fails when a .cu or .cuh file changed after the CUDA artifacts were
// built: the hash of each source group, computed as build_fatbin.sh does, must equal the
// recorded one, and each committed artifact (the fatbins and the host library) must be the one
// that was built.
func TestFatbinMatchesSources(t *testing.T) {
	rec := readRecord(t)
	known := map[string]bool{}
	for _, n := range append(append([]string(nil), mainSources...), gmmSources...) {
		known[n] = true
	}
	for _, pat := range []string{"*.cu", "*.cuh"} {
		m, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range m {
			if !known[n] {
				t.Errorf("%s is in no source group: add it to build_fatbin.sh and this test", n)
			}
		}
	}
	for _, g := range []struct {
		key   string
		files []string
	}{{"sources", mainSources}, {"gmm-sources", gmmSources}} {
		if got := hashSources(t, g.files); got != rec[g.key] {
			t.Errorf("CUDA sources %v hash to %s, but the artifacts were built from %s: rebuild them with kernels/build_fatbin.sh on a machine with nvcc and CUTLASS", g.files, got, rec[g.key])
		}
	}
	// The cu13 fatbin is built by another nvcc (build_fatbin.sh cu13), so it has its own record
	// of the sources it was built from.
	if got := hashSources(t, gmmSources); got != rec["cu13-gmm-sources"] {
		t.Errorf("gomoe_sm90_cu13.fatbin was built from grouped-matmul sources hashing to %s, they hash to %s now: rebuild it with NVCC13=... kernels/build_fatbin.sh cu13", rec["cu13-gmm-sources"], got)
	}
	if !strings.HasPrefix(rec["cu13-nvcc"], "13.") {
		t.Errorf("the record says nvcc %q built gomoe_sm90_cu13.fatbin, want 13.x", rec["cu13-nvcc"])
	}
	for _, a := range []struct{ key, file string }{
		{"fatbin", "gomoe.fatbin"},
		{"gmmfatbin", "gomoe_gmm.fatbin"},
		{"sm90fatbin", "gomoe_sm90.fatbin"},
		{"sm90fatbin13", "gomoe_sm90_cu13.fatbin"},
		{"simtfatbin", "gomoe_simt.fatbin"},
		{"host", "gmm_host_linux_amd64.a"},
	} {
		bin, err := os.ReadFile(a.file)
		if err != nil {
			t.Fatalf("%s is missing: %v", a.file, err)
		}
		sum := sha256.Sum256(bin)
		if got := hex.EncodeToString(sum[:]); got != rec[a.key] {
			t.Errorf("%s hash %s, but the record says %s", a.file, got, rec[a.key])
		}
	}
	if rec["cutlass"] != "4.7.0" {
		t.Errorf("the record says CUTLASS %q built the sm_90a kernels, want 4.7.0", rec["cutlass"])
	}
}
