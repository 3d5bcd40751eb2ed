//go:build cgo && linux

package trial

import (
	"bytes"
	"context"
	"math"
	"strings"
	"testing"

	"github.com/readsweep/readsweep/baselines"
	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/nn/cudatest"
	"github.com/readsweep/readsweep/read"
)

// TestTrialOnEmulatedGPU runs whole trials with device: cuda on the CPU
// emulator of CUDA (parameters mirrored on the device, every op a device
// kernel, AdamW there, decoding there) and holds them to the same trials
// on the CPU: without dropout the two are the same computation, so the
// epoch losses and the scores must agree.
func TestTrialOnEmulatedGPU(t *testing.T) {
	model, reg := onEmulatedGPU(t)
	run := func(t *testing.T, method string, arch map[string]any, precision, device string) ([]float64, Message, string) {
		spec := Spec{Version: Version, Study: method + "/x/sst2", Method: method, Arch: arch, Dataset: "sst2",
			Params: map[string]any{"lr": 1e-2}, Seed: 1, Model: model, DataDir: "../glue/testdata/fixture", Device: device,
			Training: map[string]any{"max_epochs": 2, "batch_size": 16, "max_train_examples": 32, "max_eval_examples": 8,
				"latency_examples": 1, "state_cache": "off", "init_examples": 4, "precision": precision, "dropout": 0}}
		var out, logs bytes.Buffer
		if err := Run(context.Background(), spec, reg, nil, &out, &logs); err != nil {
			t.Fatalf("%v\n%s", err, logs.String())
		}
		losses, final := trialOutput(t, out.String())
		if final == nil {
			t.Fatalf("no final line:\n%s", out.String())
		}
		return losses, *final, logs.String()
	}
	// The products at bf16 and tf32 too: the GPU's (converted operands and
	// cublasGemmEx; cuBLAS's TF32 mode) and the CPU's (rounded operands)
	// are the same arithmetic.
	for _, tc := range []struct {
		method, precision string
		arch              map[string]any
	}{
		{"lora", "fp32", map[string]any{"rank": 4, "targets": "all_qv"}},
		{"read", "fp32", map[string]any{"hidden": 16}},
		{"lst", "fp32", map[string]any{"sidenet_dim": 16}},
		{"prompt", "fp32", map[string]any{"prompts": 4}},
		{"ia3", "fp32", nil},
		{"lora", "bf16", map[string]any{"rank": 4, "targets": "all_qv"}},
		{"full", "tf32", nil},
	} {
		t.Run(tc.method+"/"+tc.precision, func(t *testing.T) {
			cpuLoss, cpuFinal, _ := run(t, tc.method, tc.arch, tc.precision, "cpu")
			gpuLoss, gpuFinal, logs := run(t, tc.method, tc.arch, tc.precision, "cuda")
			if gpuFinal.Attrs["backend"] != "cuda" || !strings.Contains(logs, "device: cuda: CPU emulator") {
				t.Fatalf("did not run on the (emulated) GPU: backend %v\n%s", gpuFinal.Attrs["backend"], logs)
			}
			if gpuFinal.Attrs["precision"] != tc.precision || cpuFinal.Attrs["precision"] != tc.precision {
				t.Errorf("precision attributes: GPU %v, CPU %v, want %s", gpuFinal.Attrs["precision"], cpuFinal.Attrs["precision"], tc.precision)
			}
			if _, ok := gpuFinal.Attrs["gpu_peak_bytes"]; !ok {
				t.Error("no gpu_peak_bytes")
			}
			if len(gpuLoss) != len(cpuLoss) {
				t.Fatalf("%d GPU epochs, %d CPU", len(gpuLoss), len(cpuLoss))
			}
			// At reduced precision an operand that the two sums leave a
			// float32 ulp apart can round to neighbouring tf32 or bf16
			// values, a step of 5e-4 (tf32) relative, which training
			// carries on: the tolerance grows with it.
			tol := 1e-4
			if tc.precision != "fp32" {
				tol = 1e-3
			}
			for i := range cpuLoss {
				if math.Abs(gpuLoss[i]-cpuLoss[i]) > tol*math.Abs(cpuLoss[i]) {
					t.Errorf("epoch %d loss: GPU %.6f, CPU %.6f", i, gpuLoss[i], cpuLoss[i])
				}
			}
			for _, key := range []string{"validation", "test"} {
				if gpuFinal.Attrs[key] != cpuFinal.Attrs[key] {
					t.Errorf("%s: GPU %v, CPU %v", key, gpuFinal.Attrs[key], cpuFinal.Attrs[key])
				}
			}
		})
	}
}

// TestResumeOnEmulatedGPU: a trial stopped and resumed on the GPU (the
// CPU emulator of CUDA) trains as one never stopped, bit for bit: the
// trainable tensors and AdamW's moments go from the device into the
// checkpoint and back onto the device.
func TestResumeOnEmulatedGPU(t *testing.T) {
	model, reg := onEmulatedGPU(t)
	testResume(t, reg, model, "lora", map[string]any{"rank": 4, "targets": "all_qv"}, false,
		map[string]any{"max_train_examples": 64, "max_eval_examples": 4, "state_cache": "off"}, "cuda")
}

// onEmulatedGPU points the CUDA backend at the CPU emulator for the test
// (device: cuda opens it), and returns the tiny model and the methods.
func onEmulatedGPU(t *testing.T) (string, methods.Registry) {
	lib := cudatest.Emulator(t)
	t.Setenv(nn.EnvLibCUDA, lib)
	t.Setenv(nn.EnvLibCUBLAS, lib)
	t.Setenv(cudatest.MaxBlockEnv, "4")
	reg := methods.Registry{}
	baselines.Register(reg)
	read.Register(reg)
	return tinyModel(t), reg
}

// TestSavedModelOnEmulatedGPU: a model trained and saved on the (emulated)
// GPU holds the trained weights (their digest is the trial's) and
// predicts there its trial's validation score.
func TestSavedModelOnEmulatedGPU(t *testing.T) {
	model, reg := onEmulatedGPU(t)
	spec := Spec{Version: Version, Study: "lora/x/sst2", Method: "lora", Arch: map[string]any{"rank": 4}, Dataset: "sst2",
		Params: map[string]any{"lr": 3e-2}, Seed: 1, Model: model, DataDir: "../glue/testdata/fixture", Device: "cuda", OutputDir: t.TempDir(),
		Training: map[string]any{"max_epochs": 2, "batch_size": 16, "max_train_examples": 32, "max_eval_examples": 8,
			"latency_examples": 0, "state_cache": "off", "save_model": "best"}}
	var out, logs bytes.Buffer
	if err := Run(context.Background(), spec, reg, nil, &out, &logs); err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	_, final := trialOutput(t, out.String())
	lm, err := LoadModel(final.Attrs["model_dir"].(string), reg)
	if err != nil {
		t.Fatal(err)
	}
	if got := trainableDigest(lm.Method.Trainable()); got != final.Attrs["trainable_sha256"] {
		t.Errorf("the saved weights' digest %s, the trial's %v", got, final.Attrs["trainable_sha256"])
	}
	val, err := lm.Info.PaperSplit("", "validation")
	if err != nil {
		t.Fatal(err)
	}
	p, err := lm.Predict(context.Background(), mustLookup(t, "sst2"), val, true, PredictOptions{Device: "cuda"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(p.Device, "cuda") || p.Scores["score"] != final.Attrs["validation"] {
		t.Errorf("on %s: validation %v, the trial's %v", p.Device, p.Scores["score"], final.Attrs["validation"])
	}
}
