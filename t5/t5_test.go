package t5

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/readsweep/readsweep/nn"
)

// golden is a reference file of testdata/<model>/reference.safetensors,
// made by Hugging Face transformers 5.17 (see testdata/GOLDEN-README.md).
type golden struct {
	*Safetensors
	batch Batch
}

func loadGolden(t *testing.T, model string) (*Model, golden) {
	t.Helper()
	dir := filepath.Join("testdata", model)
	m, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenSafetensors(filepath.Join(dir, "reference.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	bt, err := s.ReadBatch()
	if err != nil {
		t.Fatal(err)
	}
	return m, golden{s, bt}
}

func (gd golden) tensor(t *testing.T, name string) []float32 {
	t.Helper()
	out, _, err := gd.ReadAll(name)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// compare checks have against want within atol + rtol·|want|, naming the
// tensor, the worst index and the difference.
func compare(t *testing.T, name string, have, want []float32, atol, rtol float64) {
	t.Helper()
	if len(have) != len(want) {
		t.Errorf("%s: %d values, want %d", name, len(have), len(want))
		return
	}
	worst, at := 0.0, -1
	for i := range want {
		d := math.Abs(float64(have[i]) - float64(want[i]))
		if d > atol+rtol*math.Abs(float64(want[i])) && d > worst {
			worst, at = d, i
		}
	}
	if at >= 0 {
		t.Errorf("%s: max diff %.3g at %d (have %v, want %v)", name, worst, at, have[at], want[at])
	}
}

// namedBackend is a backend under a subtest name.
type namedBackend struct {
	name string
	be   nn.Backend
}

// goldenBackends returns the CPU backend and the GPU backend: on the GPU
// where one opens (a test binary built here with go test -c runs on a GPU
// machine), else on the CPU emulator of CUDA (cgo builds).
func goldenBackends(t *testing.T) []namedBackend {
	bes := []namedBackend{{nn.DefaultBackend().Name(), nn.DefaultBackend()}}
	if g, err := nn.OpenGPU(nn.CUDAOptions{}); err == nil {
		t.Cleanup(func() { g.Close() })
		t.Logf("also on the GPU: %s", g.Info())
		return append(bes, namedBackend{"cuda", g})
	}
	if emu := emulatedGPU(t); emu != nil {
		bes = append(bes, namedBackend{"cuda-emulator", emu})
	}
	return bes
}

func TestGolden(t *testing.T) {
	for _, b := range goldenBackends(t) {
		for _, model := range []string{"tiny-t5-v1", "tiny-t5-v11"} {
			t.Run(model+"/"+b.name, func(t *testing.T) { checkGolden(t, b.be, model) })
		}
	}
}

func checkGolden(t *testing.T, be nn.Backend, model string) {
	m, gd := loadGolden(t, model)
	trainable := m.Params.EnableGrad(func(string) bool { return true })
	g := nn.NewGraph(be)
	out, err := m.Forward(g, gd.batch, nil)
	if err != nil {
		t.Fatal(err)
	}
	compare(t, "loss", out.Loss.Values(), gd.tensor(t, "loss"), 1e-5, 1e-5)
	compare(t, "logits", out.Logits.Values(), gd.tensor(t, "logits"), 1e-4, 1e-4)
	compare(t, "encoder_last_hidden_state", out.EncOut.Values(), gd.tensor(t, "encoder_last_hidden_state"), 1e-4, 1e-4)
	for i, hs := range out.EncHidden {
		compare(t, fmt.Sprintf("encoder_hidden_states.%d", i), hs.Values(), gd.tensor(t, fmt.Sprintf("encoder_hidden_states.%d", i)), 1e-4, 1e-4)
	}
	for i, hs := range out.DecHidden {
		compare(t, fmt.Sprintf("decoder_hidden_states.%d", i), hs.Values(), gd.tensor(t, fmt.Sprintf("decoder_hidden_states.%d", i)), 1e-4, 1e-4)
	}
	for i := range out.EncBlockOut {
		compare(t, fmt.Sprintf("enc_block_out.%d", i), out.EncBlockOut[i].Values(), gd.tensor(t, fmt.Sprintf("enc_block_out.%d", i)), 1e-4, 1e-4)
		compare(t, fmt.Sprintf("encoder_attentions.%d", i), out.EncAttn[i].Values(), gd.tensor(t, fmt.Sprintf("encoder_attentions.%d", i)), 1e-4, 1e-4)
	}
	for i := range out.DecBlockOut {
		compare(t, fmt.Sprintf("dec_block_out.%d", i), out.DecBlockOut[i].Values(), gd.tensor(t, fmt.Sprintf("dec_block_out.%d", i)), 1e-4, 1e-4)
		compare(t, fmt.Sprintf("decoder_attentions.%d", i), out.DecAttn[i].Values(), gd.tensor(t, fmt.Sprintf("decoder_attentions.%d", i)), 1e-4, 1e-4)
		compare(t, fmt.Sprintf("cross_attentions.%d", i), out.CrossAttn[i].Values(), gd.tensor(t, fmt.Sprintf("cross_attentions.%d", i)), 1e-4, 1e-4)
	}
	if len(out.EncHidden) != len(m.Enc)+1 || len(out.DecHidden) != len(m.Dec)+1 {
		t.Errorf("%d/%d hidden states", len(out.EncHidden), len(out.DecHidden))
	}
	g.Backward(out.Loss)
	checked := 0
	for i, name := range m.Params.Names {
		want := gd.tensor(t, "grad."+name)
		var scale float64
		for _, v := range want {
			scale = math.Max(scale, math.Abs(float64(v)))
		}
		compare(t, "grad."+name, trainable[i].GradValues(), want, 1e-4*scale, 0)
		checked++
	}
	if checked != len(m.Params.Names) || checked < 50 {
		t.Errorf("checked %d gradients", checked)
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := ParseConfig("config.json", []byte(`{"d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6, "num_heads": 8, "vocab_size": 32128}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.NumDecoderLayers != 6 || c.RelMaxDistance != 128 || c.RelBuckets != 32 || c.Gated || !c.Tied() || c.OutputScale() != float32(1/math.Sqrt(512)) {
		t.Errorf("defaults: %+v", c)
	}
	if _, err := ParseConfig("config.json", []byte(`{"feed_forward_proj": "gated-swish"}`)); err == nil || !strings.Contains(err.Error(), "feed_forward_proj") {
		t.Errorf("unsupported activation: %v", err)
	}
	for _, rate := range []string{"-0.1", "1", "0.99999999999"} {
		if _, err := ParseConfig("config.json", []byte(`{"dropout_rate": `+rate+`}`)); err == nil || !strings.Contains(err.Error(), "dropout_rate") {
			t.Errorf("dropout_rate %s: %v, want an error naming it", rate, err)
		}
	}
}

func TestParameterCounts(t *testing.T) {
	small := DefaultConfig()
	small.NumDecoderLayers = small.NumLayers
	base := small
	base.DModel, base.DFF, base.NumLayers, base.NumDecoderLayers, base.NumHeads = 768, 3072, 12, 12, 12
	for _, tc := range []struct {
		name string
		c    Config
		want int
	}{{"t5-small", small, 60506624}, {"t5-base", base, 222903552}} {
		names, shapes := ParamShapes(tc.c, false)
		n := nn.CountShapes(shapes)
		if n != tc.want || len(names) != len(shapes) {
			t.Errorf("%s: %d parameters, want %d (shared/reference/t5-text-to-text.md §2.2)", tc.name, n, tc.want)
		}
	}
}

func TestGenerateMatchesGolden(t *testing.T) {
	for _, model := range []string{"tiny-t5-v1", "tiny-t5-v11"} {
		m, gd := loadGolden(t, model)
		want, shape, err := gd.ReadInts("generate_greedy_5")
		if err != nil {
			t.Fatal(err)
		}
		got := m.Generate(nn.DefaultBackend(), gd.batch.Input, gd.batch.Mask, gd.batch.B, gd.batch.S, 5, nil)
		for b := 0; b < shape[0]; b++ {
			row := want[b*shape[1] : (b+1)*shape[1]]
			if fmt.Sprint(got[b]) != fmt.Sprint(row) {
				t.Errorf("%s row %d: generated %v, want %v", model, b, got[b], row)
			}
		}
	}
}

// TestGenerateFromSharedEncoding decodes the golden batch three times from
// one Encoded, as packed trials and later epochs do: each time matches
// Hugging Face's greedy output, so decoding leaves the encoding as it was.
func TestGenerateFromSharedEncoding(t *testing.T) {
	m, gd := loadGolden(t, "tiny-t5-v1")
	want, shape, err := gd.ReadInts("generate_greedy_5")
	if err != nil {
		t.Fatal(err)
	}
	be := nn.DefaultBackend()
	e := m.EncodeForDecoding(be, gd.batch.Input, gd.batch.Mask, gd.batch.B, gd.batch.S, nil)
	defer e.Release()
	for round := range 3 {
		got := m.GenerateFrom(be, e, 5, nil)
		for b := 0; b < shape[0]; b++ {
			if row := want[b*shape[1] : (b+1)*shape[1]]; fmt.Sprint(got[b]) != fmt.Sprint(row) {
				t.Errorf("round %d row %d: generated %v, want %v", round, b, got[b], row)
			}
		}
	}
	// A Decoder's own Generate, its memory reused across calls of other
	// shapes (one row, then the batch again), gives the golden rows too.
	d := m.NewDecoder(be)
	defer d.Release()
	for round := range 3 {
		if round == 1 {
			d.Generate(gd.batch.Input[:gd.batch.S], gd.batch.Mask[:gd.batch.S], 1, gd.batch.S, 2, nil, nil)
		}
		got := d.Generate(gd.batch.Input, gd.batch.Mask, gd.batch.B, gd.batch.S, 5, nil, nil)
		for b := 0; b < shape[0]; b++ {
			if row := want[b*shape[1] : (b+1)*shape[1]]; fmt.Sprint(got[b]) != fmt.Sprint(row) {
				t.Errorf("Decoder.Generate round %d row %d: generated %v, want %v", round, b, got[b], row)
			}
		}
	}
	if !(&Hooks{DecoderOutput: func(*nn.Graph, *Output) *nn.Tensor { return nil }}).EncoderUnchanged() ||
		(&Hooks{Linear: func(*nn.Graph, string, *nn.Tensor, *nn.Tensor) *nn.Tensor { return nil }}).EncoderUnchanged() {
		t.Error("EncoderUnchanged: a decoder-output hook shares the encoding, a Linear hook must not")
	}
}

// TestRestoredEncodingDecodesTheSame writes a batch's lean encoding to a
// safetensors file, maps it back and decodes from the mapping: the golden
// greedy rows, and the same encoder fields for the hooks that read them
// (READ's block outputs, LST's embeddings). A file from another batch
// shape is refused with the tensor's name.
func TestRestoredEncodingDecodesTheSame(t *testing.T) {
	m, gd := loadGolden(t, "tiny-t5-v1")
	want, shape, err := gd.ReadInts("generate_greedy_5")
	if err != nil {
		t.Fatal(err)
	}
	be := nn.DefaultBackend()
	lean := &Hooks{LeanEncoder: true}
	B, S := gd.batch.B, gd.batch.S
	e := m.EncodeForDecoding(be, gd.batch.Input, gd.batch.Mask, B, S, lean)
	defer e.Release()
	named, ok := e.EncodedTensors()
	if !ok {
		t.Fatal("a lean encoding has no tensors to write")
	}
	var ts []SafetensorsTensor
	for name, x := range named {
		ts = append(ts, SafetensorsTensor{Name: name, Shape: x.Shape, F32: x.Values()})
	}
	path := filepath.Join(t.TempDir(), "enc.safetensors")
	if err := WriteSafetensorsTensors(path, ts); err != nil {
		t.Fatal(err)
	}
	f, err := OpenSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fromFile := func(name string) *nn.Tensor {
		v, shape, ok := f.Float32s(name)
		if !ok {
			return nil
		}
		return &nn.Tensor{Shape: shape, Data: v}
	}
	r, err := m.RestoreEncoded(gd.batch.Mask, B, fromFile)
	if err != nil {
		t.Fatal(err)
	}
	if r.Floats() != e.Floats() {
		t.Errorf("restored %d floats, encoded %d", r.Floats(), e.Floats())
	}
	same := func(what string, a, b []*nn.Tensor) {
		if len(a) != len(b) {
			t.Fatalf("%s: %d tensors restored, %d encoded", what, len(a), len(b))
		}
		for i := range a {
			if !slices.Equal(a[i].Values(), b[i].Values()) {
				t.Errorf("%s[%d] differs after the round trip", what, i)
			}
		}
	}
	same("EncHidden", r.out.EncHidden, e.out.EncHidden)
	same("EncBlockOut", r.out.EncBlockOut, e.out.EncBlockOut)
	same("cross keys", r.ck, e.ck)
	same("cross values", r.cv, e.cv)
	got := m.GenerateFrom(be, r, 5, lean)
	for b := 0; b < shape[0]; b++ {
		if row := want[b*shape[1] : (b+1)*shape[1]]; fmt.Sprint(got[b]) != fmt.Sprint(row) {
			t.Errorf("row %d from the mapped file: %v, want %v", b, got[b], row)
		}
	}
	if _, err := m.RestoreEncoded(gd.batch.Mask[:S*(B-1)], B-1, fromFile); err == nil || !strings.Contains(err.Error(), "enc_out") {
		t.Errorf("a file of %d rows restored for %d: err = %v, want one naming enc_out", B, B-1, err)
	}
	if full := m.EncodeForDecoding(be, gd.batch.Input, gd.batch.Mask, B, S, nil); true {
		defer full.Release()
		if _, ok := full.EncodedTensors(); ok {
			t.Error("an encoding with attention probabilities offered itself for a file that drops them")
		}
	}
}

// TestGenerateCacheMatchesFullForward checks that the cached decoder gives
// the same next-token logits as a full forward pass over the prefix.
func TestGenerateCacheMatchesFullForward(t *testing.T) {
	m, gd := loadGolden(t, "tiny-t5-v11")
	gen := m.Generate(nn.DefaultBackend(), gd.batch.Input, gd.batch.Mask, gd.batch.B, gd.batch.S, 4, nil)
	B, T := gd.batch.B, len(gen[0])-1
	labels := make([]int32, B*T)
	for b := range gen {
		copy(labels[b*T:], gen[b][1:])
	}
	g := nn.NewGraph(nn.DefaultBackend())
	out, err := m.Forward(g, Batch{B: B, S: gd.batch.S, T: T, Input: gd.batch.Input, Mask: gd.batch.Mask, Labels: labels}, nil)
	if err != nil {
		t.Fatal(err)
	}
	V := m.Config.VocabSize
	for b := 0; b < B; b++ {
		for i := 0; i < T; i++ {
			row := out.Logits.Data[(b*T+i)*V : (b*T+i+1)*V]
			best := 0
			for j, s := range row {
				if s > row[best] {
					best = j
				}
			}
			if gen[b][i] == int32(m.Config.EOSTokenID) {
				break
			}
			if int32(best) != gen[b][i+1] {
				t.Errorf("row %d step %d: full forward picks %d, cached generation %d", b, i, best, gen[b][i+1])
			}
		}
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	c, _ := LoadConfig("testdata/tiny-t5-v11")
	m := New(c, 3)
	dir := t.TempDir()
	if err := m.Save(dir); err != nil {
		t.Fatal(err)
	}
	back, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range m.Params.Names {
		compare(t, name, back.Params.Get(name).Data, m.Params.Tensors[i].Data, 0, 0)
	}
	// The init scheme: q ~ N(0, 1/(D·K)), so its std is about 1/√(32·8) = 0.0625.
	q := m.Params.Get("encoder.block.0.layer.0.SelfAttention.q.weight").Data
	var ss float64
	for _, v := range q {
		ss += float64(v) * float64(v)
	}
	if std := math.Sqrt(ss / float64(len(q))); math.Abs(std-0.0625) > 0.01 {
		t.Errorf("q init std %.4f, want about 0.0625", std)
	}
}

func TestLoadErrors(t *testing.T) {
	c, _ := LoadConfig("testdata/tiny-t5-v1")
	dir := t.TempDir()
	if err := New(c, 1).Save(dir); err != nil {
		t.Fatal(err)
	}
	// A config that disagrees with the weights names the tensor and both shapes.
	bad := c
	bad.DFF = 128
	m := New(bad, 1)
	m.Config = c
	other := t.TempDir()
	m.Save(other)
	cfgDir := t.TempDir()
	New(c, 1).Save(cfgDir)
	copyFile(t, filepath.Join(other, "model.safetensors"), filepath.Join(cfgDir, "model.safetensors"))
	if _, err := Load(cfgDir); err == nil || !strings.Contains(err.Error(), "DenseReluDense.wi.weight\" has shape [128 32], config.json implies [64 32]") {
		t.Errorf("mis-shaped tensor: %v", err)
	}
	pt := t.TempDir()
	copyFile(t, filepath.Join(dir, "config.json"), filepath.Join(pt, "config.json"))
	copyFile(t, filepath.Join(dir, "config.json"), filepath.Join(pt, "pytorch_model.bin"))
	if _, err := Load(pt); err == nil || !strings.Contains(err.Error(), "pytorch_model.bin is not a zip archive of torch.save") {
		t.Errorf("a pytorch_model.bin that is not one: %v", err)
	}
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLeanEncoder checks that releasing the tape-free encoder's
// intermediates block by block changes no result.
func TestLeanEncoder(t *testing.T) {
	m, gd := loadGolden(t, "tiny-t5-v1")
	g := nn.NewGraph(nn.DefaultBackend())
	full, _ := m.Forward(g, gd.batch, nil)
	want := append([]float32(nil), full.Logits.Data...)
	lean := nn.NewGraph(nn.DefaultBackend())
	out, _ := m.Forward(lean, gd.batch, &Hooks{LeanEncoder: true})
	// Moved data may take another alignment path in gonum's kernels: last-bit differences only.
	compare(t, "logits", out.Logits.Data, want, 1e-5, 1e-5)
	if len(out.EncAttn) != 0 || lean.PeakBytes() >= g.PeakBytes() {
		t.Errorf("lean encoder kept %d attention maps, peak %d vs %d bytes", len(out.EncAttn), lean.PeakBytes(), g.PeakBytes())
	}
	compare(t, "enc_block_out.1", out.EncBlockOut[1].Data, gd.tensor(t, "enc_block_out.1"), 1e-4, 1e-4)
}

// TestGenerateSharedDropsFinishedRows decodes one batch for three hook
// sets that end rows at different steps (by adding the LM head's EOS row
// to their output), so that groups split on EOS and groups whose rows all
// finished are dropped while one row decodes on: every set's rows are
// those it decodes alone, the backbone decodes fewer rows than a batch
// per step, and a set whose rows have all finished runs no more steps of
// its own.
func TestGenerateSharedDropsFinishedRows(t *testing.T) {
	m, gd := loadGolden(t, "tiny-t5-v11")
	be := nn.DefaultBackend()
	B, D, eos := gd.batch.B, m.Config.DModel, m.Config.EOSTokenID
	const maxNew = 6
	// endsAt says at which step (from 0) set j makes row b pick EOS; −1: never.
	endsAt := func(j, b int) int {
		if j == 0 && b == 0 {
			return -1
		}
		return 1 + (b+j)%3
	}
	boost := &nn.Tensor{Shape: []int{2, D}, Data: make([]float32, 2*D)}
	for i := range D {
		boost.Data[D+i] = 1e3 * m.LMHead.Data[eos*D+i]
	}
	// steps[j] counts the steps set j's hook ran in the shared call.
	steps := make([]int, 3)
	hook := func(j int, counted bool) *Hooks {
		step := 0
		return &Hooks{DecoderOutput: func(g *nn.Graph, out *Output) *nn.Tensor {
			if counted {
				steps[j]++
			}
			ids := make([]int32, B)
			for b := range ids {
				if endsAt(j, b) == step {
					ids[b] = 1
				}
			}
			step++
			return g.Add(out.DecOut, g.Embedding(boost, ids).View(B, 1, D))
		}}
	}
	e := m.EncodeForDecoding(be, gd.batch.Input, gd.batch.Mask, B, gd.batch.S, nil)
	defer e.Release()
	d := m.NewDecoder(be)
	defer d.Release()
	shared := d.GenerateShared(e, maxNew, []*Hooks{hook(0, true), hook(1, true), hook(2, true)}, nil)
	for j := range 3 {
		// A set that finishes before the others is padded to their length.
		alone := m.GenerateFrom(be, e, maxNew, hook(j, false))
		for b, row := range alone {
			got := shared[j][b]
			same := len(got) >= len(row) && fmt.Sprint(row) == fmt.Sprint(got[:len(row)])
			for i := len(row); same && i < len(got); i++ {
				same = got[i] == int32(m.Config.PadTokenID)
			}
			if !same {
				t.Errorf("set %d row %d: shared %v, alone %v", j, b, got, row)
			}
		}
		for b, row := range shared[j] {
			if at := endsAt(j, b); at >= 0 && (len(row) <= at+1 || row[at+1] != int32(eos)) {
				t.Fatalf("set %d row %d = %v: EOS was not forced at step %d, so the test reaches nothing", j, b, row, at)
			}
		}
	}
	if len(shared[0][0]) != maxNew+1 {
		t.Fatalf("row 0 of set 0 = %v: it should decode all %d steps", shared[0][0], maxNew)
	}
	for j := range 3 {
		last := -1 // the step at which set j's last row picks EOS
		for b := range B {
			if endsAt(j, b) < 0 {
				last = maxNew - 1
				break
			}
			last = max(last, endsAt(j, b))
		}
		if steps[j] != last+1 {
			t.Errorf("set %d's hook ran %d steps, want %d: its rows had all finished after step %d", j, steps[j], last+1, last)
		}
	}
	if d.rowSteps >= B*maxNew {
		t.Errorf("the backbone decoded %d rows over %d steps, no fewer than %d rows a step: finished groups were not dropped", d.rowSteps, maxNew, B)
	}
}

// TestGenerateViable: rows that the viable rule rejects end where it
// rejects them, padded after, and every other row (of every hook set
// sharing the backbone) decodes exactly as without the rule, while the
// backbone decodes fewer rows.
func TestGenerateViable(t *testing.T) {
	m, gd := loadGolden(t, "tiny-t5-v11")
	be := nn.DefaultBackend()
	B := gd.batch.B
	pad, eos := int32(m.Config.PadTokenID), int32(m.Config.EOSTokenID)
	const maxNew = 6
	scaled := &Hooks{DecoderOutput: func(g *nn.Graph, out *Output) *nn.Tensor { return g.Scale(out.DecOut, -2) }}
	hooks := []*Hooks{nil, scaled}
	// Rows whose second token is odd end there.
	viable := func(tokens []int32) bool { return len(tokens) < 2 || tokens[1]%2 == 0 }
	e := m.EncodeForDecoding(be, gd.batch.Input, gd.batch.Mask, B, gd.batch.S, nil)
	defer e.Release()
	full, cut := m.NewDecoder(be), m.NewDecoder(be)
	defer full.Release()
	defer cut.Release()
	want := full.GenerateShared(e, maxNew, hooks, nil)
	got := cut.GenerateShared(e, maxNew, hooks, viable)
	// Rows end in padding once ended; the backbone alone picks the pad id
	// as its token too, and both count the same here.
	trim := func(row []int32) string {
		for len(row) > 1 && row[len(row)-1] == pad {
			row = row[:len(row)-1]
		}
		return fmt.Sprint(row)
	}
	stopped, ran := 0, 0
	for j := range hooks {
		for b, row := range want[j] {
			end := len(row)
			for i := 1; i < len(row); i++ {
				if row[i] == eos {
					break
				}
				if !viable(row[1 : i+1]) {
					end = i + 1
					stopped++
					break
				}
			}
			if end == len(row) {
				ran++
			}
			if trim(got[j][b]) != trim(row[:end]) {
				t.Errorf("set %d row %d: with the rule %v, want %v (decoded to the end: %v)", j, b, got[j][b], row[:end], row)
			}
		}
	}
	if stopped == 0 || ran == 0 {
		t.Fatalf("%d rows stopped early, %d ran on: the test needs both", stopped, ran)
	}
	if cut.rowSteps >= full.rowSteps {
		t.Errorf("the backbone decoded %d rows with the rule, %d without", cut.rowSteps, full.rowSteps)
	}
}

// TestOnceReleasesItsWork: a memoised decoding tensor is copied off the
// step's graph and the work that made it released, so that a pack's k
// methods do not hold k sets of intermediates in one step's arena.
func TestOnceReleasesItsWork(t *testing.T) {
	g := nn.NewGraph(nn.DefaultBackend())
	g.NoGrad = true
	defer g.Release()
	before := g.Zeros(3) // allocated before: must survive
	before.Data[0] = 7
	out := &Output{Memo: map[string]*nn.Tensor{}}
	calls := 0
	compute := func() *nn.Tensor {
		calls++
		big := g.Zeros(256, 256)
		for i := range big.Data {
			big.Data[i] = float32(i % 5)
		}
		return g.Scale(big, 2)
	}
	mark := g.Mark()
	got := out.Once(g, "k", compute)
	if g.Mark() != mark {
		t.Errorf("Once left its intermediates on the graph: mark %+v, want %+v", g.Mark(), mark)
	}
	scratch := g.Zeros(256, 256) // reuses the released memory
	for i := range scratch.Data {
		scratch.Data[i] = -1
	}
	for i, v := range got.Data {
		if want := float32(2 * (i % 5)); v != want {
			t.Fatalf("memo[%d] = %g after the graph reused its memory, want %g", i, v, want)
		}
	}
	if again := out.Once(g, "k", compute); again != got || calls != 1 {
		t.Errorf("second Once: computed %d times, same tensor %v", calls, again == got)
	}
	if before.Data[0] != 7 {
		t.Errorf("a tensor allocated before Once changed: %g", before.Data[0])
	}
}

// TestSaveMeansTheSameToEveryTransformers: a saved folder says
// tie_word_embeddings exactly when it has no lm_head.weight, and
// scale_decoder_outputs the same (transformers 4 ties and scales by the
// first, 5 by the checkpoint's head and the second), writes its float
// fields as floats (transformers 5's strict configs), and loads back to
// the golden logits: tiny-t5-v11 (no head, no scale: shared.weight is
// written as its head), tiny-t5-v1 (tied and scaled), and a model with its
// own head and the scale (folded into the head).
func TestSaveMeansTheSameToEveryTransformers(t *testing.T) {
	logits := func(m *Model, bt Batch) []float32 {
		g := nn.NewGraph(nn.DefaultBackend())
		out, err := m.Forward(g, bt, nil)
		if err != nil {
			t.Fatal(err)
		}
		return out.Logits.Values()
	}
	headAndScale, _ := loadGolden(t, "tiny-t5-v11")
	yes := true
	headAndScale.Config.ScaleDecoderOutputs = &yes
	headAndScale = func() *Model { // v11's weights with a head of its own, and the scale
		m := newModel(headAndScale.Config, true)
		for i, name := range m.Params.Names {
			src := headAndScale.Params.Get(name)
			if name == "lm_head.weight" {
				src = headAndScale.Params.Get("shared.weight")
			}
			copy(m.Params.Tensors[i].Data, src.Data)
		}
		return m
	}()
	for _, tc := range []struct {
		name string
		m    *Model
	}{{"tiny-t5-v11", nil}, {"tiny-t5-v1", nil}, {"own head, scaled", headAndScale}} {
		t.Run(tc.name, func(t *testing.T) {
			_, gd := loadGolden(t, "tiny-t5-v1")
			m := tc.m
			if m == nil {
				m, gd = loadGolden(t, tc.name)
			}
			want := logits(m, gd.batch)
			dir := t.TempDir()
			if err := m.Save(dir); err != nil {
				t.Fatal(err)
			}
			raw, _ := os.ReadFile(filepath.Join(dir, "config.json"))
			var cfg map[string]any
			json.Unmarshal(raw, &cfg)
			st, err := OpenSafetensors(filepath.Join(dir, "model.safetensors"))
			if err != nil {
				t.Fatal(err)
			}
			_, hasHead := st.Tensors["lm_head.weight"]
			st.Close()
			if cfg["tie_word_embeddings"] != !hasHead || cfg["scale_decoder_outputs"] != !hasHead {
				t.Errorf("lm_head.weight written %v, config tie_word_embeddings %v, scale_decoder_outputs %v", hasHead, cfg["tie_word_embeddings"], cfg["scale_decoder_outputs"])
			}
			for _, key := range []string{`"initializer_factor": 1.0`, `"dropout_rate": `, `"layer_norm_epsilon": 1e-06`} {
				if !strings.Contains(string(raw), key) {
					t.Errorf("config.json lacks %s:\n%s", key, raw)
				}
			}
			back, err := Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			compare(t, "logits", logits(back, gd.batch), want, 1e-5, 1e-5)
		})
	}
}
