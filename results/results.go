// Package results turns a study database into the READ paper's tables and
// figures: Table 1 (scores, trainable parameters, power, energy), Table 3
// (efficiency) and Figure 1, from the final runs that `sweep final` stores.
//
// # Definitions
//
// A task score is the mean over a method's final runs (one per seed) of
// the test score, with the sample standard deviation when there are
// several. Avg. is the plain mean of the task columns, which the paper's
// own Avg. column is not (shared/reference/table1.md, note 1). Energy is
// the sum over tasks of the mean energy of a run; power is energy over run
// time.
package results

import (
	"context"
	"math"
	"slices"
	"sort"

	"github.com/readsweep/readsweep/methods/all"
	"github.com/readsweep/readsweep/sweep"
	"github.com/readsweep/readsweep/sweep/storage"
)

// DatasetOrder is the paper's column order.
var DatasetOrder = []string{"cola", "mnli", "qnli", "mrpc", "qqp", "sst2", "stsb", "rte"}

// Stat is a mean over seeds.
type Stat struct {
	Mean, Std float64
	N         int
}

func stat(xs []float64) Stat {
	s := Stat{N: len(xs)}
	if s.N == 0 {
		return Stat{Mean: math.NaN(), Std: math.NaN()}
	}
	for _, x := range xs {
		s.Mean += x
	}
	s.Mean /= float64(s.N)
	if s.N > 1 {
		var ss float64
		for _, x := range xs {
			ss += (x - s.Mean) * (x - s.Mean)
		}
		s.Std = math.Sqrt(ss / float64(s.N-1))
	}
	return s
}

// Row is one method's results over its final runs.
type Row struct {
	Method, Arch    string
	TrainablePct    float64
	TrainableParams int
	Scores          map[string]Stat // dataset → test score
	Avg             float64         // plain mean of the task means; NaN without tasks
	EnergyKWh       float64
	PowerKW         float64
	EnergySource    string
	// EnergyPaperKWh is the paper's GPU estimate (sampled utilisation ×
	// p₀, Appendix D) summed like EnergyKWh; NaN where no run had a GPU.
	EnergyPaperKWh float64
	PeakMemoryGB   float64 // peak device memory on a GPU, else peak RSS, of a training run, averaged over tasks
	MemorySource   string  // "GPU" or "RSS"
	InferenceS     float64 // greedy decoding latency at batch 1, averaged over tasks
	Runs           int
	// Precisions are the product precisions (training setting precision)
	// its runs used, sorted: one, unless runs were mixed.
	Precisions []string
}

func num(attrs map[string]any, key string) (float64, bool) {
	v, ok := attrs[key].(float64)
	return v, ok && !math.IsNaN(v)
}

// Collect reads every final study's COMPLETE trials into rows, in the
// paper's method order (others after, by name), and returns the datasets
// present in the paper's column order.
func Collect(ctx context.Context, s storage.Storage) ([]Row, []string, error) {
	studies, err := s.Studies(ctx)
	if err != nil {
		return nil, nil, err
	}
	type acc struct {
		test, energy, paper, seconds, mem, lat []float64
	}
	rows := map[string]*Row{}
	per := map[string]map[string]*acc{} // method → dataset → runs
	seen := map[string]bool{}
	for _, st := range studies {
		info := sweep.Identify(st)
		if !info.Final {
			continue
		}
		trials, err := s.Trials(ctx, st.ID)
		if err != nil {
			return nil, nil, err
		}
		r := rows[info.Method]
		if r == nil {
			nan := math.NaN()
			r = &Row{Method: info.Method, Arch: info.Arch, Scores: map[string]Stat{}, TrainablePct: nan,
				EnergyKWh: nan, EnergyPaperKWh: nan, PowerKW: nan, PeakMemoryGB: nan, InferenceS: nan}
			rows[info.Method] = r
			per[info.Method] = map[string]*acc{}
		}
		a := per[info.Method][info.Dataset]
		if a == nil {
			a = &acc{}
			per[info.Method][info.Dataset] = a
		}
		for _, t := range trials {
			if t.State != storage.Complete {
				continue
			}
			test, ok := num(t.UserAttrs, "test")
			if !ok {
				continue
			}
			seen[info.Dataset] = true
			r.Runs++
			a.test = append(a.test, test)
			if v, ok := num(t.UserAttrs, "energy_joules"); ok {
				a.energy = append(a.energy, v)
			}
			if v, ok := num(t.UserAttrs, "seconds"); ok {
				a.seconds = append(a.seconds, v)
			}
			if v, ok := num(t.UserAttrs, "gpu_peak_bytes"); ok {
				a.mem = append(a.mem, v)
				r.MemorySource = "GPU"
			} else if v, ok := num(t.UserAttrs, "peak_rss_bytes"); ok {
				a.mem = append(a.mem, v)
				r.MemorySource = "RSS"
			}
			if v, ok := num(t.UserAttrs, "energy_paper_estimate_joules"); ok {
				a.paper = append(a.paper, v)
			}
			if v, ok := num(t.UserAttrs, "latency_ms_batch1"); ok {
				a.lat = append(a.lat, v)
			}
			if v, ok := num(t.UserAttrs, "trainable_percent"); ok {
				r.TrainablePct = v
			}
			if v, ok := num(t.UserAttrs, "trainable_params"); ok {
				r.TrainableParams = int(v)
			}
			if src, ok := t.UserAttrs["energy_source"].(string); ok {
				r.EnergySource = src
			}
			p, ok := t.UserAttrs["precision"].(string)
			if !ok {
				p = "fp32" // runs from before the setting existed
			}
			if !slices.Contains(r.Precisions, p) {
				r.Precisions = append(r.Precisions, p)
				slices.Sort(r.Precisions)
			}
		}
	}
	var out []Row
	for m, r := range rows {
		var joules, seconds, paper float64
		anyPaper := false
		var mems, lats, means []float64
		for d, a := range per[m] {
			if len(a.test) == 0 {
				continue
			}
			r.Scores[d] = stat(a.test)
			means = append(means, r.Scores[d].Mean)
			joules += stat(a.energy).Mean
			if len(a.paper) > 0 {
				paper += stat(a.paper).Mean
				anyPaper = true
			}
			seconds += stat(a.seconds).Mean
			if len(a.mem) > 0 {
				mems = append(mems, stat(a.mem).Mean/1e9)
			}
			if len(a.lat) > 0 {
				lats = append(lats, stat(a.lat).Mean/1000)
			}
		}
		r.Avg = stat(means).Mean
		if !math.IsNaN(joules) {
			r.EnergyKWh = joules / 3.6e6
			if seconds > 0 && !math.IsNaN(seconds) {
				r.PowerKW = joules / seconds / 1000
			}
		}
		if anyPaper {
			r.EnergyPaperKWh = paper / 3.6e6
		}
		r.PeakMemoryGB = stat(mems).Mean
		r.InferenceS = stat(lats).Mean
		out = append(out, *r)
	}
	reg := all.Registry()
	rank := reg.Rank
	sort.Slice(out, func(i, j int) bool {
		if ri, rj := rank(out[i].Method), rank(out[j].Method); ri != rj {
			return ri < rj
		}
		return out[i].Method < out[j].Method
	})
	var datasets []string
	for _, d := range DatasetOrder {
		if seen[d] {
			datasets = append(datasets, d)
		}
	}
	return out, datasets, nil
}
