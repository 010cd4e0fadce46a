package vnet

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/brouter/brouter/shared/config"
)

// A [[network.NAME.port]] rule completes every kind of port's spec the same
// way: it gives what the caller did not say, and adds antispoof.
func TestWithPortRule(t *testing.T) {
	cfg, err := config.Parse([]byte(`
[network.lab]
bridge = "brlab"
address = "10.6.7.1/24"
[[network.lab.port]]
name = "*"
mac = "00:16:3e:00:00:20"
ips = ["10.6.7.20"]
[[network.lab.port]]
name = "vif9.*"
ips = ["10.6.7.90"]
antispoof = false
`), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	n := cfg.Networks["lab"]
	ruleMAC, _ := net.ParseMAC("00:16:3e:00:00:20")
	otherMAC, _ := net.ParseMAC("00:16:3e:00:00:21")
	rule := []netip.Addr{netip.MustParseAddr("10.6.7.20")}
	ipam := []netip.Addr{netip.MustParseAddr("10.6.7.5")}
	for _, c := range []struct {
		what      string
		in        PortRequest
		mac       net.HardwareAddr
		ips       []netip.Addr
		antispoof bool
	}{
		{"QEMU tap: guest unknown", PortRequest{Name: "tap0"}, ruleMAC, rule, true},
		{"Xen vif of the rule's guest", PortRequest{Name: "vif1.0", GuestMAC: ruleMAC}, ruleMAC, rule, true},
		{"CNI veth of the rule's guest, IPAM addresses win", PortRequest{Name: "brv0123456789ab", GuestMAC: ruleMAC, IPs: ipam}, ruleMAC, ipam, true},
		{"another guest: no rule", PortRequest{Name: "vif1.0", GuestMAC: otherMAC}, otherMAC, nil, false},
		{"a rule without antispoof keeps the caller's", PortRequest{Name: "vif9.0", GuestMAC: otherMAC, IPs: ipam, Antispoof: true}, otherMAC, ipam, true},
		{"a rule without antispoof adds none", PortRequest{Name: "vif9.0", GuestMAC: otherMAC}, otherMAC, []netip.Addr{netip.MustParseAddr("10.6.7.90")}, false},
	} {
		got := withPortRule(n, c.in)
		if got.GuestMAC.String() != c.mac.String() || !slices.Equal(got.IPs, c.ips) || got.Antispoof != c.antispoof {
			t.Errorf("%s: mac %v ips %v antispoof %v; want %v %v %v", c.what, got.GuestMAC, got.IPs, got.Antispoof, c.mac, c.ips, c.antispoof)
		}
	}
}
