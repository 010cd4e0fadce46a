package main

import (
	"strings"
	"testing"
)

func TestGuestAddr(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{"10.0.0.5", "10.0.0.5", ""},
		{"10.0.0.5/24", "10.0.0.5", ""}, // xl accepts a prefix length
		{"fd00::5/64", "fd00::5", ""},
		{"::ffff:10.0.0.5", "10.0.0.5", ""},
		{"10.0.0.0/31", "10.0.0.0", ""}, // point to point: both are hosts
		{"10.0.0.9/32", "10.0.0.9", ""},
		{"10.98.1.0/24", "", "is a prefix"},
		{"fd00::/64", "", "is a prefix"},
		{"10.0.0", "", "not an IPv4 or IPv6 address"},
		{"10.0.0.5/33", "", "not an IPv4 or IPv6 address"},
		{"-x", "", "not an IPv4 or IPv6 address"},
	} {
		a, err := guestAddr(c.in)
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("guestAddr(%q) = %v, %v; want an error with %q", c.in, a, err, c.err)
		case c.err == "" && (err != nil || a.String() != c.want):
			t.Errorf("guestAddr(%q) = %v, %v; want %s", c.in, a, err, c.want)
		}
	}
}
