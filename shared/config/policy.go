package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Network policy: what a network's guests may do beyond its mode's
// defaults, and what may reach them. The keys sit in [network.NAME] itself
// (PolicySpec is embedded in NetworkSpec) and in its forward, incoming and
// outgoing tables. vnet turns a Policy into firewall rules and port flags.

// MaxForwardRange bounds a forward's host_port range: each port of a range
// is one element (nftables) or rule (iptables) and one host-wide claim.
const MaxForwardRange = 1024

// Host access values.
const (
	HostAccessAll      = "all"
	HostAccessServices = "services"
)

// PolicySpec is the policy part of a [network.NAME] table, as written.
type PolicySpec struct {
	IsolateGuests *bool         `toml:"isolate_guests"`
	HostAccess    *string       `toml:"host_access"`
	HostServices  []string      `toml:"host_services"`
	Reach         []string      `toml:"reach"`
	Forward       []ForwardSpec `toml:"forward"`
	Incoming      *FilterSpec   `toml:"incoming"`
	Outgoing      *FilterSpec   `toml:"outgoing"`
}

// ForwardSpec is one [[network.NAME.forward]].
type ForwardSpec struct {
	Proto     *string    `toml:"proto"`
	HostPort  *portValue `toml:"host_port"`
	HostIP    *string    `toml:"host_ip"`
	Guest     *string    `toml:"guest"`
	GuestPort *portValue `toml:"guest_port"`
}

// FilterSpec is [network.NAME.incoming] or [network.NAME.outgoing].
type FilterSpec struct {
	Default *string     `toml:"default"`
	Allow   []MatchSpec `toml:"allow"`
	Deny    []MatchSpec `toml:"deny"`
}

// MatchSpec is one [[network.NAME.incoming.allow]] (or .deny, or outgoing's).
type MatchSpec struct {
	Proto *string    `toml:"proto"`
	Port  *portValue `toml:"port"`
	From  stringList `toml:"from"`
	To    stringList `toml:"to"`
}

// portValue is a port as written: 22, "22" or "8000-8010".
type portValue struct{ s string }

func (p *portValue) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case int64:
		p.s = strconv.FormatInt(x, 10)
	case string:
		p.s = x
	default:
		return fmt.Errorf("want a port such as 22 or \"8000-8010\", not %v", v)
	}
	return nil
}

// stringList is a list of strings that may be written as one string.
type stringList []string

func (l *stringList) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case string:
		*l = []string{x}
	case []any:
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return fmt.Errorf("want a list of addresses or networks, such as [\"192.0.2.0/24\"]")
			}
			*l = append(*l, s)
		}
	default:
		return fmt.Errorf("want a list of addresses or networks, such as [\"192.0.2.0/24\"]")
	}
	return nil
}

// PortRange is an inclusive range of ports; Lo == Hi for one port, zero for none.
type PortRange struct{ Lo, Hi uint16 }

// IsZero reports whether the range is unset (any port).
func (r PortRange) IsZero() bool { return r.Lo == 0 }

// Size is the number of ports in the range.
func (r PortRange) Size() int { return int(r.Hi) - int(r.Lo) + 1 }

func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// Policy is a network's validated policy.
type Policy struct {
	// IsolateGuests: every guest port gets the bridge port flag "isolated":
	// guests reach the gateway and beyond, not each other.
	IsolateGuests bool
	// HostAccess is HostAccessAll (default) or HostAccessServices: from the
	// guests the host then accepts only DHCP, DNS, IPv6 neighbour discovery
	// and HostServices.
	HostAccess   string
	HostServices []Match // Proto and Ports only
	// Reach lists the other networks whose guests this network's guests may
	// open connections to (validated against the whole config by Parse).
	Reach []string
	// Forwards are inbound port forwards (DNAT) to guests.
	Forwards []Forward
	// Incoming: new connections from outside toward the guests (routed
	// traffic; forwards are not filtered). Outgoing: connections the
	// guests open toward anything outside the network.
	Incoming, Outgoing Filter
}

// Forward is one validated [[network.NAME.forward]].
type Forward struct {
	Proto     string     // tcp, udp, sctp
	HostIP    netip.Addr // invalid: every host address of GuestIP's family
	HostPorts PortRange
	GuestIP   netip.Addr
	GuestPort uint16 // the first port of the target range
	Guest     string // as written: an address or a [[network.NAME.dhcp.host]] name
}

// Filter is an ordered list of rules and a default. Rules are in the order
// they apply: the exceptions (those whose verdict is the default's) first,
// then the others; the first match decides.
type Filter struct {
	Deny  bool // default deny
	Rules []Match
}

// IsZero reports whether the filter lets everything through (default allow, no rules).
func (f Filter) IsZero() bool { return !f.Deny && len(f.Rules) == 0 }

// Match is one allow or deny rule; an unset field matches anything.
type Match struct {
	Allow bool
	Proto string // tcp, udp, sctp, icmp; "" any
	Ports PortRange
	From  []netip.Prefix
	To    []netip.Prefix
}

var forwardProtos = []string{"tcp", "udp", "sctp"}

func (s *PolicySpec) validate(key func(string) string, n *Network) (Policy, error) {
	p := Policy{HostAccess: HostAccessAll}
	if s.IsolateGuests != nil && *s.IsolateGuests {
		if n.Mode == ModeRoute {
			return p, fmt.Errorf("%s: mode \"route\" has no bridge, every guest has a port of its own already; remove the key", key("isolate_guests"))
		}
		p.IsolateGuests = true
	}
	if s.HostAccess != nil {
		switch *s.HostAccess {
		case HostAccessAll, HostAccessServices:
			p.HostAccess = *s.HostAccess
		default:
			return p, fmt.Errorf("%s = %q: want \"all\" or \"services\"", key("host_access"), *s.HostAccess)
		}
		if p.HostAccess == HostAccessServices && n.Mode == ModeBridge {
			return p, fmt.Errorf("%s: mode \"bridge\" is not routed by brouter; host_access needs mode nat, routed, isolated or route", key("host_access"))
		}
	}
	if len(s.HostServices) > 0 && p.HostAccess != HostAccessServices {
		return p, fmt.Errorf("%s: only with host_access = \"services\" (with \"all\" the host accepts everything)", key("host_services"))
	}
	for i, v := range s.HostServices {
		m, err := parseService(v)
		if err != nil {
			return p, fmt.Errorf("%s[%d] = %q: %w", key("host_services"), i, v, err)
		}
		p.HostServices = append(p.HostServices, m)
	}
	if len(s.Reach) > 0 && n.Mode == ModeBridge {
		return p, fmt.Errorf("%s: mode \"bridge\" is not routed by brouter; reach needs mode nat, routed, isolated or route", key("reach"))
	}
	seen := map[string]bool{}
	for i, r := range s.Reach {
		if r == n.Name {
			return p, fmt.Errorf("%s[%d] = %q: a network's guests always reach each other; name other networks", key("reach"), i, r)
		}
		if seen[r] {
			return p, fmt.Errorf("%s[%d] = %q: listed twice", key("reach"), i, r)
		}
		seen[r] = true
		p.Reach = append(p.Reach, r)
	}
	var err error
	if p.Forwards, err = validateForwardSpecs(key("forward"), s.Forward, n); err != nil {
		return p, err
	}
	if p.Incoming, err = s.Incoming.validate(key("incoming"), n, false); err != nil {
		return p, err
	}
	if p.Outgoing, err = s.Outgoing.validate(key("outgoing"), n, true); err != nil {
		return p, err
	}
	return p, nil
}

// parseService reads "tcp/22", "udp/5000-5010" or "icmp" (echo requests).
func parseService(v string) (Match, error) {
	proto, port, hasPort := strings.Cut(v, "/")
	m := Match{Allow: true, Proto: proto}
	switch {
	case proto == "icmp" && !hasPort:
		return m, nil
	case !hasPort || !contains(forwardProtos, proto):
		return m, fmt.Errorf("want \"PROTO/PORT\" or \"PROTO/LOW-HIGH\" with PROTO tcp, udp or sctp (e.g. \"tcp/22\"), or \"icmp\" for ping")
	}
	r, err := parsePortRange(port)
	if err != nil {
		return m, err
	}
	m.Ports = r
	return m, nil
}

// parsePortRange reads "22" or "8000-8010".
func parsePortRange(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	var r PortRange
	var err error
	if r.Lo, err = parsePort(lo); err != nil {
		return r, err
	}
	r.Hi = r.Lo
	if isRange {
		if r.Hi, err = parsePort(hi); err != nil {
			return r, err
		}
		if r.Hi < r.Lo {
			return r, fmt.Errorf("range %s ends before it starts", s)
		}
	}
	return r, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("port %q: want 1..65535", s)
	}
	return uint16(n), nil
}

func validateForwardSpecs(key string, specs []ForwardSpec, n *Network) ([]Forward, error) {
	if len(specs) > 0 && (n.Mode == ModeBridge || n.Mode == ModeRoute || !n.Gateway.IsValid()) {
		return nil, fmt.Errorf("%s: forwards need a network with a bridge and a gateway brouter routes for (mode nat, routed or isolated), not mode %q", key, n.Mode)
	}
	var out []Forward
	taken := map[forwardKey]int{}
	for i, s := range specs {
		fk := fmt.Sprintf("%s[%d]", key, i)
		f, err := s.validate(fk, n)
		if err != nil {
			return nil, err
		}
		for _, k := range f.keys() {
			if j, dup := taken[k]; dup {
				return nil, fmt.Errorf("%s: host port %s %d overlaps %s[%d]", fk, f.Proto, k.port, key, j)
			}
			taken[k] = i
		}
		out = append(out, f)
	}
	return out, nil
}

func (s ForwardSpec) validate(fk string, n *Network) (Forward, error) {
	f := Forward{Proto: "tcp"}
	if s.Proto != nil {
		if !contains(forwardProtos, *s.Proto) {
			return f, fmt.Errorf("%s.proto = %q: want tcp, udp or sctp", fk, *s.Proto)
		}
		f.Proto = *s.Proto
	}
	if s.HostPort == nil {
		return f, fmt.Errorf("%s: needs host_port (a port such as \"2222\" or a range \"8000-8010\")", fk)
	}
	var err error
	if f.HostPorts, err = parsePortRange(s.HostPort.s); err != nil {
		return f, fmt.Errorf("%s.host_port = %q: %w", fk, s.HostPort.s, err)
	}
	if f.HostPorts.Size() > MaxForwardRange {
		return f, fmt.Errorf("%s.host_port = %q: at most %d ports per forward", fk, s.HostPort.s, MaxForwardRange)
	}
	if s.Guest == nil || *s.Guest == "" {
		return f, fmt.Errorf("%s: needs guest (an address of network %s or the name of one of its [[network.%s.dhcp.host]])", fk, n.Name, n.Name)
	}
	f.Guest = *s.Guest
	if f.GuestIP, err = forwardGuest(n, *s.Guest); err != nil {
		return f, fmt.Errorf("%s.guest = %q: %w", fk, *s.Guest, err)
	}
	f.GuestPort = f.HostPorts.Lo
	if s.GuestPort != nil {
		r, err := parsePortRange(s.GuestPort.s)
		if err == nil && r.Size() != 1 && r.Size() != f.HostPorts.Size() {
			err = fmt.Errorf("a range must have as many ports as host_port %s", f.HostPorts)
		}
		if err != nil {
			return f, fmt.Errorf("%s.guest_port = %q: %w", fk, s.GuestPort.s, err)
		}
		f.GuestPort = r.Lo
	}
	if int(f.GuestPort)+f.HostPorts.Size()-1 > 65535 {
		return f, fmt.Errorf("%s.guest_port = %d: the target range passes port 65535", fk, f.GuestPort)
	}
	if s.HostIP != nil && *s.HostIP != "" {
		if f.HostIP, err = forwardHostIP(*s.HostIP, f.GuestIP); err != nil {
			return f, fmt.Errorf("%s.host_ip = %q: %w", fk, *s.HostIP, err)
		}
	}
	return f, nil
}

// forwardGuest resolves a forward's guest: an address of the network, or the
// name of one of its DHCP hosts.
func forwardGuest(n *Network, g string) (netip.Addr, error) {
	a, err := netip.ParseAddr(g)
	if err != nil {
		if n.DHCP != nil {
			for _, h := range n.DHCP.Hosts {
				if h.Name != "" && h.Name == strings.ToLower(g) {
					return h.IP, nil
				}
			}
		}
		return a, fmt.Errorf("not an address, nor the name of a [[network.%s.dhcp.host]]", n.Name)
	}
	if a.Zone() != "" || a.Is4In6() {
		return a, fmt.Errorf("want a plain IPv4 or IPv6 address")
	}
	for _, gw := range []netip.Prefix{n.Gateway, n.Gateway6} {
		if !gw.IsValid() || !gw.Masked().Contains(a) {
			continue
		}
		if a == gw.Addr() || a == gw.Masked().Addr() || a.Is4() && a == lastAddr(gw.Masked()) {
			return a, fmt.Errorf("the gateway, network or broadcast address of %s is not a guest's", gw.Masked())
		}
		return a, nil
	}
	return a, fmt.Errorf("outside network %s's subnets (%s)", n.Name, joinPrefixes(n.Subnets()))
}

func forwardHostIP(s string, guest netip.Addr) (netip.Addr, error) {
	h, err := netip.ParseAddr(s)
	switch {
	case err != nil || h.Zone() != "" || h.Is4In6():
		return h, fmt.Errorf("want one IPv4 or IPv6 address of the host")
	case h.Is4() != guest.Is4():
		return h, fmt.Errorf("not of the guest %s's family", guest)
	case h.IsUnspecified():
		return h, fmt.Errorf("leave host_ip out to forward on every host address")
	case h.Is6() && h.IsLoopback():
		return h, fmt.Errorf("::1 cannot be forwarded (IPv6 has no route_localnet: the kernel drops the answers); use 127.0.0.1 or a host address")
	case h.Is4() && h.IsLoopback(), h.IsGlobalUnicast():
		return h, nil
	}
	return h, fmt.Errorf("not a unicast address")
}

// forwardKey is what a forward takes on the host, per port (as the
// firewall's published ports: a specific host address and "every address"
// are different keys; the specific one wins).
type forwardKey struct {
	proto string
	four  bool
	host  netip.Addr
	port  uint16
}

func (f Forward) keys() []forwardKey {
	var out []forwardKey
	for p := int(f.HostPorts.Lo); p <= int(f.HostPorts.Hi); p++ {
		out = append(out, forwardKey{f.Proto, f.GuestIP.Is4(), f.HostIP, uint16(p)})
	}
	return out
}

func (s *FilterSpec) validate(key string, n *Network, outgoing bool) (Filter, error) {
	var f Filter
	if s == nil {
		return f, nil
	}
	switch {
	case n.Mode == ModeBridge:
		return f, fmt.Errorf("%s: mode \"bridge\" is not routed by brouter; remove the table", key)
	case !outgoing && n.Mode == ModeIsolated:
		return f, fmt.Errorf("%s: mode \"isolated\" lets nothing in but forwards and networks that reach it; remove the table", key)
	}
	if s.Default != nil {
		switch *s.Default {
		case "allow":
		case "deny":
			f.Deny = true
		default:
			return f, fmt.Errorf("%s.default = %q: want \"allow\" or \"deny\"", key, *s.Default)
		}
	}
	// Exceptions first: the rules with the default's verdict, then the others.
	lists := []struct {
		name  string
		allow bool
		specs []MatchSpec
	}{{"allow", true, s.Allow}, {"deny", false, s.Deny}}
	if f.Deny {
		lists[0], lists[1] = lists[1], lists[0]
	}
	for _, l := range lists {
		for i, ms := range l.specs {
			m, err := ms.validate(fmt.Sprintf("%s.%s[%d]", key, l.name, i), n, outgoing)
			if err != nil {
				return f, err
			}
			m.Allow = l.allow
			f.Rules = append(f.Rules, m)
		}
	}
	return f, nil
}

func (s MatchSpec) validate(key string, n *Network, outgoing bool) (Match, error) {
	var m Match
	if s.Proto != nil {
		if *s.Proto != "icmp" && !contains(forwardProtos, *s.Proto) {
			return m, fmt.Errorf("%s.proto = %q: want tcp, udp, sctp or icmp (ICMP or ICMPv6 by the addresses' family)", key, *s.Proto)
		}
		m.Proto = *s.Proto
	}
	if s.Port != nil {
		if m.Proto == "icmp" {
			return m, fmt.Errorf("%s.port: ICMP has no ports", key)
		}
		r, err := parsePortRange(s.Port.s)
		if err != nil {
			return m, fmt.Errorf("%s.port = %q: %w", key, s.Port.s, err)
		}
		m.Ports = r
	}
	guests := "to" // incoming: toward guests; outgoing: from them
	if outgoing {
		guests = "from"
	}
	var err error
	lists := map[string]*[]netip.Prefix{"from": &m.From, "to": &m.To}
	raw := map[string][]string{"from": s.From, "to": s.To}
	for _, k := range []string{"from", "to"} {
		if *lists[k], err = parsePrefixes(key+"."+k, raw[k]); err != nil {
			return m, err
		}
	}
	for i, p := range *lists[guests] {
		if !inSubnets(n, p) {
			return m, fmt.Errorf("%s.%s[%d] = %q: not guests of network %s (%s)", key, guests, i, raw[guests][i], n.Name, joinPrefixes(n.Subnets()))
		}
	}
	if !m.matchesAFamily() {
		return m, fmt.Errorf("%s: from and to are of different IP families: the rule matches nothing", key)
	}
	return m, nil
}

// matchesAFamily reports whether some IP family satisfies both address lists.
func (m Match) matchesAFamily() bool {
	for _, four := range []bool{true, false} {
		if hasFamily(m.From, four) && hasFamily(m.To, four) {
			return true
		}
	}
	return false
}

// hasFamily: the list is empty (any address) or has a prefix of the family.
func hasFamily(l []netip.Prefix, four bool) bool {
	if len(l) == 0 {
		return true
	}
	for _, p := range l {
		if p.Addr().Is4() == four {
			return true
		}
	}
	return false
}

func parsePrefixes(key string, l []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, s := range l {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				return nil, fmt.Errorf("%s[%d] = %q: want an address or a network such as \"192.0.2.0/24\"", key, i, s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		switch {
		case p.Addr().Zone() != "" || p.Addr().Is4In6():
			return nil, fmt.Errorf("%s[%d] = %q: want a plain IPv4 or IPv6 address or network", key, i, s)
		case p != p.Masked():
			return nil, fmt.Errorf("%s[%d] = %q: host bits set; the network is %s (or write the address alone)", key, i, s, p.Masked())
		}
		out = append(out, p)
	}
	return out, nil
}

// inSubnets reports whether p lies within one of the network's subnets.
func inSubnets(n *Network, p netip.Prefix) bool {
	for _, s := range n.Subnets() {
		if s.Addr().BitLen() == p.Addr().BitLen() && s.Bits() <= p.Bits() && s.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

func joinPrefixes(l []netip.Prefix) string {
	if len(l) == 0 {
		return "none"
	}
	s := make([]string, len(l))
	for i, p := range l {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

func contains(l []string, v string) bool {
	for _, x := range l {
		if x == v {
			return true
		}
	}
	return false
}

// validatePolicies checks what needs the whole config: reach names
// networks brouter routes for, and no two forwards take the same host port.
func validatePolicies(c *Config) error {
	taken := map[forwardKey]string{}
	for _, name := range sortedKeys(c.Networks) {
		n := c.Networks[name]
		for i, r := range n.Policy.Reach {
			o, ok := c.Networks[r]
			switch {
			case !ok:
				return fmt.Errorf("network.%s.reach[%d] = %q: no [network.%s] table (have: %s)", name, i, r, r, strings.Join(sortedKeys(c.Networks), ", "))
			case o.Mode == ModeBridge:
				return fmt.Errorf("network.%s.reach[%d] = %q: that network is in mode \"bridge\", which brouter does not route (its guests are on the LAN, reached like any outside host)", name, i, r)
			}
		}
		for i, f := range n.Policy.Forwards {
			for _, k := range f.keys() {
				if other, dup := taken[k]; dup && other != name {
					return fmt.Errorf("network.%s.forward[%d]: host port %s %d is forwarded by network.%s too", name, i, f.Proto, k.port, other)
				}
				taken[k] = name
			}
		}
	}
	return nil
}
