//go:build cgo && linux

package t5

import (
	"testing"

	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/nn/cudatest"
)

// emulatedGPU opens the GPU backend on the CPU emulator of CUDA: the same
// staging, row-major translation and cuBLAS calls as on a GPU.
func emulatedGPU(t *testing.T) nn.Backend {
	lib := cudatest.Emulator(t)
	t.Setenv(cudatest.MaxBlockEnv, "4")
	g, err := nn.OpenGPU(nn.CUDAOptions{Driver: lib, BLAS: []string{lib}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}
