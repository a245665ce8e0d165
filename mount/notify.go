package mount

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/coreos/go-systemd/v22/daemon"
)

// A service manager that starts imgcache with Type=notify (systemd, see
// packaging/systemd/imgcache@.service) passes a datagram socket in
// $NOTIFY_SOCKET, a path or an abstract name ("@..."), and waits for
// READY=1 before it starts the units ordered after the mount; it takes
// STOPPING=1 as the start of the way down, and RELOADING=1 ... READY=1
// as a reload in progress (sd_notify(3)). Without $NOTIFY_SOCKET every
// message is a no-op. go-systemd's daemon package speaks the protocol;
// its datagrams carry the sender's pid, which is the main process's, as
// NotifyAccess=main asks.

// serviceNotifier tells the service manager how the mount is doing.
type serviceNotifier struct{ log *slog.Logger }

func (n serviceNotifier) send(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn("telling the service manager", "state", strings.ReplaceAll(strings.TrimSpace(state), "\n", " "), "err", err)
	}
}

// ready says that the filesystem answers requests.
func (n serviceNotifier) ready(i Info) {
	n.send(daemon.SdNotifyReady + "\n" + status(i))
}

// stopping says that the mount is on its way down.
func (n serviceNotifier) stopping() {
	n.send(daemon.SdNotifyStopping + "\nSTATUS=unmounting")
}

// reload runs a reload between RELOADING=1 and READY=1. MONOTONIC_USEC
// lets the manager tell this reload from an earlier one
// (Type=notify-reload needs it; Type=notify takes it).
func (n serviceNotifier) reload(info func() Info, reload func() error) {
	n.send(daemon.SdNotifyReloading + "\n" + daemon.SdNotifyMonotonicUsec() + "STATUS=reloading")
	err := reload()
	st := status(info())
	if err != nil {
		st = "STATUS=reload failed (credentials kept): " + oneLine(err.Error())
	}
	n.send(daemon.SdNotifyReady + "\n" + st)
}

// status is the line systemctl status shows.
func status(i Info) string {
	return fmt.Sprintf("STATUS=serving %d images of %s at %s", i.Images, i.Source, i.Mountpoint)
}

// oneLine keeps a message to one line: a newline would start a new
// assignment in the datagram.
func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }
