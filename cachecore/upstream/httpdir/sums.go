package httpdir

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// SumsFile is the name of the file, in any directory, whose lines give
// the sha256 of files (the Ubuntu and Debian mirror convention).
const SumsFile = "SHA256SUMS"

// parseSHA256SUMS reads a SHA256SUMS file: lines "<64 hex> <mode><name>"
// as sha256sum writes them (mode ' ' for text, '*' for binary), or
// "SHA256 (<name>) = <64 hex>" as BSD tools do. Names are relative to the
// file's directory and may go down into subdirectories; they are returned
// clean (a leading "./" dropped), with their digests as Entry.Digest.
// Blank, comment and malformed lines are ignored, and so are the lines
// sha256sum escapes with a leading backslash (names with a backslash or a
// newline, which CleanName would refuse anyway). A name given twice keeps
// its first digest; names CleanName refuses come back as errors.
func parseSHA256SUMS(body []byte) (map[string]string, []error) {
	sums := map[string]string{}
	var refused []error
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 4096), len(body)+1)
	for sc.Scan() {
		hexsum, raw, ok := parseSumsLine(strings.TrimSuffix(sc.Text(), "\r"))
		if !ok {
			continue
		}
		digest, ok := digestOf(hexsum)
		if !ok {
			continue
		}
		for strings.HasPrefix(raw, "./") {
			raw = raw[2:]
		}
		name, err := upstream.CleanName(raw)
		if err != nil {
			refused = append(refused, fmt.Errorf("%s: %w", SumsFile, err))
			continue
		}
		if _, dup := sums[name]; !dup {
			sums[name] = digest
		}
	}
	return sums, refused
}

func parseSumsLine(line string) (hexsum, name string, ok bool) {
	if rest, bsd := strings.CutPrefix(line, "SHA256 ("); bsd {
		i := strings.LastIndex(rest, ") = ")
		if i < 0 {
			return "", "", false
		}
		return rest[i+4:], rest[:i], true
	}
	if len(line) < 66 || (line[65] != ' ' && line[65] != '*') || line[64] != ' ' {
		return "", "", false
	}
	return line[:64], line[66:], true
}
