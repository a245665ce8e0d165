package main

import (
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/imgcache/imgcache/cachecore"
	"github.com/imgcache/imgcache/cachecore/upstream/httpdir"
	"github.com/imgcache/imgcache/mount"
	"github.com/spf13/pflag"
)

// minFlushInterval bounds --flush-interval from below: each flush syncs
// files and writes the index.
const minFlushInterval = 10 * time.Millisecond

// credentialsEnv names the environment variable that may hold the
// upstream credentials ("user:password" or a token).
const credentialsEnv = "IMGCACHE_CREDENTIALS"

// trustFlags are mount's flags about reaching the upstream and failing
// well: timeouts, retries, mirrors, TLS and credentials.
type trustFlags struct {
	connect, header, stall, read *time.Duration
	flush                        *time.Duration
	retryMax                     *int
	caFile, credFile, proxy      *string
	insecure                     *bool
	mirrors                      listFlag
	repos                        repoFlag
}

func addTrustFlags(fs *pflag.FlagSet) *trustFlags {
	t := &trustFlags{
		connect: durationFlag(fs, "connect-timeout", httpdir.DefaultConnectTimeout, positiveDuration,
			"longest wait for a connection (and TLS handshake) to the upstream, a `duration` above 0"),
		header: durationFlag(fs, "header-timeout", httpdir.DefaultHeaderTimeout, positiveDuration,
			"longest wait for a reply's headers, a `duration` above 0"),
		stall: durationFlag(fs, "stall-timeout", httpdir.DefaultStallTimeout, positiveDuration,
			"fail a reply that delivers no byte for this long, a `duration` above 0"),
		read: durationFlag(fs, "read-timeout", cachecore.DefaultReadTimeout, positiveDuration,
			"a read of uncached bytes fails (EIO) after this long without them, a `duration` above 0"),
		flush: durationFlag(fs, "flush-interval", cachecore.DefaultFlushInterval, atLeast(minFlushInterval),
			"how often fetched chunks are synced and recorded in the index (a crash loses at most this much fetching), a `duration` of at least 10ms"),
		retryMax: intFlag(fs, "retry-max", cachecore.DefaultRetryMax, nonNegative,
			"retries of a range request after a 5xx, reset or timeout (backoff with jitter), a `number`; 0: none"),
		caFile:   fs.String("ca-file", "", "PEM `file` of the certificate authorities to trust for an https upstream (instead of the system's)"),
		credFile: fs.String("credentials-file", "", "`file` holding the upstream credentials, user:password or a token (else $"+credentialsEnv+")"),
		proxy:    fs.String("proxy", "", "forward proxy `URL` for every upstream request, loopback included (else $HTTP_PROXY, $HTTPS_PROXY, $NO_PROXY)"),
		insecure: fs.Bool("insecure", false, "do not verify the upstream's TLS certificate (dangerous; warns loudly)"),
	}
	fs.Var(&t.mirrors, "mirror", "another `URL` of the same images, used when the ones before fail (repeatable)")
	fs.Var(&t.repos, "repo", "a registry repository to show, for an oci:// upstream (repeatable; default: the registry's _catalog)")
	return t
}

// trust gathers the flags; credentials come from the file, else the
// environment (which is then cleared, so that child processes never
// inherit it).
func (t *trustFlags) trust(log *slog.Logger) (mount.Trust, error) {
	retry := *t.retryMax
	if retry == 0 {
		retry = -1 // the flag's 0 means none; the config's 0 means default
	}
	tr := mount.Trust{
		ConnectTimeout: *t.connect,
		HeaderTimeout:  *t.header,
		StallTimeout:   *t.stall,
		ReadTimeout:    *t.read,
		FlushInterval:  *t.flush,
		RetryMax:       retry,
		CAFile:         *t.caFile,
		Insecure:       *t.insecure,
		Proxy:          *t.proxy,
	}
	if *t.credFile != "" {
		cred, err := mount.ReadCredentials(*t.credFile, log)
		if err != nil {
			return tr, err
		}
		tr.Credentials, tr.CredentialsFile = cred, *t.credFile
	} else if v, ok := os.LookupEnv(credentialsEnv); ok {
		tr.Credentials = strings.TrimSpace(v)
		os.Unsetenv(credentialsEnv)
	}
	return tr, nil
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Type() string   { return "URL" }
func (l *listFlag) Set(s string) error {
	if err := nonEmpty(s); err != nil {
		return err
	}
	*l = append(*l, s)
	return nil
}

// repoFlag is the repeatable --repo: registry repositories ("library/alpine").
type repoFlag struct{ listFlag }

func (r *repoFlag) Type() string { return "NAME" }
