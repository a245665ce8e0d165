package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/imgcache/imgcache/origin"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func serveCmd() *cobra.Command {
	c := command("serve [flags] DIR", "serve the images in DIR over HTTP (an origin)", `
Serves the image files below DIR (recursively) over HTTP: an origin for
imgcache mount, or for anything else that speaks HTTP. Files are served
with Range, ETag and Last-Modified; directories get an HTML listing; and
/.imgcache/index.json lists every image with its size, mtime and sha256
(each version of a file is hashed once, then remembered).

Dotfiles and names with control characters or invisible ones (bidi
controls, zero-width characters) are not served. It prints
"imgcache: serving DIR at URL" to stderr when it is listening, and stops on SIGINT
or SIGTERM.`, serveFlags)
	c.ValidArgsFunction = func(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return nil, cobra.ShellCompDirectiveFilterDirs // DIR
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return c
}

func serveFlags(fs *pflag.FlagSet) func([]string) error {
	listen := stringFlag(fs, "listen", "127.0.0.1:8080", hostPort, "`address` to listen on, host:port (port 0: any free port)")
	accessLog := fs.String("access-log", "", "append one JSON line per request to this `file`")
	return func(args []string) error {
		if len(args) != 1 {
			return usageErr("want one DIR, got %d arguments", len(args))
		}
		log := slog.New(slog.NewTextHandler(os.Stderr, nil))
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return serve(ctx, args[0], *listen, *accessLog, log)
	}
}

func serve(ctx context.Context, dir, listen, accessLog string, log *slog.Logger) error {
	opts := origin.Options{Logger: log}
	if accessLog != "" {
		f, err := os.OpenFile(accessLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		opts.AccessLog = f
	}
	srv, err := origin.New(dir, opts)
	if err != nil {
		return err
	}
	defer srv.Close() // after Shutdown below: stops the hashing for the index

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	// No WriteTimeout: an image can take long to send.
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	fmt.Fprintf(os.Stderr, "imgcache: serving %s at http://%s/\n", dir, ln.Addr())

	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutdown); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}
