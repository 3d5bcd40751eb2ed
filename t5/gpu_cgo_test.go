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

// TestBenchStepTrainsWithDropout: the bench's step runs dropout when the
// model has any, as a trial's does (sweep bench t5 --dropout): on a GPU
// each dropout's output is one more activation.
func TestBenchStepTrainsWithDropout(t *testing.T) {
	be := emulatedGPU(t)
	peak := func(p float64) float64 {
		m, err := NewBenchModel("t5-tiny")
		if err != nil {
			t.Fatal(err)
		}
		m.Config.DropoutRate = p
		train := m.Params.EnableGrad(func(string) bool { return true })
		r, err := BenchTrainStep(be, m, &Hooks{}, train, "t5-tiny", 2, 8, 2, 1)
		if err != nil {
			t.Fatal(err)
		}
		return r.ActivationPeakMB
	}
	if without, with := peak(0), peak(0.1); with <= without {
		t.Errorf("activation peak %v MB with dropout 0.1, %v MB without: the step ran no dropout", with, without)
	}
}
