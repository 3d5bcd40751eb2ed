package trial

import (
	"math/rand/v2"
	"time"

	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/t5"
)

// CacheBench is the result of BenchStateCache.
type CacheBench struct {
	Size                           string
	Batches                        int
	EpochSeconds                   float64 // training epoch running the frozen backbone
	CachedEpochSeconds             float64 // the same epoch from cached states
	CacheMB                        float64 // the states' size in float32
	StepSeconds, CachedStepSeconds float64
}

// BenchStateCache times a READ training epoch of n random batches
// (B × S source × T target ids) at a size's shapes, first running the
// frozen backbone (and capturing its states), then from the captured
// states, as a trial's later epochs and later trials do.
func BenchStateCache(be nn.Backend, reg methods.Registry, size string, B, S, T, n int) (CacheBench, error) {
	m, err := t5.NewBenchModel(size)
	if err != nil {
		return CacheBench{}, err
	}
	meth, err := reg.New("read", m, nil, 0)
	if err != nil {
		return CacheBench{}, err
	}
	trainable, hooks := meth.Trainable(), meth.Hooks()
	rng := rand.New(rand.NewPCG(0, 2))
	batches := make([]t5.Batch, n)
	for i := range batches {
		bt := t5.Batch{B: B, S: S, T: T, Input: make([]int32, B*S), Labels: make([]int32, B*T)}
		for j := range bt.Input {
			bt.Input[j] = int32(2 + rng.IntN(31998))
		}
		for j := range bt.Labels {
			bt.Labels[j] = int32(2 + rng.IntN(31998))
		}
		batches[i] = bt
	}
	opt := nn.NewAdamW(1e-4)
	g := nn.NewGraph(be)
	step := func(out *t5.Output) {
		g.Backward(out.Loss)
		opt.Step(trainable)
		nn.ZeroGrad(trainable)
	}
	cache := &stateCache{budget: 1 << 62, batches: make([]*batchStates, n)}
	// Warm up the arena and the backend once.
	g.Reset()
	out, err := m.Forward(g, batches[0], hooks)
	if err != nil {
		return CacheBench{}, err
	}
	step(out)
	t0 := time.Now()
	for i, bt := range batches {
		g.Reset()
		out, err := m.Forward(g, bt, hooks)
		if err != nil {
			return CacheBench{}, err
		}
		step(out)
		t := time.Now()
		cache.add(i, capture(g, out, B, S, T))
		t0 = t0.Add(time.Since(t)) // capturing is the first epoch's cost, not the plain epoch's
	}
	plain := time.Since(t0).Seconds()
	t1 := time.Now()
	for i, bt := range batches {
		g.Reset()
		step(m.HeadLoss(g, hooks, cache.get(i).output(m.Config.DModel), bt))
	}
	cached := time.Since(t1).Seconds()
	return CacheBench{Size: size, Batches: n, EpochSeconds: plain, CachedEpochSeconds: cached,
		CacheMB: float64(cache.bytes) / 1e6, StepSeconds: plain / float64(n), CachedStepSeconds: cached / float64(n)}, nil
}
