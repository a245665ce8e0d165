package cachecore

import (
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/imgcache/imgcache/cachecore/chunkmap"
	"github.com/imgcache/imgcache/cachecore/index"
)

// IndexView is what a cache directory's index says when no daemon serves
// it: the catalog as last saved, with each image's state as of the last
// flush.
type IndexView struct {
	Images      []Info // sorted by name; Source is empty
	Source      string // the upstream URL, credentials removed
	RefreshedAt time.Time
	// Copied says the index could not be opened in place (a daemon
	// holds it, or one died without closing it) and a copy was read.
	Copied bool
	// Pins are the pin rules, in the order they were added; what each
	// pins is the daemon's to decide (Images nil). An index written
	// before pins were rules shows the pins of names its start will make.
	Pins []PinInfo
}

// ReadIndex reads the index of the cache in cacheDir without changing it.
// It opens the index read-only; if badger refuses (another process holds
// it, or a daemon was killed and its logs need replaying, which read-only
// mode cannot do) it copies the index to a temporary directory and reads
// the copy.
func ReadIndex(cacheDir string) (IndexView, error) {
	l, copied, err := index.ReadAside(filepath.Join(cacheDir, "index"))
	if err != nil {
		return IndexView{}, err
	}
	v := IndexView{Source: l.Catalog.Source, RefreshedAt: l.Catalog.RefreshedAt, Copied: copied}
	for _, r := range l.Records {
		if !r.Listed || checkRecord(&r) != nil {
			continue
		}
		n := chunkmap.Chunks(r.Size, r.ChunkSize)
		present, _ := chunkmap.Unmarshal(l.Maps[r.ID], n)
		img := newImage(nil, r, present)
		v.Images = append(v.Images, Info{
			Name:        r.Name,
			Size:        r.Size,
			ModTime:     r.ModTime,
			Digest:      r.Digest,
			State:       img.stateLocked(),
			CachedBytes: img.cachedBytesLocked(),
			Hits:        r.Hits,
			LastAccess:  r.LastAccess,
			LastError:   r.LastError,
			LastErrorAt: r.LastErrorAt,
			Pinned:      r.Pinned,
			Queued:      !r.QueuedAt.IsZero(),
			Attrs:       r.Extras().Attrs.Map(),
			Retired:     r.Extras().RetiredAt,
			Links:       uint32(1 + len(r.Extras().Links)),
		})
	}
	slices.SortFunc(v.Images, func(a, b Info) int { return strings.Compare(a.Name, b.Name) })
	if l.Pins != nil {
		for _, r := range l.Pins.Rules {
			v.Pins = append(v.Pins, PinInfo{PinRule: PinRule{PinKind(r.Kind), r.Pattern}, Added: r.Added})
		}
	} else {
		for _, i := range v.Images {
			if i.Pinned {
				v.Pins = append(v.Pins, PinInfo{PinRule: PinRule{PinName, i.Name}})
			}
		}
	}
	return v, nil
}
