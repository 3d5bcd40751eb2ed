package trial

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/t5"
)

// encodings keeps the encoder's side of greedy decoding (t5.Encoded) of
// every evaluation batch, keyed by split and batch ("validation/40"), for
// the methods that keep the encoder frozen: a split is encoded once, not
// once per epoch and trial. A split that fits the budget is also written
// to a file in the state cache folder, keyed by the model and the split's
// token ids, which later trials, packs and studies map instead of running
// the encoder again. Beyond the budget batches are encoded anew each time.
type encodings struct {
	m             *t5.Model
	budget, bytes int64
	batches       map[string]*t5.Encoded
	files         map[string]*encodingFile // by split; none: memory only
	mapped        []*t5.Safetensors        // every file mapped, closed by release
	logf          func(string, ...any)
}

// encodingFile is one split's file.
type encodingFile struct {
	path    string
	mapped  *t5.Safetensors // nil until it exists and reads well
	done    bool            // on disk (found, or written by this process)
	partial bool            // a batch exceeded the budget: no file
}

func newEncodings(m *t5.Model, budget int64, logf func(string, ...any)) *encodings {
	return &encodings{m: m, budget: budget, batches: map[string]*t5.Encoded{}, files: map[string]*encodingFile{}, logf: logf}
}

// encodingsKey names the file of a split's encodings: the model's digest,
// the batch size evaluation groups the split by, and every example's
// token ids (so another tokenizer, truncation or split is another file).
func encodingsKey(digest, split string, batchSize int, ex []example) string {
	h := sha256.New()
	var word [4]byte
	for _, e := range ex {
		binary.LittleEndian.PutUint32(word[:], uint32(len(e.src)))
		h.Write(word[:])
		for _, id := range e.src {
			binary.LittleEndian.PutUint32(word[:], uint32(id))
			h.Write(word[:])
		}
	}
	return cacheKey("encodings-v1", digest, split, fmt.Sprint(batchSize), hex.EncodeToString(h.Sum(nil)))
}

// persist keeps split's encodings in the file at path: mapped now when it
// exists, else written by save.
func (c *encodings) persist(split, path string) {
	f := &encodingFile{path: path}
	c.files[split] = f
	if _, err := os.Stat(path); err != nil {
		return
	}
	mapped, err := t5.OpenSafetensors(path)
	if err != nil {
		c.logf("%s encodings: %s is unreadable (%v); encoding anew and rewriting it", split, path, err)
		return
	}
	c.mapped = append(c.mapped, mapped)
	f.mapped, f.done = mapped, true
	c.logf("%s encodings: reading the encoder's outputs from %s", split, path)
}

func splitOf(key string) string {
	split, _, _ := strings.Cut(key, "/")
	return split
}

// get returns the encoding of batch key (its padding mask and rows given),
// from memory, from its split's file, or computed with encode; keep is
// false when it did not fit the budget (the caller releases it).
func (c *encodings) get(key string, mask []bool, B int, encode func() *t5.Encoded) (e *t5.Encoded, keep bool) {
	if e := c.batches[key]; e != nil {
		return e, true
	}
	f := c.files[splitOf(key)]
	if f != nil && f.mapped != nil {
		e, err := c.m.RestoreEncoded(mask, B, func(name string) *nn.Tensor {
			v, shape, ok := f.mapped.Float32s(key + "/" + name)
			if !ok {
				return nil
			}
			return &nn.Tensor{Shape: shape, Data: v}
		})
		if err == nil {
			c.batches[key] = e // views of the mapping: no memory of their own
			return e, true
		}
		c.logf("%s encodings: %s: batch %s: %v; encoding anew and rewriting it", splitOf(key), f.path, key, err)
		f.mapped, f.done = nil, false
	}
	e = encode()
	if size := int64(e.Floats()) * 4; c.bytes+size <= c.budget {
		c.bytes += size
		c.batches[key] = e
		return e, true
	}
	if f != nil {
		f.partial = true
	}
	return e, false
}

// save writes split's file, once every batch of it has been through get
// (an evaluation of the whole split) within the budget. A file that cannot
// be written costs later trials an encoder pass, nothing more.
func (c *encodings) save(split string) {
	f := c.files[split]
	if f == nil || f.done || f.partial {
		return
	}
	f.done = true
	var ts []t5.SafetensorsTensor
	for key, e := range c.batches {
		if splitOf(key) != split {
			continue
		}
		named, ok := e.EncodedTensors()
		if !ok {
			return
		}
		for name, t := range named {
			ts = append(ts, t5.SafetensorsTensor{Name: key + "/" + name, Shape: t.Shape, F32: t.Values()})
		}
	}
	if len(ts) == 0 {
		return
	}
	if err := t5.WriteSafetensorsTensors(f.path, ts); err != nil {
		c.logf("%s encodings: not saved: %v", split, err)
		return
	}
	c.logf("%s encodings: saved to %s", split, f.path)
}

func (c *encodings) release() {
	for _, e := range c.batches {
		e.Release()
	}
	c.batches = nil
	for _, f := range c.mapped {
		f.Close()
	}
	c.mapped = nil
}
