package mount

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/imgcache/imgcache/cachecore"
	"github.com/imgcache/imgcache/cachecore/upstream"
)

// A reload re-reads what may change under a running mount without a
// remount: the credentials file, and the upstream's catalog (refreshed
// now instead of at the next --catalog-ttl). SIGHUP asks for one
// (cmd/imgcache); so can a service manager's reload. Everything else
// (flags, cache directory, upstream URLs) needs a remount.

// credentialed is an upstream whose credentials can change (httpdir's).
type credentialed interface{ SetCredentials(string) error }

type reloader struct {
	credFile string         // "": credentials do not come from a file
	ups      []credentialed // every upstream that takes credentials
	cache    *cachecore.Cache
	log      *slog.Logger
}

func newReloader(t Trust, ups []upstream.Upstream, cache *cachecore.Cache, log *slog.Logger) *reloader {
	r := &reloader{credFile: t.CredentialsFile, cache: cache, log: log}
	for _, u := range ups {
		if c, ok := u.(credentialed); ok {
			r.ups = append(r.ups, c)
		}
	}
	return r
}

// reload re-reads the credentials file (a file that cannot be read
// leaves the credentials as they were) and starts a catalog refresh.
func (r *reloader) reload() error {
	var err error
	if r.credFile != "" {
		var cred string
		if cred, err = ReadCredentials(r.credFile, r.log); err == nil {
			for _, u := range r.ups {
				err = errors.Join(err, u.SetCredentials(cred))
			}
		}
	}
	r.cache.RefreshCatalog()
	if err != nil {
		r.log.Error("reload: credentials kept as they were", "err", err)
		return err
	}
	what := "catalog refresh started"
	if r.credFile != "" {
		what = "credentials re-read from " + r.credFile + "; " + what
	}
	r.log.Info("reloaded: " + what)
	return nil
}

// ReadCredentials reads a credentials file: "user:password" or a token,
// surrounding space trimmed. It warns when others may read the file.
func ReadCredentials(path string, log *slog.Logger) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("credentials file: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("the credentials file is readable by others; chmod 600 it", "file", path)
	}
	cred := strings.TrimSpace(string(b))
	if cred == "" {
		return "", fmt.Errorf("credentials file %s is empty", path)
	}
	return cred, nil
}
