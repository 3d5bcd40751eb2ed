package t5

import (
	"archive/zip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// PyTorch checkpoints. Many hub repositories (the T5 v1.1 ones among them)
// hold only pytorch_model.bin: a zip archive (torch.save since PyTorch
// 1.6) of data.pkl, a pickle of the state dict, and data/KEY, the raw
// bytes of each storage. A pickle is a program: Python's unpickler calls
// whatever it names.
//
// This reader runs only the part of the pickle machine that torch.save
// uses for a dictionary of float tensors (unpickleStateDict): about thirty
// opcodes, the globals OrderedDict, _rebuild_tensor_v2,
// _rebuild_parameter and the float storages, and nothing else; any other
// opcode or name stops the load with an error that names it. It first
// used gopickle (the library this project names for PyTorch files), which
// runs no code either, but on hostile files it allocated a length before
// reading it (a 433-byte file asked for 40 GiB) and formatted the
// file's own structures into its errors (a 1 MB pickle of shared
// references expands to terabytes of text): both fatal, and beyond
// recover. Here nothing the file claims is allocated before it is checked
// against what is there, no error prints a value of the file, and the
// values read (storages and tensors) stay within a budget the model's
// config sets.

// The bounds of a state dict's pickle.
const (
	maxPickle    = 1 << 20 // data.pkl: about 150 bytes a tensor (t5-11b's: about 100 kB)
	maxPickleStr = 1 << 16 // a name
	maxTuple     = 1 << 10 // elements of a tuple: a tensor's arguments and shape
	maxDims      = 8       // of a tensor
	maxMemo      = 1 << 20 // memo entries
)

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

// The pickle machine's values besides int64, string, bool and nil.
type (
	pyGlobal string // module.name, one of the allowed
	pyTuple  []any
	pyMark   struct{}
	pyDict   struct { // an OrderedDict of the state dict (or its _metadata)
		keys   []string
		values map[string]any
	}
)

// storageTypes are the storages a state dict of float tensors holds.
var storageTypes = map[pyGlobal]storageType{
	"torch.FloatStorage": {"FloatStorage", 4}, "torch.HalfStorage": {"HalfStorage", 2}, "torch.BFloat16Storage": {"BFloat16Storage", 2},
}

// allowedGlobal reports whether torch.save writes module.name into a
// state dict's pickle.
func allowedGlobal(g pyGlobal) bool {
	_, isStorage := storageTypes[g]
	return isStorage || g == "collections.OrderedDict" || g == "torch._utils._rebuild_tensor_v2" || g == "torch._utils._rebuild_parameter"
}

// pickleBudget is what a checkpoint's files may make the reader hold,
// shared by its shards: values (each storage's, then each tensor's; an
// empty one counts as one) and state-dict entries.
type pickleBudget struct {
	values  int64
	entries int64
}

// readPyTorch reads the state dict of a torch.save zip archive.
func readPyTorch(file string, budget *pickleBudget) (map[string]*pickledTensor, error) {
	var fileSize int64
	if st, err := os.Stat(file); err == nil {
		fileSize = st.Size()
	}
	z, err := zip.OpenReader(file)
	if err != nil {
		return nil, fmt.Errorf("t5: %s is not a zip archive of torch.save (PyTorch ≥ 1.6), or it is damaged; the legacy format is not read: re-save it with torch.save, or as safetensors (%v)", file, err)
	}
	defer z.Close()
	// torch.save writes one folder of records: data.pkl, data/KEY per
	// storage, version (and byteorder), all stored uncompressed. A second
	// data.pkl or folder would make this reader and torch see different
	// weights.
	records := map[string]*zip.File{}
	var pkl *zip.File
	folder := ""
	for _, f := range z.File {
		top, _, _ := strings.Cut(f.Name, "/")
		switch {
		case folder == "":
			folder = top
		case top != folder:
			return nil, fmt.Errorf("t5: %s holds records in two folders (%s and %s); torch.save writes one", file, quoteName(folder), quoteName(top))
		}
		if _, dup := records[f.Name]; dup {
			return nil, fmt.Errorf("t5: %s holds two records named %s", file, quoteName(f.Name))
		}
		records[f.Name] = f
		if f.Name == folder+"/data.pkl" {
			pkl = f
		}
	}
	if pkl == nil {
		return nil, fmt.Errorf("t5: %s: no data.pkl: not a torch.save archive", file)
	}
	if order, ok := records[folder+"/byteorder"]; ok {
		if b, err := readRecord(order, 16); err != nil || string(b) != "little" {
			return nil, fmt.Errorf("t5: %s was saved on a big-endian machine (its byteorder record); load and re-save it on a little-endian one", file)
		}
	}
	if pkl.Method != zip.Store {
		return nil, fmt.Errorf("t5: %s: data.pkl is compressed; torch.save stores it as it is", file)
	}
	if pkl.UncompressedSize64 > maxPickle {
		return nil, fmt.Errorf("t5: %s: data.pkl claims %d bytes; a state dict's pickle has far fewer (at most %d read)", file, pkl.UncompressedSize64, maxPickle)
	}
	program, err := readRecord(pkl, maxPickle)
	if err != nil {
		return nil, fmt.Errorf("t5: %s: data.pkl: %w", file, err)
	}
	if err := budget.spend(&budget.entries, 1, "another file"); err != nil { // a shard holds something
		return nil, fmt.Errorf("t5: %s: %w", file, err)
	}
	rd := &stateDictReader{prefix: folder, records: records, fileSize: fileSize, budget: budget, storages: map[string]*storage{}}
	tensors, err := rd.unpickle(program)
	if err != nil {
		return nil, fmt.Errorf("t5: %s: %w", file, err)
	}
	return tensors, nil
}

// readRecord reads a whole record of at most limit bytes, to its end, so
// that its checksum is checked.
func readRecord(f *zip.File, limit uint64) ([]byte, error) {
	if f.UncompressedSize64 > limit {
		return nil, fmt.Errorf("%d bytes, more than the %d read", f.UncompressedSize64, limit)
	}
	r, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	b := make([]byte, f.UncompressedSize64)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	if _, err := io.Copy(io.Discard, io.LimitReader(r, 1)); err != nil { // io.EOF is where zip checks the CRC
		return nil, err
	}
	return b, nil
}

// quoteName is a name from the file for an error: cut, and quoted so that
// control characters are escaped.
func quoteName(s string) string {
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + "…"
	}
	return strconv.Quote(s)
}

// stateDictReader reads one archive's pickle and storages.
type stateDictReader struct {
	prefix   string
	records  map[string]*zip.File
	fileSize int64
	budget   *pickleBudget
	storages map[string]*storage
}

// spend takes n from one of b's counts.
func (b *pickleBudget) spend(count *int64, n int64, what string) error {
	name := "values"
	if count == &b.entries {
		name = "tensors"
	}
	if n < 0 || n > *count {
		return fmt.Errorf("%s takes the %s read past what config.json's model holds: not this model's weights", what, name)
	}
	*count -= n
	return nil
}

// spend takes n values (at least one) from the budget.
func (rd *stateDictReader) spend(n int64, what string) error {
	return rd.budget.spend(&rd.budget.values, max(n, 1), what)
}

// unpickle runs program, the pickle of a state dict, and returns its
// tensors by name.
func (rd *stateDictReader) unpickle(p []byte) (map[string]*pickledTensor, error) {
	var stack []any
	var marks []int
	memo := map[uint64]any{}
	i := 0
	fail := func(format string, args ...any) error {
		return fmt.Errorf("data.pkl byte %d: "+format, append([]any{i}, args...)...)
	}
	take := func(n uint64) ([]byte, error) {
		if n > uint64(len(p)-i) {
			return nil, fail("a length of %d, and %d bytes follow", n, len(p)-i)
		}
		b := p[i : i+int(n)]
		i += int(n)
		return b, nil
	}
	uint := func(width int) (uint64, error) {
		b, err := take(uint64(width))
		if err != nil {
			return 0, err
		}
		var n uint64
		for k := width - 1; k >= 0; k-- {
			n = n<<8 | uint64(b[k])
		}
		return n, nil
	}
	line := func() (string, error) {
		for k := i; k < len(p) && k-i <= maxPickleStr; k++ {
			if p[k] == '\n' {
				s := string(p[i:k])
				i = k + 1
				return s, nil
			}
		}
		return "", fail("a line without its end")
	}
	pop := func() (any, error) {
		if len(stack) == 0 || len(marks) > 0 && len(stack) == marks[len(marks)-1] {
			return nil, fail("pop from an empty stack")
		}
		v := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		return v, nil
	}
	popMark := func() ([]any, error) {
		if len(marks) == 0 {
			return nil, fail("no mark")
		}
		at := marks[len(marks)-1]
		marks = marks[:len(marks)-1]
		items := append([]any(nil), stack[at:]...)
		stack = stack[:at]
		return items, nil
	}
	top := func() (any, error) {
		if len(stack) == 0 {
			return nil, fail("an empty stack")
		}
		return stack[len(stack)-1], nil
	}
	setItems := func(d any, kv []any) error {
		dict, ok := d.(*pyDict)
		if !ok || len(kv)%2 != 0 {
			return fail("SETITEMS on a %s", kind(d))
		}
		for k := 0; k < len(kv); k += 2 {
			key, ok := kv[k].(string)
			if !ok {
				return fail("a key that is a %s, not a name", kind(kv[k]))
			}
			if _, dup := dict.values[key]; !dup {
				if err := rd.budget.spend(&rd.budget.entries, 1, "entry "+quoteName(key)); err != nil {
					return err
				}
				dict.keys = append(dict.keys, key)
			}
			dict.values[key] = kv[k+1]
		}
		return nil
	}
	for i < len(p) {
		op := p[i]
		i++
		var err error
		var push any
		pushed := true
		switch op {
		case 0x80: // PROTO
			_, err = take(1)
			pushed = false
		case 0x95: // FRAME: the length of what follows, which must be there
			var n uint64
			if n, err = uint(8); err == nil && n > uint64(len(p)-i) {
				err = fail("a frame of %d bytes, and %d bytes follow", n, len(p)-i)
			}
			pushed = false
		case '.': // STOP
			if len(stack) != 1 || len(marks) != 0 {
				return nil, fail("STOP with %d values on the stack", len(stack))
			}
			return rd.tensorsOf(stack[0])
		case '(':
			marks = append(marks, len(stack))
			pushed = false
		case ')':
			push = pyTuple{}
		case 't':
			var items []any
			if items, err = popMark(); err == nil {
				if len(items) > maxTuple {
					err = fail("a tuple of %d elements", len(items))
				}
				push = pyTuple(items)
			}
		case 0x85, 0x86, 0x87: // TUPLE1..3
			n := int(op - 0x84)
			items := make(pyTuple, n)
			for k := n - 1; k >= 0 && err == nil; k-- {
				items[k], err = pop()
			}
			push = items
		case '}':
			push = &pyDict{values: map[string]any{}}
		case 's', 'u': // SETITEM, SETITEMS
			var kv []any
			if op == 's' {
				var k, v any
				if v, err = pop(); err == nil {
					k, err = pop()
				}
				kv = []any{k, v}
			} else {
				kv, err = popMark()
			}
			if err == nil {
				var d any
				if d, err = top(); err == nil {
					err = setItems(d, kv)
				}
			}
			pushed = false
		case 'J': // BININT
			var n uint64
			n, err = uint(4)
			push = int64(int32(n))
		case 'K':
			var n uint64
			n, err = uint(1)
			push = int64(n)
		case 'M':
			var n uint64
			n, err = uint(2)
			push = int64(n)
		case 0x8a: // LONG1: a little-endian two's-complement integer
			var n uint64
			if n, err = uint(1); err == nil {
				if n > 8 {
					err = fail("an integer of %d bytes", n)
					break
				}
				var b []byte
				if b, err = take(n); err == nil {
					var v uint64
					for k := len(b) - 1; k >= 0; k-- {
						v = v<<8 | uint64(b[k])
					}
					if len(b) > 0 && len(b) < 8 && b[len(b)-1]&0x80 != 0 {
						v -= 1 << (8 * len(b))
					}
					push = int64(v)
				}
			}
		case 'N':
			push = nil
		case 0x88:
			push = true
		case 0x89:
			push = false
		case 'X', 0x8c, 0x8d: // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
			width := map[byte]int{'X': 4, 0x8c: 1, 0x8d: 8}[op]
			var n uint64
			if n, err = uint(width); err == nil {
				if n > maxPickleStr {
					err = fail("a string of %d bytes; a state dict's are names", n)
					break
				}
				var b []byte
				b, err = take(n)
				push = string(b)
			}
		case 'c': // GLOBAL module\nname\n
			var module, name string
			if module, err = line(); err == nil {
				if name, err = line(); err == nil {
					push, err = global(module, name)
				}
			}
		case 0x93: // STACK_GLOBAL
			var m, n any
			if n, err = pop(); err == nil {
				if m, err = pop(); err == nil {
					module, ok1 := m.(string)
					name, ok2 := n.(string)
					if !ok1 || !ok2 {
						err = fail("STACK_GLOBAL of a %s and a %s", kind(m), kind(n))
						break
					}
					push, err = global(module, name)
				}
			}
		case 'q', 'r', 0x94: // BINPUT, LONG_BINPUT, MEMOIZE
			var at uint64
			switch op {
			case 'q':
				at, err = uint(1)
			case 'r':
				at, err = uint(4)
			default:
				at = uint64(len(memo))
			}
			if err == nil {
				var v any
				if v, err = top(); err == nil {
					if _, ok := memo[at]; !ok && len(memo) >= maxMemo {
						err = fail("more than %d memo entries", maxMemo)
					}
					memo[at] = v
				}
			}
			pushed = false
		case 'h', 'j': // BINGET, LONG_BINGET
			var at uint64
			if op == 'h' {
				at, err = uint(1)
			} else {
				at, err = uint(4)
			}
			if err == nil {
				var ok bool
				if push, ok = memo[at]; !ok {
					err = fail("memo entry %d was never stored", at)
				}
			}
		case 'Q': // BINPERSID: the storage a tensor is a view of
			var id any
			if id, err = pop(); err == nil {
				push, err = rd.persistent(id)
			}
		case 'R': // REDUCE
			var f, args any
			if args, err = pop(); err == nil {
				if f, err = pop(); err == nil {
					push, err = rd.call(f, args)
				}
			}
		case 'b': // BUILD: an OrderedDict's attributes (_metadata), which say nothing of the weights
			var state any
			if state, err = pop(); err == nil {
				var obj any
				if obj, err = top(); err == nil {
					if _, ok := obj.(*pyDict); !ok {
						err = fail("BUILD of a %s", kind(obj))
					}
				}
				_ = state
			}
			pushed = false
		default:
			return nil, fail("opcode 0x%02x, which torch.save does not write for a state dict", op)
		}
		if err != nil {
			if strings.HasPrefix(err.Error(), "data.pkl byte") {
				return nil, err
			}
			return nil, fail("%v", err)
		}
		if pushed {
			stack = append(stack, push)
		}
	}
	return nil, errors.New("data.pkl ends without STOP: cut short")
}

// kind names a pickle value's type for an error, never its contents.
func kind(v any) string {
	switch v.(type) {
	case nil:
		return "None"
	case int64:
		return "int"
	case string:
		return "str"
	case bool:
		return "bool"
	case pyTuple:
		return "tuple"
	case *pyDict:
		return "dict"
	case pyGlobal:
		return "global"
	case *storage:
		return "storage"
	case *pickledTensor:
		return "tensor"
	}
	return fmt.Sprintf("%T", v)
}

// global resolves a GLOBAL: only the names a state dict holds.
func global(module, name string) (any, error) {
	g := pyGlobal(module + "." + name)
	if !allowedGlobal(g) {
		return nil, fmt.Errorf("refused: the pickle calls %s, which a state dict of float tensors (torch.save(model.state_dict())) does not; nothing was run", strings.Trim(quoteName(string(g)), `"`))
	}
	return g, nil
}

// call runs REDUCE on the allowed globals.
func (rd *stateDictReader) call(f, args any) (any, error) {
	g, ok := f.(pyGlobal)
	a, ok2 := args.(pyTuple)
	if !ok || !ok2 {
		return nil, fmt.Errorf("REDUCE of a %s with a %s", kind(f), kind(args))
	}
	switch g {
	case "collections.OrderedDict":
		if len(a) != 0 {
			return nil, errors.New("OrderedDict called with arguments")
		}
		return &pyDict{values: map[string]any{}}, nil
	case "torch._utils._rebuild_parameter":
		if len(a) < 1 {
			return nil, errors.New("_rebuild_parameter without arguments")
		}
		t, ok := a[0].(*pickledTensor)
		if !ok {
			return nil, fmt.Errorf("_rebuild_parameter of a %s", kind(a[0]))
		}
		return t, nil
	case "torch._utils._rebuild_tensor_v2":
		return rd.rebuildTensor(a)
	}
	return nil, fmt.Errorf("%s is not callable", g)
}

// rebuildTensor is torch._utils._rebuild_tensor_v2(storage, offset,
// size, stride, requires_grad, backward_hooks[, metadata]): the view, as
// a tensor of its own.
func (rd *stateDictReader) rebuildTensor(a pyTuple) (any, error) {
	if len(a) < 4 {
		return nil, fmt.Errorf("_rebuild_tensor_v2 with %d arguments", len(a))
	}
	st, ok1 := a[0].(*storage)
	offset, ok2 := a[1].(int64)
	size, ok3 := a[2].(pyTuple)
	stride, ok4 := a[3].(pyTuple)
	if !ok1 || !ok2 || !ok3 || !ok4 || len(size) != len(stride) || offset < 0 || offset > int64(len(st.values)) {
		return nil, errors.New("_rebuild_tensor_v2: unexpected arguments")
	}
	if len(size) > maxDims {
		return nil, fmt.Errorf("a tensor of %d dimensions", len(size))
	}
	shape, strides := make([]int, len(size)), make([]int, len(size))
	n, last := int64(1), offset
	for k := range size {
		d, ok := size[k].(int64)
		s, ok2 := stride[k].(int64)
		if !ok || !ok2 || d < 0 || s < 0 || d > 0 && n > (1<<40)/d || d > 1 && s > 0 && d-1 > int64(len(st.values))/s {
			return nil, errors.New("_rebuild_tensor_v2: a size or stride out of range")
		}
		shape[k], strides[k] = int(d), int(s)
		n *= d
		if d > 1 {
			last += (d - 1) * s // at most the storage's length, by the check above
		}
	}
	if n > 0 && last >= int64(len(st.values)) {
		return nil, fmt.Errorf("storage %s holds %d values; a tensor of size %v and stride %v at offset %d reads beyond it", quoteName(st.key), len(st.values), shape, strides, offset)
	}
	if err := rd.spend(n, fmt.Sprintf("a tensor of size %v", shape)); err != nil {
		return nil, err
	}
	out := make([]float32, n)
	idx := make([]int, len(shape))
	for k := range out {
		at := int(offset)
		for d, j := range idx {
			at += j * strides[d]
		}
		out[k] = st.values[at]
		for d := len(idx) - 1; d >= 0; d-- { // row-major odometer
			if idx[d]++; idx[d] < shape[d] {
				break
			}
			idx[d] = 0
		}
	}
	return &pickledTensor{shape: shape, values: out}, nil
}

// persistent loads the storage a persistent id names: ("storage", type,
// key, location, numel).
func (rd *stateDictReader) persistent(id any) (any, error) {
	t, ok := id.(pyTuple)
	if !ok || len(t) < 5 || t[0] != "storage" {
		return nil, fmt.Errorf("a persistent id that is a %s, not a storage's", kind(id))
	}
	g, ok1 := t[1].(pyGlobal)
	key, ok2 := t[2].(string)
	numel, ok3 := t[4].(int64)
	typ, ok4 := storageTypes[g]
	if !ok1 || !ok2 || !ok3 || !ok4 || numel < 0 {
		return nil, errors.New("a storage of unexpected type, key or size")
	}
	if st, ok := rd.storages[key]; ok {
		return st, nil
	}
	name := quoteName("data/" + key)
	rec, ok := rd.records[rd.prefix+"/data/"+key]
	if !ok {
		return nil, fmt.Errorf("no record %s", name)
	}
	if rec.Method != zip.Store || rec.CompressedSize64 != rec.UncompressedSize64 {
		return nil, fmt.Errorf("%s is compressed; torch.save stores storages as they are", name)
	}
	if numel > math.MaxInt64/8 || rec.UncompressedSize64 != uint64(numel)*uint64(typ.size) {
		return nil, fmt.Errorf("%s has %d bytes, %d %s values need %d", name, rec.UncompressedSize64, numel, typ.name, uint64(numel)*uint64(typ.size))
	}
	if rec.CompressedSize64 > uint64(rd.fileSize) {
		return nil, fmt.Errorf("%s claims %d bytes, more than the file's %d", name, rec.CompressedSize64, rd.fileSize)
	}
	if err := rd.spend(numel, "storage "+name); err != nil {
		return nil, err
	}
	raw, err := readRecord(rec, rec.UncompressedSize64)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	st := &storage{key: key, values: make([]float32, numel)}
	for k := range st.values {
		switch typ.name {
		case "FloatStorage":
			st.values[k] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*k:]))
		case "HalfStorage":
			st.values[k] = HalfToFloat(binary.LittleEndian.Uint16(raw[2*k:]))
		case "BFloat16Storage":
			st.values[k] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(raw[2*k:])) << 16)
		}
	}
	rd.storages[key] = st
	return st, nil
}

// tensorsOf is the state dict the pickle built: names to tensors.
func (rd *stateDictReader) tensorsOf(v any) (map[string]*pickledTensor, error) {
	d, ok := v.(*pyDict)
	if !ok {
		return nil, fmt.Errorf("the pickle holds a %s, not a state dict", kind(v))
	}
	out := map[string]*pickledTensor{}
	for _, k := range d.keys {
		t, ok := d.values[k].(*pickledTensor)
		if !ok {
			return nil, fmt.Errorf("entry %s is a %s, not a tensor: not a state dict", quoteName(k), kind(d.values[k]))
		}
		out[k] = t
	}
	return out, nil
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
