package t5

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"strings"

	"github.com/nlpodyssey/gopickle/pickle"
	"github.com/nlpodyssey/gopickle/types"
)

// PyTorch checkpoints. Many hub repositories (the T5 v1.1 ones among them)
// hold only pytorch_model.bin: a zip archive (torch.save since PyTorch
// 1.6) of data.pkl, a pickle of the state dict, and data/KEY, the raw
// bytes of each storage. A pickle is a program: Python's unpickler calls
// whatever it names. Here the unpickler (gopickle's, which runs nothing
// by itself) resolves only the names torch.save writes for a dictionary
// of float tensors; any other name stops the load with an error naming
// it. Nothing the file claims is allocated before it is checked against
// what is there: data.pkl is at most maxPickle bytes, and every length
// inside it fits in what is left of it (scanPickle); a storage is an
// uncompressed record of exactly its element count's bytes; and the
// values read, storages and tensors, stay within a budget the model's
// config sets.

// maxPickle bounds data.pkl: a state dict's pickle holds names and
// shapes, about 150 bytes a tensor (t5-11b's: about 100 kB).
const maxPickle = 1 << 20

// pickledTensor is one tensor of a state dict, as float32.
type pickledTensor struct {
	shape  []int
	values []float32
}

// storageType is the dtype a torch.*Storage global names.
type storageType struct {
	name string // torch's
	size int    // bytes per element
}

// storage is one data/KEY record read as float32.
type storage struct {
	key    string
	values []float32
}

// rebuildTensor is torch._utils._rebuild_tensor_v2(storage, offset, size,
// stride, requires_grad, backward_hooks[, metadata]).
type rebuildTensor struct {
	spend func(n int64, what string) error // the reader's budget
}

func (r rebuildTensor) Call(args ...any) (any, error) {
	if len(args) < 5 {
		return nil, fmt.Errorf("_rebuild_tensor_v2 with %d arguments", len(args))
	}
	st, ok1 := args[0].(*storage)
	offset, ok2 := args[1].(int)
	size, ok3 := args[2].(*types.Tuple)
	stride, ok4 := args[3].(*types.Tuple)
	if !ok1 || !ok2 || !ok3 || !ok4 || size.Len() != stride.Len() || offset < 0 {
		return nil, fmt.Errorf("_rebuild_tensor_v2: unexpected arguments")
	}
	shape, strides := make([]int, size.Len()), make([]int, size.Len())
	n, last := 1, offset // elements, and the last one's index
	for i := range shape {
		d, ok := size.Get(i).(int)
		s, ok2 := stride.Get(i).(int)
		if !ok || !ok2 || d < 0 || s < 0 || d > len(st.values) || s > len(st.values) {
			return nil, fmt.Errorf("_rebuild_tensor_v2: size %v, stride %v", size, stride)
		}
		shape[i], strides[i] = d, s
		n *= d
		if n > len(st.values) && d > 0 {
			return nil, fmt.Errorf("storage %s holds %d values, a tensor of size %v more", st.key, len(st.values), shape)
		}
		if d > 0 {
			last += (d - 1) * s
		}
	}
	if n > 0 && last >= len(st.values) {
		return nil, fmt.Errorf("storage %s holds %d values; a tensor of size %v and stride %v at offset %d reads beyond it", st.key, len(st.values), shape, strides, offset)
	}
	if r.spend != nil {
		if err := r.spend(int64(n), fmt.Sprintf("a tensor of size %v", shape)); err != nil {
			return nil, err
		}
	}
	out := make([]float32, n)
	idx := make([]int, len(shape))
	for k := range out {
		at := offset
		for i, j := range idx {
			at += j * strides[i]
		}
		out[k] = st.values[at]
		for i := len(idx) - 1; i >= 0; i-- { // row-major odometer
			if idx[i]++; idx[i] < shape[i] {
				break
			}
			idx[i] = 0
		}
	}
	return &pickledTensor{shape: shape, values: out}, nil
}

// rebuildParameter is torch._utils._rebuild_parameter(data,
// requires_grad, backward_hooks): a saved nn.Parameter is its tensor.
type rebuildParameter struct{}

func (rebuildParameter) Call(args ...any) (any, error) {
	if len(args) < 1 {
		return nil, fmt.Errorf("_rebuild_parameter without arguments")
	}
	t, ok := args[0].(*pickledTensor)
	if !ok {
		return nil, fmt.Errorf("_rebuild_parameter of a %T", args[0])
	}
	return t, nil
}

// pickleClass is the unpickler's only way to names outside the pickle:
// the globals of a torch.save'd dictionary of float tensors.
func pickleClass(module, name string) (any, error) {
	switch module + "." + name {
	case "torch._utils._rebuild_tensor_v2":
		return rebuildTensor{}, nil
	case "torch._utils._rebuild_parameter":
		return rebuildParameter{}, nil
	case "torch.FloatStorage":
		return storageType{"FloatStorage", 4}, nil
	case "torch.HalfStorage":
		return storageType{"HalfStorage", 2}, nil
	case "torch.BFloat16Storage":
		return storageType{"BFloat16Storage", 2}, nil
	}
	return nil, fmt.Errorf("refused: the pickle calls %s.%s, which a state dict of float tensors (torch.save(model.state_dict())) does not; nothing was run", module, name)
}

// readPyTorch reads the state dict of a torch.save zip archive.
// budget is the values (storages' and tensors') it may read, shared by a
// checkpoint's shards.
func readPyTorch(file string, budget *int64) (tensors map[string]*pickledTensor, err error) {
	defer func() {
		if r := recover(); r != nil { // the unpickler's own checks on hostile bytes
			tensors, err = nil, fmt.Errorf("t5: %s: malformed pickle (%v)", file, r)
		}
	}()
	var fileSize int64
	if st, err := os.Stat(file); err == nil {
		fileSize = st.Size()
	}
	z, err := zip.OpenReader(file)
	if err != nil {
		return nil, fmt.Errorf("t5: %s is not a zip archive of torch.save (PyTorch ≥ 1.6); the legacy format is not read: re-save it with torch.save, or as safetensors (%v)", file, err)
	}
	defer z.Close()
	records := map[string]*zip.File{}
	var pkl *zip.File
	for _, f := range z.File {
		records[f.Name] = f
		if path.Base(f.Name) == "data.pkl" && strings.Count(f.Name, "/") == 1 {
			pkl = f
		}
	}
	if pkl == nil {
		return nil, fmt.Errorf("t5: %s: no data.pkl: not a torch.save archive", file)
	}
	prefix := path.Dir(pkl.Name)
	if pkl.UncompressedSize64 > maxPickle {
		return nil, fmt.Errorf("t5: %s: data.pkl claims %d bytes; a state dict's pickle has far fewer (at most %d read)", file, pkl.UncompressedSize64, maxPickle)
	}
	r, err := pkl.Open()
	if err != nil {
		return nil, fmt.Errorf("t5: %s: %w", file, err)
	}
	program, err := io.ReadAll(io.LimitReader(r, maxPickle+1))
	r.Close()
	if err != nil {
		return nil, fmt.Errorf("t5: %s: data.pkl: %w", file, err)
	}
	if err := scanPickle(program); err != nil {
		return nil, fmt.Errorf("t5: %s: data.pkl: %w", file, err)
	}
	spend := func(n int64, what string) error {
		if *budget -= n; *budget < 0 {
			return fmt.Errorf("%s takes the values read past %d, more than config.json's model holds: not this model's weights", what, budgetOf(budget, n))
		}
		return nil
	}
	u := pickle.NewUnpickler(bytes.NewReader(program))
	u.FindClass = func(module, name string) (any, error) {
		c, err := pickleClass(module, name)
		if rt, ok := c.(rebuildTensor); ok {
			rt.spend = spend
			return rt, nil
		}
		return c, err
	}
	storages := map[string]*storage{}
	u.PersistentLoad = func(id any) (any, error) {
		t, ok := id.(*types.Tuple)
		if !ok || t.Len() < 5 || t.Get(0) != "storage" {
			return nil, fmt.Errorf("unexpected persistent id %v", id)
		}
		typ, ok1 := t.Get(1).(storageType)
		key, ok2 := t.Get(2).(string)
		numel, ok3 := t.Get(4).(int)
		if !ok1 || !ok2 || !ok3 || numel < 0 {
			return nil, fmt.Errorf("unexpected storage %v", id)
		}
		if st, ok := storages[key]; ok {
			return st, nil
		}
		rec, ok := records[prefix+"/data/"+key]
		if !ok {
			return nil, fmt.Errorf("no record data/%s", key)
		}
		if rec.Method != zip.Store || rec.CompressedSize64 != rec.UncompressedSize64 {
			return nil, fmt.Errorf("data/%s is compressed; torch.save stores storages as they are", key)
		}
		if rec.UncompressedSize64 != uint64(numel)*uint64(typ.size) {
			return nil, fmt.Errorf("data/%s has %d bytes, %d %s values need %d", key, rec.UncompressedSize64, numel, typ.name, uint64(numel)*uint64(typ.size))
		}
		if rec.CompressedSize64 > uint64(fileSize) {
			return nil, fmt.Errorf("data/%s claims %d bytes, more than the file's %d", key, rec.CompressedSize64, fileSize)
		}
		if err := spend(int64(numel), "storage data/"+key); err != nil {
			return nil, err
		}
		raw := make([]byte, rec.UncompressedSize64)
		rr, err := rec.Open()
		if err != nil {
			return nil, err
		}
		_, err = io.ReadFull(rr, raw)
		rr.Close()
		if err != nil {
			return nil, fmt.Errorf("data/%s: %w", key, err)
		}
		st := &storage{key: key, values: make([]float32, numel)}
		for i := range st.values {
			switch typ.name {
			case "FloatStorage":
				st.values[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
			case "HalfStorage":
				st.values[i] = HalfToFloat(binary.LittleEndian.Uint16(raw[2*i:]))
			case "BFloat16Storage":
				st.values[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(raw[2*i:])) << 16)
			}
		}
		storages[key] = st
		return st, nil
	}
	obj, err := u.Load()
	if err != nil {
		return nil, fmt.Errorf("t5: %s: %w", file, err)
	}
	tensors = map[string]*pickledTensor{}
	add := func(k, v any) error {
		name, ok := k.(string)
		t, ok2 := v.(*pickledTensor)
		if !ok || !ok2 {
			return fmt.Errorf("t5: %s: entry %v is a %T, not a tensor: not a state dict", file, k, v)
		}
		tensors[name] = t
		return nil
	}
	switch d := obj.(type) {
	case *types.OrderedDict:
		for e := d.List.Front(); e != nil; e = e.Next() {
			entry := e.Value.(*types.OrderedDictEntry)
			if err := add(entry.Key, entry.Value); err != nil {
				return nil, err
			}
		}
	case *types.Dict:
		for _, e := range *d {
			if err := add(e.Key, e.Value); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("t5: %s holds a %T, not a state dict", file, obj)
	}
	return tensors, nil
}

// pickledFile is a read pytorch_model.bin, for Load.
type pickledFile struct {
	path    string
	tensors map[string]*pickledTensor
}

func (p *pickledFile) source() string { return p.path }

func (p *pickledFile) shapeOf(name string) ([]int, bool) {
	t, ok := p.tensors[name]
	if !ok {
		return nil, false
	}
	return t.shape, true
}

func (p *pickledFile) readInto(name string, dst []float32) error {
	t := p.tensors[name]
	if len(t.values) != len(dst) {
		return fmt.Errorf("t5: %s: tensor %q has %d elements, want %d", p.path, name, len(t.values), len(dst))
	}
	copy(dst, t.values)
	return nil
}

func (p *pickledFile) names() []string {
	out := make([]string, 0, len(p.tensors))
	for n := range p.tensors {
		out = append(out, n)
	}
	return out
}

// budgetOf is the budget a spend of n overdrew: what it was before.
func budgetOf(budget *int64, n int64) int64 { return *budget + n }

// pickleArgs gives each pickle opcode (protocols 0 to 5) the size of its
// argument: a fixed count of bytes, or one of the kinds below.
const (
	argLine     = -1 // up to a newline
	argTwoLines = -2
	argLen1     = -3 // a length of 1, 4 or 8 bytes, then that many bytes
	argLen4     = -4
	argLen8     = -8
	argFrame    = -9 // an 8-byte frame length; the frame's opcodes follow
)

var pickleArgs = func() map[byte]int {
	m := map[byte]int{}
	for _, op := range []byte("(.012NQRabdelostu})]\x81\x85\x86\x87\x88\x89\x8f\x90\x91\x92\x93\x94\x97\x98") {
		m[byte(op)] = 0
	}
	for op, n := range map[byte]int{'K': 1, 'h': 1, 'q': 1, 0x80: 1, 0x82: 1, 'M': 2, 0x83: 2, 'J': 4, 'j': 4, 'r': 4, 0x84: 4, 'G': 8,
		'F': argLine, 'I': argLine, 'L': argLine, 'P': argLine, 'S': argLine, 'V': argLine, 'g': argLine, 'p': argLine,
		'c': argTwoLines, 'i': argTwoLines,
		'U': argLen1, 'C': argLen1, 0x8c: argLen1, 0x8a: argLen1,
		'T': argLen4, 'X': argLen4, 'B': argLen4, 0x8b: argLen4,
		0x8d: argLen8, 0x8e: argLen8, 0x96: argLen8, 0x95: argFrame} {
		m[op] = n
	}
	return m
}()

// scanPickle walks a pickle's opcodes without running them, and refuses
// one whose lengths exceed what follows them: the unpickler allocates a
// length before it reads, so a few bytes could ask it for gigabytes.
func scanPickle(p []byte) error {
	for i := 0; i < len(p); {
		op := p[i]
		kind, ok := pickleArgs[op]
		if !ok {
			return fmt.Errorf("byte %d: opcode 0x%02x is not a pickle opcode", i, op)
		}
		i++
		left := len(p) - i
		switch {
		case kind >= 0:
			if kind > left {
				return fmt.Errorf("byte %d: opcode 0x%02x cut short", i-1, op)
			}
			i += kind
		case kind == argLine || kind == argTwoLines:
			for range -kind {
				nl := bytes.IndexByte(p[i:], '\n')
				if nl < 0 {
					return fmt.Errorf("byte %d: opcode 0x%02x without its newline", i-1, op)
				}
				i += nl + 1
			}
		default:
			width := -kind
			if kind == argFrame {
				width = 8
			}
			if width > left {
				return fmt.Errorf("byte %d: opcode 0x%02x cut short", i-1, op)
			}
			var n uint64
			switch width {
			case 1:
				n = uint64(p[i])
			case 4:
				n = uint64(binary.LittleEndian.Uint32(p[i:]))
			case 8:
				n = binary.LittleEndian.Uint64(p[i:])
			}
			i += width
			if n > uint64(len(p)-i) {
				return fmt.Errorf("byte %d: opcode 0x%02x claims %d bytes, %d follow", i-1-width, op, n, len(p)-i)
			}
			if kind != argFrame {
				i += int(n)
			}
		}
		if op == '.' {
			return nil
		}
	}
	return errors.New("no STOP opcode: the pickle is cut short")
}
