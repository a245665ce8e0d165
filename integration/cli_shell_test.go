package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// bashCompletion is the bash-completion package's loader, which the
// script imgcache completion bash prints relies on.
const bashCompletion = "/usr/share/bash-completion/bash_completion"

// TestCompletionInShells: the scripts of imgcache completion, loaded in
// a real bash (with bash-completion) and fish, complete commands, flags,
// flag values, and image names that the binary asks a real daemon for.
func TestCompletionInShells(t *testing.T) {
	need(t, "bash", "fish")
	if _, err := os.Stat(bashCompletion); err != nil {
		t.Fatalf("bash-completion is not installed (.ci/setup installs it): %v", err)
	}
	root := t.TempDir()
	makeImages(t, root, map[string]int64{"ubuntu/jammy.img": 1000, "alpine.iso": 1000, "debian.qcow2": 1000})
	origin := startOrigin(t, root)
	m := startMount(t, origin.url, "")
	path := filepath.Dir(bin) + ":" + os.Getenv("PATH")
	every := []string{"alpine.iso", "debian.qcow2", "ubuntu/jammy.img"}

	script := filepath.Join(t.TempDir(), "complete.sh")
	os.WriteFile(script, []byte(`
source `+bashCompletion+`
source <(imgcache completion bash)
# complete LINE prints what a tab at the end of LINE offers, one a line.
complete_line() {
  COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}
  read -ra COMP_WORDS <<<"$COMP_LINE"
  [[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
  COMP_CWORD=$((${#COMP_WORDS[@]}-1))
  COMPREPLY=()
  __start_imgcache imgcache "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
  printf '%s\n' "${COMPREPLY[@]}"
}
complete_line "$1"
`), 0o644)
	bashDo := func(line string) []string {
		cmd := exec.Command("bash", script, line)
		cmd.Env = append(os.Environ(), "PATH="+path)
		out, err := cmd.Output() // stderr: bash's "compopt: not currently executing completion function"
		if err != nil {
			t.Fatalf("bash completing %q: %v", line, err)
		}
		return fields(string(out))
	}
	fishDo := func(line string) []string {
		cmd := exec.Command("fish", "--no-config", "-c", `imgcache completion fish | source; complete -C "$argv[1]"`, line)
		cmd.Env = append(os.Environ(), "PATH="+path)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("fish completing %q: %v\n%s", line, err, out)
		}
		var words []string
		for _, l := range fields(string(out)) {
			w, _, _ := strings.Cut(l, "\t") // fish shows descriptions after a tab
			words = append(words, w)
		}
		slices.Sort(words)
		return words
	}
	dir := "--cache-dir " + m.cacheDir
	run(t, bin, "pin", "--cache-dir", m.cacheDir, "ubuntu/*")
	run(t, bin, "pin", "--cache-dir", m.cacheDir, "alpine.iso")
	for _, c := range []struct {
		line string
		want []string
	}{
		{"imgcache mou", []string{"mount"}},
		{"imgcache pr", []string{"prefetch", "prune"}},
		{"imgcache mount --cache-", []string{"--cache-dir"}},
		{"imgcache mount --verify ", []string{"lazy", "strict"}},
		{"imgcache completion ", []string{"bash", "fish", "zsh"}},
		{"imgcache pin " + dir + " ", every},
		{"imgcache evict " + dir + " ub", []string{"ubuntu/jammy.img"}},
		{"imgcache evict --all " + dir + " ", nil},
		{"imgcache prefetch " + dir + " alpine.iso ", []string{"debian.qcow2", "ubuntu/jammy.img"}},
		{"imgcache stat " + dir + " alpine.iso ", nil},
		{"imgcache unpin " + dir + " ", []string{"alpine.iso", "ubuntu/*"}}, // the rules
		{"imgcache unpin --alias " + dir + " ", nil},
		{"imgcache pin --cache-dir " + t.TempDir() + " ", nil}, // no daemon: nothing, not files
	} {
		if got := bashDo(c.line); !slices.Equal(got, c.want) {
			t.Errorf("bash: %q completes to %q, want %q", c.line, got, c.want)
		}
		if got := fishDo(c.line); !slices.Equal(got, c.want) {
			t.Errorf("fish: %q completes to %q, want %q", c.line, got, c.want)
		}
	}
}

// fields is the non-empty lines of s, sorted.
func fields(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

// TestVersion: imgcache version and --version print the version and
// commit the go command stamped into the binary and the Go version; a
// packaged build's -X version comes first. Built here with
// -buildvcs=true: a GOFLAGS of -buildvcs=false, as this machine's go env
// has, leaves the commit out. The go command stamps nothing in a git
// worktree (its .git is a file): the binary says "commit unknown" then.
func TestVersion(t *testing.T) {
	need(t, "git")
	head := strings.TrimSpace(run(t, "git", "rev-parse", "HEAD"))
	top := strings.TrimSpace(run(t, "git", "rev-parse", "--show-toplevel"))
	wantCommit, wantVersion := "commit "+head+" (", head[:12]
	if st, err := os.Stat(filepath.Join(top, ".git")); err != nil || !st.IsDir() {
		wantCommit, wantVersion = "commit unknown", "(devel)"
	}
	stamped := filepath.Join(t.TempDir(), "imgcache")
	run(t, "go", "build", "-buildvcs=true", "-o", stamped, "../cmd/imgcache")
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out := run(t, stamped, args...)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], "imgcache ") || !strings.Contains(lines[0], wantVersion) ||
			!strings.HasPrefix(lines[1], wantCommit) || lines[2] != runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH {
			t.Errorf("imgcache %s:\n%s\nwant imgcache VERSION (with %s), %s..., %s", args[0], out, wantVersion, wantCommit, runtime.Version())
		}
	}
	packaged := filepath.Join(t.TempDir(), "imgcache")
	run(t, "go", "build", "-buildvcs=true", "-o", packaged, "-ldflags", "-X main.packageVersion=1.2.3~test", "../cmd/imgcache")
	if out := run(t, packaged, "version"); !strings.HasPrefix(out, "imgcache 1.2.3~test\n"+wantCommit) {
		t.Errorf("a build with -X main.packageVersion=1.2.3~test says:\n%s", out)
	}
}

// TestNoTemplateExecution: imgcache executes no text/template (cobra's
// help, usage and version templates): the reflection it does keeps every
// exported method of every type in the binary, 5 MB more.
func TestNoTemplateExecution(t *testing.T) {
	syms := run(t, "go", "tool", "nm", bin)
	if strings.Contains(syms, "text/template.(*state).walk") {
		t.Fatal("the binary executes text templates: a cobra Set*Template call? (see cmd/imgcache/root.go)")
	}
}
