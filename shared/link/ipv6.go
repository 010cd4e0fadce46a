package link

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AcceptRA returns net.ipv6.conf.NAME.accept_ra: 0 never, 1 unless the host
// forwards IPv6, 2 even then.
func AcceptRA(name string) (int, error) {
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + name + "/accept_ra")
	if err != nil {
		return 0, fmt.Errorf("link: %s: read accept_ra: %w", name, err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("link: %s: accept_ra %q: %w", name, strings.TrimSpace(string(b)), err)
	}
	return v, nil
}

// SetAcceptRA writes net.ipv6.conf.NAME.accept_ra.
func SetAcceptRA(name string, v int) error {
	return writeSysctl("/proc/sys/net/ipv6/conf/"+name+"/accept_ra", strconv.Itoa(v))
}

// SkipDAD turns off duplicate address detection on the link
// (net.ipv6.conf.NAME.accept_dad = 0), so addresses made unique by whoever
// assigns them are usable at once. A link without IPv6 has nothing to skip:
// no error.
func SkipDAD(name string) error {
	err := writeSysctl("/proc/sys/net/ipv6/conf/"+name+"/accept_dad", "0")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// RALearners names the links that hold routes learned from router
// advertisements (protocol "ra": a default route, a route of an RA's route
// information option), in name order: the host configures IPv6 there from
// RAs, which IPv6 forwarding makes it ignore unless accept_ra is 2.
func RALearners() ([]string, error) {
	routes, err := redump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(unix.AF_INET6, &netlink.Route{Protocol: unix.RTPROT_RA, Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_PROTOCOL)
	})
	if err != nil {
		return nil, fmt.Errorf("link: list IPv6 routes: %w", err)
	}
	var out []string
	for _, r := range routes {
		if r.Protocol != unix.RTPROT_RA {
			continue
		}
		l, err := netlink.LinkByIndex(r.LinkIndex)
		if err != nil {
			continue
		}
		if n := l.Attrs().Name; !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// DefaultRoute6Link names the link of the IPv6 default route ("" if none).
func DefaultRoute6Link() (string, error) {
	routes, err := redump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(unix.AF_INET6, &netlink.Route{Dst: nil, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return "", fmt.Errorf("link: list IPv6 routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask) {
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				return l.Attrs().Name, nil
			}
		}
	}
	return "", nil
}

func isZeroMask(m net.IPMask) bool { ones, _ := m.Size(); return ones == 0 }

// SetProxyNDP turns proxy NDP on for the link
// (net.ipv6.conf.NAME.proxy_ndp): the host answers neighbour solicitations
// there for the addresses it has proxy entries for (AddNDProxy).
func SetProxyNDP(name string) error {
	return writeSysctl("/proc/sys/net/ipv6/conf/"+name+"/proxy_ndp", "1")
}

// AddNDProxy adds a proxy neighbour entry (ip -6 neigh add proxy ADDR dev
// NAME): the host answers for addr on that link. Idempotent.
func AddNDProxy(name string, addr netip.Addr) error {
	l, err := Get(name)
	if err != nil {
		return err
	}
	if err := netlink.NeighSet(ndProxy(l, addr)); err != nil {
		return fmt.Errorf("link: proxy NDP for %s on %s: %w", addr, name, err)
	}
	return nil
}

// DelNDProxy removes a proxy entry; one that is not there, or whose link is
// gone, is not an error.
func DelNDProxy(name string, addr netip.Addr) error {
	l, err := Get(name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	err = netlink.NeighDel(ndProxy(l, addr))
	if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("link: remove proxy NDP for %s on %s: %w", addr, name, err)
	}
	return nil
}

func ndProxy(l netlink.Link, addr netip.Addr) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: unix.AF_INET6, Flags: netlink.NTF_PROXY, IP: net.IP(addr.AsSlice())}
}
