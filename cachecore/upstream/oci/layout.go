package oci

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// layoutFile is the oci-layout file of every repository.
var layoutFile = []byte(`{"imageLayoutVersion":"1.0.0"}`)

// layout returns the entries of one repository's image layout: see the
// package comment. tops are sorted by tag.
func (s *listing) layout(repo string, tops []taggedManifest) ([]upstream.Entry, error) {
	views := make([]taggedManifest, len(tops))
	for i, t := range tops {
		views[i] = taggedManifest{tag: t.tag, m: s.view(t.m)}
	}
	index, err := indexJSON(views)
	if err != nil {
		return nil, err
	}
	if len(index) > upstream.MaxContent {
		return nil, fmt.Errorf("oci: %q: an index.json of %d bytes for %d tags, over the %d a file may have", repo, len(index), len(tops), upstream.MaxContent)
	}
	es := []upstream.Entry{
		contentEntry(repo+"/oci-layout", layoutFile),
		contentEntry(repo+"/index.json", index),
	}
	seen := map[string]bool{}
	blob := func(d ocispec.Descriptor) {
		if seen[d.Digest.String()] {
			return
		}
		seen[d.Digest.String()] = true
		es = append(es, blobEntry(repo+"/blobs/sha256/"+d.Digest.Encoded(), d))
	}
	var walk func(m *manifest)
	walk = func(m *manifest) {
		if seen[m.desc.Digest.String()] {
			return
		}
		seen[m.desc.Digest.String()] = true
		e := contentEntry(repo+"/blobs/sha256/"+m.desc.Digest.Encoded(), m.raw)
		e.ByDigest = true
		e.Attrs = map[string]string{"media_type": m.desc.MediaType}
		es = append(es, e)
		for _, c := range m.children {
			s.mu.Lock()
			cm := s.got[c.Digest.String()]
			s.mu.Unlock()
			walk(cm) // resolved with its parent: never nil
		}
		if m.config != nil {
			blob(*m.config)
		}
		for _, l := range m.layers {
			if !foreign(l) {
				blob(l)
			}
		}
	}
	for i, t := range tops {
		walk(views[i].m)
		walk(t.m) // the registry's own manifests too, if converted
		es = append(es, s.aliases(repo, t)...)
	}
	return es, nil
}

// aliases are <repo>/<tag>/<title> for the titled layers of a tag's image
// manifest (not of an index's children: a title names a file of one
// artifact, and the platforms of an index would name theirs alike).
// A title that is not one safe file name, or that two layers of different
// bytes share, is refused with a log line.
func (s *listing) aliases(repo string, t taggedManifest) []upstream.Entry {
	byTitle := map[string][]ocispec.Descriptor{}
	for _, l := range t.m.layers {
		name, ok, err := title(l)
		if err != nil {
			s.u.log.Warn("oci: layer title refused", "repo", repo, "tag", t.tag, "layer", l.Digest.String(), "err", err)
			s.refused.add("%s:%s: the title of layer %s is refused: %v", repo, t.tag, l.Digest, err)
			continue
		}
		if ok {
			byTitle[name] = append(byTitle[name], l)
		}
	}
	var es []upstream.Entry
	for name, ls := range byTitle {
		if slices.ContainsFunc(ls, func(l ocispec.Descriptor) bool { return l.Digest != ls[0].Digest }) {
			s.u.log.Warn("oci: layer title refused: layers of different bytes share it", "repo", repo, "tag", t.tag, "title", name)
			s.refused.add("%s:%s: title %q refused: layers of different bytes share it", repo, t.tag, name)
			continue
		}
		es = append(es, blobEntry(repo+"/"+t.tag+"/"+name, ls[0]))
	}
	return es
}

// indexJSON is the index.json of a repository: each tag's manifest with
// its ref.name, in the order of tops (by tag), so that the same tags
// give the same bytes.
func indexJSON(tops []taggedManifest) ([]byte, error) {
	idx := ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: make([]ocispec.Descriptor, 0, len(tops)),
	}
	for _, t := range tops {
		idx.Manifests = append(idx.Manifests, ocispec.Descriptor{
			MediaType:   t.m.desc.MediaType,
			Digest:      t.m.desc.Digest,
			Size:        t.m.desc.Size,
			Annotations: map[string]string{ocispec.AnnotationRefName: t.tag},
		})
	}
	return json.Marshal(idx)
}

func contentEntry(name string, b []byte) upstream.Entry {
	sum := sha256.Sum256(b)
	return upstream.Entry{Name: name, Size: int64(len(b)), Digest: "sha256:" + hex.EncodeToString(sum[:]), Content: b}
}

func blobEntry(name string, d ocispec.Descriptor) upstream.Entry {
	return upstream.Entry{Name: name, Size: d.Size, Digest: d.Digest.String(), ByDigest: true,
		Attrs: map[string]string{"media_type": d.MediaType}}
}

// settle makes the entries a catalog: sorted, unique, every name a file
// and never also a directory of another name (nested repositories, or a
// tag named like a layout file, can collide), each valid. Layout files
// win over titles, then the first name in order; every loser is logged.
func (u *Upstream) settle(es []upstream.Entry, refused *refusals) []upstream.Entry {
	rank := func(e upstream.Entry) int {
		if _, rest := splitName(e.Name); rest == "oci-layout" || rest == "index.json" || strings.HasPrefix(rest, "blobs/sha256/") {
			return 0
		}
		return 1
	}
	slices.SortStableFunc(es, func(a, b upstream.Entry) int {
		if r := rank(a) - rank(b); r != 0 {
			return r
		}
		return strings.Compare(a.Name, b.Name)
	})
	files := map[string]string{} // name: digest
	dirs := map[string]bool{}
	out := es[:0]
	for _, e := range es {
		if prev, ok := files[e.Name]; ok {
			if prev != e.Digest {
				u.log.Warn("oci: entry refused: another of different bytes has its name", "name", e.Name)
				refused.add("%q refused: another of different bytes has its name", e.Name)
			}
			continue
		}
		if err := e.Validate(); err != nil {
			u.log.Warn("oci: entry refused", "err", err)
			refused.add("entry refused: %v", err)
			continue
		}
		if dirs[e.Name] || parentIsFile(e.Name, files) {
			u.log.Warn("oci: entry refused: its name collides with a directory or file of another", "name", e.Name)
			refused.add("%q refused: its name collides with a directory or file of another", e.Name)
			continue
		}
		files[e.Name] = e.Digest
		for d := e.Name; ; {
			i := strings.LastIndexByte(d, '/')
			if i < 0 {
				break
			}
			d = d[:i]
			dirs[d] = true
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b upstream.Entry) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func parentIsFile(name string, files map[string]string) bool {
	for i := 0; i < len(name); i++ {
		if _, ok := files[name[:i]]; ok && name[i] == '/' {
			return true
		}
	}
	return false
}
