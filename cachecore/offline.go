package cachecore

import (
	"iter"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/imgcache/imgcache/cachecore/chunkmap"
	"github.com/imgcache/imgcache/cachecore/index"
)

// IndexView is what a cache directory's index says when no daemon serves
// it: the catalog as last saved, with each image's state as of the last
// flush. Images nothing happened to are held as cold images are
// (cold.go): a view of a million images is about 110 MB, not 1.4 GB.
type IndexView struct {
	Source      string // the upstream URL, credentials removed
	RefreshedAt time.Time
	// Copied says the index could not be opened in place (a daemon
	// holds it, or one died without closing it) and a copy was read.
	Copied bool
	// Pins are the pin rules, in the order they were added; what each
	// pins is the daemon's to decide (Images nil). An index written
	// before pins were rules shows the pins of names its start will make.
	Pins   []PinInfo
	images []viewImage // sorted by name
}

// viewImage is an image of an IndexView: its cold form, or (info not
// nil) what its record and chunk map say.
type viewImage struct {
	cold coldImage // of an image with info, only the name
	info *Info
}

func (v *viewImage) get() Info {
	if v.info != nil {
		return *v.info
	}
	return v.cold.info("")
}

// Len is how many images the view holds.
func (v IndexView) Len() int { return len(v.images) }

// Images yields the images whose names start with prefix, in name order.
// Source is empty.
func (v IndexView) Images(prefix string) iter.Seq[Info] {
	return func(yield func(Info) bool) {
		i := sort.Search(len(v.images), func(i int) bool { return v.images[i].cold.name >= prefix })
		for ; i < len(v.images) && strings.HasPrefix(v.images[i].cold.name, prefix); i++ {
			if !yield(v.images[i].get()) {
				return
			}
		}
	}
}

// Image finds the image called name.
func (v IndexView) Image(name string) (Info, bool) {
	i := sort.Search(len(v.images), func(i int) bool { return v.images[i].cold.name >= name })
	if i < len(v.images) && v.images[i].cold.name == name {
		return v.images[i].get(), true
	}
	return Info{}, false
}

// ReadIndex reads the index of the cache in cacheDir without changing it.
// It opens the index read-only; if badger refuses (another process holds
// it, or a daemon was killed and its logs need replaying, which read-only
// mode cannot do) it copies the index to a temporary directory and reads
// the copy.
func ReadIndex(cacheDir string) (IndexView, error) {
	var parts [index.LoadParts][]viewImage
	var hot [index.LoadParts][]index.Record
	begin := func() { parts, hot = [index.LoadParts][]viewImage{}, [index.LoadParts][]index.Record{} }
	l, copied, err := index.ReadAsideEach(filepath.Join(cacheDir, "index"), begin, func(p int, r *index.Record) error {
		if !r.Listed || checkRecord(r) != nil {
			return nil
		}
		if ci, ok := coldOf(r); ok {
			parts[p] = append(parts[p], viewImage{cold: ci})
		} else {
			hot[p] = append(hot[p], *r)
		}
		return nil
	})
	if err != nil {
		return IndexView{}, err
	}
	v := IndexView{Source: l.Catalog.Source, RefreshedAt: l.Catalog.RefreshedAt, Copied: copied}
	n := 0
	for p := range parts {
		n += len(parts[p]) + len(hot[p])
	}
	v.images = make([]viewImage, 0, n)
	for p := range parts {
		v.images = append(v.images, parts[p]...)
		parts[p] = nil
		for _, r := range hot[p] {
			n := chunkmap.Chunks(r.Size, r.ChunkSize)
			present, _ := chunkmap.Unmarshal(l.Maps[r.ID], n)
			img := newImage(nil, r, present)
			v.images = append(v.images, viewImage{cold: coldImage{name: r.Name}, info: &Info{
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
			}})
		}
		hot[p] = nil
	}
	sortByKey(v.images, func(v *viewImage) (uint32, string) { return 0, v.cold.name })
	if l.Pins != nil {
		for _, r := range l.Pins.Rules {
			v.Pins = append(v.Pins, PinInfo{PinRule: PinRule{PinKind(r.Kind), r.Pattern}, Added: r.Added})
		}
	} else {
		for i := range v.images { // a cold image is never pinned
			if info := v.images[i].info; info != nil && info.Pinned {
				v.Pins = append(v.Pins, PinInfo{PinRule: PinRule{PinName, info.Name}})
			}
		}
	}
	return v, nil
}
