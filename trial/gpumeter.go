package trial

import (
	"math"
	"time"
)

// gpuSampler is what the GPU meter reads: NVML in real use, a fake in tests.
type gpuSampler interface {
	// energyMJ returns the device's total-energy counter in millijoules
	// (ok false where the GPU has none: before Volta).
	energyMJ() (mj uint64, ok bool)
	// utilisation returns the percentage of the last sample period during
	// which a kernel ran, and the device memory in use (all processes).
	utilisation() (percent float64, memUsed uint64, ok bool)
	close()
}

// gpuMeter measures a trial's GPU energy two ways: the driver's energy
// counter, and the paper's estimate (Appendix D, Eqs. 15–16): the
// integral of sampled utilisation/100 × p₀, the datasheet power.
type gpuMeter struct {
	s        gpuSampler
	interval time.Duration
	e0       uint64
	counter  bool

	// Written by the sampling goroutine, then by stop once it has ended.
	busy    float64 // ∫ u/100 dt, in seconds
	utilSum float64
	samples int
	memPeak uint64
	last    time.Time

	stopc chan struct{}
	done  chan struct{}
}

type gpuEnergy struct {
	joules      float64 // from the counter; NaN without one
	paperJoules float64 // utilisation × p₀
	meanUtil    float64 // percent
	memPeak     int64   // bytes, peak of the samples
	samples     int
}

func startGPUMeter(s gpuSampler, interval time.Duration) *gpuMeter {
	m := &gpuMeter{s: s, interval: interval, last: time.Now(), stopc: make(chan struct{}), done: make(chan struct{})}
	m.e0, m.counter = s.energyMJ()
	go m.loop()
	return m
}

func (m *gpuMeter) loop() {
	defer close(m.done)
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		select {
		case <-m.stopc:
			return
		case now := <-t.C:
			m.sample(now)
		}
	}
}

// sample charges the utilisation read now to the time since the last sample.
func (m *gpuMeter) sample(now time.Time) {
	u, mem, ok := m.s.utilisation()
	dt := now.Sub(m.last).Seconds()
	m.last = now
	if !ok {
		return
	}
	m.busy += u / 100 * dt
	m.utilSum += u
	m.samples++
	m.memPeak = max(m.memPeak, mem)
}

// stop ends sampling and returns the energy since start; p0Watts is the
// paper's per-GPU power (250 W, a V100's datasheet figure).
func (m *gpuMeter) stop(p0Watts float64) gpuEnergy {
	close(m.stopc)
	<-m.done
	m.sample(time.Now())
	e := gpuEnergy{joules: math.NaN(), paperJoules: paperEnergyJoules(m.busy, p0Watts), memPeak: int64(m.memPeak), samples: m.samples}
	if m.samples > 0 {
		e.meanUtil = m.utilSum / float64(m.samples)
	}
	if m.counter {
		if e1, ok := m.s.energyMJ(); ok && e1 >= m.e0 {
			e.joules = float64(e1-m.e0) / 1000
		}
	}
	m.s.close()
	return e
}

// counterJoules is the counter's energy since start, read while sampling
// goes on (a checkpoint's); NaN without a counter.
func (m *gpuMeter) counterJoules() float64 {
	if m.counter {
		if e1, ok := m.s.energyMJ(); ok && e1 >= m.e0 {
			return float64(e1-m.e0) / 1000
		}
	}
	return math.NaN()
}

// paperEnergyJoules is Eq. 15: E = ∫ u(t)/100 · p₀ dt, given busySeconds =
// ∫ u(t)/100 dt. (Eq. 16 writes it in kWh from per-minute samples: U·p₀/6000.)
func paperEnergyJoules(busySeconds, p0Watts float64) float64 { return busySeconds * p0Watts }
