package sweep

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"gopkg.in/yaml.v3"

	"github.com/readsweep/readsweep/glue"
	"github.com/readsweep/readsweep/methods/all"
	"github.com/readsweep/readsweep/sweep/storage"
)

// DefaultStallTimeout is how long a built-in trial may say nothing before
// it is stopped: generous, since the trainer beats every 30 s during long
// epochs and evaluations. External commands get no stall limit unless the
// file sets one: they may not beat between epochs, and an epoch can be long.
const DefaultStallTimeout = 30 * time.Minute

// DefaultStorageRetry is how long a run waits for a database that went
// away: a server restart, a failover or a maintenance window on a cluster.
const DefaultStorageRetry = 10 * time.Minute

// DefaultHeartbeatGrace is the least age of a heartbeat at which its trial
// is taken for dead, when the file does not set heartbeat_grace.
const DefaultHeartbeatGrace = time.Minute

// Config is a parsed sweeps.yaml. See the sweeps.yaml at the repository
// root and docs/config.md for every key.
type Config struct {
	File    string
	Storage string // storage URL, sqlite:///sweeps.db by default
	// StorageNamed: the file names its storage, which $SWEEP_STORAGE then
	// does not replace.
	StorageNamed bool
	Model        string // backbone path or hub id
	DataDir      string
	OutputDir    string // per-trial directories (spec, logs, weights)
	Trainer      string // "builtin" or "synthetic" (the orchestrator's test double)
	Datasets     []string
	Methods      []Method // in file order
	Space        map[string]storage.Distribution
	Trials       int // budget of COMPLETE+PRUNED trials per study
	Direction    storage.Direction
	Sampler      SamplerConfig
	Pruner       PrunerConfig
	Training     map[string]any
	// TrainingLines is where each training key is written (CheckTraining).
	TrainingLines map[string]int
	Seed          int64 // training seed of sweep trials (training.seeds[0])

	Parallel int
	// Pack is how many trials of a study one trial process trains side by
	// side over one backbone pass (1: none); it applies to studies whose
	// method trains from the frozen backbone's states (READ's variant A, LST).
	Pack              int
	Device            string // auto, cpu or cuda: where trials compute
	GPUs              []string
	MaxRetries        int
	MaxFailures       int // FAIL trials of one study after which a run stops scheduling it
	HeartbeatInterval time.Duration
	HeartbeatGrace    time.Duration
	KillGrace         time.Duration
	// StorageRetry is how long a database that stopped answering is waited
	// for (each write retried, capped back-off) before the run gives up.
	StorageRetry time.Duration
	// TrialTimeout is a trial's wall-clock limit (0: none); StallTimeout the
	// longest it may go without a protocol message (epoch, heartbeat, final).
	// A trial over either gets SIGTERM, SIGKILL after KillGrace, and FAILs
	// with the limit named.
	TrialTimeout, StallTimeout time.Duration
	// TrialMemoryGB caps a CPU trial's writable memory (RLIMIT_DATA; 0: none).
	TrialMemoryGB float64
	Command       []string // external trial argv template; empty: `sweep trial`
}

// Method is one fine-tuning method with its architecture candidates.
type Method struct {
	Name  string
	Archs []Arch
}

// Arch is one architecture candidate: its settings and the name used in
// study names.
type Arch struct {
	Name     string
	Settings map[string]any
	Line     int      // where the candidate is written
	Field    string   // its key path, e.g. methods.lora[1]
	keys     []string // settings keys in file order
}

// SamplerConfig selects and configures the sampler.
type SamplerConfig struct {
	Name   string         // "tpe" or "random"
	Kwargs map[string]any // Optuna-style options, seed among them
}

// PrunerConfig selects and configures the pruner.
type PrunerConfig struct {
	Name string // "none", "median", "asha" or "hyperband"
	// median (Optuna's MedianPruner)
	NStartupTrials int
	NWarmupSteps   int
	IntervalSteps  int
	// asha (Optuna's SuccessiveHalvingPruner; MinResource 0 is auto) and
	// hyperband (Optuna's HyperbandPruner; MaxResource 0 is auto)
	MinResource, MaxResource, ReductionFactor, MinEarlyStoppingRate, BootstrapCount int
}

// knownMethods are the methods the orchestrator accepts: the registry's.
func knownMethods() []string { return all.Registry().Names() }

// knownDatasets returns the GLUE tasks' names.
func knownDatasets() []string {
	var names []string
	for _, t := range glue.Tasks() {
		names = append(names, t.Name)
	}
	return names
}

// ConfigError reports a problem at a place in a config file.
type ConfigError struct {
	File  string
	Line  int
	Field string // key path, e.g. methods.read[1].hidden
	Err   error
}

func (e *ConfigError) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc += ":" + strconv.Itoa(e.Line)
	}
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %v", loc, e.Field, e.Err)
	}
	return fmt.Sprintf("%s: %v", loc, e.Err)
}

func (e *ConfigError) Unwrap() error { return e.Err }

// LoadConfig reads and validates a sweep file.
func LoadConfig(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("sweep: %w", err)
	}
	return ParseConfig(path, raw)
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlSyntaxError puts yaml.v3's syntax error in the file:line form of the
// other errors. Its parser errors ("did not find expected ...") count lines
// from 0 (the line where the unclosed block or list began, or where the
// problem was seen when that is the first line); its scanner errors count
// from 1.
func yamlSyntaxError(file string, err error) error {
	m := yamlLine.FindStringSubmatch(err.Error())
	if m == nil {
		return &ConfigError{File: file, Err: err}
	}
	line, _ := strconv.Atoi(m[1])
	msg := m[2]
	if strings.HasPrefix(msg, "did not find expected") {
		line++
	}
	return &ConfigError{File: file, Line: line, Err: errors.New(msg)}
}

// ParseConfig validates the YAML in raw; file names it in errors.
func ParseConfig(file string, raw []byte) (*Config, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, yamlSyntaxError(file, err)
	}
	p := parser{file: file}
	c := &Config{
		File: file, Storage: "sqlite:///sweeps.db", OutputDir: "runs", Trainer: "builtin", Trials: 32,
		Direction: storage.Maximize, Sampler: SamplerConfig{Name: "tpe", Kwargs: map[string]any{}},
		Pruner: PrunerConfig{Name: "none"}, Training: map[string]any{}, Parallel: 1, Pack: 1, Device: "auto", MaxRetries: 1, MaxFailures: 5,
		HeartbeatInterval: 10 * time.Second, KillGrace: 10 * time.Second, StallTimeout: -1,
		StorageRetry: DefaultStorageRetry,
	}
	if len(doc.Content) == 0 {
		return nil, &ConfigError{File: file, Err: errors.New("empty file")}
	}
	root := doc.Content[0]
	seen := map[string]bool{}
	parseKey := func(key string, v *yaml.Node, path string) error {
		seen[key] = true
		var err error
		switch key {
		case "storage":
			c.Storage, err = p.str(v, path)
			c.StorageNamed = err == nil
		case "model":
			c.Model, err = p.str(v, path)
		case "data_dir":
			c.DataDir, err = p.str(v, path)
		case "output_dir":
			if c.OutputDir, err = p.str(v, path); err == nil && strings.TrimSpace(c.OutputDir) == "" {
				return p.errf(v, path, "empty: name a folder for the trials' files (the default is runs)")
			}
		case "trainer":
			c.Trainer, err = p.oneOf(v, path, "builtin", "synthetic")
		case "datasets":
			c.Datasets, err = p.strList(v, path)
			if err == nil && len(c.Datasets) == 0 {
				return p.errf(v, path, "empty: name at least one of %s", strings.Join(knownDatasets(), ", "))
			}
			for i, d := range c.Datasets {
				if !contains(knownDatasets(), d) {
					return p.errf(v.Content[i], fmt.Sprintf("%s[%d]", path, i), "unknown dataset %q (known: %s)", d, strings.Join(knownDatasets(), ", "))
				}
				if j := slices.Index(c.Datasets, d); j < i {
					return p.errf(v.Content[i], fmt.Sprintf("%s[%d]", path, i), "%s is listed twice (also at %s[%d])", d, path, j)
				}
			}
		case "methods":
			if c.Methods, err = p.methods(v, path); err == nil && len(c.Methods) == 0 {
				return p.errf(v, path, "empty: name at least one method (known: %s)", strings.Join(knownMethods(), ", "))
			}
		case "search":
			c.Space, err = p.space(v, path)
		case "trials":
			c.Trials, err = p.positive(v, path)
		case "direction":
			var d string
			if d, err = p.oneOf(v, path, "maximize", "minimize"); err == nil {
				c.Direction, _ = storage.ParseDirection(d)
			}
		case "sampler":
			c.Sampler, err = p.sampler(v, path)
		case "pruner":
			c.Pruner, err = p.pruner(v, path)
		case "training":
			c.Training, err = p.anyMap(v, path)
			c.TrainingLines = map[string]int{}
			for j := 0; j+1 < len(v.Content); j += 2 {
				c.TrainingLines[v.Content[j].Value] = v.Content[j].Line
			}
		case "parallel":
			c.Parallel, err = p.positive(v, path)
		case "pack":
			c.Pack, err = p.positive(v, path)
		case "device":
			c.Device, err = p.oneOf(v, path, "auto", "cpu", "cuda")
		case "gpus":
			var ids []string
			if ids, err = p.strList(v, path); err == nil {
				c.GPUs = ids
			}
		case "max_retries":
			c.MaxRetries, err = p.nonNegative(v, path)
		case "max_failures":
			c.MaxFailures, err = p.positive(v, path)
		case "heartbeat_interval":
			c.HeartbeatInterval, err = p.duration(v, path)
		case "heartbeat_grace":
			c.HeartbeatGrace, err = p.duration(v, path)
		case "kill_grace":
			c.KillGrace, err = p.duration(v, path)
		case "storage_retry":
			if v.Value == "none" {
				// none is "no limit" for trial_timeout; here it would mean
				// giving up at once, the opposite.
				err = p.errf(v, path, "none: give a duration such as 10m, or 0 to give up after a few seconds")
				break
			}
			c.StorageRetry, err = p.durationOrZero(v, path)
		case "trial_timeout":
			c.TrialTimeout, err = p.durationOrZero(v, path)
		case "stall_timeout":
			c.StallTimeout, err = p.durationOrZero(v, path)
		case "trial_memory_gb":
			if v.Kind == yaml.ScalarNode && v.Value == "none" {
				break // no limit, the default, as trial_timeout: none
			}
			c.TrialMemoryGB, err = p.nonNegativeFloat(v, path)
		case "command":
			c.Command, err = p.strList(v, path)
			if err == nil && len(c.Command) == 0 {
				err = p.errf(v, path, "must name a program")
			}
		default:
			return p.errf(v, path, "unknown key (known: storage, model, data_dir, output_dir, trainer, datasets, methods, search, trials, direction, sampler, pruner, training, parallel, pack, device, gpus, max_retries, max_failures, heartbeat_interval, heartbeat_grace, kill_grace, storage_retry, trial_timeout, stall_timeout, trial_memory_gb, command)")
		}
		return err
	}
	// Every top-level key is checked, and every mistake reported at once,
	// in file order: a user fixes them in one pass, not one run each.
	var problems []error
	err := p.each(root, "", func(key string, v *yaml.Node, path string) error {
		if err := parseKey(key, v, path); err != nil {
			problems = append(problems, err)
		}
		return nil
	})
	if err != nil {
		problems = append(problems, err)
	}
	for _, need := range []string{"datasets", "methods", "search"} {
		if !seen[need] {
			problems = append(problems, &ConfigError{File: file, Line: root.Line, Field: need, Err: errors.New("missing (required)")})
		}
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	if _, ok := c.Space["lr"]; !ok && c.Trainer == "synthetic" {
		return nil, &ConfigError{File: file, Field: "search.lr", Err: errors.New("the synthetic trainer needs an lr parameter")}
	}
	if err := c.checkCommand(root); err != nil {
		return nil, err
	}
	if c.HeartbeatGrace == 0 {
		// Long enough that a node suspended for half a minute (scontrol
		// suspend, a hypervisor pause) comes back to live trials.
		c.HeartbeatGrace = max(2*c.HeartbeatInterval, DefaultHeartbeatGrace)
	}
	if c.StallTimeout < 0 { // not set
		c.StallTimeout = 0
		if len(c.Command) == 0 {
			c.StallTimeout = DefaultStallTimeout
		}
	}
	if c.Pack > c.MaxFailures && !seen["max_failures"] {
		// A study starts at most its remaining failures at once, which
		// would cap every pack at the default 5.
		c.MaxFailures = c.Pack
	}
	if c.Pack > 1 && (len(c.Command) > 0 || c.Trainer == "synthetic") {
		return nil, &ConfigError{File: file, Field: "pack", Err: errors.New("packs trials of the built-in trainer only (remove command: or trainer: synthetic, or set pack: 1)")}
	}
	if c.TrialMemoryGB > 0 && c.Device != "cpu" {
		// A CUDA context reserves far more address space than it uses, so
		// the limit would fail GPU trials for nothing.
		return nil, &ConfigError{File: file, Field: "trial_memory_gb", Err: fmt.Errorf("limits CPU trials only: set device: cpu (device is %s)", c.Device)}
	}
	if c.HeartbeatGrace <= c.HeartbeatInterval {
		return nil, &ConfigError{File: file, Field: "heartbeat_grace", Err: fmt.Errorf("%v must exceed heartbeat_interval %v", c.HeartbeatGrace, c.HeartbeatInterval)}
	}
	if seeds, ok := c.Training["seeds"].([]any); ok && len(seeds) > 0 {
		if s, ok := seeds[0].(int); ok {
			c.Seed = int64(s)
		}
	} else if s, ok := c.Training["seed"].(int); ok {
		c.Seed = int64(s)
	}
	return c, nil
}

// checkCommand rejects placeholders in the command template that some
// trial could not fill: each must be a fixed name, a search parameter, or a
// setting of every architecture candidate.
func (c *Config) checkCommand(root *yaml.Node) error {
	line := 0
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "command" {
			line = root.Content[i+1].Line
		}
	}
	for i, arg := range c.Command {
		for _, m := range placeholder.FindAllString(arg, -1) {
			name := m[1 : len(m)-1]
			if contains(fixedPlaceholders, name) {
				continue
			}
			if _, ok := c.Space[name]; ok {
				continue
			}
			everywhere := len(c.Methods) > 0
			for _, meth := range c.Methods {
				for _, a := range meth.Archs {
					if _, ok := a.Settings[name]; !ok {
						everywhere = false
					}
				}
			}
			if !everywhere {
				return &ConfigError{File: c.File, Line: line, Field: fmt.Sprintf("command[%d]", i),
					Err: fmt.Errorf("placeholder %s is not a search parameter, a setting of every candidate, or one of %s", m, strings.Join(fixedPlaceholders, ", "))}
			}
		}
	}
	return nil
}

// CheckArchs lets a caller that knows the methods validate every planned
// candidate's settings; errors come back with the candidate's line.
func (c *Config) CheckArchs(plan []Planned, check func(method string, settings map[string]any) error) error {
	seen := map[string]bool{}
	for _, p := range plan {
		key := p.Method + "/" + p.Arch.Name
		if seen[key] {
			continue
		}
		seen[key] = true
		if err := check(p.Method, p.Arch.Settings); err != nil {
			return &ConfigError{File: c.File, Line: p.Arch.Line, Field: p.Arch.Field, Err: err}
		}
	}
	return nil
}

// ReportsSteps reports whether trials validate every few optimiser steps
// (training.eval_steps), so that their intermediate values are at steps,
// not epochs.
func (c *Config) ReportsSteps() bool {
	n, ok := c.Training["eval_steps"]
	return ok && n != 0
}

// ReportUnit is ReportsSteps as the unit a study records (AttrReportUnit).
func (c *Config) ReportUnit() string {
	if c.ReportsSteps() {
		return UnitStep
	}
	return UnitEpoch
}

// CheckTraining lets a caller that knows the trainer validate the
// training settings before any trial runs: each key alone, in file order,
// so an error names its line (every wrong key at once), then all together.
func (c *Config) CheckTraining(check func(settings map[string]any) error) error {
	keys := slices.SortedFunc(maps.Keys(c.Training), func(a, b string) int {
		return cmp.Or(cmp.Compare(c.TrainingLines[a], c.TrainingLines[b]), strings.Compare(a, b))
	})
	var errs []error
	for _, k := range keys {
		if err := check(map[string]any{k: c.Training[k]}); err != nil {
			errs = append(errs, &ConfigError{File: c.File, Line: c.TrainingLines[k], Field: "training." + k, Err: err})
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := check(c.Training); err != nil {
		return &ConfigError{File: c.File, Field: "training", Err: err}
	}
	return nil
}

// parser walks yaml nodes, producing ConfigErrors with line numbers.
type parser struct{ file string }

func (p parser) errf(n *yaml.Node, path, format string, args ...any) error {
	return &ConfigError{File: p.file, Line: n.Line, Field: path, Err: fmt.Errorf(format, args...)}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// each calls fn for every key of mapping n, in file order, and returns
// every key's mistake at once: a block with two wrong settings says so in
// one run, not one run each.
func (p parser) each(n *yaml.Node, path string, fn func(key string, v *yaml.Node, path string) error) error {
	if n.Kind != yaml.MappingNode {
		return p.errf(n, path, "want a mapping (key: value lines)")
	}
	seen := map[string]bool{}
	var errs []error
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if seen[k.Value] {
			errs = append(errs, p.errf(k, join(path, k.Value), "duplicate key"))
			continue
		}
		seen[k.Value] = true
		if err := fn(k.Value, v, join(path, k.Value)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (p parser) scalar(n *yaml.Node, path string) (any, error) {
	if n.Kind != yaml.ScalarNode {
		return nil, p.errf(n, path, "want a single value")
	}
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, p.errf(n, path, "%v", err)
	}
	return v, nil
}

func (p parser) str(n *yaml.Node, path string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return "", p.errf(n, path, "want a string, got %s", describe(n))
	}
	return n.Value, nil
}

func (p parser) oneOf(n *yaml.Node, path string, choices ...string) (string, error) {
	s, err := p.str(n, path)
	if err != nil {
		return "", err
	}
	if !contains(choices, s) {
		return "", p.errf(n, path, "%q is not one of %s", s, strings.Join(choices, ", "))
	}
	return s, nil
}

func (p parser) integer(n *yaml.Node, path string) (int, error) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
		return 0, p.errf(n, path, "want an integer, got %s", describe(n))
	}
	var v int
	if err := n.Decode(&v); err != nil {
		return 0, p.errf(n, path, "%v", err)
	}
	return v, nil
}

// describe names what a node holds, for "want X, got Y" errors.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	}
	return strconv.Quote(n.Value)
}

func (p parser) positive(n *yaml.Node, path string) (int, error) {
	v, err := p.integer(n, path)
	if err == nil && v < 1 {
		err = p.errf(n, path, "must be at least 1, got %d", v)
	}
	return v, err
}

func (p parser) nonNegative(n *yaml.Node, path string) (int, error) {
	v, err := p.integer(n, path)
	if err == nil && v < 0 {
		err = p.errf(n, path, "must not be negative, got %d", v)
	}
	return v, err
}

func (p parser) number(n *yaml.Node, path string) (float64, error) {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!float") {
		f, err := strconv.ParseFloat(n.Value, 64)
		if err == nil && n.Kind == yaml.ScalarNode && n.Tag == "!!str" && n.Style == 0 {
			return f, nil // 1e-6 without a dot: plainly meant as a number
		}
		hint := ""
		if err == nil && n.Kind == yaml.ScalarNode {
			hint = " (a number in quotes is a string; write it without them)"
		}
		return 0, p.errf(n, path, "want a number, got %s%s", describe(n), hint)
	}
	var v float64
	if err := n.Decode(&v); err != nil {
		return 0, p.errf(n, path, "%v", err)
	}
	return v, nil
}

func (p parser) boolean(n *yaml.Node, path string) (bool, error) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" {
		return false, p.errf(n, path, "want true or false, got %q", n.Value)
	}
	return n.Value == "true", nil
}

func (p parser) duration(n *yaml.Node, path string) (time.Duration, error) {
	if n.Kind == yaml.ScalarNode && (n.Tag == "!!int" || n.Tag == "!!float") {
		f, err := p.number(n, path)
		if err != nil || !(f > 0) {
			return 0, p.errf(n, path, "want a positive duration such as 10s or 1.5")
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(n.Value)
	if err != nil || d <= 0 {
		return 0, p.errf(n, path, "want a positive duration such as 10s, 500ms or 2m, got %q", n.Value)
	}
	return d, nil
}

// durationOrZero is a duration, or 0 / none / off for no limit.
func (p parser) durationOrZero(n *yaml.Node, path string) (time.Duration, error) {
	if n.Kind == yaml.ScalarNode && (n.Value == "0" || n.Value == "none" || n.Value == "off") {
		return 0, nil
	}
	return p.duration(n, path)
}

func (p parser) nonNegativeFloat(n *yaml.Node, path string) (float64, error) {
	v, err := p.number(n, path)
	if err == nil && !(v >= 0) {
		err = p.errf(n, path, "must not be negative, got %v", v)
	}
	return v, err
}

func (p parser) strList(n *yaml.Node, path string) ([]string, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, p.errf(n, path, "want a list")
	}
	out := make([]string, len(n.Content))
	for i, c := range n.Content {
		if c.Kind != yaml.ScalarNode {
			return nil, p.errf(c, fmt.Sprintf("%s[%d]", path, i), "want a single value")
		}
		out[i] = c.Value
	}
	return out, nil
}

func (p parser) anyMap(n *yaml.Node, path string) (map[string]any, error) {
	if n.Kind != yaml.MappingNode {
		return nil, p.errf(n, path, "want a mapping")
	}
	var m map[string]any
	if err := n.Decode(&m); err != nil {
		return nil, p.errf(n, path, "%v", err)
	}
	return m, nil
}

func (p parser) methods(n *yaml.Node, path string) ([]Method, error) {
	var out []Method
	err := p.each(n, path, func(name string, v *yaml.Node, path string) error {
		if !contains(knownMethods(), name) {
			return p.errf(v, path, "unknown method %q (known: %s)", name, strings.Join(knownMethods(), ", "))
		}
		m := Method{Name: name}
		if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
			return p.errf(v, path, "want a list of architecture candidates, e.g. [{rank: 8}, {rank: 32}] or [{}]")
		}
		names := map[string]bool{}
		var errs []error
		for i, c := range v.Content {
			ipath := fmt.Sprintf("%s[%d]", path, i)
			a := Arch{Settings: map[string]any{}, Line: c.Line, Field: ipath}
			err := p.each(c, ipath, func(key string, sv *yaml.Node, kpath string) error {
				val, err := p.scalar(sv, kpath)
				if err != nil {
					return err
				}
				if key == "name" {
					s, ok := val.(string)
					if !ok || !validName(s) {
						return p.errf(sv, kpath, "want a name of letters, digits, '-', '_' or '.'")
					}
					a.Name = s
					return nil
				}
				a.Settings[key] = val
				a.keys = append(a.keys, key)
				return nil
			})
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if a.Name == "" {
				a.Name = a.defaultName()
			}
			if names[a.Name] {
				errs = append(errs, p.errf(c, ipath, "two candidates are both named %q; give one a name: key", a.Name))
				continue
			}
			names[a.Name] = true
			m.Archs = append(m.Archs, a)
		}
		out = append(out, m)
		return errors.Join(errs...)
	})
	return out, err
}

// defaultName joins the settings' values in file order ({cell: gru,
// hidden: 256} → gru-256), prefixed by the first key when no value is a
// word ({rank: 8} → rank-8).
func (a Arch) defaultName() string {
	if len(a.keys) == 0 {
		return "default"
	}
	var parts []string
	word := false
	for _, k := range a.keys {
		s := fmt.Sprint(a.Settings[k])
		if _, ok := a.Settings[k].(string); ok {
			word = true
		}
		parts = append(parts, s)
	}
	if !word {
		parts = append([]string{a.keys[0]}, parts...)
	}
	name := strings.Join(parts, "-")
	// Generated names keep to ASCII, as they always have: a study's name
	// must not change under a sweep that resumes it.
	return strings.Map(func(r rune) rune {
		if r < utf8.RuneSelf && nameRune(r) {
			return r
		}
		return '_'
	}, name)
}

// validName: a candidate's name: letters (any script), digits, '-', '_'
// and '.', which every file system and URL path takes.
func validName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !nameRune(r) {
			return false
		}
	}
	return true
}

func nameRune(r rune) bool {
	return r == '-' || r == '_' || r == '.' || unicode.IsLetter(r) || unicode.IsDigit(r)
}

func (p parser) space(n *yaml.Node, path string) (map[string]storage.Distribution, error) {
	out := map[string]storage.Distribution{}
	err := p.each(n, path, func(name string, v *yaml.Node, path string) error {
		d := storage.Distribution{Kind: storage.FloatDist}
		var hasLow, hasHigh, isInt bool
		var choices *yaml.Node
		err := p.each(v, path, func(key string, kv *yaml.Node, kpath string) error {
			var err error
			switch key {
			case "low":
				d.Low, err = p.number(kv, kpath)
				hasLow = true
			case "high":
				d.High, err = p.number(kv, kpath)
				hasHigh = true
			case "log":
				d.Log, err = p.boolean(kv, kpath)
			case "step":
				d.Step, err = p.number(kv, kpath)
				if err == nil && !(d.Step > 0) {
					err = p.errf(kv, kpath, "must be positive")
				}
			case "type":
				var t string
				t, err = p.oneOf(kv, kpath, "float", "int", "categorical")
				isInt = t == "int"
			case "choices":
				choices = kv
			default:
				err = p.errf(kv, kpath, "unknown key (known: low, high, log, step, type, choices)")
			}
			return err
		})
		if err != nil {
			return err
		}
		if choices != nil {
			var c []any
			if choices.Kind != yaml.SequenceNode || choices.Decode(&c) != nil || len(c) == 0 {
				return p.errf(choices, path+".choices", "want a non-empty list of values")
			}
			out[name] = storage.Distribution{Kind: storage.CategoricalDist, Choices: c}
			return nil
		}
		if !hasLow || !hasHigh {
			return p.errf(v, path, "needs low and high, e.g. {low: 1.0e-6, high: 3.0e-3, log: true}")
		}
		if !(d.Low < d.High) {
			return p.errf(v, path, "low (%g) must be below high (%g)", d.Low, d.High)
		}
		if d.Log && d.Low <= 0 {
			return p.errf(v, path+".low", "log scale needs low > 0, got %g", d.Low)
		}
		if isInt {
			d.Kind = storage.IntDist
			if d.Step == 0 {
				d.Step = 1
			}
		}
		if err := d.Validate(); err != nil {
			return p.errf(v, path, "%v", err)
		}
		out[name] = d
		return nil
	})
	if err == nil && len(out) == 0 {
		err = p.errf(n, path, "needs at least one parameter, e.g. lr: {low: 1.0e-6, high: 3.0e-3, log: true}")
	}
	return out, err
}

func (p parser) sampler(n *yaml.Node, path string) (SamplerConfig, error) {
	s := SamplerConfig{Name: "tpe", Kwargs: map[string]any{}}
	err := p.each(n, path, func(key string, v *yaml.Node, kpath string) error {
		if key == "name" {
			var err error
			s.Name, err = p.oneOf(v, kpath, "tpe", "random")
			return err
		}
		val, err := p.scalar(v, kpath)
		if err != nil {
			return err
		}
		if i, ok := val.(int); ok {
			val = float64(i)
		}
		s.Kwargs[key] = val
		return nil
	})
	if err != nil {
		return s, err
	}
	if _, err := NewSampler(s); err != nil {
		return s, &ConfigError{File: p.file, Line: n.Line, Field: path, Err: err}
	}
	return s, nil
}

func (p parser) pruner(n *yaml.Node, path string) (PrunerConfig, error) {
	pc := PrunerConfig{Name: "none", NStartupTrials: 5, IntervalSteps: 1}
	var seen []string
	var minResourceNode *yaml.Node
	err := p.each(n, path, func(key string, v *yaml.Node, kpath string) error {
		var err error
		seen = append(seen, key)
		switch key {
		case "name":
			pc.Name, err = p.oneOf(v, kpath, "none", "median", "asha", "hyperband")
		case "n_startup_trials":
			pc.NStartupTrials, err = p.nonNegative(v, kpath)
		case "n_warmup_steps":
			pc.NWarmupSteps, err = p.nonNegative(v, kpath)
		case "interval_steps":
			pc.IntervalSteps, err = p.positive(v, kpath)
		case "min_resource":
			minResourceNode = v
			if v.Value == "auto" {
				pc.MinResource = 0
			} else {
				pc.MinResource, err = p.positive(v, kpath)
			}
		case "max_resource":
			if v.Value == "auto" {
				pc.MaxResource = 0
			} else {
				pc.MaxResource, err = p.positive(v, kpath)
			}
		case "reduction_factor":
			if pc.ReductionFactor, err = p.integer(v, kpath); err == nil && pc.ReductionFactor < 2 {
				err = p.errf(v, kpath, "must be at least 2, got %d", pc.ReductionFactor)
			}
		case "min_early_stopping_rate":
			pc.MinEarlyStoppingRate, err = p.nonNegative(v, kpath)
		case "bootstrap_count":
			pc.BootstrapCount, err = p.nonNegative(v, kpath)
		default:
			err = p.errf(v, kpath, "unknown key (known: name; median: n_startup_trials, n_warmup_steps, interval_steps; "+
				"asha: min_resource, reduction_factor, min_early_stopping_rate, bootstrap_count; "+
				"hyperband: min_resource, max_resource, reduction_factor, bootstrap_count)")
		}
		return err
	})
	if err != nil {
		return pc, err
	}
	options := map[string][]string{
		"median":    {"n_startup_trials", "n_warmup_steps", "interval_steps"},
		"asha":      {"min_resource", "reduction_factor", "min_early_stopping_rate", "bootstrap_count"},
		"hyperband": {"min_resource", "max_resource", "reduction_factor", "bootstrap_count"},
	}
	for _, key := range seen {
		if key != "name" && !contains(options[pc.Name], key) {
			return pc, p.errf(n, path+"."+key, "is not an option of the %s pruner", pc.Name)
		}
	}
	switch pc.Name {
	case "asha":
		if pc.ReductionFactor == 0 {
			pc.ReductionFactor = 4
		}
		if pc.BootstrapCount > 0 && pc.MinResource == 0 {
			return pc, p.errf(n, path+".bootstrap_count", "needs a min_resource (Optuna refuses bootstrap_count with min_resource auto)")
		}
	case "hyperband":
		if pc.ReductionFactor == 0 {
			pc.ReductionFactor = 3
		}
		if minResourceNode == nil {
			pc.MinResource = 1
		} else if pc.MinResource == 0 {
			return pc, p.errf(minResourceNode, path+".min_resource", "hyperband needs a number of steps (auto is the asha pruner's)")
		}
		if pc.BootstrapCount > 0 && pc.MaxResource == 0 {
			return pc, p.errf(n, path+".bootstrap_count", "needs a max_resource (Optuna refuses bootstrap_count with max_resource auto)")
		}
		if pc.MaxResource > 0 && pc.MaxResource < pc.MinResource {
			return pc, p.errf(n, path+".max_resource", "%d is below min_resource %d: no bracket would fit", pc.MaxResource, pc.MinResource)
		}
	}
	return pc, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
