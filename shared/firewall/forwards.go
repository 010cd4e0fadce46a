package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Forward is one published port of a guest: traffic to HostIP:HostPort
// (HostIP invalid: any local address of GuestIP's family) is DNATed to GuestIP:GuestPort.
type Forward struct {
	Proto     string     // "tcp", "udp" or "sctp"
	HostIP    netip.Addr // invalid (zero) = every local address
	HostPort  uint16
	GuestIP   netip.Addr
	GuestPort uint16
}

// Forwards are all the published ports of one guest port.
type Forwards struct {
	Network  string
	Bridge   string         // the network's bridge (hairpin and localhost masquerade go out of it)
	Subnets  []netip.Prefix // the network's subnets (masked), for hairpin masquerade
	Port     string         // the guest's host-side interface: the owner key of the entries
	Forwards []Forward
}

// ErrAlreadyPublished is wrapped by the error of EnsureForwards when a host
// address and port is already published by another guest port of the network:
//
//	firewall: port brvX: tcp 0.0.0.0:8080 is already published by port brvY
//
// Nothing was changed then. Uniqueness is checked within a network: two
// networks publishing the same host port is the caller's to prevent.
var ErrAlreadyPublished = errors.New("already published")

// What a published port looks like from the host, and where it comes from.
//
// A forward with a zero HostIP applies to every local address of its family,
// so (tcp, any, 8080) → IPv4 guest and (tcp, any, 8080) → IPv6 guest are two
// different entries (a dual-stack guest has both); so are (tcp, any, 8080)
// and (tcp, 192.0.2.1, 8080): the specific address wins.
//
// Localhost (127.0.0.0/8) works for IPv4 only: it needs
// net.ipv4.conf.BRIDGE.route_localnet=1 (set by the caller) and the
// masquerade of 127.0.0.0/8 sources leaving through the bridge (ours).
// IPv6 has no equivalent of route_localnet, so ::1 cannot be published.

var (
	loopback4 = netip.MustParsePrefix("127.0.0.0/8")
	loopback6 = netip.MustParsePrefix("::1/128")
	fwdProtos = map[string]uint8{"tcp": 6, "udp": 17, "sctp": 132}
)

// is4 reports whether the forward is an IPv4 one (by its guest address).
func (fw Forward) is4() bool { return fw.GuestIP.Is4() }

// host is HostIP:HostPort as the user sees it: 0.0.0.0:8080 or [::]:8080 when HostIP is unset.
func (fw Forward) host() netip.AddrPort {
	h := fw.HostIP
	if !h.IsValid() {
		h = netip.IPv6Unspecified()
		if fw.is4() {
			h = netip.IPv4Unspecified()
		}
	}
	return netip.AddrPortFrom(h, fw.HostPort)
}

// published is "tcp 0.0.0.0:8080": what the forward takes on the host.
func (fw Forward) published() string { return fw.Proto + " " + fw.host().String() }

// String is "tcp 0.0.0.0:8080 -> 10.0.0.2:80".
func (fw Forward) String() string {
	return fw.published() + " -> " + netip.AddrPortFrom(fw.GuestIP, fw.GuestPort).String()
}

// ForwardLine is the line List shows for a published port of port.
func ForwardLine(port string, fw Forward) string {
	return fmt.Sprintf("forward %s (port %s)", fw, port)
}

// validate checks one forward of port.
func (fw Forward) validate(port string) error {
	if _, ok := fwdProtos[fw.Proto]; !ok {
		return errorf("port %s: published port: invalid protocol %q (want tcp, udp or sctp)", port, fw.Proto)
	}
	g := fw.GuestIP
	switch {
	case !g.IsValid():
		return errorf("port %s: published %s port %d: invalid guest address", port, fw.Proto, fw.HostPort)
	case g.Zone() != "":
		return errorf("port %s: published %s port %d: guest address %v has a zone", port, fw.Proto, fw.HostPort, g)
	case g.Is4In6():
		return errorf("port %s: published %s port %d: guest address %v is IPv4-mapped (give it as %v)", port, fw.Proto, fw.HostPort, g, g.Unmap())
	case !g.IsGlobalUnicast():
		return errorf("port %s: published %s port %d: guest address %v is not a unicast address", port, fw.Proto, fw.HostPort, g)
	}
	if fw.HostPort == 0 {
		return errorf("port %s: published %s port -> %v: host port 0 out of range (1-65535)", port, fw.Proto, netip.AddrPortFrom(g, fw.GuestPort))
	}
	if fw.GuestPort == 0 {
		return errorf("port %s: published port %s: guest port 0 out of range (1-65535)", port, fw.published())
	}
	h := fw.HostIP
	if !h.IsValid() {
		return nil
	}
	switch {
	case h.Zone() != "":
		return errorf("port %s: published port %s: host address %v has a zone", port, fw.Proto, h)
	case h.Is4In6():
		return errorf("port %s: published port %s: host address %v is IPv4-mapped (give it as %v)", port, fw.Proto, h, h.Unmap())
	case h.Is4() != g.Is4():
		return errorf("port %s: published port %s: host address %v and guest address %v are of different families", port, fw.published(), h, g)
	case h.IsUnspecified():
		return errorf("port %s: published port %s: leave the host address unset (not %v) to publish on every local address", port, fw.published(), h)
	case h.Is6() && h.IsLoopback():
		return errorf("port %s: published port %s: IPv6 loopback cannot be published (no route_localnet for IPv6)", port, fw.published())
	case h.Is4() && h.IsLoopback():
		return nil // 127.0.0.1: from the host only (route_localnet)
	case !h.IsGlobalUnicast():
		return errorf("port %s: published port %s: host address %v is not a unicast address", port, fw.published(), h)
	}
	return nil
}

// validate checks everything that ends up in a rule or a map element.
func (f Forwards) validate() error {
	if err := validPortRef(f.Network, f.Port); err != nil {
		return err
	}
	if f.Bridge != "" || len(f.Forwards) > 0 {
		if f.Bridge == "" {
			return errorf("port %s: network %s: published ports need a bridge", f.Port, f.Network)
		}
		if err := validIfname("bridge", f.Bridge); err != nil {
			return err
		}
	}
	if err := validSubnets(f.Network, f.Subnets); err != nil {
		return err
	}
	seen := map[fwdKey]bool{}
	for _, fw := range f.Forwards {
		if err := fw.validate(f.Port); err != nil {
			return err
		}
		k := fw.key()
		if seen[k] {
			return errorf("port %s: %s is published twice", f.Port, fw.published())
		}
		seen[k] = true
	}
	return nil
}

// clone returns a deep copy (the caller may reuse its slices).
func (f Forwards) clone() Forwards {
	f.Subnets = slices.Clone(f.Subnets)
	f.Forwards = slices.Clone(f.Forwards)
	return f
}

// fwdHint returns prev if it can serve as the record of what is installed for
// network's port, else nil (unknown: read the kernel). A hint names the port's
// entries; its Network and Port, when set, must be those of the call, and its
// forwards must be valid (a record we could not have written is not one).
func fwdHint(network, port string, prev *Forwards) *Forwards {
	if prev == nil || (prev.Network != "" && prev.Network != network) || (prev.Port != "" && prev.Port != port) {
		return nil
	}
	seen := map[fwdKey]bool{}
	for _, fw := range prev.Forwards {
		if fw.validate(port) != nil || seen[fw.key()] {
			return nil
		}
		seen[fw.key()] = true
	}
	return prev
}

// fwdKey identifies what a forward takes on the host: at most one port of a
// network may publish a given key.
type fwdKey struct {
	proto  string
	four   bool       // family (of the guest; of the host address when set)
	host   netip.Addr // invalid: every local address
	hostPt uint16
}

func (fw Forward) key() fwdKey {
	return fwdKey{proto: fw.Proto, four: fw.is4(), host: fw.HostIP, hostPt: fw.HostPort}
}

// hairpinPlan is the masquerade of published ports, in the backend-neutral
// rule form of plan (rules.go): a DNATed connection that leaves through the
// bridge from the bridge's own subnets (a guest reaching a published port,
// hairpin) or from 127.0.0.0/8 (the host connecting to localhost) gets the
// host's address as its source, so the guest's answer comes back through the
// host and is un-DNATed. No rules without a bridge.
func hairpinPlan(bridge string, subnets []netip.Prefix) []rule {
	if bridge == "" {
		return nil
	}
	var out []rule
	for _, s := range append(slices.Clone(subnets), loopback4) {
		out = append(out, rule{chain: chainPostrouting, oif: bridge, ctDNAT: true, saddr: []netip.Prefix{s}, verdict: masquerade})
	}
	return out
}

// sortForwards orders forwards for display: by protocol, host address and port.
func sortForwards(l []Forward) {
	slices.SortFunc(l, func(a, b Forward) int {
		if c := strings.Compare(a.Proto, b.Proto); c != 0 {
			return c
		}
		if c := a.host().Compare(b.host()); c != 0 {
			return c
		}
		return netip.AddrPortFrom(a.GuestIP, a.GuestPort).Compare(netip.AddrPortFrom(b.GuestIP, b.GuestPort))
	})
}

// conflict is the error for a forward that another port already publishes.
func conflict(port string, fw Forward, owner string) error {
	if owner == "" {
		return errorf("port %s: %s is %w by an entry without owner", port, fw.published(), ErrAlreadyPublished)
	}
	return errorf("port %s: %s is %w by port %s", port, fw.published(), ErrAlreadyPublished, owner)
}
