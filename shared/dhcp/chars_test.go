package dhcp

import (
	"regexp"
	"strings"
	"testing"
)

// validUser and pathChars against the regular expressions they replaced.
var (
	userRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	pathRE = regexp.MustCompile(`^/[A-Za-z0-9_./+@-]*$`)
)

func checkChars(t *testing.T, s string) {
	if got, want := validUser(s), userRE.MatchString(s); got != want {
		t.Errorf("validUser(%q) = %v, want %v", s, got, want)
	}
	if got, want := pathChars(s), pathRE.MatchString(s); got != want {
		t.Errorf("pathChars(%q) = %v, want %v", s, got, want)
	}
}

var charSeeds = []string{"", "a", "_", "-a", "dnsmasq", "Dnsmasq", "nobody-1", "a b", strings.Repeat("a", 32), strings.Repeat("a", 33),
	"/", "/run/brouter", "/run/br outer", "relative", "/a,b", "/a#b", "/x+y@z.-_", "/ü"}

func TestCharChecks(t *testing.T) {
	for _, s := range charSeeds {
		checkChars(t, s)
	}
}

func FuzzCharChecks(f *testing.F) {
	for _, s := range charSeeds {
		f.Add(s)
	}
	f.Fuzz(checkChars)
}
