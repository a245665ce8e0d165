package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// The manifest media types asked for (Accept) and understood.
const (
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeDockerSchema1      = "application/vnd.docker.distribution.manifest.v1+json"
	mediaTypeDockerSchema1Sig   = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

var manifestMediaTypes = []string{
	ocispec.MediaTypeImageManifest,
	ocispec.MediaTypeImageIndex,
	mediaTypeDockerManifest,
	mediaTypeDockerManifestList,
}

func isIndex(mediaType string) bool {
	return mediaType == ocispec.MediaTypeImageIndex || mediaType == mediaTypeDockerManifestList
}

func isManifestType(mediaType string) bool {
	for _, t := range manifestMediaTypes {
		if t == mediaType {
			return true
		}
	}
	return false
}

// Bounds of one manifest's contents (its size is bounded by
// Options.MaxManifestBytes).
const (
	maxIndexChildren = 1024 // real indexes list a few dozen platforms and attestations
	maxIndexDepth    = 4    // an index of indexes of...
)

// manifest is what the layout needs of one manifest: its verified bytes
// (a file of the layout) and the descriptors it points to.
type manifest struct {
	desc   ocispec.Descriptor // media type, digest, size; nothing else
	raw    []byte
	config *ocispec.Descriptor  // of an image manifest
	layers []ocispec.Descriptor // of an image manifest, foreign ones too
	// children are the manifests of an index.
	children []ocispec.Descriptor
	// annotations of an index, kept when it is converted (convert.go).
	annotations map[string]string
}

// errBadManifest is wrapped by every refusal of a manifest's contents, as
// against a failure to fetch it.
var errBadManifest = errors.New("manifest refused")

// parseManifest reads raw, the verified bytes of the manifest with digest
// dgst, served with the Content-Type contentType (used only when the
// manifest does not say its own media type, as OCI image manifests may
// not).
func parseManifest(raw []byte, dgst, contentType string) (*manifest, error) {
	bad := func(format string, args ...any) (*manifest, error) {
		return nil, fmt.Errorf("%w: %s: %s", errBadManifest, dgst, fmt.Sprintf(format, args...))
	}
	var m struct {
		SchemaVersion int                  `json:"schemaVersion"`
		MediaType     string               `json:"mediaType"`
		Config        *ocispec.Descriptor  `json:"config"`
		Layers        []ocispec.Descriptor `json:"layers"`
		Manifests     []ocispec.Descriptor `json:"manifests"`
		Annotations   map[string]string    `json:"annotations"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return bad("not a JSON manifest")
	}
	mt := m.MediaType
	if mt == "" {
		mt = contentType
	}
	switch {
	case m.SchemaVersion == 1 || mt == mediaTypeDockerSchema1 || mt == mediaTypeDockerSchema1Sig:
		return bad("Docker schema 1 manifests are not supported (push the image again with a current client)")
	case m.SchemaVersion != 2:
		return bad("schemaVersion %d, want 2", m.SchemaVersion)
	case !isManifestType(mt):
		return bad("unknown manifest media type %q", truncate(mt, 128))
	}
	out := &manifest{desc: ocispec.Descriptor{MediaType: mt, Digest: digest.Digest(dgst), Size: int64(len(raw))}, raw: raw}
	if isIndex(mt) {
		if m.Config != nil || len(m.Layers) > 0 {
			return bad("an index with a config or layers")
		}
		if len(m.Manifests) > maxIndexChildren {
			return bad("index of %d manifests, over %d", len(m.Manifests), maxIndexChildren)
		}
		for _, d := range m.Manifests {
			if err := checkDescriptor(d); err != nil {
				return bad("manifest %v", err)
			}
			if !isManifestType(d.MediaType) {
				return bad("index entry %s of media type %q is not a manifest", d.Digest, truncate(d.MediaType, 128))
			}
			out.children = append(out.children, d)
		}
		out.annotations = m.Annotations
		return out, nil
	}
	if len(m.Manifests) > 0 {
		return bad("an image manifest that lists manifests")
	}
	if m.Config == nil {
		return bad("image manifest without a config")
	}
	if err := checkDescriptor(*m.Config); err != nil {
		return bad("config %v", err)
	}
	out.config = &ocispec.Descriptor{MediaType: m.Config.MediaType, Digest: m.Config.Digest, Size: m.Config.Size}
	for _, d := range m.Layers {
		if err := checkDescriptor(d); err != nil {
			return bad("layer %v", err)
		}
		out.layers = append(out.layers, d)
	}
	return out, nil
}

// foreign says whether a layer lives outside the registry (Windows base
// layers): its bytes are at its URLs, which are not followed, so it gets
// no file.
func foreign(d ocispec.Descriptor) bool {
	switch d.MediaType {
	case "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
		ocispec.MediaTypeImageLayerNonDistributable,     //nolint:staticcheck // still met in registries
		ocispec.MediaTypeImageLayerNonDistributableGzip, //nolint:staticcheck
		ocispec.MediaTypeImageLayerNonDistributableZstd: //nolint:staticcheck
		return true
	}
	return len(d.URLs) > 0
}

// mediaTypeRE is the grammar of a media type in the OCI image spec
// (RFC 6838 restricted names), parameters not allowed.
var mediaTypeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$`)

// checkDescriptor accepts a descriptor whose blob can be a cache entry: a
// sha256 digest, a size in [0, upstream.MaxSize], a media type.
func checkDescriptor(d ocispec.Descriptor) error {
	switch {
	case !validDigest(string(d.Digest)):
		return fmt.Errorf("digest %q is not sha256 and 64 lowercase hex digits", truncate(string(d.Digest), 100))
	case d.Size < 0 || d.Size > upstream.MaxSize:
		return fmt.Errorf("%s: size %d is outside [0, %d]", d.Digest, d.Size, int64(upstream.MaxSize))
	case !mediaTypeRE.MatchString(d.MediaType):
		return fmt.Errorf("%s: media type %q is not one", d.Digest, truncate(d.MediaType, 128))
	}
	return nil
}

// validDigest: "sha256:" and 64 lowercase hex digits.
func validDigest(d string) bool {
	return (upstream.Entry{Name: "x", Digest: d}).Validate() == nil && d != ""
}

// title is the file name a layer asks to be shown under
// (org.opencontainers.image.title, the ORAS convention), or an error
// saying why it cannot be one: it must be one clean name component.
func title(d ocispec.Descriptor) (string, bool, error) {
	t, ok := d.Annotations[ocispec.AnnotationTitle]
	if !ok {
		return "", false, nil
	}
	clean, err := upstream.CleanName(t)
	switch {
	case err != nil:
		return "", true, err
	case clean != t:
		return "", true, fmt.Errorf("title %q is not a clean name", truncate(t, 128))
	case strings.Contains(t, "/"):
		return "", true, fmt.Errorf("title %q holds a slash", truncate(t, 128))
	}
	return t, true, nil
}
