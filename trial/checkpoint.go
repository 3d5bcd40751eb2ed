package trial

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"unsafe"

	"github.com/readsweep/readsweep/glue"
	"github.com/readsweep/readsweep/internal/atomicfile"
	"github.com/readsweep/readsweep/nn"
)

// CheckpointName is a trial's checkpoint in its output folder: hidden,
// like the result journal, and reserved (docs/protocol.md), so a trial
// program's own files never collide with it.
const CheckpointName = ".sweep-checkpoint"

// checkpointMagic opens every checkpoint file; the number is the format's
// version.
const checkpointMagic = "READSWEEP-CHECKPOINT 1\n"

// checkpoint is everything a run needs to go on bit for bit where it
// stopped: its cursor in the data, its optimiser, its early stopping, the
// values it reported and its cost so far. The tensors follow the header
// in the file, in the order Tensors lists them.
type checkpoint struct {
	// Fingerprint is the training the checkpoint belongs to (checkpointFingerprint):
	// a checkpoint resumes only the same method, architecture, data,
	// backbone, parameters, seed and settings.
	Fingerprint string `json:"fingerprint"`
	Trial       int    `json:"trial"` // the trial that wrote it
	Steps       int    `json:"steps"` // optimiser steps taken
	// Offered is the steps of the checkpoint the trial was given to
	// resume (0: none, or none that read): Steps beyond it are progress
	// its lineage had not made.
	Offered int `json:"offered_steps"`
	// The cursor: the next step is batch Batch of epoch Epoch's order,
	// which Shuffle (the order's source before it was drawn) draws again.
	Epoch   int    `json:"epoch"`
	Batch   int    `json:"batch"`
	Shuffle []byte `json:"shuffle"`
	Streams uint64 `json:"dropout_streams"`
	Optim   []int  `json:"optimiser_steps"` // per parameter group

	Evals        int                `json:"validations"`
	Best         Float              `json:"best"`
	BestAt       [3]int             `json:"best_at"` // validation index, epoch, steps
	Epochs       int                `json:"epochs"`
	Examples     int                `json:"examples"`
	TrainSeconds float64            `json:"train_seconds"`
	LossSum      float64            `json:"loss_sum"` // since the last validation
	Losses       int                `json:"losses"`
	Seconds      float64            `json:"step_seconds"`
	Stopped      bool               `json:"stopped"` // patience ran out
	EvalScores   []map[string]Float `json:"validation_scores"`
	EvalSeconds  float64            `json:"eval_seconds"`
	Reported     []Reported         `json:"reported"`

	// The trial's wall time and energy before this process (its
	// predecessors' included): the final line reports the sum.
	PriorSeconds   float64 `json:"prior_seconds"`
	PriorJoules    float64 `json:"prior_energy_joules"`     // the CPU's (RAPL or the estimate)
	PriorGPUJoules float64 `json:"prior_gpu_energy_joules"` // NVML's counter, where there was one

	Shapes  [][]int          `json:"trainable_shapes"`
	Tensors []checkpointSpan `json:"tensors"`
}

// Reported is an intermediate value a run reported: at step (an epoch, or
// optimiser steps with eval_steps), value.
type Reported struct {
	Step  int   `json:"step"`
	Value Float `json:"value"`
}

// checkpointSpan names one tensor's values in the file.
type checkpointSpan struct {
	Name string `json:"name"`
	Len  int    `json:"len"`
}

// checkpointData is a checkpoint with its tensors by name.
type checkpointData struct {
	checkpoint
	values map[string][]float32
}

// writeCheckpoint writes c with tensors (name → values, in the order of
// names) to path atomically: a temporary file in the same folder, flushed
// to the disk, then renamed over the last checkpoint. A kill or a full
// disk in the middle leaves the previous checkpoint as it was.
func writeCheckpoint(path string, c checkpoint, names []string, values [][]float32) error {
	c.Tensors = c.Tensors[:0]
	for i, n := range names {
		c.Tensors = append(c.Tensors, checkpointSpan{Name: n, Len: len(values[i])})
	}
	header, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("trial: checkpoint header: %w", err)
	}
	// A write cut short by SIGKILL (kill_grace too short for the model,
	// a node's death) left its temporary file: it goes before a new one
	// takes the room.
	RemoveCheckpointTemps(filepath.Dir(path))
	err = atomicfile.WriteWith(path, 0o600, func(f io.Writer) error {
		digest := crc32.New(castagnoli)
		w := bufio.NewWriterSize(io.MultiWriter(f, digest), 1<<20)
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(header)))
		w.WriteString(checkpointMagic)
		w.Write(n[:])
		w.Write(header)
		for _, v := range values {
			if err := writeFloats(w, v); err != nil {
				return err
			}
		}
		if err := w.Flush(); err != nil {
			return err
		}
		_, err := f.Write(digest.Sum(nil))
		return err
	})
	if err != nil {
		return fmt.Errorf("trial: checkpoint: %w", err)
	}
	syncParent(path) // the rename is durable once the folder is
	return nil
}

// castagnoli is CRC-32C, the checkpoint's checksum: it catches a cut or
// flipped file as surely as a cryptographic digest would (nobody forges
// a trial's own checkpoint), at memory speed where the CPU computes it
// (SSE 4.2, ARMv8). SHA-256 hashed some 570 MB/s on the build machine,
// SHA-NI and all: 1.2 s of CPU for each write and read of a t5-small
// checkpoint (708 MB), 20 s for t5-large's full fine-tuning (12 GB).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

const crcSize = 4

// readCheckpoint reads and verifies the checkpoint at path: a regular
// file (not a FIFO that would block the trial, nor a device), its header,
// each tensor's size and the checksum. accept, when set, judges the header
// and returns the length each tensor must have (by name) before anything
// is allocated: a damaged or hostile header cannot make the trial allocate
// what the file claims, and a checkpoint of another training is refused
// without reading its tensors. nil accept reads the header alone (the
// tensors are checksummed, not kept). Any damage (a truncated file,
// flipped bytes) is an error naming the file. It reads the file once,
// checksumming as it goes, so a checkpoint of t5-large's full fine-tuning
// (12 GB) takes one pass and its own size in memory.
func readCheckpoint(path string, accept func(c *checkpoint) (map[string]int, error)) (*checkpointData, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("checkpoint %s: not a regular file (%s)", path, st.Mode().Type())
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err = f.Stat(); err != nil || !st.Mode().IsRegular() {
		return nil, fmt.Errorf("checkpoint %s: not a regular file", path)
	}
	size := st.Size()
	digest := crc32.New(castagnoli)
	r := bufio.NewReaderSize(f, 1<<20)
	body := max(size-crcSize, 0)
	in := io.TeeReader(io.LimitReader(r, body), digest)
	// damaged names the first thing that does not fit; the checksum,
	// taken over the whole file, says whether the file was damaged or
	// written by something else.
	damaged := func(why string, args ...any) error {
		io.Copy(io.Discard, in)
		sum := make([]byte, crcSize)
		if _, err := io.ReadFull(r, sum); err != nil || !bytes.Equal(digest.Sum(nil), sum) {
			return fmt.Errorf("checkpoint %s: its CRC-32C does not match its contents (truncated or damaged; %d bytes)", path, size)
		}
		return fmt.Errorf("checkpoint %s: %s", path, fmt.Sprintf(why, args...))
	}
	magic := make([]byte, len(checkpointMagic))
	if _, err := io.ReadFull(in, magic); err != nil || string(magic) != checkpointMagic {
		return nil, fmt.Errorf("checkpoint %s: not a checkpoint of this version", path)
	}
	var n [8]byte
	if _, err := io.ReadFull(in, n[:]); err != nil {
		return nil, damaged("%v", err)
	}
	left := uint64(body) - uint64(len(checkpointMagic)) - 8
	hlen := binary.LittleEndian.Uint64(n[:])
	if hlen > left || hlen > 1<<30 {
		return nil, damaged("a header of %d bytes in a file of %d", hlen, size)
	}
	left -= hlen
	header := make([]byte, hlen)
	if _, err := io.ReadFull(in, header); err != nil {
		return nil, damaged("%v", err)
	}
	c := &checkpointData{values: map[string][]float32{}}
	if err := json.Unmarshal(header, &c.checkpoint); err != nil {
		return nil, damaged("header: %v", err)
	}
	var want map[string]int
	if accept != nil {
		if want, err = accept(&c.checkpoint); err != nil {
			return nil, err
		}
	}
	for _, s := range c.Tensors {
		// left/4, not Len·4: a length near 2⁶² must not wrap around.
		if s.Len < 0 || uint64(s.Len) > left/4 {
			return nil, damaged("tensor %s of %d values runs past the end", s.Name, s.Len)
		}
		left -= uint64(s.Len) * 4
		if accept == nil {
			if _, err := io.CopyN(io.Discard, in, int64(s.Len)*4); err != nil {
				return nil, damaged("%v", err)
			}
			continue
		}
		if n, ok := want[s.Name]; !ok || n != s.Len {
			return nil, damaged("tensor %s of %d values is not one of this training's", s.Name, s.Len)
		}
		if _, dup := c.values[s.Name]; dup {
			return nil, damaged("tensor %s twice", s.Name)
		}
		v := make([]float32, s.Len)
		if err := readFloats(in, v); err != nil {
			return nil, damaged("%v", err)
		}
		c.values[s.Name] = v
	}
	if left != 0 {
		return nil, damaged("%d bytes after the last tensor", left)
	}
	sum := make([]byte, crcSize)
	if _, err := io.ReadFull(r, sum); err != nil || !bytes.Equal(digest.Sum(nil), sum) {
		return nil, fmt.Errorf("checkpoint %s: its CRC-32C does not match its contents (truncated or damaged; %d bytes)", path, size)
	}
	return c, nil
}

// nativeLittleEndian: the machine keeps float32 as the file does, so
// tensors go to and from the file in place.
var nativeLittleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// floatBytes is v's memory as bytes (little-endian machines only).
func floatBytes(v []float32) []byte {
	if len(v) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v))
}

// readFloats fills v with little-endian float32 values from r.
func readFloats(r io.Reader, v []float32) error {
	if nativeLittleEndian {
		_, err := io.ReadFull(r, floatBytes(v))
		return err
	}
	buf := make([]byte, 1<<16)
	for i := 0; i < len(v); {
		k := min(len(v)-i, len(buf)/4)
		if _, err := io.ReadFull(r, buf[:4*k]); err != nil {
			return err
		}
		for j := range k {
			v[i+j] = math.Float32frombits(binary.LittleEndian.Uint32(buf[4*j:]))
		}
		i += k
	}
	return nil
}

// writeFloats writes v to w as little-endian float32 values.
func writeFloats(w io.Writer, v []float32) error {
	if nativeLittleEndian {
		_, err := w.Write(floatBytes(v))
		return err
	}
	buf := make([]byte, 0, 1<<16)
	for len(v) > 0 {
		k := min(len(v), cap(buf)/4)
		buf = buf[:0]
		for _, x := range v[:k] {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(x))
		}
		if _, err := w.Write(buf); err != nil {
			return err
		}
		v = v[k:]
	}
	return nil
}

// RemoveCheckpointTemps removes the temporary files of checkpoint writes
// that never finished from a trial folder.
func RemoveCheckpointTemps(dir string) {
	temps, _ := filepath.Glob(filepath.Join(dir, "."+CheckpointName+".*.tmp"))
	for _, t := range temps {
		os.Remove(t)
	}
}

// CheckpointSteps reads the checkpoint at path and returns the optimiser
// steps it was taken after and the trial that wrote it; an error when it
// does not verify.
func CheckpointSteps(path string) (steps, trial int, err error) {
	c, err := readCheckpoint(path, nil)
	if err != nil {
		return 0, 0, err
	}
	return c.Steps, c.Trial, nil
}

// CheckpointProgressed reports whether the checkpoint at path verifies
// and goes beyond the checkpoint its trial was given to resume: the trial
// trained further than its lineage had.
func CheckpointProgressed(path string) bool {
	c, err := readCheckpoint(path, nil)
	return err == nil && c.Steps > c.Offered
}

// checkpointFingerprint names the training a checkpoint belongs to: the
// spec's method, architecture, dataset and training settings (less those
// that change how often it checkpoints, times or meters, not what it
// learns), the member's parameters and seed, the backbone's digest and
// the training batches' token ids.
func checkpointFingerprint(spec Spec, mb Member, seed int64, modelDigest string, batches [][]example) string {
	training := map[string]any{}
	defaults, _ := ParseSettings(nil)
	for k, v := range spec.Training {
		switch k {
		case "checkpoint_every", "latency_examples", "package_watts", "gpu_p0_watts", "state_cache", "state_cache_dir", "state_cache_gb":
		default:
			// A setting written at its default (precision: fp32) is the
			// same training as one left out: the same fingerprint.
			if one, err := ParseSettings(map[string]any{k: v}); err == nil && reflect.DeepEqual(one, defaults) && k != "seed" && k != "seeds" {
				continue
			}
			training[k] = v
		}
	}
	id, _ := json.Marshal(map[string]any{
		"method": spec.Method, "arch": spec.Arch, "dataset": spec.Dataset, "training": training,
		"params": mb.Params, "seed": seed, "model": modelDigest, "trainer": spec.Trainer,
	})
	h := sha256.New()
	h.Write(id)
	var b [4]byte
	for _, batch := range batches {
		for _, e := range batch {
			for _, ids := range [][]int32{e.src, {-1}, e.tgt, {-2}} {
				for _, x := range ids {
					binary.LittleEndian.PutUint32(b[:], uint32(x))
					h.Write(b[:])
				}
			}
		}
		h.Write([]byte{0xff, 0xff, 0xff, 0xff})
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// scoresOut and scoresIn carry validation scores through JSON, which has
// no NaN.
func scoresOut(s []glue.Scores) []map[string]Float {
	out := make([]map[string]Float, len(s))
	for i, m := range s {
		out[i] = map[string]Float{}
		for k, v := range m {
			out[i][k] = Float(v)
		}
	}
	return out
}

func scoresIn(s []map[string]Float) []glue.Scores {
	out := make([]glue.Scores, len(s))
	for i, m := range s {
		out[i] = glue.Scores{}
		for k, v := range m {
			out[i][k] = float64(v)
		}
	}
	return out
}

// shapesOf lists the tensors' shapes.
func shapesOf(ts []*nn.Tensor) [][]int {
	out := make([][]int, len(ts))
	for i, t := range ts {
		out[i] = slices.Clone(t.Shape)
	}
	return out
}

// errCheckpointMismatch marks a checkpoint of another training.
var errCheckpointMismatch = errors.New("it belongs to another training")
