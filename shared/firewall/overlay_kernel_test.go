package firewall

import (
	"net"
	"strings"
	"testing"

	"github.com/brouter/brouter/shared/nstest"
)

// The tunnel's filter installs with the network, survives Ensure (guests
// included), goes when the overlay does and with the network.
func TestKernelOverlay(t *testing.T) {
	for _, kind := range []string{KindNftables, KindIPTables} {
		t.Run(kind, func(t *testing.T) {
			inNewNetns(t)
			b := newBackend(t, kind)
			state := func() string { // without blank lines, which WithoutEmptyBuiltins needs
				var out []string
				for _, l := range strings.Split(dump(t)+sh(t, "ebtables", "-t", "nat", "-L"), "\n") {
					if strings.TrimSpace(l) != "" {
						out = append(out, l)
					}
				}
				return strings.Join(out, "\n")
			}
			state() // ebtables -L itself makes iptables-nft create table bridge nat
			before := state()
			r := kernelNet()
			r.Overlay = testOverlay(true)
			guest, _ := net.ParseMAC("00:16:3e:00:00:07")
			if err := b.Ensure(r); err != nil {
				t.Fatal(err)
			}
			if err := b.EnsureOverlayGuest(r.Network, guest); err != nil {
				t.Fatal(err)
			}
			if err := b.EnsureOverlayGuest(r.Network, guest); err != nil { // idempotent
				t.Fatal(err)
			}
			if err := b.Ensure(r); err != nil { // keeps the guests
				t.Fatal(err)
			}
			s := state()
			if kind == KindNftables {
				mustContain(t, s, "table bridge brouter-fwtest.overlay", "elements = { 00:16:3e:00:00:07 }",
					`iifname "vx-lab" jump from_tunnel`, "arp daddr ip 10.98.98.1 drop", "udp sport 67 udp dport 68 drop")
			} else {
				mustContain(t, s, "-i vx-lab -j BROV-IN-fwtest", "-o vx-lab -j BROV-OUT-fwtest",
					"-s 00:16:3e:00:00:07 -j DROP", "--arp-ip-dst 10.98.98.1 -j DROP", "--ip-sport 67 --ip-dport 68 -j DROP")
				if n := strings.Count(s, "-s 00:16:3e:00:00:07 -j DROP"); n != 1 {
					t.Errorf("the guest's rule %d times:\n%s", n, s)
				}
			}
			lines, err := b.List(r.Network)
			if err != nil || !strings.Contains(strings.Join(lines, "\n"), "10.98.98.1") {
				t.Errorf("List = %q, %v", lines, err)
			}
			if err := b.RemoveOverlayGuest(r.Network, guest); err != nil {
				t.Fatal(err)
			}
			if err := b.RemoveOverlayGuest(r.Network, guest); err != nil {
				t.Fatal(err)
			}
			if s := state(); strings.Contains(s, "00:16:3e:00:00:07") {
				t.Errorf("the guest is still there:\n%s", s)
			}
			plain := r
			plain.Overlay = nil
			if err := b.Ensure(plain); err != nil {
				t.Fatal(err)
			}
			if s := state(); kind == KindNftables && strings.Contains(s, "overlay") {
				t.Errorf("Ensure without the overlay kept its filter:\n%s", s)
			}
			if err := b.Ensure(r); err != nil {
				t.Fatal(err)
			}
			if err := b.EnsureOverlayGuest(r.Network, guest); err != nil {
				t.Fatal(err)
			}
			if err := b.Remove(r.Network); err != nil {
				t.Fatal(err)
			}
			// iptables-nft leaves the empty built-in chains of the tables it used.
			if after := state(); nstest.WithoutEmptyBuiltins(after) != nstest.WithoutEmptyBuiltins(before) {
				t.Errorf("Remove left something:\n%s", nstest.Diff(nstest.WithoutEmptyBuiltins(before), nstest.WithoutEmptyBuiltins(after)))
			}
		})
	}
}
