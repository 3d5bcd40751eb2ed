//go:build !cgo || !linux

package trial

import "errors"

func openNVML(string) (gpuSampler, error) {
	return nil, errors.New("NVML needs a cgo build on Linux")
}
