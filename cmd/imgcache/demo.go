package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func demoCmd() *cobra.Command {
	return command("demo [flags]", "serve sample images, mount them, show them", `
Shows imgcache at work on this machine: generates a few sample images,
serves them with 'imgcache serve' on 127.0.0.1, mounts a cache of them
with 'imgcache mount', and runs ls, sha256sum, getfattr and du on the
mount, printing each command and what it printed. Then it unmounts and
removes what it made (unless --keep). Needs root or fusermount3, and
getfattr (Debian package attr).`, demoFlags)
}

// demoImages are the sample images: path, size in MiB.
var demoImages = []struct {
	name string
	mib  int
}{
	{"alpine/alpine-virt-3.20.3-x86_64.iso", 24},
	{"debian/debian-12-genericcloud-amd64.qcow2", 64},
	{"ubuntu/jammy-server-cloudimg-amd64.img", 128},
}

func demoFlags(fs *pflag.FlagSet) func([]string) error {
	dir := fs.String("dir", "", "work `directory` (default: a new one under $TMPDIR)")
	keep := fs.Bool("keep", false, "leave the origin and the mount running; print how to stop them")
	return func(args []string) error {
		if len(args) != 0 {
			return usageErr("takes no arguments")
		}
		return runDemo(*dir, *keep)
	}
}

func runDemo(dir string, keep bool) (err error) {
	for _, tool := range []string{"ls", "sha256sum", "getfattr", "du", "dd"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("the demo runs %s, which is not installed (Debian: apt-get install attr coreutils)", tool)
		}
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "imgcache-demo-"); err != nil {
			return err
		}
		if !keep {
			defer os.RemoveAll(dir)
		}
	}
	images, cacheDir, mnt := filepath.Join(dir, "images"), filepath.Join(dir, "cache"), filepath.Join(dir, "mnt")
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return err
	}
	step("generating sample images in %s", images)
	if err := makeDemoImages(images); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}

	step("starting the origin: imgcache serve --listen 127.0.0.1:0 %s", images)
	origin, line, err := startChild(self, "serving ", "serve", "--listen", "127.0.0.1:0", images)
	if err != nil {
		return err
	}
	if !keep {
		defer origin.stop()
	}
	url := line[strings.LastIndex(line, " ")+1:]

	step("mounting: imgcache mount --cache-dir %s %s %s", cacheDir, url, mnt)
	m, _, err := startChild(self, "ready: ", "mount", "--cache-dir", cacheDir, url, mnt)
	if err != nil {
		return err
	}
	if !keep {
		defer m.stop()
	}

	big := filepath.Join(mnt, demoImages[2].name)
	mid := filepath.Join(mnt, demoImages[1].name)
	show("ls", "-lR", mnt)
	step("the first read faults the image in from the origin...")
	timed("sha256sum", big)
	step("...the second is served from the cache")
	timed("sha256sum", big)
	show("getfattr", "-d", big)
	step("reading 1 MiB in the middle of another image fetches only that part")
	show("dd", "if="+mid, "of=/dev/null", "bs=1M", "skip=32", "count=1", "status=none")
	show("getfattr", "-d", mid)
	show("du", "-h", "--apparent-size", mid)
	show("du", "-h", mid, big)
	step("SHA256SUMS files come through too:")
	showIn(filepath.Dir(big), "sha256sum", "-c", "SHA256SUMS")

	if keep {
		fmt.Printf("\nLeft running: origin pid %d, mount pid %d at %s.\nStop with: kill %d %d\n",
			origin.cmd.Process.Pid, m.cmd.Process.Pid, mnt, m.cmd.Process.Pid, origin.cmd.Process.Pid)
		return nil
	}
	step("unmounting and cleaning up")
	return m.stop()
}

// makeDemoImages writes the sample images (deterministic pseudo-random
// bytes) and, for the last one, a SHA256SUMS as image mirrors publish.
func makeDemoImages(dir string) error {
	var sums string
	for i, im := range demoImages {
		p := filepath.Join(dir, im.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		h := sha256.New()
		_, err = io.CopyN(io.MultiWriter(f, h), rand.NewChaCha8([32]byte{byte(i + 1)}), int64(im.mib)<<20)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		sums = fmt.Sprintf("%x *%s\n", h.Sum(nil), filepath.Base(p))
	}
	last := filepath.Join(dir, demoImages[len(demoImages)-1].name)
	return os.WriteFile(filepath.Join(filepath.Dir(last), "SHA256SUMS"), []byte(sums), 0o644)
}

// child is a process the demo started.
type child struct {
	cmd  *exec.Cmd
	done chan error
}

// startChild runs self with args and waits for a line on its stderr that
// contains marker; the rest of its stderr is copied through.
func startChild(self, marker string, args ...string) (*child, string, error) {
	cmd := exec.Command(self, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	c := &child{cmd: cmd, done: make(chan error, 1)}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stderr)
		found := false
		for sc.Scan() {
			fmt.Fprintf(os.Stderr, "  | %s\n", sc.Text())
			if !found && strings.Contains(sc.Text(), marker) {
				found = true
				lines <- sc.Text()
			}
		}
		close(lines)
		c.done <- cmd.Wait()
	}()
	select {
	case line, ok := <-lines:
		if !ok {
			return nil, "", fmt.Errorf("imgcache %s exited: %v", args[0], <-c.done)
		}
		return c, line, nil
	case <-time.After(60 * time.Second):
		c.stop()
		return nil, "", fmt.Errorf("imgcache %s did not get ready within 60s", args[0])
	}
}

// stop sends SIGTERM and waits for the child to exit.
func (c *child) stop() error {
	if c.cmd.ProcessState != nil {
		return nil
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.done:
		return err
	case <-time.After(20 * time.Second):
		c.cmd.Process.Kill()
		return errors.New("child did not stop on SIGTERM; killed")
	}
}

func step(format string, a ...any) { fmt.Printf("\n== "+format+"\n", a...) }

func show(name string, args ...string) { showIn("", name, args...) }

// showIn prints a command as typed and runs it, printing what it prints.
func showIn(dir, name string, args ...string) {
	fmt.Printf("$ %s %s\n", name, strings.Join(args, " "))
	cmd := exec.CommandContext(context.Background(), name, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	if err := cmd.Run(); err != nil {
		fmt.Printf("(%s: %v)\n", name, err)
	}
}

// timed runs a command over one file and adds how long it took.
func timed(name, file string) {
	start := time.Now()
	show(name, file)
	d := time.Since(start)
	if fi, err := os.Stat(file); err == nil {
		fmt.Printf("(%.2fs, %.0f MiB/s)\n", d.Seconds(), float64(fi.Size())/(1<<20)/d.Seconds())
	}
}
