//go:build !cgo || !linux

package nn

import "errors"

// OpenGPU fails: the CUDA backend loads the driver with dlopen, which
// needs cgo on Linux.
func OpenGPU(CUDAOptions) (GPU, error) {
	return nil, errors.New("this binary was built without cgo (or not for Linux); the CUDA backend needs both")
}
