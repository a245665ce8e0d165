package simplestreams

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/imgcache/imgcache/cachecore/upstream"
)

// IndexPath is where a simplestreams tree keeps its index, relative to
// the mirror's root.
const IndexPath = "streams/v1/index.json"

// Formats this package reads.
const (
	indexFormat    = "index:1.0"
	productsFormat = "products:1.0"
	imageDownloads = "image-downloads"
)

// index is streams/v1/index.json: the streams of the tree, each
// with the path of its product file.
type index struct {
	Format string                `json:"format"`
	Index  map[string]indexEntry `json:"index"`
}

type indexEntry struct {
	DataType string   `json:"datatype"`
	Path     string   `json:"path"`
	Format   string   `json:"format"`
	Products []string `json:"products"`
}

// parseIndex reads an index and returns the paths of the product files
// of its image-downloads streams, sorted and each once. Streams of other
// datatypes are not images; a stream that names no product is skipped,
// as LXD skips it. A product file path that is not a clean relative name
// is an error: the mirror could not serve it where the index says.
func parseIndex(body []byte, maxFiles int) ([]string, error) {
	var idx index
	if err := json.Unmarshal(body, &idx); err != nil {
		return nil, fmt.Errorf("%s: %w", IndexPath, jsonError(err))
	}
	if idx.Format != indexFormat {
		return nil, fmt.Errorf("%s: format is %q, want %q", IndexPath, idx.Format, indexFormat)
	}
	var paths []string
	for _, key := range sortedKeys(idx.Index) {
		s := idx.Index[key]
		if s.DataType != imageDownloads || len(s.Products) == 0 {
			continue
		}
		if s.Format != "" && s.Format != productsFormat {
			return nil, fmt.Errorf("%s: stream %q: format is %q, want %q", IndexPath, key, s.Format, productsFormat)
		}
		if err := checkPath(s.Path); err != nil {
			return nil, fmt.Errorf("%s: stream %q: product file %w", IndexPath, key, err)
		}
		if s.Path == IndexPath {
			return nil, fmt.Errorf("%s: stream %q: the product file is the index itself", IndexPath, key)
		}
		if !slices.Contains(paths, s.Path) {
			paths = append(paths, s.Path)
		}
		if len(paths) > maxFiles {
			return nil, fmt.Errorf("%s: more than %d product files", IndexPath, maxFiles)
		}
	}
	slices.Sort(paths)
	return paths, nil
}

// checkPath accepts a path of the tree only as a clean relative name:
// what CleanName would repair ("/a", "a//b") is refused too, since a
// client asks for the path as published.
func checkPath(p string) error {
	clean, err := upstream.CleanName(p)
	if err != nil {
		return fmt.Errorf("path: %w", err)
	}
	if clean != p {
		return fmt.Errorf("path %q is not a clean relative path (%q)", p, clean)
	}
	return nil
}

// jsonError keeps the useful part of a decoding error and says where.
func jsonError(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("not valid JSON at byte %d: %v", se.Offset, err)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if field == "" {
			field = "the document"
		}
		return fmt.Errorf("%s: a JSON %s where %s belongs (byte %d)", field, te.Value, strings.TrimPrefix(te.Type.String(), "*"), te.Offset)
	}
	return err
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
