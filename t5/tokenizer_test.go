package t5

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestTokenizerMatchesSentencePiece encodes the sentences of
// testdata/spm/golden.tsv and compares with the ids Debian's spm_encode
// gave for them (testdata/spm/make_golden.sh).
func TestTokenizerMatchesSentencePiece(t *testing.T) {
	tok, err := LoadTokenizer("testdata/spm/tiny.model")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("testdata/spm/golden.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n, bad := 0, 0
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, '\t')
		text, idsText := line[:i], line[i+1:]
		var want []int32
		for _, f := range strings.Fields(idsText) {
			v, err := strconv.Atoi(f)
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, int32(v))
		}
		got := tok.EncodePieces(text)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			bad++
			if bad <= 10 {
				t.Errorf("%q:\n have %v\n want %v (normalised %q)", text, got, want, tok.Normalize(text))
			}
		}
		n++
	}
	if n < 250 {
		t.Fatalf("only %d golden sentences", n)
	}
	if bad > 0 {
		t.Errorf("%d of %d sentences differ", bad, n)
	}
}

func TestT5Conventions(t *testing.T) {
	tok, err := LoadTokenizer("testdata/spm/tiny.model")
	if err != nil {
		t.Fatal(err)
	}
	V := tok.VocabSize()
	ids := tok.Encode("Hugo fixed <extra_id_0> the ticket <extra_id_1>")
	if ids[len(ids)-1] != 1 || ids[len(ids)-2] != int32(V-2) {
		t.Errorf("Encode ends %v, want <extra_id_1>=%d then </s>=1", ids[len(ids)-3:], V-2)
	}
	found := false
	for _, id := range ids {
		if id == int32(V-1) {
			found = true
		}
	}
	if !found || tok.Piece(int32(V-1)) != "<extra_id_0>" {
		t.Errorf("<extra_id_0> should be id %d: %v", V-1, ids)
	}
	if got := tok.Decode(tok.Encode("Hugo fixed the ticket at the station .")); got != "Hugo fixed the ticket at the station ." {
		t.Errorf("round trip gave %q", got)
	}
	if got := tok.Decode(tok.Encode("  spaced   out  ")); got != "spaced out" {
		t.Errorf("whitespace round trip gave %q", got)
	}
	if _, err := LoadTokenizer("testdata/tiny-t5-v1/config.json"); err == nil {
		t.Error("a JSON file loaded as a SentencePiece model")
	}
}
