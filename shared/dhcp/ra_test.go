package dhcp

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestConfigIPv6(t *testing.T) {
	for _, tc := range []struct {
		mode string
		want []string
	}{
		{ModeSLAAC, []string{"dhcp-range=fd00:60::,ra-stateless,64,1800\n"}},
		{ModeDHCPv6, []string{"dhcp-range=fd00:60::2:0,fd00:60::2:ffff,64,1800\n"}},
		{ModeSLAACDHCPv6, []string{"dhcp-range=fd00:60::2:0,fd00:60::2:ffff,slaac,64,1800\n"}},
	} {
		s := testSpec(t)
		s.Hosts[0].IP6 = netip.MustParseAddr("fd00:60::20")
		s.IPv6 = &IPv6{Gateway: netip.MustParsePrefix("fd00:60::1/64"), Mode: tc.mode, MTU: 1400, LeaseTime: 30 * time.Minute,
			RangeStart: netip.MustParseAddr("fd00:60::2:0"), RangeEnd: netip.MustParseAddr("fd00:60::2:ffff")}
		conf, err := s.Config()
		if err != nil {
			t.Fatalf("%s: %v", tc.mode, err)
		}
		for _, l := range append(tc.want,
			"\nenable-ra\n", "ra-param=br0,mtu:1400,0\n",
			"dhcp-option=option6:dns-server,[fd00:60::1]\n", "dhcp-option=option6:domain-search,lab.internal\n",
			"dhcp-host=02:00:00:00:60:20,10.60.0.20,[fd00:60::20],web\n",
			"host-record=web,web.lab.internal,10.60.0.20,fd00:60::20\n",
			"dhcp-range=10.60.0.100,10.60.0.150,255.255.255.0,3600\n") {
			if !strings.Contains(conf, l) {
				t.Errorf("%s: config lacks %q:\n%s", tc.mode, l, conf)
			}
		}
	}
	// IPv6 alone: no DHCPv4 range, router or DNS option; a host with ip6 only.
	s := testSpec(t)
	s.RangeStart, s.RangeEnd = netip.Addr{}, netip.Addr{}
	s.Hosts = []Host{{MAC: mustMAC(t, "02:00:00:00:60:20"), IP6: netip.MustParseAddr("fd00:60::20"), Name: "web"}}
	s.IPv6 = &IPv6{Gateway: netip.MustParsePrefix("fd00:60::1/64"), Mode: ModeSLAAC}
	conf, err := s.Config()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"dhcp-range=10.", "option:router", "option:dns-server,10.", "ra-param"} {
		if strings.Contains(conf, l) {
			t.Errorf("IPv6 only: config has %q:\n%s", l, conf)
		}
	}
	for _, l := range []string{"dhcp-host=02:00:00:00:60:20,[fd00:60::20],web\n", "dhcp-range=fd00:60::,ra-stateless,64,3600\n"} {
		if !strings.Contains(conf, l) {
			t.Errorf("IPv6 only: config lacks %q:\n%s", l, conf)
		}
	}
}

func TestValidateIPv6(t *testing.T) {
	v6 := func() *IPv6 {
		return &IPv6{Gateway: netip.MustParsePrefix("fd00:60::1/64"), Mode: ModeDHCPv6,
			RangeStart: netip.MustParseAddr("fd00:60::100"), RangeEnd: netip.MustParseAddr("fd00:60::1ff")}
	}
	for _, tc := range []struct {
		name string
		mod  func(s *Spec)
		want string
	}{
		{"nothing", func(s *Spec) { s.IPv6 = nil; s.RangeStart, s.RangeEnd = netip.Addr{}, netip.Addr{} }, "nothing to serve"},
		{"v4 gateway", func(s *Spec) { s.IPv6.Gateway = netip.MustParsePrefix("10.0.0.1/24") }, "IPv6 gateway"},
		{"mode", func(s *Spec) { s.IPv6.Mode = "ra-names" }, "IPv6 mode"},
		{"slaac /120", func(s *Spec) { s.IPv6.Mode = ModeSLAAC; s.IPv6.Gateway = netip.MustParsePrefix("fd00:60::1/120") }, "SLAAC needs"},
		{"range outside", func(s *Spec) { s.IPv6.RangeEnd = netip.MustParseAddr("fd00:61::1") }, "DHCPv6 range"},
		{"range reversed", func(s *Spec) { s.IPv6.RangeStart = netip.MustParseAddr("fd00:60::200") }, "before range start"},
		{"range has gateway", func(s *Spec) { s.IPv6.RangeStart = netip.MustParseAddr("fd00:60::0:1") }, "gateway"},
		{"mtu", func(s *Spec) { s.IPv6.MTU = 1000 }, "MTU"},
		{"host ip6 outside", func(s *Spec) { s.Hosts[0].IP6 = netip.MustParseAddr("fd00:61::5") }, "not a host address"},
		{"host ip6 without IPv6", func(s *Spec) { s.IPv6 = nil; s.Hosts[0].IP6 = netip.MustParseAddr("fd00:60::5") }, "serves no IPv6"},
	} {
		s := testSpec(t)
		s.IPv6 = v6()
		tc.mod(&s)
		err := s.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestHostLineIPv6(t *testing.T) {
	mac := mustMAC(t, "02:00:00:00:60:30")
	for _, h := range []Host{
		{MAC: mac, IP: netip.MustParseAddr("10.60.0.30")},
		{MAC: mac, IP6: netip.MustParseAddr("fd00:60::30"), Name: "db"},
		{MAC: mac, IP: netip.MustParseAddr("10.60.0.30"), IP6: netip.MustParseAddr("fd00:60::30"), Name: "db"},
	} {
		l := strings.TrimPrefix(dhcpHostLine(h), "dhcp-host=")
		got, err := parseHostLine(l)
		if err != nil || got.MAC.String() != h.MAC.String() || got.IP != h.IP || got.IP6 != h.IP6 || got.Name != h.Name {
			t.Errorf("parseHostLine(%q) = %+v, %v; want %+v", l, got, err, h)
		}
	}
	for _, bad := range []string{"02:00:00:00:60:30", "02:00:00:00:60:30,[10.0.0.1]", "02:00:00:00:60:30,a,b,c,d"} {
		if _, err := parseHostLine(bad); err == nil {
			t.Errorf("parseHostLine(%q): no error", bad)
		}
	}
	dir := t.TempDir()
	if err := AddStaticLease(dir, Host{MAC: mac, IP6: netip.MustParseAddr("fd00:60::30"), Name: "db"}); err != nil {
		t.Fatal(err)
	}
	if l, err := StaticLeases(dir); err != nil || len(l) != 1 || l[0].IP6.String() != "fd00:60::30" {
		t.Errorf("StaticLeases = %+v, %v", l, err)
	}
}
