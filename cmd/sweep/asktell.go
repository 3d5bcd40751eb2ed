package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/readsweep/readsweep/sweep"
	"github.com/readsweep/readsweep/sweep/storage"
)

// cmdAsk mirrors `optuna ask`: it creates the study if needed, creates a
// trial (taking an enqueued one first), samples the search space and prints
// {"number": N, "params": {...}}.
func cmdAsk(args []string) error {
	fs := newFlags("ask", "ask --storage URL --study-name NAME --search-space JSON [--direction minimize|maximize] [--sampler tpe|random] [--sampler-kwargs JSON]")
	url := fs.String("storage", "", "storage URL, e.g. sqlite:///study.db (required)")
	name := fs.String("study-name", "", "study name (required)")
	direction := fs.String("direction", "minimize", "minimize or maximize (used when the study is created; an existing study keeps its own unless this is given)")
	samplerName := fs.String("sampler", "tpe", "tpe or random")
	kwargs := fs.String("sampler-kwargs", "{}", `sampler options as JSON, e.g. {"seed": 1, "n_startup_trials": 5}`)
	spaceJSON := fs.String("search-space", "", `Optuna distribution JSON per parameter, e.g. {"x": {"name": "FloatDistribution", "attributes": {"low": 0.0, "high": 1.0}}}`)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 || *url == "" || *name == "" || *spaceJSON == "" {
		fs.Usage()
		return errUsage
	}
	dir, err := storage.ParseDirection(*direction)
	if err != nil {
		return fmt.Errorf("%w: --direction: %v", errUsage, err)
	}
	var space map[string]storage.Distribution
	if err := json.Unmarshal([]byte(*spaceJSON), &space); err != nil {
		return fmt.Errorf("%w: --search-space: %v", errUsage, err)
	}
	var kw map[string]any
	if err := json.Unmarshal([]byte(*kwargs), &kw); err != nil {
		return fmt.Errorf("%w: --sampler-kwargs: %v", errUsage, err)
	}
	sampler, err := sweep.NewSampler(sweep.SamplerConfig{Name: *samplerName, Kwargs: kw})
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	s, err := storage.Open(*url)
	if err != nil {
		return err
	}
	defer s.Close()
	ctx := context.Background()
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "direction" })
	if !explicit {
		if existing, err := findStudy(ctx, s, *name); err == nil {
			dir = existing.Direction
		}
	}
	st, err := s.CreateStudy(ctx, *name, dir, nil)
	if err != nil {
		return err
	}
	t, err := s.CreateTrial(ctx, st.ID, storage.TrialOptions{State: storage.Running, ClaimWaiting: true})
	if err != nil {
		return err
	}
	trials, err := s.Trials(ctx, st.ID)
	if err != nil {
		return err
	}
	params, err := sampler.Sample(st, trials, t.Number, space)
	if err != nil {
		return err
	}
	if fixed, ok := t.SystemAttrs["fixed_params"].(map[string]any); ok {
		for k, v := range fixed {
			if d, ok := space[k]; ok {
				if iv, err := d.ToInternal(v); err == nil && d.Contains(iv) {
					params[k] = iv
				}
			}
		}
	}
	if err := s.UpdateTrial(ctx, t.ID, storage.TrialUpdate{Params: params, Distributions: space}); err != nil {
		return err
	}
	t.Params, t.Distributions = params, space
	out, err := json.Marshal(map[string]any{"number": t.Number, "params": t.ExternalParams()})
	if err != nil {
		return err
	}
	fmt.Println(strings.ReplaceAll(strings.ReplaceAll(string(out), `":`, `": `), `,"`, `, "`))
	return nil
}

// cmdTell mirrors `optuna tell`.
func cmdTell(args []string) error {
	fs := newFlags("tell", "tell --storage URL --study-name NAME --trial-number N (--values V | --state fail|pruned) [--skip-if-finished]")
	url := fs.String("storage", "", "storage URL (required)")
	name := fs.String("study-name", "", "study name (required)")
	number := fs.Int("trial-number", -1, "trial number from ask (required)")
	values := fs.String("values", "", "objective value")
	stateName := fs.String("state", "", "complete (default with --values), pruned or fail")
	skip := fs.Bool("skip-if-finished", false, "succeed silently when the trial is already finished")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 || *url == "" || *name == "" || *number < 0 {
		fs.Usage()
		return errUsage
	}
	state := storage.Complete
	if *stateName != "" {
		if state, err = storage.ParseTrialState(*stateName); err != nil || !state.IsFinished() {
			return fmt.Errorf("%w: --state %q: want complete, pruned or fail", errUsage, *stateName)
		}
	}
	var value *float64
	if *values != "" {
		parts := strings.Fields(strings.ReplaceAll(*values, ",", " "))
		if len(parts) != 1 {
			return fmt.Errorf("%w: --values %q: this tool stores single-objective studies", errUsage, *values)
		}
		v, err := strconv.ParseFloat(parts[0], 64)
		if err != nil {
			return fmt.Errorf("%w: --values %q: %v", errUsage, *values, err)
		}
		value = &v
	}
	if state == storage.Complete && value == nil {
		return fmt.Errorf("%w: a complete trial needs --values", errUsage)
	}
	if state == storage.Fail && value != nil {
		return fmt.Errorf("%w: a failed trial takes no --values", errUsage)
	}
	s, err := openExisting(*url)
	if err != nil {
		return err
	}
	defer s.Close()
	ctx := context.Background()
	_, t, err := findTrial(ctx, s, *name, *number)
	if err != nil {
		return err
	}
	if state == storage.Pruned && value == nil {
		if _, v, ok := t.LastStep(); ok {
			value = &v
		}
	}
	err = s.UpdateTrial(ctx, t.ID, storage.TrialUpdate{State: &state, Value: value})
	if errors.Is(err, storage.ErrTrialFinished) {
		if *skip {
			return nil
		}
		// Name the trial as the user did (its number), not by its row id.
		return fmt.Errorf("%s trial %d is already %s; tell changes only running trials (--skip-if-finished ignores this)", *name, t.Number, t.State)
	}
	if err != nil {
		return fmt.Errorf("%s trial %d: %w", *name, t.Number, err)
	}
	fmt.Fprintf(os.Stderr, "sweep: told trial %d with values %v and state %s\n", t.Number, formatPtr(value), state)
	return nil
}

func formatPtr(v *float64) string {
	if v == nil {
		return "none"
	}
	return "[" + strconv.FormatFloat(*v, 'g', -1, 64) + "]"
}
