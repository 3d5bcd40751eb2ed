package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/readsweep/readsweep/t5"
)

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
	dModel := fs.Int("d-model", 64, "hidden size")
	dKV := fs.Int("d-kv", 16, "size of each attention head")
	dFF := fs.Int("d-ff", 256, "feed-forward size")
	layers := fs.Int("layers", 2, "encoder and decoder blocks")
	heads := fs.Int("heads", 4, "attention heads")
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
	c.VocabSize, c.DModel, c.DKV, c.DFF = tok.VocabSize(), *dModel, *dKV, *dFF
	c.NumLayers, c.NumDecoderLayers, c.NumHeads = *layers, *layers, *heads
	c.FeedForwardProj, c.Gated = *ff, *ff == "gated-gelu"
	if *ff != "relu" && *ff != "gated-gelu" {
		return fmt.Errorf("%w: --ff %q: want relu or gated-gelu", errUsage, *ff)
	}
	for _, v := range []int{*dModel, *dKV, *dFF, *layers, *heads} {
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
