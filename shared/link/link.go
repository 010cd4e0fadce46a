// Package link manipulates links, addresses and routes over netlink.
//
// It is a mechanism: every function does one thing to the kernel and reports
// what it found or changed; vnet decides when to call them. Functions act on
// the network namespace of the calling thread.
package link

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// ErrNotFound is returned (wrapped) when a link does not exist.
var ErrNotFound = errors.New("no such link")

// Get returns the link called name, or an error wrapping ErrNotFound.
func Get(name string) (netlink.Link, error) {
	if name == "" {
		return nil, fmt.Errorf("link: no name given: %w", ErrNotFound)
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("link: %s: %w", name, ErrNotFound)
		}
		return nil, fmt.Errorf("link: %s: %w", name, err)
	}
	return l, nil
}

// Exists reports whether a link called name exists.
func Exists(name string) (bool, error) {
	_, err := Get(name)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// BridgeSpec says how a bridge should look.
type BridgeSpec struct {
	Name string
	// MAC, when set, is given to a bridge we create. A bridge without an
	// address of its own takes its lowest port's, and changes it as ports come
	// and go (to 00:00:00:00:00:00 when the last one leaves): guests' ARP
	// caches would go stale.
	MAC          net.HardwareAddr
	MTU          int
	STP          bool
	ForwardDelay int // seconds
}

// EnsureBridge creates the bridge if it is absent and brings its settings and
// state to spec, then sets it up. created says whether it made the bridge. A
// link with that name that is not a bridge is an error.
func EnsureBridge(spec BridgeSpec) (l netlink.Link, created bool, err error) {
	l, err = Get(spec.Name)
	switch {
	case errors.Is(err, ErrNotFound):
		br := &netlink.Bridge{LinkAttrs: netlink.NewLinkAttrs()}
		br.Name = spec.Name
		// No MTU here: set below, through the bridge's own change_mtu, the
		// kernel marks it as set by the user and keeps it when the ports
		// change (an MTU given at creation follows the ports', and an empty
		// bridge's falls back to 1500).
		br.HardwareAddr = spec.MAC
		if err := netlink.LinkAdd(br); err != nil {
			return nil, false, fmt.Errorf("link: create bridge %s: %w", spec.Name, err)
		}
		created = true
		if l, err = Get(spec.Name); err != nil {
			return nil, true, err
		}
	case err != nil:
		return nil, false, err
	case l.Type() != "bridge":
		return nil, false, fmt.Errorf("link: %s exists and is a %s link, not a bridge; choose another bridge name or remove it", spec.Name, l.Type())
	}
	if err := setSTP(l.Attrs().Index, spec.STP, spec.ForwardDelay); err != nil {
		return l, created, fmt.Errorf("link: bridge %s: %w", spec.Name, err)
	}
	if spec.MTU > 0 && l.Attrs().MTU != spec.MTU {
		if err := netlink.LinkSetMTU(l, spec.MTU); err != nil {
			return l, created, fmt.Errorf("link: set MTU %d on %s: %w", spec.MTU, spec.Name, err)
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := netlink.LinkSetUp(l); err != nil {
			return l, created, fmt.Errorf("link: set %s up: %w", spec.Name, err)
		}
	}
	return l, created, nil
}

// setSTP sets the bridge's STP state and forward delay through rtnetlink
// (IFLA_BR_*), so it works in any namespace without sysfs. The kernel refuses
// a forward delay under 2 s while STP is on, so the order of the two changes
// depends on the direction.
func setSTP(index int, stp bool, fwdDelay int) error {
	stpAttr := func(d *nl.RtAttr) {
		v := uint32(0)
		if stp {
			v = 1
		}
		d.AddRtAttr(nl.IFLA_BR_STP_STATE, nl.Uint32Attr(v))
	}
	fdAttr := func(d *nl.RtAttr) {
		d.AddRtAttr(nl.IFLA_BR_FORWARD_DELAY, nl.Uint32Attr(uint32(fwdDelay*100))) // clock_t, USER_HZ=100
	}
	steps := []func(*nl.RtAttr){stpAttr, fdAttr}
	if stp {
		steps = []func(*nl.RtAttr){fdAttr, stpAttr}
	}
	for _, step := range steps {
		req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
		msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
		msg.Index = int32(index)
		req.AddData(msg)
		info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
		info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
		step(info.AddRtAttr(nl.IFLA_INFO_DATA, nil))
		req.AddData(info)
		if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
			return fmt.Errorf("set stp=%v forward_delay=%ds: %w", stp, fwdDelay, err)
		}
	}
	return nil
}

// DeleteAll removes the named links that exist (a missing one is not an
// error) in one kernel batch. Every link deletion waits for RCU grace
// periods under the RTNL lock, about 20 ms here, and separate deletions
// queue on that lock; one batch pays once. The batch is the kernel's delete
// by device group: the links get a group derived from the first name (in
// 0x80000000-0xffffffff, a range nothing else uses), then that group is
// deleted. A failure falls back to deleting them one by one.
func DeleteAll(names ...string) error {
	var links []netlink.Link
	for _, name := range names {
		l, err := Get(name)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		links = append(links, l)
	}
	if len(links) > 1 {
		h := fnv.New32a()
		h.Write([]byte("brouter\x00" + links[0].Attrs().Name))
		group := h.Sum32() | 0x80000000
		grouped := true
		for _, l := range links {
			if err := netlink.LinkSetGroup(l, int(group)); err != nil {
				grouped = false
				break
			}
		}
		if grouped {
			req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
			req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
			req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(group)))
			if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err == nil {
				return nil
			}
		}
	}
	for _, l := range links {
		if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("link: delete %s: %w", l.Attrs().Name, err)
		}
	}
	return nil
}

// Delete removes the link; a missing link is not an error.
func Delete(name string) error {
	l, err := Get(name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("link: delete %s: %w", name, err)
	}
	return nil
}

// EnsureAddr adds addr (address with prefix length) to the link unless it is
// already there. added says whether it changed anything.
func EnsureAddr(l netlink.Link, addr netip.Prefix) (added bool, err error) {
	have, err := HasAddr(l, addr)
	if err != nil || have {
		return false, err
	}
	a := &netlink.Addr{IPNet: ipnet(addr)}
	if addr.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD // the gateway must answer at once, not after DAD
	}
	if err := netlink.AddrAdd(l, a); err != nil && !errors.Is(err, unix.EEXIST) {
		return false, fmt.Errorf("link: add address %s to %s: %w", addr, l.Attrs().Name, err)
	}
	return true, nil
}

// HasAddr reports whether the link carries addr with that prefix length.
func HasAddr(l netlink.Link, addr netip.Prefix) (bool, error) {
	addrs, err := addrsOf(l, family(addr.Addr()))
	if err != nil {
		return false, fmt.Errorf("link: list addresses of %s: %w", l.Attrs().Name, err)
	}
	for _, p := range addrs {
		if p == addr {
			return true, nil
		}
	}
	return false, nil
}

// DelAddr removes addr from the link; an address that is not there is not an error.
func DelAddr(l netlink.Link, addr netip.Prefix) error {
	err := netlink.AddrDel(l, &netlink.Addr{IPNet: ipnet(addr)})
	if err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("link: remove address %s from %s: %w", addr, l.Attrs().Name, err)
	}
	return nil
}

// Addrs returns the link's global addresses as prefixes.
func Addrs(l netlink.Link) ([]netip.Prefix, error) {
	addrs, err := addrsOf(l, unix.AF_UNSPEC)
	if err != nil {
		return nil, fmt.Errorf("link: list addresses of %s: %w", l.Attrs().Name, err)
	}
	var out []netip.Prefix
	for _, p := range addrs {
		if !p.Addr().IsLinkLocalUnicast() {
			out = append(out, p)
		}
	}
	return out, nil
}

// Conflict finds a route in the main table, on a link other than skipIndex
// (0: none), whose destination overlaps subnet. Default routes do not count.
// It returns a sentence naming the interface and the route, or "".
func Conflict(subnet netip.Prefix, skipIndex int) (string, error) {
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN}
	routes, err := redump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(family(subnet.Addr()), filter, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return "", fmt.Errorf("link: list routes: %w", err)
	}
	for _, r := range routes {
		dst, ok := prefixOf(r.Dst)
		if !ok || dst.Bits() == 0 || !dst.Overlaps(subnet) {
			continue
		}
		idx := r.LinkIndex
		if idx == 0 && len(r.MultiPath) > 0 {
			idx = r.MultiPath[0].LinkIndex
		}
		if idx != 0 && idx == skipIndex {
			continue
		}
		dev := "no interface (" + routeType(r.Type) + " route)"
		if idx != 0 {
			if l, err := netlink.LinkByIndex(idx); err == nil {
				dev = "interface " + l.Attrs().Name
			} else {
				dev = fmt.Sprintf("interface index %d", idx)
			}
		}
		return fmt.Sprintf("%s overlaps route %s on %s", subnet, dst.Masked(), dev), nil
	}
	return "", nil
}

func routeType(t int) string {
	switch t {
	case unix.RTN_BLACKHOLE:
		return "blackhole"
	case unix.RTN_UNREACHABLE:
		return "unreachable"
	case unix.RTN_PROHIBIT:
		return "prohibit"
	}
	return "unicast"
}

// Routes returns the main-table routes through the link, as `ip route` would print them.
func Routes(l netlink.Link) ([]string, error) {
	var out []string
	for _, fam := range []int{unix.AF_INET, unix.AF_INET6} {
		rs, err := redump(func() ([]netlink.Route, error) { return netlink.RouteList(l, fam) })
		if err != nil {
			return nil, fmt.Errorf("link: list routes of %s: %w", l.Attrs().Name, err)
		}
		for _, r := range rs {
			dst, ok := prefixOf(r.Dst)
			if ok && dst.Addr().IsLinkLocalUnicast() || r.Table != unix.RT_TABLE_MAIN {
				continue
			}
			s := "default"
			if ok {
				s = dst.String()
			}
			if r.Gw != nil {
				s += " via " + r.Gw.String()
			}
			if r.Src != nil {
				s += " src " + r.Src.String()
			}
			out = append(out, s)
		}
	}
	return out, nil
}

// Port describes a link enslaved to a bridge.
type Port struct {
	Name  string `json:"name"`
	MAC   string `json:"mac"`
	MTU   int    `json:"mtu"`
	State string `json:"state"`
}

// Describe returns a link's port description.
func Describe(l netlink.Link) Port {
	a := l.Attrs()
	return Port{Name: a.Name, MAC: a.HardwareAddr.String(), MTU: a.MTU, State: strings.ToLower(a.OperState.String())}
}

// List returns every link.
func List() ([]netlink.Link, error) { return redump(netlink.LinkList) }

// redump runs a netlink dump again when the kernel marks it interrupted
// (links or addresses came or went meanwhile, as when containers start in
// parallel): the results of an interrupted dump may be incomplete.
func redump[T any](dump func() (T, error)) (T, error) {
	var (
		v   T
		err error
	)
	for i := 0; i < 10; i++ {
		if v, err = dump(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return v, err
}

// Ports lists the links whose master is the bridge, by name.
func Ports(br netlink.Link) ([]Port, error) {
	links, err := List()
	if err != nil {
		return nil, fmt.Errorf("link: list links: %w", err)
	}
	var out []Port
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			out = append(out, Describe(l))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// AttachSpec says how a port joins a bridge.
type AttachSpec struct {
	Name   string
	Bridge string
	MTU    int              // 0: the bridge's
	MAC    net.HardwareAddr // nil: leave as is
	// Hairpin lets frames leave through the port they came in by (the
	// bridge port's hairpin_mode). false leaves the setting as it is.
	Hairpin bool
}

// Attach puts the port on the bridge with the MTU and MAC asked for, and sets it up.
// Applying the same spec twice changes nothing.
func Attach(spec AttachSpec) error {
	port, err := Get(spec.Name)
	if err != nil {
		return err
	}
	br, err := Get(spec.Bridge)
	if err != nil {
		return err
	}
	if br.Type() != "bridge" {
		return fmt.Errorf("link: %s is a %s link, not a bridge", spec.Bridge, br.Type())
	}
	mtu := spec.MTU
	if mtu == 0 {
		mtu = br.Attrs().MTU
	}
	if err := configure(port, mtu, spec.MAC); err != nil {
		return err
	}
	if port.Attrs().MasterIndex != br.Attrs().Index {
		if err := netlink.LinkSetMasterByIndex(port, br.Attrs().Index); err != nil {
			return fmt.Errorf("link: attach %s to bridge %s: %w", spec.Name, spec.Bridge, err)
		}
	}
	if spec.Hairpin {
		if err := netlink.LinkSetHairpin(port, true); err != nil {
			return fmt.Errorf("link: hairpin mode on %s: %w", spec.Name, err)
		}
	}
	return setUp(port)
}

// Configure gives a port that joins no bridge (a routed port) its MTU
// (0: leave it) and MAC (nil: leave it), and sets it up.
func Configure(name string, mtu int, mac net.HardwareAddr) (netlink.Link, error) {
	port, err := Get(name)
	if err != nil {
		return nil, err
	}
	if err := configure(port, mtu, mac); err != nil {
		return nil, err
	}
	return port, setUp(port)
}

// Restore gives a link back its MTU (0: leave it) and MAC (nil: leave it),
// without changing whether it is up. A missing link is not an error.
func Restore(name string, mtu int, mac net.HardwareAddr) error {
	port, err := Get(name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return configure(port, mtu, mac)
}

func configure(port netlink.Link, mtu int, mac net.HardwareAddr) error {
	a := port.Attrs()
	if mac != nil && a.HardwareAddr.String() != mac.String() {
		if err := netlink.LinkSetHardwareAddr(port, mac); err != nil {
			return fmt.Errorf("link: set MAC %s on %s: %w", mac, a.Name, err)
		}
	}
	if mtu > 0 && a.MTU != mtu {
		if err := netlink.LinkSetMTU(port, mtu); err != nil {
			return fmt.Errorf("link: set MTU %d on %s: %w", mtu, a.Name, err)
		}
	}
	return nil
}

func setUp(l netlink.Link) error {
	if l.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("link: set %s up: %w", l.Attrs().Name, err)
	}
	return nil
}

// SetDown sets the link down; a missing link is not an error.
func SetDown(name string) error {
	l, err := Get(name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := netlink.LinkSetDown(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("link: set %s down: %w", name, err)
	}
	return nil
}

// Rename renames a link. The kernel only renames a link that is down, so
// Rename sets it down and, if it was up, up again. Another link called to is
// an error.
func Rename(from, to string) error {
	if from == to {
		return nil
	}
	if ok, err := Exists(to); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("link: cannot rename %s to %s: that name is taken", from, to)
	}
	l, err := Get(from)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetDown(l); err != nil {
		return fmt.Errorf("link: set %s down to rename it: %w", from, err)
	}
	if err := netlink.LinkSetName(l, to); err != nil {
		return fmt.Errorf("link: rename %s to %s: %w", from, to, err)
	}
	if l.Attrs().Flags&net.FlagUp != 0 {
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("link: set %s up after renaming it: %w", to, err)
		}
	}
	return nil
}

// EnsureHostRoute routes addr (a single address) through the link, with src
// as the preferred source. Idempotent.
func EnsureHostRoute(l netlink.Link, addr, src netip.Addr) error {
	r := hostRoute(l, addr)
	if src.IsValid() && src.Is4() == addr.Is4() {
		r.Src = net.IP(src.AsSlice())
	}
	if err := netlink.RouteReplace(r); err != nil {
		return fmt.Errorf("link: route %s via %s: %w", addr, l.Attrs().Name, err)
	}
	return nil
}

// DelHostRoute removes the host route to addr through the link; a route that
// is not there is not an error.
func DelHostRoute(l netlink.Link, addr netip.Addr) error {
	err := netlink.RouteDel(hostRoute(l, addr))
	if err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("link: remove route %s via %s: %w", addr, l.Attrs().Name, err)
	}
	return nil
}

func hostRoute(l netlink.Link, addr netip.Addr) *netlink.Route {
	return &netlink.Route{
		LinkIndex: l.Attrs().Index,
		Dst:       ipnet(netip.PrefixFrom(addr, addr.BitLen())),
		Scope:     netlink.SCOPE_LINK,
		Table:     unix.RT_TABLE_MAIN,
	}
}

// SetProxyARP turns proxy ARP on for the link, so the host answers ARP for
// the addresses it routes elsewhere (the guests behind other ports). The
// setting lives and dies with the link.
func SetProxyARP(name string) error {
	return writeSysctl("/proc/sys/net/ipv4/conf/"+name+"/proxy_arp", "1")
}

// SetIPv6 turns the IPv6 stack of the link on or off
// (net.ipv6.conf.NAME.disable_ipv6) and reports whether it was on before.
// A bridge port needs none of its own: frames cross the bridge below IP
// either way. Off, the port has no link-local address and no routes, and
// the host's IPv6 routing table does not grow with every guest, which
// every link added or deleted otherwise pays for (deleting a port took
// 33-176 ms with 1000 IPv6-enabled ports on the host, 20-24 ms without).
// A kernel without IPv6 has nothing to turn off.
func SetIPv6(name string, on bool) (wasOn bool, err error) {
	path := "/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6"
	cur, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if _, e := os.Stat("/proc/sys/net/ipv6"); e != nil {
			return false, nil // no IPv6 in this kernel
		}
	}
	if err != nil {
		return false, fmt.Errorf("link: %s: read disable_ipv6: %w", name, err)
	}
	wasOn = strings.TrimSpace(string(cur)) == "0"
	val := "1"
	if on {
		val = "0"
	}
	return wasOn, writeSysctl(path, val)
}

// SetRouteLocalnet lets the link route packets with loopback addresses, or
// stops it (net.ipv4.conf.NAME.route_localnet): connections from the host to
// 127.0.0.1 that are DNATed to a guest behind the link need it. The setting
// lives and dies with the link.
func SetRouteLocalnet(name string, on bool) error {
	val := "0"
	if on {
		val = "1"
	}
	return writeSysctl("/proc/sys/net/ipv4/conf/"+name+"/route_localnet", val)
}

// SetIsolated sets or clears the bridge port flag "isolated" of a port on a
// bridge (BR_ISOLATED, `bridge link set dev NAME isolated on`): the bridge
// forwards nothing between two isolated ports; an isolated port still
// reaches the bridge itself and the ports that are not isolated.
func SetIsolated(name string, on bool) error {
	port, err := Get(name)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetIsolated(port, on); err != nil {
		return fmt.Errorf("link: isolated %v on %s: %w", on, name, err)
	}
	return nil
}

// Detach takes the port off whatever bridge it is on. A missing port, or one
// on no bridge, is not an error.
func Detach(name string) error {
	port, err := Get(name)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if port.Attrs().MasterIndex == 0 {
		return nil
	}
	if err := netlink.LinkSetNoMaster(port); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("link: detach %s: %w", name, err)
	}
	return nil
}

// EnableForwarding turns on IPv4 (and, with v6, IPv6) forwarding in the
// current namespace. It never turns them off: other networks may rely on it.
func EnableForwarding(v6 bool) error {
	if err := writeSysctl("/proc/sys/net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	if v6 {
		return writeSysctl("/proc/sys/net/ipv6/conf/all/forwarding", "1")
	}
	return nil
}

func writeSysctl(path, val string) error {
	cur, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(cur)) == val {
		return nil
	}
	if err := os.WriteFile(path, []byte(val), 0o644); err != nil {
		return fmt.Errorf("link: sysctl %s=%s: %w", strings.ReplaceAll(strings.TrimPrefix(path, "/proc/sys/"), "/", "."), val, err)
	}
	return nil
}

func family(a netip.Addr) int {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}
