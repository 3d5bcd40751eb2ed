package trial

import (
	"context"
	"fmt"

	"github.com/readsweep/readsweep/glue"
	"github.com/readsweep/readsweep/nn"
)

// PredictOptions are how Predict runs.
type PredictOptions struct {
	Device    string // auto (the GPU when one opens), cpu or cuda
	BatchSize int    // examples decoded together; 0: the trial's eval_batch_size
	// Progress, when set, is told after each batch how many examples are
	// done.
	Progress func(done int)
}

// Predictions are a model's answers on a list of examples.
type Predictions struct {
	Labels []glue.Prediction // parsed: a label id or score, −1 when the text is neither
	Texts  []string          // as decoded
	Scores glue.Scores       // the task's metric, when every example has a label
	Device string
}

// Predict decodes ex greedily as the trial's validation did (its source
// and target lengths and the same row-ending rule), so that a saved
// model's score on the trial's validation split is the score the trial
// recorded. Labelled asks for the metric.
func (m *Model) Predict(ctx context.Context, task *glue.Task, ex []glue.Example, labelled bool, opt PredictOptions) (*Predictions, error) {
	if task.Name != m.Info.Task {
		return nil, fmt.Errorf("trial: %s was trained for %s, not %s", m.Dir, m.Info.Task, task.Name)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	be, device, closeBackend, err := selectBackend(opt.Device, 0)
	if err != nil {
		return nil, err
	}
	defer closeBackend()
	nn.ToDevice(be, m.T5.Params.Tensors...)
	if m.Method != nil {
		nn.ToDevice(be, m.Method.Weights().Tensors...)
	}
	dec := m.T5.NewDecoder(be)
	defer dec.Release()
	batch := opt.BatchSize
	if batch <= 0 {
		batch = m.Info.EvalBatchSize
	}
	tokens := tokenize(m.Tok, task, ex, m.Info.MaxSourceLength)
	done := 0
	progress := func() {
		done = min(done+batch, len(ex))
		if opt.Progress != nil {
			opt.Progress(done)
		}
	}
	maxTgt := m.Info.MaxTargetLength
	preds, texts := decodeAll(hooksDecoder(dec, m.Hooks()), "predict", m.Tok, task, tokens, batch, maxTgt, answerRule(m.Tok, task, maxTgt), progress)
	out := &Predictions{Labels: preds, Texts: texts, Device: device}
	if labelled {
		out.Scores = task.Evaluate(preds, ex)
	}
	return out, nil
}
