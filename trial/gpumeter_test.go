package trial

import (
	"math"
	"sync"
	"testing"
	"time"
)

// fakeGPU counts energy at a fixed power and reports a fixed utilisation.
type fakeGPU struct {
	mu      sync.Mutex
	start   time.Time
	watts   float64
	util    float64
	mem     uint64
	counter bool
	closed  bool
}

func (f *fakeGPU) energyMJ() (uint64, bool) {
	return uint64(time.Since(f.start).Seconds() * f.watts * 1000), f.counter
}

func (f *fakeGPU) utilisation() (float64, uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mem += 1 << 20
	return f.util, f.mem, true
}

func (f *fakeGPU) close() { f.closed = true }

func TestGPUMeter(t *testing.T) {
	f := &fakeGPU{start: time.Now().Add(-time.Hour), watts: 300, util: 50, counter: true}
	t0 := time.Now()
	m := startGPUMeter(f, 5*time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	e := m.stop(250)
	elapsed := time.Since(t0).Seconds()
	if !f.closed {
		t.Error("sampler not closed")
	}
	// The counter started an hour ago: only the difference is the trial's.
	if want := 300 * elapsed; math.Abs(e.joules-want) > 0.1*want {
		t.Errorf("counter energy %.2f J, want about %.2f", e.joules, want)
	}
	if want := 0.5 * elapsed * 250; math.Abs(e.paperJoules-want) > 0.1*want {
		t.Errorf("paper estimate %.2f J, want about %.2f", e.paperJoules, want)
	}
	if e.meanUtil != 50 || e.samples < 5 || e.memPeak != int64(e.samples)<<20 {
		t.Errorf("mean utilisation %v over %d samples, memory peak %d", e.meanUtil, e.samples, e.memPeak)
	}

	f = &fakeGPU{start: time.Now(), util: 10} // a GPU without an energy counter
	e = startGPUMeter(f, time.Millisecond).stop(250)
	if !math.IsNaN(e.joules) {
		t.Errorf("no counter, energy %v", e.joules)
	}
}

// The paper's worked example (Appendix D, Eq. 16): 8 GPUs at 50 % for 2 h
// with p₀ = 0.25 kW use 2.0 kWh.
func TestPaperEnergyExample(t *testing.T) {
	busy := 8 * 0.5 * 2 * 3600.0
	if kwh := paperEnergyJoules(busy, 250) / 3.6e6; math.Abs(kwh-2.0) > 1e-12 {
		t.Errorf("%v kWh, want 2.0", kwh)
	}
}

func TestOpenNVMLWithoutDriver(t *testing.T) {
	s, err := openNVML("00000000:00:00.0")
	if err == nil {
		s.close()
		t.Skip("this machine has an NVIDIA driver")
	}
	if err.Error() == "" {
		t.Fatal("empty error")
	}
	t.Logf("as expected: %v", err)
}
