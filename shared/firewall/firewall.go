// Package firewall installs the packet-filter rules of a brouter network.
//
// It is a mechanism: it does what it is told and holds no policy. vnet decides
// which rules a network needs (from its mode) and hands them over as one
// NetworkRules value; a backend turns that into one atomic change of its own
// tables and chains, named after the project, and never touches anything else
// (no built-in chain policy, no flush of foreign tables).
//
// What a network gets (see plan in rules.go, shared by every backend):
//
//   - nftables: table "inet brouter-NET" with a forward filter base chain and,
//     in nat mode, a postrouting nat base chain.
//   - iptables: chains BR-FWD-NET (filter) and BR-NAT-NET (nat), jumped from
//     FORWARD and POSTROUTING; IPv6 through ip6tables.
//   - Guest ports with PortRules (per-port antispoof): nftables tables
//     "bridge brouter-NET" (bridged ports), "inet brouter-NET.ports" and
//     "arp brouter-NET" (routed ports), with fixed rules and one set element
//     per port, MAC and address; iptables: one chain per port, BRAS-PORT, in
//     ebtables (bridged) or in iptables/ip6tables raw and arptables (routed),
//     jumped from BROUTER-AS-NET.
//   - Published ports (Forwards, DNAT): nftables table "inet brouter-NET.fwd"
//     with maps keyed by host address, protocol and port, one element per
//     published port (nftables_forwards.go); iptables: nat chain BR-DNAT-NET
//     with one chain per guest port, BRFW-PORT, and BR-HAIRPIN-NET for the
//     masquerade (iptables_forwards.go).
//   - Docker hosts (filter FORWARD policy DROP or a DOCKER-USER chain): the
//     accept rules are also installed in iptables and jumped from DOCKER-USER,
//     whichever backend is in use, so guests still reach the outside.
package firewall

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/brouter/brouter/shared/names"
)

// NetworkRules is everything the firewall needs to know about one network.
type NetworkRules struct {
	// Network is the network's name (validated: [A-Za-z0-9][A-Za-z0-9_-]{0,14}).
	// Tables and chains are named after it.
	Network string
	// Bridge is the interface guests sit behind (the bridge). Empty for a
	// network without a bridge (Xen's two-way routed setup, mode route):
	// each guest has its own port, so rules match the subnets, not an interface.
	Bridge string
	// Subnets are the networks configured on the bridge (IPv4 and/or IPv6, masked).
	Subnets []netip.Prefix
	// Forward: forward traffic between the bridge and other interfaces
	// (nat and routed modes). When false (isolated) every packet forwarded to
	// or from the bridge is dropped, and Masquerade is ignored.
	Forward bool
	// Masquerade the IPv4 subnets when they leave through another interface (nat mode).
	// With Masquerade, new connections from outside toward the guests are not forwarded;
	// only established/related traffic comes back in. IPv6 subnets are never
	// masqueraded: as in libvirt's nat mode they are routed, inbound included.
	Masquerade bool
	// Masquerade6: masquerade the IPv6 subnets too (nat6), with the same
	// inbound policy as IPv4 (replies and published ports only). Needs Masquerade.
	Masquerade6 bool
	// Uplink, when set, restricts forwarding and masquerade to this outgoing interface.
	Uplink string
	// Antispoof: drop packets forwarded from the bridge whose source address is
	// not in Subnets.
	Antispoof bool
	// Services: the network's DHCP and DNS server runs on the host; DHCP
	// (udp 67) and DNS (udp and tcp 53) from the bridge are accepted at the
	// host's input, so a host firewall that drops input does not starve guests.
	Services bool
	// Policy: reach between networks, host access, incoming and outgoing
	// filters (policy.go). The zero Policy is the mode's rules alone.
	Policy Policy
	// Overlay: the bridge has a tunnel port to other hosts (overlay.go); nil: none.
	Overlay *OverlayRules
}

// Backend is one packet-filter implementation (nftables, iptables, or a fake).
// Implementations are safe for concurrent use on different networks; callers
// serialize operations on the same network (vnet holds the network's lock).
type Backend interface {
	// Name is "nftables", "iptables" or "fake".
	Name() string
	// Ensure installs the rules for r.Network, replacing whatever the backend had
	// installed for that network before, in one atomic change. Applying the same
	// rules twice changes nothing.
	Ensure(r NetworkRules) error
	// Remove deletes everything the backend installed for the network.
	// Removing a network that has no rules succeeds.
	Remove(network string) error
	// List returns a human-readable line per rule installed for the network
	// (for status), and a line per guarded port; nil when there are none.
	List(network string) ([]string, error)
	// Check compares what the kernel holds for network r with what Ensure
	// installs (see check.go): one line per problem, each saying what to do;
	// none when the rules are intact.
	Check(r NetworkRules) ([]string, error)
	// EnsurePort makes p.Port's per-port antispoof (see PortRules) exactly
	// p, replacing the port's previous entries atomically. Idempotent. The
	// number of rules does not grow with the number of ports where the
	// backend has sets (nftables): a port is a handful of set elements, and
	// the backend remembers what it installed, so that changing a port costs
	// the same with 10 or 1000 guarded ports. Operations on one port must not
	// run concurrently (the caller serialises them); different ports may.
	EnsurePort(p PortRules) error
	// SyncPorts makes the antispoof entries of the listed ports of network
	// exactly theirs without trusting what the backend remembers of its own
	// installs (resync.go): for a reconcile after another tool flushed or
	// recreated the tables. Ports not listed keep their entries.
	SyncPorts(network string, ports []PortRules) error
	// RemovePort removes every entry of the port from the network's tables.
	// A port without entries (never guarded, already removed) succeeds.
	// Remove(network) removes all the network's ports too.
	RemovePort(network, port string) error
	// EnsureForwards makes port f.Port's published ports exactly f.Forwards
	// (empty: none), atomically; the port's other published ports go.
	// A host address and port that another port of the network publishes is
	// an error wrapping ErrAlreadyPublished, and changes nothing.
	EnsureForwards(f Forwards) error
	// RemoveForwards removes the port's published ports. Idempotent: a port
	// without any succeeds. Remove(network) removes them all too.
	RemoveForwards(network, port string) error
	// EnsureOverlayGuest records the MAC of a local guest of a network with
	// an overlay (NetworkRules.Overlay): frames from the tunnel with that
	// source are dropped. One set element (nftables) per guest. Idempotent.
	EnsureOverlayGuest(network string, mac net.HardwareAddr) error
	// RemoveOverlayGuest forgets it; a MAC not recorded succeeds.
	RemoveOverlayGuest(network string, mac net.HardwareAddr) error
}

// Kinds accepted by New.
const (
	KindAuto     = "auto"
	KindNftables = "nftables"
	KindIPTables = "iptables"
)

// New returns the backend of the given kind. KindAuto picks nftables when the
// nft tool works here, else iptables. The returned error says what is missing
// and which Debian package provides it. rec is where the backend keeps what
// it installed per port (installed.go); nil keeps nothing, and the backend
// then reads the kernel to find a port's entries.
func New(kind string, rec Records) (Backend, error) {
	switch kind {
	case KindNftables:
		b, err := newNftables(rec)
		if err != nil {
			return nil, errorf("%w", err)
		}
		return b, nil
	case KindIPTables:
		b, err := newIPTables(rec)
		if err != nil {
			return nil, errorf("%w", err)
		}
		return b, nil
	case KindAuto:
		nb, nerr := newNftables(rec)
		if nerr == nil {
			return nb, nil
		}
		ib, ierr := newIPTables(rec)
		if ierr == nil {
			return ib, nil
		}
		return nil, errorf("no usable backend (install the Debian package nftables, or iptables): %w; %w", nerr, ierr)
	default:
		return nil, errorf("unknown backend %q (allowed: %s, %s, %s)", kind, KindAuto, KindNftables, KindIPTables)
	}
}

// errorf wraps a failure with the component name, as every error of this
// package does, on one line (nft and iptables print multi-line diagnostics).
func errorf(format string, a ...any) error {
	return oneLine{fmt.Errorf("firewall: "+format, a...)}
}

type oneLine struct{ err error }

func (e oneLine) Unwrap() error { return e.err }

func (e oneLine) Error() string {
	var keep []string
	for _, l := range strings.Split(e.err.Error(), "\n") {
		// Drop blank lines and nft's "^^^^" markers under the offending command.
		if l = strings.TrimSpace(l); strings.Trim(l, "^ ") != "" {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, " ")
}

func validNetwork(name string) error {
	if err := names.Network(name); err != nil {
		return errorf("invalid %w", err)
	}
	return nil
}

func validIfname(what, name string) error {
	if err := names.Interface(name); err != nil {
		return errorf("invalid %s %w", what, err)
	}
	return nil
}

// validate checks everything that ends up in a rule, so that no backend ever
// sees an unchecked name or address.
func (r NetworkRules) validate() error {
	if err := validNetwork(r.Network); err != nil {
		return err
	}
	if r.Bridge == "" {
		if r.Services {
			return errorf("network %s: DHCP and DNS need a bridge", r.Network)
		}
		if r.Masquerade || r.Masquerade6 || !r.Forward {
			return errorf("network %s: a network without a bridge (mode route) is forwarded and never masqueraded", r.Network)
		}
		if len(r.Subnets) == 0 {
			return errorf("network %s: a network without a bridge needs its subnets", r.Network)
		}
	} else if err := validIfname("bridge", r.Bridge); err != nil {
		return err
	}
	if r.Masquerade6 && !r.Masquerade {
		return errorf("network %s: IPv6 is masqueraded only with IPv4 (nat mode)", r.Network)
	}
	if r.Overlay != nil {
		if r.Bridge == "" {
			return errorf("network %s: an overlay needs a bridge", r.Network)
		}
		if err := r.Overlay.validate(r.Network); err != nil {
			return err
		}
	}
	if r.Uplink != "" {
		if err := validIfname("uplink", r.Uplink); err != nil {
			return err
		}
		if r.Uplink == r.Bridge {
			return errorf("network %s: uplink %s is the bridge itself", r.Network, r.Uplink)
		}
	}
	if err := r.Policy.validate(r.Network); err != nil {
		return err
	}
	return validSubnets(r.Network, r.Subnets)
}

func validSubnets(network string, subnets []netip.Prefix) error {
	for _, p := range subnets {
		if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			return errorf("network %s: invalid subnet %v", network, p)
		}
		if p != p.Masked() {
			return errorf("network %s: subnet %v is not masked (want %v)", network, p, p.Masked())
		}
	}
	return nil
}
