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
func (rd *stateDictReader) unpickle(program []byte) (map[string]*pickledTensor, error) {
	m := &pickleMachine{rd: rd, p: program, memo: map[uint64]any{}}
	for m.i < len(m.p) {
		op := m.p[m.i]
		m.i++
		if op == '.' { // STOP
			if len(m.stack) != 1 || len(m.marks) != 0 {
				return nil, m.fail("STOP with %d values on the stack", len(m.stack))
			}
			return rd.tensorsOf(m.stack[0])
		}
		if err := m.step(op); err != nil {
			var pe *pickleError
			if errors.As(err, &pe) {
				return nil, err
			}
			return nil, m.fail("%v", err)
		}
	}
	return nil, errors.New("data.pkl ends without STOP: cut short")
}

// pickleMachine is unpickle's state: the program and where it is, the
// stack with its marks, and the memo.
type pickleMachine struct {
	rd    *stateDictReader
	p     []byte
	i     int // the next byte
	stack []any
	marks []int // stack heights at each MARK
	memo  map[uint64]any
}

// pickleError is an error that already says where in data.pkl it is.
type pickleError struct{ msg string }

func (e *pickleError) Error() string { return e.msg }

// fail is an error at the machine's place in the program.
func (m *pickleMachine) fail(format string, args ...any) error {
	return &pickleError{fmt.Sprintf("data.pkl byte %d: "+format, append([]any{m.i}, args...)...)}
}

// step runs one opcode, op, whose argument follows it.
func (m *pickleMachine) step(op byte) error {
	switch op {
	case 0x80: // PROTO
		_, err := m.take(1)
		return err
	case 0x95: // FRAME: the length of what follows, which must be there
		n, err := m.uint(8)
		if err == nil && n > uint64(len(m.p)-m.i) {
			err = m.fail("a frame of %d bytes, and %d bytes follow", n, len(m.p)-m.i)
		}
		return err
	case '(':
		m.marks = append(m.marks, len(m.stack))
		return nil
	case ')':
		return m.push(pyTuple{}, nil)
	case 't', 0x85, 0x86, 0x87: // TUPLE, TUPLE1..3
		return m.tuple(op)
	case '}':
		return m.push(&pyDict{values: map[string]any{}}, nil)
	case 's', 'u': // SETITEM, SETITEMS
		return m.setItems(op)
	case 'J', 'K', 'M', 0x8a: // BININT, BININT1, BININT2, LONG1
		return m.push(m.integer(op))
	case 'N':
		return m.push(nil, nil)
	case 0x88:
		return m.push(true, nil)
	case 0x89:
		return m.push(false, nil)
	case 'X', 0x8c, 0x8d: // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
		return m.push(m.unicode(op))
	case 'c', 0x93: // GLOBAL module\nname\n, STACK_GLOBAL
		return m.push(m.global(op))
	case 'q', 'r', 0x94: // BINPUT, LONG_BINPUT, MEMOIZE
		return m.memoize(op)
	case 'h', 'j': // BINGET, LONG_BINGET
		return m.push(m.get(op))
	case 'Q': // BINPERSID: the storage a tensor is a view of
		id, err := m.pop()
		if err != nil {
			return err
		}
		return m.push(m.rd.persistent(id))
	case 'R': // REDUCE
		args, err := m.pop()
		if err != nil {
			return err
		}
		f, err := m.pop()
		if err != nil {
			return err
		}
		return m.push(m.rd.call(f, args))
	case 'b': // BUILD: an OrderedDict's attributes (_metadata), which say nothing of the weights
		if _, err := m.pop(); err != nil {
			return err
		}
		obj, err := m.top()
		if err == nil {
			if _, ok := obj.(*pyDict); !ok {
				err = m.fail("BUILD of a %s", kind(obj))
			}
		}
		return err
	}
	return m.fail("opcode 0x%02x, which torch.save does not write for a state dict", op)
}

// push puts v on the stack, unless err says the opcode failed.
func (m *pickleMachine) push(v any, err error) error {
	if err == nil {
		m.stack = append(m.stack, v)
	}
	return err
}

// take reads the next n bytes of the program, which must be there.
func (m *pickleMachine) take(n uint64) ([]byte, error) {
	if n > uint64(len(m.p)-m.i) {
		return nil, m.fail("a length of %d, and %d bytes follow", n, len(m.p)-m.i)
	}
	b := m.p[m.i : m.i+int(n)]
	m.i += int(n)
	return b, nil
}

// uint reads a little-endian unsigned integer of width bytes.
func (m *pickleMachine) uint(width int) (uint64, error) {
	b, err := m.take(uint64(width))
	if err != nil {
		return 0, err
	}
	var n uint64
	for k := width - 1; k >= 0; k-- {
		n = n<<8 | uint64(b[k])
	}
	return n, nil
}

// line reads up to a newline, at most a name's length.
func (m *pickleMachine) line() (string, error) {
	for k := m.i; k < len(m.p) && k-m.i <= maxPickleStr; k++ {
		if m.p[k] == '\n' {
			s := string(m.p[m.i:k])
			m.i = k + 1
			return s, nil
		}
	}
	return "", m.fail("a line without its end")
}

// pop takes the top of the stack, above the last mark.
func (m *pickleMachine) pop() (any, error) {
	if len(m.stack) == 0 || len(m.marks) > 0 && len(m.stack) == m.marks[len(m.marks)-1] {
		return nil, m.fail("pop from an empty stack")
	}
	v := m.stack[len(m.stack)-1]
	m.stack = m.stack[:len(m.stack)-1]
	return v, nil
}

// popMark takes everything above the last mark, and the mark.
func (m *pickleMachine) popMark() ([]any, error) {
	if len(m.marks) == 0 {
		return nil, m.fail("no mark")
	}
	at := m.marks[len(m.marks)-1]
	m.marks = m.marks[:len(m.marks)-1]
	items := append([]any(nil), m.stack[at:]...)
	m.stack = m.stack[:at]
	return items, nil
}

// top is the top of the stack, left there.
func (m *pickleMachine) top() (any, error) {
	if len(m.stack) == 0 {
		return nil, m.fail("an empty stack")
	}
	return m.stack[len(m.stack)-1], nil
}

// tuple builds a tuple of what is above the mark (TUPLE) or of the top one
// to three values (TUPLE1..3).
func (m *pickleMachine) tuple(op byte) error {
	if op == 't' {
		items, err := m.popMark()
		if err == nil && len(items) > maxTuple {
			err = m.fail("a tuple of %d elements", len(items))
		}
		return m.push(pyTuple(items), err)
	}
	items := make(pyTuple, int(op-0x84))
	for k := len(items) - 1; k >= 0; k-- {
		var err error
		if items[k], err = m.pop(); err != nil {
			return err
		}
	}
	return m.push(items, nil)
}

// setItems sets one key and value (SETITEM) or the pairs above the mark
// (SETITEMS) in the dict below them; each new key spends from the budget
// of entries.
func (m *pickleMachine) setItems(op byte) error {
	var kv []any
	if op == 's' {
		v, err := m.pop()
		if err != nil {
			return err
		}
		k, err := m.pop()
		if err != nil {
			return err
		}
		kv = []any{k, v}
	} else {
		var err error
		if kv, err = m.popMark(); err != nil {
			return err
		}
	}
	d, err := m.top()
	if err != nil {
		return err
	}
	dict, ok := d.(*pyDict)
	if !ok || len(kv)%2 != 0 {
		return m.fail("SETITEMS on a %s", kind(d))
	}
	for k := 0; k < len(kv); k += 2 {
		key, ok := kv[k].(string)
		if !ok {
			return m.fail("a key that is a %s, not a name", kind(kv[k]))
		}
		if _, dup := dict.values[key]; !dup {
			if err := m.rd.budget.spend(&m.rd.budget.entries, 1, "entry "+quoteName(key)); err != nil {
				return err
			}
			dict.keys = append(dict.keys, key)
		}
		dict.values[key] = kv[k+1]
	}
	return nil
}

// integer reads BININT (4 bytes, signed), BININT1, BININT2 or LONG1 (a
// little-endian two's-complement integer of at most 8 bytes).
func (m *pickleMachine) integer(op byte) (any, error) {
	switch op {
	case 'J':
		n, err := m.uint(4)
		return int64(int32(n)), err
	case 'K':
		n, err := m.uint(1)
		return int64(n), err
	case 'M':
		n, err := m.uint(2)
		return int64(n), err
	}
	n, err := m.uint(1)
	if err != nil {
		return nil, err
	}
	if n > 8 {
		return nil, m.fail("an integer of %d bytes", n)
	}
	b, err := m.take(n)
	if err != nil {
		return nil, err
	}
	var v uint64
	for k := len(b) - 1; k >= 0; k-- {
		v = v<<8 | uint64(b[k])
	}
	if len(b) > 0 && len(b) < 8 && b[len(b)-1]&0x80 != 0 {
		v -= 1 << (8 * len(b))
	}
	return int64(v), nil
}

// unicode reads a string of a 4-, 1- or 8-byte length, at most a name's.
func (m *pickleMachine) unicode(op byte) (any, error) {
	n, err := m.uint(map[byte]int{'X': 4, 0x8c: 1, 0x8d: 8}[op])
	if err != nil {
		return nil, err
	}
	if n > maxPickleStr {
		return nil, m.fail("a string of %d bytes; a state dict's are names", n)
	}
	b, err := m.take(n)
	return string(b), err
}

// global resolves GLOBAL (the names follow it) or STACK_GLOBAL (they
// are on the stack): only the names a state dict holds.
func (m *pickleMachine) global(op byte) (any, error) {
	if op == 'c' {
		module, err := m.line()
		if err != nil {
			return nil, err
		}
		name, err := m.line()
		if err != nil {
			return nil, err
		}
		return global(module, name)
	}
	n, err := m.pop()
	if err != nil {
		return nil, err
	}
	mod, err := m.pop()
	if err != nil {
		return nil, err
	}
	module, ok1 := mod.(string)
	name, ok2 := n.(string)
	if !ok1 || !ok2 {
		return nil, m.fail("STACK_GLOBAL of a %s and a %s", kind(mod), kind(n))
	}
	return global(module, name)
}

// memoize keeps the top of the stack in the memo: at the index that
// follows (BINPUT, LONG_BINPUT) or the next one (MEMOIZE).
func (m *pickleMachine) memoize(op byte) error {
	at, err := uint64(len(m.memo)), error(nil)
	switch op {
	case 'q':
		at, err = m.uint(1)
	case 'r':
		at, err = m.uint(4)
	}
	if err != nil {
		return err
	}
	v, err := m.top()
	if err != nil {
		return err
	}
	if _, ok := m.memo[at]; !ok && len(m.memo) >= maxMemo {
		return m.fail("more than %d memo entries", maxMemo)
	}
	m.memo[at] = v
	return nil
}

// get reads a memo entry (BINGET, LONG_BINGET).
func (m *pickleMachine) get(op byte) (any, error) {
	width := 1
	if op == 'j' {
		width = 4
	}
	at, err := m.uint(width)
	if err != nil {
		return nil, err
	}
	v, ok := m.memo[at]
	if !ok {
		return nil, m.fail("memo entry %d was never stored", at)
	}
	return v, nil
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
