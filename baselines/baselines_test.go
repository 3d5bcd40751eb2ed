package baselines

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/t5"
)

func registry() methods.Registry {
	r := methods.Registry{}
	Register(r)
	return r
}

// TestPaperParameterCounts counts each method's trainable parameters on
// t5-base shapes from the config alone and compares them with Table 1.
func TestPaperParameterCounts(t *testing.T) {
	c := t5.Sizes["t5-base"]
	_, withHead := t5.ParamShapes(c, true)
	_, backbone := t5.ParamShapes(c, false)
	total := nn.CountShapes(withHead)
	if total != 247577856 {
		t.Fatalf("t5-base with a separate lm_head has %d parameters, want 247,577,856", total)
	}
	_, bitfit := bitfitShapes(c, "decoder")
	_, bitfitAll := bitfitShapes(c, "all")
	_, lora := loraShapes(c, "decoder_self_qv", 32)
	_, loraAll := loraShapes(c, "all_qv", 32)
	_, adapter := adapterShapes(c, "block", 64)
	_, houlsby := adapterShapes(c, "houlsby", 64)
	_, ia3 := ia3Shapes(c)
	rows := []struct {
		name  string
		n     int
		want  int
		paper string // Table 1's printed percentage
	}{
		// Trained, the tied embedding counts again as the LM head
		// (methods.PaperTrainable): Table 3's 247.58 M / 100.00.
		{"full", nn.CountShapes(backbone) + c.VocabSize*c.DModel, 247577856, "100.00"},
		{"adapter (64, per block)", nn.CountShapes(adapter), 2379264, "0.96"},
		{"lora (r 32, decoder self q,v)", nn.CountShapes(lora), 1179648, "0.48"},
		{"bitfit (decoder)", nn.CountShapes(bitfit), 148224, "0.06"},
		{"prompt (20)", 20 * c.DModel, 15360, "0.01"},
		{"bitfit scope all (with lm_head)", nn.CountShapes(bitfitAll), 282496, ""},
		{"lora targets all_qv", nn.CountShapes(loraAll), 3538944, ""},
		{"adapter placement houlsby", nn.CountShapes(houlsby), 4758528, ""},
		{"lst (sidenet 96: 12+12 side blocks)", lstCount(c, 96), 5097240, ""},
		// 12 encoder blocks × (k 768 + v 768 + ff 3072) + 12 decoder
		// blocks × (self and cross k, v 4 × 768 + ff 3072): peft's count.
		{"ia3 (k, v, wo)", nn.CountShapes(ia3), 129024, ""},
	}
	for _, r := range rows {
		pct := 100 * float64(r.n) / float64(total)
		printed := fmt.Sprintf("%.2f", pct)
		t.Logf("%-32s %11d  %6.3f %%  paper %s %%", r.name, r.n, pct, r.paper)
		if r.n != r.want {
			t.Errorf("%s: %d parameters, want %d", r.name, r.n, r.want)
		}
		if r.paper != "" && printed != r.paper {
			t.Errorf("%s: %s %% at the paper's precision, Table 1 prints %s %%", r.name, printed, r.paper)
		}
	}
}

// TestPaperTrainable: on a tied checkpoint, full fine-tuning counts as
// 100 % of the paper's total (the trained embedding once more as the LM
// head); a method that leaves the embedding frozen counts what it trains.
func TestPaperTrainable(t *testing.T) {
	m := loadTiny(t)
	if m.LMHead != m.Shared {
		t.Fatal("tiny-t5-v1 is tied; the test needs it")
	}
	full, err := registry().New("full", m, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := methods.PaperTrainable(m, full.Trainable()), methods.PaperTotal(m); got != want {
		t.Errorf("full fine-tuning: %d trainable by the paper's count, want all %d", got, want)
	}
	m = loadTiny(t)
	lora, err := registry().New("lora", m, map[string]any{"rank": 2}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := methods.PaperTrainable(m, lora.Trainable()), methods.CountTrainable(lora.Trainable()); got != want {
		t.Errorf("lora: %d by the paper's count, %d trained", got, want)
	}
}

// lstCount is LST's trainable size: the side stacks and the ladder.
func lstCount(c t5.Config, ds int) int {
	sc, _ := lstSideConfig(c, ds)
	_, shapes := t5.ParamShapes(sc, false)
	_, own := lstOwnShapes(c, ds)
	return nn.CountShapes(shapes[1:]) + nn.CountShapes(own)
}

func loadTiny(t *testing.T) *t5.Model {
	t.Helper()
	m, err := t5.Load("../t5/testdata/tiny-t5-v1")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type golden struct {
	*t5.Safetensors
	batch t5.Batch
}

func loadGolden(t *testing.T, file string) golden {
	t.Helper()
	ref, err := t5.OpenSafetensors("../t5/testdata/tiny-t5-v1/reference.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ref.Close() })
	bt, err := ref.ReadBatch()
	if err != nil {
		t.Fatal(err)
	}
	s, err := t5.OpenSafetensors(filepath.Join("../t5/testdata/tiny-t5-v1", file))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return golden{s, bt}
}

func (gd golden) read(t *testing.T, name string) []float32 {
	t.Helper()
	out, _, err := gd.ReadAll(name)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func near(t *testing.T, name string, have, want []float32, atol float64) {
	t.Helper()
	if len(have) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(have), len(want))
	}
	for i := range want {
		if d := math.Abs(float64(have[i] - want[i])); d > atol+1e-4*math.Abs(float64(want[i])) {
			t.Errorf("%s[%d] = %v, want %v (diff %.3g)", name, i, have[i], want[i], d)
			return
		}
	}
}

func maxAbs(x []float32) float64 {
	m := 0.0
	for _, v := range x {
		m = math.Max(m, math.Abs(float64(v)))
	}
	return m
}

// TestLoRAMatchesPeft loads peft's LoRA weights (r 4, α 8, q and v of
// every attention) and compares logits, loss and every LoRA gradient.
func TestLoRAMatchesPeft(t *testing.T) {
	m := loadTiny(t)
	gd := loadGolden(t, "lora_r4_a8_qv.safetensors")
	meth, err := registry().New("lora", m, map[string]any{"rank": 4, "alpha": 8.0, "targets": "all_qv"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	w := meth.Weights()
	if len(w.Names) != 2*(2*2+3*2*2) {
		t.Fatalf("%d LoRA tensors, want q,v of 2 encoder + 3×2 decoder attentions, A and B each", len(w.Names))
	}
	peft := func(name string) string {
		base, kind, _ := strings.Cut(name, ".lora_")
		return "base_model.model." + base + ".lora_" + kind + ".default.weight"
	}
	for i, name := range w.Names {
		copy(w.Tensors[i].Data, gd.read(t, "weight."+peft(name)))
	}
	g := nn.NewGraph(nn.DefaultBackend())
	out, err := m.Forward(g, gd.batch, meth.Hooks())
	if err != nil {
		t.Fatal(err)
	}
	near(t, "logits", out.Logits.Data, gd.read(t, "logits"), 1e-4)
	near(t, "loss", out.Loss.Data, gd.read(t, "loss"), 1e-5)
	g.Backward(out.Loss)
	for i, name := range w.Names {
		want := gd.read(t, "grad."+peft(name))
		near(t, "grad."+name, meth.Trainable()[i].Grad, want, 1e-4*maxAbs(want))
	}
	for _, p := range m.Params.Tensors {
		if p.Grad != nil {
			t.Fatal("the backbone kept a gradient under LoRA")
		}
	}
}

// TestPromptMatchesPeft loads peft's 5-token prompt (peft stores 10 rows
// for encoder-decoder models and prepends the first 5).
func TestPromptMatchesPeft(t *testing.T) {
	m := loadTiny(t)
	gd := loadGolden(t, "prompt_tuning_5.safetensors")
	meth, err := registry().New("prompt", m, map[string]any{"prompts": 5}, 1)
	if err != nil {
		t.Fatal(err)
	}
	stored := gd.read(t, "weight.prompt_encoder.default.embedding.weight") // (10, 32)
	emb := meth.Weights().Tensors[0]
	copy(emb.Data, stored[:5*32])
	g := nn.NewGraph(nn.DefaultBackend())
	out, err := m.Forward(g, gd.batch, meth.Hooks())
	if err != nil {
		t.Fatal(err)
	}
	near(t, "logits", out.Logits.Data, gd.read(t, "logits"), 1e-4)
	near(t, "loss", out.Loss.Data, gd.read(t, "loss"), 1e-5)
	g.Backward(out.Loss)
	want := gd.read(t, "grad.prompt_encoder.default.embedding.weight")
	near(t, "grad", emb.Grad, want[:5*32], 1e-4*maxAbs(want))
	if maxAbs(want[5*32:]) != 0 {
		t.Error("peft's unused prompt rows have a gradient; the golden is not what this test assumes")
	}
}

// TestGradientsByFiniteDifferences checks every method's trainable
// gradients on the tiny model against central differences of the loss.
func TestGradientsByFiniteDifferences(t *testing.T) {
	gd := loadGolden(t, "prompt_tuning_5.safetensors")
	for _, tc := range []struct {
		method string
		arch   map[string]any
	}{
		{"bitfit", map[string]any{"scope": "all"}},
		{"adapter", map[string]any{"bottleneck": 4}},
		{"adapter", map[string]any{"bottleneck": 3, "placement": "houlsby"}},
		{"lst", map[string]any{"sidenet_dim": 8, "init": "magnitude"}},
		{"lora", map[string]any{"rank": 2}},
		{"ia3", nil},
		{"full", nil},
	} {
		t.Run(fmt.Sprint(tc.method, tc.arch), func(t *testing.T) {
			// The gated-gelu model keeps the loss smooth; ReLU kinks would
			// make central differences disagree where a step crosses zero.
			m, err := t5.Load("../t5/testdata/tiny-t5-v11")
			if err != nil {
				t.Fatal(err)
			}
			meth, err := registry().New(tc.method, m, tc.arch, 3)
			if err != nil {
				t.Fatal(err)
			}
			// Move every trainable value off its initialisation, so zero-init
			// biases and LoRA's B are exercised.
			for _, p := range meth.Trainable() {
				for i := range p.Data {
					p.Data[i] += 0.05 * float32(math.Sin(float64(7*i+3)))
				}
			}
			loss := func() float64 {
				g := nn.NewGraph(nn.Gonum{})
				g.NoGrad = true
				out, err := m.Forward(g, gd.batch, meth.Hooks())
				if err != nil {
					t.Fatal(err)
				}
				return float64(out.Loss.Data[0])
			}
			g := nn.NewGraph(nn.Gonum{})
			out, _ := m.Forward(g, gd.batch, meth.Hooks())
			g.Backward(out.Loss)
			checked := 0
			for _, p := range meth.Trainable() {
				scale := maxAbs(p.Grad)
				for _, i := range []int{0, p.Len() / 2, p.Len() - 1} {
					orig := p.Data[i]
					const eps = 2e-3
					p.Data[i] = orig + eps
					up := loss()
					p.Data[i] = orig - eps
					down := loss()
					p.Data[i] = orig
					num := (up - down) / (2 * eps)
					if d := math.Abs(num - float64(p.Grad[i])); d > 1e-3+2e-2*scale {
						t.Errorf("tensor %v[%d]: analytic %.5g, numeric %.5g", p.Shape, i, p.Grad[i], num)
					}
					checked++
				}
			}
			if checked != 3*len(meth.Trainable()) {
				t.Errorf("checked %d values of %d tensors", checked, len(meth.Trainable()))
			}
		})
	}
}

func TestSettingsValidation(t *testing.T) {
	for _, tc := range []struct {
		method string
		arch   map[string]any
		want   string
	}{
		{"lora", map[string]any{"rnak": 8}, `lora: unknown architecture setting "rnak"`},
		{"lora", map[string]any{"rank": 0}, "lora: architecture setting rank: 0 is below 1"},
		{"lora", map[string]any{"rank": 2.5}, "rank: 2.5 is not a whole number"},
		{"adapter", map[string]any{"placement": "everywhere"}, "placement: everywhere is not one of block, houlsby"},
		{"bitfit", map[string]any{"scope": 3}, "scope: 3 is not one of decoder, all"},
		{"prompt", map[string]any{"prompts": 100000}, "prompts: 100000 prompts need"},
		{"ia3", map[string]any{"rank": 4}, `ia3: unknown architecture setting "rank"`},
		{"readx", nil, `unknown method "readx"`},
	} {
		_, err := registry().New(tc.method, loadTiny(t), tc.arch, 1)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %v: error %v, want %q", tc.method, tc.arch, err, tc.want)
		}
	}
}

// TestLSTPruningKeepsEverythingAtFullWidth checks the pruning walk: at the
// backbone's own width every channel is kept, so the side blocks start as
// exact copies of the backbone's.
func TestLSTPruningKeepsEverythingAtFullWidth(t *testing.T) {
	m := loadTiny(t)
	meth, err := registry().New("lst", m, map[string]any{"sidenet_dim": m.Config.DModel, "init": "magnitude"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	side := meth.Weights()
	checked := 0
	for i, name := range m.Params.Names {
		if name == "shared.weight" {
			continue
		}
		s := side.Get("side." + name)
		if s == nil {
			t.Fatalf("side network lacks %s", name)
		}
		near(t, name, s.Data, m.Params.Tensors[i].Data, 0)
		checked++
	}
	if checked < 40 {
		t.Errorf("compared %d tensors", checked)
	}
}

// TestLSTPruningRanksByAbsoluteImportance checks the first step of the
// pruning walk at part width: the hidden selection keeps the embedding's
// columns of largest summed |score| (by magnitude, large negative weights
// win), and the side's first layer norm holds the backbone's at those
// columns, in order; a Fisher importance then selects anew.
func TestLSTPruningRanksByAbsoluteImportance(t *testing.T) {
	m := loadTiny(t)
	d, vocab := m.Config.DModel, m.Config.VocabSize
	const norm = "encoder.block.0.layer.0.layer_norm.weight"
	for c := range d {
		m.Params.Get(norm).Data[c] = float32(c + 1)
	}
	kept := func(meth methods.Method) []int {
		var cols []int
		for _, v := range meth.Weights().Get("side." + norm).Data {
			cols = append(cols, int(v)-1)
		}
		return cols
	}
	emb := m.Params.Get("shared.weight").Data
	byMagnitude := []int{2, 5, 17, 30}
	for r := range vocab {
		for _, c := range byMagnitude {
			emb[r*d+c] = -1
		}
	}
	meth, err := registry().New("lst", m, map[string]any{"sidenet_dim": len(byMagnitude), "init": "magnitude"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := kept(meth); fmt.Sprint(got) != fmt.Sprint(byMagnitude) {
		t.Fatalf("by magnitude: side kept columns %v, want %v", got, byMagnitude)
	}

	byFisher := []int{0, 9, 10, 31}
	imp := methods.Importance{}
	for i, name := range m.Params.Names {
		v := make([]float32, m.Params.Tensors[i].Len())
		for j := range v {
			v[j] = 1
		}
		imp[name] = v
	}
	for r := range vocab {
		for _, c := range byFisher {
			imp["shared.weight"][r*d+c] = 3
		}
	}
	meth, err = registry().New("lst", m, map[string]any{"sidenet_dim": len(byFisher), "init": "fisher"}, 1)
	if err != nil {
		t.Fatal(err)
	}
	meth.(methods.DataInitializer).InitFrom(imp)
	if got := kept(meth); fmt.Sprint(got) != fmt.Sprint(byFisher) {
		t.Fatalf("by Fisher importance: side kept columns %v, want %v", got, byFisher)
	}
}

// TestLSTDecodesLikeWholeForwardPasses holds LST's incremental greedy
// decoding (the side decoder one position per step with its keys and
// values cached in the call's Memo, the side encoder and its cross keys
// and values memoised per call, the encoding shared by two calls) to the
// plain definition: each token is the argmax of a whole forward pass over
// the tokens before it. Packed with a second LST trial and the plain
// backbone, sharing the backbone decoder's rows, each decodes so too.
func TestLSTDecodesLikeWholeForwardPasses(t *testing.T) {
	m := loadTiny(t)
	hooks := []*t5.Hooks{nil}
	for _, seed := range []uint64{3, 8} {
		meth, err := registry().New("lst", m, map[string]any{"sidenet_dim": 8, "init": "random"}, seed)
		if err != nil {
			t.Fatal(err)
		}
		hooks = append(hooks, meth.Hooks())
	}
	be := nn.DefaultBackend()
	B, S, n := 2, 6, 5
	ids := []int32{5, 9, 14, 3, 7, 1, 11, 4, 1, 0, 0, 0}
	mask := []bool{true, true, true, true, true, true, true, true, true, false, false, false}
	c := m.Config
	// check holds rows decoded with hooks h to the whole forward pass
	// over them: causal, so position i's logits are those of the prefix.
	check := func(what string, h *t5.Hooks, rows [][]int32) {
		T := len(rows[0]) - 1
		labels := make([]int32, B*T)
		for b := range rows {
			copy(labels[b*T:], rows[b][1:])
		}
		g := nn.NewGraph(be)
		defer g.Release()
		g.NoGrad = true
		out, err := m.Forward(g, t5.Batch{B: B, S: S, T: T, Input: ids, Mask: mask, Labels: labels}, h)
		if err != nil {
			t.Fatal(err)
		}
		V, lv := c.VocabSize, out.Logits.Values()
		for b := range rows {
			for i := range T {
				row := lv[(b*T+i)*V : (b*T+i+1)*V]
				best := 0
				for v := range row {
					if row[v] > row[best] {
						best = v
					}
				}
				if int32(best) != rows[b][i+1] {
					t.Errorf("%s: row %d %v: position %d is %d, a whole forward pass picks %d", what, b, rows[b], i, rows[b][i+1], best)
					break
				}
				if best == c.EOSTokenID {
					break
				}
			}
		}
	}
	e := m.EncodeForDecoding(be, ids, mask, B, S, hooks[1])
	defer e.Release()
	var alone [][]int32
	for call := range 2 {
		alone = m.GenerateFrom(be, e, n, hooks[1])
		check(fmt.Sprintf("alone, call %d", call), hooks[1], alone)
	}
	packed := m.GenerateShared(be, e, n, hooks)
	t.Logf("decoded alone %v, packed %v", alone, packed)
	for j, h := range hooks {
		check(fmt.Sprintf("packed, set %d", j), h, packed[j])
	}
	if len(alone[0]) < 4 || fmt.Sprint(packed[1]) == fmt.Sprint(packed[2]) {
		t.Errorf("the two trials decode %v and %v: too short or alike to tell decoders apart", packed[1], packed[2])
	}
}

// BenchmarkLSTInit times building an LST trial on t5-small's shapes
// (sidenet_dim 64) with its pruning by magnitude, and pruning it again by
// a Fisher-style importance, as a trial with init: fisher does.
func BenchmarkLSTInit(b *testing.B) {
	m, err := t5.NewBenchModel("t5-small")
	if err != nil {
		b.Fatal(err)
	}
	imp := methods.Importance{}
	for i, name := range m.Params.Names {
		v := make([]float32, m.Params.Tensors[i].Len())
		for j, w := range m.Params.Tensors[i].Data {
			v[j] = w * w
		}
		imp[name] = v
	}
	for b.Loop() {
		meth, err := registry().New("lst", m, map[string]any{"sidenet_dim": 64}, 1)
		if err != nil {
			b.Fatal(err)
		}
		meth.(methods.DataInitializer).InitFrom(imp)
	}
}
