package firewall

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"sigs.k8s.io/knftables"
)

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

func natNet() NetworkRules {
	return NetworkRules{Network: "lab", Bridge: "brlab", Subnets: prefixes("10.7.0.0/24"), Forward: true, Masquerade: true}
}

func TestPlan(t *testing.T) {
	tests := []struct {
		name    string
		r       NetworkRules
		want    []string // lines that must be present
		notWant []string // substrings that must be absent
	}{{
		name: "nat",
		r:    natNet(),
		want: []string{
			`forward: iifname "brlab" oifname "brlab" accept`,
			`forward: iifname "brlab" oifname != "brlab" accept`,
			`forward: iifname "brlab" drop`,
			`forward: oifname "brlab" ct state established,related accept`,
			`forward: oifname "brlab" ct status dnat accept`,
			`forward: oifname "brlab" drop`,
			`postrouting: ip saddr 10.7.0.0/24 ip daddr 224.0.0.0/24 return`,
			`postrouting: ip saddr 10.7.0.0/24 ip daddr 255.255.255.255/32 return`,
			`postrouting: oifname != "brlab" ip saddr 10.7.0.0/24 ip daddr != 10.7.0.0/24 masquerade`,
		},
		notWant: []string{`oifname "brlab" ip daddr`},
	}, {
		name: "routed",
		r:    NetworkRules{Network: "lab", Bridge: "brlab", Subnets: prefixes("10.7.0.0/24"), Forward: true},
		want: []string{
			`forward: iifname "brlab" oifname != "brlab" accept`,
			`forward: oifname "brlab" ct state established,related accept`,
			`forward: oifname "brlab" ct status dnat accept`,
			`forward: oifname "brlab" ip daddr 10.7.0.0/24 accept`,
			`forward: oifname "brlab" drop`,
		},
		notWant: []string{"postrouting", "masquerade"},
	}, {
		name: "DHCP and DNS served on the bridge",
		r:    NetworkRules{Network: "lab", Bridge: "brlab", Subnets: prefixes("10.7.0.0/24"), Forward: true, Services: true},
		want: []string{
			`input: iifname "brlab" udp dport 67 accept`,
			`input: iifname "brlab" udp dport 53 accept`,
			`input: iifname "brlab" tcp dport 53 accept`,
		},
		notWant: []string{"input: iifname \"brlab\" drop"},
	}, {
		name: "route (no bridge)",
		r:    NetworkRules{Network: "lab", Subnets: prefixes("10.7.0.0/24", "fd00:7::/64"), Forward: true},
		want: []string{
			`forward: ip saddr 10.7.0.0/24 accept`,
			`forward: ip daddr 10.7.0.0/24 accept`,
			`forward: ip6 saddr fd00:7::/64 accept`,
			`forward: ip6 daddr fd00:7::/64 accept`,
		},
		notWant: []string{"postrouting", "masquerade", "drop", "iifname"},
	}, {
		name: "isolated: only forwards (published ports) come in",
		r:    NetworkRules{Network: "lab", Bridge: "brlab", Subnets: prefixes("10.7.0.0/24"), Masquerade: true},
		want: []string{
			`forward: iifname "brlab" oifname "brlab" accept`,
			`forward: iifname "brlab" drop`,
			`forward: oifname "brlab" ct state established,related accept`,
			`forward: oifname "brlab" ct status dnat accept`,
			`forward: oifname "brlab" drop`,
		},
		notWant: []string{"postrouting", "masquerade", "oifname !=", `iifname "brlab" ct state`},
	}, {
		name: "antispoof",
		r: NetworkRules{Network: "lab", Bridge: "brlab", Subnets: prefixes("10.7.0.0/24", "10.8.0.0/24", "fd00:7::/64"),
			Forward: true, Masquerade: true, Antispoof: true},
		want: []string{
			`forward: iifname "brlab" oifname != "brlab" ip saddr { 10.7.0.0/24, 10.8.0.0/24 } accept`,
			`forward: iifname "brlab" oifname != "brlab" ip6 saddr fd00:7::/64 accept`,
			`forward: iifname "brlab" drop`,
		},
		notWant: []string{`oifname != "brlab" accept`},
	}, {
		name: "uplink",
		r:    NetworkRules{Network: "lab", Bridge: "brlab", Subnets: prefixes("10.7.0.0/24"), Forward: true, Masquerade: true, Uplink: "eth0"},
		want: []string{
			`forward: iifname "brlab" oifname "eth0" accept`,
			`forward: iifname "brlab" drop`,
			`forward: oifname "brlab" ct state established,related accept`,
			`forward: oifname "brlab" ct status dnat accept`,
			`postrouting: oifname "eth0" ip saddr 10.7.0.0/24 ip daddr != 10.7.0.0/24 masquerade`,
		},
		notWant: []string{`oifname != "brlab"`},
	}, {
		name: "ipv6 nat: routed, never masqueraded",
		r:    NetworkRules{Network: "lab", Bridge: "brlab", Subnets: prefixes("fd00:7::/64"), Forward: true, Masquerade: true},
		want: []string{
			`forward: iifname "brlab" oifname != "brlab" accept`,
			`forward: oifname "brlab" ip6 daddr fd00:7::/64 accept`,
		},
		notWant: []string{"postrouting", "masquerade"},
	}, {
		name: "nat6: IPv6 masqueraded like IPv4",
		r: NetworkRules{Network: "lab", Bridge: "brlab", Subnets: prefixes("10.7.0.0/24", "fd00:7::/64"), Forward: true,
			Masquerade: true, Masquerade6: true, Uplink: "eth0"},
		want: []string{
			`postrouting: ip6 saddr fd00:7::/64 ip6 daddr ff00::/8 return`,
			`postrouting: oifname "eth0" ip6 saddr fd00:7::/64 ip6 daddr != fd00:7::/64 masquerade`,
			`postrouting: oifname "eth0" ip saddr 10.7.0.0/24 ip daddr != 10.7.0.0/24 masquerade`,
			`forward: oifname "brlab" ct status dnat accept`,
		},
		notWant: []string{`ip6 daddr fd00:7::/64 accept`},
	}, {
		name: "DHCPv6 served on the bridge",
		r:    NetworkRules{Network: "lab", Bridge: "brlab", Subnets: prefixes("10.7.0.0/24", "fd00:7::/64"), Forward: true, Services: true},
		want: []string{`input: iifname "brlab" udp dport 547 accept`},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.r.validate(); err != nil {
				t.Fatal(err)
			}
			got := nftLines(tt.r)
			for _, w := range tt.want {
				if !slices.Contains(got, w) {
					t.Errorf("missing %q in\n%s", w, strings.Join(got, "\n"))
				}
			}
			for _, nw := range tt.notWant {
				for _, l := range got {
					if strings.Contains(l, nw) {
						t.Errorf("unexpected %q in %q", nw, l)
					}
				}
			}
			// Every drop of the forward chain comes after every accept it could shadow:
			// the last two rules of the chain are the catch-all drops.
			fwd := slices.DeleteFunc(slices.Clone(got), func(l string) bool { return !strings.HasPrefix(l, "forward: ") })
			if n := len(fwd); tt.r.Bridge != "" && fwd[n-1] != `forward: oifname "brlab" drop` {
				t.Errorf("forward chain does not end with the inbound drop: %q", fwd[n-1])
			}
		})
	}
}

func TestIPTRules(t *testing.T) {
	r := NetworkRules{Network: "lab", Bridge: "brlab", Subnets: prefixes("10.7.0.0/24", "fd00:7::/64"),
		Forward: true, Masquerade: true, Antispoof: true, Uplink: "eth0"}
	v4, v6 := &iptFamily{family: 4}, &iptFamily{family: 6}
	join := func(specs [][]string) []string {
		var out []string
		for _, s := range specs {
			out = append(out, strings.Join(s, " "))
		}
		return out
	}
	rules := plan(r)
	check := func(name string, got, want []string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Errorf("%s:\ngot  %q\nwant %q", name, got, want)
		}
	}
	check("v4 forward", join(v4.specs("lab", rules, chainForward, false)), []string{
		"-i brlab -o brlab -j ACCEPT",
		"-i brlab -o eth0 -s 10.7.0.0/24 -j ACCEPT",
		"-i brlab -j DROP",
		"-o brlab -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		"-o brlab -m conntrack --ctstate DNAT -j ACCEPT",
		"-o brlab -j DROP",
	})
	check("v4 nat", join(v4.specs("lab", rules, chainPostrouting, false)), []string{
		"-s 10.7.0.0/24 -d 224.0.0.0/24 -j RETURN",
		"-s 10.7.0.0/24 -d 255.255.255.255/32 -j RETURN",
		"-o eth0 -s 10.7.0.0/24 ! -d 10.7.0.0/24 -j MASQUERADE",
	})
	check("v6 forward", join(v6.specs("lab", rules, chainForward, false)), []string{
		"-i brlab -o brlab -j ACCEPT",
		"-i brlab -o eth0 -s fd00:7::/64 -j ACCEPT",
		"-i brlab -j DROP",
		"-o brlab -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		"-o brlab -m conntrack --ctstate DNAT -j ACCEPT",
		"-i eth0 -o brlab -d fd00:7::/64 -j ACCEPT",
		"-o brlab -j DROP",
	})
	check("v6 nat", join(v6.specs("lab", rules, chainPostrouting, false)), nil)
	check("v4 docker accept-only", join(v4.specs("lab", rules, chainForward, true)), []string{
		"-i brlab -o brlab -j ACCEPT",
		"-i brlab -o eth0 -s 10.7.0.0/24 -j ACCEPT",
		"-o brlab -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		"-o brlab -m conntrack --ctstate DNAT -j ACCEPT",
	})
}

// The transaction replaces the table wholesale and is idempotent; run it on
// knftables' fake to check it is well-formed.
func TestNftTransaction(t *testing.T) {
	fake := knftables.NewFake("", "")
	run := func(r NetworkRules) string {
		tx := fake.NewTransaction()
		nftTransaction(tx, r)
		if err := fake.Run(context.Background(), tx); err != nil {
			t.Fatalf("run %s: %v", tx, err)
		}
		return fake.Dump()
	}
	first := run(natNet())
	if !strings.Contains(first, "masquerade") || !strings.Contains(first, "add table inet brouter-lab") {
		t.Fatalf("unexpected dump:\n%s", first)
	}
	if again := run(natNet()); again != first {
		t.Errorf("second Ensure changed the table:\n%s\n---\n%s", first, again)
	}
	routed := natNet()
	routed.Masquerade = false
	if d := run(routed); strings.Contains(d, "postrouting") {
		t.Errorf("switching to routed kept the nat chain:\n%s", d)
	}
}

func TestValidate(t *testing.T) {
	bad := []NetworkRules{
		{Network: "", Bridge: "br0"},
		{Network: "-x", Bridge: "br0"},
		{Network: "averyveryverylongname", Bridge: "br0"},
		{Network: "a b", Bridge: "br0"},
		{Network: "lab", Bridge: `br"0`},
		{Network: "lab", Bridge: "br0 accept"},
		{Network: "lab", Bridge: "bridge-name-too-long"},
		{Network: "lab", Bridge: ".."},
		{Network: "lab", Bridge: "br0", Uplink: "eth0;"},
		{Network: "lab", Bridge: "br0", Uplink: "br0"},
		{Network: "lab", Bridge: "br0", Subnets: prefixes("10.0.0.1/24")},
		{Network: "lab", Bridge: "br0", Subnets: []netip.Prefix{{}}},
		{Network: "lab", Subnets: prefixes("10.7.0.0/24"), Forward: true, Masquerade: true}, // no bridge: never NAT
		{Network: "lab", Subnets: prefixes("10.7.0.0/24")},                                  // no bridge: always forwarded
		{Network: "lab", Forward: true},                                                     // no bridge, no subnet
	}
	for _, r := range bad {
		err := r.validate()
		if err == nil || !strings.HasPrefix(err.Error(), "firewall: ") {
			t.Errorf("validate(%+v) = %v, want a firewall: error", r, err)
		}
		if err := NewFake().Ensure(r); err == nil {
			t.Errorf("Fake.Ensure(%+v) accepted invalid rules", r)
		}
	}
	if err := natNet().validate(); err != nil {
		t.Error(err)
	}
}

func TestNewBogus(t *testing.T) {
	_, err := New("bogus", nil)
	if err == nil || !strings.HasPrefix(err.Error(), "firewall: ") ||
		!strings.Contains(err.Error(), "auto") || !strings.Contains(err.Error(), "nftables") || !strings.Contains(err.Error(), "iptables") {
		t.Fatalf("New(bogus) = %v", err)
	}
}

func TestFake(t *testing.T) {
	f := NewFake()
	var _ Backend = f
	r := natNet()
	for range 2 {
		if err := f.Ensure(r); err != nil {
			t.Fatal(err)
		}
	}
	got, _ := f.List("lab")
	if !slices.Equal(got, nftLines(r)) {
		t.Errorf("List = %q", got)
	}
	if rr, ok := f.Rules("lab"); !ok || rr.Bridge != "brlab" {
		t.Errorf("Rules = %+v, %v", rr, ok)
	}
	if n := f.Networks(); !slices.Equal(n, []string{"lab"}) {
		t.Errorf("Networks = %q", n)
	}
	for range 2 {
		if err := f.Remove("lab"); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := f.List("lab"); got != nil {
		t.Errorf("List after Remove = %q", got)
	}
	boom := errors.New("boom")
	f.FailWith(boom)
	if err := f.Ensure(r); !errors.Is(err, boom) {
		t.Errorf("Ensure with FailWith = %v", err)
	}
	f.FailWith(nil)

	// Concurrent use (run with -race).
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := natNet()
			r.Network = fmt.Sprintf("n%d", i)
			_ = f.Ensure(r)
			_, _ = f.List(r.Network)
			_ = f.Remove(r.Network)
		}()
	}
	wg.Wait()
	if n := f.Networks(); len(n) != 0 {
		t.Errorf("Networks after concurrent add/remove = %q", n)
	}
}

// TestPlanTunnel: VXLAN in clear is accepted from the peers only; an
// encrypted overlay (no UDP port to filter) and no overlay add nothing.
func TestPlanTunnel(t *testing.T) {
	o := &OverlayRules{Port: "vx-lab", UDPPort: 4789, Peers: []netip.Addr{netip.MustParseAddr("198.51.100.2"), netip.MustParseAddr("2001:db8::3")}}
	var got []string
	for _, r := range planTunnel(o) {
		got = append(got, r.chain+": "+nftRule(r))
	}
	want := []string{
		"input: ip saddr 198.51.100.2/32 udp dport 4789 accept",
		"input: ip6 saddr 2001:db8::3/128 udp dport 4789 accept",
		"input: udp dport 4789 drop",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if r := planTunnel(&OverlayRules{Port: "vx-lab"}); r != nil {
		t.Errorf("encrypted overlay: %v", r)
	}
	if r := planTunnel(nil); r != nil {
		t.Errorf("no overlay: %v", r)
	}
}
