// Package sweep plans and runs learning-rate sweeps: for every (method,
// architecture candidate, dataset) of a sweep file it keeps one study of up
// to Config.Trials trials in an Optuna-schema database, asks a sampler for
// each trial's parameters, runs the trial as a subprocess speaking the
// protocol of package trial, and records what it reports.
//
// # Studies
//
// A study is named method/arch/dataset (read/gru-256/sst2), maximises the
// validation score, and carries method, arch, arch_settings and dataset as
// user attributes, so Optuna and optuna-dashboard can group and read it.
//
// # Running and resuming
//
// Run fills every study to its budget of COMPLETE+PRUNED trials. The
// budget check and the trial creation are one transaction, so any number of
// Run calls, in one process or many sharing the database file, split the
// work without running a trial twice. A trial whose owner died is found by
// its stale heartbeat, marked FAIL, and retried with the same parameters up
// to MaxRetries times.
//
// # Architecture selection
//
// Best implements Appendix D.2 of the READ paper: per architecture, the best
// validation score per dataset and their mean; the best mean wins.
package sweep

import (
	"fmt"
	"strings"

	"github.com/readsweep/readsweep/sweep/pruner"
	"github.com/readsweep/readsweep/sweep/storage"
	"github.com/readsweep/readsweep/sweep/tpe"
)

// Sampler suggests internal parameter values for trial number of a study,
// given all its trials (the new one included, still without parameters).
type Sampler interface {
	Sample(study storage.Study, trials []storage.FrozenTrial, number int, space map[string]storage.Distribution) (map[string]float64, error)
}

// Pruner decides after each intermediate value whether trial should stop.
// It also returns the system attributes its check records on the trial
// (Optuna's completed_rung_k), which the caller stores before the study's
// next check. A Pruner may keep what it learnt at its first checks (an
// auto resource, as Optuna's pruners do): use one for the life of a run.
type Pruner interface {
	Prune(study storage.Study, trials []storage.FrozenTrial, trial storage.FrozenTrial) (bool, map[string]any)
}

// samplingFilter is a pruner that narrows what the sampler learns from, as
// Optuna's Hyperband hands samplers the new trial's bracket alone.
type samplingFilter interface {
	SamplerTrials(study storage.Study, trials []storage.FrozenTrial, number int) []storage.FrozenTrial
}

// NewSampler builds the configured sampler.
func NewSampler(c SamplerConfig) (Sampler, error) {
	switch c.Name {
	case "", "tpe":
		o, err := tpe.ParseOptions(c.Kwargs)
		if err != nil {
			return nil, err
		}
		return tpe.New(o), nil
	case "random":
		var seed uint64
		seeded := false
		for k, v := range c.Kwargs {
			if k != "seed" {
				return nil, fmt.Errorf("sweep: random sampler: unknown option %q (known: seed)", k)
			}
			f, ok := v.(float64)
			if !ok {
				return nil, fmt.Errorf("sweep: random sampler: seed %v is not a number", v)
			}
			seed, seeded = uint64(int64(f)), true
		}
		return tpe.NewRandom(seed, seeded), nil
	}
	return nil, fmt.Errorf("sweep: unknown sampler %q (want tpe or random)", c.Name)
}

// NewPruner builds the configured pruner; nil means never prune.
func NewPruner(c PrunerConfig) Pruner {
	switch c.Name {
	case "median":
		m := pruner.NewMedian()
		m.NStartupTrials, m.NWarmupSteps, m.IntervalSteps = c.NStartupTrials, c.NWarmupSteps, max(c.IntervalSteps, 1)
		return m
	case "asha":
		return &pruner.SuccessiveHalving{MinResource: c.MinResource, ReductionFactor: max(c.ReductionFactor, 2),
			MinEarlyStoppingRate: c.MinEarlyStoppingRate, BootstrapCount: c.BootstrapCount}
	case "hyperband":
		return &pruner.Hyperband{MinResource: max(c.MinResource, 1), MaxResource: c.MaxResource, ReductionFactor: max(c.ReductionFactor, 2),
			BootstrapCount: c.BootstrapCount}
	}
	return nil
}

// Planned is one study a sweep file asks for.
type Planned struct {
	Name    string // method/arch/dataset
	Method  string
	Arch    Arch
	Dataset string
	// Space and Trials override the sweep's search space and budget (the
	// final runs fix lr and search over seeds); nil and 0 keep them.
	Space  map[string]storage.Distribution
	Trials int
	// Attrs are extra study user attributes.
	Attrs map[string]any
}

// StudyAttrs are the user attributes of p's study, written when the study
// is created, by whichever command plans it first (run, worker, final,
// submit): what it trains on what, and the unit of its trials' values.
func (p Planned) StudyAttrs(c *Config) map[string]any {
	attrs := map[string]any{"method": p.Method, "arch": p.Arch.Name, "arch_settings": p.Arch.Settings, "dataset": p.Dataset,
		AttrReportUnit: c.ReportUnit()}
	for k, v := range p.Attrs {
		attrs[k] = v
	}
	return attrs
}

// Filter restricts a plan to matching studies: each key (method, arch,
// dataset) maps to the allowed values.
type Filter map[string][]string

// ParseFilter reads --only's syntax: method=read,dataset=sst2 (repeat a key
// to allow several values: method=read,method=lora).
func ParseFilter(s string) (Filter, error) {
	f := Filter{}
	if s == "" {
		return f, nil
	}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(part, "=")
		if !ok || v == "" {
			return nil, fmt.Errorf("sweep: --only %q: want key=value pairs like method=read,dataset=sst2", s)
		}
		switch k {
		case "method", "arch", "dataset":
		default:
			return nil, fmt.Errorf("sweep: --only %q: unknown key %q (want method, arch or dataset)", s, k)
		}
		f[k] = append(f[k], v)
	}
	return f, nil
}

func (f Filter) match(p Planned) bool {
	ok := func(key, v string) bool { return len(f[key]) == 0 || contains(f[key], v) }
	return ok("method", p.Method) && ok("arch", p.Arch.Name) && ok("dataset", p.Dataset)
}

// Plan lists the studies of c that f selects, methods and candidates in
// file order, datasets innermost.
func Plan(c *Config, f Filter) []Planned {
	var out []Planned
	for _, m := range c.Methods {
		for _, a := range m.Archs {
			for _, d := range c.Datasets {
				p := Planned{Name: m.Name + "/" + a.Name + "/" + d, Method: m.Name, Arch: a, Dataset: d}
				if f.match(p) {
					out = append(out, p)
				}
			}
		}
	}
	return out
}
