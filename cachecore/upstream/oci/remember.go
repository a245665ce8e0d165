package oci

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// Remember takes the entries the cache holds (at start, from its index)
// so that the first List after a restart fetches no manifest it already
// has: the manifests come back as the Content of their blob entries, and
// each repository's index.json says which manifest each tag had (kept
// for a tag whose new manifest is refused). Entries without Content
// teach nothing; bytes that do not match their digest are ignored.
func (u *Upstream) Remember(known upstream.Known) {
	manifests := map[string]*manifest{}
	tagged := map[string]map[string]string{}
	for e := range known.All() {
		if e.Content == nil || !matches(e.Content, e.Digest) {
			continue
		}
		repo, rest := splitName(e.Name)
		switch {
		case repo == "":
		case strings.HasPrefix(rest, "blobs/sha256/"):
			if m, err := parseManifest(e.Content, e.Digest, ""); err == nil {
				manifests[e.Digest] = m
			}
		case rest == "index.json":
			var idx ocispec.Index
			if json.Unmarshal(e.Content, &idx) != nil {
				continue
			}
			tags := map[string]string{}
			for _, d := range idx.Manifests {
				if t := d.Annotations[ocispec.AnnotationRefName]; tagRE.MatchString(t) && validDigest(d.Digest.String()) {
					tags[t] = d.Digest.String()
				}
			}
			tagged[repo] = tags
		}
	}
	// New maps, not additions: a List in flight reads the old ones
	// without the lock.
	u.mu.Lock()
	defer u.mu.Unlock()
	maps.Copy(manifests, u.manifests)
	maps.Copy(tagged, u.tagged)
	u.manifests, u.tagged = manifests, tagged
}

func matches(b []byte, digest string) bool {
	sum := sha256.Sum256(b)
	return digest == "sha256:"+hex.EncodeToString(sum[:])
}
