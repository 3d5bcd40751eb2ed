package trial

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/readsweep/readsweep/internal/atomicfile"
	"github.com/readsweep/readsweep/methods"
	"github.com/readsweep/readsweep/nn"
	"github.com/readsweep/readsweep/t5"
)

// The backbone-state cache. A frozen backbone gives the same block
// outputs, cross-attention and final decoder output for a batch in every
// epoch and every trial, so a method that trains from them alone (READ's
// variant A, LST) needs the backbone once. The trainer keeps each training
// batch's states after computing them, reuses them in later epochs, and
// writes them to a file that later trials on the same key read instead of
// running the backbone.
//
// The key covers everything the states depend on: the checkpoint's bytes
// (SHA-256), the task, the split protocol's seed, tokenisation and batch
// settings, and the storage precision. A changed key is a different file.
// Files are written to a temporary name and renamed, so parallel trials
// never read half a file; two trials that both miss both compute, and the
// last rename wins with identical content.

// batchStates is what one training batch's backbone pass leaves for a
// state-trained method.
type batchStates struct {
	B, S, T int
	Enc     [][]float32 // per encoder block: (B, S, D)
	Dec     [][]float32 // per decoder block: (B, T, D)
	Cross   [][]float32 // per decoder block: (B, T, S), averaged over heads
	DecOut  []float32   // (B, T, D) after the final norm
}

// capture copies what a forward pass produced for the batch.
func capture(g *nn.Graph, out *t5.Output, B, S, T int) *batchStates {
	st := &batchStates{B: B, S: S, T: T, DecOut: clone(out.DecOut.Values())}
	for _, x := range out.EncBlockOut {
		st.Enc = append(st.Enc, clone(x.Values()))
	}
	for j, x := range out.DecBlockOut {
		st.Dec = append(st.Dec, clone(x.Values()))
		st.Cross = append(st.Cross, clone(g.MeanHeads(out.CrossAttn[j]).Values()))
	}
	return st
}

func clone(x []float32) []float32 { return append([]float32(nil), x...) }

// output rebuilds a t5.Output over the cached states (no copies; the
// tensors take no gradient).
func (st *batchStates) output(D int) *t5.Output {
	out := &t5.Output{DecOut: &nn.Tensor{Shape: []int{st.B, st.T, D}, Data: st.DecOut}}
	for _, x := range st.Enc {
		out.EncBlockOut = append(out.EncBlockOut, &nn.Tensor{Shape: []int{st.B, st.S, D}, Data: x})
	}
	for j, x := range st.Dec {
		out.DecBlockOut = append(out.DecBlockOut, &nn.Tensor{Shape: []int{st.B, st.T, D}, Data: x})
		out.CrossAttn = append(out.CrossAttn, &nn.Tensor{Shape: []int{st.B, 1, st.T, st.S}, Data: st.Cross[j]})
	}
	return out
}

func (st *batchStates) floats() int {
	n := len(st.DecOut)
	for _, set := range [][][]float32{st.Enc, st.Dec, st.Cross} {
		for _, x := range set {
			n += len(x)
		}
	}
	return n
}

// stateCache holds a split's batch states for one trial, indexed like the
// trainer's batches, and the file they persist in.
type stateCache struct {
	path    string // "" keeps the states in memory for this trial only
	half    bool
	budget  int64 // bytes
	batches []*batchStates
	bytes   int64
	over    bool // the states outgrew the budget: stop collecting

	file   *t5.Safetensors // the mapped cache file, once loaded
	layers [2]int          // its encoder and decoder blocks
}

// get returns batch i's states, or nil. From a mapped file, float32 states
// are slices over the mapping (no copy, no decoding); float16 ones are
// converted the first time the batch is used.
func (c *stateCache) get(i int) *batchStates {
	if c == nil || c.over || i >= len(c.batches) {
		return nil
	}
	if c.batches[i] == nil && c.file != nil {
		c.batches[i] = c.fromFile(i)
	}
	return c.batches[i]
}

// close unmaps the cache file.
func (c *stateCache) close() {
	if c != nil && c.file != nil {
		c.file.Close()
		c.file = nil
	}
}

// Tensor names of batch i's states in the cache file.
func encName(i, k int) string   { return fmt.Sprintf("batch%d.enc%d", i, k) }
func decName(i, k int) string   { return fmt.Sprintf("batch%d.dec%d", i, k) }
func crossName(i, k int) string { return fmt.Sprintf("batch%d.cross%d", i, k) }
func outName(i int) string      { return fmt.Sprintf("batch%d.dec_out", i) }

// fromFile reads batch i's states from the mapped file.
func (c *stateCache) fromFile(i int) *batchStates {
	view := func(name string) ([]float32, []int) {
		if v, shape, ok := c.file.Float32s(name); ok {
			return v, shape
		}
		v, shape, err := c.file.ReadAll(name) // float16
		if err != nil {
			panic(fmt.Sprintf("trial: state cache %s: %v", c.path, err)) // checked at load
		}
		return v, shape
	}
	out, shape := view(outName(i))
	st := &batchStates{B: shape[0], T: shape[1], DecOut: out}
	for k := range c.layers[0] {
		x, shape := view(encName(i, k))
		st.S = shape[1]
		st.Enc = append(st.Enc, x)
	}
	for k := range c.layers[1] {
		x, _ := view(decName(i, k))
		cr, _ := view(crossName(i, k))
		st.Dec, st.Cross = append(st.Dec, x), append(st.Cross, cr)
	}
	return st
}

// complete reports whether every batch's states are held.
func (c *stateCache) complete() bool {
	for _, b := range c.batches {
		if b == nil {
			return false
		}
	}
	return len(c.batches) > 0 && !c.over
}

// cacheKey names the file of a configuration's states.
func cacheKey(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// cacheDir is where the state and importance caches live
// (state_cache_dir, else the user cache's readsweep/states), with the
// model's digest that their keys start from.
func cacheDir(set Settings, modelDir string) (dir, digest string, err error) {
	if digest, err = modelDigest(modelDir); err != nil {
		return "", "", fmt.Errorf("cannot hash the model: %w", err)
	}
	// Every cached state is the backbone's output, which the products'
	// precision changes: reduced precisions keep states of their own (and
	// fp32's keys stay what they were).
	if set.Precision != nn.FP32 {
		digest += "+" + set.Precision.String()
	}
	if dir = set.StateCacheDir; dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return "", "", err
		}
		dir = filepath.Join(base, "readsweep", "states")
	}
	return dir, digest, nil
}

// modelDigest returns the SHA-256 of a checkpoint's weights and config,
// remembered beside them in readsweep.sha256 for the same sizes and times.
func modelDigest(dir string) (string, error) { return hashModel(dir, true) }

// hashModel is modelDigest; without trustMemo it hashes the files
// whatever the memo says (a model handed over: an edit that kept sizes
// and times must not pass).
func hashModel(dir string, trustMemo bool) (string, error) {
	files := []string{filepath.Join(dir, "config.json")}
	for _, pattern := range []string{"*.safetensors", "pytorch_model*.bin"} {
		matches, _ := filepath.Glob(filepath.Join(dir, pattern))
		files = append(files, matches...)
	}
	var stamp string
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			return "", err
		}
		stamp += fmt.Sprintf("%s:%d:%d;", filepath.Base(f), st.Size(), st.ModTime().UnixNano())
	}
	memo := filepath.Join(dir, "readsweep.sha256")
	if raw, err := os.ReadFile(memo); err == nil && trustMemo {
		var m struct{ Stamp, Digest string }
		if json.Unmarshal(raw, &m) == nil && m.Stamp == stamp {
			return m.Digest, nil
		}
	}
	h := sha256.New()
	for _, f := range files {
		in, err := os.Open(f)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(h, in)
		in.Close()
		if err != nil {
			return "", err
		}
	}
	digest := hex.EncodeToString(h.Sum(nil))
	if raw, err := json.Marshal(map[string]string{"Stamp": stamp, "Digest": digest}); err == nil {
		atomicfile.Write(memo, raw, 0o644) // a read-only model folder just means hashing again; a link there is replaced, not followed
	}
	return digest, nil
}

// load maps the cache file, if any, for n batches; it reports whether it
// found a usable one. Nothing is read until a batch is used.
func (c *stateCache) load(n int) (bool, error) {
	if c.path == "" {
		return false, nil
	}
	if _, err := os.Stat(c.path); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	f, err := t5.OpenSafetensors(c.path)
	if err != nil {
		return false, fmt.Errorf("trial: state cache %s is unreadable (%v); delete it to rebuild", c.path, err)
	}
	bad := func(format string, args ...any) (bool, error) {
		f.Close()
		return false, fmt.Errorf("trial: state cache %s: %s; delete it to rebuild", c.path, fmt.Sprintf(format, args...))
	}
	batches := 0
	for batches < n+1 {
		if _, ok := f.Tensors[outName(batches)]; !ok {
			break
		}
		batches++
	}
	if batches != n {
		return bad("it holds %d batches, the trial has %d", batches, n)
	}
	for side, name := range []func(int, int) string{encName, decName} {
		for ; ; c.layers[side]++ {
			if _, ok := f.Tensors[name(0, c.layers[side])]; !ok {
				break
			}
		}
	}
	// Everything fromFile will read is checked here, so a wrong file is an
	// error now, not a panic in the middle of training.
	for i := range n {
		for _, name := range c.names(i) {
			ti, ok := f.Tensors[name]
			if !ok || len(ti.Shape) != 3 {
				return bad("tensor %s is missing or not 3-dimensional", name)
			}
			size := map[string]int{"F32": 4, "F16": 2}[ti.DType]
			if size == 0 || ti.Offsets[1]-ti.Offsets[0] != size*ti.Shape[0]*ti.Shape[1]*ti.Shape[2] {
				return bad("tensor %s is %s of %d bytes for shape %v (want F32 or F16 of that shape)",
					name, ti.DType, ti.Offsets[1]-ti.Offsets[0], ti.Shape)
			}
		}
	}
	c.file = f
	return true, nil
}

// names lists batch i's tensors in the cache file.
func (c *stateCache) names(i int) []string {
	out := []string{outName(i)}
	for k := range c.layers[0] {
		out = append(out, encName(i, k))
	}
	for k := range c.layers[1] {
		out = append(out, decName(i, k), crossName(i, k))
	}
	return out
}

// add keeps batch i's states while they fit the budget.
func (c *stateCache) add(i int, st *batchStates) {
	size := int64(st.floats()) * 4
	if c.half {
		size /= 2
	}
	if c.over || c.bytes+size > c.budget {
		c.over, c.batches = true, nil
		return
	}
	c.bytes += size
	c.batches[i] = st
}

// save writes the states as one safetensors file (float32, or float16
// for state_cache: fp16), atomically; later trials map it. States read
// from that file are not written again.
func (c *stateCache) save() error {
	if c.path == "" || c.file != nil || !c.complete() {
		return nil
	}
	var ts []t5.SafetensorsTensor
	add := func(name string, shape []int, x []float32) {
		t := t5.SafetensorsTensor{Name: name, Shape: shape, F32: x}
		if c.half {
			t.F32, t.F16 = nil, toHalf(x)
		}
		ts = append(ts, t)
	}
	for i, b := range c.batches {
		D := len(b.DecOut) / (b.B * b.T)
		add(outName(i), []int{b.B, b.T, D}, b.DecOut)
		for k, x := range b.Enc {
			add(encName(i, k), []int{b.B, b.S, D}, x)
		}
		for k, x := range b.Dec {
			add(decName(i, k), []int{b.B, b.T, D}, x)
			add(crossName(i, k), []int{b.B, b.T, b.S}, b.Cross[k])
		}
	}
	return t5.WriteSafetensorsTensors(c.path, ts)
}

// toHalf rounds float32 values to float16 bits.
func toHalf(x []float32) []uint16 {
	out := make([]uint16, len(x))
	for i, v := range x {
		out[i] = floatToHalf(v)
	}
	return out
}

// floatToHalf rounds a float32 to the nearest IEEE 754 binary16 (ties to
// even), saturating to infinity.
func floatToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23&0xff) - 127 + 15
	mant := b & 0x7fffff
	switch {
	case b&0x7fffffff > 0x7f800000: // NaN
		return sign | 0x7e00
	case exp >= 31:
		return sign | 0x7c00
	case exp <= 0:
		if exp < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint(14 - exp)
		half := mant >> shift
		rem := mant & (1<<shift - 1)
		mid := uint32(1) << (shift - 1)
		if rem > mid || (rem == mid && half&1 == 1) {
			half++
		}
		return sign | uint16(half)
	}
	half := uint32(exp)<<10 | mant>>13
	rem := mant & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && half&1 == 1) {
		half++ // may carry into the exponent, which is still correct
	}
	return sign | uint16(half)
}

// The importance cache. A data-driven initialisation (LST's Fisher pass,
// a backward pass of the whole backbone for each of init_examples single
// examples: 24 of a lone t5-small LST trial's 34 s on the SST-2 fixture)
// depends on the backbone, the examples and the method, not on the trial,
// so it is kept in a file beside the state cache (float32 safetensors, one
// tensor per backbone tensor) that later trials read. It is kept under the
// same settings as the states: not with state_cache off, nor beyond
// state_cache_gb.

// dataImportance returns the method's importance over sample, from the
// cache file when there is one (mapped: valid until release), else
// computed and saved.
func dataImportance(di methods.DataInitializer, be nn.Backend, m *t5.Model, sample []t5.Batch, set Settings, modelDir, task, method string, logf func(string, ...any)) (imp methods.Importance, release func(), err error) {
	path := ""
	if set.StateCache != "off" {
		dir, digest, err := cacheDir(set, modelDir)
		if err != nil {
			logf("importance: not cached (%v)", err)
		} else {
			key := cacheKey("importance-v1", digest, task, method, fmt.Sprint(set.DataSeed, set.MaxTrainExamples, set.MaxSourceLength, set.MaxTargetLength, len(sample)))
			path = filepath.Join(dir, key+".safetensors")
		}
	}
	release = func() {}
	if path != "" {
		imp, unmap, found, err := loadImportance(path, m)
		if err != nil || found {
			if found {
				logf("initialised %s from the importance of %d training examples in %s", method, len(sample), path)
				release = unmap
			}
			return imp, release, err
		}
	}
	t0 := time.Now()
	imp, err = di.Importance(be, sample)
	if err != nil {
		return nil, release, err
	}
	logf("initialised %s from %d training examples (%.1fs)", method, len(sample), time.Since(t0).Seconds())
	if path == "" || imp == nil {
		return imp, release, nil
	}
	if size := int64(m.Params.Count()) * 4; size > int64(set.StateCacheGB*1e9) {
		logf("importance: not cached (%d MB exceed state_cache_gb = %g)", size>>20, set.StateCacheGB)
		return imp, release, nil
	}
	var ts []t5.SafetensorsTensor
	for i, name := range m.Params.Names {
		if v := imp[name]; v != nil {
			ts = append(ts, t5.SafetensorsTensor{Name: name, Shape: m.Params.Tensors[i].Shape, F32: v})
		}
	}
	if err := t5.WriteSafetensorsTensors(path, ts); err != nil {
		logf("importance: not cached: %v", err)
	}
	return imp, release, nil
}

// loadImportance maps an importance file for m's tensors, reporting
// whether there was one. The values are read in place (a copy of the
// whole backbone's worth, converted value by value, cost a pack of LST
// trials 0.7 s), so they are valid until release, which the caller calls
// once the trials are initialised.
func loadImportance(path string, m *t5.Model) (imp methods.Importance, release func(), found bool, err error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, nil, false, nil
	}
	f, err := t5.OpenSafetensors(path)
	if err != nil {
		return nil, nil, false, fmt.Errorf("trial: importance cache %s is unreadable (%v); delete it to rebuild", path, err)
	}
	imp = methods.Importance{}
	for i, name := range m.Params.Names {
		v, _, ok := f.Float32s(name)
		if !ok {
			v, _, err = f.ReadAll(name)
		}
		if err != nil || len(v) != m.Params.Tensors[i].Len() {
			f.Close()
			return nil, nil, false, fmt.Errorf("trial: importance cache %s: tensor %s is missing or of the wrong size (%v); delete it to rebuild", path, name, err)
		}
		imp[name] = v
	}
	return imp, func() { f.Close() }, true, nil
}
