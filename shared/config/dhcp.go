package config

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/brouter/brouter/shared/names"
)

// DHCPSpec is a [network.NAME.dhcp] table as written.
type DHCPSpec struct {
	RangeStart *string        `toml:"range_start"`
	RangeEnd   *string        `toml:"range_end"`
	LeaseTime  *string        `toml:"lease_time"`
	Domain     *string        `toml:"domain"`
	Upstream   []string       `toml:"upstream"`
	Host       []DHCPHostSpec `toml:"host"`
}

// DHCPHostSpec is one [[network.NAME.dhcp.host]].
type DHCPHostSpec struct {
	MAC  *string `toml:"mac"`
	IP   *string `toml:"ip"`
	IP6  *string `toml:"ip6"`
	Name *string `toml:"name"`
}

// DHCP is a network's validated DHCP and DNS service.
type DHCP struct {
	RangeStart, RangeEnd netip.Addr
	LeaseTime            time.Duration
	Domain               string
	Upstream             []netip.Addr
	Hosts                []DHCPHost
}

// DHCPHost is a static lease with a DNS name: IPv4 (IP), DHCPv6 (IP6), or both.
type DHCPHost struct {
	MAC  net.HardwareAddr
	IP   netip.Addr // invalid when the host has only ip6
	IP6  netip.Addr // invalid when none
	Name string
}

func (s *DHCPSpec) validate(key string, n *Network) (*DHCP, error) {
	if s == nil {
		return nil, nil
	}
	if n.Mode == ModeBridge || n.Mode == ModeRoute || !n.Subnet.IsValid() {
		return nil, fmt.Errorf("%s: DHCP needs a network brouter addresses (mode nat, routed or isolated), not mode %q", key, n.Mode)
	}
	d := &DHCP{LeaseTime: time.Hour}
	sub := n.Subnet
	inSubnet := func(k, v string) (netip.Addr, error) {
		a, err := netip.ParseAddr(v)
		if err != nil || !a.Is4() {
			return a, fmt.Errorf("%s.%s = %q: want an IPv4 address in %s", key, k, v, sub)
		}
		if !sub.Contains(a) || a == sub.Addr() || a == lastAddr(sub) {
			return a, fmt.Errorf("%s.%s = %q: not a host address of the network %s", key, k, v, sub)
		}
		if a == n.Gateway.Addr() {
			return a, fmt.Errorf("%s.%s = %q: that is the gateway's own address", key, k, v)
		}
		return a, nil
	}
	// Default range: the upper half of the network, leaving the lower half
	// (gateway included) for static addresses.
	d.RangeStart, d.RangeEnd = defaultRange(sub)
	var err error
	if s.RangeStart != nil {
		if d.RangeStart, err = inSubnet("range_start", *s.RangeStart); err != nil {
			return nil, err
		}
	}
	if s.RangeEnd != nil {
		if d.RangeEnd, err = inSubnet("range_end", *s.RangeEnd); err != nil {
			return nil, err
		}
	}
	if d.RangeEnd.Less(d.RangeStart) {
		return nil, fmt.Errorf("%s: range_end %s is before range_start %s", key, d.RangeEnd, d.RangeStart)
	}
	if gw := n.Gateway.Addr(); !gw.Less(d.RangeStart) && !d.RangeEnd.Less(gw) {
		return nil, fmt.Errorf("%s: the range %s-%s contains the gateway's own address %s", key, d.RangeStart, d.RangeEnd, gw)
	}
	if s.LeaseTime != nil {
		lt, err := time.ParseDuration(*s.LeaseTime)
		if err != nil || lt < 2*time.Minute || lt > 365*24*time.Hour {
			return nil, fmt.Errorf("%s.lease_time = %q: want a duration from \"2m\" to \"8760h\", e.g. \"1h\"", key, *s.LeaseTime)
		}
		d.LeaseTime = lt
	}
	if s.Domain != nil && *s.Domain != "" {
		if !names.Domain(*s.Domain) {
			return nil, fmt.Errorf("%s.domain = %q: want a DNS domain such as \"lab.internal\"", key, *s.Domain)
		}
		d.Domain = strings.ToLower(*s.Domain)
	}
	for i, u := range s.Upstream {
		a, err := netip.ParseAddr(u)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%s.upstream[%d] = %q: want an IP address", key, i, u)
		}
		d.Upstream = append(d.Upstream, a)
	}
	seenMAC, seenIP, seenName := map[string]bool{}, map[netip.Addr]bool{}, map[string]bool{}
	for i, h := range s.Host {
		hk := fmt.Sprintf("%s.host[%d]", key, i)
		host, err := validateHost(hk, fmt.Sprintf("host[%d]", i), h, n, inSubnet)
		if err != nil {
			return nil, err
		}
		switch {
		case seenMAC[host.MAC.String()]:
			return nil, fmt.Errorf("%s.mac = %q: listed twice", hk, *h.MAC)
		case host.IP.IsValid() && seenIP[host.IP]:
			return nil, fmt.Errorf("%s.ip = %q: listed twice", hk, *h.IP)
		case host.IP6.IsValid() && seenIP[host.IP6]:
			return nil, fmt.Errorf("%s.ip6 = %q: listed twice", hk, *h.IP6)
		case host.Name != "" && seenName[host.Name]:
			return nil, fmt.Errorf("%s.name = %q: listed twice", hk, host.Name)
		}
		seenMAC[host.MAC.String()], seenIP[host.IP], seenIP[host.IP6], seenName[host.Name] = true, true, true, host.Name != ""
		d.Hosts = append(d.Hosts, host)
	}
	return d, nil
}

// validateHost checks one [[network.NAME.dhcp.host]] (hk its key, rel the
// part after the table's): a MAC and an ip
// (IPv4, in the subnet) or an ip6 (in address6's prefix), or both.
func validateHost(hk, rel string, h DHCPHostSpec, n *Network, inSubnet func(k, v string) (netip.Addr, error)) (DHCPHost, error) {
	if h.MAC == nil || h.IP == nil && h.IP6 == nil {
		return DHCPHost{}, fmt.Errorf("%s: needs mac and ip (or ip6)", hk)
	}
	mac, err := parseMAC(*h.MAC)
	if err != nil {
		return DHCPHost{}, fmt.Errorf("%s.mac = %q: %w", hk, *h.MAC, err)
	}
	host := DHCPHost{MAC: mac}
	if h.IP != nil {
		if host.IP, err = inSubnet(rel+".ip", *h.IP); err != nil {
			return DHCPHost{}, err
		}
	}
	if h.IP6 != nil {
		a, err := netip.ParseAddr(*h.IP6)
		sub := n.Subnet6
		switch {
		case !sub.IsValid():
			return DHCPHost{}, fmt.Errorf("%s.ip6 = %q: the network has no IPv6 prefix; set address6", hk, *h.IP6)
		case err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "" || !sub.Contains(a) || a == sub.Addr():
			return DHCPHost{}, fmt.Errorf("%s.ip6 = %q: want a host address of the network's prefix %s", hk, *h.IP6, sub)
		case a == n.Gateway6.Addr():
			return DHCPHost{}, fmt.Errorf("%s.ip6 = %q: that is the gateway's own address", hk, *h.IP6)
		}
		host.IP6 = a
	}
	if h.Name != nil {
		if !names.Hostname(*h.Name) {
			return DHCPHost{}, fmt.Errorf("%s.name = %q: want a host name (letters, digits, '-', at most 63)", hk, *h.Name)
		}
		host.Name = strings.ToLower(*h.Name)
	}
	return host, nil
}

func parseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil || len(mac) != 6 || mac[0]&1 == 1 {
		return nil, fmt.Errorf("want a unicast MAC address like 00:16:3e:12:34:56")
	}
	return mac, nil
}

func defaultRange(sub netip.Prefix) (netip.Addr, netip.Addr) {
	last := lastAddr(sub)
	size := uint32(1) << (32 - sub.Bits())
	start := addU32(sub.Addr(), size/2)
	if size <= 4 {
		start = addU32(sub.Addr(), 1)
	}
	return start, addU32(last, ^uint32(0)) // last - 1
}

func lastAddr(p netip.Prefix) netip.Addr {
	return addU32(p.Masked().Addr(), (uint32(1)<<(32-p.Bits()))-1)
}

func addU32(a netip.Addr, d uint32) netip.Addr {
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += d
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
