package link

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// TunDevice is the kernel's tun/tap clone device.
const TunDevice = "/dev/net/tun"

// OpenTap creates a tap device (IFF_TAP|IFF_NO_PI, as QEMU wants it) and
// returns the file descriptor that holds it and its name. pattern is a name
// with one "%d" (e.g. "tap1000.%d"), for which the kernel picks the lowest
// free number, so concurrent callers never collide. With vnetHdr the tap
// carries virtio-net headers (IFF_VNET_HDR) when the kernel supports them.
//
// The tap is not persistent: it goes when the last copy of the descriptor is
// closed. The descriptor is close-on-exec: hand it to another process over a
// Unix socket (SCM_RIGHTS).
func OpenTap(pattern string, vnetHdr bool) (fd int, name string, err error) {
	if strings.Count(pattern, "%d") != 1 || strings.Count(pattern, "%") != 1 || len(pattern) > 15 {
		return -1, "", fmt.Errorf("link: tap name pattern %q: want at most 15 bytes with one %%d", pattern)
	}
	fd, err = unix.Open(TunDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, "", fmt.Errorf("link: open %s: %w", TunDevice, err)
	}
	defer func() {
		if err != nil {
			unix.Close(fd)
			fd = -1
		}
	}()
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if vnetHdr {
		features, err := unix.IoctlGetUint32(fd, unix.TUNGETFEATURES)
		if err == nil && features&unix.IFF_VNET_HDR != 0 {
			flags |= unix.IFF_VNET_HDR
		}
	}
	ifr, err := unix.NewIfreq(pattern)
	if err != nil {
		return -1, "", fmt.Errorf("link: tap name pattern %q: %w", pattern, err)
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return -1, "", fmt.Errorf("link: create a tap named %s: %w", pattern, err)
	}
	return fd, ifr.Name(), nil
}
