package read

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/t5"
)

// TestParameterCounts checks READ's size from the config alone against the
// paper (shared/reference/methods.md §0).
func TestParameterCounts(t *testing.T) {
	base, large := t5.Sizes["t5-base"], t5.Sizes["t5-large"]
	gru256 := Options{Cell: "gru", Hidden: 256, Recurrence: true}
	_, withHead := t5.ParamShapes(base, true)
	total := nn.CountShapes(withHead)
	for _, tc := range []struct {
		name string
		c    t5.Config
		o    Options
		want int
	}{
		{"GRU/256 on t5-base", base, gru256, 1972224},
		{"GRU/256 on t5-large", large, gru256, 2497536},
		{"GRU/256 without recurrence on t5-base (12×)", base, Options{Cell: "gru", Hidden: 256}, 12 * 1972224},
		{"GRU/128 on t5-base", base, Options{Cell: "gru", Hidden: 128, Recurrence: true}, 2*(768+3*128*768+3*128*128+6*128) + 2*(128*768+768)},
		{"LSTM/128 on t5-base", base, Options{Cell: "lstm", Hidden: 128, Recurrence: true}, 2*(768+4*128*768+4*128*128+8*128) + 2*(128*768+768)},
	} {
		_, shapes := Shapes(tc.c, tc.o)
		n := nn.CountShapes(shapes)
		t.Logf("%-45s %10d  %.3f %% of t5-base", tc.name, n, 100*float64(n)/float64(total))
		if n != tc.want {
			t.Errorf("%s: %d parameters, want %d", tc.name, n, tc.want)
		}
	}
	_, shapes := Shapes(base, gru256)
	if pct := fmt.Sprintf("%.2f", 100*float64(nn.CountShapes(shapes))/float64(total)); pct != "0.80" {
		t.Errorf("READ is %s %% of t5-base, Table 1 prints 0.80 %%", pct)
	}
	_, shapes = Shapes(base, Options{Cell: "gru", Hidden: 256})
	if pct := fmt.Sprintf("%.1f", 100*float64(nn.CountShapes(shapes))/float64(total)); pct != "9.6" {
		t.Errorf("READ without recurrence is %s %% of t5-base, Table 2 prints 9.6 %%", pct)
	}
}

func batch(t *testing.T) t5.Batch {
	t.Helper()
	ref, err := t5.OpenSafetensors("../t5/testdata/tiny-t5-v11/reference.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	bt, err := ref.ReadBatch()
	if err != nil {
		t.Fatal(err)
	}
	return bt
}

func attach(t *testing.T, arch map[string]any) (*t5.Model, methods.Method) {
	t.Helper()
	m, err := t5.Load("../t5/testdata/tiny-t5-v11")
	if err != nil {
		t.Fatal(err)
	}
	r := methods.Registry{}
	Register(r)
	meth, err := r.New("read", m, arch, 5)
	if err != nil {
		t.Fatal(err)
	}
	return m, meth
}

var variants = []map[string]any{
	{"hidden": 6},
	{"hidden": 6, "variant": "B"},
	{"hidden": 5, "cell": "lstm"},
	{"hidden": 5, "cell": "rnn", "agg": "mean"},
	{"hidden": 4, "merge": "pre_norm"},
	{"hidden": 4, "recurrence": false},
	{"hidden": 4, "recurrence": false, "cell": "lstm", "variant": "B", "merge": "pre_norm"},
}

// TestGradients checks every READ tensor's gradient against central
// differences of the loss, for every switch, and that no gradient reaches
// the backbone.
func TestGradients(t *testing.T) {
	bt := batch(t)
	for _, arch := range variants {
		t.Run(fmt.Sprint(arch), func(t *testing.T) {
			m, meth := attach(t, arch)
			loss := func() float64 {
				g := nn.NewGraph(nn.Gonum{})
				g.NoGrad = true
				out, err := m.Forward(g, bt, meth.Hooks())
				if err != nil {
					t.Fatal(err)
				}
				return float64(out.Loss.Data[0])
			}
			g := nn.NewGraph(nn.Gonum{})
			out, _ := m.Forward(g, bt, meth.Hooks())
			g.Backward(out.Loss)
			for _, p := range m.Params.Tensors {
				if p.Grad != nil {
					t.Fatal("a backbone tensor has a gradient")
				}
			}
			for k, p := range meth.Trainable() {
				name := meth.Weights().Names[k]
				scale := 0.0
				for _, v := range p.Grad {
					scale = math.Max(scale, math.Abs(float64(v)))
				}
				if scale == 0 {
					// Layer 0's own weight_hh multiplies h₀ = 0: no gradient, as in PyTorch.
					if !strings.HasSuffix(name, ".0.cell.weight_hh") {
						t.Errorf("%s has no gradient", name)
					}
					continue
				}
				for _, i := range []int{0, p.Len() / 3, p.Len() - 1} {
					orig := p.Data[i]
					const eps = 2e-3
					p.Data[i] = orig + eps
					up := loss()
					p.Data[i] = orig - eps
					down := loss()
					p.Data[i] = orig
					num := (up - down) / (2 * eps)
					// The loss is a float32: the central difference moves in
					// steps of its ulp over 2·eps (2.4e-4 for a loss of 15),
					// and cannot tell apart gradients closer than that.
					step := float64(math.Nextafter32(float32(up), float32(math.Inf(1)))-float32(up)) / (2 * eps)
					if d := math.Abs(num - float64(p.Grad[i])); d > 2e-4+2e-2*scale+2*step {
						t.Errorf("%s[%d]: analytic %.6g, numeric %.6g", name, i, p.Grad[i], num)
					}
				}
			}
		})
	}
}

// TestGenerateMatchesForward checks that READ's correction inside cached
// greedy decoding gives the tokens a full forward pass picks.
func TestGenerateMatchesForward(t *testing.T) {
	bt := batch(t)
	for _, arch := range variants {
		m, meth := attach(t, arch)
		gen := m.Generate(nn.DefaultBackend(), bt.Input, bt.Mask, bt.B, bt.S, 4, meth.Hooks())
		T := len(gen[0]) - 1
		labels := make([]int32, bt.B*T)
		for b := range gen {
			copy(labels[b*T:], gen[b][1:])
		}
		g := nn.NewGraph(nn.DefaultBackend())
		out, err := m.Forward(g, t5.Batch{B: bt.B, S: bt.S, T: T, Input: bt.Input, Mask: bt.Mask, Labels: labels}, meth.Hooks())
		if err != nil {
			t.Fatal(err)
		}
		V := m.Config.VocabSize
		for b := 0; b < bt.B; b++ {
			for i := 0; i < T && gen[b][i] != int32(m.Config.EOSTokenID); i++ {
				row := out.Logits.Data[(b*T+i)*V : (b*T+i+1)*V]
				best := 0
				for j, v := range row {
					if v > row[best] {
						best = j
					}
				}
				if int32(best) != gen[b][i+1] {
					t.Errorf("%v row %d step %d: forward %d, generate %d", arch, b, i, best, gen[b][i+1])
				}
			}
		}
	}
}

func TestSettings(t *testing.T) {
	m, _ := attach(t, nil)
	r := methods.Registry{}
	Register(r)
	for arch, want := range map[string]map[string]any{
		"cell: transformer is not one of gru, lstm, rnn": {"cell": "transformer"},
		"variant: C is not one of":                       {"variant": "C"},
		"recurrence: yes is not true or false":           {"recurrence": "yes"},
		`unknown architecture setting "layers"`:          {"layers": 3},
	} {
		if _, err := r.New("read", m, want, 1); err == nil || !containsAll(err.Error(), arch) {
			t.Errorf("%v: %v, want %q", want, err, arch)
		}
	}
}

func containsAll(s, sub string) bool { return strings.Contains(s, sub) }

// TestGenerateShared decodes one encoded batch for five READ trials at
// once, as a pack's evaluation does, with corrections large enough that
// their tokens part ways: each trial's rows are exactly those it decodes
// alone.
func TestGenerateShared(t *testing.T) {
	bt := batch(t)
	m, _ := attach(t, nil)
	r := methods.Registry{}
	Register(r)
	be := nn.DefaultBackend()
	var hooks []*t5.Hooks
	for seed := range 5 {
		meth, err := r.New("read", m, map[string]any{"hidden": 6}, uint64(seed))
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range meth.Trainable() {
			for i := range w.Data {
				w.Data[i] *= float32(1 + 10*seed)
			}
		}
		hooks = append(hooks, meth.Hooks())
	}
	e := m.EncodeForDecoding(be, bt.Input, bt.Mask, bt.B, bt.S, hooks[0])
	defer e.Release()
	shared := m.GenerateShared(be, e, 6, hooks)
	parted := false
	for j, h := range hooks {
		alone := m.Generate(be, bt.Input, bt.Mask, bt.B, bt.S, 6, h)
		if fmt.Sprint(alone) != fmt.Sprint(shared[j]) {
			t.Errorf("trial %d: shared %v, alone %v", j, shared[j], alone)
		}
		parted = parted || fmt.Sprint(shared[j]) != fmt.Sprint(shared[0])
	}
	if !parted {
		t.Error("every trial decoded the same tokens: the test does not reach the regrouping")
	}
}
