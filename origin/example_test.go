package origin_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/imgcache/imgcache/origin"
)

// How imgcache serve [--listen ADDR] [--access-log FILE] DIR is meant to
// run a Server.
func Example() {
	dir, listen, accessLog := "/srv/images", "127.0.0.1:8080", "/var/log/imgcache-access.log"
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))

	opts := origin.Options{Logger: log}
	if accessLog != "" {
		f, err := os.OpenFile(accessLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			log.Error("access log", "err", err)
			return
		}
		defer f.Close()
		opts.AccessLog = f // one JSON origin.AccessRecord per line
	}
	srv, err := origin.New(dir, opts)
	if err != nil {
		log.Error("serve", "err", err)
		return
	}
	defer srv.Close() // after Shutdown: stops hashing for the index

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		log.Error("serve", "err", err)
		return
	}
	// No WriteTimeout: an image can take long to send.
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	fmt.Printf("serving %s at http://%s/\n", dir, ln.Addr())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go hs.Serve(ln)
	<-ctx.Done()
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hs.Shutdown(shutdown)
}
