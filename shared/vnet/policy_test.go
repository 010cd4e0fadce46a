package vnet

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/firewall"
	"github.com/brouter/brouter/shared/state"
)

// Every network's rules know every other network brouter routes for: the
// configured ones (host-wide config) and the running ad-hoc ones (records),
// with reach in both directions; a mode bridge network is none of them.
func TestNetworkRulesPeers(t *testing.T) {
	cfg, err := config.Parse([]byte(`
[network.lab]
bridge = "brlab"
address = "10.6.7.1/24"
address6 = "fd00:6::1/64"
reach = ["dmz"]
host_access = "services"
host_services = ["tcp/22"]
[network.lab.outgoing]
[[network.lab.outgoing.deny]]
proto = "tcp"
port = 25
[network.dmz]
bridge = "brdmz"
address = "10.6.8.1/24"
reach = ["lab", "rt"]
[network.rt]
mode = "route"
address = "10.6.9.1/24"
[network.lan]
bridge = "br0"
mode = "bridge"
address = "192.0.2.1/24"
`), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	m := &Manager{Config: cfg, Records: state.NewVolatile(t.TempDir())}
	// An ad-hoc CNI network running on a bridge the config does not name, and one in mode bridge.
	if err := m.Records.Write(recordName("cni0"), &record{Network: "cni0", Bridge: "cni0", Mode: "nat", Addresses: []string{"10.22.0.1/16"}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Records.Write(recordName("br1"), &record{Network: "br1", Bridge: "br1", Mode: "bridge", Addresses: []string{"10.23.0.1/16"}}); err != nil {
		t.Fatal(err)
	}
	r := m.networkRules(cfg.Networks["lab"])
	want := []firewall.Peer{
		{Network: "dmz", Bridge: "brdmz", Subnets: []netip.Prefix{netip.MustParsePrefix("10.6.8.0/24")}, Reach: true, Reached: true},
		{Network: "rt", Subnets: []netip.Prefix{netip.MustParsePrefix("10.6.9.0/24")}},
		{Network: "cni0", Bridge: "cni0", Subnets: []netip.Prefix{netip.MustParsePrefix("10.22.0.0/16")}},
	}
	if !slices.EqualFunc(r.Policy.Peers, want, func(a, b firewall.Peer) bool {
		return a.Network == b.Network && a.Bridge == b.Bridge && slices.Equal(a.Subnets, b.Subnets) && a.Reach == b.Reach && a.Reached == b.Reached
	}) {
		t.Errorf("peers of lab:\n got %+v\nwant %+v", r.Policy.Peers, want)
	}
	if !r.Policy.HostServicesOnly || len(r.Policy.HostServices) != 1 || r.Policy.HostServices[0].PortLo != 22 {
		t.Errorf("host access: %+v", r.Policy)
	}
	if o := r.Policy.Outgoing; o.Deny || len(o.Rules) != 1 || o.Rules[0].Allow || o.Rules[0].Proto != "tcp" || o.Rules[0].PortHi != 25 {
		t.Errorf("outgoing: %+v", o)
	}
	rt := m.networkRules(cfg.Networks["rt"])
	if len(rt.Policy.Peers) != 3 || !rt.Policy.Peers[0].Reached || rt.Policy.Peers[0].Network != "dmz" {
		t.Errorf("peers of rt: %+v", rt.Policy.Peers)
	}
	if lan := m.networkRules(cfg.Networks["lan"]); len(lan.Policy.Peers) != 0 {
		t.Errorf("a mode bridge network has no rules, so no peers: %+v", lan.Policy.Peers)
	}
}

func TestNetworkForwards(t *testing.T) {
	cfg, err := config.Parse([]byte(`
[network.lab]
bridge = "brlab"
address = "10.6.7.1/24"
[[network.lab.forward]]
proto = "udp"
host_port = "8000-8002"
guest = "10.6.7.5"
guest_port = 9000
`), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	g := netip.MustParseAddr("10.6.7.5")
	var want []Forward
	for i := range uint16(3) {
		want = append(want, Forward{Proto: "udp", HostPort: 8000 + i, GuestIP: g, GuestPort: 9000 + i})
	}
	if got := networkForwards(cfg.Networks["lab"]); !slices.Equal(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}
