package sweep

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/readsweep/readsweep/methods/all"
	"github.com/readsweep/readsweep/sweep/storage"
)

const goodConfig = `storage: sqlite:///x.db
datasets: [sst2, rte]
methods:
  read:
    - {cell: gru, hidden: 256}
    - {cell: lstm, hidden: 128, name: small}
  lora:
    - {rank: 8}
  full: [{}]
search:
  lr: {low: 1e-6, high: 3.0e-3, log: true}
  layers: {low: 1, high: 4, type: int}
  act: {choices: [relu, gelu]}
trials: 16
sampler: {name: tpe, seed: 3, n_startup_trials: 5}
pruner: {name: median, n_warmup_steps: 2}
training: {max_epochs: 5, seeds: [7, 8]}
heartbeat_interval: 2s
device: cuda
`

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig("sweeps.yaml", []byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	if c.Trials != 16 || c.Seed != 7 || c.Device != "cuda" || c.HeartbeatGrace != DefaultHeartbeatGrace || c.StorageRetry != DefaultStorageRetry || c.Pruner.NWarmupSteps != 2 {
		t.Errorf("parsed %+v", c)
	}
	if d := c.Space["lr"]; d.Low != 1e-6 || d.High != 3e-3 || !d.Log {
		t.Errorf("lr = %+v", d)
	}
	if d := c.Space["layers"]; d.Kind != storage.IntDist || d.Step != 1 {
		t.Errorf("layers = %+v", d)
	}
	var names []string
	for _, p := range Plan(c, nil) {
		names = append(names, p.Name)
	}
	want := "read/gru-256/sst2 read/gru-256/rte read/small/sst2 read/small/rte lora/rank-8/sst2 lora/rank-8/rte full/default/sst2 full/default/rte"
	if strings.Join(names, " ") != want {
		t.Errorf("plan:\n%s\nwant\n%s", strings.Join(names, " "), want)
	}
	f, err := ParseFilter("method=read,dataset=rte")
	if err != nil {
		t.Fatal(err)
	}
	if got := Plan(c, f); len(got) != 2 || got[0].Name != "read/gru-256/rte" {
		t.Errorf("filtered plan = %v", got)
	}
}

// TestConfigErrors checks that each mistake is reported with its line and
// key path.
func TestConfigErrors(t *testing.T) {
	base := "datasets: [sst2]\nmethods:\n  read: [{cell: gru}]\nsearch:\n  lr: {low: 1.0e-6, high: 3.0e-3, log: true}\n"
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown top key", base + "trails: 32\n", "sweeps.yaml:6: trails: unknown key"},
		{"wrong type", base + "trials: many\n", "sweeps.yaml:6: trials: want an integer"},
		{"low above high", "datasets: [sst2]\nmethods:\n  read: [{}]\nsearch:\n  lr: {low: 0.1, high: 0.01}\n", "sweeps.yaml:5: search.lr: low (0.1) must be below high (0.01)"},
		{"log needs positive", "datasets: [sst2]\nmethods:\n  read: [{}]\nsearch:\n  lr: {low: 0.0, high: 0.01, log: true}\n", "sweeps.yaml:5: search.lr.low: log scale needs low > 0"},
		{"unknown method", "datasets: [sst2]\nmethods:\n  reed: [{}]\nsearch:\n  lr: {low: 0.1, high: 1.0}\n", "sweeps.yaml:3: methods.reed: unknown method \"reed\""},
		{"unknown dataset", "datasets: [sst2, glue]\nmethods:\n  read: [{}]\nsearch:\n  lr: {low: 0.1, high: 1.0}\n", "sweeps.yaml:1: datasets[1]: unknown dataset \"glue\""},
		{"pack as a list", "datasets: [sst2]\nmethods:\n  read: [{}]\nsearch:\n  lr: {low: 0.1, high: 1.0}\npack: [2]\n", "sweeps.yaml:6: pack: want an integer, got a list"},
		{"a word for a number", "datasets: [sst2]\nmethods:\n  read: [{}]\nsearch:\n  lr: {low: 0.1, high: 1.0}\ntrial_memory_gb: lots\n", "sweeps.yaml:6: trial_memory_gb: want a number, got \"lots\""},
		{"a quoted number", "datasets: [sst2]\nmethods:\n  read: [{}]\nsearch:\n  lr: {low: 0.1, high: 1.0}\ntrial_memory_gb: \"2e0\"\n", "sweeps.yaml:6: trial_memory_gb: want a number, got \"2e0\" (a number in quotes is a string; write it without them)"},
		{"no datasets", "datasets: []\nmethods:\n  read: [{}]\nsearch:\n  lr: {low: 0.1, high: 1.0}\n", "sweeps.yaml:1: datasets: empty: name at least one of"},
		{"a dataset twice", "datasets: [rte, sst2, rte]\nmethods:\n  read: [{}]\nsearch:\n  lr: {low: 0.1, high: 1.0}\n", "sweeps.yaml:1: datasets[2]: rte is listed twice (also at datasets[0])"},
		{"no methods", "datasets: [sst2]\nmethods: {}\nsearch:\n  lr: {low: 0.1, high: 1.0}\n", "sweeps.yaml:2: methods: empty: name at least one method"},
		{"blank output_dir", "output_dir: \"  \"\ndatasets: [sst2]\nmethods:\n  read: [{}]\nsearch:\n  lr: {low: 0.1, high: 1.0}\n", "sweeps.yaml:1: output_dir: empty: name a folder"},
		{"output_dir as a list", "output_dir: []\ndatasets: [sst2]\nmethods:\n  read: [{}]\nsearch:\n  lr: {low: 0.1, high: 1.0}\n", "sweeps.yaml:1: output_dir: want a string, got a list"},
		{"empty output_dir", "output_dir: \"\"\ndatasets: [sst2]\nmethods:\n  read: [{}]\nsearch:\n  lr: {low: 0.1, high: 1.0}\n", "sweeps.yaml:1: output_dir: empty: name a folder"},
		{"unknown space key", "datasets: [sst2]\nmethods:\n  read: [{}]\nsearch:\n  lr: {low: 0.1, high: 1.0, scale: log}\n", "sweeps.yaml:5: search.lr.scale: unknown key"},
		{"arch not a list", "datasets: [sst2]\nmethods:\n  lora: {rank: 8}\nsearch:\n  lr: {low: 0.1, high: 1.0}\n", "sweeps.yaml:3: methods.lora: want a list"},
		{"nested arch value", "datasets: [sst2]\nmethods:\n  lora:\n    - {rank: [8]}\nsearch:\n  lr: {low: 0.1, high: 1.0}\n", "sweeps.yaml:4: methods.lora[0].rank: want a single value"},
		{"duplicate arch names", "datasets: [sst2]\nmethods:\n  lora:\n    - {rank: 8}\n    - {rank: 8}\nsearch:\n  lr: {low: 0.1, high: 1.0}\n", "sweeps.yaml:5: methods.lora[1]: two candidates are both named \"rank-8\""},
		{"missing search", "datasets: [sst2]\nmethods:\n  read: [{}]\n", "search: missing"},
		{"bad sampler option", base + "sampler: {name: tpe, n_startup: 3}\n", "sweeps.yaml:6: sampler: tpe: unknown sampler option \"n_startup\""},
		{"bad pruner", base + "pruner: {name: wilcoxon}\n", "sweeps.yaml:6: pruner.name: \"wilcoxon\" is not one of none, median, asha, hyperband"},
		{"bad device", base + "device: gpu\n", "sweeps.yaml:6: device: \"gpu\" is not one of auto, cpu, cuda"},
		{"bad duration", base + "heartbeat_interval: soon\n", "sweeps.yaml:6: heartbeat_interval: want a positive duration"},
		{"duplicate key", base + "trials: 3\ntrials: 4\n", "sweeps.yaml:7: trials: duplicate key"},
		{"asha option on median", base + "pruner: {name: median, reduction_factor: 3}\n", "sweeps.yaml:6: pruner.reduction_factor: is not an option of the median pruner"},
		{"asha eta below 2", base + "pruner: {name: asha, reduction_factor: 1}\n", "sweeps.yaml:6: pruner.reduction_factor: must be at least 2"},
		{"asha bootstrap with auto", base + "pruner: {name: asha, bootstrap_count: 2}\n", "pruner.bootstrap_count: needs a min_resource"},
		{"hyperband min_resource auto", base + "pruner:\n  name: hyperband\n  min_resource: auto\n", "sweeps.yaml:8: pruner.min_resource: hyperband needs a number of steps"},
		{"hyperband bootstrap with auto", base + "pruner: {name: hyperband, bootstrap_count: 2}\n", "pruner.bootstrap_count: needs a max_resource"},
		{"hyperband max below min", base + "pruner: {name: hyperband, min_resource: 4, max_resource: 3}\n", "pruner.max_resource: 3 is below min_resource 4"},
		{"asha option on hyperband", base + "pruner: {name: hyperband, min_early_stopping_rate: 1}\n", "pruner.min_early_stopping_rate: is not an option of the hyperband pruner"},
		{"hyperband option on asha", base + "pruner: {name: asha, max_resource: 9}\n", "pruner.max_resource: is not an option of the asha pruner"},
		{"bad stall timeout", base + "stall_timeout: -5m\n", "sweeps.yaml:6: stall_timeout: want a positive duration"},
		{"negative memory", base + "device: cpu\ntrial_memory_gb: -1\n", "sweeps.yaml:7: trial_memory_gb: must not be negative"},
		{"memory limit on a GPU", base + "trial_memory_gb: 8\n", "trial_memory_gb: limits CPU trials only: set device: cpu (device is auto)"},
		{"unknown placeholder", base + "command: [python3, train.py, --lr, \"{lr}\", --rank, \"{rank}\"]\n", "sweeps.yaml:6: command[5]: placeholder {rank} is not"},
		{"pack zero", base + "pack: 0\n", "sweeps.yaml:6: pack: must be"},
		{"pack with a command", base + "pack: 4\ncommand: [python3, train.py]\n", "pack: packs trials of the built-in trainer only"},
		{"pack with the synthetic trainer", base + "pack: 4\ntrainer: synthetic\n", "pack: packs trials of the built-in trainer only"},
		{"yaml syntax", "datasets: [sst2\n", "sweeps.yaml:2: did not find expected ',' or ']'"},
		{"yaml syntax, later line", "datasets: [sst2]\nmethods:\n  lora: [{rank: 8}\nsearch:\n  lr: {low: 0.1, high: 1.0}\n", "sweeps.yaml:3: did not find expected ',' or ']'"},
		{"yaml scanner error", "datasets: [sst2]\nmethods:\n\tlora: 1\n", "sweeps.yaml:3: found character that cannot start any token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig("sweeps.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error\n  %v\nwant it to contain\n  %s", err, tc.want)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Errorf("error %T is not a *ConfigError", err)
			}
		})
	}
}

// TestPrunerDefaults: each pruner gets Optuna's defaults for the options a
// sweep file leaves out (η 4 for asha, 3 for hyperband; hyperband's
// min_resource 1 and max_resource auto), and takes the ones it sets.
func TestPrunerDefaults(t *testing.T) {
	base := "datasets: [sst2]\nmethods:\n  read: [{}]\nsearch:\n  lr: {low: 1.0e-6, high: 3.0e-3, log: true}\n"
	tests := []struct {
		pruner string
		want   PrunerConfig
	}{
		{"{name: asha}", PrunerConfig{Name: "asha", ReductionFactor: 4}},
		{"{name: asha, min_resource: 2, reduction_factor: 3, min_early_stopping_rate: 1, bootstrap_count: 1}",
			PrunerConfig{Name: "asha", MinResource: 2, ReductionFactor: 3, MinEarlyStoppingRate: 1, BootstrapCount: 1}},
		{"{name: hyperband}", PrunerConfig{Name: "hyperband", MinResource: 1, ReductionFactor: 3}},
		{"{name: hyperband, min_resource: 5, max_resource: 45, reduction_factor: 3, bootstrap_count: 2}",
			PrunerConfig{Name: "hyperband", MinResource: 5, MaxResource: 45, ReductionFactor: 3, BootstrapCount: 2}},
		{"{name: hyperband, max_resource: auto}", PrunerConfig{Name: "hyperband", MinResource: 1, ReductionFactor: 3}},
	}
	for _, tc := range tests {
		c, err := ParseConfig("sweeps.yaml", []byte(base+"pruner: "+tc.pruner+"\n"))
		if err != nil {
			t.Fatalf("%s: %v", tc.pruner, err)
		}
		tc.want.NStartupTrials, tc.want.IntervalSteps = 5, 1
		if c.Pruner != tc.want {
			t.Errorf("pruner: %s parsed as %+v, want %+v", tc.pruner, c.Pruner, tc.want)
		}
	}
}

func TestShippedConfigsParse(t *testing.T) {
	for _, path := range []string{"../sweeps.yaml", "../examples/synthetic.yaml"} {
		c, err := LoadConfig(path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if path == "../sweeps.yaml" {
			if n := len(Plan(c, nil)); n != 17*7 {
				t.Errorf("paper sweep plans %d studies, want 17 candidates × 7 datasets = 119", n)
			}
			if d := c.Space["lr"]; d.Low != 1e-6 || d.High != 3e-3 || !d.Log || c.Trials != 32 || c.Trainer != "builtin" {
				t.Errorf("paper sweep: lr %+v, trials %d, trainer %s", d, c.Trials, c.Trainer)
			}
		}
	}
}

// TestWatchdogDefaults: built-in trials get the generous stall limit, an
// external command none unless the file sets one, and 0/none turn a limit off.
func TestWatchdogDefaults(t *testing.T) {
	base := "datasets: [sst2]\nmethods:\n  read: [{cell: gru}]\nsearch:\n  lr: {low: 1.0e-6, high: 3.0e-3, log: true}\n"
	for _, tc := range []struct {
		yaml           string
		stall, timeout time.Duration
	}{
		{base, DefaultStallTimeout, 0},
		{base + "command: [python3, train.py, \"{lr}\"]\n", 0, 0},
		{base + "command: [python3, train.py]\nstall_timeout: 2h\n", 2 * time.Hour, 0},
		{base + "stall_timeout: none\ntrial_timeout: 12h\n", 0, 12 * time.Hour},
		{base + "stall_timeout: 0\n", 0, 0},
	} {
		c, err := ParseConfig("sweeps.yaml", []byte(tc.yaml))
		if err != nil {
			t.Fatal(err)
		}
		if c.StallTimeout != tc.stall || c.TrialTimeout != tc.timeout {
			t.Errorf("%q: stall %v, timeout %v; want %v, %v", tc.yaml, c.StallTimeout, c.TrialTimeout, tc.stall, tc.timeout)
		}
	}
}

// TestCandidateNamesInAnyScript: a candidate's name may use letters of any
// script; generated names keep their ASCII spelling.
func TestCandidateNamesInAnyScript(t *testing.T) {
	c, err := ParseConfig("sweeps.yaml", []byte("datasets: [sst2]\nmethods:\n  lora: [{name: r8-ñ, rank: 8}, {rank: 4, targets: qv-ñ}]\nsearch:\n  lr: {low: 0.1, high: 1.0}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Methods[0].Archs[0].Name; got != "r8-ñ" {
		t.Errorf("named candidate %q, want r8-ñ", got)
	}
	if got := c.Methods[0].Archs[1].Name; got != "4-qv-_" {
		t.Errorf("generated name %q, want 4-qv-_ (ASCII, as before)", got)
	}
	if _, err := ParseConfig("sweeps.yaml", []byte("datasets: [sst2]\nmethods:\n  lora: [{name: r8 ñ}]\nsearch:\n  lr: {low: 0.1, high: 1.0}\n")); err == nil || !strings.Contains(err.Error(), "want a name of letters") {
		t.Errorf("a name with a space: %v", err)
	}
}

// TestNumberHintOnlyForQuotedNumbers: a word where a number belongs gets no
// hint about quoted numbers; trial_memory_gb: none is the default, no limit.
func TestNumberHintOnlyForQuotedNumbers(t *testing.T) {
	const head = "datasets: [sst2]\nmethods:\n  read: [{}]\nsearch:\n  lr: {low: 0.1, high: 1.0}\n"
	_, err := ParseConfig("sweeps.yaml", []byte(head+"trial_memory_gb: none-at-all\n"))
	if err == nil || !strings.HasSuffix(err.Error(), `want a number, got "none-at-all"`) {
		t.Errorf("a word for a number: %v", err)
	}
	c, err := ParseConfig("sweeps.yaml", []byte(head+"trial_memory_gb: none\n"))
	if err != nil || c.TrialMemoryGB != 0 {
		t.Errorf("trial_memory_gb: none: %v, %+v", err, c)
	}
}

// TestEveryMistakeAtOnce: a sweep file's mistakes in several keys are all
// reported, each with its line, in one error.
func TestEveryMistakeAtOnce(t *testing.T) {
	_, err := ParseConfig("sweeps.yaml", []byte("datasets: [sst2, glue]\nmethods:\n  read: [{}]\nsearch:\n  lr: {low: 0.1, high: 0.01}\nparallel: 0\noutput_dir: \"\"\n"))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`sweeps.yaml:1: datasets[1]: unknown dataset "glue"`,
		"sweeps.yaml:5: search.lr: low (0.1) must be below high (0.01)",
		"sweeps.yaml:6: parallel: must be at least 1, got 0",
		"sweeps.yaml:7: output_dir: empty",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q:\n%v", want, err)
		}
	}
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Line != 1 {
		t.Errorf("errors.As finds %+v, want the first mistake's ConfigError", ce)
	}
}

// TestEveryMistakeInABlockAtOnce: inside a block (pruner, search, a
// method's candidates, training) every wrong key is reported too, not the
// first alone.
func TestEveryMistakeInABlockAtOnce(t *testing.T) {
	_, err := ParseConfig("sweeps.yaml", []byte(`datasets: [sst2]
methods:
  lora:
    - {rank: [8]}
    - {name: "a b"}
search:
  lr: {low: 0.1, high: 1.0, scale: log}
  seed: {low: 0, high: x}
pruner: {name: asha, reduction_factor: 1, bootstrap_count: -2}
`))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"sweeps.yaml:4: methods.lora[0].rank: want a single value",
		"sweeps.yaml:5: methods.lora[1].name: want a name",
		"sweeps.yaml:7: search.lr.scale: unknown key",
		"sweeps.yaml:8: search.seed.high: want a number",
		"sweeps.yaml:9: pruner.reduction_factor: must be at least 2",
		"sweeps.yaml:9: pruner.bootstrap_count: must",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error lacks %q:\n%v", want, err)
		}
	}

	c, err := ParseConfig("sweeps.yaml", []byte("datasets: [sst2]\nmethods:\n  read: [{}]\nsearch:\n  lr: {low: 0.1, high: 1.0}\ntraining:\n  batch_size: -1\n  epochs: 3\n  max_epochs: x\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = c.CheckTraining(func(s map[string]any) error {
		for k, v := range s {
			if k == "epochs" || v == -1 || v == "x" {
				return fmt.Errorf("%s is wrong", k)
			}
		}
		return nil
	})
	for _, want := range []string{"sweeps.yaml:7: training.batch_size: batch_size is wrong", "sweeps.yaml:8: training.epochs:", "sweeps.yaml:9: training.max_epochs:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckTraining: %v; want it to contain %q", err, want)
		}
	}
}

func TestHeartbeatGraceAndStorageRetry(t *testing.T) {
	for _, c := range []struct {
		extra        string
		grace, retry time.Duration
	}{
		{"", DefaultHeartbeatGrace, DefaultStorageRetry},
		{"heartbeat_interval: 45s\n", 90 * time.Second, DefaultStorageRetry}, // twice the interval, when more
		{"heartbeat_grace: 15s\nstorage_retry: 0\n", 15 * time.Second, 0},    // 0: give up after a few seconds, as before
		{"storage_retry: 1h\n", DefaultHeartbeatGrace, time.Hour},
	} {
		cfg, err := ParseConfig("sweeps.yaml", []byte(strings.Replace(goodConfig, "heartbeat_interval: 2s\n", c.extra, 1)))
		if err != nil {
			t.Fatalf("%q: %v", c.extra, err)
		}
		if cfg.HeartbeatGrace != c.grace || cfg.StorageRetry != c.retry {
			t.Errorf("%q: heartbeat_grace %v, storage_retry %v; want %v, %v", c.extra, cfg.HeartbeatGrace, cfg.StorageRetry, c.grace, c.retry)
		}
	}
	if _, err := ParseConfig("sweeps.yaml", []byte(goodConfig+"storage_retry: none\n")); err == nil || !strings.Contains(err.Error(), "storage_retry: none: give a duration") {
		t.Errorf("storage_retry: none: %v", err)
	}
	if _, err := ParseConfig("sweeps.yaml", []byte(goodConfig+"storage_retry: soon\n")); err == nil || !strings.Contains(err.Error(), "sweeps.yaml:20: storage_retry: want a positive duration") {
		t.Errorf("storage_retry: soon: %v", err)
	}
}

// TestEveryRegisteredMethodAccepted: the sweep file accepts exactly the
// registry's methods (one list: a method registered is a method a sweep
// may name).
func TestEveryRegisteredMethodAccepted(t *testing.T) {
	for _, name := range all.Registry().Names() {
		cfg := fmt.Sprintf("trainer: synthetic\ndatasets: [sst2]\nmethods:\n  %s: [{}]\nsearch:\n  lr: {low: 1.0e-5, high: 1.0e-3, log: true}\n", name)
		if _, err := ParseConfig("sweeps.yaml", []byte(cfg)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := "trainer: synthetic\ndatasets: [sst2]\nmethods:\n  ia4: [{}]\nsearch:\n  lr: {low: 1.0e-5, high: 1.0e-3, log: true}\n"
	if _, err := ParseConfig("sweeps.yaml", []byte(bad)); err == nil || !strings.Contains(err.Error(), "known: full, adapter, lora, bitfit, prompt, lst, read, ia3, synthetic") {
		t.Errorf("an unregistered method: %v", err)
	}
}

// TestStudyAttrs: a study records the unit of its values whoever plans it
// (submit and final planned studies without it, read as epochs), and a
// plan's extra attributes.
func TestStudyAttrs(t *testing.T) {
	c, err := ParseConfig("sweeps.yaml", []byte(strings.Replace(goodConfig, "training: {max_epochs: 5, seeds: [7, 8]}", "training: {max_epochs: 5, eval_steps: 100}", 1)))
	if err != nil {
		t.Fatal(err)
	}
	p := Plan(c, nil)[0]
	p.Attrs = map[string]any{"final": true}
	a := p.StudyAttrs(c)
	if a[AttrReportUnit] != UnitStep || a["method"] != p.Method || a["dataset"] != p.Dataset || a["final"] != true {
		t.Errorf("StudyAttrs = %v", a)
	}
}
