package main

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func parseTrust(t *testing.T, args ...string) (*trustFlags, error) {
	t.Helper()
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	tf := addTrustFlags(fs)
	return tf, fs.Parse(args)
}

func TestTrustFlags(t *testing.T) {
	cred := filepath.Join(t.TempDir(), "cred")
	os.WriteFile(cred, []byte("  user:pw \n"), 0o600)
	tf, err := parseTrust(t, "--retry-max", "0", "--read-timeout", "5s", "--stall-timeout", "2s",
		"--credentials-file", cred, "--mirror", "http://b/", "--mirror", "http://c/")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	tr, err := tf.trust(log)
	if err != nil {
		t.Fatal(err)
	}
	if tr.RetryMax >= 0 || tr.ReadTimeout != 5*time.Second || tr.StallTimeout != 2*time.Second || tr.Credentials != "user:pw" {
		t.Fatalf("trust = %+v", tr)
	}
	if !slices.Equal(tf.mirrors, listFlag{"http://b/", "http://c/"}) {
		t.Fatalf("mirrors %v", tf.mirrors)
	}

	os.WriteFile(cred, []byte("\n"), 0o600)
	if _, err := tf.trust(log); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty credentials file: %v", err)
	}

	t.Setenv(credentialsEnv, "tok3n")
	tf, _ = parseTrust(t)
	tr, err = tf.trust(log)
	if err != nil || tr.Credentials != "tok3n" {
		t.Fatalf("from the environment: %+v %v", tr, err)
	}
	if _, still := os.LookupEnv(credentialsEnv); still {
		t.Fatal("the credentials stay in the environment for child processes")
	}
}
