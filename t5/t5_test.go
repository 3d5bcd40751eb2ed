package t5

import (
	"fmt"
	"math"
	"path/filepath"
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
	ids, shape, err := s.ReadInts("input_ids")
	if err != nil {
		t.Fatal(err)
	}
	am, _, _ := s.ReadInts("attention_mask")
	labels, lshape, _ := s.ReadInts("labels")
	mask := make([]bool, len(am))
	for i, v := range am {
		mask[i] = v != 0
	}
	return m, golden{s, Batch{B: shape[0], S: shape[1], T: lshape[1], Input: ids, Mask: mask, Labels: labels}}
}

func (gd golden) tensor(t *testing.T, name string) []float32 {
	t.Helper()
	ti, ok := gd.Tensors[name]
	if !ok {
		t.Fatalf("golden has no %q", name)
	}
	n := 1
	for _, d := range ti.Shape {
		n *= d
	}
	out := make([]float32, n)
	if err := gd.Read(name, out); err != nil {
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

func TestGolden(t *testing.T) {
	for _, model := range []string{"tiny-t5-v1", "tiny-t5-v11"} {
		t.Run(model, func(t *testing.T) {
			m, gd := loadGolden(t, model)
			trainable := m.Params.EnableGrad(func(string) bool { return true })
			g := nn.NewGraph(nn.DefaultBackend())
			out, err := m.Forward(g, gd.batch, nil)
			if err != nil {
				t.Fatal(err)
			}
			compare(t, "loss", out.Loss.Data, gd.tensor(t, "loss"), 1e-5, 1e-5)
			compare(t, "logits", out.Logits.Data, gd.tensor(t, "logits"), 1e-4, 1e-4)
			compare(t, "encoder_last_hidden_state", out.EncOut.Data, gd.tensor(t, "encoder_last_hidden_state"), 1e-4, 1e-4)
			for i, hs := range out.EncHidden {
				compare(t, fmt.Sprintf("encoder_hidden_states.%d", i), hs.Data, gd.tensor(t, fmt.Sprintf("encoder_hidden_states.%d", i)), 1e-4, 1e-4)
			}
			for i, hs := range out.DecHidden {
				compare(t, fmt.Sprintf("decoder_hidden_states.%d", i), hs.Data, gd.tensor(t, fmt.Sprintf("decoder_hidden_states.%d", i)), 1e-4, 1e-4)
			}
			for i := range out.EncBlockOut {
				compare(t, fmt.Sprintf("enc_block_out.%d", i), out.EncBlockOut[i].Data, gd.tensor(t, fmt.Sprintf("enc_block_out.%d", i)), 1e-4, 1e-4)
				compare(t, fmt.Sprintf("encoder_attentions.%d", i), out.EncAttn[i].Data, gd.tensor(t, fmt.Sprintf("encoder_attentions.%d", i)), 1e-4, 1e-4)
			}
			for i := range out.DecBlockOut {
				compare(t, fmt.Sprintf("dec_block_out.%d", i), out.DecBlockOut[i].Data, gd.tensor(t, fmt.Sprintf("dec_block_out.%d", i)), 1e-4, 1e-4)
				compare(t, fmt.Sprintf("decoder_attentions.%d", i), out.DecAttn[i].Data, gd.tensor(t, fmt.Sprintf("decoder_attentions.%d", i)), 1e-4, 1e-4)
				compare(t, fmt.Sprintf("cross_attentions.%d", i), out.CrossAttn[i].Data, gd.tensor(t, fmt.Sprintf("cross_attentions.%d", i)), 1e-4, 1e-4)
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
				compare(t, "grad."+name, trainable[i].Grad, want, 1e-4*scale, 0)
				checked++
			}
			if checked != len(m.Params.Names) || checked < 50 {
				t.Errorf("checked %d gradients", checked)
			}
		})
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
		names, shapes := paramShapes(tc.c, false)
		n := 0
		for _, s := range shapes {
			k := 1
			for _, d := range s {
				k *= d
			}
			n += k
		}
		if n != tc.want || len(names) != len(shapes) {
			t.Errorf("%s: %d parameters, want %d (shared/reference/t5-text-to-text.md §2.2)", tc.name, n, tc.want)
		}
	}
}
