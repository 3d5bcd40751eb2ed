// Package t5 is the T5 encoder-decoder backbone on package nn: Hugging Face
// checkpoints (config.json, safetensors) in, the same logits, hidden
// states, attention probabilities and gradients out, plus greedy decoding
// with a key/value cache.
//
// # Checkpoints
//
// Load reads config.json with Hugging Face's defaults for absent fields and
// model.safetensors (or a sharded model.safetensors.index.json) in F32, F16
// or BF16. The output projection is lm_head.weight when the file has it,
// else shared.weight; the decoder output is scaled by d_model^-0.5 when
// scale_decoder_outputs is true or, for configs without that field,
// when tie_word_embeddings is (default true).
//
// # Hooks
//
// Forward returns every block's output and each decoder layer's
// cross-attention probabilities, which READ and LST consume. A model whose
// parameters have no gradients runs tape-free: nothing is kept for a
// backward pass.
package t5

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strings"
)

// Config mirrors the fields of Hugging Face's T5Config that shape the
// model.
type Config struct {
	VocabSize           int     `json:"vocab_size"`
	DModel              int     `json:"d_model"`
	DKV                 int     `json:"d_kv"`
	DFF                 int     `json:"d_ff"`
	NumLayers           int     `json:"num_layers"`
	NumDecoderLayers    int     `json:"num_decoder_layers"`
	NumHeads            int     `json:"num_heads"`
	RelBuckets          int     `json:"relative_attention_num_buckets"`
	RelMaxDistance      int     `json:"relative_attention_max_distance"`
	DropoutRate         float64 `json:"dropout_rate"`
	LayerNormEps        float64 `json:"layer_norm_epsilon"`
	InitializerFactor   float64 `json:"initializer_factor"`
	FeedForwardProj     string  `json:"feed_forward_proj"`
	TieWordEmbeddings   *bool   `json:"tie_word_embeddings"`
	ScaleDecoderOutputs *bool   `json:"scale_decoder_outputs"`
	PadTokenID          int     `json:"pad_token_id"`
	EOSTokenID          int     `json:"eos_token_id"`
	DecoderStartTokenID int     `json:"decoder_start_token_id"`
	// Gated is derived from FeedForwardProj: wi_0/wi_1 with gelu_new.
	Gated bool `json:"-"`
}

// DefaultConfig returns T5Config's defaults (t5-small's shape).
func DefaultConfig() Config {
	return Config{VocabSize: 32128, DModel: 512, DKV: 64, DFF: 2048, NumLayers: 6, NumHeads: 8,
		RelBuckets: 32, RelMaxDistance: 128, DropoutRate: 0.1, LayerNormEps: 1e-6, InitializerFactor: 1,
		FeedForwardProj: "relu", EOSTokenID: 1}
}

// ParseConfig reads a config.json, applying the defaults for absent fields
// (num_decoder_layers = num_layers, relative_attention_max_distance 128,
// feed_forward_proj relu, tie_word_embeddings true).
func ParseConfig(path string, raw []byte) (Config, error) {
	c := DefaultConfig()
	c.NumDecoderLayers = -1
	if err := json.Unmarshal(raw, &c); err != nil {
		return c, fmt.Errorf("t5: %s: %w", path, err)
	}
	if c.NumDecoderLayers < 0 {
		c.NumDecoderLayers = c.NumLayers
	}
	switch c.FeedForwardProj {
	case "relu":
	case "gated-gelu":
		c.Gated = true
	default:
		return c, fmt.Errorf("t5: %s: feed_forward_proj %q is not supported (want relu or gated-gelu)", path, c.FeedForwardProj)
	}
	// The upper bounds are far beyond any T5 (t5-11b: d_ff 65536, 128
	// heads of 128, 24 layers): a config past them is a mistake, and
	// building it would fail on memory, not with its name.
	for _, f := range []struct {
		name string
		v    int
		most int
	}{{"vocab_size", c.VocabSize, 1 << 22}, {"d_model", c.DModel, 1 << 16}, {"d_kv", c.DKV, 1 << 14}, {"d_ff", c.DFF, 1 << 20},
		{"num_layers", c.NumLayers, 1 << 10}, {"num_decoder_layers", c.NumDecoderLayers, 1 << 10}, {"num_heads", c.NumHeads, 1 << 12},
		{"relative_attention_num_buckets", c.RelBuckets, 1 << 16}, {"relative_attention_max_distance", c.RelMaxDistance, 1 << 24}} {
		if f.v < 1 || f.v > f.most {
			return c, fmt.Errorf("t5: %s: %s = %d, want 1 to %d", path, f.name, f.v, f.most)
		}
	}
	if params := int64(c.VocabSize)*int64(c.DModel)*2 + int64(c.NumLayers+c.NumDecoderLayers)*int64(c.DModel)*int64(4*c.NumHeads*c.DKV+3*c.DFF); params > 1<<36 {
		return c, fmt.Errorf("t5: %s: the config makes %d parameters, far more than any T5 (t5-11b: 1.1e10)", path, params)
	}
	if !DropoutRateValid(c.DropoutRate) {
		return c, fmt.Errorf("t5: %s: dropout_rate = %g, want [0, 1)", path, c.DropoutRate)
	}
	return c, nil
}

// DropoutRateValid reports whether p is a dropout rate the model can
// hold: in [0, 1) once rounded to the float32 its ops take, so that one
// like 0.99999999999, which rounds to 1 and drops everything, is not.
func DropoutRateValid(p float64) bool { return p >= 0 && float32(p) < 1 }

// LoadConfig reads dir/config.json.
func LoadConfig(dir string) (Config, error) {
	path := strings.TrimSuffix(dir, "/") + "/config.json"
	raw, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("t5: %w", err)
	}
	return ParseConfig(path, raw)
}

// Tied reports tie_word_embeddings (default true).
func (c Config) Tied() bool { return c.TieWordEmbeddings == nil || *c.TieWordEmbeddings }

// OutputScale is the factor applied to the decoder output before the LM
// head: d_model^-0.5 when scale_decoder_outputs (or, without that field,
// tie_word_embeddings) is true, else 1.
func (c Config) OutputScale() float32 {
	scale := c.Tied()
	if c.ScaleDecoderOutputs != nil {
		scale = *c.ScaleDecoderOutputs
	}
	if scale {
		return float32(1 / math.Sqrt(float64(c.DModel)))
	}
	return 1
}

// Inner is the attention width, num_heads·d_kv.
func (c Config) Inner() int { return c.NumHeads * c.DKV }
