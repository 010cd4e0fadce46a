package firewall

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// The tunnel port of a network that spans hosts (an overlay: a VXLAN
// device on the bridge) is filtered in the bridge family, written once
// here as a backend-neutral plan (ovPlan) that the nftables and the
// ebtables renderings below only translate:
//
//   - frames arriving from the tunnel whose source MAC is a local guest's
//     are dropped (another host cannot speak as one of ours);
//   - with a gateway on this host (LocalGateway), the local guests' requests
//     for it never leave into the tunnel (ARP and neighbour solicitations for
//     its addresses, router solicitations, DHCP requests, frames to its MAC),
//     and nothing another host's gateway sends (its MAC is the same: frames
//     from that MAC, DHCP replies) comes in: with a gateway on every host,
//     each answers its own guests only. What guests of a host without a
//     gateway (gateway = "remote") ask of this one still comes in, and the
//     answers go out.
//
// The local guests' MACs are per-guest data: with nftables the elements of
// a set (EnsureOverlayGuest adds one at attach, when the guest's MAC is
// known) referenced by one fixed rule; ebtables has no sets: one rule per
// guest MAC in a chain of its own. A guest whose MAC nobody told brouter (a
// QEMU tap without a port rule) is not in it. Learning it from its frames
// would let any unguarded local guest, by sending with a remote guest's MAC,
// have that remote guest's frames dropped here for as long as it likes: a
// worse hole than the one it closes.

// OverlayRules is what the firewall needs to know about a network's tunnel.
type OverlayRules struct {
	// Port is the tunnel's device, a port of the network's bridge.
	Port string
	// LocalGateway: every host of the network has the gateway, with the
	// same MAC and addresses; none of its traffic may cross the tunnel.
	LocalGateway bool
	GatewayMAC   net.HardwareAddr
	// Gateways are the gateway's addresses (IPv4, IPv6 and its IPv6 link-local).
	Gateways []netip.Addr
	// UDPPort and Peers: VXLAN in clear on the underlay, on this UDP port,
	// is accepted from these addresses only (0: encrypted, nothing to filter).
	UDPPort uint16
	Peers   []netip.Addr
}

func (o *OverlayRules) validate(network string) error {
	if err := validIfname("overlay port", o.Port); err != nil {
		return err
	}
	for _, p := range o.Peers {
		if !p.IsValid() || p.Zone() != "" || p.Is4In6() {
			return errorf("network %s: overlay: invalid peer address %v", network, p)
		}
	}
	if !o.LocalGateway {
		return nil
	}
	if len(o.GatewayMAC) != 6 {
		return errorf("network %s: overlay: the gateway's MAC %q is not an Ethernet address", network, o.GatewayMAC)
	}
	for _, a := range o.Gateways {
		if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
			return errorf("network %s: overlay: invalid gateway address %v", network, a)
		}
	}
	return nil
}

// ovDir is which way a rule's frames cross the tunnel port.
type ovDir int

const (
	ovIn  ovDir = iota // from the tunnel into the bridge
	ovOut              // from the bridge (its ports or the host) into the tunnel
)

// ovRule is one rule of the tunnel's filter; all its matches must hold.
type ovRule struct {
	dir    ovDir
	srcMAC net.HardwareAddr
	dstMAC net.HardwareAddr
	// guestSrc: the source MAC is a local guest's.
	guestSrc bool
	// arpDst: ARP whose target protocol address is this.
	arpDst netip.Addr
	// icmp6: an ICMPv6 message of this type (neighbour solicitation,
	// router solicitation), sent to one of dst6 when given.
	icmp6 string
	dst6  []netip.Addr
	// udp: a UDP datagram of that IP version (4, 6) to dport, from sport
	// when not 0.
	udp          int
	sport, dport uint16
	verdict
}

// ICMPv6 types by neutral name.
const (
	icmp6NS = "neighbour-solicitation"
	icmp6RS = "router-solicitation"
)

// DHCP's ports: client and server, IPv4 and IPv6.
const (
	ovDHCP4Client, ovDHCP4Server = 68, 67
	ovDHCP6Client, ovDHCP6Server = 546, 547
)

// ovPlan is the tunnel's filter of network rules o, in order.
func ovPlan(o *OverlayRules) []ovRule {
	rules := []ovRule{{dir: ovIn, guestSrc: true, verdict: drop}}
	if !o.LocalGateway {
		return rules
	}
	// Another host's gateway: its frames and its DHCP server's replies.
	rules = append(rules,
		ovRule{dir: ovIn, srcMAC: o.GatewayMAC, verdict: drop},
		ovRule{dir: ovIn, udp: 4, sport: ovDHCP4Server, dport: ovDHCP4Client, verdict: drop},
		ovRule{dir: ovIn, udp: 6, sport: ovDHCP6Server, dport: ovDHCP6Client, verdict: drop})
	// The local guests' requests for the gateway stay here.
	rules = append(rules, ovRule{dir: ovOut, dstMAC: o.GatewayMAC, verdict: drop})
	var nd []netip.Addr
	for _, a := range o.Gateways {
		if a.Is4() {
			rules = append(rules, ovRule{dir: ovOut, arpDst: a, verdict: drop})
		} else {
			nd = append(nd, a, solicitedNode(a))
		}
	}
	if len(nd) > 0 {
		slices.SortFunc(nd, netip.Addr.Compare) // as nft lists a set
		rules = append(rules, ovRule{dir: ovOut, icmp6: icmp6NS, dst6: slices.Compact(nd), verdict: drop},
			ovRule{dir: ovOut, icmp6: icmp6RS, verdict: drop})
	}
	return append(rules,
		ovRule{dir: ovOut, udp: 4, dport: ovDHCP4Server, verdict: drop},
		ovRule{dir: ovOut, udp: 6, dport: ovDHCP6Server, verdict: drop})
}

// solicitedNode is the multicast group neighbour solicitations for a are sent to.
func solicitedNode(a netip.Addr) netip.Addr {
	b := a.As16()
	return netip.AddrFrom16([16]byte{0xff, 0x02, 11: 0x01, 12: 0xff, 13: b[13], 14: b[14], 15: b[15]})
}

func ovRules(o *OverlayRules, dir ovDir) []ovRule {
	var out []ovRule
	for _, r := range ovPlan(o) {
		if r.dir == dir {
			out = append(out, r)
		}
	}
	return out
}

// --- nftables: table "bridge brouter-NET.overlay" ---------------------------

const setOvGuests = "ov_guests"

func nftOverlayTableName(network string) string { return nftTableName(network) + ".overlay" }

var nftICMP6 = map[string]string{icmp6NS: "nd-neighbor-solicit", icmp6RS: "nd-router-solicit"}

// nftOvRule renders one rule (as nft lists it).
func nftOvRule(o *OverlayRules, r ovRule) string {
	var w []string
	switch {
	case r.guestSrc:
		w = append(w, "ether saddr @"+setOvGuests)
	case r.srcMAC != nil:
		w = append(w, "ether saddr "+r.srcMAC.String())
	case r.dstMAC != nil:
		w = append(w, "ether daddr "+r.dstMAC.String())
	case r.arpDst.IsValid():
		w = append(w, "arp daddr ip "+r.arpDst.String())
	case r.icmp6 != "":
		if len(r.dst6) > 0 {
			w = append(w, "ip6 daddr "+nftList(addrStrings(r.dst6)))
		}
		w = append(w, "icmpv6 type "+nftICMP6[r.icmp6])
	case r.udp != 0:
		w = append(w, map[int]string{4: "ether type ip", 6: "ether type ip6"}[r.udp])
		if r.sport != 0 {
			w = append(w, fmt.Sprintf("udp sport %d", r.sport))
		}
		w = append(w, fmt.Sprintf("udp dport %d", r.dport))
	}
	return strings.Join(append(w, string(r.verdict)), " ")
}

// nftOverlayChains is the table's chains and their rules.
func nftOverlayChains(o *OverlayRules) []nftChain {
	render := func(dir ovDir) []string {
		var out []string
		for _, r := range ovRules(o, dir) {
			out = append(out, nftOvRule(o, r))
		}
		return out
	}
	port := quote(o.Port)
	return []nftChain{
		{name: "prerouting", hook: "prerouting", priority: "filter", rules: []string{"iifname " + port + " jump from_tunnel"}},
		{name: "forward", hook: "forward", priority: "filter", rules: []string{"oifname " + port + " jump to_tunnel"}},
		{name: "output", hook: "output", priority: "filter", rules: []string{"oifname " + port + " jump to_tunnel"}},
		{name: "from_tunnel", rules: render(ovIn)},
		{name: "to_tunnel", rules: render(ovOut)},
	}
}

// --- ebtables: table nat, chains BROV-IN-NET, BROV-OUT-NET, BROV-G-NET ------

func ebtOvIn(network string) string    { return "BROV-IN-" + network }
func ebtOvOut(network string) string   { return "BROV-OUT-" + network }
func ebtOvGuest(network string) string { return "BROV-G-" + network }

var ebtICMP6 = map[string]string{icmp6NS: "neighbour-solicitation", icmp6RS: "router-solicitation"}

// ebtOvSpecs renders the rules of one direction (the guests' MACs are rules
// of BROV-G-NET).
func ebtOvSpecs(network string, o *OverlayRules, dir ovDir) [][]string {
	var out [][]string
	for _, r := range ovRules(o, dir) {
		v := []string{"-j", xtVerdict[r.verdict]}
		switch {
		case r.guestSrc:
			out = append(out, []string{"-j", ebtOvGuest(network)})
		case r.srcMAC != nil:
			out = append(out, slices.Concat([]string{"-s", r.srcMAC.String()}, v))
		case r.dstMAC != nil:
			out = append(out, slices.Concat([]string{"-d", r.dstMAC.String()}, v))
		case r.arpDst.IsValid():
			out = append(out, slices.Concat([]string{"-p", "ARP", "--arp-ip-dst", r.arpDst.String()}, v))
		case r.icmp6 != "":
			icmp := []string{"--ip6-proto", "ipv6-icmp", "--ip6-icmp-type", ebtICMP6[r.icmp6]}
			if len(r.dst6) == 0 {
				out = append(out, slices.Concat([]string{"-p", "IPv6"}, icmp, v))
			}
			for _, a := range r.dst6 {
				out = append(out, slices.Concat([]string{"-p", "IPv6", "--ip6-dst", a.String()}, icmp, v))
			}
		case r.udp != 0:
			ip := map[int]string{4: "--ip", 6: "--ip6"}[r.udp]
			m := []string{"-p", map[int]string{4: "IPv4", 6: "IPv6"}[r.udp], ip + "-proto", "udp"}
			if r.sport != 0 {
				m = append(m, ip+"-sport", strconv.Itoa(int(r.sport)))
			}
			out = append(out, slices.Concat(m, []string{ip + "-dport", strconv.Itoa(int(r.dport))}, v))
		}
	}
	return out
}

// ebtOvGuestSpec is a local guest's rule in BROV-G-NET.
func ebtOvGuestSpec(mac net.HardwareAddr) []string { return []string{"-s", mac.String(), "-j", "DROP"} }
