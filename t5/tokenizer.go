package t5

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Piece types of SentencePiece's ModelProto.
const (
	pieceNormal      = 1
	pieceUnknown     = 2
	pieceControl     = 3
	pieceUserDefined = 4
	pieceUnused      = 5
	pieceByte        = 6
)

// spaceSymbol is SentencePiece's visible space, U+2581.
const spaceSymbol = "\u2581"

// unkPenalty is subtracted from the lowest piece score to score an unknown
// character, as SentencePiece's unigram model does.
const unkPenalty = 10

// Tokenizer is a SentencePiece unigram tokenizer read from spiece.model,
// with T5's conventions: </s> appended to every encoding and 100
// <extra_id_N> sentinels after the pieces, in reverse order
// (id = vocab size − 1 − N).
type Tokenizer struct {
	pieces   []string
	scores   []float32
	types    []int32
	index    map[string]int32 // piece → id, for pieces the text can match
	minScore float32
	unk      int32
	eos      int32
	pad      int32
	extraIDs int

	// normaliser
	charsmap         *charsmap
	addDummyPrefix   bool
	removeExtraSpace bool
	escapeSpace      bool

	maxPieceBytes int
}

// LoadTokenizer reads a SentencePiece model (T5's spiece.model).
func LoadTokenizer(path string) (*Tokenizer, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("t5: %w", err)
	}
	t, err := parseModel(raw)
	if err != nil {
		return nil, fmt.Errorf("t5: %s: %w", path, err)
	}
	return t, nil
}

// parseModel decodes the ModelProto fields the encoder needs: pieces (1),
// trainer_spec (2: model_type 3, unk/eos/pad ids), normalizer_spec (3).
func parseModel(b []byte) (*Tokenizer, error) {
	t := &Tokenizer{index: map[string]int32{}, unk: 0, eos: -1, pad: -1, extraIDs: 100,
		addDummyPrefix: true, removeExtraSpace: true, escapeSpace: true}
	modelType := int64(1)
	unkSet := false
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch num {
		case 1: // SentencePiece
			piece, score, ptype := "", float32(0), int32(pieceNormal)
			err := eachField(v, func(n protowire.Number, _ protowire.Type, pv []byte, px uint64) error {
				switch n {
				case 1:
					piece = string(pv)
				case 2:
					score = math.Float32frombits(uint32(px))
				case 3:
					ptype = int32(px)
				}
				return nil
			})
			if err != nil {
				return err
			}
			t.pieces = append(t.pieces, piece)
			t.scores = append(t.scores, score)
			t.types = append(t.types, ptype)
		case 2: // TrainerSpec
			return eachField(v, func(n protowire.Number, _ protowire.Type, _ []byte, px uint64) error {
				switch n {
				case 3:
					modelType = int64(px)
				case 40:
					t.unk, unkSet = int32(px), true
				case 42:
					t.eos = int32(px)
				case 43:
					t.pad = int32(px)
				}
				return nil
			})
		case 3: // NormalizerSpec
			return eachField(v, func(n protowire.Number, _ protowire.Type, nv []byte, nx uint64) error {
				var err error
				switch n {
				case 2:
					if len(nv) > 0 {
						t.charsmap, err = parseCharsmap(nv)
					}
				case 3:
					t.addDummyPrefix = nx != 0
				case 4:
					t.removeExtraSpace = nx != 0
				case 5:
					t.escapeSpace = nx != 0
				}
				return err
			})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if modelType != 1 {
		return nil, fmt.Errorf("model type %d is not unigram (1); T5 uses a unigram model", modelType)
	}
	if len(t.pieces) == 0 {
		return nil, fmt.Errorf("no pieces: not a SentencePiece model")
	}
	t.minScore = float32(math.Inf(1))
	for id, p := range t.pieces {
		switch t.types[id] {
		case pieceNormal, pieceUserDefined:
			t.index[p] = int32(id)
			t.maxPieceBytes = max(t.maxPieceBytes, len(p))
			t.minScore = min(t.minScore, t.scores[id])
		case pieceUnknown:
			if !unkSet {
				t.unk = int32(id)
			}
		}
	}
	return t, nil
}

// eachField walks a protobuf message, handing fn each field's bytes
// (length-delimited) or number (varint, fixed32, fixed64).
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("bad protobuf tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var f uint32
			f, n = protowire.ConsumeFixed32(b)
			x = uint64(f)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("bad protobuf field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

// charsmap is SentencePiece's precompiled normalisation map: a darts-clone
// double-array trie over UTF-8 input whose values index NUL-terminated
// replacement strings.
type charsmap struct {
	units []uint32
	norm  []byte
}

func parseCharsmap(b []byte) (*charsmap, error) {
	if len(b) < 4 {
		return nil, fmt.Errorf("precompiled charsmap too short")
	}
	size := binary.LittleEndian.Uint32(b)
	if uint64(size)+4 > uint64(len(b)) || size%4 != 0 {
		return nil, fmt.Errorf("precompiled charsmap: trie size %d exceeds the blob", size)
	}
	cm := &charsmap{units: make([]uint32, size/4), norm: b[4+size:]}
	for i := range cm.units {
		cm.units[i] = binary.LittleEndian.Uint32(b[4+4*i:])
	}
	return cm, nil
}

// longestPrefix returns the length of the longest key that prefixes s and
// its replacement, or 0.
func (cm *charsmap) longestPrefix(s string) (int, string) {
	if len(cm.units) == 0 {
		return 0, ""
	}
	offset := func(u uint32) uint32 { return (u >> 10) << ((u & (1 << 9)) >> 6) }
	hasLeaf := func(u uint32) bool { return (u>>8)&1 == 1 }
	label := func(u uint32) uint32 { return u & ((1 << 31) | 0xff) }
	value := func(u uint32) uint32 { return u & ((1 << 31) - 1) }
	pos := offset(cm.units[0])
	bestLen, bestVal := 0, uint32(0)
	for i := 0; i < len(s); i++ {
		c := uint32(s[i])
		pos ^= c
		if int(pos) >= len(cm.units) {
			break
		}
		u := cm.units[pos]
		if label(u) != c {
			break
		}
		pos ^= offset(u)
		if hasLeaf(u) {
			bestLen, bestVal = i+1, value(cm.units[pos])
		}
	}
	if bestLen == 0 || int(bestVal) >= len(cm.norm) {
		return 0, ""
	}
	end := int(bestVal)
	for end < len(cm.norm) && cm.norm[end] != 0 {
		end++
	}
	return bestLen, string(cm.norm[bestVal:end])
}

// Normalize applies the model's normaliser: the precompiled map (NFKC for
// T5), whitespace collapsed and trimmed, spaces shown as ▁, and a leading
// ▁ (the dummy prefix). reference: sentencepiece normalizer.cc.
func (t *Tokenizer) Normalize(s string) string {
	if s == "" {
		return ""
	}
	var b strings.Builder
	if t.addDummyPrefix {
		b.WriteString(spaceSymbol)
	}
	isPrevSpace := t.removeExtraSpace
	for len(s) > 0 {
		n, rep := 0, ""
		if t.charsmap != nil {
			n, rep = t.charsmap.longestPrefix(s)
		}
		if n == 0 {
			r, size := utf8.DecodeRuneInString(s)
			n = size
			if r == utf8.RuneError && size == 1 {
				rep = "\uFFFD"
			} else {
				rep = s[:size]
			}
		}
		s = s[n:]
		if t.removeExtraSpace && isPrevSpace {
			rep = strings.TrimLeft(rep, " ")
		}
		if rep != "" {
			for i := 0; i < len(rep); i++ {
				if t.escapeSpace && rep[i] == ' ' {
					b.WriteString(spaceSymbol)
				} else {
					b.WriteByte(rep[i])
				}
			}
			isPrevSpace = strings.HasSuffix(rep, " ")
		}
		if !t.removeExtraSpace {
			isPrevSpace = false
		}
	}
	out := b.String()
	if t.removeExtraSpace {
		sp := " "
		if t.escapeSpace {
			sp = spaceSymbol
		}
		out = strings.TrimRight(out, sp)
		for strings.HasSuffix(out, sp) {
			out = strings.TrimSuffix(out, sp)
		}
	}
	return out
}

// encodePieces segments a normalised string by Viterbi over the pieces'
// scores; characters no piece covers become <unk>, a run of them one
// <unk>. reference: sentencepiece unigram_model.cc EncodeOptimized.
func (t *Tokenizer) encodePieces(s string) []int32 {
	n := len(s)
	type node struct {
		score  float32
		start  int
		id     int32
		reachd bool
	}
	best := make([]node, n+1)
	best[0].reachd = true
	unkScore := t.minScore - unkPenalty
	for i := 0; i < n; {
		if !best[i].reachd {
			i++
			continue
		}
		_, charLen := utf8.DecodeRuneInString(s[i:])
		single := false
		for l := 1; l <= t.maxPieceBytes && i+l <= n; l++ {
			id, ok := t.index[s[i:i+l]]
			if !ok {
				continue
			}
			if l == charLen {
				single = true
			}
			cand := best[i].score + t.scores[id]
			if e := &best[i+l]; !e.reachd || cand > e.score {
				*e = node{score: cand, start: i, id: id, reachd: true}
			}
		}
		if !single {
			cand := best[i].score + unkScore
			if e := &best[i+charLen]; !e.reachd || cand > e.score {
				*e = node{score: cand, start: i, id: t.unk, reachd: true}
			}
		}
		i += charLen
	}
	var rev []int32
	for end := n; end > 0; end = best[end].start {
		rev = append(rev, best[end].id)
	}
	out := make([]int32, 0, len(rev))
	for i := len(rev) - 1; i >= 0; i-- {
		if rev[i] == t.unk && len(out) > 0 && out[len(out)-1] == t.unk {
			continue // SentencePiece merges a run of unknown pieces
		}
		out = append(out, rev[i])
	}
	return out
}

// EncodePieces returns SentencePiece's ids for text, without </s>: what
// spm_encode --output_format=id prints.
func (t *Tokenizer) EncodePieces(text string) []int32 {
	return t.encodePieces(t.Normalize(text))
}

var sentinel = regexp.MustCompile(`<extra_id_(\d+)>`)

// Encode returns T5's ids for text: sentinels <extra_id_N> mapped to their
// ids, the text between them segmented, and </s> appended.
func (t *Tokenizer) Encode(text string) []int32 {
	var out []int32
	last := 0
	for _, m := range sentinel.FindAllStringSubmatchIndex(text, -1) {
		k, _ := strconv.Atoi(text[m[2]:m[3]])
		if k >= t.extraIDs {
			continue
		}
		out = append(out, t.EncodePieces(strings.TrimSpace(text[last:m[0]]))...)
		out = append(out, int32(t.VocabSize()-1-k))
		last = m[1]
	}
	out = append(out, t.EncodePieces(text[last:])...)
	return append(out, t.EOS())
}

// Decode turns ids back into text, dropping </s>, <pad>, <unk> pieces'
// markers and sentinels' ids (as skip_special_tokens does) and turning ▁
// back into spaces.
func (t *Tokenizer) Decode(ids []int32) string {
	var b strings.Builder
	for _, id := range ids {
		if id < 0 || int(id) >= len(t.pieces) || id == t.eos || id == t.pad {
			continue
		}
		if t.types[id] == pieceControl {
			continue
		}
		if id == t.unk {
			b.WriteString(" ⁇ ")
			continue
		}
		b.WriteString(t.pieces[id])
	}
	return strings.TrimSpace(strings.ReplaceAll(b.String(), spaceSymbol, " "))
}

// VocabSize is the number of ids: pieces plus sentinels (32,100 for T5).
func (t *Tokenizer) VocabSize() int { return len(t.pieces) + t.extraIDs }

// EOS returns the id of </s>.
func (t *Tokenizer) EOS() int32 {
	if t.eos >= 0 {
		return t.eos
	}
	return 1
}

// Pad returns the id of <pad>.
func (t *Tokenizer) Pad() int32 {
	if t.pad >= 0 {
		return t.pad
	}
	return 0
}

// Piece returns the text of id (sentinels as <extra_id_N>).
func (t *Tokenizer) Piece(id int32) string {
	if int(id) < len(t.pieces) && id >= 0 {
		return t.pieces[id]
	}
	if k := t.VocabSize() - 1 - int(id); k >= 0 && k < t.extraIDs {
		return fmt.Sprintf("<extra_id_%d>", k)
	}
	return ""
}
