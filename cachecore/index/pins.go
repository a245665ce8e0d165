package index

import "time"

// Pin rules (cachecore: pins.go) are kept whole under one key, meta/pins:
// there are few of them, and they change only when a user pins or unpins.
// An index without the key was written before pins were rules: its pinned
// records are pins of their names (cachecore migrates them at start).
const pinsKey = "meta/pins"

// PinRules is the value of meta/pins.
type PinRules struct {
	Rules []PinRule `json:"rules"`
}

// PinRule is one pin: of a name, a glob, or an alias.
type PinRule struct {
	Kind    string    `json:"kind"`    // "name", "glob" or "alias"
	Pattern string    `json:"pattern"` // the name, glob or alias
	Added   time.Time `json:"added"`
}
