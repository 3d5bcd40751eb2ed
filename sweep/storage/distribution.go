package storage

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// DistKind names the three distribution classes Optuna stores.
type DistKind int

const (
	FloatDist DistKind = iota
	IntDist
	CategoricalDist
)

// Distribution is a parameter's search domain, stored as Optuna's
// distribution JSON. Internal values are float64: the raw number for float
// and int distributions (never its logarithm), the index for categorical ones.
type Distribution struct {
	Kind      DistKind
	Low, High float64 // inclusive bounds; ints are whole numbers
	Log       bool
	Step      float64 // 0: continuous float; int distributions always have one (default 1)
	Choices   []any   // categorical only: strings, numbers, booleans or nil
}

// Float returns a continuous float distribution on [low, high].
func Float(low, high float64, log bool) Distribution {
	return Distribution{Kind: FloatDist, Low: low, High: high, Log: log}
}

// Validate reports a distribution that Optuna would reject.
func (d Distribution) Validate() error {
	switch d.Kind {
	case FloatDist, IntDist:
		if !(d.Low <= d.High) || math.IsInf(d.Low, 0) || math.IsInf(d.High, 0) {
			return fmt.Errorf("low=%g must not exceed high=%g", d.Low, d.High)
		}
		if d.Log && d.Low <= 0 {
			return fmt.Errorf("log scale needs low > 0, got low=%g", d.Low)
		}
		if d.Log && d.Step != 0 && d.Kind == FloatDist {
			return fmt.Errorf("step and log cannot be used together")
		}
		if d.Step < 0 {
			return fmt.Errorf("step=%g must be positive", d.Step)
		}
		if d.Kind == IntDist {
			if d.Low != math.Trunc(d.Low) || d.High != math.Trunc(d.High) || d.Step != math.Trunc(d.Step) || d.Step == 0 {
				return fmt.Errorf("int distribution needs whole low, high and step")
			}
			if d.Log && d.Step != 1 {
				return fmt.Errorf("log scale int distribution needs step 1")
			}
		}
	case CategoricalDist:
		if len(d.Choices) == 0 {
			return fmt.Errorf("categorical distribution needs at least one choice")
		}
	default:
		return fmt.Errorf("unknown distribution kind %d", d.Kind)
	}
	return nil
}

// Single reports whether the distribution admits exactly one value.
func (d Distribution) Single() bool {
	switch d.Kind {
	case CategoricalDist:
		return len(d.Choices) == 1
	case IntDist:
		return d.Low == d.High || !d.Log && d.High-d.Low < d.Step
	}
	if d.Step != 0 {
		// Optuna compares the decimal forms: 0.3 − 0.1 < 0.2 is false there,
		// though true in binary floating point.
		return d.Low == d.High || decimal(d.High).Sub(decimal(d.High), decimal(d.Low)).Cmp(decimal(d.Step)) < 0
	}
	return d.Low == d.High
}

// decimal is x as Python's str prints it (the shortest form that reads back
// as x), exactly.
func decimal(x float64) *big.Rat {
	r, _ := new(big.Rat).SetString(strconv.FormatFloat(x, 'g', -1, 64))
	return r
}

// Contains reports whether internal value v lies in the distribution.
func (d Distribution) Contains(v float64) bool {
	if math.IsNaN(v) {
		return false
	}
	if d.Kind == CategoricalDist {
		return v == math.Trunc(v) && v >= 0 && int(v) < len(d.Choices)
	}
	if v < d.Low || v > d.High {
		return false
	}
	if d.Step != 0 {
		k := (v - d.Low) / d.Step
		return math.Abs(k-math.Round(k)) < 1e-8
	}
	return true
}

// ToExternal maps an internal value to what the objective sees.
func (d Distribution) ToExternal(v float64) any {
	switch d.Kind {
	case IntDist:
		return int64(math.Round(v))
	case CategoricalDist:
		i := int(v)
		if i < 0 || i >= len(d.Choices) {
			return nil
		}
		return d.Choices[i]
	}
	return v
}

// ToInternal maps an external value (as decoded from JSON) to the stored
// float. Categorical values are matched by their JSON text.
func (d Distribution) ToInternal(v any) (float64, error) {
	if d.Kind == CategoricalDist {
		want, _ := json.Marshal(v)
		for i, c := range d.Choices {
			got, _ := json.Marshal(c)
			if bytes.Equal(got, want) {
				return float64(i), nil
			}
		}
		return 0, fmt.Errorf("value %s is not one of the choices", want)
	}
	switch x := v.(type) {
	case float64:
		return x, nil
	case int:
		return float64(x), nil
	case int64:
		return float64(x), nil
	case json.Number:
		return x.Float64()
	}
	return 0, fmt.Errorf("value %v (%T) is not a number", v, v)
}

type distJSON struct {
	Name       string                     `json:"name"`
	Attributes map[string]json.RawMessage `json:"attributes"`
}

// MarshalJSON writes Optuna's distribution JSON, attribute order included.
func (d Distribution) MarshalJSON() ([]byte, error) {
	num := func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
	var b bytes.Buffer
	switch d.Kind {
	case FloatDist:
		step := "null"
		if d.Step != 0 {
			step = num(d.Step)
		}
		fmt.Fprintf(&b, `{"name": "FloatDistribution", "attributes": {"step": %s, "low": %s, "high": %s, "log": %t}}`,
			step, num(d.Low), num(d.High), d.Log)
	case IntDist:
		fmt.Fprintf(&b, `{"name": "IntDistribution", "attributes": {"log": %t, "step": %d, "low": %d, "high": %d}}`,
			d.Log, int64(d.Step), int64(d.Low), int64(d.High))
	case CategoricalDist:
		choices, err := json.Marshal(d.Choices)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, `{"name": "CategoricalDistribution", "attributes": {"choices": %s}}`, bytes.ReplaceAll(choices, []byte(","), []byte(", ")))
	default:
		return nil, fmt.Errorf("storage: unknown distribution kind %d", d.Kind)
	}
	return b.Bytes(), nil
}

// UnmarshalJSON reads Optuna's distribution JSON, including the pre-3.0
// names (UniformDistribution, LogUniformDistribution, ...), the
// abbreviated form Optuna also reads ({"type": "float", "low": ...}), and
// the NaN and Infinity that Python's json writes for such choices.
func (d *Distribution) UnmarshalJSON(data []byte) error {
	data = quoteNonFinite(data)
	var raw distJSON
	if err := json.Unmarshal(data, &raw); err != nil {
		return fmt.Errorf("storage: distribution: %w", err)
	}
	if raw.Name == "" {
		if err := raw.fromAbbreviated(data); err != nil {
			return err
		}
	}
	get := func(key string, dst any) error {
		v, ok := raw.Attributes[key]
		if !ok || string(v) == "null" {
			return nil
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return fmt.Errorf("storage: %s attribute %q: %w", raw.Name, key, err)
		}
		return nil
	}
	*d = Distribution{}
	var err error
	switch raw.Name {
	case "FloatDistribution", "UniformDistribution", "LogUniformDistribution", "DiscreteUniformDistribution":
		d.Kind = FloatDist
		d.Log = raw.Name == "LogUniformDistribution"
		err = firstErr(get("low", &d.Low), get("high", &d.High), get("log", &d.Log), get("step", &d.Step), get("q", &d.Step))
	case "IntDistribution", "IntUniformDistribution", "IntLogUniformDistribution":
		d.Kind = IntDist
		d.Step = 1
		d.Log = raw.Name == "IntLogUniformDistribution"
		err = firstErr(get("low", &d.Low), get("high", &d.High), get("log", &d.Log), get("step", &d.Step))
	case "CategoricalDistribution":
		d.Kind = CategoricalDist
		if err = get("choices", &d.Choices); err == nil {
			for i, c := range d.Choices {
				if f, ok := nonFiniteChoice(c); ok {
					d.Choices[i] = f
				}
			}
		}
	default:
		return fmt.Errorf("storage: unknown distribution %q", raw.Name)
	}
	if err != nil {
		return err
	}
	if err := d.Validate(); err != nil {
		return fmt.Errorf("storage: %s: %w", raw.Name, err)
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// Python's json writes NaN, Infinity and -Infinity as bare words, which
// Go's refuses; quoteNonFinite turns them (outside strings) into strings
// that start with nonFiniteMark, which nonFiniteChoice turns back into
// numbers.
const nonFiniteMark = "\x00"

func quoteNonFinite(data []byte) []byte {
	if !bytes.Contains(data, []byte("NaN")) && !bytes.Contains(data, []byte("Infinity")) {
		return data
	}
	var out []byte
	inString, escaped := false, false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if inString {
			inString = escaped || c != '"'
			escaped = !escaped && c == '\\'
		} else if word := bareNonFinite(data[i:]); word != "" {
			out = append(out, `"\u0000`+word+`"`...)
			i += len(word) - 1
			continue
		} else {
			inString = c == '"'
		}
		out = append(out, c)
	}
	return out
}

// bareNonFinite is the word of Python's for a non-finite number that b
// starts with, or "".
func bareNonFinite(b []byte) string {
	for _, word := range []string{"NaN", "Infinity", "-Infinity"} {
		if bytes.HasPrefix(b, []byte(word)) {
			return word
		}
	}
	return ""
}

// nonFiniteChoice is the number a choice quoted by quoteNonFinite stands for.
func nonFiniteChoice(c any) (float64, bool) {
	s, _ := c.(string)
	word, marked := strings.CutPrefix(s, nonFiniteMark)
	if !marked {
		return 0, false
	}
	f, err := strconv.ParseFloat(word, 64) // reads NaN, Infinity and -Infinity
	return f, err == nil
}

// fromAbbreviated reads {"type": "float" | "int" | "categorical", ...}
// into the full form.
func (raw *distJSON) fromAbbreviated(data []byte) error {
	var short map[string]json.RawMessage
	if err := json.Unmarshal(data, &short); err != nil {
		return fmt.Errorf("storage: distribution: %w", err)
	}
	var typ string
	if err := json.Unmarshal(short["type"], &typ); err != nil {
		return fmt.Errorf("storage: distribution %s has neither a name nor a type", data)
	}
	delete(short, "type")
	names := map[string]string{"float": "FloatDistribution", "int": "IntDistribution", "categorical": "CategoricalDistribution"}
	if raw.Name = names[typ]; raw.Name == "" {
		return fmt.Errorf("storage: unknown distribution type %q", typ)
	}
	raw.Attributes = short
	return nil
}
