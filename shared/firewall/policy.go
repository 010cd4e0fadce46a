package firewall

import (
	"net/netip"
	"slices"
)

// A network's policy beyond what its mode implies (NetworkRules.Policy):
// which other brouter networks its guests may open connections to, what
// the host accepts from them, and ordered incoming and outgoing filters.
// All of it is network rules, in the network's own table or chains, rendered
// from the plan like the rest: nothing here is per guest, so attaching a
// guest costs the same with any policy.
//
// Where the rules sit in the forward chain of a network with a bridge b
// (planBridge; mode route matches its subnets instead of b):
//
//	iif b oif b accept                        guests among themselves
//	iif b ct state established,related accept (fromGuests)
//	iif b ct status != dnat daddr PEERS drop  networks it may not reach
//	iif b jump outgoing                       the outgoing filter
//	iif b daddr REACHED accept                (with an uplink, or isolated)
//	iif b oif UPLINK accept, iif b drop       (the mode's)
//	oif b ct state established,related accept
//	oif b ct status dnat accept               forwards, published ports
//	oif b iif PEER accept | drop              (toGuests) networks that reach it, or not
//	iif UPLINK oif b daddr SUBNET jump incoming, accept (routed families)
//	oif b drop
//
// Each side drops what it does not allow, so a pair of networks where only
// one knows the other (an ad-hoc CNI network started after it) is still
// kept apart. A connection between networks is never masqueraded: the
// guests see each other's addresses, and replies route back directly.

// Policy is what vnet decides beyond the mode; the zero Policy adds nothing.
type Policy struct {
	// HostServicesOnly: from the guests the host accepts only replies, the
	// network's DHCP and DNS (with Services), DHCPv6, IPv6 neighbour and
	// router solicitations and MLD reports, and HostServices; the rest is
	// dropped in the network's input chain, whatever other tables accept.
	HostServicesOnly bool
	HostServices     []Match // Allow, Proto and ports only; icmp: echo requests
	// Peers are the host's other brouter networks.
	Peers []Peer
	// Outgoing filters the connections guests open toward anything outside
	// the network; Incoming the new connections routed in toward the guests
	// (not forwards, not peers).
	Outgoing, Incoming Filter
}

// Peer is another brouter network, as seen from this one.
type Peer struct {
	Network string
	Bridge  string         // "" for mode route: matched by Subnets
	Subnets []netip.Prefix // masked
	Reach   bool           // this network's guests may open connections to the peer's
	Reached bool           // the peer's guests may open connections to this network's
}

// Filter is an ordered list of rules (first match decides) and a default.
type Filter struct {
	Deny  bool
	Rules []Match
}

// IsZero reports whether the filter lets everything through.
func (f Filter) IsZero() bool { return !f.Deny && len(f.Rules) == 0 }

// Match is one filter rule; an unset field matches anything.
type Match struct {
	Allow          bool
	Proto          string // "tcp", "udp", "sctp", "icmp" (ICMPv6 for IPv6) or ""
	PortLo, PortHi uint16 // tcp, udp, sctp (or "" for all three); 0: any
	From, To       []netip.Prefix
}

var matchProtos = []string{"", "tcp", "udp", "sctp", "icmp"}

// Chain roles of the policy's filters (non-base chains, jumped to).
const (
	chainOutgoing = "outgoing"
	chainIncoming = "incoming"
)

// ICMPv6 types the host needs from guests with HostServicesOnly: router
// solicitation, neighbour solicitation and advertisement, MLD reports (v1,
// v2). Router advertisements (134) from guests are not among them.
var ndTypes = []uint8{133, 135, 136, 131, 143}

const (
	echoRequest4 = 8
	echoRequest6 = 128
	dhcp6Server  = 547
)

func (p Policy) validate(network string) error {
	for _, m := range p.HostServices {
		if err := m.validate(network); err != nil {
			return err
		}
	}
	for _, f := range []Filter{p.Outgoing, p.Incoming} {
		for _, m := range f.Rules {
			if err := m.validate(network); err != nil {
				return err
			}
		}
	}
	for _, peer := range p.Peers {
		if err := validNetwork(peer.Network); err != nil {
			return err
		}
		if peer.Bridge != "" {
			if err := validIfname("bridge", peer.Bridge); err != nil {
				return err
			}
		} else if len(peer.Subnets) == 0 {
			return errorf("network %s: peer network %s has neither a bridge nor subnets", network, peer.Network)
		}
		if err := validSubnets(peer.Network, peer.Subnets); err != nil {
			return err
		}
	}
	return nil
}

func (m Match) validate(network string) error {
	if !slices.Contains(matchProtos, m.Proto) {
		return errorf("network %s: invalid protocol %q in a rule (want tcp, udp, sctp or icmp)", network, m.Proto)
	}
	if (m.PortLo != 0 || m.PortHi != 0) && (m.Proto == "icmp" || m.PortLo == 0 || m.PortHi < m.PortLo) {
		return errorf("network %s: invalid port range %d-%d for %q in a rule", network, m.PortLo, m.PortHi, m.Proto)
	}
	for _, l := range [][]netip.Prefix{m.From, m.To} {
		if err := validSubnets(network, l); err != nil {
			return err
		}
	}
	return nil
}

// policyActive reports whether the plan needs the rules that make room for
// the policy (established first, peers): with no peers and no filters the
// plan is exactly the mode's.
func (r NetworkRules) policyActive() bool {
	return len(r.Policy.Peers) > 0 || !r.Policy.Outgoing.IsZero()
}

// fromGuests is what applies to traffic from the guests (src matches it:
// iif bridge, or saddr of one family in mode route) before the mode's
// outbound accept. acceptReached: accept the reached networks here (the
// mode's accept does not cover them: an uplink is set, or nothing goes out).
func (r NetworkRules) fromGuests(src rule, acceptReached bool) []rule {
	if !r.policyActive() {
		return nil
	}
	est := src
	est.established, est.verdict = true, accept
	out := []rule{est}
	for _, l := range r.peerSubnets(src.family(), notReached) {
		d := src
		d.daddr, d.notDNAT, d.verdict = l, true, drop
		out = append(out, d)
	}
	if !r.Policy.Outgoing.IsZero() {
		j := src
		j.verdict, j.jump = jump, chainOutgoing
		out = append(out, j)
	}
	if !acceptReached {
		return out
	}
	for _, l := range r.peerSubnets(src.family(), reached) {
		a := src
		a.daddr, a.verdict = l, accept
		if r.Antispoof && len(a.saddr) == 0 {
			a.saddr = familyOf(r.Subnets, l[0].Addr().Is4())
			if len(a.saddr) == 0 {
				continue
			}
		}
		out = append(out, a)
	}
	return out
}

// toGuests is what applies to new connections toward the guests (dst
// matches them: oif bridge, or daddr of one family) from other networks:
// accepted from those that reach this one, dropped from the others unless
// dropAll (a drop of everything follows anyway).
func (r NetworkRules) toGuests(dst rule, dropAll bool) []rule {
	var out []rule
	for _, reached := range []bool{true, false} {
		if !reached && dropAll {
			break
		}
		for _, p := range r.Policy.Peers {
			if p.Reached != reached {
				continue
			}
			m := dst
			m.verdict = drop
			if reached {
				m.verdict = accept
			}
			if p.Bridge != "" {
				m.iif = p.Bridge
				out = append(out, m)
				continue
			}
			for _, fam := range bySubnetFamily(p.Subnets) {
				if f := dst.family(); f == 0 || f == familyNum(fam[0].Addr()) {
					mm := m
					mm.saddr = fam
					out = append(out, mm)
				}
			}
		}
	}
	return out
}

// incomingJump is the jump to the incoming filter from the rule that
// accepts routed connections toward the guests.
func (r NetworkRules) incomingJump(in rule) []rule {
	if r.Policy.Incoming.IsZero() {
		return nil
	}
	in.verdict, in.jump = jump, chainIncoming
	return []rule{in}
}

// noNATToPeers keeps the masquerade of src off connections toward other
// brouter networks (only those reach allows get through).
func (r NetworkRules) noNATToPeers(src []netip.Prefix) []rule {
	var out []rule
	fam := 4
	if src[0].Addr().Is6() {
		fam = 6 // nat6
	}
	for _, l := range r.peerSubnets(fam, func(Peer) bool { return true }) {
		out = append(out, rule{chain: chainPostrouting, saddr: src, daddr: l, verdict: ret})
	}
	return out
}

func reached(p Peer) bool    { return p.Reach }
func notReached(p Peer) bool { return !p.Reach }

// peerSubnets returns the subnets of the peers that keep selects, grouped
// by family (only family fam unless it is 0), without those overlapping the
// network's own subnets or each other.
func (r NetworkRules) peerSubnets(fam int, keep func(Peer) bool) [][]netip.Prefix {
	var all []netip.Prefix
	for _, p := range r.Policy.Peers {
		if keep(p) {
			all = append(all, p.Subnets...)
		}
	}
	all = slices.DeleteFunc(all, func(p netip.Prefix) bool {
		return slices.ContainsFunc(r.Subnets, p.Overlaps)
	})
	var out [][]netip.Prefix
	for _, l := range bySubnetFamily(outermost(all)) {
		if fam == 0 || fam == familyNum(l[0].Addr()) {
			out = append(out, l)
		}
	}
	return out
}

// outermost drops the prefixes contained in another of the list, and
// duplicates (an nft set of intervals refuses overlapping elements).
func outermost(l []netip.Prefix) []netip.Prefix {
	var out []netip.Prefix
	for i, p := range l {
		inside := false
		for j, q := range l {
			if i != j && q.Bits() <= p.Bits() && q.Contains(p.Addr()) && (q.Bits() < p.Bits() || j < i) {
				inside = true
				break
			}
		}
		if !inside {
			out = append(out, p)
		}
	}
	return out
}

func familyOf(l []netip.Prefix, four bool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range l {
		if p.Addr().Is4() == four {
			out = append(out, p)
		}
	}
	return out
}

func familyNum(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

// filterChains is the content of the outgoing and incoming chains: each
// rule returns (allow: the mode's rules decide next) or drops, in order;
// a default deny drops the rest.
func (r NetworkRules) filterChains() []rule {
	var out []rule
	for _, c := range []struct {
		chain string
		f     Filter
	}{{chainOutgoing, r.Policy.Outgoing}, {chainIncoming, r.Policy.Incoming}} {
		if c.f.IsZero() {
			continue
		}
		for _, m := range c.f.Rules {
			v := ret
			if !m.Allow {
				v = drop
			}
			out = append(out, matchRules(rule{chain: c.chain, verdict: v}, m, nil)...)
		}
		if c.f.Deny {
			out = append(out, rule{chain: c.chain, verdict: drop})
		}
	}
	return out
}

// matchRules expands m into rules like base: one per IP family its
// addresses (or, for ICMP, its protocol) need, and per protocol when it
// names ports without one. icmpTypes restricts ICMP to those types (IPv4,
// IPv6 as given by fam in the callers' order).
func matchRules(base rule, m Match, icmpTypes map[int][]uint8) []rule {
	protos := []string{m.Proto}
	if m.Proto == "" && m.PortLo != 0 {
		protos = []string{"tcp", "udp", "sctp"}
	}
	fams := []int{0}
	if len(m.From) > 0 || len(m.To) > 0 || m.Proto == "icmp" {
		fams = []int{4, 6}
	}
	var out []rule
	for _, fam := range fams {
		from, to := m.From, m.To
		if fam != 0 {
			from, to = familyOf(m.From, fam == 4), familyOf(m.To, fam == 4)
			if len(from) == 0 && len(m.From) > 0 || len(to) == 0 && len(m.To) > 0 {
				continue // this family cannot match
			}
			if f := base.family(); f != 0 && f != fam {
				continue
			}
		}
		for _, p := range protos {
			rl := base
			rl.daddr = to
			if len(from) > 0 {
				rl.saddr = from // base's sources, if any, contain them
			}
			if fam != 0 {
				rl.fam = fam
			}
			rl.proto, rl.dport, rl.dportHi = p, m.PortLo, m.PortHi
			if p == "icmp" && fam == 6 {
				rl.proto = "icmpv6"
			}
			if p == "icmp" {
				rl.icmpTypes = icmpTypes[fam]
			}
			out = append(out, rl)
		}
	}
	return out
}

// hostAccess is the input chain's part of HostServicesOnly: what the host
// accepts from the guests, then a drop of the rest.
func (r NetworkRules) hostAccess() []rule {
	if !r.Policy.HostServicesOnly {
		return nil
	}
	srcs := []rule{{chain: chainInput, iif: r.Bridge}}
	if r.Bridge == "" {
		srcs = nil
		for _, fam := range bySubnetFamily(r.Subnets) {
			srcs = append(srcs, rule{chain: chainInput, saddr: fam})
		}
	}
	has6 := slices.ContainsFunc(r.Subnets, func(p netip.Prefix) bool { return p.Addr().Is6() })
	echo := map[int][]uint8{4: {echoRequest4}, 6: {echoRequest6}}
	var out []rule
	for _, src := range srcs {
		a := src
		a.verdict = accept
		est := a
		est.established = true
		out = append(out, est)
		if r.Services && has6 && src.family() != 4 {
			out = append(out, rule{chain: chainInput, iif: src.iif, fam: 6, proto: "udp", dport: dhcp6Server, verdict: accept})
		}
		if src.family() != 4 {
			nd := a
			nd.fam, nd.proto, nd.icmpTypes = 6, "icmpv6", ndTypes
			out = append(out, nd)
		}
		for _, m := range r.Policy.HostServices {
			out = append(out, matchRules(a, m, echo)...)
		}
		d := src
		d.verdict = drop
		out = append(out, d)
	}
	return out
}
