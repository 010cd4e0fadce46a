package config

import (
	"net"
	"strings"
	"testing"

	"github.com/brouter/brouter/shared/shape"
)

const shapingDoc = `
[network.lab.shaping]
to_guest = "100mbit"
from_guest = "10Mb/s"
priority = "low"
total_to_guest = "1gbit"
total_from_guest = "125MB/s"

[[network.lab.shaping.port]]
mac = "00:16:3e:00:00:01"
to_guest = "1gbit"
priority = "high"

[[network.lab.shaping.port]]
name = "vif7.*"
from_guest = "500kbit"
from_guest_burst = "64kb"
`

func TestShaping(t *testing.T) {
	c, err := Parse([]byte(shapingDoc), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	s := c.Networks["lab"].Shaping
	if s == nil || s.TotalToGuest != 1e9 || s.TotalFromGuest != 1e9 {
		t.Fatalf("aggregate: %+v", s)
	}
	mac, _ := net.ParseMAC("00:16:3e:00:00:01")
	cases := []struct {
		name string
		mac  net.HardwareAddr
		want PortShaping
	}{
		{"vif1.0", nil, PortShaping{ToGuest: 100e6, FromGuest: 10e6, Priority: shape.Low}},
		{"vif1.0", mac, PortShaping{ToGuest: 1e9, FromGuest: 10e6, Priority: shape.High}},
		{"vif7.0", nil, PortShaping{ToGuest: 100e6, FromGuest: 500e3, FromGuestBurst: 64 * 1024, Priority: shape.Low}},
		{"vif7.0", mac, PortShaping{ToGuest: 1e9, FromGuest: 500e3, FromGuestBurst: 64 * 1024, Priority: shape.High}},
	}
	for _, tc := range cases {
		if got := s.ForPort(tc.name, tc.mac); got != tc.want {
			t.Errorf("ForPort(%s, %v) = %+v, want %+v", tc.name, tc.mac, got, tc.want)
		}
	}
	var none *Shaping
	if !none.ForPort("x", nil).IsZero() {
		t.Error("a network without shaping shapes its ports")
	}
}

func TestShapingErrors(t *testing.T) {
	cases := []struct{ doc, want string }{
		{"[network.a.shaping]\nto_guest = \"10\"", `network.a.shaping.to_guest = "10"`},
		{"[network.a.shaping]\nto_guest = \"10 parsecs\"", `network.a.shaping.to_guest = "10 parsecs"`},
		{"[network.a.shaping]\nfrom_guest = \"0mbit\"", `network.a.shaping.from_guest = "0mbit"`},
		{"[network.a.shaping]\nfrom_guest = \"-5mbit\"", `network.a.shaping.from_guest`},
		{"[network.a.shaping]\nto_guest = \"10kbps\"", `network.a.shaping.to_guest = "10kbps"`},
		{"[network.a.shaping]\nto_guest_burst = \"9000gb\"", `network.a.shaping.to_guest_burst`},
		{"[network.a.shaping]\npriority = \"urgent\"", `network.a.shaping.priority = "urgent": want high, medium or low`},
		{"[network.a.shaping]\nrate = \"1mbit\"", "unknown key network.a.shaping.rate"},
		{"[[network.a.shaping.port]]\nto_guest = \"1mbit\"", "network.a.shaping.port[0]: give mac or name"},
		{"[[network.a.shaping.port]]\nmac = \"00:16\"", "network.a.shaping.port[0].mac"},
		{"[[network.a.shaping.port]]\nname = \"vif[\"", "network.a.shaping.port[0].name"},
		{"[[network.a.shaping.port]]\nname = \"x\"\nmatch = 1", "unknown key network.a.shaping.port.match"},
	}
	for _, tc := range cases {
		_, err := Parse([]byte(tc.doc), "t.toml")
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error %v, want one line mentioning %q", tc.doc, err, tc.want)
		}
	}
}
