package t5

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/readsweep/readsweep/nn"
)

// Block holds one encoder or decoder block's weights. Cross-attention
// fields are nil in the encoder; Wi is nil when the FFN is gated (Wi0,
// Wi1), and the reverse.
type Block struct {
	SelfNorm   *nn.Tensor // (D)
	Q, K, V    *nn.Tensor // (H·K, D)
	O          *nn.Tensor // (D, H·K)
	CrossNorm  *nn.Tensor // (D)
	CQ, CK, CV *nn.Tensor // (H·K, D)
	CO         *nn.Tensor // (D, H·K)
	FFNorm     *nn.Tensor // (D)
	Wi         *nn.Tensor // (F, D)
	Wi0, Wi1   *nn.Tensor // (F, D)
	Wo         *nn.Tensor // (D, F)
}

// Model is a T5 encoder-decoder. All weights live in Params under their
// Hugging Face names.
type Model struct {
	Config Config
	Params *nn.Params

	Shared             *nn.Tensor // (V, D)
	LMHead             *nn.Tensor // (V, D); Shared when the checkpoint has no lm_head.weight
	EncRelBias         *nn.Tensor // (buckets, H), block 0 of the encoder
	DecRelBias         *nn.Tensor // (buckets, H), block 0 of the decoder
	Enc, Dec           []Block
	EncFinal, DecFinal *nn.Tensor // (D)
}

// ParamShapes lists every parameter of a config in Hugging Face's order.
func ParamShapes(c Config, lmHead bool) ([]string, [][]int) {
	D, I, F := c.DModel, c.Inner(), c.DFF
	var names []string
	var shapes [][]int
	add := func(name string, shape ...int) {
		names = append(names, name)
		shapes = append(shapes, shape)
	}
	add("shared.weight", c.VocabSize, D)
	for _, stack := range []struct {
		name   string
		layers int
	}{{"encoder", c.NumLayers}, {"decoder", c.NumDecoderLayers}} {
		for i := range stack.layers {
			p := fmt.Sprintf("%s.block.%d.layer.", stack.name, i)
			for _, w := range []string{"q", "k", "v"} {
				add(p+"0.SelfAttention."+w+".weight", I, D)
			}
			add(p+"0.SelfAttention.o.weight", D, I)
			if i == 0 {
				add(p+"0.SelfAttention.relative_attention_bias.weight", c.RelBuckets, c.NumHeads)
			}
			add(p+"0.layer_norm.weight", D)
			ff := 1
			if stack.name == "decoder" {
				for _, w := range []string{"q", "k", "v"} {
					add(p+"1.EncDecAttention."+w+".weight", I, D)
				}
				add(p+"1.EncDecAttention.o.weight", D, I)
				add(p+"1.layer_norm.weight", D)
				ff = 2
			}
			fp := fmt.Sprintf("%s%d.", p, ff)
			if c.Gated {
				add(fp+"DenseReluDense.wi_0.weight", F, D)
				add(fp+"DenseReluDense.wi_1.weight", F, D)
			} else {
				add(fp+"DenseReluDense.wi.weight", F, D)
			}
			add(fp+"DenseReluDense.wo.weight", D, F)
			add(fp+"layer_norm.weight", D)
		}
		add(stack.name+".final_layer_norm.weight", D)
	}
	if lmHead {
		add("lm_head.weight", c.VocabSize, D)
	}
	return names, shapes
}

// NewStacks returns a zeroed model without embeddings or LM head: the
// encoder and decoder blocks, final norms and position-bias tables of c,
// named as in a checkpoint. Side networks (LST) are built from it.
func NewStacks(c Config) *Model {
	names, shapes := ParamShapes(c, false)
	return fromShapes(c, names[1:], shapes[1:]) // drop shared.weight
}

// newModel allocates a zeroed model; lmHead gives it its own output
// projection.
func newModel(c Config, lmHead bool) *Model {
	names, shapes := ParamShapes(c, lmHead)
	return fromShapes(c, names, shapes)
}

func fromShapes(c Config, names []string, shapes [][]int) *Model {
	m := &Model{Config: c, Params: nn.NewParams(names, shapes)}
	get := m.Params.Get
	m.Shared = get("shared.weight")
	m.LMHead = m.Shared
	if h := get("lm_head.weight"); h != nil {
		m.LMHead = h
	}
	m.EncRelBias = get("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
	m.DecRelBias = get("decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
	m.EncFinal, m.DecFinal = get("encoder.final_layer_norm.weight"), get("decoder.final_layer_norm.weight")
	for _, stack := range []struct {
		name   string
		layers int
		dst    *[]Block
	}{{"encoder", c.NumLayers, &m.Enc}, {"decoder", c.NumDecoderLayers, &m.Dec}} {
		for i := range stack.layers {
			p := fmt.Sprintf("%s.block.%d.layer.", stack.name, i)
			b := Block{
				SelfNorm: get(p + "0.layer_norm.weight"),
				Q:        get(p + "0.SelfAttention.q.weight"), K: get(p + "0.SelfAttention.k.weight"),
				V: get(p + "0.SelfAttention.v.weight"), O: get(p + "0.SelfAttention.o.weight"),
			}
			ff := "1."
			if stack.name == "decoder" {
				b.CrossNorm = get(p + "1.layer_norm.weight")
				b.CQ, b.CK = get(p+"1.EncDecAttention.q.weight"), get(p+"1.EncDecAttention.k.weight")
				b.CV, b.CO = get(p+"1.EncDecAttention.v.weight"), get(p+"1.EncDecAttention.o.weight")
				ff = "2."
			}
			b.FFNorm = get(p + ff + "layer_norm.weight")
			b.Wi, b.Wi0, b.Wi1 = get(p+ff+"DenseReluDense.wi.weight"), get(p+ff+"DenseReluDense.wi_0.weight"), get(p+ff+"DenseReluDense.wi_1.weight")
			b.Wo = get(p + ff + "DenseReluDense.wo.weight")
			*stack.dst = append(*stack.dst, b)
		}
	}
	return m
}

// NewZeros allocates a model of c's shape holding zeros, for attaching
// methods to check their settings, where no value is read for its meaning
// (New's random draw costs a third of a second for one t5-base block).
func NewZeros(c Config) *Model { return newModel(c, !c.Tied()) }

// New returns a randomly initialised model, as Hugging Face's
// T5PreTrainedModel._init_weights does: norms 1, shared N(0, f²),
// q N(0, f²/(D·K)), k and v N(0, f²/D), o N(0, f²/(H·K)), position bias
// N(0, f²/D), wi N(0, f²/D), wo N(0, f²/F), with f the
// initializer_factor. Its output projection is tied (no lm_head.weight)
// unless the config unties the embeddings.
func New(c Config, seed uint64) *Model {
	m := newModel(c, !c.Tied())
	m.Init(seed)
	return m
}

// Init draws every weight as New describes.
func (m *Model) Init(seed uint64) {
	c := m.Config
	rng := rand.New(rand.NewPCG(seed, 0x75))
	f := c.InitializerFactor
	D, K, H, F := float64(c.DModel), float64(c.DKV), float64(c.NumHeads), float64(c.DFF)
	for i, name := range m.Params.Names {
		t := m.Params.Tensors[i]
		std := 0.0
		switch {
		case strings.HasSuffix(name, "layer_norm.weight"):
			for j := range t.Data {
				t.Data[j] = float32(f)
			}
			continue
		case name == "shared.weight" || name == "lm_head.weight":
			std = f
		case strings.HasSuffix(name, ".q.weight"):
			std = f / math.Sqrt(D*K)
		case strings.HasSuffix(name, ".k.weight"), strings.HasSuffix(name, ".v.weight"), strings.Contains(name, ".wi"):
			std = f / math.Sqrt(D)
		case strings.HasSuffix(name, ".o.weight"):
			std = f / math.Sqrt(H*K)
		case strings.HasSuffix(name, "relative_attention_bias.weight"):
			std = f / math.Sqrt(D)
		case strings.HasSuffix(name, ".wo.weight"):
			std = f / math.Sqrt(F)
		}
		for j := range t.Data {
			t.Data[j] = float32(rng.NormFloat64() * std)
		}
	}
}

// aliases are names Hugging Face writes or accepts besides the canonical
// ones; ignored ones are never used (old checkpoints carry a cross-attention
// position bias that T5 does not use).
var (
	embeddingAliases = []string{"shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}
	ignoredTensors   = []string{"decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"}
)

// Load reads a Hugging Face T5 folder: config.json and model.safetensors
// or the shards named by model.safetensors.index.json.
func Load(dir string) (*Model, error) {
	c, err := LoadConfig(dir)
	if err != nil {
		return nil, err
	}
	files, err := checkpointFiles(dir)
	if err != nil {
		return nil, err
	}
	where := map[string]tensorSource{}
	// A pickled checkpoint reads each value twice (its storage, then its
	// tensor): at most twice what the model holds, with the embedding
	// saved under its three other names too (older files do).
	_, shapes := ParamShapes(c, true)
	budget := &pickleBudget{values: int64(1<<20) + 6*int64(c.VocabSize)*int64(c.DModel), entries: 8*int64(len(shapes)) + 1024}
	for _, sh := range shapes {
		n := int64(1)
		for _, d := range sh {
			n *= int64(d)
		}
		budget.values += 2 * n
	}
	for _, f := range files {
		var src tensorSource
		if strings.HasSuffix(f, ".bin") {
			tensors, err := readPyTorch(f, budget)
			if err != nil {
				return nil, err
			}
			src = &pickledFile{path: f, tensors: tensors}
		} else {
			s, err := OpenSafetensors(f)
			if err != nil {
				return nil, err
			}
			defer s.Close()
			src = s
		}
		for _, name := range src.names() {
			where[name] = src
		}
	}
	_, hasHead := where["lm_head.weight"]
	m := newModel(c, hasHead)
	used := map[string]bool{}
	for i, name := range m.Params.Names {
		t := m.Params.Tensors[i]
		src := name
		if name == "shared.weight" {
			for _, alias := range embeddingAliases {
				if _, ok := where[alias]; ok {
					src = alias
					break
				}
			}
		}
		s, ok := where[src]
		if !ok {
			return nil, fmt.Errorf("t5: %s: checkpoint has no tensor %q (shape %v)", dir, name, t.Shape)
		}
		if got, _ := s.shapeOf(src); !slices.Equal(got, t.Shape) {
			return nil, fmt.Errorf("t5: %s: tensor %q has shape %v, config.json implies %v", s.source(), src, got, t.Shape)
		}
		if err := s.readInto(src, t.Data); err != nil {
			return nil, err
		}
		used[src] = true
	}
	var extra []string
	for name := range where {
		if !used[name] && !slices.Contains(embeddingAliases, name) && !slices.Contains(ignoredTensors, name) {
			extra = append(extra, name)
		}
	}
	if len(extra) > 0 {
		sort.Strings(extra)
		return nil, fmt.Errorf("t5: %s: checkpoint has tensors this config does not use, e.g. %s (%d in all); does config.json match the weights?", dir, quoteName(extra[0]), len(extra))
	}
	return m, nil
}

// ShardName reports whether an index's shard name is a plain file name
// in the checkpoint's folder: no folder, no way out of it, on any system.
func ShardName(f string) bool {
	return f != "" && f != "." && f != ".." && !strings.ContainsAny(f, `/\:`) && filepath.IsLocal(f)
}

// tensorSource is a checkpoint file's tensors by name: a safetensors file
// or a read pytorch_model.bin.
type tensorSource interface {
	source() string
	names() []string
	shapeOf(name string) ([]int, bool)
	readInto(name string, dst []float32) error
}

// WeightFiles are the names of a checkpoint's weights Load reads, in the
// order it looks for them: one file, or the index of its shards.
var WeightFiles = []string{"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json"}

// checkpointFiles lists the files of dir's weights: the first of
// WeightFiles it has, or the shards its index names.
func checkpointFiles(dir string) ([]string, error) {
	for _, name := range WeightFiles {
		path := filepath.Join(dir, name)
		if !strings.HasSuffix(name, ".index.json") {
			if _, err := os.Stat(path); err == nil {
				return []string{path}, nil
			}
			continue
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		var idx struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		if err := json.Unmarshal(raw, &idx); err != nil {
			return nil, fmt.Errorf("t5: %s: %w", path, err)
		}
		set := map[string]bool{}
		for _, f := range idx.WeightMap {
			if !ShardName(f) {
				return nil, fmt.Errorf("t5: %s: shard %q is not a file name in the folder", path, f)
			}
			set[filepath.Join(dir, f)] = true
		}
		var files []string
		for f := range set {
			files = append(files, f)
		}
		sort.Strings(files)
		if len(files) == 0 {
			return nil, fmt.Errorf("t5: %s: empty weight_map", path)
		}
		return files, nil
	}
	return nil, fmt.Errorf("t5: %s: no model.safetensors, pytorch_model.bin or their shard index (`sweep fetch model NAME` downloads one)", dir)
}

// Save writes config.json and model.safetensors in Hugging Face's layout,
// which Load (and transformers) read back.
func (m *Model) Save(dir string) error {
	var shapes [][]int
	var values [][]float32
	for _, t := range m.Params.Tensors {
		shapes = append(shapes, t.Shape)
		values = append(values, t.Values())
	}
	c, names, shapes, values := HFCheckpoint(m.Config, m.Params.Names, shapes, values)
	if err := WriteConfig(dir, c); err != nil {
		return err
	}
	return WriteSafetensors(filepath.Join(dir, "model.safetensors"), names, shapes, values)
}

// HFCheckpoint makes a model of config c with tensors (names, shapes,
// values) mean the same to every transformers version that reads it.
// transformers 4 ties lm_head to shared, and scales the decoder's output
// by d_model^-0.5, exactly when tie_word_embeddings is true; transformers
// 5 keeps a checkpoint's own lm_head.weight and scales by
// scale_decoder_outputs. So the result says tie_word_embeddings exactly
// when it has no lm_head.weight, and scale_decoder_outputs the same: a
// model with its own head and the scale has the scale folded into its
// head; a model without a head that is not scaled gets shared.weight
// written as its head.
func HFCheckpoint(c Config, names []string, shapes [][]int, values [][]float32) (Config, []string, [][]int, [][]float32) {
	head, shared := -1, -1
	for i, n := range names {
		switch n {
		case "lm_head.weight":
			head = i
		case "shared.weight":
			shared = i
		}
	}
	scale := c.OutputScale()
	switch {
	case head >= 0 && scale != 1:
		folded := make([]float32, len(values[head]))
		for i, v := range values[head] {
			folded[i] = v * scale
		}
		values = append(values[:head:head], append([][]float32{folded}, values[head+1:]...)...)
	case head < 0 && scale == 1 && shared >= 0:
		names = append(names[:len(names):len(names)], "lm_head.weight")
		shapes = append(shapes[:len(shapes):len(shapes)], shapes[shared])
		values = append(values[:len(values):len(values)], values[shared])
		head = len(names) - 1
	}
	tied, scaled := head < 0, head < 0
	c.TieWordEmbeddings, c.ScaleDecoderOutputs = &tied, &scaled
	return c, names, shapes, values
}

// PyFloat is a float that JSON writes with a decimal point (1.0, not 1),
// as Python does: transformers 5's strict configs refuse an int where a
// float is declared.
type PyFloat float64

func (f PyFloat) MarshalJSON() ([]byte, error) {
	s := strconv.FormatFloat(float64(f), 'g', -1, 64)
	if !strings.ContainsAny(s, ".eEnN") {
		s += ".0"
	}
	return []byte(s), nil
}

// WriteConfig writes c as dir/config.json, with the fields of
// transformers' T5Config (and the architecture it names), so that
// T5ForConditionalGeneration.from_pretrained builds the same model; for
// a checkpoint, HFCheckpoint makes its tying and scaling agree with the
// tensors written.
func WriteConfig(dir string, c Config) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("t5: %w", err)
	}
	cfg := map[string]any{
		"architectures": []string{"T5ForConditionalGeneration"}, "model_type": "t5", "is_encoder_decoder": true,
		"vocab_size": c.VocabSize, "d_model": c.DModel, "d_kv": c.DKV, "d_ff": c.DFF, "num_layers": c.NumLayers,
		"num_decoder_layers": c.NumDecoderLayers, "num_heads": c.NumHeads, "relative_attention_num_buckets": c.RelBuckets,
		"relative_attention_max_distance": c.RelMaxDistance, "dropout_rate": PyFloat(c.DropoutRate), "layer_norm_epsilon": PyFloat(c.LayerNormEps),
		"initializer_factor": PyFloat(c.InitializerFactor), "feed_forward_proj": c.FeedForwardProj, "tie_word_embeddings": c.Tied(),
		"scale_decoder_outputs": c.OutputScale() != 1, "pad_token_id": c.PadTokenID, "eos_token_id": c.EOSTokenID,
		"decoder_start_token_id": c.DecoderStartTokenID,
	}
	raw, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return fmt.Errorf("t5: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), append(raw, '\n'), 0o644); err != nil {
		return fmt.Errorf("t5: %w", err)
	}
	return nil
}
