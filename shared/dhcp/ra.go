package dhcp

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// IPv6 is a network's IPv6 address service, which the same dnsmasq serves:
// router advertisements on the bridge (the prefix, the MTU, the default
// route via the bridge's link-local address, and the bridge's address6 as
// DNS server, RDNSS) and, in the stateful modes, DHCPv6 from a range.
type IPv6 struct {
	// Gateway is the bridge's IPv6 address and prefix (fd00:98::1/64):
	// the prefix advertised and the DNS server.
	Gateway netip.Prefix
	// Mode: ModeSLAAC (guests pick their addresses; stateless DHCPv6
	// answers what else they ask), ModeDHCPv6 (addresses from the range
	// only), ModeSLAACDHCPv6 (both).
	Mode string
	// RangeStart, RangeEnd: DHCPv6 addresses (stateful modes), in the prefix.
	RangeStart, RangeEnd netip.Addr
	// LeaseTime: 0 means DefaultLeaseTime.
	LeaseTime time.Duration
	// MTU advertised in the RAs; 0 means none (guests keep their link's).
	MTU int
}

// IPv6 modes (config's ipv6_mode).
const (
	ModeSLAAC       = "slaac"
	ModeDHCPv6      = "dhcpv6"
	ModeSLAACDHCPv6 = "slaac+dhcpv6"
)

func (v *IPv6) stateful() bool { return v.Mode == ModeDHCPv6 || v.Mode == ModeSLAACDHCPv6 }

// validate checks the IPv6 service of network; fail formats the error.
func (v *IPv6) validate(fail func(string, ...any) error) error {
	gw := v.Gateway
	if !gw.IsValid() || !gw.Addr().Is6() || gw.Addr().Is4In6() || gw.Addr().Zone() != "" {
		return fail("IPv6 gateway %q: want an IPv6 address with its prefix, e.g. fd00:98::1/64", gw.String())
	}
	if gw.Bits() > 126 || gw.Addr() == gw.Masked().Addr() {
		return fail("IPv6 gateway %s: want a host address in a prefix with room for guests", gw)
	}
	switch v.Mode {
	case ModeSLAAC, ModeSLAACDHCPv6:
		if gw.Bits() > 64 {
			return fail("IPv6 mode %s: SLAAC needs a prefix of /64 or shorter, not /%d", v.Mode, gw.Bits())
		}
	case ModeDHCPv6:
	default:
		return fail("IPv6 mode %q: want %s, %s or %s", v.Mode, ModeSLAAC, ModeDHCPv6, ModeSLAACDHCPv6)
	}
	if v.stateful() {
		for _, a := range []netip.Addr{v.RangeStart, v.RangeEnd} {
			if !a.Is6() || a.Is4In6() || a.Zone() != "" || !gw.Masked().Contains(a) || a == gw.Masked().Addr() || a == gw.Addr() {
				return fail("DHCPv6 range %s-%s: want host addresses of %s other than the gateway", v.RangeStart, v.RangeEnd, gw.Masked())
			}
		}
		if v.RangeEnd.Less(v.RangeStart) {
			return fail("DHCPv6 range end %s is before range start %s", v.RangeEnd, v.RangeStart)
		}
		if g := gw.Addr(); !g.Less(v.RangeStart) && !v.RangeEnd.Less(g) {
			return fail("DHCPv6 range %s-%s contains the gateway %s", v.RangeStart, v.RangeEnd, g)
		}
	}
	if v.LeaseTime != 0 && (v.LeaseTime < MinLeaseTime || v.LeaseTime%time.Second != 0) {
		return fail("IPv6 lease time %s: want whole seconds, at least %s", v.LeaseTime, MinLeaseTime)
	}
	if v.MTU != 0 && (v.MTU < 1280 || v.MTU > 65535) {
		return fail("advertised MTU %d: IPv6 needs 1280..65535", v.MTU)
	}
	return nil
}

// prefixLen is dnsmasq's prefix length of a range: at least 64 (its minimum).
func (v *IPv6) prefixLen() int { return max(64, v.Gateway.Bits()) }

// config writes the IPv6 part of dnsmasq's configuration.
func (v *IPv6) config(line func(string, ...any), bridge, domain string) {
	lease := v.LeaseTime
	if lease == 0 {
		lease = DefaultLeaseTime
	}
	secs := int64(lease / time.Second)
	line("# IPv6: router advertisements (prefix, MTU, route, the bridge as DNS server) and DHCPv6")
	line("enable-ra")
	if v.MTU != 0 {
		line("ra-param=%s,mtu:%d,0", bridge, v.MTU)
	}
	switch v.Mode {
	case ModeSLAAC:
		// Addresses by SLAAC; stateless DHCPv6 answers the DNS options.
		net64 := netip.PrefixFrom(v.Gateway.Addr(), 64).Masked().Addr()
		line("dhcp-range=%s,ra-stateless,64,%d", net64, secs)
	case ModeDHCPv6:
		line("dhcp-range=%s,%s,%d,%d", v.RangeStart, v.RangeEnd, v.prefixLen(), secs)
	case ModeSLAACDHCPv6:
		line("dhcp-range=%s,%s,slaac,%d,%d", v.RangeStart, v.RangeEnd, v.prefixLen(), secs)
	}
	line("dhcp-option=option6:dns-server,[%s]", v.Gateway.Addr())
	if domain != "" {
		line("dhcp-option=option6:domain-search,%s", domain)
	}
}

// hostAddrs renders a static host's addresses for a dhcp-host line:
// "10.0.0.5", "[fd00::5]" or both.
func hostAddrs(h Host) string { return joinAddrs(h, "[", "]") }

// recordAddrs renders them for a host-record line: "10.0.0.5,fd00::5".
func recordAddrs(h Host) string { return joinAddrs(h, "", "") }

func joinAddrs(h Host, open, close string) string {
	var l []string
	if h.IP.IsValid() {
		l = append(l, h.IP.String())
	}
	if h.IP6.IsValid() {
		l = append(l, open+h.IP6.String()+close)
	}
	return strings.Join(l, ",")
}

// checkHost6 checks a static host's IPv6 address against the network's prefix.
func checkHost6(v *IPv6, h Host) error {
	if !h.IP6.IsValid() {
		return nil
	}
	if v == nil {
		return fmt.Errorf("IPv6 address %s: the network serves no IPv6", h.IP6)
	}
	if !h.IP6.Is6() || h.IP6.Is4In6() || h.IP6.Zone() != "" || !v.Gateway.Masked().Contains(h.IP6) || h.IP6 == v.Gateway.Masked().Addr() {
		return fmt.Errorf("IPv6 address %s is not a host address of %s", h.IP6, v.Gateway.Masked())
	}
	if h.IP6 == v.Gateway.Addr() {
		return fmt.Errorf("IPv6 address %s is the gateway's own address", h.IP6)
	}
	return nil
}
