package firewall

import (
	"net/netip"
	"strconv"
	"strings"
)

// The policy of a network is computed once, by plan, as a backend-neutral list
// of rules; each backend only renders it (nftRule, iptRule). That keeps the
// nftables, iptables and Docker-compatibility rules identical in meaning, and
// lets unit tests check rule generation without root.
//
// Growth: per-guest data (antispoof MAC/IP pairs, published ports) lives in
// tables of its own, in nft sets and maps keyed by port name or host port
// (nftables_ports.go, nftables_forwards.go) referenced by a fixed number of
// rules, so attaching a guest adds elements, never rules. In iptables, which
// has no sets, it is one small chain per port.

// Chains of a network, by role. Backends map them to their own names.
const (
	chainForward     = "forward"     // filter, hook forward
	chainPostrouting = "postrouting" // nat, hook postrouting
	chainInput       = "input"       // filter, hook input
	chainPrerouting  = "prerouting"  // filter, hook prerouting, before conntrack and routing (raw)
)

type verdict string

const (
	accept     verdict = "accept"
	drop       verdict = "drop"
	ret        verdict = "return"
	masquerade verdict = "masquerade"
)

// rule is one backend-neutral rule. All matches must hold. Address lists are
// of one IP family (plan splits per family); a rule with no address match
// applies to every family.
type rule struct {
	chain       string
	iif, oif    string // iifname / oifname equal
	notOif      string // oifname not equal
	saddr       []netip.Prefix
	daddr       []netip.Prefix
	notDaddr    bool   // daddr is a negative match (single prefix)
	established bool   // ct state established,related
	ctDNAT      bool   // ct status dnat: a published port (Forwards)
	proto       string // "udp" or "tcp", with dport
	dport       uint16
	verdict     verdict
}

// family returns 4 or 6 when the rule matches addresses of one family, 0 when it has none.
func (r rule) family() int {
	for _, l := range [][]netip.Prefix{r.saddr, r.daddr} {
		if len(l) > 0 {
			if l[0].Addr().Is4() {
				return 4
			}
			return 6
		}
	}
	return 0
}

// bySubnetFamily splits subnets into the IPv4 ones and the IPv6 ones (non-empty groups only).
func bySubnetFamily(subnets []netip.Prefix) [][]netip.Prefix {
	var v4, v6 []netip.Prefix
	for _, p := range subnets {
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	var out [][]netip.Prefix
	for _, l := range [][]netip.Prefix{v4, v6} {
		if len(l) > 0 {
			out = append(out, l)
		}
	}
	return out
}

var (
	multicastLocal = netip.MustParsePrefix("224.0.0.0/24")
	multicast6     = netip.MustParsePrefix("ff00::/8")
	broadcast      = netip.MustParsePrefix("255.255.255.255/32")
)

// plan is the policy: the rules of network r, in order. r must be valid.
func plan(r NetworkRules) []rule {
	b := r.Bridge
	if b == "" {
		return planRoute(r)
	}
	// Nothing a guest sends may have a loopback source or destination: with
	// route_localnet on the bridge (for 127.0.0.1 → published port) the host
	// would route it to its own loopback services (CVE-2020-8558's class).
	// Replies to the host's own localhost connections are un-NATed later,
	// so they never carry 127.0.0.0/8 here.
	var local []rule
	for _, lo := range []netip.Prefix{loopback4, loopback6} {
		local = append(local,
			rule{chain: chainPrerouting, iif: b, daddr: []netip.Prefix{lo}, verdict: drop},
			rule{chain: chainPrerouting, iif: b, saddr: []netip.Prefix{lo}, verdict: drop})
	}
	if r.Services { // accepts only: the host's own local policy is not ours
		local = append(local,
			rule{chain: chainInput, iif: b, proto: "udp", dport: 67, verdict: accept},
			rule{chain: chainInput, iif: b, proto: "udp", dport: 547, verdict: accept},
			rule{chain: chainInput, iif: b, proto: "udp", dport: 53, verdict: accept},
			rule{chain: chainInput, iif: b, proto: "tcp", dport: 53, verdict: accept})
	}
	return append(append(planBridge(r), local...), planTunnel(r.Overlay)...)
}

// planTunnel admits the network's VXLAN packets on the underlay only from
// its peers: the kernel's VXLAN device takes a frame from any sender that
// knows the VNI, who could then inject frames into the guests' segment (and
// have its MACs learnt). Encrypted overlays need none of this: WireGuard
// accepts only the peers' keys.
func planTunnel(o *OverlayRules) []rule {
	if o == nil || o.UDPPort == 0 {
		return nil
	}
	var rules []rule
	for _, p := range o.Peers {
		rules = append(rules, rule{chain: chainInput, proto: "udp", dport: o.UDPPort,
			saddr: []netip.Prefix{netip.PrefixFrom(p, p.BitLen())}, verdict: accept})
	}
	return append(rules, rule{chain: chainInput, proto: "udp", dport: o.UDPPort, verdict: drop})
}

// planBridge is the forward and nat plan of a network with a bridge.
func planBridge(r NetworkRules) []rule {
	b, up := r.Bridge, r.Uplink
	// Routed between the bridge's own subnets: not ours to filter.
	rules := []rule{{chain: chainForward, iif: b, oif: b, verdict: accept}}
	if !r.Forward { // isolated
		return append(rules,
			rule{chain: chainForward, iif: b, verdict: drop},
			rule{chain: chainForward, oif: b, verdict: drop})
	}

	// Outbound: from the bridge to the uplink (or anywhere but the bridge).
	out := rule{chain: chainForward, iif: b, oif: up, verdict: accept}
	if up == "" {
		out.notOif = b
	}
	if r.Antispoof {
		for _, fam := range bySubnetFamily(r.Subnets) {
			o := out
			o.saddr = fam
			rules = append(rules, o)
		}
	} else {
		rules = append(rules, out)
	}
	rules = append(rules, rule{chain: chainForward, iif: b, verdict: drop})

	// Inbound: replies and published ports (DNAT) always; other new
	// connections only toward routed subnets (all of them when not
	// masquerading, else the IPv6 ones, as libvirt does).
	rules = append(rules, rule{chain: chainForward, iif: up, oif: b, established: true, verdict: accept})
	// Published ports (EnsureForwards): new connections DNATed toward a guest.
	rules = append(rules, rule{chain: chainForward, iif: up, oif: b, ctDNAT: true, verdict: accept})
	for _, fam := range bySubnetFamily(r.Subnets) {
		if !r.masquerades(fam[0]) {
			rules = append(rules, rule{chain: chainForward, iif: up, oif: b, daddr: fam, verdict: accept})
		}
	}
	rules = append(rules, rule{chain: chainForward, oif: b, verdict: drop})

	for _, s := range r.Subnets {
		if !r.masquerades(s) {
			continue // routed (IPv6 unless Masquerade6)
		}
		src := []netip.Prefix{s}
		m := rule{chain: chainPostrouting, saddr: src, daddr: src, notDaddr: true, oif: up, verdict: masquerade}
		if up == "" {
			m.notOif = b
		}
		// Like libvirt: local multicast and broadcast keep their source.
		keep := []netip.Prefix{multicastLocal, broadcast}
		if s.Addr().Is6() {
			keep = []netip.Prefix{multicast6}
		}
		for _, k := range keep {
			rules = append(rules, rule{chain: chainPostrouting, saddr: src, daddr: []netip.Prefix{k}, verdict: ret})
		}
		rules = append(rules, m)
	}
	return rules
}

// masquerades reports whether the subnet's traffic is masqueraded on its
// way out: IPv4 in nat mode, IPv6 with Masquerade6 too.
func (r NetworkRules) masquerades(subnet netip.Prefix) bool {
	return r.Masquerade && (subnet.Addr().Is4() || r.Masquerade6)
}

// planRoute is the plan of a network without a bridge (mode route): every
// guest is behind its own port, routed by the host, never masqueraded. The
// subnets are what identifies the network's traffic; per-port antispoof
// (EnsurePort, routed) makes sure a guest cannot borrow another's address.
func planRoute(r NetworkRules) []rule {
	var rules []rule
	for _, fam := range bySubnetFamily(r.Subnets) {
		rules = append(rules,
			rule{chain: chainForward, saddr: fam, oif: r.Uplink, verdict: accept},
			rule{chain: chainForward, daddr: fam, iif: r.Uplink, verdict: accept})
	}
	return rules
}

// nftRule renders r in nft syntax (without the chain).
func nftRule(r rule) string {
	var w []string
	if r.iif != "" {
		w = append(w, "iifname", quote(r.iif))
	}
	if r.oif != "" {
		w = append(w, "oifname", quote(r.oif))
	}
	if r.notOif != "" {
		w = append(w, "oifname", "!=", quote(r.notOif))
	}
	ipkw := "ip"
	if r.family() == 6 {
		ipkw = "ip6"
	}
	if r.established {
		w = append(w, "ct", "state", "established,related")
	}
	if r.ctDNAT {
		w = append(w, "ct", "status", "dnat")
	}
	if len(r.saddr) > 0 {
		w = append(w, ipkw, "saddr", nftSet(r.saddr))
	}
	if len(r.daddr) > 0 {
		w = append(w, ipkw, "daddr")
		if r.notDaddr {
			w = append(w, "!=")
		}
		w = append(w, nftSet(r.daddr))
	}
	if r.proto != "" {
		w = append(w, r.proto, "dport", strconv.Itoa(int(r.dport)))
	}
	return strings.Join(append(w, string(r.verdict)), " ")
}

func quote(ifname string) string { return `"` + ifname + `"` } // ifname is validated: no quotes

func nftSet(l []netip.Prefix) string {
	if len(l) == 1 {
		return l[0].String()
	}
	s := make([]string, len(l))
	for i, p := range l {
		s[i] = p.String()
	}
	return "{ " + strings.Join(s, ", ") + " }"
}

// iptRules renders r for one iptables family (4 or 6) as rule specs, one per
// address (iptables has no address lists). A rule for the other family yields none.
func iptRules(r rule, family int) [][]string {
	if f := r.family(); f != 0 && f != family {
		return nil
	}
	var base []string
	if r.iif != "" {
		base = append(base, "-i", r.iif)
	}
	if r.oif != "" {
		base = append(base, "-o", r.oif)
	}
	if r.notOif != "" {
		base = append(base, "!", "-o", r.notOif)
	}
	var dst []string
	if len(r.daddr) > 0 {
		if r.notDaddr {
			dst = append(dst, "!")
		}
		dst = append(dst, "-d", r.daddr[0].String()) // plan uses at most one prefix here when negated
	}
	var tail []string
	if r.established {
		tail = append(tail, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED")
	}
	if r.ctDNAT {
		tail = append(tail, "-m", "conntrack", "--ctstate", "DNAT")
	}
	if r.proto != "" {
		tail = append(tail, "-p", r.proto, "-m", r.proto, "--dport", strconv.Itoa(int(r.dport)))
	}
	tail = append(tail, "-j", strings.ToUpper(string(r.verdict)))

	var out [][]string
	add := func(parts ...[]string) {
		var spec []string
		for _, p := range parts {
			spec = append(spec, p...)
		}
		out = append(out, spec)
	}
	switch {
	case len(r.saddr) > 0:
		for _, s := range r.saddr {
			add(base, []string{"-s", s.String()}, dst, tail)
		}
	case len(r.daddr) > 1 && !r.notDaddr:
		for _, d := range r.daddr {
			add(base, []string{"-d", d.String()}, tail)
		}
	default:
		add(base, dst, tail)
	}
	return out
}
