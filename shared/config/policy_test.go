package config

import (
	"net/netip"
	"strings"
	"testing"
)

const policyLab = `
[network.lab]
bridge = "brlab"
address = "10.98.98.1/24"
address6 = "fd00:98::1/64"
mode = "routed"
isolate_guests = true
host_access = "services"
host_services = ["tcp/22", "udp/5000-5010", "icmp"]
reach = ["dmz"]

[network.lab.dhcp]
[[network.lab.dhcp.host]]
mac = "00:16:3e:00:00:20"
ip = "10.98.98.20"
name = "web"

[[network.lab.forward]]
proto = "tcp"
host_port = "2222"
host_ip = "192.0.2.1"
guest = "10.98.98.11"
guest_port = "22"

[[network.lab.forward]]
host_port = "8000-8010"
guest = "web"
guest_port = 9000

[[network.lab.forward]]
proto = "udp"
host_port = 53
guest = "fd00:98::11"

[network.lab.incoming]
default = "deny"
[[network.lab.incoming.allow]]
proto = "tcp"
port = "443"
[[network.lab.incoming.deny]]
from = "203.0.113.7"

[network.lab.outgoing]
[[network.lab.outgoing.deny]]
proto = "tcp"
port = "25"
[[network.lab.outgoing.allow]]
proto = "tcp"
port = 25
from = ["10.98.98.25"]
to = ["198.51.100.0/24", "2001:db8::/32"]

[network.dmz]
bridge = "brdmz"
address = "10.99.0.1/24"
`

func TestPolicyParse(t *testing.T) {
	c, err := Parse([]byte(policyLab), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	p := c.Networks["lab"].Policy
	if !p.IsolateGuests || p.HostAccess != HostAccessServices || len(p.Reach) != 1 || p.Reach[0] != "dmz" {
		t.Fatalf("policy: %+v", p)
	}
	if got := len(p.HostServices); got != 3 || p.HostServices[1].Proto != "udp" || p.HostServices[1].Ports != (PortRange{5000, 5010}) || p.HostServices[2].Proto != "icmp" {
		t.Fatalf("host services: %+v", p.HostServices)
	}
	want := []Forward{
		{Proto: "tcp", HostIP: netip.MustParseAddr("192.0.2.1"), HostPorts: PortRange{2222, 2222}, GuestIP: netip.MustParseAddr("10.98.98.11"), GuestPort: 22, Guest: "10.98.98.11"},
		{Proto: "tcp", HostPorts: PortRange{8000, 8010}, GuestIP: netip.MustParseAddr("10.98.98.20"), GuestPort: 9000, Guest: "web"},
		{Proto: "udp", HostPorts: PortRange{53, 53}, GuestIP: netip.MustParseAddr("fd00:98::11"), GuestPort: 53, Guest: "fd00:98::11"},
	}
	if len(p.Forwards) != len(want) {
		t.Fatalf("forwards: %+v", p.Forwards)
	}
	for i := range want {
		if p.Forwards[i] != want[i] {
			t.Errorf("forward %d: %+v, want %+v", i, p.Forwards[i], want[i])
		}
	}
	// Exceptions first: with default deny, the deny rules come before the allows.
	in := p.Incoming
	if !in.Deny || len(in.Rules) != 2 || in.Rules[0].Allow || in.Rules[0].From[0] != netip.MustParsePrefix("203.0.113.7/32") || !in.Rules[1].Allow || in.Rules[1].Ports != (PortRange{443, 443}) {
		t.Errorf("incoming: %+v", in)
	}
	out := p.Outgoing
	if out.Deny || len(out.Rules) != 2 || !out.Rules[0].Allow || len(out.Rules[0].To) != 2 || out.Rules[1].Allow || out.Rules[1].Proto != "tcp" {
		t.Errorf("outgoing: %+v", out)
	}
	if d := c.Networks["dmz"].Policy; d.HostAccess != HostAccessAll || !d.Incoming.IsZero() || !d.Outgoing.IsZero() || d.IsolateGuests {
		t.Errorf("defaults: %+v", d)
	}
	// Select validates the same keys again.
	if n, err := c.Select("lab", nil); err != nil || len(n.Policy.Forwards) != 3 {
		t.Errorf("Select: %v %v", n, err)
	}
}

func TestPolicyErrors(t *testing.T) {
	base := "[network.lab]\nbridge = \"brlab\"\naddress = \"10.98.98.1/24\"\n"
	other := "[network.dmz]\nbridge = \"brdmz\"\naddress = \"10.99.0.1/24\"\n"
	fwd := func(extra string) string {
		return base + "[[network.lab.forward]]\nguest = \"10.98.98.11\"\n" + extra
	}
	tests := []struct{ name, doc, want string }{
		{"unknown key", base + "isolate = true\n", "unknown key network.lab.isolate"},
		{"unknown forward key", fwd("host_port = 22\nport = 1\n"), "unknown key network.lab.forward.port"},
		{"forward outside the network", base + "[[network.lab.forward]]\nhost_port = 22\nguest = \"10.1.2.3\"\n", "network.lab.forward[0].guest = \"10.1.2.3\": outside network lab's subnets"},
		{"forward to the gateway", base + "[[network.lab.forward]]\nhost_port = 22\nguest = \"10.98.98.1\"\n", "gateway"},
		{"forward to an unknown host name", base + "[[network.lab.forward]]\nhost_port = 22\nguest = \"web\"\n", "not an address, nor the name"},
		{"forward without host_port", fwd(""), "needs host_port"},
		{"port 0", fwd("host_port = 0\n"), "host_port = \"0\": port \"0\": want 1..65535"},
		{"port 70000", fwd("host_port = \"70000\"\n"), "want 1..65535"},
		{"guest port 70000", fwd("host_port = 22\nguest_port = 70000\n"), "guest_port = \"70000\""},
		{"range too big", fwd("host_port = \"1000-3000\"\n"), "at most 1024 ports"},
		{"reversed range", fwd("host_port = \"10-5\"\n"), "ends before it starts"},
		{"target range past 65535", fwd("host_port = \"100-110\"\nguest_port = 65530\n"), "passes port 65535"},
		{"guest range of another size", fwd("host_port = \"100-110\"\nguest_port = \"200-205\"\n"), "as many ports"},
		{"bad proto", fwd("host_port = 22\nproto = \"icmp\"\n"), "want tcp, udp or sctp"},
		{"host_ip of another family", fwd("host_port = 22\nhost_ip = \"2001:db8::1\"\n"), "family"},
		{"host_ip ::1", base + "address6 = \"fd00::1/64\"\n[[network.lab.forward]]\nhost_port = 22\nguest = \"fd00::5\"\nhost_ip = \"::1\"\n", "::1 cannot be forwarded"},
		{"overlapping ranges", fwd("host_port = \"8000-8010\"\n") + "[[network.lab.forward]]\nhost_port = 8005\nguest = \"10.98.98.12\"\n", "forward[1]: host port tcp 8005 overlaps network.lab.forward[0]"},
		{"overlap across networks", fwd("host_port = 8080\n") + other + "[[network.dmz.forward]]\nhost_port = \"8000-8100\"\nguest = \"10.99.0.5\"\n", "host port tcp 8080 is forwarded by network.dmz too"},
		{"forward in mode bridge", "[network.lan]\nbridge = \"br0\"\nmode = \"bridge\"\naddress = \"10.1.0.1/24\"\n[[network.lan.forward]]\nhost_port = 22\nguest = \"10.1.0.5\"\n", "forwards need a network"},
		{"reach unknown", base + "reach = [\"nope\"]\n", "network.lab.reach[0] = \"nope\": no [network.nope] table"},
		{"reach itself", base + "reach = [\"lab\"]\n", "name other networks"},
		{"reach twice", base + "reach = [\"dmz\", \"dmz\"]\n" + other, "listed twice"},
		{"reach a bridge network", base + "reach = [\"lan\"]\n[network.lan]\nbridge = \"br0\"\nmode = \"bridge\"\n", "mode \"bridge\""},
		{"host_access bad", base + "host_access = \"none\"\n", "want \"all\" or \"services\""},
		{"host_services without services", base + "host_services = [\"tcp/22\"]\n", "only with host_access = \"services\""},
		{"host_services bad", base + "host_access = \"services\"\nhost_services = [\"ssh\"]\n", "host_services[0] = \"ssh\""},
		{"host_services port 0", base + "host_access = \"services\"\nhost_services = [\"tcp/0\"]\n", "want 1..65535"},
		{"isolate in mode route", "[network.r]\nmode = \"route\"\naddress = \"10.1.0.1/24\"\nisolate_guests = true\n", "has no bridge"},
		{"default bad", base + "[network.lab.outgoing]\ndefault = \"reject\"\n", "want \"allow\" or \"deny\""},
		{"icmp with a port", base + "[[network.lab.outgoing.deny]]\nproto = \"icmp\"\nport = 1\n", "ICMP has no ports"},
		{"rule port 70000", base + "[[network.lab.outgoing.deny]]\nproto = \"tcp\"\nport = 70000\n", "want 1..65535"},
		{"outgoing from a non-guest", base + "[[network.lab.outgoing.deny]]\nfrom = [\"192.0.2.5\"]\n", "outgoing.deny[0].from[0] = \"192.0.2.5\": not guests of network lab"},
		{"incoming to a non-guest", base + "mode = \"routed\"\n[[network.lab.incoming.allow]]\nto = \"192.0.2.5\"\n", "not guests"},
		{"host bits", base + "[[network.lab.outgoing.deny]]\nto = \"192.0.2.5/24\"\n", "host bits set"},
		{"families that never meet", base + "[[network.lab.outgoing.deny]]\nfrom = \"10.98.98.5\"\nto = \"2001:db8::/32\"\n", "matches nothing"},
		{"incoming in mode isolated", base + "mode = \"isolated\"\n[network.lab.incoming]\ndefault = \"deny\"\n", "mode \"isolated\""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc), "t.toml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
			if testing.Verbose() {
				t.Log(err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}
