package trial

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"os"
	"time"

	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/sweep/tpe"
)

// ReadSpec reads the spec from path, else from the file named by
// $SWEEP_TRIAL_SPEC, else from stdin.
func ReadSpec(path string, stdin io.Reader) (Spec, error) {
	var raw []byte
	var err error
	src := "standard input"
	if path == "" {
		path = os.Getenv(SpecEnv)
	}
	if path != "" {
		src = path
		raw, err = os.ReadFile(path)
	} else {
		raw, err = io.ReadAll(stdin)
	}
	if err != nil {
		return Spec{}, fmt.Errorf("trial: read spec from %s: %w", src, err)
	}
	var s Spec
	if err := json.Unmarshal(raw, &s); err != nil {
		return Spec{}, fmt.Errorf("trial: spec from %s: %w", src, err)
	}
	if s.Version != Version {
		return Spec{}, fmt.Errorf("trial: spec from %s has protocol version %d, this binary speaks %d", src, s.Version, Version)
	}
	return s, nil
}

// Run executes the trial (or pack) described by spec, writing protocol
// messages to stdout and logs to stderr: the synthetic test double, or
// Train with the methods of reg. verdicts carries a pack's pruning
// verdicts (nil: none).
func Run(ctx context.Context, spec Spec, reg methods.Registry, verdicts io.Reader, stdout, stderr io.Writer) error {
	if spec.Trainer == "synthetic" || spec.Method == "synthetic" {
		if len(spec.Pack) > 0 {
			return fmt.Errorf("trial: the synthetic trainer does not pack trials")
		}
		return Synthetic(ctx, spec, stdout, stderr)
	}
	if _, ok := reg[spec.Method]; !ok {
		return fmt.Errorf("trial: method %q is not part of this build yet (it lands with its own issue); "+
			"use `trainer: synthetic` to exercise the orchestrator", spec.Method)
	}
	return Train(ctx, spec, reg, verdicts, stdout, stderr)
}

// Synthetic is the orchestrator's test double. Its objective is tpe_bench's
// lr curve, maximised: 1 − f(lr) − offset + 0.01·Gauss(seed, number), where
// offset ∈ [0, 0.05) is fixed per (method, arch, dataset) so that studies
// differ. Epoch k reports the curve scaled by 1 − exp(−(k+1)/3).
//
// Architecture keys it reads, for tests of failure handling: epoch_ms (sleep
// per epoch), fail ("panic", "exit", "no_final", "nan", "hang"), fail_epoch
// (epoch at which to fail, default 0) and offset (overrides the derived one).
func Synthetic(ctx context.Context, spec Spec, stdout, stderr io.Writer) error {
	start := time.Now()
	lr, ok := spec.Params["lr"].(float64)
	if !ok || !(lr > 0) {
		return fmt.Errorf("trial: synthetic: params.lr = %v, want a positive number", spec.Params["lr"])
	}
	epochs := intSetting(spec.Training, "max_epochs", 30)
	epochMS := intSetting(spec.Arch, "epoch_ms", 0)
	fail, _ := spec.Arch["fail"].(string)
	failEpoch := intSetting(spec.Arch, "fail_epoch", 0)
	offset := 0.05 * unitHash(spec.Method, spec.ArchName, spec.Dataset)
	if v, ok := spec.Arch["offset"].(float64); ok {
		offset = v
	}
	seed := uint64(spec.Seed)
	target := 1 - tpe.LRCurve(lr) - offset + 0.01*tpe.Gauss(seed, uint64(spec.Number))
	fmt.Fprintf(stderr, "synthetic trial %s#%d: lr=%.4g, %d epochs, target %.4f\n", spec.Study, spec.Number, lr, epochs, target)

	best, bestEpoch := math.Inf(-1), -1
	for k := range epochs {
		if fail != "" && k == failEpoch {
			switch fail {
			case "panic":
				panic(fmt.Sprintf("synthetic failure at epoch %d", k))
			case "exit":
				fmt.Fprintln(stderr, "synthetic failure: exiting with status 3")
				os.Exit(3)
			case "no_final":
				return nil
			case "nan":
				stdout.Write(Message{Type: TypeFinal, Value: Float(math.NaN())}.Encode())
				return nil
			case "hang":
				<-ctx.Done()
				return ctx.Err()
			default:
				return fmt.Errorf("trial: synthetic: unknown fail mode %q", fail)
			}
		}
		if epochMS > 0 {
			select {
			case <-time.After(time.Duration(epochMS) * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		v := target*(1-math.Exp(-float64(k+1)/3)) + 0.002*tpe.Gauss(seed+uint64(k)+1, uint64(spec.Number))
		if v > best {
			best, bestEpoch = v, k
		}
		if _, err := stdout.Write(Message{Type: TypeEpoch, Step: k, Value: Float(v)}.Encode()); err != nil {
			return fmt.Errorf("trial: write epoch: %w", err)
		}
	}
	if bestEpoch < 0 {
		return fmt.Errorf("trial: synthetic: max_epochs = %d, want at least 1", epochs)
	}
	attrs := map[string]any{
		"test":       best - 0.01*math.Abs(tpe.Gauss(seed+7919, uint64(spec.Number))),
		"best_epoch": bestEpoch,
		"epochs":     epochs,
		"seconds":    time.Since(start).Seconds(),
		"synthetic":  true,
	}
	_, err := stdout.Write(Message{Type: TypeFinal, Value: Float(best), Attrs: attrs}.Encode())
	return err
}

// unitHash maps strings to a fixed number in [0, 1).
func unitHash(parts ...string) float64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return float64(h.Sum64()>>11) / (1 << 53)
}

func intSetting(m map[string]any, key string, def int) int {
	switch v := m[key].(type) {
	case float64:
		return int(v)
	case int:
		return v
	case int64:
		return int(v)
	}
	return def
}
