//go:build cgo && linux

package baselines

import (
	"math/rand/v2"
	"testing"

	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/nn/cudatest"
	"github.com/readsweep/readsweep/t5"
)

// TestLoRAActivationsOnEmulatedGPU: a LoRA step on a GPU holds no more
// activation memory than a full fine-tuning step, but for its rank-r
// products A·x. The base product, B·(A·x) and its scaled copy, which no
// backward reads, go back to the device once their sum is made; they once
// stayed to the end of the step, three times each target's output.
func TestLoRAActivationsOnEmulatedGPU(t *testing.T) {
	lib := cudatest.Emulator(t)
	t.Setenv(cudatest.MaxBlockEnv, "4")
	be, err := nn.OpenGPU(nn.CUDAOptions{Driver: lib, BLAS: []string{lib}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })

	const B, S, T, rank = 4, 32, 4, 8
	rng := rand.New(rand.NewPCG(5, 5))
	bt := t5.Batch{B: B, S: S, T: T, Input: make([]int32, B*S), Labels: make([]int32, B*T)}
	for i := range bt.Input {
		bt.Input[i] = int32(2 + rng.IntN(500))
	}
	for i := range bt.Labels {
		bt.Labels[i] = int32(2 + rng.IntN(500))
	}
	peak := func(method string, arch map[string]any) int64 {
		m, err := t5.NewBenchModel("t5-tiny")
		if err != nil {
			t.Fatal(err)
		}
		meth, err := registry().New(method, m, arch, 1)
		if err != nil {
			t.Fatal(err)
		}
		nn.ToDevice(be, m.Params.Tensors...)
		nn.ToDevice(be, meth.Trainable()...)
		g := nn.NewGraph(be)
		defer g.Release()
		g.FreeSaved = true
		out, err := m.Forward(g, bt, meth.Hooks())
		if err != nil {
			t.Fatal(err)
		}
		g.Drop(out.Logits)
		g.Backward(out.Loss)
		return g.PeakBytes()
	}
	full := peak("full", nil)
	lora := peak("lora", map[string]any{"rank": rank, "targets": "all_qv"})
	c := t5.Sizes["t5-tiny"]
	// A·x for q and v of every attention: encoder self-attention reads the
	// source, decoder self-attention the target, cross-attention's q the
	// target and its v the encoder's output.
	ax := 4 * rank * (c.NumLayers*2*B*S + c.NumDecoderLayers*(3*B*T+B*S))
	if lora > full+int64(ax) {
		t.Errorf("LoRA's step held %d bytes of activations at most, full fine-tuning's %d: want at most %d more (its A·x)", lora, full, ax)
	}
}
