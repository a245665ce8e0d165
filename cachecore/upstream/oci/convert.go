package oci

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker schema 2 manifests and manifest lists are shown in the layout as
// their OCI equivalents, because the tools that read OCI layouts
// (containers/image, and so skopeo, podman and buildah; umoci) skip
// index.json entries of Docker media types: a layout listing them would
// hold images no tool finds. The conversion is the one `skopeo copy
// --format oci` makes: media types mapped, blobs untouched (a Docker
// image config is an OCI image config), so every blob is still the
// registry's. The converted manifest has a digest of its own; the
// registry's manifest stays in blobs/ under its own digest too.

// ociMediaType maps the media types of a Docker schema 2 image to OCI's.
var ociMediaType = map[string]string{
	mediaTypeDockerManifest:                                     ocispec.MediaTypeImageManifest,
	mediaTypeDockerManifestList:                                 ocispec.MediaTypeImageIndex,
	"application/vnd.docker.container.image.v1+json":            ocispec.MediaTypeImageConfig,
	"application/vnd.docker.image.rootfs.diff.tar.gzip":         ocispec.MediaTypeImageLayerGzip,
	"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": ocispec.MediaTypeImageLayerNonDistributableGzip, //nolint:staticcheck // what Docker's foreign layers are
}

func mapped(d ocispec.Descriptor) ocispec.Descriptor {
	if mt, ok := ociMediaType[d.MediaType]; ok {
		d.MediaType = mt
	}
	return d
}

// view is m as the layout shows it: m itself when it and everything below
// it are OCI, else its conversion (children converted first). Children
// must have been resolved (s.got).
func (s *listing) view(m *manifest) *manifest {
	s.mu.Lock()
	v := s.views[m.desc.Digest.String()]
	s.mu.Unlock()
	if v != nil {
		return v
	}
	v = m
	switch {
	case m.config != nil && m.desc.MediaType == mediaTypeDockerManifest:
		layers := make([]ocispec.Descriptor, len(m.layers))
		for i, l := range m.layers {
			layers[i] = mapped(l)
		}
		v = converted(struct {
			specs.Versioned
			MediaType string               `json:"mediaType"`
			Config    ocispec.Descriptor   `json:"config"`
			Layers    []ocispec.Descriptor `json:"layers"`
		}{specs.Versioned{SchemaVersion: 2}, ocispec.MediaTypeImageManifest, mapped(*m.config), layers})
		v.config, v.layers = ptr(mapped(*m.config)), layers
	case isIndex(m.desc.MediaType):
		children := make([]ocispec.Descriptor, len(m.children))
		changed := m.desc.MediaType != ocispec.MediaTypeImageIndex
		for i, c := range m.children {
			s.mu.Lock()
			cm := s.got[c.Digest.String()]
			s.mu.Unlock()
			cv := s.view(cm)
			children[i] = c
			children[i].MediaType, children[i].Digest, children[i].Size = cv.desc.MediaType, cv.desc.Digest, cv.desc.Size
			changed = changed || cv != cm
		}
		if !changed {
			break
		}
		v = converted(struct {
			specs.Versioned
			MediaType   string               `json:"mediaType"`
			Manifests   []ocispec.Descriptor `json:"manifests"`
			Annotations map[string]string    `json:"annotations,omitempty"`
		}{specs.Versioned{SchemaVersion: 2}, ocispec.MediaTypeImageIndex, children, maps.Clone(m.annotations)})
		v.children, v.annotations = children, m.annotations
	}
	s.mu.Lock()
	s.views[m.desc.Digest.String()] = v
	if v != m {
		s.got[v.desc.Digest.String()] = v
	}
	s.mu.Unlock()
	return v
}

// converted is a manifest of the JSON of x.
func converted(x any) *manifest {
	raw, err := json.Marshal(x)
	if err != nil {
		panic(err) // plain structs of strings and numbers always marshal
	}
	sum := sha256.Sum256(raw)
	var mt struct {
		MediaType string `json:"mediaType"`
	}
	json.Unmarshal(raw, &mt)
	return &manifest{raw: raw, desc: ocispec.Descriptor{MediaType: mt.MediaType, Digest: digest.Digest("sha256:" + hex.EncodeToString(sum[:])), Size: int64(len(raw))}}
}

func ptr[T any](v T) *T { return &v }
