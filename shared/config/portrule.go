package config

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"path"
	"strings"
)

// Port rules, [[network.NAME.port]]: what brouter knows about the guest
// behind a port whose caller does not say it (a QEMU tap's caller passes
// nothing but the tap's name). vnet applies them to every kind of port.

// PortRuleSpec is one [[network.NAME.port]]: what brouter knows about the guest
// behind ports whose name matches, whatever made the port (a QEMU tap, whose
// caller passes nothing but the tap's name, a Xen vif, a CNI veth).
type PortRuleSpec struct {
	Name      *string  `toml:"name"`
	MAC       *string  `toml:"mac"`
	IPs       []string `toml:"ips"`
	Antispoof *bool    `toml:"antispoof"`
}

// PortRule is a validated [[network.NAME.port]].
type PortRule struct {
	Name      string // glob over interface names
	MAC       net.HardwareAddr
	IPs       []netip.Addr
	Antispoof bool // default: true when IPs are given
}

// Matches reports whether the rule applies to the interface whose guest has
// the MAC guestMAC (nil: unknown, as for a QEMU tap). A rule naming a mac
// applies only to that guest's ports, or to ports whose guest is unknown.
func (p *PortRule) Matches(ifname string, guestMAC net.HardwareAddr) bool {
	if ok, _ := path.Match(p.Name, ifname); !ok {
		return false
	}
	return p.MAC == nil || guestMAC == nil || bytes.Equal(p.MAC, guestMAC)
}

// PortRuleFor returns the first [[network.NAME.port]] matching the interface
// and its guest's MAC (nil: unknown), or nil.
func (n *Network) PortRuleFor(ifname string, guestMAC net.HardwareAddr) *PortRule {
	for i := range n.PortRules {
		if n.PortRules[i].Matches(ifname, guestMAC) {
			return &n.PortRules[i]
		}
	}
	return nil
}

// NetworkForPort returns the configured network with a [[network.NAME.port]]
// matching the interface (first by network name), or nil.
func (c *Config) NetworkForPort(ifname string) *Network {
	for _, name := range sortedKeys(c.Networks) {
		if n := c.Networks[name]; n.PortRuleFor(ifname, nil) != nil {
			return n
		}
	}
	return nil
}

func validatePorts(key string, specs []PortRuleSpec) ([]PortRule, error) {
	var out []PortRule
	for i, s := range specs {
		pk := fmt.Sprintf("%s[%d]", key, i)
		if s.Name == nil || *s.Name == "" {
			return nil, fmt.Errorf("%s: needs name (an interface name or glob, e.g. \"tap-web*\")", pk)
		}
		if _, err := path.Match(*s.Name, ""); err != nil || strings.ContainsAny(*s.Name, "/ \t\n") {
			return nil, fmt.Errorf("%s.name = %q: want an interface name or glob", pk, *s.Name)
		}
		p := PortRule{Name: *s.Name}
		if s.MAC != nil {
			mac, err := parseMAC(*s.MAC)
			if err != nil {
				return nil, fmt.Errorf("%s.mac = %q: %w", pk, *s.MAC, err)
			}
			p.MAC = mac
		}
		for j, v := range s.IPs {
			a, err := netip.ParseAddr(v)
			if err != nil || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
				return nil, fmt.Errorf("%s.ips[%d] = %q: want a guest's IPv4 or IPv6 address", pk, j, v)
			}
			p.IPs = append(p.IPs, a)
		}
		p.Antispoof = len(p.IPs) > 0
		if s.Antispoof != nil {
			p.Antispoof = *s.Antispoof
		}
		if p.Antispoof && p.MAC == nil {
			return nil, fmt.Errorf("%s: antispoof needs the guest's mac", pk)
		}
		out = append(out, p)
	}
	return out, nil
}
