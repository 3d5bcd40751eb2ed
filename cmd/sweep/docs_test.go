package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// The README and docs/ are checked like code: their links resolve, the
// README stays a front page, and every sweep command line they show still
// parses. These catch the drift between the manual and the tool.

// manualFiles are the Markdown files of the manual, relative to the module root.
func manualFiles(t *testing.T) []string {
	t.Helper()
	files := []string{"README.md"}
	err := filepath.WalkDir("../../docs", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".md") {
			rel, _ := filepath.Rel("../..", path)
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// headingAnchor is GitHub's anchor for a Markdown heading: lower case,
// letters, digits, '-' and '_' kept, spaces turned into '-'.
func headingAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case unicode.IsLetter(r), unicode.IsDigit(r), r == '-', r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// anchors lists the heading anchors of a Markdown file (outside code blocks).
func anchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	fence := false
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "```") {
			fence = !fence
			continue
		}
		if !fence && strings.HasPrefix(line, "#") {
			out[headingAnchor(strings.TrimSpace(strings.TrimLeft(line, "#")))] = true
		}
	}
	return out
}

func TestManualLinksResolve(t *testing.T) {
	for _, file := range manualFiles(t) {
		data, err := os.ReadFile(filepath.Join("../..", file))
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(data), "\n") {
			for _, m := range mdLink.FindAllStringSubmatch(line, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				path, frag, _ := strings.Cut(target, "#")
				full := filepath.Join("../..", filepath.Dir(file), path)
				if path == "" {
					full = filepath.Join("../..", file)
				}
				if _, err := os.Stat(full); err != nil {
					t.Errorf("%s:%d: link %q: no such file", file, i+1, target)
					continue
				}
				if frag != "" && strings.HasSuffix(full, ".md") && !anchors(t, full)[frag] {
					t.Errorf("%s:%d: link %q: %s has no heading with that anchor", file, i+1, target, path)
				}
			}
		}
	}
}

func TestREADMEIsAFrontPage(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "\n"); n >= 250 {
		t.Errorf("README.md has %d lines; the front page stays under 250 (the manual is docs/)", n)
	}
}

// shellWords splits a command line as the shell would for the simple
// lines the manual shows: words, single and double quotes.
func shellWords(line string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote rune
	for _, r := range line {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// sweepCommands are the sweep command lines in a Markdown file's shell
// code blocks, as argument lists without the program, with their line.
func sweepCommands(t *testing.T, path string) (cmds [][]string, lines []int) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	fence, shell := false, false
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(line, "```") {
			fence = !fence
			shell = fence && strings.TrimPrefix(line, "```") == "sh"
			continue
		}
		if !shell {
			continue
		}
		// A comment starts at " #" outside quotes; the manual's lines put
		// none inside quotes.
		if i := strings.Index(line, " #"); i >= 0 {
			line = line[:i]
		}
		for _, part := range strings.Split(line, "&&") {
			words := shellWords(strings.TrimSpace(part))
			if len(words) > 1 && (words[0] == "sweep" || words[0] == "bin/sweep") {
				cmds = append(cmds, words[1:])
				lines = append(lines, n)
			}
		}
	}
	return cmds, lines
}

func TestManualCommandsParse(t *testing.T) {
	dir := t.TempDir() // nothing a command might write lands in the checkout
	checked := 0
	for _, file := range manualFiles(t) {
		cmds, lines := sweepCommands(t, filepath.Join("../..", file))
		for i, args := range cmds {
			checked++
			cmd := exec.Command(sweepBin, append(args, "--help")...)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("%s:%d: sweep %s: %v\n%s", file, lines[i], strings.Join(args, " "), err, out)
			}
		}
	}
	if checked < 20 {
		t.Errorf("found %d sweep command lines in README.md and docs/; the manual shows more, so the scan is broken", checked)
	}
}
