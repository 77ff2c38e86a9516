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

// TestFatbinMatchesSources fails when a .cu or .cuh file changed after gomoe.fatbin was built:
// the hash of the sources, computed as build_fatbin.sh does, must equal the recorded one, and
// the committed fatbin must be the one that was built.
func TestFatbinMatchesSources(t *testing.T) {
	rec := readRecord(t)
	var names []string
	for _, pat := range []string{"*.cu", "*.cuh"} {
		m, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, m...)
	}
	if len(names) == 0 {
		t.Fatal("no CUDA sources found")
	}
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
	if got := hex.EncodeToString(h.Sum(nil)); got != rec["sources"] {
		t.Errorf("CUDA sources hash %s, but gomoe.fatbin was built from %s: rebuild it with kernels/build_fatbin.sh on a machine with nvcc", got, rec["sources"])
	}
	bin, err := os.ReadFile("gomoe.fatbin")
	if err != nil {
		t.Fatalf("gomoe.fatbin is missing: %v", err)
	}
	sum := sha256.Sum256(bin)
	if got := hex.EncodeToString(sum[:]); got != rec["fatbin"] {
		t.Errorf("gomoe.fatbin hash %s, but the record says %s", got, rec["fatbin"])
	}
}
