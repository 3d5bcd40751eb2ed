//go:build cgo && linux

package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/nn/cudatest"
	"github.com/readsweep/readsweep/sweep/storage"
)

// TestSweepOnEmulatedGPU runs a sweep file with device: cuda end to end:
// the orchestrator passes the device and a GPU slot to each trial, and
// the trials train on the GPU backend, here the CPU emulator of CUDA.
// Without a GPU the same file fails each trial, saying why.
func TestSweepOnEmulatedGPU(t *testing.T) {
	dir := t.TempDir()
	tinyModel(t, dir)
	config := func(db string) string {
		return `storage: sqlite:///` + db + `
model: tiny-t5
data_dir: ` + mustAbs(t, "../../glue/testdata/fixture") + `
datasets: [sst2]
methods:
  lora: [{rank: 4}]
search:
  lr: {low: 1.0e-3, high: 1.0e-2, log: true}
trials: 2
max_failures: 1
device: cuda
gpus: ["0"]
training: {max_epochs: 1, batch_size: 16, max_train_examples: 32, max_eval_examples: 8, latency_examples: 1}
`
	}

	// No GPU and no emulator: every trial fails, naming the device.
	t.Setenv(nn.EnvLibCUDA, "/nonexistent/libcuda.so.1")
	writeConfig(t, dir, config("none.db"))
	sweepCmd(t, dir, "run", "sweep.yaml")
	none := load(t, filepath.Join(dir, "none.db"))
	if len(none) != 1 {
		t.Fatalf("%d studies without a GPU, want 1", len(none))
	}
	for name, trials := range none {
		if len(trials) == 0 || trials[0].State != storage.Fail || !strings.Contains(trials[0].UserAttrs["stderr_tail"].(string), "device cuda: no GPU") {
			t.Errorf("%s without a GPU: %+v", name, trials)
		}
	}

	lib := cudatest.Emulator(t)
	t.Setenv(nn.EnvLibCUDA, lib)
	t.Setenv(nn.EnvLibCUBLAS, lib)
	t.Setenv(cudatest.MaxBlockEnv, "4")
	writeConfig(t, dir, config("gpu.db"))
	if _, errOut, code := sweepCmd(t, dir, "run", "sweep.yaml"); code != 0 {
		t.Fatalf("sweep run: exit %d\n%s", code, errOut)
	}
	studies := load(t, filepath.Join(dir, "gpu.db"))
	checkBudgets(t, studies, 1, 2)
	for name, trials := range studies {
		for _, tr := range trials {
			device, _ := tr.UserAttrs["device"].(string)
			if tr.UserAttrs["backend"] != "cuda" || !strings.HasPrefix(device, "cuda: CPU emulator") || tr.UserAttrs["gpu_peak_bytes"] == nil {
				t.Errorf("%s#%d did not train on the GPU backend: %v", name, tr.Number, tr.UserAttrs)
			}
		}
	}
}
