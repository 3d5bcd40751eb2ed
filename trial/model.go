package trial

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/readsweep/readsweep/glue"
	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/t5"
)

// Saved models. A trial with save_model: best (or last) writes the state
// it scored into its folder's model/: the files of the format its method's
// users already read (a Hugging Face T5 folder for full fine-tuning, a
// peft folder for LoRA and prompt tuning, this project's safetensors for
// the rest) and ModelInfoName, which names the base model, the method and
// what prediction needs to decode as the trial did. docs/models.md
// describes each format.

// ModelDirName is the folder in a trial's output folder that holds its
// saved model.
const ModelDirName = "model"

// ModelInfoName is the saved model's description, in every layout.
const ModelInfoName = "readsweep-model.json"

// ModelFormat is the version of ModelInfo's layout.
const ModelFormat = 1

// The layouts of a saved model's weights.
const (
	LayoutHF         = "hf-t5"              // config.json, model.safetensors, spiece.model
	LayoutPeftLoRA   = "peft-lora"          // adapter_config.json, adapter_model.safetensors
	LayoutPeftPrompt = "peft-prompt-tuning" // adapter_config.json, adapter_model.safetensors
	LayoutPeftIA3    = "peft-ia3"           // adapter_config.json, adapter_model.safetensors
	LayoutOwn        = "readsweep"          // method.safetensors: the method's Weights by name
)

// ModelInfo is a saved model's readsweep-model.json.
type ModelInfo struct {
	Format   int            `json:"format"`
	Layout   string         `json:"layout"`
	Method   string         `json:"method"`
	Arch     map[string]any `json:"arch"`
	ArchName string         `json:"arch_name,omitempty"`
	Task     string         `json:"task"`
	// BaseModel is the model the method was attached to, as the sweep
	// named it (a hub name or a folder); BaseSHA256 is its weights' and
	// config's digest, which loading checks. A LayoutHF folder is its own
	// base.
	BaseModel  string `json:"base_model"`
	BaseSHA256 string `json:"base_model_sha256"`
	// BaseTokenizerSHA256 is the digest of its spiece.model: another
	// vocabulary under the same weights decodes other words.
	BaseTokenizerSHA256 string `json:"base_tokenizer_sha256"`
	// Merged is set on a folder `sweep export --merge` folded the method
	// into: it is then a plain Hugging Face T5.
	Merged bool `json:"merged,omitempty"`

	Study      string  `json:"study,omitempty"`
	Trial      int     `json:"trial"`
	Seed       int64   `json:"seed"`
	LR         float64 `json:"lr"`
	Saved      string  `json:"saved"`      // best or last
	Epoch      int     `json:"epoch"`      // of the saved state
	Step       int     `json:"step"`       // optimiser steps of the saved state
	Validation Float   `json:"validation"` // of the saved state
	// What prediction must repeat to decode as validation did.
	MaxSourceLength int `json:"max_source_length"`
	MaxTargetLength int `json:"max_target_length"`
	EvalBatchSize   int `json:"eval_batch_size"`
	// Where the trial's examples came from: PaperSplit makes its
	// validation and test splits again.
	DataDir         string `json:"data_dir,omitempty"`
	DataSeed        uint64 `json:"data_seed"`
	MaxEvalExamples int    `json:"max_eval_examples,omitempty"`
	SplitRule       string `json:"split_rule,omitempty"`
}

// PaperSplit returns the trial's validation or test split: the paper's
// split of the task's data under dataDir (the trial's own when empty),
// cut to max_eval_examples as the trial's was.
func (info ModelInfo) PaperSplit(dataDir, split string) ([]glue.Example, error) {
	if dataDir == "" {
		dataDir = info.DataDir
	}
	task, err := glue.Lookup(info.Task)
	if err != nil {
		return nil, err
	}
	data, err := glue.Load(dataDir, task)
	if err != nil {
		return nil, err
	}
	splits, err := glue.PaperSplits(data, info.DataSeed)
	if err != nil {
		return nil, err
	}
	switch split {
	case "validation":
		return limit(splits.Validation, info.MaxEvalExamples), nil
	case "test":
		return limit(splits.Test, info.MaxEvalExamples), nil
	}
	return nil, fmt.Errorf("trial: split %q: want validation or test (the paper's; --input reads any file)", split)
}

// layoutOf is the layout a method's model is saved in.
func layoutOf(method string) string {
	switch method {
	case "full":
		return LayoutHF
	case "lora":
		return LayoutPeftLoRA
	case "prompt":
		return LayoutPeftPrompt
	case "ia3":
		return LayoutPeftIA3
	}
	return LayoutOwn
}

// weightsFile is the file of a layout's weights.
func weightsFile(layout string) string {
	switch layout {
	case LayoutHF:
		return "model.safetensors"
	case LayoutPeftLoRA, LayoutPeftPrompt, LayoutPeftIA3:
		return "adapter_model.safetensors"
	}
	return "method.safetensors"
}

// fileName is a method's weight's name in its layout's file: peft's
// get_peft_model_state_dict names (the adapter name taken out).
func fileName(layout, name string) string {
	switch layout {
	case LayoutPeftLoRA:
		return "base_model.model." + name + ".weight"
	case LayoutPeftPrompt:
		return "prompt_embeddings"
	case LayoutPeftIA3:
		return "base_model.model." + name // peft's IA³ vectors are parameters, not modules
	}
	return name
}

// fileShape is a method's weight's shape in its layout's file: peft keeps
// IA³'s vectors as (out, 1) over a projection's outputs and (1, in) over
// a feed-forward projection's inputs.
func fileShape(layout, name string, shape []int) []int {
	if layout == LayoutPeftIA3 {
		if strings.HasSuffix(name, ".wo.ia3_l") {
			return []int{1, shape[0]}
		}
		return []int{shape[0], 1}
	}
	return shape
}

// savedModel is what writeModel writes: the info, the backbone's config,
// the method's weights by name (with their values now), and where the
// tokenizer comes from.
type savedModel struct {
	info    ModelInfo
	config  t5.Config
	names   []string
	shapes  [][]int
	values  [][]float32
	spiece  string // the base model's spiece.model
	summary map[string]any
}

// writeModel writes s into dir as a whole (writeDir), so that a trial
// killed mid-save leaves the previous model or none, never half of one.
// It returns the bytes written.
func writeModel(dir string, s savedModel, replace bool) (int64, error) {
	size, err := writeDir(dir, replace, func(tmp string) error { return fillModel(tmp, s) })
	if err != nil {
		return 0, fmt.Errorf("trial: save model %s: %w", dir, err)
	}
	return size, nil
}

// writeDir makes the folder dir whole or not at all: fill writes its
// files into a temporary folder beside it, every file is synced, then the
// folder is renamed into place. It returns the bytes written.
//
// With replace, dir's previous contents are replaced; without, dir must
// not exist or be an empty folder, and a writer that finds it otherwise
// (another writer got there first) fails.
func writeDir(dir string, replace bool, fill func(tmp string) error) (int64, error) {
	dir = filepath.Clean(dir)
	removeStale(dir)
	tmp := dir + ".tmp-" + writerID()
	os.RemoveAll(tmp)
	err := os.MkdirAll(tmp, 0o755)
	if err == nil {
		err = fill(tmp)
	}
	var size int64
	if err == nil {
		size, err = syncFiles(tmp)
	}
	if err == nil {
		err = placeDir(tmp, dir, replace)
	}
	if err != nil {
		os.RemoveAll(tmp)
		return 0, err
	}
	return size, nil
}

// fillModel writes s's files into dir.
func fillModel(dir string, s savedModel) error {
	layout := s.info.Layout
	if layout == LayoutHF {
		s.config, s.names, s.shapes, s.values = t5.HFCheckpoint(s.config, s.names, s.shapes, s.values)
	}
	ts := make([]t5.SafetensorsTensor, len(s.names))
	for i, name := range s.names {
		ts[i] = t5.SafetensorsTensor{Name: fileName(layout, name), Shape: fileShape(layout, name, s.shapes[i]), F32: s.values[i]}
	}
	if err := t5.WriteSafetensorsTensors(filepath.Join(dir, weightsFile(layout)), ts); err != nil {
		return err
	}
	switch layout {
	case LayoutHF:
		if err := t5.WriteConfig(dir, s.config); err != nil {
			return err
		}
		if err := copyFile(s.spiece, filepath.Join(dir, "spiece.model")); err != nil {
			return err
		}
	case LayoutPeftLoRA, LayoutPeftPrompt, LayoutPeftIA3:
		if err := writeJSON(filepath.Join(dir, "adapter_config.json"), peftConfig(s)); err != nil {
			return err
		}
	}
	if err := writeJSON(filepath.Join(dir, ModelInfoName), s.info); err != nil {
		return err
	}
	return nil
}

// peftConfig is adapter_config.json as peft's LoraConfig,
// PromptTuningConfig or IA3Config writes it (to_dict of the dataclass),
// for the settings the method trained with. It names only the fields
// whose values matter and that every peft release since 0.4 has: peft
// before 0.14 refuses a field it does not know (use_dora, peft_version),
// and fills in the defaults of those left out.
func peftConfig(s savedModel) map[string]any {
	c := s.config
	cfg := map[string]any{
		"task_type": "SEQ_2_SEQ_LM", "base_model_name_or_path": s.info.BaseModel, "revision": nil, "inference_mode": true,
	}
	switch s.info.Layout {
	case LayoutPeftPrompt:
		cfg["peft_type"] = "PROMPT_TUNING"
		cfg["num_virtual_tokens"] = s.shapes[0][0]
		cfg["token_dim"] = c.DModel
		// One submodule: the file holds exactly the P rows trained, which
		// peft's T5 prepends to the encoder's input (with its default of
		// 2 it would expect 2P rows, the second half never trained).
		cfg["num_transformer_submodules"] = 1
		cfg["num_attention_heads"] = c.NumHeads
		cfg["num_layers"] = c.NumLayers
		cfg["prompt_tuning_init"] = "RANDOM"
		return cfg
	case LayoutPeftIA3:
		cfg["peft_type"] = "IA3"
		cfg["target_modules"] = []string{"k", "v", "wo"} // peft's default for T5, as the trainer's
		cfg["feedforward_modules"] = []string{"wo"}
		cfg["fan_in_fan_out"] = false
		cfg["modules_to_save"] = nil
		cfg["init_ia3_weights"] = true
		return cfg
	}
	r := 0
	for i, n := range s.names {
		if strings.HasSuffix(n, ".lora_A") {
			r = s.shapes[i][0]
			break
		}
	}
	alpha := float64(r)
	if a, ok := methods.Number(s.info.Arch["alpha"]); ok {
		alpha = a
	}
	var targets any = []string{"q", "v"} // peft's default for T5: every attention's q and v
	if t, _ := s.info.Arch["targets"].(string); t != "all_qv" {
		// A string is a regular expression that peft fullmatches against
		// module names: the decoder's self-attention only.
		targets = `decoder\.block\.\d+\.layer\.0\.SelfAttention\.(q|v)`
	}
	cfg["peft_type"] = "LORA"
	cfg["r"] = r
	if alpha == math.Trunc(alpha) {
		cfg["lora_alpha"] = int(alpha)
	} else {
		cfg["lora_alpha"] = alpha
	}
	cfg["target_modules"] = targets
	cfg["lora_dropout"] = t5.PyFloat(0)
	cfg["fan_in_fan_out"] = false
	cfg["bias"] = "none"
	cfg["modules_to_save"] = nil
	cfg["init_lora_weights"] = true
	return cfg
}

func writeJSON(path string, v any) error {
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(raw, '\n'), 0o644)
}

// copyFile streams src to the new file dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncFiles flushes every file of dir and dir itself to disk, and returns
// their size.
func syncFiles(dir string) (int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var size int64
	for _, e := range append(entries, nil) {
		path := dir
		if e != nil {
			path = filepath.Join(dir, e.Name())
		}
		f, err := os.Open(path)
		if err != nil {
			return 0, err
		}
		err = f.Sync()
		if st, serr := f.Stat(); serr == nil && e != nil {
			size += st.Size()
		}
		f.Close()
		if err != nil {
			return 0, err
		}
	}
	return size, nil
}

// placeDir moves the finished folder tmp to dir: with replace, whatever
// was there is moved aside first and removed after; without, only an
// empty folder may be there (rename replaces it, and fails on a folder
// that is not empty: two exports to one folder do not both succeed).
func placeDir(tmp, dir string, replace bool) error {
	if !replace {
		if st, err := os.Lstat(dir); err == nil && st.Mode()&os.ModeSymlink != 0 {
			return fmt.Errorf("%s is a symbolic link; name a new folder", dir)
		} else if err == nil && st.IsDir() {
			os.Remove(dir) // an empty folder; one that is not stays, and the rename fails
		}
		if err := os.Rename(tmp, dir); err != nil {
			return fmt.Errorf("cannot put the model at %s (a file, or a folder another export filled first?): %w", dir, err)
		}
		syncParent(dir)
		return nil
	}
	old := dir + ".old-" + writerID()
	hadOld := false
	if _, err := os.Lstat(dir); err == nil {
		os.RemoveAll(old)
		if err := os.Rename(dir, old); err != nil {
			return err
		}
		hadOld = true
	}
	if err := os.Rename(tmp, dir); err != nil {
		if hadOld {
			os.Rename(old, dir)
		}
		return err
	}
	if hadOld {
		os.RemoveAll(old)
	}
	syncParent(dir)
	return nil
}

// syncParent flushes the folder holding path to disk, so that a rename
// into it survives a crash.
func syncParent(path string) {
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
}

// writerID names this process's temporary folders: its host and
// process, so that a writer on another machine sharing the folder is not
// taken for a dead one.
func writerID() string { return fmt.Sprintf("%s-%d", hostTag(), os.Getpid()) }

// hostTag is this machine's name in writerID, without the '-' that ends it.
func hostTag() string {
	host, _ := os.Hostname()
	return strings.ReplaceAll(host, "-", "_")
}

// removeStale removes the temporary and set-aside folders of dir that
// writers on this machine left when killed mid-save (their process is
// gone).
func removeStale(dir string) {
	prefix := hostTag() + "-"
	for _, kind := range []string{".tmp-", ".old-"} {
		matches, _ := filepath.Glob(dir + kind + "*")
		for _, m := range matches {
			rest, ok := strings.CutPrefix(m, dir+kind+prefix)
			pid, err := strconv.Atoi(rest)
			if ok && err == nil && pid != os.Getpid() && !processAlive(pid) {
				os.RemoveAll(m)
			}
		}
	}
}

// processAlive reports whether process pid may still be running.
func processAlive(pid int) bool {
	p, err := os.FindProcess(pid)
	if err != nil {
		return false
	}
	err = p.Signal(syscall.Signal(0))
	return !errors.Is(err, os.ErrProcessDone) && !errors.Is(err, syscall.ESRCH)
}

// ReadModelInfo reads dir's readsweep-model.json.
func ReadModelInfo(dir string) (ModelInfo, error) {
	path := filepath.Join(dir, ModelInfoName)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if st, serr := os.Stat(dir); serr != nil {
			return ModelInfo{}, fmt.Errorf("trial: model folder %s does not exist", dir)
		} else if !st.IsDir() {
			return ModelInfo{}, fmt.Errorf("trial: %s is a file, not a model folder", dir)
		}
		return ModelInfo{}, fmt.Errorf("trial: %s is not a saved model: it has no %s (trials write one with the training setting save_model: best; `sweep export STUDY#N --out DIR` copies one)", dir, ModelInfoName)
	}
	if err != nil {
		return ModelInfo{}, fmt.Errorf("trial: %w", err)
	}
	var info ModelInfo
	if err := json.Unmarshal(raw, &info); err != nil {
		return ModelInfo{}, fmt.Errorf("trial: %s: %w", path, err)
	}
	switch {
	case info.Format != ModelFormat:
		return info, fmt.Errorf("trial: %s: format %d, this sweep reads %d", path, info.Format, ModelFormat)
	case !slices.Contains([]string{LayoutHF, LayoutPeftLoRA, LayoutPeftPrompt, LayoutPeftIA3, LayoutOwn}, info.Layout):
		return info, fmt.Errorf("trial: %s: unknown layout %q", path, info.Layout)
	case info.Task == "":
		return info, fmt.Errorf("trial: %s: no task", path)
	case info.MaxSourceLength < 2 || info.MaxTargetLength < 1 || info.EvalBatchSize < 1 ||
		info.MaxSourceLength > 1<<16 || info.MaxTargetLength > 1<<12 || info.EvalBatchSize > 1<<16:
		// Decoding allocates by these before it reads a token.
		return info, fmt.Errorf("trial: %s: max_source_length %d, max_target_length %d, eval_batch_size %d: want 2..65536, 1..4096 and 1..65536",
			path, info.MaxSourceLength, info.MaxTargetLength, info.EvalBatchSize)
	}
	return info, nil
}

// Model is a saved model loaded for prediction: the backbone with the
// method attached and its trained weights in place.
type Model struct {
	Info    ModelInfo
	Dir     string
	BaseDir string // where the backbone came from (Dir for LayoutHF)
	T5      *t5.Model
	Tok     *t5.Tokenizer
	Method  methods.Method // nil for LayoutHF: the backbone is the model
}

// Hooks are the method's changes to the backbone's forward pass.
func (m *Model) Hooks() *t5.Hooks {
	if m.Method == nil {
		return &t5.Hooks{}
	}
	return m.Method.Hooks()
}

// LoadModel reads a saved (or exported) model: for a method saved apart
// from its backbone, the base model it names, which must be the one it
// was trained on (its digest), with the method attached from reg and its
// weights read over it.
func LoadModel(dir string, reg methods.Registry) (*Model, error) {
	info, err := ReadModelInfo(dir)
	if err != nil {
		return nil, err
	}
	lm := &Model{Info: info, Dir: dir, BaseDir: dir}
	if info.Layout != LayoutHF {
		if lm.BaseDir, err = ResolveModel(info.BaseModel); err != nil {
			return nil, fmt.Errorf("trial: %s names base model %q: %w", filepath.Join(dir, ModelInfoName), info.BaseModel, err)
		}
		digest, err := hashModel(lm.BaseDir, false)
		if err != nil {
			return nil, fmt.Errorf("trial: base model %s: %w", lm.BaseDir, err)
		}
		if digest != info.BaseSHA256 {
			return nil, fmt.Errorf("trial: base model %s is not the one %s was trained on: its sha256 is %s, %s says %s",
				lm.BaseDir, dir, digest, ModelInfoName, info.BaseSHA256)
		}
		tok, err := fileDigest(filepath.Join(lm.BaseDir, "spiece.model"))
		if err != nil {
			return nil, fmt.Errorf("trial: base model %s: %w", lm.BaseDir, err)
		}
		if tok != info.BaseTokenizerSHA256 {
			return nil, fmt.Errorf("trial: base model %s has another tokenizer than %s was trained with: spiece.model's sha256 is %s, %s says %s",
				lm.BaseDir, dir, tok, ModelInfoName, info.BaseTokenizerSHA256)
		}
	}
	if lm.T5, err = t5.Load(lm.BaseDir); err != nil {
		return nil, err
	}
	if lm.Tok, err = t5.LoadTokenizer(filepath.Join(lm.BaseDir, "spiece.model")); err != nil {
		return nil, err
	}
	if info.Layout == LayoutHF {
		lm.T5.Params.EnableGrad(func(string) bool { return false })
		return lm, nil
	}
	if lm.Method, err = reg.New(info.Method, lm.T5, info.Arch, uint64(info.Seed)); err != nil {
		return nil, fmt.Errorf("trial: %s: %w", filepath.Join(dir, ModelInfoName), err)
	}
	if err := readWeights(filepath.Join(dir, weightsFile(info.Layout)), info.Layout, lm.Method.Weights()); err != nil {
		return nil, err
	}
	lm.T5.Params.EnableGrad(func(string) bool { return false })
	lm.Method.Weights().EnableGrad(func(string) bool { return false })
	return lm, nil
}

// readWeights reads every tensor of w from a layout's file, which must
// hold exactly those, in their shapes.
func readWeights(path, layout string, w *nn.Params) error {
	st, err := t5.OpenSafetensors(path)
	if err != nil {
		return err
	}
	defer st.Close()
	used := map[string]bool{}
	for i, name := range w.Names {
		t := w.Tensors[i]
		fn := fileName(layout, name)
		ti, ok := st.Tensors[fn]
		if !ok {
			return fmt.Errorf("trial: %s has no tensor %q (the method's %s, shape %v)", path, fn, name, t.Shape)
		}
		if want := fileShape(layout, name, t.Shape); !slices.Equal(ti.Shape, want) {
			return fmt.Errorf("trial: %s: tensor %q has shape %v, the method's settings make it %v", path, fn, ti.Shape, want)
		}
		if err := st.Read(fn, t.Data); err != nil {
			return err
		}
		used[fn] = true
	}
	var extra []string
	for name := range st.Tensors {
		if !used[name] {
			extra = append(extra, name)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return fmt.Errorf("trial: %s has tensors the method does not use, e.g. %q (%d in all): were its settings changed?", path, extra[0], len(extra))
	}
	return nil
}

// saveModels writes each member that trained to the end into its folder's
// model/, as save_model asks, after fit restored its best state. A model
// that cannot be written does not undo the trial: its scores stand, and
// model_error says why there is no model.
func (j *trainJob) saveModels() {
	if j.set.SaveModel == "none" {
		return
	}
	base := j.spec.Model
	if st, err := os.Stat(base); err == nil && st.IsDir() {
		base = absPath(base) // the model is read from elsewhere than the sweep's folder
	}
	digest, err := modelDigest(j.modelDir)
	tokDigest, terr := fileDigest(filepath.Join(j.modelDir, "spiece.model"))
	err = errors.Join(err, terr)
	for i, pr := range j.runs {
		fr := j.fruns[i]
		if !fr.completed() || pr.OutputDir == "" {
			continue
		}
		if err != nil {
			pr.modelErr = fmt.Errorf("trial: save model: cannot hash the base model: %w", err)
			pr.logf("%v", pr.modelErr)
			continue
		}
		info := ModelInfo{Format: ModelFormat, Layout: layoutOf(j.spec.Method), Method: j.spec.Method, Arch: j.spec.Arch,
			ArchName: j.spec.ArchName, Task: j.task.Name, BaseModel: base, BaseSHA256: digest, BaseTokenizerSHA256: tokDigest, Study: j.spec.Study,
			Trial: pr.Number, Seed: pr.seed, LR: pr.lr, Saved: j.set.SaveModel, Epoch: fr.bestAt.epoch, Step: fr.bestAt.steps,
			Validation: Float(fr.best), MaxSourceLength: j.set.MaxSourceLength, MaxTargetLength: j.maxTgt,
			EvalBatchSize: j.set.EvalBatchSize, SplitRule: j.splits.Rule, DataDir: absPath(j.spec.DataDir), DataSeed: j.set.DataSeed,
			MaxEvalExamples: j.set.MaxEvalExamples}
		var best [][]float32
		if j.set.SaveModel == "last" && fr.lastState != nil {
			best = snapshot(fr.st.trainable, nil)
			restore(fr.st.trainable, fr.lastState)
			info.Epoch, info.Step = fr.epochs-1, fr.st.step
			if n := len(pr.reported); n > 0 {
				info.Validation = pr.reported[n-1].Value
			}
		}
		w := pr.meth.Weights()
		s := savedModel{info: info, config: j.baseConfig, names: w.Names, spiece: filepath.Join(j.modelDir, "spiece.model")}
		for _, t := range w.Tensors {
			s.shapes = append(s.shapes, t.Shape)
			s.values = append(s.values, t.Values())
		}
		dir := filepath.Join(pr.OutputDir, ModelDirName)
		pr.modelBytes, pr.modelErr = writeModel(dir, s, true)
		if best != nil {
			restore(fr.st.trainable, best)
		}
		if pr.modelErr != nil {
			pr.logf("%v", pr.modelErr)
			continue
		}
		dir = absPath(dir) // the database outlives the sweep's working folder
		pr.modelDir = dir
		pr.logf("model: %s state saved to %s (%.1f MB)", j.set.SaveModel, dir, float64(pr.modelBytes)/1e6)
	}
}

// ExportModel writes the saved model src to the new folder out: a copy of
// its files, or with merge a Hugging Face T5 folder with the method folded
// into the backbone's tensors (methods.Merger). out must not exist, or be
// an empty folder; it appears whole or not at all.
func ExportModel(src, out string, merge bool, reg methods.Registry) (ModelInfo, error) {
	info, err := ReadModelInfo(src)
	if err != nil {
		return info, err
	}
	out = filepath.Clean(out)
	if entries, err := os.ReadDir(out); err == nil && len(entries) > 0 {
		return info, fmt.Errorf("trial: export to %s: the folder exists and is not empty; name a new one", out)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return info, fmt.Errorf("trial: export to %s: %w", out, err)
	}
	if !merge || info.Layout == LayoutHF {
		return info, copyModel(src, out)
	}
	lm, err := LoadModel(src, reg)
	if err != nil {
		return info, err
	}
	merger, ok := lm.Method.(methods.Merger)
	if !ok {
		return info, fmt.Errorf("trial: %s cannot be merged into a T5: %s; export it without --merge (docs/models.md)", info.Method, whyNoMerge(info.Method))
	}
	if err := merger.Merge(lm.T5); err != nil {
		return info, fmt.Errorf("trial: merge %s: %w", src, err)
	}
	info.Layout, info.Merged = LayoutHF, true
	s := savedModel{info: info, config: lm.T5.Config, names: lm.T5.Params.Names, spiece: filepath.Join(lm.BaseDir, "spiece.model")}
	for _, t := range lm.T5.Params.Tensors {
		s.shapes = append(s.shapes, t.Shape)
		s.values = append(s.values, t.Values())
	}
	_, err = writeModel(out, s, false)
	return info, err
}

// whyNoMerge says why a method's weights do not fold into a T5.
func whyNoMerge(method string) string {
	switch method {
	case "bitfit":
		return "T5's projections and norms have no biases to hold BitFit's (only the key biases could go: softmax ignores them)"
	case "prompt":
		return "its prompt vectors are inputs to the encoder, not weights"
	case "adapter", "read", "lst":
		return "it adds modules (" + method + "'s networks) that a T5 does not have"
	}
	return "it does not implement merging"
}

// copyModel copies the files of the saved model src into the new folder
// out, whole or not at all (writeDir).
func copyModel(src, out string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("trial: %w", err)
	}
	_, err = writeDir(out, false, func(tmp string) error {
		for _, e := range entries {
			if st, serr := os.Stat(filepath.Join(src, e.Name())); serr != nil || !st.Mode().IsRegular() {
				continue // a saved model holds files (a link to one is copied as the file), no folders
			}
			if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(tmp, e.Name())); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("trial: export %s to %s: %w", src, out, err)
	}
	return nil
}

// absPath is path made absolute, or path where it cannot be.
func absPath(path string) string {
	if abs, err := filepath.Abs(path); err == nil && path != "" {
		return abs
	}
	return path
}

// fileDigest is the SHA-256 of a file.
func fileDigest(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
