package simplestreams

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/imgcache/imgcache/cachecore/upstream"
	"github.com/imgcache/imgcache/cachecore/upstream/httpdir"
)

// List returns the mirror's tree: the index, each product file of an
// image-downloads stream, and every item they name (see the package
// comment). Either every entry passes upstream.Entry.Validate and the
// tree is consistent, or List fails and names what it refused.
func (u *Upstream) List(ctx context.Context) ([]upstream.Entry, error) {
	u.mu.Lock()
	prev := u.files // each JSON file is asked for only if it changed since
	u.mu.Unlock()
	files := map[string]*httpdir.File{}

	idx, err := u.dir.Get(ctx, IndexPath, u.opts.MaxIndexBytes, prev[IndexPath])
	if err != nil {
		return nil, fmt.Errorf("simplestreams: %w", err)
	}
	files[IndexPath] = idx
	paths, err := parseIndex(idx.Data, u.opts.MaxProductFiles)
	if err != nil {
		return nil, u.refused(err)
	}
	var items []item
	for _, p := range paths {
		f, err := u.dir.Get(ctx, p, u.opts.MaxProductBytes, prev[p])
		if errors.Is(err, upstream.ErrNotFound) {
			return nil, u.refused(fmt.Errorf("%s names product file %s, which the server does not have: %w", IndexPath, p, err))
		}
		if err != nil {
			return nil, fmt.Errorf("simplestreams: %w", err)
		}
		files[p] = f
		its, err := parseProducts(p, f.Data, u.opts.MaxItems)
		if err != nil {
			return nil, u.refused(err)
		}
		if items = append(items, its...); len(items) > u.opts.MaxItems {
			return nil, u.refused(fmt.Errorf("more than %d items in all", u.opts.MaxItems))
		}
	}
	entries, err := catalog(files, items)
	if err != nil {
		return nil, u.refused(err)
	}
	u.mu.Lock()
	u.files = files
	u.mu.Unlock()
	return entries, nil
}

func (u *Upstream) refused(err error) error {
	return fmt.Errorf("simplestreams: %s: catalog refused: %w", u.shown, err)
}

// catalog makes the entries of the tree from its JSON files and the items
// they name, and checks that the tree is one the mirror can serve as
// published: one size and digest per path, and no path that is a file to
// one entry and a directory to another.
func catalog(files map[string]*httpdir.File, items []item) ([]upstream.Entry, error) {
	entries := make([]upstream.Entry, 0, len(files)+len(items))
	at := make(map[string]int, len(files)+len(items)) // path -> its entry
	named := make([]*item, 0, len(files)+len(items))  // entry -> the item that named it; nil for a JSON file
	who := func(i int) string {
		if named[i] == nil {
			return "the JSON file " + entries[i].Name
		}
		return named[i].where()
	}
	for _, name := range sortedKeys(files) {
		f := files[name]
		sum := sha256.Sum256(f.Data)
		e := upstream.Entry{Name: name, Size: int64(len(f.Data)), ModTime: f.ModTime,
			Digest: "sha256:" + hex.EncodeToString(sum[:]), Content: f.Data}
		if !f.Young && len(f.ETag) <= upstream.MaxETagLen { // a young file's ETag is no validator (see Remember)
			e.ETag = f.ETag
		}
		if e.ModTime.Before(upstream.MinModTime) || e.ModTime.After(upstream.MaxModTime) {
			e.ModTime = time.Time{} // a Last-Modified of year 9999 is no reason to refuse the tree
		}
		if err := e.Validate(); err != nil {
			return nil, err
		}
		at[name] = len(entries)
		entries = append(entries, e)
		named = append(named, nil)
	}
	for k := range items {
		it := &items[k]
		digest := "sha256:" + it.SHA256
		if i, ok := at[it.Name]; ok {
			e := &entries[i]
			if named[i] == nil {
				return nil, fmt.Errorf("%s: path %q is %s", it.where(), it.Name, who(i))
			}
			if e.Size != it.Size || e.Digest != digest {
				return nil, fmt.Errorf("%s: path %q has size %d and sha256 %s, but %s gives it size %d and sha256 %s",
					it.where(), it.Name, it.Size, it.SHA256, who(i), e.Size, strings.TrimPrefix(e.Digest, "sha256:"))
			}
			// The same file named twice (by two versions): it belongs
			// to the newest version of its product, the one a pin keeps.
			if p, v, _ := ProductVersion(*e); it.Attrs["product"] == p && it.Attrs["version"] > v {
				e.Attrs, e.ModTime = it.Attrs, it.ModTime
			}
			continue
		}
		e := upstream.Entry{Name: it.Name, Size: it.Size, ModTime: it.ModTime, Digest: digest, ByDigest: true, Attrs: it.Attrs}
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("%s: %w", it.where(), err)
		}
		at[it.Name] = len(entries)
		entries = append(entries, e)
		named = append(named, it)
	}
	for i, e := range entries {
		for dir := e.Name; ; {
			k := strings.LastIndexByte(dir, '/')
			if k < 0 {
				break
			}
			dir = dir[:k]
			if j, ok := at[dir]; ok {
				return nil, fmt.Errorf("%s: a file at %q, where %s needs a directory", who(j), dir, who(i))
			}
		}
	}
	return entries, nil
}
