package main

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/imgcache/imgcache/mount"
	"github.com/spf13/pflag"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// The mount helper form: how mount(8) and /etc/fstab run imgcache.
//
//	mount -t fuse.imgcache http://images.example/ /mnt/images -o cache_dir=/var/cache/imgcache,max_size=20G
//	http://images.example/ /mnt/images fuse.imgcache max_size=20G,allow_other,_netdev,nofail 0 0
//
// For type fuse.imgcache mount(8) runs fuse3's mount.fuse3, which runs
// "imgcache SOURCE MOUNTPOINT -o OPTIONS" through /bin/sh with mount(8)'s
// PATH (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin);
// for type imgcache it runs /sbin/mount.imgcache (a link to imgcache)
// with the same arguments, perhaps with -s, -f, -n, -v. Every flag of
// imgcache mount is an option, spelled with '_' for '-'; the generic
// options that mount(8) and mount.fuse3 add or pass on are taken and
// ignored. The helper returns once the mount answers, leaving the daemon
// running detached (daemon.go); umount ends it.

// Exit statuses of a mount helper, as mount(8) documents its own.
const (
	exitUsage = 1  // incorrect invocation: a bad option or argument
	exitMount = 32 // mount failure
)

// genericOptions are the options mount(8), mount.fuse3 and fstab may hand
// a helper that mean nothing more to imgcache: its mounts are read-only
// (files 0444, directories 0555, writes EROFS), nosuid and nodev whatever
// they say; the rest are mount(8)'s or systemd's business.
var genericOptions = map[string]bool{
	"defaults": true, "rw": true, "ro": true, "dev": true, "nodev": true, "suid": true, "nosuid": true,
	"exec": true, "noexec": true, "auto": true, "noauto": true, "user": true, "nouser": true, "users": true,
	"owner": true, "group": true, "nofail": true, "_netdev": true, "async": true, "sync": true, "dirsync": true,
	"atime": true, "noatime": true, "diratime": true, "nodiratime": true, "relatime": true, "norelatime": true,
	"strictatime": true, "nostrictatime": true, "lazytime": true, "nolazytime": true, "silent": true,
	"loud": true, "iversion": true, "noiversion": true, "mand": true, "nomand": true,
	"default_permissions": true, // added by allow_other anyway
}

// ignoredPrefixes are options for other programs: x-systemd.automount,
// comment=..., and the like.
var ignoredPrefixes = []string{"x-", "X-", "comment="}

// pathFlags are the flags whose values are paths, made absolute before
// the daemon leaves the caller's working directory.
var pathFlags = []string{"cache-dir", "ca-file", "credentials-file"}

// helperCall is one call in the helper form.
type helperCall struct {
	source, mountpoint string
	options            []string // in order, split at commas
	sloppy             bool     // -s: ignore options not understood
	fake               bool     // -f: check everything, mount nothing
	verbose            bool     // -v: say when the mount is ready
}

// fstabForm says whether args (after the program name) are the helper
// form: imgcache was run as mount.imgcache, or its first argument is
// neither a command nor a flag, a mountpoint follows, and either the
// first is a URL or options are given (mount.fuse3 always passes -o, at
// least "rw,dev,suid"). Anything else is left to the commands, so that a
// mistyped command is still called one.
func fstabForm(argv0 string, args []string, isCommand func(string) bool) bool {
	if strings.HasPrefix(filepath.Base(argv0), "mount.") {
		return true
	}
	if len(args) < 2 || strings.HasPrefix(args[0], "-") || isCommand(args[0]) {
		return false
	}
	return strings.Contains(args[0], "://") || slices.ContainsFunc(args[2:], func(a string) bool { return strings.HasPrefix(a, "-o") })
}

// parseHelperArgs reads SOURCE MOUNTPOINT [-o OPTIONS]... [-s] [-f] [-n]
// [-v] [-t TYPE], the arguments mount(8) and mount.fuse3 pass.
func parseHelperArgs(args []string) (helperCall, error) {
	var h helperCall
	var positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o" || a == "-t" || a == "-N":
			if i+1 == len(args) {
				return h, fmt.Errorf("%s needs a value", a)
			}
			i++
			switch a {
			case "-o":
				h.options = append(h.options, splitOptions(args[i])...)
			case "-t":
				if t := args[i]; t != "imgcache" && t != "fuse.imgcache" {
					return h, fmt.Errorf("type %q is not imgcache's (fuse.imgcache or imgcache)", t)
				}
			case "-N":
				return h, errors.New("-N (mount in another namespace) is not supported")
			}
		case strings.HasPrefix(a, "-o"):
			h.options = append(h.options, splitOptions(a[2:])...)
		case a == "-s":
			h.sloppy = true
		case a == "-f":
			h.fake = true
		case a == "-v":
			h.verbose = true
		case a == "-n": // mtab is the kernel's
		case strings.HasPrefix(a, "-") && a != "-":
			return h, fmt.Errorf("unknown argument %q (want SOURCE MOUNTPOINT -o OPTIONS)", a)
		default:
			positional = append(positional, a)
		}
	}
	if len(positional) != 2 {
		return h, fmt.Errorf("want SOURCE MOUNTPOINT [-o OPTIONS], got %d arguments", len(positional))
	}
	h.source, h.mountpoint = positional[0], positional[1]
	return h, nil
}

// splitOptions splits a comma-separated list of options; a value in
// double quotes may hold commas (mirror="http://a/,http://b/"), as in
// libmount.
func splitOptions(s string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
		case r == ',' && !quoted:
			out = append(out, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteRune(r)
	}
	out = append(out, cur.String())
	return slices.DeleteFunc(out, func(o string) bool { return o == "" })
}

// helperMount is what a helper call asks for: the arguments of imgcache
// mount, and where the daemon's log goes.
type helperMount struct {
	args     []string // for imgcache mount: --flag=value..., SOURCE, MOUNTPOINT
	logFile  string   // "": syslog
	ignored  []string // options not understood, ignored under -s
	verbose  bool
	fakeOnly bool
}

// translate turns the options into imgcache mount's flags, checking each
// value as the flag does (fs is imgcache mount's flag set).
func translate(h helperCall, fs *pflag.FlagSet) (helperMount, error) {
	m := helperMount{verbose: h.verbose, fakeOnly: h.fake}
	if err := checkSource(h.source); err != nil {
		return m, err
	}
	mnt, err := filepath.Abs(h.mountpoint)
	if err != nil {
		return m, err
	}
	for _, opt := range h.options {
		name, value, hasValue := strings.Cut(opt, "=")
		value = strings.Trim(value, `"`)
		switch {
		case genericOptions[name] && !hasValue:
			continue
		case slices.ContainsFunc(ignoredPrefixes, func(p string) bool { return strings.HasPrefix(opt, p) }):
			continue
		case name == "log_file":
			if value == "" {
				return m, errors.New("option log_file wants a file: log_file=PATH")
			}
			if m.logFile, err = filepath.Abs(value); err != nil {
				return m, err
			}
			continue
		}
		flagName := strings.ReplaceAll(name, "_", "-")
		f := fs.Lookup(flagName)
		if f == nil { // max-size is taken as well as max_size
			if h.sloppy {
				m.ignored = append(m.ignored, opt)
				continue
			}
			return m, fmt.Errorf("unknown option %q (the options are imgcache mount's flags spelled with _, such as max_size=20G, and log_file=PATH; see mount.imgcache(8))", opt)
		}
		isBool := f.Value.Type() == "bool"
		switch {
		case !hasValue && !isBool:
			return m, fmt.Errorf("option %s wants a value: %s=%s", name, name, strings.ToUpper(f.Name))
		case !hasValue:
			value = "true"
		}
		if slices.Contains(pathFlags, f.Name) && value != "" {
			if value, err = filepath.Abs(value); err != nil {
				return m, err
			}
		}
		if err := fs.Set(f.Name, value); err != nil {
			return m, fmt.Errorf("option %s: %v", opt, err)
		}
		m.args = append(m.args, "--"+f.Name+"="+value)
	}
	m.args = append(m.args, "--", h.source, mnt)
	return m, nil
}

// checkSource refuses a source that is not one or more (comma-separated)
// upstream URLs with a host (mount.Schemes), such as a device name from a
// copied fstab line, before any daemon starts.
func checkSource(source string) error {
	for _, raw := range strings.Split(source, ",") {
		u, err := url.Parse(raw)
		if err != nil || !slices.Contains(mount.Schemes, u.Scheme) || u.Host == "" {
			shown := source
			if err == nil && u.User != nil {
				shown = upstream.Redact(u) // the part with the password is the one shown
			}
			return fmt.Errorf("source %q is not a URL of the images (%s://HOST/...)", shown, strings.Join(mount.Schemes, "://, "))
		}
	}
	return nil
}

// runFstabForm runs a helper call if args are one: it parses and checks
// the options, then starts the daemon and waits until the mount answers
// or fails (daemon.go). handled is false for every other command line.
func runFstabForm(args []string, stdout, stderr io.Writer) (code int, handled bool) {
	if isDaemon() {
		return runDaemon(args), true
	}
	if !fstabForm(os.Args[0], args, isCommandName) {
		return 0, false
	}
	fail := func(code int, err error) (int, bool) {
		fmt.Fprintf(stderr, "imgcache: %s\n", oneLine(err.Error()))
		return code, true
	}
	h, err := parseHelperArgs(args)
	if err != nil {
		return fail(exitUsage, err)
	}
	m, err := translate(h, mountCmd().Flags())
	if err != nil {
		return fail(exitUsage, err)
	}
	for _, o := range m.ignored {
		fmt.Fprintf(stderr, "imgcache: ignoring option %q, which imgcache does not know (-s)\n", o)
	}
	if m.fakeOnly {
		return 0, true
	}
	info, err := startDaemon(m, stderr)
	if err != nil {
		return fail(exitMount, err)
	}
	if m.verbose {
		fmt.Fprintln(stdout, info)
	}
	return 0, true
}

// isCommandName says whether name is one of imgcache's commands.
func isCommandName(name string) bool {
	for _, c := range newRoot().Commands() {
		if c.Name() == name || slices.Contains(c.Aliases, name) {
			return true
		}
	}
	return name == "help"
}

// mountSource is what the mount shows as its source: the upstream as
// given, so that mount -a finds an fstab entry mounted already (it
// compares the sources), unless it holds credentials, which everyone may
// read in /proc/mounts.
func mountSource(upstream string) string {
	for _, u := range strings.Split(upstream, ",") {
		if p, err := url.Parse(u); err != nil || p.User != nil {
			return ""
		}
	}
	return upstream
}
