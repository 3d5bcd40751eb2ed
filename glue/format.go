package glue

import (
	"math"
	"strconv"
	"strings"
	"unicode"
)

// Input returns T5's input text for ex: the task name, then each field as
// "key: value" with keys in alphabetical order (MNLI: hypothesis first),
// joined by single spaces. reference: t5/data/preprocessors.py glue().
func (t *Task) Input(ex Example) string {
	var b strings.Builder
	b.WriteString(t.Name)
	order := t.t5Order
	if order == nil {
		order = make([]int, len(t.Fields))
		for i := range order {
			order[i] = i
		}
	}
	for _, i := range order {
		b.WriteByte(' ')
		b.WriteString(t.Fields[i])
		b.WriteString(": ")
		b.WriteString(ex.Text[i])
	}
	return b.String()
}

// Target returns T5's target text: the label word, or for STS-B the score
// rounded to a multiple of 0.2 and printed with one decimal. "<unk>" marks
// an unlabelled example, as T5 writes test targets.
func (t *Task) Target(ex Example) string {
	if t.Regression() {
		return FormatScore(ex.Score)
	}
	if ex.Label < 0 || ex.Label >= len(t.Labels) {
		return "<unk>"
	}
	return t.Labels[ex.Label]
}

// FormatScore rounds an STS-B score to 0.2 steps as T5 does: in float32,
// ×5, round half to even, ÷5, printed with one decimal (4.75 → "4.8",
// 2.5 → "2.4", 3.5 → "3.6"). reference: t5/data/preprocessors.py stsb().
func FormatScore(score float32) string {
	x := float32(math.RoundToEven(float64(score*5))) / 5
	return strconv.FormatFloat(float64(x), 'f', 1, 32)
}

// Prediction is a generated string parsed back into a label.
type Prediction struct {
	Label int     // class id; -1 when the text is not a label word
	Score float64 // STS-B; -1 when the text is not a number
}

// Parse maps generated text back to a label. Invalid text is never an
// error: it is a wrong answer (label -1, score -1), as in T5's
// postprocessors string_label_to_class_id and string_to_float.
func (t *Task) Parse(text string) Prediction {
	text = strings.TrimSpace(text)
	if t.Regression() {
		f, err := strconv.ParseFloat(text, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return Prediction{Label: -1, Score: -1}
		}
		return Prediction{Label: -1, Score: f}
	}
	for i, l := range t.Labels {
		if text == l {
			return Prediction{Label: i}
		}
	}
	return Prediction{Label: -1, Score: -1}
}

// Reachable reports whether some text that begins with prefix parses to a
// label, where the rest of the label that must follow prefix (nothing once
// prefix holds a whole label) satisfies fits (nil: any rest): whether
// decoding an answer that has produced prefix so far, with what it can
// still add, can change a score. Any continuation of an unreachable prefix
// parses to "no label", so evaluation stops decoding it. Regression
// answers are always reachable (a number's prefixes are too many kinds to
// rule out).
func (t *Task) Reachable(prefix string, fits func(rest string) bool) bool {
	if t.Regression() {
		return true
	}
	// Parse trims the whole text: leading space never matters, and after a
	// whole label only space may follow.
	p := strings.TrimLeftFunc(prefix, unicode.IsSpace)
	for _, l := range t.Labels {
		if rest, ok := strings.CutPrefix(l, p); ok && (fits == nil || fits(rest)) {
			return true
		}
		if after, ok := strings.CutPrefix(p, l); ok && strings.TrimSpace(after) == "" {
			return true
		}
	}
	return false
}
