package dhcp

import (
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestLeaseJSONHasTextMAC(t *testing.T) {
	mac, _ := net.ParseMAC("00:16:3e:00:00:20")
	b, err := json.Marshal(Lease{MAC: mac, IP: netip.MustParseAddr("10.0.0.5"), Hostname: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if s := string(b); !strings.Contains(s, `"mac":"00:16:3e:00:00:20"`) || !strings.Contains(s, `"ip":"10.0.0.5"`) || strings.Count(s, `"mac"`) != 1 {
		t.Fatalf("JSON %s", s)
	}
}
