package cachecore

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/imgcache/imgcache/cachecore/index"
	"github.com/imgcache/imgcache/cachecore/upstream"
)

// Pin rules. A pin is a rule that says which images of the catalog stay
// cached, chosen again at every catalog refresh:
//
//   - a name: the image at that name, whichever version it is now, so a
//     new version upstream is pinned (and fetched) as soon as it is listed;
//   - a glob (path.Match syntax) that matches an image's name or a
//     directory above it;
//   - an alias (simplestreams: one of a product's aliases, or alias/arch).
//
// Over a catalog of products (Config.Products: a simplestreams mirror),
// a glob or an alias keeps the newest version of each product it matches
// and lets the older ones go: a mirror stays fresh for the images that
// matter and lazy for the rest.
//
// The rules are kept in the index (meta/pins) and applied at every
// refresh before the new tree is published (catalog.go), so that no one
// sees a new version unpinned; an image a rule selects is pinned (pin.go:
// never evicted, fetched whole by the prefetchers, within the size limit)
// and its record says so, so the pin holds offline. At start the rules
// pin what they select in the catalog the index holds, and the pins the
// index holds stand until the first refresh: only a listing says which
// version is newest (an offline start may not know an image's product).

// PinKind is what a pin rule matches.
type PinKind string

const (
	PinName  PinKind = "name"  // the image at a name
	PinGlob  PinKind = "glob"  // images whose name (or a directory above it) a glob matches
	PinAlias PinKind = "alias" // the newest version of the products of an alias (simplestreams)
)

// PinRule is one pin.
type PinRule struct {
	Kind    PinKind
	Pattern string // the name, glob or alias
}

func (r PinRule) String() string { return fmt.Sprintf("%s %q", r.Kind, r.Pattern) }

// PinInfo is a pin rule and what it keeps now.
type PinInfo struct {
	PinRule
	Added  time.Time
	Images []string // the names of the images it pins now, sorted
}

// Products tells which images of a catalog are versions of one product
// and answer to an alias: what pins by glob and by alias need from an
// upstream of products (simplestreams), whose entries say it in Attrs.
type Products interface {
	// Newest returns the entries of the newest version of each product
	// that has an entry pick accepts, and the entries of no product that
	// pick accepts.
	Newest(entries []upstream.Entry, pick func(upstream.Entry) bool) []upstream.Entry
	// HasAlias reports whether the entry's product answers to alias.
	HasAlias(e upstream.Entry, alias string) bool
}

var (
	// ErrBadPin: not a pin rule this cache can keep.
	ErrBadPin = errors.New("not a pin rule")
	// ErrNoPin: no pin rule of that kind and pattern.
	ErrNoPin = errors.New("no such pin")
)

// Bounds of the rules, which are kept whole in one index value.
const (
	maxPins       = 1000
	maxPinPattern = 4096
)

// pinState is the cache's pin rules and what they pin.
type pinState struct {
	// mu makes one change of the rules at a time, with its index write;
	// it is taken before Cache.mu.
	mu sync.Mutex

	// protected by Cache.mu
	rules  []*pinRule
	pinned map[*Image]bool // what the rules pin, and kept
	// kept are the images pinned in the index at start that no rule
	// selected then: they stay pinned until the first refresh decides.
	kept []*Image
}

// pinRule is a rule and the images it selected when last applied.
type pinRule struct {
	index.PinRule
	images []*Image
}

func (r *pinRule) rule() PinRule { return PinRule{PinKind(r.Kind), r.Pattern} }

func (r *pinRule) info() PinInfo {
	names := make([]string, 0, len(r.images))
	for _, img := range r.images {
		if PinKind(r.Kind) == PinName { // of an image of several names (ByDigest), the one pinned
			names = append(names, r.Pattern)
		} else {
			names = append(names, img.Name())
		}
	}
	slices.Sort(names)
	return PinInfo{PinRule: r.rule(), Added: r.Added, Images: names}
}

// Pins lists the pin rules, in the order they were added.
func (c *Cache) Pins() []PinInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	infos := make([]PinInfo, len(c.pins.rules))
	for i, r := range c.pins.rules {
		infos[i] = r.info()
	}
	return infos
}

// AddPin adds a pin rule and pins what it selects now. A pin of a name
// needs an image at that name now; a glob or an alias may select nothing
// yet. Adding a rule that exists changes nothing.
func (c *Cache) AddPin(r PinRule) (PinInfo, error) {
	if err := c.checkPin(r); err != nil {
		return PinInfo{}, &Error{Op: "pin " + string(r.Kind), Name: r.Pattern, Err: err}
	}
	c.pins.mu.Lock()
	defer c.pins.mu.Unlock()
	if r.Kind == PinName {
		if _, err := c.image("pin", r.Pattern); err != nil {
			return PinInfo{}, err
		}
	}
	c.mu.Lock()
	if pr := c.findPinLocked(r); pr != nil {
		info := pr.info()
		c.mu.Unlock()
		return info, nil
	}
	if len(c.pins.rules) >= maxPins {
		c.mu.Unlock()
		return PinInfo{}, &Error{Op: "pin " + string(r.Kind), Name: r.Pattern, Err: fmt.Errorf("%w: there are %d pins already", ErrBadPin, maxPins)}
	}
	pr := &pinRule{PinRule: index.PinRule{Kind: string(r.Kind), Pattern: r.Pattern, Added: c.now()}}
	saved := c.savedPinsLocked(pr, nil)
	c.mu.Unlock()
	// The rule is written before the pins it makes (the flusher writes
	// those): after a crash between the two, the start pins them again.
	if err := c.idx.Write(&index.Batch{Pins: saved}); err != nil && !errors.Is(err, ErrIndexHeld) {
		return PinInfo{}, &Error{Op: "pin " + string(r.Kind), Name: r.Pattern, Err: err}
	}
	c.mu.Lock()
	c.pins.rules = append(c.pins.rules, pr)
	t := c.tree.Load()
	pr.images = c.selectPin(pr.PinRule, c.pinEntries(t, pr.PinRule), t)
	c.repinLocked(nil)
	info := pr.info()
	c.mu.Unlock()
	c.kickFlush()
	return info, nil
}

// RemovePin removes a pin rule; what it pinned is unpinned unless
// another rule pins it too. Removing a pin of a name that has none does
// nothing if the image there is not pinned, and fails with ErrPinned,
// naming the rule, if another rule pins it.
func (c *Cache) RemovePin(r PinRule) (PinInfo, error) {
	op := "unpin " + string(r.Kind)
	c.pins.mu.Lock()
	defer c.pins.mu.Unlock()
	c.mu.Lock()
	pr := c.findPinLocked(r)
	if pr == nil {
		defer c.mu.Unlock()
		if r.Kind != PinName {
			return PinInfo{}, &Error{Op: op, Name: r.Pattern, Err: ErrNoPin}
		}
		ch, ok := c.tree.Load().file(r.Pattern)
		if !ok {
			return PinInfo{}, &Error{Op: op, Name: r.Pattern, Err: ErrNotFound}
		}
		img := c.hotLocked(ch)
		if img == nil { // cold: pinned by nothing (cold.go)
			return PinInfo{PinRule: r}, nil
		}
		if by := c.pinnedByLocked(img); by != "" {
			return PinInfo{}, &Error{Op: op, Name: r.Pattern, Err: fmt.Errorf("%w by %s: unpin that", ErrPinned, by)}
		}
		return PinInfo{PinRule: r}, nil
	}
	saved := c.savedPinsLocked(nil, pr)
	c.mu.Unlock()
	if err := c.idx.Write(&index.Batch{Pins: saved}); err != nil && !errors.Is(err, ErrIndexHeld) {
		return PinInfo{}, &Error{Op: op, Name: r.Pattern, Err: err}
	}
	c.mu.Lock()
	c.pins.rules = slices.DeleteFunc(c.pins.rules, func(x *pinRule) bool { return x == pr })
	info := pr.info()
	c.repinLocked(nil)
	c.mu.Unlock()
	c.kickFlush()
	return info, nil
}

// Pin pins (on) or unpins the image called name: a pin of the name.
func (c *Cache) Pin(name string, on bool) error {
	var err error
	if on {
		_, err = c.AddPin(PinRule{PinName, name})
	} else {
		_, err = c.RemovePin(PinRule{PinName, name})
	}
	return err
}

// PinImage pins or unpins img by its name (user.imgcache.pin).
func (c *Cache) PinImage(img *Image, on bool) error {
	return c.Pin(img.Name(), on)
}

// checkPin says why r cannot be a pin rule, or nil.
func (c *Cache) checkPin(r PinRule) error {
	switch {
	case r.Pattern == "":
		return fmt.Errorf("%w: empty", ErrBadPin)
	case len(r.Pattern) > maxPinPattern:
		return fmt.Errorf("%w: longer than %d bytes", ErrBadPin, maxPinPattern)
	case !utf8.ValidString(r.Pattern) || strings.IndexFunc(r.Pattern, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return fmt.Errorf("%w: not printable text", ErrBadPin)
	}
	switch r.Kind {
	case PinName:
		if clean, err := upstream.CleanName(r.Pattern); err != nil || clean != r.Pattern {
			return ErrNotFound // no image can have it
		}
	case PinGlob:
		if _, err := path.Match(r.Pattern, ""); err != nil {
			return fmt.Errorf("%w: %v", ErrBadPin, err)
		}
	case PinAlias:
		if c.cfg.Products == nil {
			return fmt.Errorf("%w: the upstream's images have no aliases (a simplestreams server's do)", ErrBadPin)
		}
	default:
		return fmt.Errorf("%w: kind %q (want name, glob or alias)", ErrBadPin, r.Kind)
	}
	return nil
}

func (c *Cache) findPinLocked(r PinRule) *pinRule {
	for _, pr := range c.pins.rules {
		if pr.rule() == r {
			return pr
		}
	}
	return nil
}

// pinnedByLocked names a rule that pins img ("" if none does).
func (c *Cache) pinnedByLocked(img *Image) string {
	for _, pr := range c.pins.rules {
		if slices.Contains(pr.images, img) {
			return pr.rule().String()
		}
	}
	if slices.Contains(c.pins.kept, img) {
		return "a rule not applied since the start (the first catalog refresh will)"
	}
	return ""
}

// savedPinsLocked is the index's value of the rules with add added and
// drop left out.
func (c *Cache) savedPinsLocked(add, drop *pinRule) *index.PinRules {
	saved := &index.PinRules{Rules: []index.PinRule{}}
	for _, pr := range c.pins.rules {
		if pr != drop {
			saved.Rules = append(saved.Rules, pr.PinRule)
		}
	}
	if add != nil {
		saved.Rules = append(saved.Rules, add.PinRule)
	}
	return saved
}

// loadPins takes the rules the index holds, at start, once the catalog
// tree is built: an index written before pins were rules (saved nil) has
// its pinned images' names made rules. The rules pin what they select in
// this catalog; the pins the index holds stand until the first refresh.
func (c *Cache) loadPins(saved *index.PinRules) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.tree.Load()
	c.pins.pinned = make(map[*Image]bool)
	for _, img := range c.images {
		if img.rec.Pinned {
			c.pins.pinned[img] = true
		}
	}
	if saved == nil {
		saved = &index.PinRules{Rules: []index.PinRule{}}
		for img := range c.pins.pinned {
			saved.Rules = append(saved.Rules, index.PinRule{Kind: string(PinName), Pattern: img.Name(), Added: c.now()})
		}
		slices.SortFunc(saved.Rules, func(a, b index.PinRule) int { return strings.Compare(a.Pattern, b.Pattern) })
		if err := c.idx.Write(&index.Batch{Pins: saved}); err != nil && !errors.Is(err, ErrIndexHeld) {
			return fmt.Errorf("write index: %w", err)
		}
		if len(saved.Rules) > 0 {
			c.log.Info("pins of images made pins of their names", "pins", len(saved.Rules))
		}
	}
	selected := make(map[*Image]bool)
	for _, r := range saved.Rules {
		pr := &pinRule{PinRule: r}
		pr.images = c.selectPin(r, c.pinEntries(t, r), t)
		for _, img := range pr.images {
			selected[img] = true
		}
		c.pins.rules = append(c.pins.rules, pr)
	}
	for img := range c.pins.pinned {
		if !selected[img] {
			c.pins.kept = append(c.pins.kept, img)
		}
	}
	// Not started yet: the records say it, and the lifecycle's start
	// reads them (the LRU list leaves pinned images out, the prefetch
	// queue takes the incomplete ones).
	for img := range selected {
		if !img.rec.Pinned {
			img.rec.Pinned = true
			img.dirty = true
		}
		c.pins.pinned[img] = true
	}
	return nil
}

// applyPinsLocked applies the rules to a refreshed catalog: the listing
// it was made of and its tree, not yet published. What the pins change
// is written with the refresh's batch b, so that new images are recorded
// pinned. c.mu is held.
func (c *Cache) applyPinsLocked(entries []upstream.Entry, t *tree, b *index.Batch) {
	if len(c.pins.rules) == 0 && len(c.pins.pinned) == 0 {
		return
	}
	for _, pr := range c.pins.rules {
		pr.images = c.selectPin(pr.PinRule, entries, t)
	}
	c.pins.kept = nil
	c.repinLocked(b)
}

// repinLocked pins what the rules and kept select and unpins what they
// no longer do, recording the changed records in b if not nil. c.mu is
// held.
func (c *Cache) repinLocked(b *index.Batch) {
	want := make(map[*Image]bool, len(c.pins.pinned))
	for _, pr := range c.pins.rules {
		for _, img := range pr.images {
			want[img] = true
		}
	}
	for _, img := range c.pins.kept {
		want[img] = true
	}
	for img := range c.pins.pinned {
		if !want[img] {
			if c.images[img.id] != img {
				c.setPinned(img, false, nil) // leaving the catalog: its record goes
			} else {
				c.setPinned(img, false, b)
			}
		}
	}
	for img := range want {
		if !c.pins.pinned[img] || !img.Pinned() {
			c.setPinned(img, true, b)
		}
	}
	c.pins.pinned = want
}

// pinEntries are the entries of the catalog tree t that rule r needs to
// see: none for a name (found in the tree), else every image's name and
// attributes.
func (c *Cache) pinEntries(t *tree, r index.PinRule) []upstream.Entry {
	if PinKind(r.Kind) == PinName {
		return nil
	}
	var es []upstream.Entry
	t.eachFile(func(p string, ch *child) {
		if img := c.hotLocked(ch); img == nil { // cold: a candidate without attributes
			es = append(es, upstream.Entry{Name: p})
		} else if attrs, ok := img.pinCandidate(); ok {
			es = append(es, upstream.Entry{Name: p, Attrs: attrs})
		}
	})
	return es
}

// selectPin returns the images of tree t that rule r selects, entries
// being the catalog's (with their attributes).
func (c *Cache) selectPin(r index.PinRule, entries []upstream.Entry, t *tree) []*Image {
	var picked []upstream.Entry
	products := c.cfg.Products
	switch PinKind(r.Kind) {
	case PinName:
		if ch, ok := t.file(r.Pattern); ok {
			if img := c.imageOfLocked(ch); img != nil {
				if _, ok := img.pinCandidate(); ok {
					return []*Image{img}
				}
			}
		}
		return nil
	case PinGlob:
		match := func(e upstream.Entry) bool { return matchGlob(r.Pattern, e.Name) }
		if products != nil {
			entries = products.Newest(entries, match)
		}
		for _, e := range entries {
			if match(e) {
				picked = append(picked, e)
			}
		}
	case PinAlias:
		if products != nil {
			picked = products.Newest(entries, func(e upstream.Entry) bool { return products.HasAlias(e, r.Pattern) })
		}
	}
	var imgs []*Image
	seen := make(map[*Image]bool, len(picked)) // an image of several names (ByDigest) is picked once
	for _, e := range picked {
		ch, ok := t.file(e.Name)
		if !ok {
			continue
		}
		if img := c.imageOfLocked(ch); img != nil && !seen[img] {
			seen[img] = true
			imgs = append(imgs, img)
		}
	}
	return imgs
}

// matchGlob reports whether glob matches name or a directory above it:
// "images/debian/*" pins every image below images/debian/.
func matchGlob(glob, name string) bool {
	for p := name; ; {
		if ok, _ := path.Match(glob, p); ok {
			return true
		}
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			return false
		}
		p = p[:i]
	}
}
