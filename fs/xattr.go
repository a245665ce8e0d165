package fs

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/imgcache/imgcache/cachecore"
)

// Extended attributes show cache state where users already look
// (getfattr -d). All live under user.imgcache.; an attribute that has no
// value now (no error, digest unknown) is absent: ENODATA, and left out of
// the list. Other names, security.* included, are ENODATA, never ENOSYS
// (the kernel would stop asking for the whole mount) or EIO (it breaks
// exec).
const xattrPrefix = "user.imgcache."

// xattr is one attribute: its name after the prefix and how to compute
// its value from a snapshot; ok false means absent.
type xattr[T any] struct {
	name  string
	value func(T) (v string, ok bool)
}

var imageXattrs = []xattr[cachecore.Info]{
	{"hits", func(i cachecore.Info) (string, bool) { return strconv.FormatUint(i.Hits, 10), true }},
	{"state", func(i cachecore.Info) (string, bool) { return string(i.State), true }},
	{"cached_bytes", func(i cachecore.Info) (string, bool) { return strconv.FormatInt(i.CachedBytes, 10), true }},
	{"size", func(i cachecore.Info) (string, bool) { return strconv.FormatInt(i.Size, 10), true }},
	{"digest", func(i cachecore.Info) (string, bool) { return i.Digest, i.Digest != "" }},
	{"last_access", func(i cachecore.Info) (string, bool) { return timeValue(i.LastAccess) }},
	{"error", func(i cachecore.Info) (string, bool) { return errorValue(i.LastErrorAt, i.LastError) }},
	{"source", func(i cachecore.Info) (string, bool) { return i.Source, true }},
	{"pinned", func(i cachecore.Info) (string, bool) { return boolValue(i.Pinned), true }},
	{"queued", func(i cachecore.Info) (string, bool) { return boolValue(i.Queued), true }},
	{"retired", func(i cachecore.Info) (string, bool) { return timeValue(i.Retired) }},
}

// attrsOf are the upstream's attributes of an image (Info.Attrs), shown
// after the table's as user.imgcache.<key>; a key the table has is the
// table's.
func attrsOf(i cachecore.Info) map[string]string { return i.Attrs }

// rootInfo is what the root directory shows: where the catalog comes from
// and how fresh it is.
type rootInfoT struct {
	source    string
	catalog   cachecore.CatalogStatus
	mode      ServeMode
	storage   error // what keeps the cache from storing or recording, if anything
	storageAt time.Time
}

func rootInfo(root *Root) rootInfoT {
	c := root.c
	r := rootInfoT{source: c.Source(), catalog: c.CatalogStatus(), mode: root.ServeMode()}
	r.storage, r.storageAt = c.StorageError()
	return r
}

var rootXattrs = []xattr[rootInfoT]{
	{"source", func(r rootInfoT) (string, bool) { return r.source, true }},
	{"upstream_active", func(r rootInfoT) (string, bool) { return r.catalog.Active, r.catalog.Active != r.source }},
	{"catalog_refreshed", func(r rootInfoT) (string, bool) { return timeValue(r.catalog.RefreshedAt) }},
	{"catalog_stale", func(r rootInfoT) (string, bool) { return timeValue(r.catalog.StaleSince) }},
	{"catalog_error", func(r rootInfoT) (string, bool) {
		if r.catalog.Err == nil {
			return "", false
		}
		return errorValue(r.catalog.ErrAt, r.catalog.Err.Error())
	}},
	{"serve_mode", func(r rootInfoT) (string, bool) { return string(r.mode), true }},
	{"cache_error", func(r rootInfoT) (string, bool) {
		if r.storage == nil {
			return "", false
		}
		return errorValue(r.storageAt, r.storage.Error())
	}},
	{"catalog_warnings", func(r rootInfoT) (string, bool) {
		return strings.Join(r.catalog.Warnings, "\n"), len(r.catalog.Warnings) > 0
	}},
}

// noAttrs: the root has no upstream attributes.
func noAttrs(rootInfoT) map[string]string { return nil }

func timeValue(t time.Time) (string, bool) {
	if t.IsZero() {
		return "", false
	}
	return t.UTC().Format(time.RFC3339), true
}

func errorValue(at time.Time, msg string) (string, bool) {
	if msg == "" {
		return "", false
	}
	return at.UTC().Format(time.RFC3339) + " " + msg, true
}

// getxattr answers a Getxattr from a table, then from the upstream's
// attributes (extra). A dest too small for the value gets ERANGE with the
// size needed (go-fuse turns the size-0 probe's ERANGE into a plain size
// answer).
func getxattr[T any](table []xattr[T], extra func(T) map[string]string, info T, attr string, dest []byte) (uint32, syscall.Errno) {
	name, ok := strings.CutPrefix(attr, xattrPrefix)
	if !ok {
		return 0, syscall.ENODATA
	}
	v, ok := lookupXattr(table, extra, info, name)
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func lookupXattr[T any](table []xattr[T], extra func(T) map[string]string, info T, name string) (string, bool) {
	for _, x := range table {
		if x.name == name {
			return x.value(info)
		}
	}
	v, ok := extra(info)[name]
	return v, ok
}

// listxattr answers a Listxattr: the names that have a value now, each
// NUL-terminated: the table's, then the upstream's attributes in key
// order.
func listxattr[T any](table []xattr[T], extra func(T) map[string]string, info T, dest []byte) (uint32, syscall.Errno) {
	var b []byte
	add := func(name string) {
		b = append(b, xattrPrefix...)
		b = append(b, name...)
		b = append(b, 0)
	}
	for _, x := range table {
		if _, ok := x.value(info); ok {
			add(x.name)
		}
	}
	attrs := extra(info)
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		if !slices.ContainsFunc(table, func(x xattr[T]) bool { return x.name == k }) {
			add(k)
		}
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}
