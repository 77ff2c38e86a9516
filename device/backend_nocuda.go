//go:build !gomoecuda

package device

import "gorgonia.org/tensor"

// engineBackend is the backend of an Engine that holds t: none without the gomoecuda build.
func engineBackend(tensor.Tensor) Backend { return nil }
