package t5

import (
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/readsweep/readsweep/nn"
)

// Sizes are the shapes of the public checkpoints (random weights here).
var Sizes = map[string]Config{
	"t5-tiny":  sized(128, 32, 512, 4, 4),
	"t5-small": sized(512, 64, 2048, 6, 8),
	"t5-base":  sized(768, 64, 3072, 12, 12),
	"t5-large": sized(1024, 64, 4096, 24, 16),
}

func sized(d, k, f, layers, heads int) Config {
	c := DefaultConfig()
	c.DModel, c.DKV, c.DFF, c.NumLayers, c.NumDecoderLayers, c.NumHeads = d, k, f, layers, layers, heads
	return c
}

// countingBackend counts the floating-point operations and time of the
// matrix products it forwards.
type countingBackend struct {
	nn.Backend
	flops, nanos atomic.Int64
}

// ProductPrecision passes on the counted backend's (nn.ProductPrecision),
// so that attention's small products round their operands too.
func (c *countingBackend) ProductPrecision() nn.Precision { return nn.ProductPrecision(c.Backend) }

func (c *countingBackend) Sgemm(ta, tb bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, cc []float32, ldc int) {
	t0 := time.Now()
	c.Backend.Sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, cc, ldc)
	c.nanos.Add(int64(time.Since(t0)))
	c.flops.Add(2 * int64(m) * int64(n) * int64(k))
}

// StepBench is the result of BenchTrainStep.
type StepBench struct {
	Size             string
	Backend          string
	Batch, Src, Tgt  int
	Steps            int
	SecondsPerStep   float64
	GemmGFLOPS       float64 // matrix work per second of matrix time
	GemmShare        float64 // fraction of the step spent in matrix products
	PeakRSSMB        float64
	Trainable        int
	ActivationPeakMB float64
	DevicePeakMB     float64 // GPU memory the backend held at most (0 on the CPU)
	// KernelsPerStep and BLASPerStep count the device calls of one step on
	// a GPU: what its host overhead scales with (0 on the CPU).
	KernelsPerStep, BLASPerStep float64
	// SyncsPerStep counts the step's waits for the GPU (copies back, a
	// full staging buffer): each stops the host from queueing work ahead.
	SyncsPerStep float64
	// MemsetsPerStep counts the fills that zero new gradients and outputs,
	// CopiesPerStep the device-to-device copies: driver calls that queue
	// work as a kernel launch does.
	MemsetsPerStep, CopiesPerStep float64
	// LatencyMS is greedy decoding of one example (batch 1, Src tokens, Tgt
	// new tokens), when the caller measured it.
	LatencyMS float64
}

// NewBenchModel returns a model of a named size with weights drawn from
// N(0, 0.05²) and no dropout, as scripts/peers/torch_cpu_peer.py makes it.
func NewBenchModel(size string) (*Model, error) {
	c, ok := Sizes[size]
	if !ok {
		return nil, fmt.Errorf("t5: unknown size %q (want t5-tiny, t5-small, t5-base or t5-large)", size)
	}
	c.DropoutRate = 0
	m := New(c, 0)
	rng := rand.New(rand.NewPCG(0, 0))
	for _, t := range m.Params.Tensors {
		for i := range t.Data {
			t.Data[i] = float32(rng.NormFloat64() * 0.05)
		}
	}
	return m, nil
}

// BenchTrainStep times training steps as a trial takes them (forward,
// backward, clipping the gradient norm to 1, AdamW over trainable) of m with hooks on random ids without padding, after one
// warm-up step.
func BenchTrainStep(be nn.Backend, m *Model, hooks *Hooks, trainable []*nn.Tensor, size string, B, S, T, steps int) (StepBench, error) {
	rng := rand.New(rand.NewPCG(0, 1))
	opt := nn.NewAdamW(1e-4)
	bt := Batch{B: B, S: S, T: T, Input: make([]int32, B*S), Labels: make([]int32, B*T)}
	for i := range bt.Input {
		bt.Input[i] = int32(2 + rng.IntN(31998))
	}
	for i := range bt.Labels {
		bt.Labels[i] = int32(2 + rng.IntN(31998))
	}
	gpu, onGPU := be.(nn.GPU)
	cb := &countingBackend{Backend: be}
	var g *nn.Graph
	if onGPU {
		// The products run inside the device graph, so nothing counts them.
		nn.ToDevice(be, m.Params.Tensors...)
		nn.ToDevice(be, trainable...)
		g = nn.NewGraph(be)
		g.FreeSaved = true // as a trial's steps do
		defer g.Release()
	} else {
		g = nn.NewGraph(cb)
	}
	g.Train = true // dropout, where the model has any, as in a trial's steps
	step := func() error {
		g.Reset()
		out, err := m.Forward(g, bt, hooks)
		if err != nil {
			return err
		}
		g.Drop(out.Logits) // as a trial's step does
		g.Backward(out.Loss)
		nn.ClipGradNorm(trainable, 1)
		opt.Step(trainable)
		nn.ZeroGrad(trainable)
		return nil
	}
	if err := step(); err != nil {
		return StepBench{}, err
	}
	cb.flops.Store(0)
	cb.nanos.Store(0)
	var calls0 nn.GPUCalls
	if onGPU {
		// The warm-up's work may still be queued for the CUDA thread, which
		// counts a launch when it makes it: wait, or the timed steps would
		// count some of it (and their time start under it).
		if err := gpu.Sync(); err != nil {
			return StepBench{}, err
		}
		calls0 = gpu.Calls()
	}
	t0 := time.Now()
	for range steps {
		if err := step(); err != nil {
			return StepBench{}, err
		}
	}
	var devicePeak, kernels, blasCalls, syncs, memsets, copies float64
	if onGPU {
		if err := gpu.Sync(); err != nil {
			return StepBench{}, err
		}
		devicePeak = float64(gpu.PeakBytes()) / 1e6
		calls := gpu.Calls()
		kernels = float64(calls.Kernels-calls0.Kernels) / float64(steps)
		blasCalls = float64(calls.BLAS-calls0.BLAS) / float64(steps)
		syncs = float64(calls.Syncs-calls0.Syncs-1) / float64(steps) // less the Sync above
		memsets = float64(calls.Memsets-calls0.Memsets) / float64(steps)
		copies = float64(calls.Copies-calls0.Copies) / float64(steps)
	}
	elapsed := time.Since(t0).Seconds()
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	gemm := float64(cb.nanos.Load()) / 1e9
	gflops := 0.0 // not counted on a GPU, where the products run inside the device graph
	if gemm > 0 {
		gflops = float64(cb.flops.Load()) / gemm / 1e9
	}
	n := 0
	for _, t := range trainable {
		n += t.Len()
	}
	return StepBench{
		Size: size, Backend: be.Name(), Batch: B, Src: S, Tgt: T, Steps: steps,
		SecondsPerStep:   elapsed / float64(steps),
		GemmGFLOPS:       gflops,
		GemmShare:        gemm / elapsed,
		PeakRSSMB:        float64(ru.Maxrss) / 1024,
		Trainable:        n,
		ActivationPeakMB: float64(g.PeakBytes()) / 1e6,
		DevicePeakMB:     devicePeak,
		KernelsPerStep:   kernels,
		BLASPerStep:      blasCalls,
		SyncsPerStep:     syncs,
		MemsetsPerStep:   memsets,
		CopiesPerStep:    copies,
	}, nil
}
