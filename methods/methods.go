package methods

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/t5"
)

// Method is a fine-tuning method attached to one backbone.
type Method interface {
	// Trainable returns the tensors the optimiser updates, each with a
	// gradient buffer.
	Trainable() []*nn.Tensor
	// Hooks returns the method's changes to the backbone's forward pass;
	// the trainer uses them for the loss and for generation.
	Hooks() *t5.Hooks
	// Weights returns the tensors Save writes: the method's own (for full
	// fine-tuning, the whole backbone).
	Weights() *nn.Params
}

// Decayer is implemented by methods whose parameters take weight decay
// (full fine-tuning); PETL parameters take none.
type Decayer interface {
	WeightDecay() bool
}

// Dropouter is implemented by methods that train with the backbone's
// dropout on (full fine-tuning); the others run the frozen backbone
// without it unless a trial sets it.
type Dropouter interface {
	BackboneDropout() bool
}

// StateTrainer is implemented by methods whose training loss depends on
// the frozen backbone only through its block outputs, its head-averaged
// cross-attention, its final decoder output and its embeddings
// (t5.Model.HeadLoss): the trainer may then compute those once and train
// from a cache.
type StateTrainer interface {
	TrainsFromStates() bool
}

// DataInitializer is implemented by methods whose initialisation looks at
// training data (LST's Fisher-ranked pruning). Importance reads the data
// through the frozen backbone alone, so the trainer computes it once, with
// batches of single training examples, and initialises every trial of a
// pack from it; the trainer also keeps it in a file beside the state
// cache, so later trials on the same backbone and examples read it.
type DataInitializer interface {
	// ImportanceWanted reports whether the method's settings initialise
	// it from data (else Importance is not called).
	ImportanceWanted() bool
	Importance(be nn.Backend, batches []t5.Batch) (Importance, error)
	InitFrom(imp Importance)
}

// Merger is implemented by methods whose trained weights fold into the
// backbone's own tensors exactly (LoRA: W + (α/r)·B·A; IA³: rows or
// columns of W scaled): Merge changes m's tensors so that m without hooks
// computes what m with the method's hooks did. `sweep export --merge`
// writes the result as a plain T5.
type Merger interface {
	Merge(m *t5.Model) error
}

// Importance scores every element of the backbone's tensors, by name.
type Importance map[string][]float32

// Constructor attaches a method to m with settings s; seed drives its
// random initialisation.
type Constructor func(m *t5.Model, s *Settings, seed uint64) (Method, error)

// Entry is one method of a Registry: how it is built, and how the
// paper's tables name and order it.
type Entry struct {
	// New builds the method; nil for a name the orchestrator accepts but
	// no trainer builds (the synthetic trainer's test double).
	New     Constructor
	Display string // its name in tables: "Full-tuning", "LoRA"
	Order   int    // its row in the paper's tables, smaller first
}

// Registry maps method names to their entries: the one list of methods
// that the sweep file's parser, the trainer and the tables all read.
type Registry map[string]Entry

// Names returns the registered methods in table order.
func (r Registry) Names() []string {
	names := make([]string, 0, len(r))
	for n := range r {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		if oi, oj := r[names[i]].Order, r[names[j]].Order; oi != oj {
			return oi < oj
		}
		return names[i] < names[j]
	})
	return names
}

// Display is a method's name in tables; an unregistered one's own.
func (r Registry) Display(name string) string {
	if e, ok := r[name]; ok && e.Display != "" {
		return e.Display
	}
	return name
}

// Rank is a method's place in table order (its index in Names);
// unregistered ones come last. Tables sort by it, so it counts rather
// than sorting the registry at each comparison.
func (r Registry) Rank(name string) int {
	e, ok := r[name]
	if !ok {
		return len(r)
	}
	rank := 0
	for n, o := range r {
		if o.Order < e.Order || o.Order == e.Order && n < name {
			rank++
		}
	}
	return rank
}

// New builds method name on m from the architecture settings arch,
// rejecting unknown keys and bad values with an error naming them.
func (r Registry) New(name string, m *t5.Model, arch map[string]any, seed uint64) (Method, error) {
	e, ok := r[name]
	if !ok || e.New == nil {
		var names []string
		for _, n := range r.Names() {
			if r[n].New != nil {
				names = append(names, n)
			}
		}
		return nil, fmt.Errorf("methods: unknown method %q (known: %s)", name, strings.Join(names, ", "))
	}
	s := &Settings{method: name, values: arch, used: map[string]bool{}}
	meth, err := e.New(m, s, seed)
	if err != nil {
		return nil, err
	}
	if err := s.unused(); err != nil {
		return nil, err
	}
	return meth, nil
}

// Settings are a study's architecture settings with typed, validating
// getters; keys nobody asked for are errors.
type Settings struct {
	method string
	values map[string]any
	used   map[string]bool
}

// Err returns an error about key.
func (s *Settings) Err(key, format string, args ...any) error {
	return fmt.Errorf("methods: %s: architecture setting %s: %s", s.method, key, fmt.Sprintf(format, args...))
}

func (s *Settings) get(key string) (any, bool) {
	s.used[key] = true
	v, ok := s.values[key]
	return v, ok
}

// Int returns key as an integer at least lo, or def when absent.
func (s *Settings) Int(key string, def, lo int) (int, error) {
	v, ok := s.get(key)
	if !ok {
		return def, nil
	}
	var n int
	switch x := v.(type) {
	case int:
		n = x
	case int64:
		n = int(x)
	case float64:
		if x != math.Trunc(x) {
			return 0, s.Err(key, "%v is not a whole number", v)
		}
		n = int(x)
	default:
		return 0, s.Err(key, "%v is not a number", v)
	}
	if n < lo {
		return 0, s.Err(key, "%d is below %d", n, lo)
	}
	return n, nil
}

// Float returns key as a number, or def when absent.
func (s *Settings) Float(key string, def float64) (float64, error) {
	v, ok := s.get(key)
	if !ok {
		return def, nil
	}
	if f, ok := Number(v); ok {
		return f, nil
	}
	return 0, s.Err(key, "%v is not a number", v)
}

// Number returns a number decoded from YAML or JSON (int, int64 or
// float64) as a float64; ok is false for anything else.
func Number(v any) (f float64, ok bool) {
	switch x := v.(type) {
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

// Bool returns key as true or false, or def when absent.
func (s *Settings) Bool(key string, def bool) (bool, error) {
	v, ok := s.get(key)
	if !ok {
		return def, nil
	}
	b, isBool := v.(bool)
	if !isBool {
		return false, s.Err(key, "%v is not true or false", v)
	}
	return b, nil
}

// Choice returns key as one of choices (the first is the default).
func (s *Settings) Choice(key string, choices ...string) (string, error) {
	v, ok := s.get(key)
	if !ok {
		return choices[0], nil
	}
	str, isStr := v.(string)
	for _, c := range choices {
		if isStr && str == c {
			return c, nil
		}
	}
	return "", s.Err(key, "%v is not one of %s", v, strings.Join(choices, ", "))
}

// Ignore marks keys that do not shape the model (e.g. a test double's
// knobs, or "name") as known.
func (s *Settings) Ignore(keys ...string) {
	for _, k := range keys {
		s.used[k] = true
	}
}

func (s *Settings) unused() error {
	var extra []string
	for k := range s.values {
		if !s.used[k] {
			extra = append(extra, k)
		}
	}
	if len(extra) == 0 {
		return nil
	}
	sort.Strings(extra)
	known := make([]string, 0, len(s.used))
	for k := range s.used {
		known = append(known, k)
	}
	sort.Strings(known)
	return fmt.Errorf("methods: %s: unknown architecture setting %q (known: %s)", s.method, extra[0], strings.Join(known, ", "))
}

// CountTrainable returns the number of values in ts.
func CountTrainable(ts []*nn.Tensor) int {
	n := 0
	for _, t := range ts {
		n += t.Len()
	}
	return n
}

// PaperTotal is the parameter count the READ paper divides by: the
// backbone with the LM head counted as its own matrix even when tied
// (247,577,856 for t5-base).
func PaperTotal(m *t5.Model) int {
	n := m.Params.Count()
	if m.LMHead == m.Shared {
		n += m.Shared.Len()
	}
	return n
}

// PaperTrainable counts trainable by the paper's convention (see
// PaperTotal): a tied embedding that is trained counts twice, once as the
// LM head, so that full fine-tuning is 100 % of PaperTotal, as Table 3's
// 247.58 M / 100.00 for t5-base.
func PaperTrainable(m *t5.Model, trainable []*nn.Tensor) int {
	n := CountTrainable(trainable)
	if m.LMHead == m.Shared {
		for _, t := range trainable {
			if t == m.Shared {
				n += m.Shared.Len()
				break
			}
		}
	}
	return n
}
