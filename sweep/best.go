package sweep

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/readsweep/readsweep/sweep/storage"
)

// StudyInfo is a stored study with the sweep's identity read back.
type StudyInfo struct {
	storage.Study
	Method, Arch, Dataset string
	Final                 bool // a final-run study (FinalPlan), not a sweep's
	// ReportUnit is what its trials report intermediate values at:
	// UnitEpoch, or UnitStep (optimiser steps, training.eval_steps).
	ReportUnit string
}

// AttrReportUnit is the study user attribute that holds the unit of its
// trials' intermediate values, UnitEpoch or UnitStep. Studies made before
// it existed lack it and count as UnitEpoch.
const AttrReportUnit = "report_unit"

// The units of intermediate values.
const (
	UnitEpoch = "epoch"
	UnitStep  = "step"
)

// Identify reads method, arch and dataset from a study's user attributes,
// falling back to its method/arch/dataset name.
func Identify(st storage.Study) StudyInfo {
	info := StudyInfo{Study: st}
	info.Method, _ = st.UserAttrs["method"].(string)
	info.Arch, _ = st.UserAttrs["arch"].(string)
	info.Dataset, _ = st.UserAttrs["dataset"].(string)
	info.Final, _ = st.UserAttrs["final"].(bool)
	info.ReportUnit = UnitEpoch
	if st.UserAttrs[AttrReportUnit] == UnitStep {
		info.ReportUnit = UnitStep
	}
	name := st.Name
	if rest, ok := strings.CutPrefix(name, FinalPrefix); ok {
		info.Final, name = true, rest
	}
	if info.Method == "" || info.Arch == "" || info.Dataset == "" {
		if parts := strings.Split(name, "/"); len(parts) == 3 {
			info.Method, info.Arch, info.Dataset = parts[0], parts[1], parts[2]
		}
	}
	return info
}

// ArchScore is one architecture candidate's record across datasets.
type ArchScore struct {
	Arch     string
	Best     map[string]storage.FrozenTrial // dataset → best COMPLETE trial
	Study    map[string]string              // dataset → study name
	Mean     float64                        // mean of the best values over Datasets present
	Complete bool                           // has a COMPLETE trial on every dataset
}

// Selection is Appendix D.2's choice for one method.
type Selection struct {
	Method   string
	Datasets []string
	Archs    []ArchScore // best first: complete candidates, then by mean
}

// Chosen returns the winning candidate; ok is false when none has a result.
func (s Selection) Chosen() (ArchScore, bool) {
	if len(s.Archs) == 0 || len(s.Archs[0].Best) == 0 {
		return ArchScore{}, false
	}
	return s.Archs[0], true
}

// Best selects the architecture of method as the paper's Appendix D.2 does:
// for each candidate, the best validation value per dataset and their mean;
// the best mean wins. Candidates missing a dataset rank after those that
// have them all. datasets, when non-empty, limits the datasets considered.
func Best(ctx context.Context, s storage.Storage, method string, datasets []string) (Selection, error) {
	sel := Selection{Method: method}
	studies, err := s.Studies(ctx)
	if err != nil {
		return sel, err
	}
	if err := checkDatasets(studies, method, datasets); err != nil {
		return sel, err
	}
	byArch := map[string]*ArchScore{}
	var order []string
	dsSeen := map[string]bool{}
	var dir storage.Direction = storage.Maximize
	for _, st := range studies {
		info := Identify(st)
		if info.Final || info.Method != method || (len(datasets) > 0 && !contains(datasets, info.Dataset)) {
			continue
		}
		dir = st.Direction
		a := byArch[info.Arch]
		if a == nil {
			a = &ArchScore{Arch: info.Arch, Best: map[string]storage.FrozenTrial{}, Study: map[string]string{}}
			byArch[info.Arch] = a
			order = append(order, info.Arch)
		}
		if !dsSeen[info.Dataset] {
			dsSeen[info.Dataset] = true
			sel.Datasets = append(sel.Datasets, info.Dataset)
		}
		trials, err := s.Trials(ctx, st.ID)
		if err != nil {
			return sel, err
		}
		a.Study[info.Dataset] = st.Name
		if b, ok := storage.BestTrial(trials, st.Direction); ok {
			a.Best[info.Dataset] = b
		}
	}
	if len(order) == 0 {
		return sel, fmt.Errorf("sweep: no studies of method %q in the database", method)
	}
	if len(datasets) > 0 {
		sel.Datasets = datasets
	}
	for _, name := range order {
		a := byArch[name]
		var sum float64
		for _, b := range a.Best {
			sum += *b.Value
		}
		a.Mean = math.NaN()
		if len(a.Best) > 0 {
			a.Mean = sum / float64(len(a.Best))
		}
		a.Complete = true
		for _, d := range sel.Datasets {
			if _, ok := a.Best[d]; !ok {
				a.Complete = false
			}
		}
		sel.Archs = append(sel.Archs, *a)
	}
	sort.SliceStable(sel.Archs, func(i, j int) bool {
		a, b := sel.Archs[i], sel.Archs[j]
		if a.Complete != b.Complete {
			return a.Complete
		}
		if math.IsNaN(a.Mean) != math.IsNaN(b.Mean) {
			return !math.IsNaN(a.Mean)
		}
		return dir.Better(a.Mean, b.Mean)
	})
	return sel, nil
}

// checkDatasets says which of the asked datasets the method has no sweep
// study on, and which it has.
func checkDatasets(studies []storage.Study, method string, datasets []string) error {
	var have []string
	for _, st := range studies {
		if info := Identify(st); !info.Final && info.Method == method && !contains(have, info.Dataset) {
			have = append(have, info.Dataset)
		}
	}
	var missing []string
	for _, d := range datasets {
		if !contains(have, d) {
			missing = append(missing, d)
		}
	}
	if len(missing) == 0 || len(have) == 0 {
		return nil // no studies at all is reported by the caller
	}
	sort.Strings(have)
	return fmt.Errorf("sweep: no %s studies on dataset %s (it has %s)", method, strings.Join(missing, ", "), strings.Join(have, ", "))
}
