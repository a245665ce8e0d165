package testregistry

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *Platform         `json:"platform,omitempty"`
}

// Platform of a manifest in an index.
type Platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// Layout is an OCI image layout on disk that a test fills and pushes.
type Layout struct {
	Dir string
	t   testing.TB
}

// NewLayout makes an empty layout in a new directory.
func NewLayout(t testing.TB) *Layout {
	l := &Layout{Dir: t.TempDir(), t: t}
	if err := os.MkdirAll(filepath.Join(l.Dir, "blobs", "sha256"), 0o755); err != nil {
		t.Fatal(err)
	}
	l.write("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	l.write("index.json", []byte(`{"schemaVersion":2,"manifests":[]}`))
	return l
}

func (l *Layout) write(name string, b []byte) {
	if err := os.WriteFile(filepath.Join(l.Dir, name), b, 0o644); err != nil {
		l.t.Fatal(err)
	}
}

// Blob stores b and returns its descriptor.
func (l *Layout) Blob(mediaType string, b []byte) Descriptor {
	sum := sha256.Sum256(b)
	hexd := hex.EncodeToString(sum[:])
	l.write(filepath.Join("blobs", "sha256", hexd), b)
	return Descriptor{MediaType: mediaType, Digest: "sha256:" + hexd, Size: int64(len(b))}
}

// BlobFile stores the file at path (a big one, without holding it in
// memory) and returns its descriptor.
func (l *Layout) BlobFile(mediaType, path string) Descriptor {
	f, err := os.Open(path)
	if err != nil {
		l.t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		l.t.Fatal(err)
	}
	hexd := hex.EncodeToString(h.Sum(nil))
	dst := filepath.Join(l.Dir, "blobs", "sha256", hexd)
	if err := os.Link(path, dst); err != nil && !os.IsExist(err) {
		out, err := exec.Command("cp", "--reflink=auto", path, dst).CombinedOutput()
		if err != nil {
			l.t.Fatalf("cp: %v: %s", err, out)
		}
	}
	return Descriptor{MediaType: mediaType, Digest: "sha256:" + hexd, Size: n}
}

// File is a file of an artifact: a layer with an image title.
type File struct {
	Title     string // "" for no title annotation
	MediaType string // "": application/octet-stream
	Data      []byte
	Path      string // instead of Data: a file on disk
}

// Artifact stores an ORAS-style artifact manifest (empty config, one
// titled layer per file) and returns its descriptor.
func (l *Layout) Artifact(files ...File) Descriptor {
	var layers []Descriptor
	for _, f := range files {
		mt := f.MediaType
		if mt == "" {
			mt = "application/octet-stream"
		}
		var d Descriptor
		if f.Path != "" {
			d = l.BlobFile(mt, f.Path)
		} else {
			d = l.Blob(mt, f.Data)
		}
		if f.Title != "" {
			d.Annotations = map[string]string{"org.opencontainers.image.title": f.Title}
		}
		layers = append(layers, d)
	}
	config := l.Blob("application/vnd.oci.empty.v1+json", []byte("{}"))
	return l.Manifest(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"artifactType":  "application/vnd.imgcache.test",
		"config":        config,
		"layers":        layers,
	})
}

// Image stores a container image: a config and one gzip'd tar layer per
// map of file names to contents, and returns its manifest's descriptor.
func (l *Layout) Image(arch string, layers ...map[string]string) Descriptor {
	var descs []Descriptor
	var diffIDs []string
	for _, files := range layers {
		tarball := tarOf(l.t, files)
		sum := sha256.Sum256(tarball)
		diffIDs = append(diffIDs, "sha256:"+hex.EncodeToString(sum[:]))
		descs = append(descs, l.Blob("application/vnd.oci.image.layer.v1.tar+gzip", gzipOf(l.t, tarball)))
	}
	cfg, _ := json.Marshal(map[string]any{
		"architecture": arch, "os": "linux",
		"config": map[string]any{"Cmd": []string{"/hello"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	return l.Manifest(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        l.Blob("application/vnd.oci.image.config.v1+json", cfg),
		"layers":        descs,
	})
}

// Layers are the layers of the image manifest d of the layout.
func (l *Layout) Layers(d Descriptor) []Descriptor {
	b, err := os.ReadFile(filepath.Join(l.Dir, "blobs", "sha256", strings.TrimPrefix(d.Digest, "sha256:")))
	if err != nil {
		l.t.Fatal(err)
	}
	var m struct{ Layers []Descriptor }
	if err := json.Unmarshal(b, &m); err != nil {
		l.t.Fatalf("manifest %s: %v", d.Digest, err)
	}
	return m.Layers
}

// Index stores an image index of the manifests and returns its descriptor.
func (l *Layout) Index(manifests ...Descriptor) Descriptor {
	return l.Manifest(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     manifests,
	})
}

// Manifest stores the JSON of m as a manifest blob.
func (l *Layout) Manifest(m map[string]any) Descriptor {
	b, err := json.Marshal(m)
	if err != nil {
		l.t.Fatal(err)
	}
	return l.Blob(m["mediaType"].(string), b)
}

// Tag names d in index.json as tag (replacing what had the name).
func (l *Layout) Tag(tag string, d Descriptor) {
	var idx struct {
		SchemaVersion int          `json:"schemaVersion"`
		Manifests     []Descriptor `json:"manifests"`
	}
	b, err := os.ReadFile(filepath.Join(l.Dir, "index.json"))
	if err != nil {
		l.t.Fatal(err)
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		l.t.Fatal(err)
	}
	kept := idx.Manifests[:0]
	for _, m := range idx.Manifests {
		if m.Annotations["org.opencontainers.image.ref.name"] != tag {
			kept = append(kept, m)
		}
	}
	d.Annotations = map[string]string{"org.opencontainers.image.ref.name": tag}
	idx.Manifests = append(kept, d)
	out, _ := json.Marshal(idx)
	l.write("index.json", out)
}

// Push copies tag of the layout to repo:tag of the registry with skopeo
// (every platform of an index); extra are more skopeo copy flags
// (--dest-creds user:pw, --format v2s2).
func (r *Registry) Push(l *Layout, tag, repo string, extra ...string) {
	r.t.Helper()
	Need(r.t, "skopeo")
	args := append([]string{"copy", "--all", "--dest-tls-verify=false"}, extra...)
	args = append(args, "oci:"+l.Dir+":"+tag, "docker://"+r.Host+"/"+repo+":"+tag)
	cmd := exec.Command("skopeo", args...)
	cmd.Env = append(os.Environ(), "HOME="+r.t.TempDir()) // no stray auth.json
	if out, err := cmd.CombinedOutput(); err != nil {
		r.t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func tarOf(t testing.TB, files map[string]string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body))
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipOf(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
