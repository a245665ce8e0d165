package index

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

	"golang.org/x/sync/errgroup"
)

// rawRecord is a record as stored, read from the index at start-up.
type rawRecord struct {
	key   string
	value []byte
}

// decodeRecords decodes records on every CPU. Start-up reads every record
// of the index before the mount answers, and JSON decoding is most of
// that work (an index of 100,000 images took 1.5 s on one CPU); the
// garbage collector is held back meanwhile, since everything decoded is
// kept.
func decodeRecords(raws []rawRecord) ([]Record, error) {
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	recs := make([]Record, len(raws))
	workers := min(runtime.GOMAXPROCS(0), max(1, len(raws)/1000))
	var g errgroup.Group
	for w := range workers {
		g.Go(func() error {
			for i := w; i < len(raws); i += workers {
				if err := json.Unmarshal(raws[i].value, &recs[i]); err != nil {
					return fmt.Errorf("index key %s: %w", raws[i].key, err)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return recs, nil
}
