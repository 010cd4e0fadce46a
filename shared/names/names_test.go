package names

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestInterface(t *testing.T) {
	for _, ok := range []string{"eth0", "vif7.0", "vif7.0-emu", "tap-web0", "brv0123456789ab", "a", "_x", ".x", "x-", "123456789012345"} {
		if err := Interface(ok); err != nil {
			t.Errorf("Interface(%q): %v", ok, err)
		}
	}
	for _, c := range []struct{ name, want string }{
		{"", "empty"},
		{"1234567890123456", "16 bytes, Linux allows at most 15"},
		{".", "not a usable name"},
		{"..", "not a usable name"},
		{"-h", "starts with '-'"},
		{"--help", "starts with '-'"},
		{"tap/3", `'/'`},
		{"tap:3", `':'`},
		{"tap 3", "whitespace"},
		{"tap\t3", "whitespace"},
		{"tap\n", "whitespace"},
		{"vp1;rm", `';'`},
		{"tap\"", `'"'`},
		{"täp", `'ä'`},
		{"tap\x00", `'\x00'`},
	} {
		err := Interface(c.name)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "interface name ") {
			t.Errorf("Interface(%q) = %v, want an error saying %q", c.name, err, c.want)
		}
	}
}

func TestNetwork(t *testing.T) {
	for _, ok := range []string{"lab", "e2e", "a", "A_b-c", "123456789012345", "0net"} {
		if err := Network(ok); err != nil {
			t.Errorf("Network(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-lab", "_lab", "a.b", "a b", "a/b", "1234567890123456", "läb"} {
		if err := Network(bad); err == nil || !strings.HasPrefix(err.Error(), "network name ") {
			t.Errorf("Network(%q) = %v, want an error", bad, err)
		}
	}
}

// The rules, written once more as the regular expressions the packages used
// before they shared this one, must agree with the code for every input.
var (
	ifnameRE  = regexp.MustCompile(`^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,14}$`)
	networkRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,14}$`)
)

func FuzzInterface(f *testing.F) {
	for _, s := range []string{"eth0", "vif7.0-emu", "-h", ".", "..", "tap/3", "a b", "1234567890123456", "\xff", "ä"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := Interface(name)
		want := ifnameRE.MatchString(name) && name != "." && name != ".."
		if (err == nil) != want {
			t.Fatalf("Interface(%q) = %v, want ok=%v", name, err, want)
		}
		if err != nil && (strings.ContainsAny(err.Error(), "\n\r") || !utf8.ValidString(err.Error())) {
			t.Fatalf("Interface(%q): error is not one line of text: %q", name, err)
		}
	})
}

func FuzzNetwork(f *testing.F) {
	for _, s := range []string{"lab", "-lab", "a.b", "", "123456789012345", "1234567890123456"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := Network(name)
		if (err == nil) != networkRE.MatchString(name) {
			t.Fatalf("Network(%q) = %v, want ok=%v", name, err, networkRE.MatchString(name))
		}
		if err == nil && Interface(name) != nil {
			t.Fatalf("network name %q is not an interface name", name)
		}
	})
}

// The DNS name checks against the regular expressions they replaced (a
// compiled {0,61} repetition cost every program a millisecond at start).
var (
	hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
	domainRE   = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$`)
)

func checkDNSNames(t *testing.T, s string) {
	if got, want := Hostname(s), hostnameRE.MatchString(s); got != want {
		t.Errorf("Hostname(%q) = %v, want %v", s, got, want)
	}
	if got, want := Domain(s), len(s) <= 253 && domainRE.MatchString(s); got != want {
		t.Errorf("Domain(%q) = %v, want %v", s, got, want)
	}
}

var dnsSeeds = []string{"", "a", "-", "a-", "-a", "a-b", "lab", "lab.internal", "lab..internal", ".lab", "lab.",
	"a.b.c", "x_y", "héllo", strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a.", 126) + "a",
	strings.Repeat("abc.", 63) + "a", "9", "0-0", "a.-b", "a.b-"}

func TestDNSNames(t *testing.T) {
	for _, s := range dnsSeeds {
		checkDNSNames(t, s)
	}
}

func FuzzDNSNames(f *testing.F) {
	for _, s := range dnsSeeds {
		f.Add(s)
	}
	f.Fuzz(checkDNSNames)
}
