package kernels

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestArtifactsRunOnCUDA12 holds the committed CUDA artifacts to what the README promises a
// gomoecuda build needs: an NVIDIA driver for CUDA 12.0 or later, and the toolchain of a common
// Linux (no nvcc). Device code built by a CUDA 13 toolkit (cubins of ELF ABI version 8, PTX ISA
// 9.x) loads only with an R580 or later driver, and NewCUDA loads gomoe_gmm.fatbin always; host
// objects compiled by GCC 13 or later call libstdc++ functions that GCC 12's libstdc++ (Debian
// 12, Ubuntu 22.04) lacks, so the link of every gomoecuda program fails there.
// gomoe_sm90_cu13.fatbin is the exception, built by nvcc 13 on purpose: it is loaded only under
// a CUDA 13 driver (gmm90CU13, tested by TestCUDAGMM90PairByDriver), where gomoe_sm90.fatbin
// serves older ones.
func TestArtifactsRunOnCUDA12(t *testing.T) {
	for _, name := range []string{"gomoe.fatbin", "gomoe_gmm.fatbin", "gomoe_sm90.fatbin", "gomoe_simt.fatbin"} {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for off := 0; off+16 <= len(b); {
			if binary.LittleEndian.Uint32(b[off:]) != 0xBA55ED50 {
				break
			}
			hs := int(binary.LittleEndian.Uint16(b[off+6:]))
			end := off + hs + int(binary.LittleEndian.Uint64(b[off+8:]))
			for p := off + hs; p+64 <= end; {
				kind := binary.LittleEndian.Uint16(b[p:])
				ehs := int(binary.LittleEndian.Uint32(b[p+4:]))
				size := int(binary.LittleEndian.Uint64(b[p+8:]))
				minor, major := binary.LittleEndian.Uint16(b[p+24:]), binary.LittleEndian.Uint16(b[p+26:])
				arch := binary.LittleEndian.Uint32(b[p+28:])
				payload := b[p+ehs : p+ehs+size]
				switch kind {
				case 1: // PTX: the entry's version is the PTX ISA's
					if major >= 9 {
						t.Errorf("%s: sm_%d PTX of ISA %d.%d (CUDA 13 or later): needs an R580 driver", name, arch, major, minor)
					}
				case 2: // cubin
					if len(payload) > 8 && bytes.HasPrefix(payload, []byte("\x7fELF")) && payload[8] >= 8 {
						t.Errorf("%s: sm_%d cubin of ELF ABI version %d (ptxas 13 or later): needs an R580 driver", name, arch, payload[8])
					}
				}
				n++
				p += ehs + size
			}
			off = end
		}
		if n == 0 {
			t.Errorf("%s: no fatbin entries found", name)
		}
	}

	// libstdc++ symbols that GCC 13 added (GLIBCXX_3.4.31, 3.4.32) and GCC 13 emits calls to.
	newer := map[string]string{
		"_ZSt21ios_base_library_initv": "GLIBCXX_3.4.32, from <iostream> with GCC 13 or later",
	}
	b, err := os.ReadFile("gmm_host_linux_amd64.a")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte("!<arch>\n")) {
		t.Fatal("gmm_host_linux_amd64.a is not an ar archive")
	}
	objs := 0
	for off := 8; off+60 <= len(b); {
		hdr := b[off : off+60]
		size, err := strconv.Atoi(strings.TrimSpace(string(hdr[48:58])))
		if err != nil {
			t.Fatalf("gmm_host_linux_amd64.a: member header at %d: %v", off, err)
		}
		member := strings.TrimSpace(string(hdr[:16]))
		data := b[off+60 : off+60+size]
		off += 60 + size + size%2
		if !bytes.HasPrefix(data, []byte("\x7fELF")) {
			continue // the symbol table, long names
		}
		objs++
		f, err := elf.NewFile(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("gmm_host_linux_amd64.a(%s): %v", member, err)
		}
		syms, err := f.Symbols()
		if err != nil {
			t.Fatalf("gmm_host_linux_amd64.a(%s): %v", member, err)
		}
		for _, s := range syms {
			if why, ok := newer[s.Name]; ok && s.Section == elf.SHN_UNDEF {
				t.Errorf("gmm_host_linux_amd64.a(%s) needs %s (%s): the link fails with GCC 12's libstdc++", member, s.Name, why)
			}
		}
	}
	if objs == 0 {
		t.Error("gmm_host_linux_amd64.a: no object files found")
	}
}
