package httpdir

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// TestSetCredentials: credentials set while the upstream runs are the
// ones sent from then on; none, no header at all.
func TestSetCredentials(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		http.Error(w, "no", http.StatusNotFound)
	}))
	defer srv.Close()
	u, err := New(srv.URL, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ cred, want string }{
		{"", ""},
		{"token1", "Bearer token1"},
		{"u:p", "Basic dTpw"},
		{"", ""},
	} {
		if err := u.SetCredentials(c.cred); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		seen = nil
		mu.Unlock()
		u.List(context.Background())
		mu.Lock()
		for _, got := range seen {
			if got != c.want {
				t.Fatalf("credentials %q sent Authorization %q, want %q", c.cred, got, c.want)
			}
		}
		if len(seen) == 0 {
			t.Fatal("List made no request")
		}
		mu.Unlock()
	}
	withClient, _ := New(srv.URL, Options{Client: srv.Client()})
	if err := withClient.SetCredentials("x"); err == nil {
		t.Fatal("credentials set on an upstream with a client of its own")
	}
}
