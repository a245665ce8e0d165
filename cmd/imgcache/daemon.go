package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"log/syslog"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/mount"
)

// The detached daemon of a helper mount (fstab.go). The helper, which
// mount(8) waits for, starts imgcache again as the daemon: in a session
// of its own (no terminal to lose), in /, with stdin, stdout and stderr
// on /dev/null (stdout and stderr on the log file if there is one) and a
// pipe as fd 3, and daemonEnv saying where to log.
// The daemon runs imgcache mount; when the mount answers it writes
// "ready" on the pipe and closes it, and the helper exits 0; if the
// mount fails it writes "error" and the reason, which the helper prints
// before it exits non-zero. Its log goes to syslog (the journal, on
// systemd machines), or to the file of log_file=. umount ends it as it
// ends a foreground mount.

// daemonEnv marks the daemon: its value is the log file, or "syslog".
const daemonEnv = "IMGCACHE_DAEMON_LOG"

// readyFD is the daemon's end of the pipe to the helper.
const readyFD = 3

// daemon is set in the daemon of a helper mount, nil everywhere else.
var daemon *detached

// isDaemon says whether this process is a helper's daemon: daemonEnv is
// set and fd 3 is a pipe (an environment variable alone makes nothing
// write to a file it did not open).
func isDaemon() bool {
	if _, ok := os.LookupEnv(daemonEnv); !ok {
		return false
	}
	var st unix.Stat_t
	return unix.Fstat(readyFD, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFIFO
}

// startDaemon starts the daemon for m and waits until it says the mount
// is ready (it returns the ready line) or why it failed.
func startDaemon(m helperMount, stderr io.Writer) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return "", err
	}
	defer r.Close()
	logTo := "syslog"
	if m.logFile != "" {
		logTo = m.logFile
	}
	cmd := exec.Command(exe, m.args...)
	cmd.Env = append(withoutEnv(os.Environ(), "NOTIFY_SOCKET", daemonEnv), daemonEnv+"="+logTo)
	cmd.Dir = "/" // keep no directory of the caller's busy
	cmd.ExtraFiles = []*os.File{w}
	if m.logFile != "" {
		// What is written to stderr rather than logged (a panic's trace,
		// go-fuse's request log under debug) goes to the log file too.
		f, err := os.OpenFile(m.logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			w.Close()
			return "", fmt.Errorf("log_file: %w", err)
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return "", fmt.Errorf("starting the daemon: %w", err)
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		kind, msg, _ := strings.Cut(sc.Text(), "\t")
		switch kind {
		case "ready":
			cmd.Process.Release()
			return msg, nil
		case "warn":
			fmt.Fprintf(stderr, "imgcache: warning: %s\n", msg)
		case "error":
			cmd.Wait() // gone, and nothing mounted, before mount(8) hears of it
			return "", errors.New(msg)
		}
	}
	err = cmd.Wait()
	return "", fmt.Errorf("the daemon ended (%v) before the mount was ready; its log is in %s", err, logTo)
}

func withoutEnv(env []string, names ...string) []string {
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.Contains(names, name) {
			out = append(out, kv)
		}
	}
	return out
}

// detached is the daemon's side: its log and the pipe to the helper.
type detached struct {
	logTo   io.Writer // the log file; nil: syslog
	syslogW *syslog.Writer

	mu   sync.Mutex // protects the following
	pipe *os.File   // nil once closed
}

// runDaemon runs imgcache mount with args as the helper's daemon.
func runDaemon(args []string) int {
	dest := os.Getenv(daemonEnv)
	os.Unsetenv(daemonEnv) // not for what the daemon runs
	syscall.CloseOnExec(readyFD)
	d := &detached{pipe: os.NewFile(readyFD, "ready")}
	if dest == "syslog" {
		w, err := syslog.New(syslog.LOG_DAEMON|syslog.LOG_INFO, "imgcache")
		if err != nil {
			d.tell("warn", fmt.Sprintf("no syslog daemon answers at /dev/log (%v): the daemon's log is lost; name a file with -o log_file=PATH", err))
		}
		d.syslogW = w
		if w != nil { // go-fuse logs (its requests under debug) through the standard logger
			stdlog.SetFlags(0)
			stdlog.SetOutput(priorityWriter(w.Info))
		}
	} else {
		f, err := os.OpenFile(dest, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			d.tell("error", fmt.Sprintf("log file: %v", err))
			return 1
		}
		defer f.Close()
		d.logTo = f
	}
	daemon = d
	log := slog.New(d.handler(slog.LevelInfo))
	log.Info("daemon started", "pid", os.Getpid(), "args", strings.Join(redactArgs(args), " "))

	root := newRoot()
	root.SetArgs(append([]string{"mount"}, args...))
	root.SetOut(io.Discard)
	root.SetErr(io.Discard)
	if _, err := root.ExecuteC(); err != nil {
		d.tell("error", err.Error())
		log.Error("daemon exiting", "pid", os.Getpid(), "status", 1, "err", err)
		return 1
	}
	log.Info("daemon exiting", "pid", os.Getpid(), "status", 0)
	return 0
}

// tell writes a line to the helper: "warn", or "ready" and "error",
// after which the pipe is closed.
func (d *detached) tell(kind, msg string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pipe == nil {
		return
	}
	fmt.Fprintf(d.pipe, "%s\t%s\n", kind, oneLine(msg))
	if kind != "warn" {
		d.pipe.Close()
		d.pipe = nil
	}
}

// handler is the daemon's log at level: the log file, or syslog with
// each record at its priority (syslog stamps the time itself).
func (d *detached) handler(level slog.Level) slog.Handler {
	if d.logTo != nil {
		return slog.NewTextHandler(d.logTo, &slog.HandlerOptions{Level: level})
	}
	if d.syslogW == nil {
		return slog.DiscardHandler
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}}
	w := d.syslogW
	at := func(send func(string) error) slog.Handler { return slog.NewTextHandler(priorityWriter(send), opts) }
	return syslogHandler{debug: at(w.Debug), info: at(w.Info), warn: at(w.Warning), err: at(w.Err)}
}

// priorityWriter sends each record (slog writes one per Write) at one
// syslog priority.
type priorityWriter func(string) error

func (send priorityWriter) Write(p []byte) (int, error) {
	if err := send(strings.TrimSuffix(string(p), "\n")); err != nil {
		return 0, err
	}
	return len(p), nil
}

// syslogHandler hands each record to the text handler of its level's
// priority.
type syslogHandler struct{ debug, info, warn, err slog.Handler }

func (h syslogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.debug.Enabled(ctx, l)
}

func (h syslogHandler) Handle(ctx context.Context, r slog.Record) error {
	switch {
	case r.Level >= slog.LevelError:
		return h.err.Handle(ctx, r)
	case r.Level >= slog.LevelWarn:
		return h.warn.Handle(ctx, r)
	case r.Level >= slog.LevelInfo:
		return h.info.Handle(ctx, r)
	}
	return h.debug.Handle(ctx, r)
}

func (h syslogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return syslogHandler{h.debug.WithAttrs(as), h.info.WithAttrs(as), h.warn.WithAttrs(as), h.err.WithAttrs(as)}
}

func (h syslogHandler) WithGroup(name string) slog.Handler {
	return syslogHandler{h.debug.WithGroup(name), h.info.WithGroup(name), h.warn.WithGroup(name), h.err.WithGroup(name)}
}

// logHandler is imgcache mount's log at level: stderr, or the daemon's.
func logHandler(level slog.Level) slog.Handler {
	if daemon != nil {
		return daemon.handler(level)
	}
	return slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})
}

// announceReady says that the mount answers: one line on stderr, or, in
// the daemon, in its log and to the helper waiting for it.
func announceReady(i mount.Info) {
	if daemon == nil {
		fmt.Fprintln(os.Stderr, i)
		return
	}
	slog.New(daemon.handler(slog.LevelInfo)).Info(i.String(), "pid", os.Getpid())
	daemon.tell("ready", i.String())
}

// redactArgs drops the passwords of the URLs among args (UPSTREAM,
// --mirror=URL,URL, --proxy=URL): the log may be read by more people
// than the fstab.
func redactArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		flag, value, isFlag := strings.Cut(a, "=")
		if !isFlag || !strings.HasPrefix(flag, "--") {
			flag, value = "", a
		}
		urls := strings.Split(value, ",")
		for j, raw := range urls {
			if u, err := url.Parse(raw); err == nil && u.User != nil {
				urls[j] = upstream.Redact(u)
			}
		}
		value = strings.Join(urls, ",")
		if flag != "" {
			value = flag + "=" + value
		}
		out[i] = value
	}
	return out
}
