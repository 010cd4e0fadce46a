package link

import (
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
)

// Kinds of device a guest can be behind, as Kind reports them.
const (
	KindVeth   = "veth"
	KindTap    = "tap"
	KindTun    = "tun"
	KindXenVif = "xen-vif"
)

// Kind says what a link is: veth, tap or tun (tuntap in tap or tun mode),
// xen-vif (a netback device: no rtnetlink kind, on the xen-backend bus), or
// else netlink's type ("device" for a physical NIC or lo, "bridge", ...).
func Kind(l netlink.Link) string {
	switch t := l.(type) {
	case *netlink.Veth:
		return KindVeth
	case *netlink.Tuntap:
		if t.Mode == netlink.TUNTAP_MODE_TUN {
			return KindTun
		}
		return KindTap
	}
	if l.Type() == "device" || l.Type() == "" {
		sys := "/sys/class/net/" + l.Attrs().Name + "/device/"
		for _, p := range []string{sys + "subsystem", sys + "driver"} {
			if t, err := os.Readlink(p); err == nil && (filepath.Base(t) == "xen-backend" || filepath.Base(t) == "vif") {
				return KindXenVif
			}
		}
	}
	return l.Type()
}
