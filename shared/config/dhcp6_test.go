package config

import (
	"strings"
	"testing"
	"time"
)

func TestDHCP6(t *testing.T) {
	base := "[network.lab]\nbridge = \"brlab\"\naddress = \"10.98.98.1/24\"\n"
	cases := []struct {
		name, doc  string
		mode       IPv6Mode // "" means: no IPv6 service
		start, end string
	}{
		{"no address6", "", "", "", ""},
		{"implied by address6", "address6 = \"fd00:98::1/64\"\n", IPv6SLAAC, "fd00:98::2:0", "fd00:98::2:ffff"},
		{"mode none", "address6 = \"fd00:98::1/64\"\n[network.lab.dhcp6]\nipv6_mode = \"none\"\n", "", "", ""},
		{"dhcpv6 with range", "address6 = \"fd00:98::1/64\"\n[network.lab.dhcp6]\nipv6_mode = \"dhcpv6\"\nrange_start = \"fd00:98::100\"\nrange_end = \"fd00:98::1ff\"\nlease_time = \"30m\"\n",
			IPv6DHCPv6, "fd00:98::100", "fd00:98::1ff"},
		{"small prefix", "address6 = \"fd00:98::1/120\"\n[network.lab.dhcp6]\nipv6_mode = \"dhcpv6\"\n", IPv6DHCPv6, "fd00:98::80", "fd00:98::fe"},
		{"/120: dhcpv6 by default", "address6 = \"fd00:98::1/120\"\n", IPv6DHCPv6, "fd00:98::80", "fd00:98::fe"},
		{"route mode: none", "mode = \"route\"\naddress6 = \"fd00:98::1/64\"\n", "", "", ""},
	}
	for _, c := range cases {
		doc := base + c.doc
		if strings.Contains(c.doc, "route") {
			doc = strings.Replace(doc, "bridge = \"brlab\"\n", "", 1)
		}
		cfg, err := Parse([]byte(doc), "t.toml")
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		d := cfg.Networks["lab"].DHCP6
		if c.mode == "" {
			if d != nil {
				t.Errorf("%s: DHCP6 = %+v, want none", c.name, d)
			}
			continue
		}
		if d == nil || d.Mode != c.mode || d.RangeStart.String() != c.start || d.RangeEnd.String() != c.end {
			t.Errorf("%s: DHCP6 = %+v, want mode %s range %s-%s", c.name, d, c.mode, c.start, c.end)
		}
	}
	cfg, err := Parse([]byte(base+"address6 = \"fd00:98::1/64\"\nnat6 = true\nuplink = \"eth0\"\nuplink_accept_ra = true\n[network.lab.dhcp6]\nlease_time = \"30m\"\n[network.lab.dhcp]\n[[network.lab.dhcp.host]]\nmac = \"00:16:3e:00:00:20\"\nip6 = \"fd00:98::20\"\nname = \"web\"\n"), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	n := cfg.Networks["lab"]
	if !n.NAT6 || !n.UplinkAcceptRA || n.DHCP6.LeaseTime != 30*time.Minute {
		t.Errorf("nat6 %v uplink_accept_ra %v lease %v", n.NAT6, n.UplinkAcceptRA, n.DHCP6.LeaseTime)
	}
	if h := n.DHCP.Hosts[0]; h.IP.IsValid() || h.IP6.String() != "fd00:98::20" || h.Name != "web" {
		t.Errorf("host %+v, want ip6 fd00:98::20 and no ip", h)
	}
}

func TestDHCP6Errors(t *testing.T) {
	base := "[network.lab]\nbridge = \"brlab\"\naddress = \"10.98.98.1/24\"\n"
	v6 := "address6 = \"fd00:98::1/64\"\n"
	cases := []struct{ doc, want string }{
		{v6 + "[network.lab.dhcp6]\nipv6_mode = \"stateless\"", `network.lab.dhcp6.ipv6_mode = "stateless": want one of slaac, dhcpv6, slaac+dhcpv6, none`},
		{v6 + "[network.lab.dhcp6]\nrange_start = \"fd00:99::5\"", `network.lab.dhcp6.range_start = "fd00:99::5": want a host address of the network's prefix fd00:98::/64`},
		{v6 + "[network.lab.dhcp6]\nrange_end = \"10.98.98.5\"", `network.lab.dhcp6.range_end = "10.98.98.5"`},
		{v6 + "[network.lab.dhcp6]\nrange_start = \"fd00:98::1\"", "gateway's own address"},
		{v6 + "[network.lab.dhcp6]\nrange_start = \"fd00:98::9\"\nrange_end = \"fd00:98::5\"", "before range_start"},
		{v6 + "[network.lab.dhcp6]\nlease_time = \"1s\"", "network.lab.dhcp6.lease_time"},
		{v6 + "[network.lab.dhcp6]\nmode = \"slaac\"", "unknown key network.lab.dhcp6.mode"},
		{"[network.lab.dhcp6]\nipv6_mode = \"slaac\"", "network.lab.dhcp6: the network has no IPv6 address"},
		{v6 + "[network.lab.dhcp]\n[[network.lab.dhcp.host]]\nmac = \"00:16:3e:00:00:20\"\nip6 = \"fd00:99::20\"", `network.lab.dhcp.host[0].ip6 = "fd00:99::20": want a host address of the network's prefix fd00:98::/64`},
		{v6 + "[network.lab.dhcp]\n[[network.lab.dhcp.host]]\nmac = \"00:16:3e:00:00:20\"\nip6 = \"fd00:98::1\"", "gateway's own address"},
		{"[network.lab.dhcp]\n[[network.lab.dhcp.host]]\nmac = \"00:16:3e:00:00:20\"\nip6 = \"fd00:98::20\"", "the network has no IPv6 prefix"},
		{v6 + "[network.lab.dhcp]\n[[network.lab.dhcp.host]]\nmac = \"00:16:3e:00:00:20\"", "needs mac and ip (or ip6)"},
		{"nat6 = true", "network.lab.nat6 = true: the network has no IPv6 prefix"},
		{"address6 = \"fd00:98::1/120\"\n[network.lab.dhcp6]\nipv6_mode = \"slaac+dhcpv6\"", "SLAAC needs a prefix of /64 or shorter"},
		{v6 + "mode = \"routed\"\nnat6 = true", `needs mode "nat", not "routed"`},
		{v6 + "uplink_accept_ra = true", "network.lab.uplink_accept_ra = true: names no interface"},
	}
	for _, c := range cases {
		_, err := Parse([]byte(base+c.doc), "t.toml")
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: got %v, want one line containing %q", c.doc, err, c.want)
		}
	}
}
