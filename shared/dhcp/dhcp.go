// Package dhcp runs the DHCP server and DNS forwarder of a brouter network:
// one dnsmasq (Debian package dnsmasq-base) per network, with a configuration
// brouter generates.
//
// It is a mechanism: it starts, restarts and stops that dnsmasq, adds and
// removes static leases while it runs, and reads its leases; vnet decides when.
// Every function is idempotent, and the caller serialises calls for one
// network (vnet holds the network's lock).
//
// Files, for a network with RunDir /run/brouter/NAME and StateDir
// /var/lib/brouter/NAME:
//
//	RunDir/dnsmasq.conf     the generated configuration (dnsmasq --conf-file=)
//	RunDir/dnsmasq.pid      the daemon's PID
//	RunDir/dnsmasq.log      its log (DHCP transactions, errors)
//	RunDir/dhcp-hosts.d/    static leases added at run time, one file per MAC (dhcp-hostsdir)
//	RunDir/dns-hosts.d/     their DNS names, one file per MAC (hostsdir)
//	StateDir/leases         the lease database, kept across Stop and reboots of brouter
//
// dnsmasq listens on the network's bridge only (bind-dynamic, never on
// loopback or any other interface), starts as root to bind its sockets and
// open its files, then runs as the user "dnsmasq" (or "nobody" when there is
// no such user): RunDir must be reachable by that user, which Start checks.
//
// dnsmasq runs in the network namespace of the thread that calls Start.
package dhcp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/brouter/brouter/shared/names"
)

// Host is a static lease: the guest with this MAC always gets IP, and Name
// (optional) resolves to IP through the network's DNS forwarder, also as
// Name.Domain when the network has a domain.
type Host struct {
	MAC  net.HardwareAddr
	IP   netip.Addr // IPv4; invalid for a host with IP6 only
	IP6  netip.Addr // DHCPv6 (needs Spec.IPv6); invalid for none
	Name string
}

// Spec is the DHCP and DNS service of one network.
type Spec struct {
	Network string // brouter network name, [A-Za-z0-9][A-Za-z0-9_-]{0,14}
	Bridge  string // the only interface served

	// Gateway is the bridge's address and prefix (10.60.0.1/24): handed out
	// as the router and as the DNS server. IPv4 only.
	Gateway netip.Prefix

	RangeStart, RangeEnd netip.Addr    // dynamic addresses, inside the subnet, not the gateway; both invalid: no DHCPv4
	LeaseTime            time.Duration // 0 means DefaultLeaseTime; else at least 2m, whole seconds
	Domain               string        // optional DNS domain (lab.internal): handed out, answered locally, never forwarded
	Hosts                []Host        // static hosts from the config

	RunDir   string // absolute: config, pid file, log, run-time static leases (/run/brouter/NAME)
	StateDir string // absolute: the leases file (/var/lib/brouter/NAME)

	// Upstream are the DNS servers queries are forwarded to, in order. Empty:
	// dnsmasq follows /etc/resolv.conf as usual.
	Upstream []netip.Addr

	// IPv6: router advertisements and DHCPv6 (ra.go); nil for none.
	IPv6 *IPv6

	// User dnsmasq runs as after startup. "": "dnsmasq" if that account
	// exists (dnsmasq-base creates it), else "nobody".
	User string

	// MTU handed out (DHCP option 26) when not 0: the interface MTU of
	// guests on a network whose frames cross a tunnel.
	MTU int
}

// DefaultLeaseTime is the lease time when Spec.LeaseTime is 0.
const DefaultLeaseTime = time.Hour

// MinLeaseTime is the shortest lease dnsmasq hands out.
const MinLeaseTime = 2 * time.Minute

// Names of the files and directories under RunDir and StateDir.
const (
	ConfFile    = "dnsmasq.conf"
	PidFile     = "dnsmasq.pid"
	LogFile     = "dnsmasq.log"
	DHCPHostDir = "dhcp-hosts.d"
	DNSHostDir  = "dns-hosts.d"
	LeaseFile   = "leases"
)

// validUser is what dnsmasq's user option takes here: a lowercase
// letter or '_', then up to 31 of lowercase letters, digits, '_' and '-'.
func validUser(s string) bool {
	return s != "" && len(s) <= 32 && (s[0] == '_' || s[0] >= 'a' && s[0] <= 'z') &&
		strings.IndexFunc(s, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-') }) < 0
}

// pathChars reports whether a path is absolute and made only of characters
// that go into dnsmasq's config verbatim: no spaces, commas, '#', quotes.
func pathChars(s string) bool {
	return strings.HasPrefix(s, "/") && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_./+@-", r))
	}) < 0
}

func validNetwork(network string) error {
	if err := names.Network(network); err != nil {
		return fmt.Errorf("dhcp: invalid %w", err)
	}
	return nil
}

func validDir(what, dir string) error {
	if !pathChars(dir) || filepath.Clean(dir) != dir || dir == "/" {
		return fmt.Errorf("dhcp: %s %q: want a clean absolute path of letters, digits and _ . / + @ -", what, dir)
	}
	return nil
}

// validHostName checks a host name (one DNS label).
func validHostName(name string) error {
	if !names.Hostname(name) {
		return fmt.Errorf("host name %q: want one DNS label (letters, digits, '-', at most 63, not starting or ending with '-')", name)
	}
	return nil
}

func validMAC(mac net.HardwareAddr) error {
	if len(mac) != 6 || mac[0]&1 == 1 {
		return fmt.Errorf("MAC %q: want a unicast Ethernet address", mac.String())
	}
	return nil
}

// subnet describes the IPv4 network of a gateway prefix.
type subnet struct {
	p         netip.Prefix // masked
	broadcast netip.Addr
}

func newSubnet(gw netip.Prefix) (subnet, error) {
	if !gw.IsValid() || !gw.Addr().Is4() || gw.Addr().Zone() != "" {
		return subnet{}, fmt.Errorf("gateway %q: want an IPv4 address with its prefix, e.g. 10.60.0.1/24", gw.String())
	}
	if gw.Bits() > 30 {
		return subnet{}, fmt.Errorf("gateway %s: a /%d network has no room for guests; want /30 or larger", gw, gw.Bits())
	}
	s := subnet{p: gw.Masked()}
	s.broadcast = addU32(s.p.Addr(), uint32(1)<<(32-gw.Bits())-1)
	if gw.Addr() == s.p.Addr() || gw.Addr() == s.broadcast {
		return subnet{}, fmt.Errorf("gateway %s: that is the network's own or broadcast address, not a host address", gw)
	}
	return s, nil
}

// host checks that a is a host address of the subnet.
func (s subnet) host(a netip.Addr) error {
	if !a.IsValid() || !a.Is4() {
		return fmt.Errorf("want an IPv4 address in %s", s.p)
	}
	if !s.p.Contains(a) || a == s.p.Addr() || a == s.broadcast {
		return fmt.Errorf("%s is not a host address of %s", a, s.p)
	}
	return nil
}

func (s subnet) netmask() string {
	return net.IP(net.CIDRMask(s.p.Bits(), 32)).String()
}

func addU32(a netip.Addr, d uint32) netip.Addr {
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += d
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Validate checks every field of the spec (nothing reaches dnsmasq's config
// unchecked) and returns the first problem, as one line.
func (s *Spec) Validate() error {
	if err := validNetwork(s.Network); err != nil {
		return err
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("dhcp: network %s: "+format, append([]any{s.Network}, args...)...)
	}
	if err := names.Interface(s.Bridge); err != nil {
		return fail("bridge %w", err)
	}
	if s.Bridge == "lo" {
		return fail("bridge %q: not loopback", s.Bridge)
	}
	if s.MTU != 0 && (s.MTU < 68 || s.MTU > 65535) {
		return fail("MTU %d: want 68..65535", s.MTU)
	}
	sub, err := newSubnet(s.Gateway)
	if err != nil {
		return fail("%v", err)
	}
	if s.dhcp4() {
		if err := s.validateRange(sub, fail); err != nil {
			return err
		}
	} else if s.IPv6 == nil {
		return fail("nothing to serve: give a DHCP range or IPv6")
	}
	if s.IPv6 != nil {
		if err := s.IPv6.validate(fail); err != nil {
			return err
		}
	}
	if s.LeaseTime != 0 && (s.LeaseTime < MinLeaseTime || s.LeaseTime%time.Second != 0) {
		return fail("lease time %s: want whole seconds, at least %s", s.LeaseTime, MinLeaseTime)
	}
	if s.Domain != "" && !names.Domain(s.Domain) {
		return fail("domain %q: want a DNS domain such as lab.internal", s.Domain)
	}
	macs, ips, names := map[string]bool{}, map[netip.Addr]bool{}, map[string]bool{}
	for i, h := range s.Hosts {
		if err := checkHost(sub, s.Gateway.Addr(), h); err != nil {
			return fail("host %d: %v", i, err)
		}
		if err := checkHost6(s.IPv6, h); err != nil {
			return fail("host %d: %v", i, err)
		}
		lname := strings.ToLower(h.Name)
		switch {
		case macs[h.MAC.String()]:
			return fail("host %d: MAC %s listed twice", i, h.MAC)
		case h.IP.IsValid() && ips[h.IP] || h.IP6.IsValid() && ips[h.IP6]:
			return fail("host %d: address %s listed twice", i, hostAddrs(h))
		case h.Name != "" && names[lname]:
			return fail("host %d: name %s listed twice", i, h.Name)
		}
		macs[h.MAC.String()], ips[h.IP], ips[h.IP6], names[lname] = true, true, true, h.Name != ""
	}
	if err := validDir("run directory", s.RunDir); err != nil {
		return fail("%v", strings.TrimPrefix(err.Error(), "dhcp: "))
	}
	if err := validDir("state directory", s.StateDir); err != nil {
		return fail("%v", strings.TrimPrefix(err.Error(), "dhcp: "))
	}
	for i, u := range s.Upstream {
		if !u.IsValid() || u.Zone() != "" || u.IsUnspecified() || u.IsMulticast() {
			return fail("upstream %d %q: want a unicast IP address", i, u.String())
		}
		if u == s.Gateway.Addr() {
			return fail("upstream %s is the network's own DNS forwarder", u)
		}
	}
	if s.User != "" && !validUser(s.User) {
		return fail("user %q: want a user name", s.User)
	}
	return nil
}

// dhcp4 reports whether the spec serves DHCPv4 (it has a range).
func (s *Spec) dhcp4() bool { return s.RangeStart.IsValid() || s.RangeEnd.IsValid() }

func (s *Spec) validateRange(sub subnet, fail func(string, ...any) error) error {
	if err := sub.host(s.RangeStart); err != nil {
		return fail("range start: %v", err)
	}
	if err := sub.host(s.RangeEnd); err != nil {
		return fail("range end: %v", err)
	}
	if s.RangeEnd.Less(s.RangeStart) {
		return fail("range end %s is before range start %s", s.RangeEnd, s.RangeStart)
	}
	if gw := s.Gateway.Addr(); !gw.Less(s.RangeStart) && !s.RangeEnd.Less(gw) {
		return fail("range %s-%s contains the gateway %s", s.RangeStart, s.RangeEnd, gw)
	}
	return nil
}

func checkHost(sub subnet, gw netip.Addr, h Host) error {
	if err := validMAC(h.MAC); err != nil {
		return err
	}
	if !h.IP.IsValid() && h.IP6.IsValid() {
		// IPv6 only: checkHost6.
	} else if err := sub.host(h.IP); err != nil {
		return fmt.Errorf("IP: %v", err)
	}
	if h.IP == gw {
		return fmt.Errorf("IP %s is the gateway's own address", h.IP)
	}
	if h.Name != "" {
		if err := validHostName(h.Name); err != nil {
			return err
		}
	}
	return nil
}

// runUser is the account dnsmasq switches to after startup.
func (s *Spec) runUser() string {
	if s.User != "" {
		return s.User
	}
	if _, err := user.Lookup("dnsmasq"); err == nil {
		return "dnsmasq"
	}
	return "nobody"
}

// Config returns the dnsmasq configuration for the spec, after validating it.
// It is what Start writes to RunDir/dnsmasq.conf.
func (s *Spec) Config() (string, error) {
	if err := s.Validate(); err != nil {
		return "", err
	}
	sub, _ := newSubnet(s.Gateway)
	gw := s.Gateway.Addr().String()
	lease := s.LeaseTime
	if lease == 0 {
		lease = DefaultLeaseTime
	}
	var b strings.Builder
	line := func(format string, args ...any) {
		fmt.Fprintf(&b, format+"\n", args...)
	}
	line("# Generated by brouter for network %s; rewritten by every start, do not edit.", s.Network)
	line("# Run as: dnsmasq --conf-file=%s", filepath.Join(s.RunDir, ConfFile))
	line("")
	line("# Serve the bridge and nothing else (never loopback, never another interface).")
	line("interface=%s", s.Bridge)
	line("except-interface=lo")
	line("bind-dynamic")
	line("")
	line("user=%s", s.runUser())
	line("pid-file=%s", filepath.Join(s.RunDir, PidFile))
	line("log-facility=%s", filepath.Join(s.RunDir, LogFile))
	line("")
	line("# DNS")
	line("no-hosts")
	line("domain-needed")
	line("strict-order")
	if len(s.Upstream) > 0 {
		line("no-resolv")
		for _, u := range s.Upstream {
			line("server=%s", u)
		}
	}
	if s.Domain != "" {
		line("domain=%s", s.Domain)
		line("local=/%s/", s.Domain)
		line("expand-hosts")
	}
	line("hostsdir=%s", filepath.Join(s.RunDir, DNSHostDir))
	for _, h := range s.Hosts {
		if h.Name != "" {
			names := strings.ToLower(h.Name)
			if s.Domain != "" {
				names += "," + names + "." + s.Domain
			}
			line("host-record=%s,%s", names, recordAddrs(h))
		}
	}
	line("")
	line("# DHCP")
	if s.dhcp4() {
		line("dhcp-range=%s,%s,%s,%d", s.RangeStart, s.RangeEnd, sub.netmask(), int64(lease/time.Second))
		line("dhcp-option=option:router,%s", gw)
		line("dhcp-option=option:dns-server,%s", gw)
		if s.MTU != 0 {
			line("dhcp-option=option:mtu,%d", s.MTU)
		}
	}
	line("dhcp-authoritative")
	line("dhcp-no-override")
	line("dhcp-leasefile=%s", filepath.Join(s.StateDir, LeaseFile))
	line("dhcp-hostsdir=%s", filepath.Join(s.RunDir, DHCPHostDir))
	for _, h := range s.Hosts {
		line("%s", dhcpHostLine(h))
	}
	if s.IPv6 != nil {
		line("")
		s.IPv6.config(line, s.Bridge, s.Domain)
	}
	return b.String(), nil
}

// dhcpHostLine is a dhcp-host line: the same syntax serves the config file
// and (without "dhcp-host=") a file in dhcp-hostsdir.
func dhcpHostLine(h Host) string {
	l := "dhcp-host=" + h.MAC.String() + "," + hostAddrs(h)
	if h.Name != "" {
		l += "," + strings.ToLower(h.Name)
	}
	return l
}

// ErrNotInstalled is returned (wrapped) when the dnsmasq binary is missing.
var ErrNotInstalled = errors.New("dnsmasq not found: install the package dnsmasq-base (apt-get install dnsmasq-base)")

// Binary is the dnsmasq program Start runs (dnsmasq-base installs it here).
var Binary = "/usr/sbin/dnsmasq"
