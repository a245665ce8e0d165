package mount

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// fuseDevice is the kernel's FUSE device: every mount opens it, either
// here (as root, mount(2) directly) or in fusermount3.
const fuseDevice = "/dev/fuse"

// checkFuseDevice says in one line why no FUSE mount can be made here,
// before anything is opened: without it the failure surfaces as
// go-fuse's fallback to fusermount3 failing ("fusermount exited with
// code 256"). The usual causes are a systemd unit whose private /dev
// leaves the device out (PrivateDevices=yes) or whose device policy
// denies it, a container not given the device, and a kernel without
// the fuse module.
func checkFuseDevice() error {
	fi, err := os.Stat(fuseDevice)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%s is missing, so nothing can be mounted: load the fuse module (modprobe fuse), "+
			"give a container the device, or in a systemd unit drop PrivateDevices=yes and allow it (DeviceAllow=%s rw)", fuseDevice, fuseDevice)
	case err != nil:
		return fmt.Errorf("FUSE device: %w", err)
	case fi.Mode()&os.ModeCharDevice == 0:
		return fmt.Errorf("%s is not a character device, so not the FUSE device", fuseDevice)
	}
	if os.Geteuid() != 0 {
		return nil // fusermount3, setuid root, opens it
	}
	fd, err := unix.Open(fuseDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%s may not be opened (%v): a systemd unit needs DeviceAllow=%s rw, a container the device allowed", fuseDevice, err, fuseDevice)
	case errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.ENXIO):
		return fmt.Errorf("%s: %v: the kernel has no FUSE (modprobe fuse)", fuseDevice, err)
	case err != nil:
		return &os.PathError{Op: "open", Path: fuseDevice, Err: err}
	}
	unix.Close(fd)
	return nil
}
