package sweep

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/readsweep/readsweep/sweep/storage"
)

// FinalPrefix starts the names of the final-run studies.
const FinalPrefix = "final/"

// Seeds returns the training seeds of the final runs: training.seeds, or
// the one sweep seed.
func (c *Config) Seeds() []int64 {
	var out []int64
	if list, ok := c.Training["seeds"].([]any); ok {
		for _, v := range list {
			if i, ok := v.(int); ok {
				out = append(out, int64(i))
			}
		}
	}
	if len(out) == 0 {
		out = []int64{c.Seed}
	}
	return out
}

// FinalPlan chooses each method's architecture as Appendix D.2 does (Best)
// and plans the final runs: per dataset a study final/method/arch/dataset
// whose trials re-run that architecture at its best trial's learning rate,
// one per configured seed. The seeds are enqueued (once), so the runs are
// stored, resumable and browsable like the sweep's own.
func FinalPlan(ctx context.Context, s storage.Storage, c *Config, f Filter) ([]Planned, error) {
	seeds := c.Seeds()
	lo, hi := slices.Min(seeds), slices.Max(seeds)
	var plans []Planned
	for _, m := range c.Methods {
		if len(f["method"]) > 0 && !contains(f["method"], m.Name) {
			continue
		}
		sel, err := Best(ctx, s, m.Name, c.Datasets)
		if err != nil {
			return nil, err
		}
		chosen, ok := sel.Chosen()
		if !ok {
			return nil, fmt.Errorf("sweep: %s has no COMPLETE trial yet; run the sweep first", m.Name)
		}
		var arch Arch
		for _, a := range m.Archs {
			if a.Name == chosen.Arch {
				arch = a
			}
		}
		if arch.Name == "" {
			return nil, fmt.Errorf("sweep: %s: the database's best architecture %q is not in the sweep file", m.Name, chosen.Arch)
		}
		for _, d := range c.Datasets {
			if len(f["dataset"]) > 0 && !contains(f["dataset"], d) {
				continue
			}
			best, ok := chosen.Best[d]
			if !ok {
				return nil, fmt.Errorf("sweep: %s/%s/%s has no COMPLETE trial; its sweep is unfinished", m.Name, arch.Name, d)
			}
			lr, ok := best.Params["lr"]
			if !ok {
				return nil, fmt.Errorf("sweep: %s#%d has no lr parameter", chosen.Study[d], best.Number)
			}
			plans = append(plans, Planned{
				Name: FinalPrefix + m.Name + "/" + arch.Name + "/" + d, Method: m.Name, Arch: arch, Dataset: d,
				Space: map[string]storage.Distribution{
					"lr":   storage.Float(lr, lr, false),
					"seed": {Kind: storage.IntDist, Low: float64(lo), High: float64(max(hi, lo)), Step: 1},
				},
				Trials: len(seeds),
				Attrs:  map[string]any{"final": true, "lr": lr, "selected_from": fmt.Sprintf("%s#%d", chosen.Study[d], best.Number)},
			})
		}
	}
	for _, p := range plans {
		if err := enqueueSeeds(ctx, s, c, p, seeds); err != nil {
			return nil, err
		}
	}
	return plans, nil
}

// enqueueSeeds adds a WAITING trial for every seed the final study does
// not have yet (failed ones are retried by the runner, not here).
func enqueueSeeds(ctx context.Context, s storage.Storage, c *Config, p Planned, seeds []int64) error {
	st, err := s.CreateStudy(ctx, p.Name, c.Direction, p.StudyAttrs(c))
	if err != nil {
		return err
	}
	trials, err := s.Trials(ctx, st.ID)
	if err != nil {
		return err
	}
	have := map[int64]bool{}
	for _, t := range trials {
		if v, ok := t.Params["seed"]; ok {
			have[int64(math.Round(v))] = true
		}
		if fp, ok := t.SystemAttrs["fixed_params"].(map[string]any); ok {
			if v, ok := fp["seed"].(float64); ok {
				have[int64(v)] = true
			}
		}
	}
	for _, seed := range seeds {
		if have[seed] {
			continue
		}
		_, err := s.CreateTrial(ctx, st.ID, storage.TrialOptions{State: storage.Waiting,
			SystemAttrs: map[string]any{"fixed_params": map[string]any{"lr": p.Space["lr"].Low, "seed": seed}}})
		if err != nil {
			return err
		}
	}
	return nil
}
