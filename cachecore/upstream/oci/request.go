package oci

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Manifests are asked for here rather than with oras-go's manifest
// store: its FetchReference reads a manifest fetched by tag without a
// bound or a check of its digest, its Resolve fails outright on a
// registry that sends no Docker-Content-Digest with HEAD (where a GET
// still does), and its errors drop Retry-After.

var acceptManifests = strings.Join(manifestMediaTypes, ", ")

// newRequest makes a request to the registry with the headers every
// request here has.
func (u *Upstream) newRequest(ctx context.Context, method, target string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", "imgcache")
	return req, nil
}

// headManifest asks which manifest a tag names, without fetching it
// (registries do not count HEAD as a pull). A reply without a usable
// Docker-Content-Digest gives a descriptor without a digest.
func (u *Upstream) headManifest(ctx context.Context, repo, tag string) (ocispec.Descriptor, error) {
	target := u.repoURL(repo, "manifests", tag)
	desc := "HEAD " + target
	req, err := u.newRequest(ctx, http.MethodHead, target)
	if err != nil {
		return ocispec.Descriptor{}, transportError(desc, err)
	}
	req.Header.Set("Accept", acceptManifests)
	resp, err := u.client.Do(req)
	if err != nil {
		return ocispec.Descriptor{}, transportError(desc, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ocispec.Descriptor{}, &requestError{req: desc, err: newStatusError(resp)}
	}
	d := ocispec.Descriptor{Size: resp.ContentLength}
	if dg := resp.Header.Get("Docker-Content-Digest"); validDigest(dg) {
		d.Digest = digest.Digest(dg)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err == nil {
		d.MediaType = mt
	}
	if d.Size > u.opts.MaxManifestBytes {
		return ocispec.Descriptor{}, &requestError{req: desc, err: fmt.Errorf("%w: a manifest of %d bytes, over the %d a manifest may have", errBadManifest, d.Size, u.opts.MaxManifestBytes)}
	}
	return d, nil
}

// getManifest fetches a manifest by tag or digest (ref) and returns its
// bytes, Content-Type and digest. want, if set, is the digest it must
// have; size, if not -1, its length. Bytes over MaxManifestBytes, or
// that do not match what was asked, are refused (errBadManifest).
func (u *Upstream) getManifest(ctx context.Context, repo, ref, want string, size int64) (raw []byte, contentType, dgst string, err error) {
	target := u.repoURL(repo, "manifests", ref)
	desc := "GET " + target
	bad := func(format string, args ...any) ([]byte, string, string, error) {
		return nil, "", "", &requestError{req: desc, err: fmt.Errorf("%w: %s", errBadManifest, fmt.Sprintf(format, args...))}
	}
	max := u.opts.MaxManifestBytes
	if size > max {
		return bad("a manifest of %d bytes, over the %d a manifest may have", size, max)
	}
	req, err := u.newRequest(ctx, http.MethodGet, target)
	if err != nil {
		return nil, "", "", transportError(desc, err)
	}
	req.Header.Set("Accept", acceptManifests)
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := u.client.Do(req)
	if err != nil {
		return nil, "", "", transportError(desc, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", "", &requestError{req: desc, err: newStatusError(resp)}
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return bad("reply has Content-Encoding %q", truncate(ce, 64))
	}
	if resp.ContentLength > max {
		return bad("a manifest of %d bytes, over the %d a manifest may have", resp.ContentLength, max)
	}
	raw, err = io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, "", "", transportError(desc, err)
	}
	if int64(len(raw)) > max {
		return bad("a manifest of more than %d bytes, the most a manifest may have", max)
	}
	if resp.ContentLength >= 0 && int64(len(raw)) != resp.ContentLength {
		return nil, "", "", &requestError{req: desc, err: fmt.Errorf("body of %d bytes, Content-Length %d", len(raw), resp.ContentLength)}
	}
	sum := sha256.Sum256(raw)
	dgst = "sha256:" + hex.EncodeToString(sum[:])
	switch h := resp.Header.Get("Docker-Content-Digest"); {
	case want != "" && dgst != want:
		return bad("digest mismatch: asked for %s, the bytes are %s", want, dgst)
	case h != "" && h != dgst && validDigest(h):
		return bad("digest mismatch: the registry says %s, the bytes are %s", h, dgst)
	case size >= 0 && int64(len(raw)) != size:
		return bad("%d bytes, %d expected", len(raw), size)
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err == nil {
		contentType = mt
	}
	return raw, contentType, dgst, nil
}
