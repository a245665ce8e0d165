package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/pkg/xattr"
	"golang.org/x/sys/unix"

	"github.com/imgcache/imgcache/control"
)

// imgcache stat takes a path in a mount as well as an image name. An
// argument is a path when it names an existing file on an imgcache mount
// (a filesystem of type fuse.imgcache in the mount table, the device of
// the file's); then the file's user.imgcache.* attributes answer, which
// anyone who may read the mount can read: no daemon socket (0600, its
// owner's) and no cache directory are involved. Anything else is an image
// name, even when a file of that name exists elsewhere (in the origin's
// tree, say): "imgcache stat jammy.img" run in /mnt/images reads the
// mount's file, run anywhere else asks the daemon of --cache-dir.

// mountFSType is the type of an imgcache mount in the mount table.
const mountFSType = "fuse.imgcache"

// xattrPrefix begins every attribute an imgcache mount shows.
const xattrPrefix = "user.imgcache."

// statPath reads the state of the image at path when path is a file on
// an imgcache mount; ok is false when it is not (path is then taken as a
// name).
func statPath(path string) (img control.Image, ok bool, err error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOTCONN) { // a mount whose daemon died
			return img, false, fmt.Errorf("%q: %w (the imgcache mount there lost its daemon)", path, err)
		}
		return img, false, nil
	}
	mnt, name, err := mountOf(path, st.Dev)
	if err != nil || mnt == nil {
		return img, false, err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return img, true, fmt.Errorf("%q is a directory of the imgcache mount at %s, not an image", path, mnt.Mountpoint)
	}
	attrs, err := readXattrs(path)
	if err != nil {
		return img, true, err
	}
	img, err = imageOf(name, attrs)
	if err != nil {
		return img, true, fmt.Errorf("%q: %w", path, err)
	}
	img.ModTime = time.Unix(st.Mtim.Unix())
	return img, true, nil
}

// mountOf finds the imgcache mount that holds path, whose device is dev,
// and the image name path has there; nil if path is on no imgcache mount.
func mountOf(path string, dev uint64) (*mountinfo.Info, string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, "", err
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil { // the mount table has real paths
		return nil, "", err
	}
	mounts, err := mountinfo.GetMounts(func(i *mountinfo.Info) (skip, stop bool) {
		same := i.FSType == mountFSType && uint32(i.Major) == unix.Major(dev) && uint32(i.Minor) == unix.Minor(dev)
		return !same, false
	})
	if err != nil {
		return nil, "", fmt.Errorf("reading the mount table: %w", err)
	}
	var mnt *mountinfo.Info // the innermost, if the mount is bound elsewhere too
	for _, m := range mounts {
		if rel, err := filepath.Rel(m.Mountpoint, abs); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") &&
			(mnt == nil || len(m.Mountpoint) > len(mnt.Mountpoint)) {
			mnt = m
		}
	}
	if mnt == nil {
		return nil, "", nil
	}
	rel, _ := filepath.Rel(mnt.Mountpoint, abs)
	return mnt, strings.TrimPrefix(filepath.Join(mnt.Root, rel), "/"), nil
}

// readXattrs reads every user.imgcache.* attribute of path: name after
// the prefix -> value.
func readXattrs(path string) (map[string]string, error) {
	names, err := xattr.List(path)
	if err != nil {
		return nil, err
	}
	attrs := map[string]string{}
	for _, n := range names {
		key, ok := strings.CutPrefix(n, xattrPrefix)
		if !ok {
			continue
		}
		v, err := xattr.Get(path, n)
		if errors.Is(err, xattr.ENOATTR) { // gone since the list (an error cleared)
			continue
		} else if err != nil {
			return nil, err
		}
		attrs[key] = string(v)
	}
	return attrs, nil
}

// imageOf reads an image's attributes as the mount writes them (README,
// "What the files show").
func imageOf(name string, a map[string]string) (control.Image, error) {
	img := control.Image{Name: name, State: a["state"], Digest: a["digest"], Source: a["source"],
		Pinned: a["pinned"] == "1", Queued: a["queued"] == "1"}
	if img.State == "" {
		return img, errors.New("no user.imgcache.state attribute: not an image")
	}
	var errs []error
	parse := func(key string, f func(string) error) {
		if v, ok := a[key]; ok {
			if err := f(v); err != nil {
				errs = append(errs, fmt.Errorf("attribute %s%s=%q: %w", xattrPrefix, key, v, err))
			}
		}
	}
	parse("size", func(s string) (err error) { img.Size, err = strconv.ParseInt(s, 10, 64); return err })
	parse("cached_bytes", func(s string) (err error) { img.CachedBytes, err = strconv.ParseInt(s, 10, 64); return err })
	parse("hits", func(s string) (err error) { img.Hits, err = strconv.ParseUint(s, 10, 64); return err })
	parse("last_access", func(s string) (err error) { img.LastAccess, err = time.Parse(time.RFC3339, s); return err })
	parse("error", func(s string) (err error) { // "TIME message"
		at, msg, _ := strings.Cut(s, " ")
		img.Error = msg
		img.ErrorAt, err = time.Parse(time.RFC3339, at)
		return err
	})
	parse("retired", func(s string) (err error) { img.Retired, err = time.Parse(time.RFC3339, s); return err })
	for k, v := range a { // the rest are the upstream's attributes
		if !ownXattrs[k] {
			if img.Attrs == nil {
				img.Attrs = map[string]string{}
			}
			img.Attrs[k] = v
		}
	}
	return img, errors.Join(errs...)
}

// ownXattrs are the attributes the mount shows of every image (fs/xattr.go);
// any other is the upstream's.
var ownXattrs = map[string]bool{"hits": true, "state": true, "cached_bytes": true, "size": true,
	"digest": true, "last_access": true, "error": true, "source": true, "pinned": true, "queued": true,
	"retired": true}
