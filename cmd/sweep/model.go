package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/readsweep/readsweep/t5"
)

// modelShape is the size of a random T5, as `sweep model new` takes it.
type modelShape struct{ DModel, DKV, DFF, Layers, Heads int }

// addShapeFlags defines --d-model, --d-kv, --d-ff, --layers and --heads on
// fs with defaults def.
func addShapeFlags(fs *flag.FlagSet, def modelShape) *modelShape {
	s := def
	fs.IntVar(&s.DModel, "d-model", def.DModel, "hidden size")
	fs.IntVar(&s.DKV, "d-kv", def.DKV, "size of each attention head")
	fs.IntVar(&s.DFF, "d-ff", def.DFF, "feed-forward size")
	fs.IntVar(&s.Layers, "layers", def.Layers, "encoder and decoder blocks")
	fs.IntVar(&s.Heads, "heads", def.Heads, "attention heads")
	return &s
}

// args are the `sweep model new` flags for s.
func (s modelShape) args() []string {
	return []string{"--d-model", fmt.Sprint(s.DModel), "--d-kv", fmt.Sprint(s.DKV), "--d-ff", fmt.Sprint(s.DFF),
		"--layers", fmt.Sprint(s.Layers), "--heads", fmt.Sprint(s.Heads)}
}

// cmdModel makes models: `sweep model new` writes a randomly initialised
// T5 of a chosen (small) shape beside a SentencePiece tokenizer, for
// examples, tests and experiments without downloads.
func cmdModel(args []string) error {
	if len(args) == 0 || args[0] != "new" {
		return fmt.Errorf("%w: usage: sweep model new --out DIR --spiece spiece.model [--d-model 64 ...]", errUsage)
	}
	fs := newFlags("model new", "model new --out DIR --spiece spiece.model [--d-model 64] [--d-kv 16] [--d-ff 256] [--layers 2] [--heads 4] [--ff relu|gated-gelu] [--seed 0]")
	out := fs.String("out", "", "folder to write config.json, model.safetensors and spiece.model to (required)")
	spiece := fs.String("spiece", "", "SentencePiece model to use as the tokenizer (required)")
	shape := addShapeFlags(fs, modelShape{DModel: 64, DKV: 16, DFF: 256, Layers: 2, Heads: 4})
	ff := fs.String("ff", "relu", "feed-forward: relu (T5 v1.0) or gated-gelu (T5 v1.1)")
	seed := fs.Uint64("seed", 0, "initialisation seed")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) > 0 || *out == "" || *spiece == "" {
		fs.Usage()
		return errUsage
	}
	tok, err := t5.LoadTokenizer(*spiece)
	if err != nil {
		return err
	}
	c := t5.DefaultConfig()
	c.VocabSize, c.DModel, c.DKV, c.DFF = tok.VocabSize(), shape.DModel, shape.DKV, shape.DFF
	c.NumLayers, c.NumDecoderLayers, c.NumHeads = shape.Layers, shape.Layers, shape.Heads
	c.FeedForwardProj, c.Gated = *ff, *ff == "gated-gelu"
	if *ff != "relu" && *ff != "gated-gelu" {
		return fmt.Errorf("%w: --ff %q: want relu or gated-gelu", errUsage, *ff)
	}
	for _, v := range []int{shape.DModel, shape.DKV, shape.DFF, shape.Layers, shape.Heads} {
		if v < 1 {
			return fmt.Errorf("%w: sizes must be positive", errUsage)
		}
	}
	m := t5.New(c, *seed)
	if err := m.Save(*out); err != nil {
		return err
	}
	raw, err := os.ReadFile(*spiece)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*out, "spiece.model"), raw, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "sweep: wrote a random %d-layer T5 (d_model %d, %d parameters, vocabulary %d) to %s\n",
		c.NumLayers, c.DModel, m.Params.Count(), c.VocabSize, *out)
	return nil
}
