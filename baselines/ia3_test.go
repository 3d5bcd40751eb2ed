package baselines

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/t5"
)

// TestIA3FoldsIntoTheBackbone: IA³'s vectors rescale the backbone's own
// weights (the rows of a key or value projection, the columns of a
// feed-forward output), so a backbone with the vectors folded in is the
// same model. On both tiny checkpoints (ReLU v1.0, gated-GELU v1.1): at
// its initial ones IA³ is the backbone bit for bit; with the vectors
// moved, the loss and logits equal the folded backbone's, and greedy
// decoding (cross-attention keys and values computed once, the
// self-attention cache step by step) picks the same tokens.
func TestIA3FoldsIntoTheBackbone(t *testing.T) {
	gd := loadGolden(t, "prompt_tuning_5.safetensors") // its batch
	be := nn.Gonum{}
	forward := func(m *t5.Model, h *t5.Hooks) (float32, []float32) {
		g := nn.NewGraph(be)
		g.NoGrad = true
		out, err := m.Forward(g, gd.batch, h)
		if err != nil {
			t.Fatal(err)
		}
		return out.Loss.Values()[0], out.Logits.Values()
	}
	ids := []int32{5, 9, 14, 3, 7, 1, 11, 4, 1, 0, 0, 0}
	mask := []bool{true, true, true, true, true, true, true, true, true, false, false, false}
	for _, dir := range []string{"../t5/testdata/tiny-t5-v1", "../t5/testdata/tiny-t5-v11"} {
		t.Run(dir[len("../t5/testdata/"):], func(t *testing.T) {
			m, err := t5.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			backboneLoss, backboneLogits := forward(m, nil)
			meth, err := registry().New("ia3", m, nil, 1)
			if err != nil {
				t.Fatal(err)
			}
			if loss, logits := forward(m, meth.Hooks()); loss != backboneLoss || !slices.Equal(logits, backboneLogits) {
				t.Errorf("at its initial ones IA³ changes the model: loss %v, backbone %v", loss, backboneLoss)
			}
			w := meth.Weights()
			for i, v := range w.Tensors {
				for j := range v.Data {
					v.Data[j] = 1 + 0.5*float32(math.Sin(float64(3*j+i+1)))
				}
			}
			folded, err := t5.Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			for i, name := range w.Names {
				proj := strings.TrimSuffix(name, ".ia3_l")
				W := folded.Params.Get(proj + ".weight")
				if W == nil {
					t.Fatalf("no weight %s.weight for %s", proj, name)
				}
				l, out, in := w.Tensors[i].Data, W.Dim(0), W.Dim(1)
				for o := range out {
					for f := range in {
						if strings.HasSuffix(proj, ".wo") {
							W.Data[o*in+f] *= l[f] // scales the input: a column
						} else {
							W.Data[o*in+f] *= l[o] // scales the output: a row
						}
					}
				}
			}
			loss, logits := forward(m, meth.Hooks())
			wantLoss, wantLogits := forward(folded, nil)
			if math.Abs(float64(loss-wantLoss)) > 1e-5*(1+math.Abs(float64(wantLoss))) {
				t.Errorf("loss %v, folded %v", loss, wantLoss)
			}
			worst := 0.0
			for i := range logits {
				worst = math.Max(worst, math.Abs(float64(logits[i]-wantLogits[i])))
			}
			if worst > 1e-4 {
				t.Errorf("logits differ from the folded backbone's by %.3g", worst)
			}
			if loss == backboneLoss {
				t.Error("the moved vectors changed nothing: the test proves nothing")
			}
			// Decoding computes the cross-attention keys and values once,
			// through the hook: they must be the folded model's (argmax
			// tokens of a random tiny model would not tell).
			lean := *meth.Hooks()
			lean.LeanEncoder = true
			eh := m.EncodeForDecoding(be, ids, mask, 2, 6, &lean)
			ef := folded.EncodeForDecoding(be, ids, mask, 2, 6, &t5.Hooks{LeanEncoder: true})
			th, okh := eh.EncodedTensors()
			tf, okf := ef.EncodedTensors()
			if !okh || !okf {
				t.Fatal("no encoded tensors")
			}
			for name, want := range tf {
				if !strings.HasPrefix(name, "cross_") {
					continue
				}
				a, b := th[name].Values(), want.Values()
				for i := range b {
					if math.Abs(float64(a[i]-b[i])) > 1e-5*(1+math.Abs(float64(b[i]))) {
						t.Errorf("%s[%d] = %v, folded %v", name, i, a[i], b[i])
						break
					}
				}
			}
			eh.Release()
			ef.Release()
			got := m.Generate(be, ids, mask, 2, 6, 8, meth.Hooks())
			want := folded.Generate(be, ids, mask, 2, 6, 8, nil)
			for b := range want {
				if !slices.Equal(got[b], want[b]) {
					t.Errorf("row %d decodes %v, the folded backbone %v", b, got[b], want[b])
				}
			}
		})
	}
}
