package config

import (
	"strings"
	"testing"
	"time"
)

func TestDHCPAndPorts(t *testing.T) {
	c, err := Parse([]byte(`
[network.lab]
bridge = "brlab"
address = "10.98.98.1/24"
[network.lab.dhcp]
lease_time = "30m"
domain = "Lab.Internal"
upstream = ["192.0.2.53"]
[[network.lab.dhcp.host]]
mac = "00:16:3e:00:00:20"
ip = "10.98.98.20"
name = "web"
[[network.lab.port]]
name = "tap-web*"
mac = "00:16:3e:00:00:20"
ips = ["10.98.98.20"]
[[network.lab.port]]
name = "tap-any*"
`), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	n := c.Networks["lab"]
	d := n.DHCP
	if d.RangeStart.String() != "10.98.98.128" || d.RangeEnd.String() != "10.98.98.254" || d.LeaseTime != 30*time.Minute || d.Domain != "lab.internal" {
		t.Errorf("dhcp %+v", d)
	}
	if len(d.Hosts) != 1 || d.Hosts[0].Name != "web" || d.Hosts[0].IP.String() != "10.98.98.20" {
		t.Errorf("hosts %+v", d.Hosts)
	}
	if p := n.PortRuleFor("tap-web0", nil); p == nil || !p.Antispoof || p.MAC.String() != "00:16:3e:00:00:20" {
		t.Errorf("PortRuleFor(tap-web0) = %+v", p)
	}
	if p := n.PortRuleFor("tap-any3", nil); p == nil || p.Antispoof {
		t.Errorf("PortRuleFor(tap-any3) = %+v, want a rule without antispoof", p)
	}
	if c.NetworkForPort("tap-web0") != n || c.NetworkForPort("eth0") != nil {
		t.Error("NetworkForPort")
	}
}

// A port rule naming a mac applies to that guest's ports, and to ports whose
// guest is unknown (a QEMU tap); never to another guest's.
func TestDHCPErrors(t *testing.T) {
	base := "[network.lab]\nbridge = \"brlab\"\naddress = \"10.98.98.1/24\"\n"
	cases := []struct{ doc, want string }{
		{"[network.lab.dhcp]\nrange_start = \"10.1.1.5\"", "network.lab.dhcp.range_start = \"10.1.1.5\""},
		{"[network.lab.dhcp]\nrange_start = \"10.98.98.1\"", "gateway"},
		{"[network.lab.dhcp]\nrange_start = \"10.98.98.200\"\nrange_end = \"10.98.98.100\"", "before range_start"},
		{"[network.lab.dhcp]\nlease_time = \"5s\"", "network.lab.dhcp.lease_time"},
		{"[network.lab.dhcp]\nrange_start = \"10.98.98.0\"", "not a host address"},
		{"[network.lab.dhcp]\nrange_start = \"10.98.98.2\"\nrange_end = \"10.98.98.9\"\n[network.x]\nbridge = \"brx\"\naddress = \"10.5.0.5/24\"\n[network.x.dhcp]\nrange_start = \"10.5.0.2\"\nrange_end = \"10.5.0.9\"", "contains the gateway"},
		{"[network.lab.dhcp]\ndomain = \"bad domain\"", "network.lab.dhcp.domain"},
		{"[network.lab.dhcp]\nupstream = [\"dns.example\"]", "network.lab.dhcp.upstream[0]"},
		{"[[network.lab.dhcp.host]]\nmac = \"00:16:3e:00:00:20\"", "needs mac and ip"},
		{"[[network.lab.dhcp.host]]\nmac = \"01:16:3e:00:00:20\"\nip = \"10.98.98.20\"", "unicast"},
		{"[[network.lab.dhcp.host]]\nmac = \"00:16:3e:00:00:20\"\nip = \"10.98.98.20\"\nname = \"a b\"", "host name"},
		{"[[network.lab.dhcp.host]]\nmac = \"00:16:3e:00:00:20\"\nip = \"10.98.98.20\"\n[[network.lab.dhcp.host]]\nmac = \"00:16:3e:00:00:21\"\nip = \"10.98.98.20\"", "listed twice"},
		{"[network.lab.dhcp]\nleases = 1", "unknown key network.lab.dhcp.leases"},
		{"[[network.lab.port]]\nmac = \"00:16:3e:00:00:20\"", "needs name"},
		{"[[network.lab.port]]\nname = \"tap[\"", "network.lab.port[0].name"},
		{"[[network.lab.port]]\nname = \"tap*\"\nips = [\"10.98.98.9\"]", "antispoof needs the guest's mac"},
	}
	for _, tc := range cases {
		_, err := Parse([]byte(base+tc.doc), "t.toml")
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error %v, want one line mentioning %q", tc.doc, err, tc.want)
		}
	}
	if _, err := Parse([]byte("[network.lan]\nbridge = \"br0\"\nmode = \"bridge\"\n[network.lan.dhcp]\n"), "t.toml"); err == nil || !strings.Contains(err.Error(), "DHCP needs") {
		t.Errorf("dhcp in mode bridge: %v", err)
	}
}
