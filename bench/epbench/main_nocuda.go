//go:build !gomoecuda

// Command epbench measures the expert-parallel exchanges over NCCL; it needs the gomoecuda build
// tag and a GPU machine (see ep/README.md).
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "epbench: build with -tags gomoecuda on a GPU machine (see ep/README.md)")
	os.Exit(2)
}
