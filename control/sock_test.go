package control

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestCheckSocket: the control socket is used by name (chmod) only once
// it is known to be the socket just made, this user's: never a link.
func TestCheckSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, SocketName)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := checkSocket(sock); err != nil {
		t.Fatalf("the socket itself: %v", err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(sock, link); err != nil {
		t.Fatal(err)
	}
	if err := checkSocket(link); err == nil || !strings.Contains(err.Error(), strconv.Quote(link)) {
		t.Fatalf("a link to the socket: %v, want a refusal naming it", err)
	}
	if os.Geteuid() == 0 {
		if err := os.Lchown(sock, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if err := checkSocket(sock); err == nil {
			t.Fatal("another user's socket accepted")
		}
	}
}
