package firewall

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func testOverlay(local bool) *OverlayRules {
	mac, _ := net.ParseMAC("02:11:22:33:44:55")
	return &OverlayRules{Port: "vx-lab", LocalGateway: local, GatewayMAC: mac,
		Gateways: []netip.Addr{netip.MustParseAddr("10.98.98.1"), netip.MustParseAddr("fd00:98::1"), netip.MustParseAddr("fe80::11:22ff:fe33:4455")}}
}

// One plan, two renderings: each rule of the tunnel's filter appears in
// both backends.
func TestOverlayPlan(t *testing.T) {
	o := testOverlay(true)
	var nft []string
	for _, c := range nftOverlayChains(o) {
		for _, r := range c.rules {
			nft = append(nft, c.name+": "+r)
		}
	}
	for _, want := range []string{
		`prerouting: iifname "vx-lab" jump from_tunnel`,
		`forward: oifname "vx-lab" jump to_tunnel`,
		`output: oifname "vx-lab" jump to_tunnel`,
		"from_tunnel: ether saddr @ov_guests drop",
		"from_tunnel: ether saddr 02:11:22:33:44:55 drop",
		"from_tunnel: ether type ip udp sport 67 udp dport 68 drop",
		"from_tunnel: ether type ip6 udp sport 547 udp dport 546 drop",
		"to_tunnel: ether daddr 02:11:22:33:44:55 drop",
		"to_tunnel: arp daddr ip 10.98.98.1 drop",
		"to_tunnel: ip6 daddr { fd00:98::1, fe80::11:22ff:fe33:4455, ff02::1:ff00:1, ff02::1:ff33:4455 } icmpv6 type nd-neighbor-solicit drop",
		"to_tunnel: icmpv6 type nd-router-solicit drop",
		"to_tunnel: ether type ip udp dport 67 drop",
		"to_tunnel: ether type ip6 udp dport 547 drop",
	} {
		if !slices.Contains(nft, want) {
			t.Errorf("nftables: no %q in\n%s", want, strings.Join(nft, "\n"))
		}
	}
	for _, bad := range []string{"to_tunnel: ether saddr @ov_guests drop", "to_tunnel: ether saddr 02:11:22:33:44:55 drop", "from_tunnel: arp daddr ip 10.98.98.1 drop"} {
		if slices.Contains(nft, bad) {
			t.Errorf("nftables: %q: the gateway must answer guests of hosts without one", bad)
		}
	}
	in := ebtOvSpecs("lab", o, ovIn)
	out := ebtOvSpecs("lab", o, ovOut)
	str := func(l [][]string) []string {
		var s []string
		for _, r := range l {
			s = append(s, strings.Join(r, " "))
		}
		return s
	}
	for _, want := range []string{
		"-j BROV-G-lab",
		"-s 02:11:22:33:44:55 -j DROP",
		"-p IPv4 --ip-proto udp --ip-sport 67 --ip-dport 68 -j DROP",
		"-p IPv6 --ip6-proto udp --ip6-sport 547 --ip6-dport 546 -j DROP",
	} {
		if !slices.Contains(str(in), want) {
			t.Errorf("ebtables in: no %q in\n%s", want, strings.Join(str(in), "\n"))
		}
	}
	for _, want := range []string{
		"-d 02:11:22:33:44:55 -j DROP",
		"-p ARP --arp-ip-dst 10.98.98.1 -j DROP",
		"-p IPv6 --ip6-dst ff02::1:ff00:1 --ip6-proto ipv6-icmp --ip6-icmp-type neighbour-solicitation -j DROP",
		"-p IPv6 --ip6-proto ipv6-icmp --ip6-icmp-type router-solicitation -j DROP",
		"-p IPv4 --ip-proto udp --ip-dport 67 -j DROP",
		"-p IPv6 --ip6-proto udp --ip6-dport 547 -j DROP",
	} {
		if !slices.Contains(str(out), want) {
			t.Errorf("ebtables out: no %q in\n%s", want, strings.Join(str(out), "\n"))
		}
	}
	// A remote gateway: only the local guests are protected.
	r := testOverlay(false)
	if l := ovRules(r, ovOut); len(l) != 0 {
		t.Errorf("remote gateway: rules toward the tunnel: %+v", l)
	}
	if l := str(ebtOvSpecs("lab", r, ovIn)); !slices.Equal(l, []string{"-j BROV-G-lab"}) {
		t.Errorf("remote gateway: ebtables in = %q", l)
	}
}

func TestOverlayValidate(t *testing.T) {
	base := NetworkRules{Network: "lab", Bridge: "brlab", Forward: true}
	ok := base
	ok.Overlay = testOverlay(true)
	if err := ok.validate(); err != nil {
		t.Errorf("valid: %v", err)
	}
	for _, o := range []*OverlayRules{
		{Port: "bad name"},
		{Port: "vx-lab", LocalGateway: true},
	} {
		r := base
		r.Overlay = o
		if err := r.validate(); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
	f := NewFake()
	mac, _ := net.ParseMAC("00:16:3e:00:00:01")
	if err := f.EnsureOverlayGuest("lab", mac); err != nil || !slices.Equal(f.OverlayGuests("lab"), []string{mac.String()}) {
		t.Errorf("fake: %v %v", err, f.OverlayGuests("lab"))
	}
	if err := f.RemoveOverlayGuest("lab", mac); err != nil || len(f.OverlayGuests("lab")) != 0 {
		t.Errorf("fake remove: %v %v", err, f.OverlayGuests("lab"))
	}
	if err := f.EnsureOverlayGuest("lab", net.HardwareAddr{1}); err == nil {
		t.Error("fake: a short MAC is accepted")
	}
}
