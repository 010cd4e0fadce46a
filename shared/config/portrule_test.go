package config

import (
	"net"
	"testing"
)

func TestPortRuleMatchesMAC(t *testing.T) {
	c, err := Parse([]byte(`
[network.lab]
[[network.lab.port]]
name = "vif*"
mac = "00:16:3e:00:00:20"
ips = ["10.6.7.20"]
[[network.lab.port]]
name = "*"
ips = ["10.6.7.30"]
antispoof = false
`), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	n := c.Networks["lab"]
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	for _, tc := range []struct {
		ifname string
		mac    net.HardwareAddr
		want   string
	}{
		{"vif1.0", mac("00:16:3e:00:00:20"), "10.6.7.20"},
		{"vif1.0", nil, "10.6.7.20"},
		{"vif1.0", mac("00:16:3e:00:00:21"), "10.6.7.30"},
		{"brv0123456789ab", mac("00:16:3e:00:00:20"), "10.6.7.30"},
	} {
		p := n.PortRuleFor(tc.ifname, tc.mac)
		if p == nil || len(p.IPs) != 1 || p.IPs[0].String() != tc.want {
			t.Errorf("PortRuleFor(%s, %v) = %+v, want the rule giving %s", tc.ifname, tc.mac, p, tc.want)
		}
	}
}
