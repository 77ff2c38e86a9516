//go:build gomoecuda

package trainutil

import "github.com/gomoe/gomoe/device"

// The GPU build: -device cuda trains on gomoe's device engine.
func init() {
	openGPU = func(ordinal int) (gpuEngine, error) {
		e, err := device.New(ordinal)
		if err != nil {
			return nil, err
		}
		return e, nil
	}
}
