package trial

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// meter measures a trial's energy: Intel RAPL package counters when the
// kernel lets us read them, else an estimate from CPU time.
type meter struct {
	start      time.Time
	rapl       map[string]uint64 // counter file → µJ at start
	cpuAtStart float64
}

type energy struct {
	joules float64
	source string
}

// raplCounters lists the package-level RAPL energy counters.
func raplCounters() []string {
	m, _ := filepath.Glob("/sys/class/powercap/intel-rapl:[0-9]*/energy_uj")
	var out []string
	for _, p := range m {
		if strings.Count(filepath.Base(filepath.Dir(p)), ":") == 1 { // packages, not their sub-zones
			out = append(out, p)
		}
	}
	return out
}

func readUint(path string) (uint64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return v, err == nil
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func startMeter() *meter {
	m := &meter{start: time.Now(), rapl: map[string]uint64{}, cpuAtStart: cpuSeconds()}
	for _, p := range raplCounters() {
		if v, ok := readUint(p); ok {
			m.rapl[p] = v
		}
	}
	return m
}

// stop returns the energy since start. The RAPL reading covers the whole
// package (other processes included); the estimate charges this process's
// CPU time at watts per fully busy package, shared by its cores.
func (m *meter) stop(packageWatts float64) energy {
	if len(m.rapl) > 0 {
		var uj float64
		ok := true
		for p, v0 := range m.rapl {
			v1, good := readUint(p)
			if !good {
				ok = false
				break
			}
			if v1 < v0 { // the counter wrapped
				if r, good := readUint(filepath.Join(filepath.Dir(p), "max_energy_range_uj")); good {
					v1 += r
				}
			}
			uj += float64(v1 - v0)
		}
		if ok {
			return energy{joules: uj / 1e6, source: "rapl"}
		}
	}
	cpu := cpuSeconds() - m.cpuAtStart
	return energy{joules: cpu / float64(runtime.NumCPU()) * packageWatts,
		source: "estimate: CPU seconds / cores × " + strconv.FormatFloat(packageWatts, 'g', -1, 64) + " W"}
}

// peakRSS returns the process's peak resident set in bytes.
func peakRSS() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Maxrss * 1024
}
