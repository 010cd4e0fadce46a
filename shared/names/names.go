// Package names holds the rules for the names brouter hands to the kernel,
// to nft, iptables, tc and dnsmasq, and uses in its own record paths:
// interface names and network names. Every package checks names here, so a
// name one of them accepts is accepted by all.
package names

import (
	"fmt"
	"strings"
	"unicode"
)

// MaxInterface is the longest interface name Linux takes (IFNAMSIZ less its NUL).
const MaxInterface = 15

// MaxNetwork is the longest network name: it names nftables tables and
// iptables chains (BR-FWD-NAME must fit iptables' 28 characters).
const MaxNetwork = 15

// Interface reports whether name is usable as a Linux interface name here:
// 1..15 bytes, not "." or "..", no '/', ':' or whitespace (the kernel's
// rules), not starting with '-' (it would be taken for an option by the
// programs it is passed to), and only letters, digits, '_', '.' and '-'
// (the name also goes into firewall rules, dnsmasq's config and file names).
func Interface(name string) error {
	if why := interfaceProblem(name); why != "" {
		return fmt.Errorf("interface name %q: %s", name, why)
	}
	return nil
}

func interfaceProblem(name string) string {
	switch {
	case name == "":
		return "empty"
	case len(name) > MaxInterface:
		return fmt.Sprintf("%d bytes, Linux allows at most %d", len(name), MaxInterface)
	case name == "." || name == "..":
		return "not a usable name"
	case name[0] == '-':
		return "starts with '-'"
	}
	for _, r := range name {
		switch {
		case r == '/' || r == ':':
			return fmt.Sprintf("contains %q, which Linux does not allow", r)
		case unicode.IsSpace(r):
			return "contains whitespace, which Linux does not allow"
		case !isWordChar(r) && r != '.':
			return fmt.Sprintf("contains %q: want letters, digits, '_', '.' and '-'", r)
		}
	}
	return ""
}

// Network reports whether name can name a brouter network: 1..15 letters,
// digits, '_' and '-', starting with a letter or digit.
func Network(name string) error {
	const want = "want 1-15 characters from A-Z a-z 0-9 _ -, starting with a letter or digit"
	ok := name != "" && len(name) <= MaxNetwork && isAlnum(rune(name[0])) &&
		strings.IndexFunc(name, func(r rune) bool { return !isWordChar(r) }) < 0
	if !ok {
		return fmt.Errorf("network name %q: %s", name, want)
	}
	return nil
}

func isAlnum(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
}

func isWordChar(r rune) bool { return isAlnum(r) || r == '_' || r == '-' }

// Hostname reports whether s is one DNS label as DHCP hosts and dnsmasq
// take it: 1..63 letters, digits and '-', starting and ending with a letter
// or digit.
func Hostname(s string) bool {
	if s == "" || len(s) > 63 || !isAlnum(rune(s[0])) || !isAlnum(rune(s[len(s)-1])) {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		if c := rune(s[i]); !isAlnum(c) && c != '-' {
			return false
		}
	}
	return true
}

// Domain reports whether s is a DNS domain of Hostname labels joined by
// '.' (no trailing dot), at most 253 bytes.
func Domain(s string) bool {
	if len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if !Hostname(label) {
			return false
		}
	}
	return true
}
