package nn

import (
	"fmt"
	"os"
	"strings"
	"sync"
)

// GPU is a Backend on an NVIDIA GPU, with what a trial reports about it.
type GPU interface {
	Backend
	Info() GPUInfo
	// PeakBytes is the most device memory in use at once (allocated, as
	// torch.cuda.max_memory_allocated counts; not the cache's reserve).
	PeakBytes() int64
	// Sync waits for queued work and returns the first error.
	Sync() error
	// Calls counts the work queued so far: kernel launches and cuBLAS
	// calls, what a training step's host overhead scales with.
	Calls() GPUCalls
	Close() error
}

// GPUCalls counts device work queued by a GPU backend.
type GPUCalls struct {
	Kernels int64 // kernel launches
	BLAS    int64 // cuBLAS calls (a strided-batched product is one)
	Syncs   int64 // waits for the stream: copies back, a full staging buffer, Sync
	Memsets int64 // fills (zeroing a new gradient or output), driver calls beside the kernels
	Copies  int64 // device-to-device copies (a new gradient set from another)
}

// GPUInfo describes an opened GPU.
type GPUInfo struct {
	Name        string
	Memory      int64 // bytes
	Capability  [2]int
	Driver      int    // CUDA driver API version, e.g. 13000
	BLAS        string // the cuBLAS library that opened
	BLASVersion int
	PCIBusID    string // how NVML finds the same device
}

func (i GPUInfo) String() string {
	return fmt.Sprintf("%s (compute %d.%d, %.1f GiB, driver %d, %s %d)", i.Name, i.Capability[0], i.Capability[1],
		float64(i.Memory)/(1<<30), i.Driver, i.BLAS, i.BLASVersion)
}

// CUDAOptions says which libraries OpenCUDA loads; the zero value loads
// the system's driver and the newest cuBLAS found on the loader's path
// (LD_LIBRARY_PATH included, where pip's nvidia-cublas wheels put it).
type CUDAOptions struct {
	Driver string   // default $READSWEEP_LIBCUDA, else "libcuda.so.1"
	BLAS   []string // tried in order; default $READSWEEP_LIBCUBLAS, else libcublas.so.13, .12, .11
	Device int      // ordinal among the visible devices
}

// The environment variables that name the libraries, for installations
// the loader's path does not reach (and for the tests' CPU emulator).
const (
	EnvLibCUDA   = "READSWEEP_LIBCUDA"
	EnvLibCUBLAS = "READSWEEP_LIBCUBLAS"
)

func (o CUDAOptions) withDefaults() CUDAOptions {
	if o.Driver == "" {
		o.Driver = "libcuda.so.1"
		if v := os.Getenv(EnvLibCUDA); v != "" {
			o.Driver = v
		}
	}
	if len(o.BLAS) == 0 {
		o.BLAS = []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so.11"}
		if v := os.Getenv(EnvLibCUBLAS); v != "" {
			o.BLAS = []string{v}
		}
	}
	return o
}

// SelectBackend returns the backend for a device setting: "cpu", "cuda"
// (an error when no GPU can be opened, saying why) or "auto" (the GPU when
// one opens, else the CPU; note says which and why). close releases the GPU.
func SelectBackend(device string) (be Backend, note string, close func() error, err error) {
	cpu := func() error { return nil }
	switch device {
	case "cpu", "":
		return DefaultBackend(), "cpu (" + DefaultBackend().Name() + ")", cpu, nil
	case "cuda", "auto":
		g, err := OpenGPU(CUDAOptions{})
		if err == nil {
			return g, "cuda: " + g.Info().String(), g.Close, nil
		}
		if device == "cuda" {
			return nil, "", nil, fmt.Errorf("device cuda: %w", err)
		}
		return DefaultBackend(), "cpu (" + DefaultBackend().Name() + "; " + firstLine(err.Error()) + ")", cpu, nil
	}
	return nil, "", nil, fmt.Errorf("device %q: want auto, cpu or cuda", device)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Buffer is a span of device memory of float32 (or int32) elements.
type Buffer struct {
	ptr uint64
	n   int
}

// Len returns the number of elements.
func (b Buffer) Len() int { return b.n }

// IsNil reports whether b is the null buffer (an absent optional operand).
func (b Buffer) IsNil() bool { return b.ptr == 0 }

// Slice returns elements [lo, hi) of b.
func (b Buffer) Slice(lo, hi int) Buffer {
	if lo < 0 || hi > b.n || lo > hi {
		panic(fmt.Sprintf("nn: Buffer.Slice(%d, %d) of %d elements", lo, hi, b.n))
	}
	return Buffer{ptr: b.ptr + uint64(lo)*4, n: hi - lo}
}

// devTensor is a tensor's storage on a GPU. Where a tensor has one, it is
// authoritative: Data and Grad are at most stale host copies (Values and
// GradValues refresh them).
type devTensor struct {
	dev        tensorDevice
	data, grad Buffer // grad is nil when no gradient flows into the tensor (or not yet, or no more: lazyGrad)
	persistent bool   // a parameter's mirror, kept across graph resets
	// owner is the graph whose arena holds data (nil for mirrors): a tensor
	// keeps its graph, and so the arena, from being collected under it.
	owner gpuGraph
	// lazyGrad marks a graph tensor that takes a gradient: its buffer is
	// allocated when backward first reaches it and freed once the op that
	// made the tensor has run its backward.
	lazyGrad bool
	// paramGrad marks a mirror that takes a gradient: ZeroGrad gives its
	// buffer back, and the next backward allocates it again, zeroed, when
	// it first reaches the tensor (as PyTorch's zero_grad(set_to_none=True)
	// leaves p.grad None until backward fills it).
	paramGrad bool
	// gradMu guards a parameter's grad where graphs allocate it
	// (gradOrZero), so that two graphs' backwards into one parameter
	// allocate it once. (Graphs sharing a parameter at once still race on
	// saved; nothing runs them so.)
	gradMu sync.Mutex
	// slot is a graph tensor's place (from 1) in its graph's list of
	// blocks, id its name there; 0 for mirrors.
	slot int
	id   uint64
	// saved marks a tensor whose values a recorded backward reads, which
	// Graph.Drop must leave alone; dropped, one Drop gave back.
	saved, dropped bool
}

// gradOrZero returns d's gradient, allocated and zeroed first where it
// has none yet.
func (d *devTensor) gradOrZero(n int) Buffer {
	var g Buffer
	d.gradWrite(n, func(grad Buffer, fresh bool) {
		if fresh {
			d.dev.Zero(grad)
		}
		g = grad
	})
	return g
}

// gradWrite calls write with d's gradient, allocating it first where d has
// none (fresh: write must then set it whole, not add to it, which spares
// the memset gradOrZero would queue). It holds d's lock while write queues
// its work, so that another graph's backward into the same parameter
// queues its additions after the write that sets the gradient.
func (d *devTensor) gradWrite(n int, write func(g Buffer, fresh bool)) {
	d.gradMu.Lock()
	defer d.gradMu.Unlock()
	fresh := d.grad.IsNil()
	if fresh {
		d.grad = d.dev.Alloc(n)
	}
	write(d.grad, fresh)
}

// freeGrad gives d's gradient back to its device.
func (d *devTensor) freeGrad() {
	d.gradMu.Lock()
	defer d.gradMu.Unlock()
	if !d.grad.IsNil() {
		d.dev.Free(d.grad)
		d.grad = Buffer{}
	}
}

// mustLive panics on a graph tensor whose memory went back: Graph.Drop, a
// Backward with FreeSaved, or the graph's Reset or Keep.
func (d *devTensor) mustLive() {
	if d.dropped {
		panic("nn: a tensor read after Graph.Drop, or a Backward with FreeSaved, gave its memory back")
	}
	if d.owner != nil && d.slot > 0 && !d.owner.holds(d) {
		panic("nn: a tensor read after its graph's Reset or Keep gave its memory back")
	}
}

// tensorDevice is what tensors and the optimiser need from a GPU.
type tensorDevice interface {
	Download(dst []float32, b Buffer) error
	Write(dst Buffer, src []float32)
	Zero(b Buffer)
	// The whole-model ops take every tensor at once: one launch, not one
	// per tensor.
	SumSquares(xs []Buffer) (float64, error)
	ScaleAll(xs []Buffer, s float32)
	AdamWStep(o *AdamW, step int, p, g, m, v []Buffer)
	Alloc(n int) Buffer
	Free(bs ...Buffer)
}
