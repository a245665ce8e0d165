package oci

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sync"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// listPageSize is the n= of catalog and tag list requests; maxListPage
// caps the bytes of one page (oras-go's MaxMetadataBytes): 1000 tags of
// 128 bytes take 150 KiB, but a registry that ignores n sends every tag
// in one page.
const (
	listPageSize   = 1000
	maxListPage    = 32 << 20
	maxEmptyPages  = 3
	maxCatalogPage = 4 << 20
)

// tagRE is the grammar of a tag (distribution's reference package): it
// also makes a tag one safe file name (no slash, no leading dot).
var tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// List returns the catalog: the OCI image layout of every repository.
// See the package comment.
func (u *Upstream) List(ctx context.Context) ([]upstream.Entry, error) {
	refused := &refusals{}
	repos, fromCatalog, err := u.repositories(ctx, refused)
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	s := &listing{u: u, refused: refused, known: u.manifests, lastTags: u.tagged, got: map[string]*manifest{}, views: map[string]*manifest{}}
	u.mu.Unlock()

	var entries []upstream.Entry
	tagged := map[string]map[string]string{}
	blobRepo := map[string]string{}
	for _, repo := range repos {
		tags, err := u.tags(ctx, repo, refused)
		var se *statusError
		if fromCatalog && errors.As(err, &se) && (se.code == 404 || se.code == 401 || se.code == 403) {
			// Gone since the catalog, or not ours to pull: a catalog
			// may list repositories the credentials cannot read.
			u.log.Info("oci: a repository of the catalog is left out", "repo", repo, "err", err)
			refused.add("repository %q of the catalog left out: %s", repo, se.status)
			continue
		}
		if err != nil {
			return nil, err
		}
		tops, err := s.resolveTags(ctx, repo, tags)
		if err != nil {
			return nil, err
		}
		es, err := s.layout(repo, tops)
		if err != nil {
			return nil, err
		}
		if len(entries)+len(es) > u.opts.MaxEntries {
			return nil, fmt.Errorf("oci: %s: the catalog holds more than %d entries", u.base, u.opts.MaxEntries)
		}
		entries = append(entries, es...)
		tagged[repo] = map[string]string{}
		for _, t := range tops {
			tagged[repo][t.tag] = string(t.m.desc.Digest)
		}
		for _, e := range es {
			if e.ByDigest {
				if _, ok := blobRepo[e.Digest]; !ok {
					blobRepo[e.Digest] = repo
				}
			}
		}
	}
	entries = u.settle(entries, refused)
	u.mu.Lock()
	u.manifests, u.tagged, u.blobRepo = s.got, tagged, blobRepo
	u.warnings = refused.list()
	u.mu.Unlock()
	return entries, nil
}

// repositories are Options.Repos, else the registry's catalog.
func (u *Upstream) repositories(ctx context.Context, refused *refusals) (repos []string, fromCatalog bool, err error) {
	if len(u.opts.Repos) > 0 {
		repos = slices.Clone(u.opts.Repos)
		slices.Sort(repos)
		return slices.Compact(repos), false, nil
	}
	reg := &remote.Registry{
		RepositoryOptions: remote.RepositoryOptions{
			Client:           u.client,
			Reference:        registry.Reference{Registry: u.host},
			PlainHTTP:        u.plain,
			MaxMetadataBytes: maxCatalogPage,
		},
		RepositoryListPageSize: listPageSize,
	}
	pages, empty := 0, 0
	err = reg.Repositories(ctx, "", func(page []string) error {
		if pages++; len(page) == 0 {
			if empty++; empty > maxEmptyPages {
				return errors.New("catalog pages without repositories")
			}
		}
		for _, r := range page {
			if err := checkRepo(r); err != nil {
				u.log.Warn("oci: catalog entry refused", "repo", truncate(r, 256), "err", err)
				refused.add("repository %q of the catalog refused: %v", truncate(r, 128), err)
				continue
			}
			if repos = append(repos, r); len(repos) > u.opts.MaxRepos {
				return fmt.Errorf("more than %d repositories; name the ones to show with --repo", u.opts.MaxRepos)
			}
		}
		return nil
	})
	if err != nil {
		var se *statusError
		if err := registryError(err); errors.As(err, &se) && (se.code == 404 || se.code == 401 || se.code == 403 || se.code == 405) {
			return nil, false, fmt.Errorf("oci: %s offers no repository catalog (%v); name repositories with --repo", u.base, se)
		}
		return nil, false, fmt.Errorf("oci: %s: repository catalog: %w", u.base, registryError(err))
	}
	slices.Sort(repos)
	return slices.Compact(repos), true, nil
}

// tags lists the tags of a repository, following Link, at most MaxTags.
func (u *Upstream) tags(ctx context.Context, repo string, refused *refusals) ([]string, error) {
	r := &remote.Repository{
		Client:           u.client,
		Reference:        registry.Reference{Registry: u.host, Repository: repo},
		PlainHTTP:        u.plain,
		TagListPageSize:  listPageSize,
		MaxMetadataBytes: maxListPage,
	}
	var tags []string
	empty := 0
	err := r.Tags(ctx, "", func(page []string) error {
		if len(page) == 0 {
			if empty++; empty > maxEmptyPages {
				return errors.New("tag list pages without tags")
			}
		}
		for _, t := range page {
			if !tagRE.MatchString(t) {
				u.log.Warn("oci: tag refused: not a tag name", "repo", repo, "tag", truncate(t, 256))
				refused.add("%s: tag %q refused: not a tag name", repo, truncate(t, 128))
				continue
			}
			if tags = append(tags, t); len(tags) > u.opts.MaxTags {
				return fmt.Errorf("more than %d tags, the most one repository may show", u.opts.MaxTags)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("oci: %s: tags of %q: %w", u.base, repo, registryError(err))
	}
	slices.Sort(tags)
	return slices.Compact(tags), nil
}

// registryError gives an oras-go error reply our statusError (so that
// the cache can tell 503 from 404) and its message.
func registryError(err error) error {
	var er *errcode.ErrorResponse
	if errors.As(err, &er) {
		se := &statusError{code: er.StatusCode, status: fmt.Sprintf("%d %s", er.StatusCode, http.StatusText(er.StatusCode)), hint: statusHint(er.StatusCode)}
		if len(er.Errors) > 0 {
			se.said = truncate(er.Errors.Error(), 256)
		}
		return &requestError{req: er.Method + " " + er.URL.String(), err: se} // no credentials: they travel in headers
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return transportError(ue.Op+" "+ue.URL, ue.Err)
	}
	return err
}

// listing is the state of one List: the manifests it resolved.
type listing struct {
	u        *Upstream
	refused  *refusals
	known    map[string]*manifest         // the last catalog's, by digest (read only)
	lastTags map[string]map[string]string // the last catalog's tags (read only)
	flight   singleflight.Group           // manifest fetches, by digest

	mu sync.Mutex // protects the following
	// got are the manifests of this catalog, by digest: the registry's
	// and their OCI conversions.
	got map[string]*manifest
	// views are the manifests as the layout shows them (convert.go), by
	// the registry's digest.
	views map[string]*manifest
}

// taggedManifest is a tag and the manifest it names.
type taggedManifest struct {
	tag string
	m   *manifest
}

// resolveTags finds the manifest of each tag: HEAD, then GET of the
// digests not known yet. A tag gone (404) is left out; a tag whose
// manifest is refused keeps its last one, or is left out.
func (s *listing) resolveTags(ctx context.Context, repo string, tags []string) ([]taggedManifest, error) {
	out := make([]*manifest, len(tags))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.u.opts.Concurrency)
	for i, tag := range tags {
		g.Go(func() error {
			m, err := s.resolveTag(gctx, repo, tag)
			if errors.Is(err, upstream.ErrNotFound) {
				return nil // deleted since the tag list
			}
			if errors.Is(err, errBadManifest) {
				m = s.keepLast(repo, tag, err)
				err = nil
			}
			out[i] = m
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var tops []taggedManifest
	for i, m := range out {
		if m != nil {
			tops = append(tops, taggedManifest{tag: tags[i], m: m})
		}
	}
	return tops, nil
}

func (s *listing) resolveTag(ctx context.Context, repo, tag string) (*manifest, error) {
	d, err := s.u.headManifest(ctx, repo, tag)
	if err != nil {
		return nil, err
	}
	if d.Digest == "" {
		// No Docker-Content-Digest on HEAD: only a GET can tell.
		s.u.noHeadDigest.Do(func() {
			s.u.log.Warn("oci: the registry gives no Docker-Content-Digest on HEAD; every refresh GETs each tag's manifest", "registry", s.u.host)
		})
		raw, ct, dgst, err := s.u.getManifest(ctx, repo, tag, "", -1)
		if err != nil {
			return nil, err
		}
		return s.adopt(ctx, repo, raw, ct, dgst, 0)
	}
	return s.manifest(ctx, repo, d.Digest.String(), d.Size, 0)
}

// manifest returns the verified, parsed manifest of digest dgst in repo
// (size -1: unknown), its children fetched too: from this listing, the
// last catalog, or the registry.
func (s *listing) manifest(ctx context.Context, repo, dgst string, size int64, depth int) (*manifest, error) {
	if m := s.lookup(dgst); m != nil {
		return m, nil
	}
	v, err, _ := s.flight.Do(dgst, func() (any, error) {
		if m := s.lookup(dgst); m != nil {
			return m, nil
		}
		raw, ct, _, err := s.u.getManifest(ctx, repo, dgst, dgst, size)
		if err != nil {
			return nil, err
		}
		return s.adopt(ctx, repo, raw, ct, dgst, depth)
	})
	if err != nil {
		return nil, err
	}
	return v.(*manifest), nil
}

// adopt parses a fetched manifest, resolves its children and keeps it.
func (s *listing) adopt(ctx context.Context, repo string, raw []byte, contentType, dgst string, depth int) (*manifest, error) {
	m, err := parseManifest(raw, dgst, contentType)
	if err != nil {
		return nil, err
	}
	if len(m.children) > 0 && depth >= maxIndexDepth {
		return nil, fmt.Errorf("%w: %s: indexes nested deeper than %d", errBadManifest, dgst, maxIndexDepth)
	}
	for _, c := range m.children {
		cm, err := s.manifest(ctx, repo, c.Digest.String(), c.Size, depth+1)
		if err != nil {
			return nil, fmt.Errorf("index %s: %w", dgst, err)
		}
		if cm.desc.Size != c.Size {
			return nil, fmt.Errorf("%w: index %s: manifest %s has %d bytes, the index says %d", errBadManifest, dgst, c.Digest, cm.desc.Size, c.Size)
		}
	}
	s.mu.Lock()
	s.got[dgst] = m
	s.mu.Unlock()
	return m, nil
}

// lookup finds a manifest in this listing, else in the last catalog (and
// takes it, children included, into this one).
func (s *listing) lookup(dgst string) *manifest {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.got[dgst]; m != nil {
		return m
	}
	m := s.known[dgst]
	if m == nil {
		return nil
	}
	var take func(m *manifest) bool
	take = func(m *manifest) bool {
		for _, c := range m.children {
			cm := s.got[c.Digest.String()]
			if cm == nil {
				cm = s.known[c.Digest.String()]
			}
			if cm == nil || !take(cm) {
				return false
			}
		}
		s.got[m.desc.Digest.String()] = m
		return true
	}
	if !take(m) {
		return nil // a child was not kept: fetch again
	}
	return m
}

// keepLast is the manifest a tag keeps when its new one is refused: the
// one it had in the last catalog, if any.
func (s *listing) keepLast(repo, tag string, refusal error) *manifest {
	if prev := s.lastTags[repo][tag]; prev != "" {
		if m := s.lookup(prev); m != nil {
			s.u.log.Warn("oci: tag kept at its last manifest: the new one is refused", "repo", repo, "tag", tag, "manifest", prev, "err", refusal)
			s.refused.add("%s:%s kept at its last manifest %s: %v", repo, tag, prev, refusal)
			return m
		}
	}
	s.u.log.Warn("oci: tag left out: its manifest is refused", "repo", repo, "tag", tag, "err", refusal)
	s.refused.add("%s:%s left out: %v", repo, tag, refusal)
	return nil
}
