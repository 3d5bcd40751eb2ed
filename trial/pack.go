package trial

import (
	"bufio"
	"encoding/json"
	"io"

	"github.com/readsweep/readsweep/glue"
	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/t5"
)

// Packs. A study of a method that trains from the frozen backbone's states
// (READ's variant A, LST) spends nearly all of a trial's time outside the
// method: starting a process, loading the model, reading data, running the
// backbone. A pack trains k trials of one study in one process over one
// model, one data pipeline and one pass of the backbone per batch; each
// trial keeps its own optimiser, schedule, dropout stream, early stopping,
// protocol lines (tagged with its number) and log lines (prefixed [#N]).

// packRun is one trial of a Train call, packed or alone.
type packRun struct {
	Member
	seed        int64
	lr          float64
	meth        methods.Method
	decode      decoder
	logf        func(string, ...any)
	evalScores  []glue.Scores // at each validation
	test        glue.Scores
	evalSeconds float64
	latency     float64
	reported    []Reported // the intermediate values so far, a predecessor's included

	fingerprint    string  // of its training (checkpoints)
	priorSeconds   float64 // its predecessors' wall time (resumed from a checkpoint)
	priorJoules    float64 // and energy: the CPU's
	priorGPUJoules float64 // and the GPU counter's
	resumedFrom    string  // "N at step S": the checkpoint it resumed
	offeredSteps   int     // the steps of the checkpoint it was given (0: none)

	modelDir   string // where save_model wrote its model
	modelBytes int64
	modelErr   error // why it could not
}

// memberSeed is a packed trial's seed: its own when its parameters search
// over seeds (final runs), else the study's.
func memberSeed(seed int64, mb Member) int64 {
	switch s := mb.Params["seed"].(type) {
	case int64:
		return s
	case float64:
		return int64(s)
	}
	return seed
}

// message encodes m as this run's line: tagged with its trial number in a
// pack.
func (pr *packRun) message(packed bool, m Message) []byte {
	if packed {
		n := pr.Number
		m.Trial = &n
	}
	return m.Encode()
}

func packNumbers(members []Member) []int {
	out := make([]int, len(members))
	for i, mb := range members {
		out[i] = mb.Number
	}
	return out
}

// verdictReader returns fit's afterEval for a pack: it reads one verdict
// line per reported validation and stops the trials the orchestrator pruned. A
// reader that ends (no orchestrator, or `sweep trial` run by hand) lets
// every trial go on.
func verdictReader(r io.Reader, runs []*packRun, fruns []*fitRun) func(evalPoint, []*fitRun) {
	byNumber := map[int]*fitRun{}
	for i, pr := range runs {
		byNumber[pr.Number] = fruns[i]
	}
	var sc *bufio.Scanner
	if r != nil {
		sc = bufio.NewScanner(r)
	}
	return func(at evalPoint, reported []*fitRun) {
		for range reported {
			if sc == nil || !sc.Scan() {
				sc = nil
				return
			}
			var v Verdict
			if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
				continue
			}
			if fr := byNumber[v.Trial]; fr != nil && v.Prune && !fr.pruned {
				fr.pruned, fr.stopped = true, true
				fr.logf("pruned after %s; the pack goes on without it", at)
			}
		}
	}
}

// decoder decodes a batch greedily: (key, ids, mask, B, S, maxNew,
// viable) → rows of ids. key names the batch (split and index) for shared
// encodings; "" shares nothing. viable ends rows early (nil: none).
type decoder func(key string, ids []int32, mask []bool, B, S, maxNew int, viable t5.Viable) [][]int32

// methodDecoder decodes one trial's batches alone, with the backbone's
// cached greedy decoding and the method's hooks in dec's memory. It
// shares no decoding between trials (packDecoders does).
func methodDecoder(dec *t5.Decoder, meth methods.Method) decoder {
	return hooksDecoder(dec, meth.Hooks())
}

// hooksDecoder decodes batches with the backbone's cached greedy decoding
// changed by hooks.
func hooksDecoder(dec *t5.Decoder, hooks *t5.Hooks) decoder {
	return func(_ string, ids []int32, mask []bool, B, S, n int, viable t5.Viable) [][]int32 {
		return dec.Generate(ids, mask, B, S, n, hooks, viable)
	}
}

// encoderFrozen reports whether meth leaves the encoder's outputs (and the
// cross-attention keys and values) as the frozen backbone computes them,
// training or not: its hooks leave the encoder alone and it trains none
// of the backbone's own tensors (full fine-tuning has no hooks, yet its
// encoder changes every step). Only then does a batch's encoding serve
// later validations and other trials.
func encoderFrozen(m *t5.Model, meth methods.Method) bool {
	if !meth.Hooks().EncoderUnchanged() {
		return false
	}
	backbone := map[*nn.Tensor]bool{}
	for _, t := range m.Params.Tensors {
		backbone[t] = true
	}
	for _, t := range meth.Trainable() {
		if backbone[t] {
			return false
		}
	}
	return true
}

// Packable reports whether method, with architecture settings arch, trains
// from the frozen backbone's states, so that its trials can be packed. It
// asks the method itself, attached to standIn (any model wide enough for
// the settings; attaching only reads it).
func Packable(reg methods.Registry, standIn *t5.Model, method string, arch map[string]any) bool {
	meth, err := reg.New(method, standIn, arch, 0)
	if err != nil {
		return false // the trial reports the error itself
	}
	st, ok := meth.(methods.StateTrainer)
	return ok && st.TrainsFromStates()
}

// packDecoders returns each trial's decoder. When every method keeps the
// encoder frozen (encoderFrozen) and decodes the backbone's way, a named
// batch (key) is encoded once (shared) and the trials decode it together
// (t5.GenerateShared): the first to ask decodes for every trial that want
// says is evaluating now, at its parameters of the moment (version: its
// optimiser steps), and the others take their rows. Otherwise, and for
// unnamed batches (latency), each decodes alone.
func packDecoders(m *t5.Model, be nn.Backend, dec *t5.Decoder, meths []methods.Method, shared *encodings, want func(j int) bool, version func(j int) int) []decoder {
	out := make([]decoder, len(meths))
	hooks := make([]*t5.Hooks, len(meths))
	joint := true
	for j, meth := range meths {
		out[j] = methodDecoder(dec, meth)
		hooks[j] = meth.Hooks()
		joint = joint && encoderFrozen(m, meth)
	}
	if !joint {
		return out
	}
	type rows struct {
		version int
		out     [][]int32
	}
	ready := map[string]map[int]rows{} // batch key → trial → its decoded rows
	for j := range meths {
		alone := out[j]
		out[j] = func(key string, ids []int32, mask []bool, B, S, n int, viable t5.Viable) [][]int32 {
			if key == "" {
				return alone(key, ids, mask, B, S, n, viable)
			}
			if r, ok := ready[key][j]; ok && r.version == version(j) {
				delete(ready[key], j)
				return r.out
			}
			var who []int
			var hs []*t5.Hooks
			for i := range meths {
				if i == j || want(i) {
					who = append(who, i)
					hs = append(hs, hooks[i])
				}
			}
			e, keep := shared.get(key, mask, B, func() *t5.Encoded { return m.EncodeForDecoding(be, ids, mask, B, S, hooks[j]) })
			if !keep {
				defer e.Release()
			}
			decoded := dec.GenerateShared(e, n, hs, viable)
			if ready[key] == nil {
				ready[key] = map[int]rows{}
			}
			var mine [][]int32
			for k, i := range who {
				if i == j {
					mine = decoded[k]
				} else {
					ready[key][i] = rows{version(i), decoded[k]}
				}
			}
			return mine
		}
	}
	return out
}
