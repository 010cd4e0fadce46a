package vnet

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// PortMapping is a published port as callers that do not know the guest's
// address yet give it, in the terms (and JSON) of CNI's portMappings
// capability and the portmap plugin's conventions: HostIP "" is every host
// address of every family the guest has, "0.0.0.0" every IPv4 one, "::"
// every IPv6 one.
type PortMapping struct {
	Proto     string `json:"protocol"` // tcp (default), udp or sctp, any case
	HostPort  int    `json:"hostPort"`
	GuestPort int    `json:"containerPort"`
	HostIP    string `json:"hostIP,omitempty"`
}

// ParseMapping checks a mapping and turns it into a forward without its
// guest address (ForwardsFor gives it one).
func ParseMapping(pm PortMapping) (Forward, error) {
	proto := strings.ToLower(pm.Proto)
	if proto == "" {
		proto = "tcp"
	}
	if proto != "tcp" && proto != "udp" && proto != "sctp" {
		return Forward{}, fmt.Errorf("protocol %q: want tcp, udp or sctp", pm.Proto)
	}
	if pm.HostPort < 1 || pm.HostPort > 65535 {
		return Forward{}, fmt.Errorf("hostPort %d: want 1..65535", pm.HostPort)
	}
	if pm.GuestPort < 1 || pm.GuestPort > 65535 {
		return Forward{}, fmt.Errorf("containerPort %d: want 1..65535", pm.GuestPort)
	}
	f := Forward{Proto: proto, HostPort: uint16(pm.HostPort), GuestPort: uint16(pm.GuestPort)}
	if pm.HostIP == "" {
		return f, nil
	}
	a, err := netip.ParseAddr(pm.HostIP)
	switch {
	case err != nil || a.Zone() != "":
		return Forward{}, fmt.Errorf("hostIP %q is not an address", pm.HostIP)
	case a.IsUnspecified() && a.Is6():
		f.GuestIP = netip.IPv6Unspecified() // "IPv6 only" until the guest's address is known
	case a.IsUnspecified():
		f.GuestIP = netip.IPv4Unspecified()
	case a.Is4In6() || a.IsMulticast():
		return Forward{}, fmt.Errorf("hostIP %q: want a unicast address of the host", pm.HostIP)
	default:
		f.HostIP = a
	}
	return f, nil
}

// ForwardsFor gives each parsed mapping the guest's address of its family
// (a mapping without a host address applies to every family the guest has).
func ForwardsFor(maps []Forward, ips []netip.Addr) []Forward {
	var out []Forward
	for _, m := range maps {
		for _, ip := range ips {
			switch {
			case m.HostIP.IsValid() && m.HostIP.Is4() != ip.Is4():
				continue
			case m.GuestIP.IsValid() && m.GuestIP.Is4() != ip.Is4(): // 0.0.0.0 or ::
				continue
			}
			f := m
			f.GuestIP = ip
			if !slices.ContainsFunc(out, func(o Forward) bool {
				return o.Proto == f.Proto && o.HostIP == f.HostIP && o.HostPort == f.HostPort && o.GuestIP.Is4() == f.GuestIP.Is4()
			}) {
				out = append(out, f)
			}
		}
	}
	return out
}
