package config

import (
	"fmt"
	"net/netip"
	"time"
)

// IPv6Mode is how a network's guests configure IPv6 ([network.NAME.dhcp6] ipv6_mode).
type IPv6Mode string

// IPv6 modes. Router advertisements are sent in every mode but "none": they
// carry the default route, the MTU and the DNS server (RDNSS); the mode says
// whether they tell guests to pick their own address (SLAAC), to ask DHCPv6,
// or both.
const (
	IPv6SLAAC      IPv6Mode = "slaac"
	IPv6DHCPv6     IPv6Mode = "dhcpv6"
	IPv6SLAACDHCP6 IPv6Mode = "slaac+dhcpv6"
	IPv6None       IPv6Mode = "none"
)

// SLAAC reports whether guests pick their own addresses from the prefix.
func (m IPv6Mode) SLAAC() bool { return m == IPv6SLAAC || m == IPv6SLAACDHCP6 }

// Stateful reports whether DHCPv6 hands out addresses from a range.
func (m IPv6Mode) Stateful() bool { return m == IPv6DHCPv6 || m == IPv6SLAACDHCP6 }

// DHCP6Spec is a [network.NAME.dhcp6] table as written.
type DHCP6Spec struct {
	IPv6Mode   *string `toml:"ipv6_mode"`
	RangeStart *string `toml:"range_start"`
	RangeEnd   *string `toml:"range_end"`
	LeaseTime  *string `toml:"lease_time"`
}

// DHCP6 is a network's validated IPv6 address service: router
// advertisements and, in modes dhcpv6 and slaac+dhcpv6, DHCPv6 from a range.
// dnsmasq serves it, with [network.NAME.dhcp] or without.
type DHCP6 struct {
	Mode                 IPv6Mode
	RangeStart, RangeEnd netip.Addr // used in the stateful modes; always set
	LeaseTime            time.Duration
}

// validate returns the network's IPv6 service: nil when it has none (no
// address6, mode route or bridge, or ipv6_mode = "none"). The table is
// implied by address6: without it the defaults apply (SLAAC).
func (s *DHCP6Spec) validate(key string, n *Network) (*DHCP6, error) {
	explicit := s != nil
	if s == nil {
		s = &DHCP6Spec{}
	}
	d := &DHCP6{Mode: IPv6SLAAC, LeaseTime: time.Hour}
	if s.IPv6Mode != nil {
		switch m := IPv6Mode(*s.IPv6Mode); m {
		case IPv6SLAAC, IPv6DHCPv6, IPv6SLAACDHCP6, IPv6None:
			d.Mode = m
		default:
			return nil, fmt.Errorf("%s.ipv6_mode = %q: want one of slaac, dhcpv6, slaac+dhcpv6, none", key, *s.IPv6Mode)
		}
	}
	if !n.Subnet6.IsValid() {
		if explicit {
			return nil, fmt.Errorf("%s: the network has no IPv6 address; set address6 (e.g. \"fd00:98::1/64\") or remove the table", key)
		}
		return nil, nil
	}
	if n.Mode == ModeRoute || n.Mode == ModeBridge {
		if explicit && d.Mode != IPv6None {
			return nil, fmt.Errorf("%s: router advertisements and DHCPv6 need a bridge brouter addresses (mode nat, routed or isolated), not mode %q; remove the table", key, n.Mode)
		}
		return nil, nil
	}
	sub := n.Subnet6
	if sub.Bits() > 64 && d.Mode.SLAAC() {
		// SLAAC needs a /64 (RFC 4862 on Ethernet): a longer prefix gets DHCPv6.
		if s.IPv6Mode != nil {
			return nil, fmt.Errorf("%s.ipv6_mode = %q: SLAAC needs a prefix of /64 or shorter and address6 has /%d; use \"dhcpv6\"", key, *s.IPv6Mode, sub.Bits())
		}
		d.Mode = IPv6DHCPv6
	}
	d.RangeStart, d.RangeEnd = defaultRange6(sub)
	parse := func(k string, v *string, dst *netip.Addr) error {
		if v == nil {
			return nil
		}
		a, err := netip.ParseAddr(*v)
		if err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" || !sub.Contains(a) || a == sub.Addr() {
			return fmt.Errorf("%s.%s = %q: want a host address of the network's prefix %s", key, k, *v, sub)
		}
		if a == n.Gateway6.Addr() {
			return fmt.Errorf("%s.%s = %q: that is the gateway's own address", key, k, *v)
		}
		*dst = a
		return nil
	}
	if err := parse("range_start", s.RangeStart, &d.RangeStart); err != nil {
		return nil, err
	}
	if err := parse("range_end", s.RangeEnd, &d.RangeEnd); err != nil {
		return nil, err
	}
	if d.RangeEnd.Less(d.RangeStart) {
		return nil, fmt.Errorf("%s: range_end %s is before range_start %s", key, d.RangeEnd, d.RangeStart)
	}
	if gw := n.Gateway6.Addr(); !gw.Less(d.RangeStart) && !d.RangeEnd.Less(gw) {
		return nil, fmt.Errorf("%s: the range %s-%s contains the gateway's own address %s", key, d.RangeStart, d.RangeEnd, gw)
	}
	if s.LeaseTime != nil {
		lt, err := time.ParseDuration(*s.LeaseTime)
		if err != nil || lt < 2*time.Minute || lt > 365*24*time.Hour || lt%time.Second != 0 {
			return nil, fmt.Errorf("%s.lease_time = %q: want a duration from \"2m\" to \"8760h\", e.g. \"1h\"", key, *s.LeaseTime)
		}
		d.LeaseTime = lt
	}
	if d.Mode == IPv6None {
		return nil, nil
	}
	return d, nil
}

// defaultRange6 is the DHCPv6 range unless one is given: in a subnet of 2^18
// addresses or more (a /64), the 65536 from offset 0x20000 (fd00::2:0 to
// fd00::2:ffff), beside the allocator's default pool (fd00::1:0/112); in a
// smaller one its upper half, last address excepted, as for IPv4.
func defaultRange6(sub netip.Prefix) (netip.Addr, netip.Addr) {
	hostBits := sub.Addr().BitLen() - sub.Bits()
	base := sub.Masked().Addr()
	if hostBits >= 18 {
		return addOffset(base, 2<<16), addOffset(base, 3<<16-1)
	}
	size := uint64(1) << hostBits
	start := addOffset(base, size/2)
	if size <= 4 {
		start = addOffset(base, 1)
	}
	return start, addOffset(base, size-2)
}

// InRange reports whether a is in the DHCPv6 range (stateful modes only).
func (d *DHCP6) InRange(a netip.Addr) bool {
	return d != nil && d.Mode.Stateful() && a.Is6() && d.RangeStart.Compare(a) <= 0 && a.Compare(d.RangeEnd) <= 0
}

// validateIPv6Keys checks nat6 and uplink_accept_ra against the network.
func validateIPv6Keys(key func(string) string, s *NetworkSpec, n *Network) error {
	if s.NAT6 != nil && *s.NAT6 {
		if !n.Subnet6.IsValid() {
			return fmt.Errorf("%s = true: the network has no IPv6 prefix to masquerade; set address6 or remove nat6", key("nat6"))
		}
		if n.Mode != ModeNAT {
			return fmt.Errorf("%s = true: masquerading IPv6 needs mode \"nat\", not %q", key("nat6"), n.Mode)
		}
		n.NAT6 = true
	}
	if s.UplinkAcceptRA != nil && *s.UplinkAcceptRA {
		if n.Uplink == "" {
			return fmt.Errorf("%s = true: names no interface; set uplink to the interface whose router advertisements the host needs", key("uplink_accept_ra"))
		}
		n.UplinkAcceptRA = true
	}
	return nil
}
