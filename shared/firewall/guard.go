package firewall

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// The per-port guard (antispoof) is written once, here, as a backend-neutral
// plan: what a guarded port may send, rule by rule. The backends only render
// it (nftables: fixed rules over per-port set elements, nftables_ports.go;
// ebtables, iptables and arptables: one chain per port, iptables_ports.go),
// so a new check is added in one place and every backend enforces it.
//
// A rule refers to the port's own data (its MAC, its addresses) without
// naming them: nftables renders such a match as a lookup in a set keyed by
// the port's name (one fixed rule for every guest), iptables as one rule per
// address of the port. Everything else in a rule is the same for every port.

// guardSection is which frames of the port a guard rule sees. Frames are
// checked at link level first (inFrame), then by their ethertype in the
// section of ARP, IPv4 or IPv6 (each ends with a verdict), and frames of any
// other ethertype in inOther (bridged ports only: a routed port sees IP only).
type guardSection int

const (
	inFrame guardSection = iota
	inARP
	inIP4
	inIP6
	inOther
)

// Ethertypes by neutral name.
const (
	eth8021Q  = "8021q"  // 802.1Q VLAN tag
	eth8021AD = "8021ad" // 802.1ad (QinQ) service tag
)

// guardRule is one rule of the guard. All its matches must hold.
type guardRule struct {
	in guardSection
	// notOwnMAC: the frame's source MAC (in inARP: the ARP sender's hardware
	// address) is not the port's guest MAC.
	notOwnMAC bool
	// ethertypes: the frame's ethertype is one of these (inFrame, inOther).
	ethertypes []string
	// arpNotEthIPv4: an ARP packet that is not Ethernet/IPv4, whose address
	// fields are not where the checks below look (inARP).
	arpNotEthIPv4 bool
	// ownSrc: the source address (ARP: the sender's protocol address) is one
	// of the port's addresses of the section's family.
	ownSrc bool
	// src: the source address is in one of these prefixes.
	src []netip.Prefix
	// dst: the destination address is in one of these prefixes (IP sections).
	dst []netip.Prefix
	// proto with sport and dport: an UDP datagram between these ports
	// (a port 0: any).
	proto        string
	sport, dport uint16
	// icmp6: an ICMPv6 message of one of these types (inIP6).
	icmp6 []uint8
	// ndTargetNotOwn: the target address of a neighbour solicitation or
	// advertisement (icmp6) is neither one of the port's IPv6 addresses nor
	// link-local.
	ndTargetNotOwn bool
	// service: the rule guards the network's services (router
	// advertisements, DHCP), needs nothing of the port's own data, and so
	// applies to every guarded port, also to one whose guest's addresses are
	// unknown (PortRules.ServiceOnly).
	service bool
	// verdict: accept (the frame passes the guard) or drop.
	verdict verdict
}

// ICMPv6 types the guard looks at (RFC 4861).
const (
	icmp6RouterAdvert   = 134
	icmp6NeighborSolict = 135
	icmp6NeighborAdvert = 136
	icmp6Redirect       = 137
)

// Addresses and ports the guard lets through (see PortRules).
var (
	probeSrc4    = netip.MustParsePrefix("0.0.0.0/32") // ARP probes (RFC 5227), DHCP discovery
	broadcast4   = netip.MustParsePrefix("255.255.255.255/32")
	linkLocal6   = netip.MustParsePrefix("fe80::/10")
	unspecified6 = netip.MustParsePrefix("::/128") // DAD, MLD
	dhcp4Client  = [2]uint16{68, 67}               // udp sport, dport
	dhcp4Server  = uint16(67)                      // udp sport of a DHCPv4 server
)

// guardPlan is the guard of every guarded port, in order. The service
// rules come first in their sections: they hold for every guarded port.
func guardPlan() []guardRule {
	return []guardRule{
		// A guest is never a DHCP server (a rogue one would hand out
		// addresses, routes and DNS servers of its choosing) nor a router:
		// its router advertisements and redirects would reroute the other
		// guests and, without IPv6 forwarding, the host itself.
		{in: inIP4, service: true, proto: "udp", sport: dhcp4Server, verdict: drop},
		{in: inIP6, service: true, icmp6: []uint8{icmp6RouterAdvert, icmp6Redirect}, verdict: drop},
		{in: inIP6, service: true, proto: "udp", sport: dhcp6Server, verdict: drop},

		{in: inFrame, notOwnMAC: true, verdict: drop},
		// A tagged frame's inner header would escape the checks below.
		{in: inFrame, ethertypes: []string{eth8021Q, eth8021AD}, verdict: drop},

		{in: inARP, arpNotEthIPv4: true, verdict: drop},
		{in: inARP, notOwnMAC: true, verdict: drop},
		{in: inARP, src: []netip.Prefix{probeSrc4}, verdict: accept},
		{in: inARP, ownSrc: true, verdict: accept},
		{in: inARP, verdict: drop},

		{in: inIP4, ownSrc: true, verdict: accept},
		// A client without an address yet: DHCP from 0.0.0.0 to the
		// broadcast address, nothing else (a renewing client uses its own).
		{in: inIP4, src: []netip.Prefix{probeSrc4}, dst: []netip.Prefix{broadcast4},
			proto: "udp", sport: dhcp4Client[0], dport: dhcp4Client[1], verdict: accept},
		{in: inIP4, verdict: drop},

		// Neighbour discovery may not claim another's address: an
		// advertisement's target, and the target of duplicate address
		// detection (a solicitation from ::, RFC 4862), must be the guest's
		// own or link-local. Other solicitations ask for any target.
		{in: inIP6, icmp6: []uint8{icmp6NeighborAdvert}, ndTargetNotOwn: true, verdict: drop},
		{in: inIP6, icmp6: []uint8{icmp6NeighborSolict}, src: []netip.Prefix{unspecified6}, ndTargetNotOwn: true, verdict: drop},
		// DHCPv6 clients send from their link-local address (RFC 8415).
		{in: inIP6, ownSrc: true, verdict: accept},
		{in: inIP6, src: []netip.Prefix{linkLocal6, unspecified6}, verdict: accept},
		{in: inIP6, verdict: drop},

		// Only what a guest needs: ARP, IPv4 and IPv6 (each met a verdict above).
		{in: inOther, verdict: drop},
	}
}

// guardRules returns the plan's rules of one section.
func guardRules(in guardSection) []guardRule {
	var out []guardRule
	for _, r := range guardPlan() {
		if r.in == in {
			out = append(out, r)
		}
	}
	return out
}

// serviceRules returns the plan's service rules, of every section.
func serviceRules() []guardRule {
	return slices.DeleteFunc(guardPlan(), func(r guardRule) bool { return !r.service })
}

// --- nftables -----------------------------------------------------------------
//
// The port's data are set elements (nftables_ports.go): as_mac holds
// ifname . ether_addr, as_ip4 ifname . ipv4_addr, as_ip6 ifname . ipv6_addr.

// nftGuardTable says which kind of port table a chain is rendered for.
type nftGuardTable int

const (
	nftBridged nftGuardTable = iota // bridge family: every frame of a bridged port
	nftRouted                       // inet family: IP of a routed port
	nftARP                          // arp family: ARP of a routed port
)

var nftEthertypes = map[string]string{eth8021Q: "8021q", eth8021AD: "8021ad"}

// Chain names of the guard in the port tables, by section.
var nftGuardChain = map[guardSection]string{inFrame: "antispoof", inARP: "antispoof_arp", inIP4: "antispoof_ip4", inIP6: "antispoof_ip6"}

// nftServiceChain holds the service rules, for ports in as_svc (whose
// guests' addresses are unknown); guarded ports meet them in their sections.
const nftServiceChain = "service_guard"

// nftServiceRules renders the service rules as one chain of a bridged or
// routed port table, each qualified by its family.
func nftServiceRules(t nftGuardTable) []string {
	qual := map[guardSection]string{inIP4: "ether type ip ", inIP6: "ether type ip6 "}
	if t == nftRouted {
		qual = map[guardSection]string{inIP4: "meta nfproto ipv4 ", inIP6: "meta nfproto ipv6 "}
	}
	var out []string
	for _, r := range serviceRules() {
		for _, l := range nftGuardRule(r) {
			out = append(out, qual[r.in]+l)
		}
	}
	return out
}

// nftGuardICMP6 names the guard's ICMPv6 types as nft does.
var nftGuardICMP6 = map[uint8]string{icmp6RouterAdvert: "nd-router-advert", icmp6NeighborSolict: "nd-neighbor-solicit",
	icmp6NeighborAdvert: "nd-neighbor-advert", icmp6Redirect: "nd-redirect"}

// nftNDTarget is the target address of a neighbour solicitation or
// advertisement: 16 bytes after the ICMPv6 header's 8 (nft 1.0.6 has no
// nd-target keyword); fe80::/10 is its first 10 bits.
const (
	nftNDTarget          = "@th,64,128"
	nftNDTargetLinkLocal = "@th,64,16 & 0xffc0 != 0xfe80"
)

// nftGuardChains renders the guard as the chains of a port table of kind t
// (their names as nftGuardChain gives them); the base chains jump to the
// first one for guarded ports only.
func nftGuardChains(t nftGuardTable) []nftChain {
	if t == nftARP {
		return []nftChain{{name: nftGuardChain[inARP], rules: nftGuardSection(inARP, t)}}
	}
	frame := nftGuardSection(inFrame, t)
	if t == nftRouted {
		frame = append(frame, "meta nfproto ipv4 jump "+nftGuardChain[inIP4], "meta nfproto ipv6 jump "+nftGuardChain[inIP6])
	} else {
		frame = append(frame,
			"ether type arp jump "+nftGuardChain[inARP],
			"ether type ip jump "+nftGuardChain[inIP4],
			"ether type ip6 jump "+nftGuardChain[inIP6])
		frame = append(frame, nftGuardSection(inOther, t)...)
	}
	out := []nftChain{{name: nftGuardChain[inFrame], rules: frame}, {name: nftServiceChain, rules: nftServiceRules(t)}}
	if t == nftBridged {
		out = append(out, nftChain{name: nftGuardChain[inARP], rules: nftGuardSection(inARP, t)})
	}
	return append(out,
		nftChain{name: nftGuardChain[inIP4], rules: nftGuardSection(inIP4, t)},
		nftChain{name: nftGuardChain[inIP6], rules: nftGuardSection(inIP6, t)})
}

// nftGuardSection renders a section's rules for table kind t. The inet
// family (routed ports) sees IP only: no ethertype matches there.
func nftGuardSection(in guardSection, t nftGuardTable) []string {
	var out []string
	for _, r := range guardRules(in) {
		if t == nftRouted && len(r.ethertypes) > 0 {
			continue
		}
		out = append(out, nftGuardRule(r)...)
	}
	return out
}

// nftGuardRule renders one rule (arpNotEthIPv4 takes four).
func nftGuardRule(r guardRule) []string {
	v := " " + string(r.verdict)
	if r.arpNotEthIPv4 {
		// Only Ethernet/IPv4 ARP: the fields below are at fixed offsets.
		return []string{"arp htype != 1" + v, "arp ptype != ip" + v, "arp hlen != 6" + v, "arp plen != 4" + v}
	}
	var w []string
	if r.notOwnMAC {
		if r.in == inARP {
			w = append(w, "iifname . arp saddr ether != @"+setMAC)
		} else {
			w = append(w, "iifname . ether saddr != @"+setMAC)
		}
	}
	if len(r.ethertypes) > 0 {
		names := make([]string, len(r.ethertypes))
		for i, e := range r.ethertypes {
			names[i] = nftEthertypes[e]
		}
		w = append(w, "ether type "+nftList(names))
	}
	src := map[guardSection]string{inARP: "arp saddr ip", inIP4: "ip saddr", inIP6: "ip6 saddr"}[r.in]
	if r.ownSrc {
		set := setIP4
		if r.in == inIP6 {
			set = setIP6
		}
		w = append(w, "iifname . "+src+" @"+set)
	}
	if len(r.src) > 0 {
		l := make([]string, len(r.src))
		for i, p := range r.src {
			l[i] = nftAddr(p)
		}
		slices.Sort(l) // as nft lists a set
		w = append(w, src+" "+nftList(l))
	}
	if len(r.dst) > 0 {
		l := make([]string, len(r.dst))
		for i, p := range r.dst {
			l[i] = nftAddr(p)
		}
		slices.Sort(l)
		w = append(w, strings.Replace(src, "saddr", "daddr", 1)+" "+nftList(l))
	}
	if r.proto != "" {
		w = append(w, nftPorts(r))
	}
	if len(r.icmp6) > 0 {
		names := make([]string, len(r.icmp6))
		for i, t := range r.icmp6 {
			names[i] = nftGuardICMP6[t]
		}
		w = append(w, "icmpv6 type "+nftList(names))
	}
	if r.ndTargetNotOwn {
		w = append(w, "iifname . "+nftNDTarget+" != @"+setND, nftNDTargetLinkLocal)
	}
	return []string{strings.TrimPrefix(strings.Join(w, " ")+v, " ")}
}

// nftPorts renders a rule's transport ports ("udp sport 68 udp dport 67").
func nftPorts(r guardRule) string {
	var w []string
	if r.sport != 0 {
		w = append(w, fmt.Sprintf("%s sport %d", r.proto, r.sport))
	}
	if r.dport != 0 {
		w = append(w, fmt.Sprintf("%s dport %d", r.proto, r.dport))
	}
	return strings.Join(w, " ")
}

// nftAddr renders a prefix as nft does: a single address without its length.
func nftAddr(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

func nftList(l []string) string {
	if len(l) == 1 {
		return l[0]
	}
	return "{ " + strings.Join(l, ", ") + " }"
}

// --- ebtables, iptables, arptables --------------------------------------------
//
// No sets: a port's chain (BRAS-PORT) holds its own MAC and addresses, one
// rule per address; "accept" returns to the caller chain (RETURN).

var xtVerdict = map[verdict]string{accept: "RETURN", drop: "DROP"}

// xtAddr renders a prefix for the xtables tools: an IPv4 address alone
// without its length, everything else as a prefix.
func xtAddr(p netip.Prefix) string {
	if p.IsSingleIP() && p.Addr().Is4() {
		return p.Addr().String()
	}
	return p.String()
}

// ownAddrs returns the port's addresses that a section's ownSrc means.
func (p PortRules) ownAddrs(in guardSection) []string {
	v4, v6 := p.addrs()
	if in == inIP6 {
		return addrStrings(v6)
	}
	return addrStrings(v4)
}

// xtExpand renders a rule as one spec per source and destination address
// it matches (the tools take one address per rule): pre (the section's
// qualifier and other matches), srcFlag ADDR, dstFlag ADDR, then post.
func xtExpand(p PortRules, r guardRule, srcFlag, dstFlag string, pre, post []string) [][]string {
	var srcs []string
	if r.ownSrc {
		srcs = p.ownAddrs(r.in)
		if len(srcs) == 0 {
			return nil // no address of the port's: the rule matches nothing
		}
	}
	for _, a := range r.src {
		srcs = append(srcs, xtAddr(a))
	}
	var dsts []string
	for _, a := range r.dst {
		dsts = append(dsts, xtAddr(a))
	}
	opt := func(flag string, l []string) [][]string {
		if len(l) == 0 {
			return [][]string{nil}
		}
		out := make([][]string, len(l))
		for i, a := range l {
			out[i] = []string{flag, a}
		}
		return out
	}
	var out [][]string
	for _, sm := range opt(srcFlag, srcs) {
		for _, dm := range opt(dstFlag, dsts) {
			out = append(out, slices.Concat(pre, sm, dm, post))
		}
	}
	return out
}

var ebtEthertypes = map[string]string{eth8021Q: "802_1Q", eth8021AD: "0x88a8"}

// ebtSpecs is the content of BRAS-PORT for a bridged port (ebtables): the
// sections one after the other, each rule qualified by its ethertype. Every
// ARP, IPv4 and IPv6 frame meets a verdict in its section, so inOther's
// rules need no qualifier. ebtables' ARP match requires Ethernet/IPv4 ARP.
func ebtSpecs(p PortRules) [][]string {
	mac := p.MAC.String()
	var out [][]string
	for _, in := range []guardSection{inFrame, inARP, inIP4, inIP6, inOther} {
		qual := map[guardSection][]string{inARP: {"-p", "ARP"}, inIP4: {"-p", "IPv4"}, inIP6: {"-p", "IPv6"}}[in]
		srcFlag := map[guardSection]string{inARP: "--arp-ip-src", inIP4: "--ip-src", inIP6: "--ip6-src"}[in]
		dstFlag := map[guardSection]string{inARP: "--arp-ip-dst", inIP4: "--ip-dst", inIP6: "--ip6-dst"}[in]
		for _, r := range guardRules(in) {
			if r.arpNotEthIPv4 || r.ndTargetNotOwn || p.ServiceOnly && !r.service {
				continue // ebtables has no match for an ND target (see xtUnsupported)
			}
			post := []string{"-j", xtVerdict[r.verdict]}
			for _, e := range r.ethertypes {
				out = append(out, slices.Concat([]string{"-p", ebtEthertypes[e]}, post))
			}
			if len(r.ethertypes) > 0 {
				continue
			}
			pre := slices.Clone(qual)
			switch {
			case r.notOwnMAC && in == inARP:
				pre = append(pre, "--arp-mac-src", "!", mac)
			case r.notOwnMAC:
				pre = append(pre, "-s", "!", mac)
			}
			for _, l4 := range ebtL4(r) {
				out = append(out, xtExpand(p, r, srcFlag, dstFlag, pre, slices.Concat(l4, post))...)
			}
		}
	}
	return out
}

// xtUnsupported is what the guard plan asks that the iptables backend
// cannot do: ebtables and ip6tables have no match for the target address of
// neighbour discovery (xt_u32 works on IPv4 only), so with iptables a
// guest's neighbour advertisements for another's address are not dropped.
// Its source address is still checked, and so is every other rule.
const xtUnsupported = "neighbour discovery target check"

// ebtL4 is a rule's transport matches in ebtables, one spec per ICMPv6
// type: [--ip-proto udp --ip-sport 67], [--ip6-proto ipv6-icmp
// --ip6-icmp-type 134], ...; one empty spec when the rule has none.
func ebtL4(r guardRule) [][]string {
	ip := map[guardSection]string{inIP4: "--ip", inIP6: "--ip6"}[r.in]
	if len(r.icmp6) > 0 {
		var out [][]string
		for _, t := range r.icmp6 {
			out = append(out, []string{"--ip6-proto", "ipv6-icmp", "--ip6-icmp-type", strconv.Itoa(int(t))})
		}
		return out
	}
	if r.proto == "" {
		return [][]string{nil}
	}
	m := []string{ip + "-proto", r.proto}
	if r.sport != 0 {
		m = append(m, ip+"-sport", strconv.Itoa(int(r.sport)))
	}
	if r.dport != 0 {
		m = append(m, ip+"-dport", strconv.Itoa(int(r.dport)))
	}
	return [][]string{m}
}

// iptL4 is ebtL4 for iptables and ip6tables.
func iptL4(r guardRule) [][]string {
	if len(r.icmp6) > 0 {
		var out [][]string
		for _, t := range r.icmp6 {
			out = append(out, []string{"-p", "ipv6-icmp", "--icmpv6-type", strconv.Itoa(int(t))})
		}
		return out
	}
	if r.proto == "" {
		return [][]string{nil}
	}
	m := []string{"-p", r.proto}
	if r.sport != 0 {
		m = append(m, "--sport", strconv.Itoa(int(r.sport)))
	}
	if r.dport != 0 {
		m = append(m, "--dport", strconv.Itoa(int(r.dport)))
	}
	return [][]string{m}
}

// iptPortSpecs is the content of BRAS-PORT for a routed port, in iptables (4)
// or ip6tables (6), table raw: the link-level checks, then the family's section.
func iptPortSpecs(p PortRules, family int) [][]string {
	in := inIP4
	if family == 6 {
		in = inIP6
	}
	var out [][]string
	for _, r := range slices.Concat(guardRules(inFrame), guardRules(in)) {
		if len(r.ethertypes) > 0 || r.ndTargetNotOwn || p.ServiceOnly && !r.service {
			continue // iptables sees IP only; no ND target match (xtUnsupported)
		}
		var pre []string
		if r.notOwnMAC {
			pre = []string{"-m", "mac", "!", "--mac-source", p.MAC.String()}
		}
		for _, l4 := range iptL4(r) {
			out = append(out, xtExpand(p, r, "-s", "-d", pre, slices.Concat(l4, []string{"-j", xtVerdict[r.verdict]}))...)
		}
	}
	return out
}

// arptSpecs is the content of BRAS-PORT for a routed port's ARP (arptables;
// arptables-nft also requires Ethernet/IPv4 ARP for the address matches).
func arptSpecs(p PortRules) [][]string {
	if p.ServiceOnly {
		return nil // no service rule is about ARP
	}
	var out [][]string
	for _, r := range guardRules(inARP) {
		if r.arpNotEthIPv4 {
			continue
		}
		var pre []string
		if r.notOwnMAC {
			pre = []string{"!", "--source-mac", p.MAC.String()}
		}
		out = append(out, xtExpand(p, r, "-s", "-d", pre, []string{"-j", xtVerdict[r.verdict]})...)
	}
	return out
}

func addrStrings[T fmt.Stringer](l []T) []string {
	out := make([]string, len(l))
	for i, a := range l {
		out[i] = a.String()
	}
	return out
}
