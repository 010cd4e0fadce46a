package firewall

import (
	"slices"
	"strings"
	"testing"
)

// policyNet is a nat network with every kind of policy: peers it reaches
// or not (one of them without a bridge, mode route), an outgoing filter,
// an incoming filter (IPv6 is routed in nat mode) and host services.
func policyNet() NetworkRules {
	r := NetworkRules{Network: "lab", Bridge: "brlab", Subnets: prefixes("10.7.0.0/24", "fd00:7::/64"), Forward: true, Masquerade: true, Services: true}
	r.Policy = Policy{
		HostServicesOnly: true,
		HostServices:     []Match{{Allow: true, Proto: "tcp", PortLo: 22, PortHi: 22}, {Allow: true, Proto: "udp", PortLo: 5000, PortHi: 5010}, {Allow: true, Proto: "icmp"}},
		Peers: []Peer{
			{Network: "dmz", Bridge: "brdmz", Subnets: prefixes("10.8.0.0/24", "fd00:8::/64"), Reach: true},
			{Network: "other", Bridge: "brother", Subnets: prefixes("10.9.0.0/24", "fd00:9::/64"), Reached: true},
			{Network: "routed", Subnets: prefixes("10.10.0.0/24")},
		},
		Outgoing: Filter{Rules: []Match{
			{Allow: true, Proto: "tcp", PortLo: 25, PortHi: 25, From: prefixes("10.7.0.25/32")},
			{Proto: "tcp", PortLo: 25, PortHi: 25},
			{To: prefixes("198.51.100.0/24", "2001:db8::/32")},
		}},
		Incoming: Filter{Deny: true, Rules: []Match{{Allow: true, Proto: "tcp", PortLo: 443, PortHi: 443}}},
	}
	return r
}

func TestPlanPolicy(t *testing.T) {
	r := policyNet()
	if err := r.validate(); err != nil {
		t.Fatal(err)
	}
	got := nftLines(r)
	want := []string{
		// From the guests: replies, then reach, then the outgoing filter.
		`forward: iifname "brlab" ct state established,related accept`,
		`forward: iifname "brlab" ct status != dnat ip daddr { 10.9.0.0/24, 10.10.0.0/24 } drop`,
		`forward: iifname "brlab" ct status != dnat ip6 daddr fd00:9::/64 drop`,
		`forward: iifname "brlab" jump outgoing`,
		`forward: iifname "brlab" oifname != "brlab" accept`,
		// Toward the guests: replies, forwards, networks that reach this one, then the incoming filter.
		`forward: oifname "brlab" ct state established,related accept`,
		`forward: oifname "brlab" ct status dnat accept`,
		`forward: iifname "brother" oifname "brlab" accept`,
		`forward: iifname "brdmz" oifname "brlab" drop`,
		`forward: oifname "brlab" ip saddr 10.10.0.0/24 drop`,
		`forward: oifname "brlab" ip6 daddr fd00:7::/64 jump incoming`,
		`forward: oifname "brlab" ip6 daddr fd00:7::/64 accept`,
		`outgoing: ip saddr 10.7.0.25/32 tcp dport 25 return`,
		`outgoing: tcp dport 25 drop`,
		`outgoing: ip daddr 198.51.100.0/24 drop`,
		`outgoing: ip6 daddr 2001:db8::/32 drop`,
		`incoming: tcp dport 443 return`,
		`incoming: drop`,
		// No masquerade toward other networks.
		`postrouting: ip saddr 10.7.0.0/24 ip daddr { 10.8.0.0/24, 10.9.0.0/24, 10.10.0.0/24 } return`,
		// Host access: replies, DHCP/DNS (Services), DHCPv6, ND, services, drop.
		`input: iifname "brlab" udp dport 67 accept`,
		`input: iifname "brlab" ct state established,related accept`,
		`input: iifname "brlab" udp dport 547 accept`,
		`input: iifname "brlab" icmpv6 type { 133, 135, 136, 131, 143 } accept`,
		`input: iifname "brlab" tcp dport 22 accept`,
		`input: iifname "brlab" udp dport 5000-5010 accept`,
		`input: iifname "brlab" icmp type 8 accept`,
		`input: iifname "brlab" icmpv6 type 128 accept`,
		`input: iifname "brlab" drop`,
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("missing %q in\n%s", w, strings.Join(got, "\n"))
		}
	}
	// Order within a chain matters: each of these comes before the next.
	order := [][]string{
		{`forward: iifname "brlab" ct state established,related accept`, `forward: iifname "brlab" ct status != dnat ip daddr { 10.9.0.0/24, 10.10.0.0/24 } drop`,
			`forward: iifname "brlab" jump outgoing`, `forward: iifname "brlab" oifname != "brlab" accept`, `forward: iifname "brlab" drop`},
		{`forward: oifname "brlab" ct status dnat accept`, `forward: iifname "brother" oifname "brlab" accept`, `forward: iifname "brdmz" oifname "brlab" drop`,
			`forward: oifname "brlab" ip6 daddr fd00:7::/64 jump incoming`, `forward: oifname "brlab" drop`},
		{`postrouting: ip saddr 10.7.0.0/24 ip daddr { 10.8.0.0/24, 10.9.0.0/24, 10.10.0.0/24 } return`, `postrouting: oifname != "brlab" ip saddr 10.7.0.0/24 ip daddr != 10.7.0.0/24 masquerade`},
		{`input: iifname "brlab" tcp dport 53 accept`, `input: iifname "brlab" tcp dport 22 accept`, `input: iifname "brlab" drop`},
		{`outgoing: ip saddr 10.7.0.25/32 tcp dport 25 return`, `outgoing: tcp dport 25 drop`},
	}
	for _, o := range order {
		prev := -1
		for _, l := range o {
			i := slices.Index(got, l)
			if i < prev {
				t.Errorf("%q comes before the rule it must follow", l)
			}
			prev = i
		}
	}
	for _, l := range got {
		if strings.Contains(l, "nd-router-advert") || strings.Contains(l, " 134") {
			t.Errorf("router advertisements from guests accepted: %q", l)
		}
	}

	// The same plan for iptables: a filter chain per role, jumped by name.
	v4, v6 := &iptFamily{family: 4}, &iptFamily{family: 6}
	rules := plan(r)
	join := func(specs [][]string) string {
		var out []string
		for _, s := range specs {
			out = append(out, strings.Join(s, " "))
		}
		return strings.Join(out, "\n")
	}
	mustContain(t, join(v4.specs("lab", rules, chainForward, false)),
		"-i brlab -d 10.9.0.0/24 -m conntrack ! --ctstate DNAT -j DROP",
		"-i brlab -d 10.10.0.0/24 -m conntrack ! --ctstate DNAT -j DROP",
		"-i brlab -j BR-OUT-lab",
		"-i brother -o brlab -j ACCEPT",
		"-o brlab -s 10.10.0.0/24 -j DROP")
	mustContain(t, join(v6.specs("lab", rules, chainForward, false)),
		"-o brlab -d fd00:7::/64 -j BR-INC-lab")
	mustContain(t, join(v4.specs("lab", rules, chainOutgoing, false)),
		"-s 10.7.0.25/32 -p tcp -m tcp --dport 25 -j RETURN", "-p tcp -m tcp --dport 25 -j DROP", "-d 198.51.100.0/24 -j DROP")
	mustContain(t, join(v6.specs("lab", rules, chainInput, false)),
		"-i brlab -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT", "-i brlab -p udp -m udp --dport 5000:5010 -j ACCEPT",
		"-i brlab -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j ACCEPT")
	if s := join(v4.specs("lab", rules, chainInput, false)); strings.Contains(s, "icmp6") || strings.Contains(s, "547") {
		t.Errorf("IPv6-only input rules rendered for iptables:\n%s", s)
	}
	if s := join(v4.specs("lab", rules, chainForward, true)); strings.Contains(s, "BR-OUT") || strings.Contains(s, "DROP") {
		t.Errorf("Docker compatibility (accepts only) has a jump or a drop:\n%s", s)
	}
}

// With no policy the plan is the mode's alone: a network without peers
// gets no extra rule.
func TestPlanNoPolicy(t *testing.T) {
	for _, r := range []NetworkRules{natNet(), {Network: "lab", Subnets: prefixes("10.7.0.0/24"), Forward: true}} {
		for _, l := range nftLines(r) {
			if strings.Contains(l, "jump") || strings.Contains(l, "!= dnat") || strings.HasPrefix(l, "input:") {
				t.Errorf("policy rule without a policy: %q", l)
			}
		}
	}
}

func TestPlanPolicyRouteAndIsolated(t *testing.T) {
	peers := []Peer{{Network: "lab", Bridge: "brlab", Subnets: prefixes("10.7.0.0/24"), Reach: true, Reached: true},
		{Network: "x", Bridge: "brx", Subnets: prefixes("10.1.0.0/16", "10.1.2.0/24")}}
	route := NetworkRules{Network: "rt", Subnets: prefixes("10.99.0.0/24"), Forward: true, Uplink: "eth0",
		Policy: Policy{Peers: peers, HostServicesOnly: true, Incoming: Filter{Deny: true}}}
	if err := route.validate(); err != nil {
		t.Fatal(err)
	}
	got := nftLines(route)
	for _, w := range []string{
		`forward: ip saddr 10.99.0.0/24 ip daddr 10.99.0.0/24 accept`,
		`forward: ct state established,related ip saddr 10.99.0.0/24 accept`,
		`forward: ct status != dnat ip saddr 10.99.0.0/24 ip daddr 10.1.0.0/16 drop`,
		`forward: ip saddr 10.99.0.0/24 ip daddr 10.7.0.0/24 accept`,
		`forward: ct state established,related ip daddr 10.99.0.0/24 accept`,
		`forward: iifname "brlab" ip daddr 10.99.0.0/24 accept`,
		`forward: iifname "brx" ip daddr 10.99.0.0/24 drop`,
		`forward: iifname "eth0" ip daddr 10.99.0.0/24 jump incoming`,
		`incoming: drop`,
		`input: ct state established,related ip saddr 10.99.0.0/24 accept`,
		`input: ip saddr 10.99.0.0/24 drop`,
	} {
		if !slices.Contains(got, w) {
			t.Errorf("route: missing %q in\n%s", w, strings.Join(got, "\n"))
		}
	}
	iso := NetworkRules{Network: "iso", Bridge: "briso", Subnets: prefixes("10.5.0.0/24"), Policy: Policy{Peers: peers}}
	got = nftLines(iso)
	for _, w := range []string{
		`forward: iifname "briso" ip daddr 10.7.0.0/24 accept`,
		`forward: iifname "brlab" oifname "briso" accept`,
		`forward: oifname "briso" ct status dnat accept`,
		`forward: oifname "briso" drop`,
	} {
		if !slices.Contains(got, w) {
			t.Errorf("isolated: missing %q in\n%s", w, strings.Join(got, "\n"))
		}
	}
	if slices.Contains(got, `forward: iifname "brx" oifname "briso" drop`) {
		t.Errorf("isolated: a redundant drop before the drop of everything")
	}
}

func TestPolicyValidate(t *testing.T) {
	bad := []Policy{
		{HostServices: []Match{{Proto: "gre"}}},
		{HostServices: []Match{{Proto: "icmp", PortLo: 1, PortHi: 1}}},
		{Outgoing: Filter{Rules: []Match{{Proto: "tcp", PortLo: 10, PortHi: 5}}}},
		{Incoming: Filter{Rules: []Match{{From: prefixes("10.0.0.1/8")}}}},
		{Peers: []Peer{{Network: "a b", Bridge: "br"}}},
		{Peers: []Peer{{Network: "x", Bridge: `b"r`}}},
		{Peers: []Peer{{Network: "x"}}},
	}
	for _, p := range bad {
		r := natNet()
		r.Policy = p
		if err := r.validate(); err == nil || !strings.HasPrefix(err.Error(), "firewall: ") {
			t.Errorf("validate(%+v) = %v, want a firewall: error", p, err)
		}
	}
}
