// Package config reads and validates the brouter host config (TOML).
//
// The file is optional: with no file the built-in defaults apply. Decoding is
// strict: an unknown key is an error naming its full key path, and a bad value
// is an error naming the key, the value and what is allowed. Everything a
// program receives from this package has been validated, so later code may use
// names and prefixes without checking them again.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/brouter/brouter/shared/names"
)

// DefaultPath is where the host config lives unless --config or BROUTER_CONFIG say otherwise.
const DefaultPath = "/etc/brouter/brouter.toml"

// Environment variables that override paths (for tests and unusual installs).
const (
	EnvConfig   = "BROUTER_CONFIG"
	EnvRunDir   = "BROUTER_RUN_DIR"
	EnvStateDir = "BROUTER_STATE_DIR"
)

// Built-in defaults, those of Xen's network-virtual script.
const (
	DefaultRunDir      = "/run/brouter"
	DefaultStateDir    = "/var/lib/brouter"
	DefaultLockTimeout = 10 * time.Second // well under libxl's 40 s hotplug timeout
	DefaultBridge      = "xenbr0"
	DefaultAddress     = "10.6.7.1/24"
	DefaultMTU         = 1500
)

// Mode says how a network reaches the rest of the world.
type Mode string

// Network modes.
const (
	// ModeNAT: guests are bridged to each other, routed to the host and masqueraded out.
	ModeNAT Mode = "nat"
	// ModeRouted: forwarded without NAT; the upstream router has a route back.
	ModeRouted Mode = "routed"
	// ModeIsolated: guests and host only, nothing forwarded.
	ModeIsolated Mode = "isolated"
	// ModeRoute: no bridge; every guest port gets the network's address as a
	// /32 (/128), proxy ARP and a host route per guest address: Xen's two-way
	// routed setup (vif-route). Forwarded, never NATed.
	ModeRoute Mode = "route"
	// ModeBridge: an existing bridge (e.g. holding the physical NIC); attach only,
	// never create, address or delete it.
	ModeBridge Mode = "bridge"
)

// Modes lists the valid modes in the order the documentation gives them.
var Modes = []Mode{ModeNAT, ModeRouted, ModeIsolated, ModeRoute, ModeBridge}

// Firewall backends.
const (
	FirewallAuto     = "auto"
	FirewallNftables = "nftables"
	FirewallIPTables = "iptables"
)

// Config is a validated host config.
type Config struct {
	// Path is the file it was read from; empty when built-in defaults apply.
	Path string
	// RunDir holds volatile state (records, locks, generated files): /run/brouter.
	RunDir string
	// StateDir holds state that survives a reboot (leases): /var/lib/brouter.
	StateDir string
	// LockTimeout bounds how long an invocation waits for another one.
	LockTimeout time.Duration
	// DefaultNetwork is used when a caller names no network.
	DefaultNetwork string
	// Networks by name.
	Networks map[string]*Network

	specs map[string]*NetworkSpec // as written, for Select's overrides
}

// Network is one validated [network.NAME] table.
type Network struct {
	Name   string
	Bridge string
	Mode   Mode
	// Gateway is the bridge's IPv4 address with the network's prefix length
	// (10.98.98.1/24). Invalid (zero) in bridge mode when no address is given.
	Gateway netip.Prefix
	// Subnet is Gateway's network (10.98.98.0/24).
	Subnet netip.Prefix
	// Gateway6/Subnet6: optional IPv6 address of the bridge. IPv6 is routed, never NATed.
	Gateway6 netip.Prefix
	Subnet6  netip.Prefix
	// Uplink restricts forwarding and NAT to one outgoing interface; empty means
	// whatever the routing table uses.
	Uplink       string
	MTU          int
	STP          bool
	ForwardDelay int // seconds
	Antispoof    bool
	Firewall     string
	// Shaping: per-port limits and the network's aggregate; nil when not configured.
	Shaping *Shaping
	// DHCP: the network's DHCP and DNS service; nil when not configured.
	DHCP *DHCP
	// DHCP6: router advertisements and DHCPv6 (dhcp6.go); nil when the
	// network has none (no address6, ipv6_mode "none", mode route or bridge).
	DHCP6 *DHCP6
	// NAT6: masquerade the IPv6 prefix like IPv4 (mode nat only).
	NAT6 bool
	// UplinkAcceptRA: start sets accept_ra = 2 on the uplink, so that the
	// host keeps its own SLAAC there once IPv6 forwarding is on.
	UplinkAcceptRA bool
	// Alloc: the pools brouter's own allocator hands out from (always set
	// for a subnet the network has).
	Alloc Alloc
	// PortRules: what is known about the guests behind matching ports.
	PortRules []PortRule
	// Policy: isolation, host access, reach, forwards, incoming and
	// outgoing rules (policy.go).
	Policy Policy
	// Overlay: the network spans hosts (overlay.go); nil when it does not.
	Overlay *Overlay
	// AllowUsers and AllowGroups: who besides root may attach guests
	// through the bridge helper (names or numeric ids; see access.go).
	AllowUsers  []Principal
	AllowGroups []Principal
}

// Subnets returns the network's configured subnets (IPv4 first).
func (n *Network) Subnets() []netip.Prefix {
	var out []netip.Prefix
	if n.Subnet.IsValid() {
		out = append(out, n.Subnet)
	}
	if n.Subnet6.IsValid() {
		out = append(out, n.Subnet6)
	}
	return out
}

// file mirrors the TOML document. Pointers tell "absent" from "zero".
type file struct {
	RunDir         string                  `toml:"run_dir"`
	StateDir       string                  `toml:"state_dir"`
	LockTimeout    string                  `toml:"lock_timeout"`
	DefaultNetwork string                  `toml:"default_network"`
	Network        map[string]*NetworkSpec `toml:"network"`
}

// NetworkSpec is a [network.NAME] table as written, before validation. Callers
// that take settings from elsewhere (xend's VAR=VAL arguments) overlay them on
// a NetworkSpec and validate the result with the same code.
type NetworkSpec struct {
	Bridge       *string `toml:"bridge"`
	Address      *string `toml:"address"`
	Subnet       *string `toml:"subnet"`
	Address6     *string `toml:"address6"`
	Mode         *string `toml:"mode"`
	Uplink       *string `toml:"uplink"`
	MTU          *int    `toml:"mtu"`
	STP          *bool   `toml:"stp"`
	ForwardDelay *int    `toml:"forward_delay"`
	Antispoof    *bool   `toml:"antispoof"`
	Firewall     *string `toml:"firewall"`
	NAT6         *bool   `toml:"nat6"`
	// UplinkAcceptRA: see Network.UplinkAcceptRA.
	UplinkAcceptRA *bool `toml:"uplink_accept_ra"`

	AllowUsers  []Principal `toml:"allow_users"`
	AllowGroups []Principal `toml:"allow_groups"`

	Shaping *ShapingSpec   `toml:"shaping"`
	DHCP    *DHCPSpec      `toml:"dhcp"`
	DHCP6   *DHCP6Spec     `toml:"dhcp6"`
	Alloc   *AllocSpec     `toml:"alloc"`
	Port    []PortRuleSpec `toml:"port"`
	Overlay *OverlaySpec   `toml:"overlay"`

	PolicySpec // isolate_guests, host_access, reach, forward, incoming, outgoing (policy.go)
}

// Load reads the host config. path "" means: BROUTER_CONFIG, else DefaultPath.
// A missing file at the default location is not an error (built-in defaults
// apply); a missing file that was asked for explicitly is.
func Load(path string) (*Config, error) {
	explicit := path != ""
	if !explicit {
		if p := os.Getenv(EnvConfig); p != "" {
			path, explicit = p, true
		} else {
			path = DefaultPath
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && !explicit {
			return Parse(nil, "")
		}
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, path)
}

// Parse validates a TOML document; path is used in messages only.
func Parse(data []byte, path string) (*Config, error) {
	where := path
	if where == "" {
		where = "config"
	}
	var f file
	md, err := toml.Decode(string(data), &f)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return nil, fmt.Errorf("config: %s: line %d: %s", where, perr.Position.Line, oneLine(perr.Message))
		}
		return nil, fmt.Errorf("config: %s: %s", where, oneLine(err.Error()))
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		sort.Strings(keys)
		return nil, fmt.Errorf("config: %s: unknown key %s", where, strings.Join(keys, ", "))
	}
	c := &Config{
		Path:           path,
		RunDir:         firstNonEmpty(os.Getenv(EnvRunDir), f.RunDir, DefaultRunDir),
		StateDir:       firstNonEmpty(os.Getenv(EnvStateDir), f.StateDir, DefaultStateDir),
		LockTimeout:    DefaultLockTimeout,
		DefaultNetwork: f.DefaultNetwork,
		Networks:       map[string]*Network{},
	}
	for _, d := range []struct{ key, val string }{{"run_dir", c.RunDir}, {"state_dir", c.StateDir}} {
		if !strings.HasPrefix(d.val, "/") {
			return nil, fmt.Errorf("config: %s: %s = %q: must be an absolute path", where, d.key, d.val)
		}
	}
	if f.LockTimeout != "" {
		d, err := time.ParseDuration(f.LockTimeout)
		if err != nil || d <= 0 || d > 35*time.Second {
			return nil, fmt.Errorf("config: %s: lock_timeout = %q: want a duration between 1ms and 35s (Xen kills hotplug scripts after 40s), e.g. \"10s\"", where, f.LockTimeout)
		}
		c.LockTimeout = d
	}
	names := make([]string, 0, len(f.Network))
	for name := range f.Network {
		names = append(names, name)
	}
	sort.Strings(names)
	bridges := map[string]string{}
	for _, name := range names {
		spec := f.Network[name]
		if spec == nil {
			spec = &NetworkSpec{}
		}
		n, err := spec.Validate(name)
		if err != nil {
			return nil, fmt.Errorf("config: %s: %w", where, err)
		}
		if other, dup := bridges[n.Bridge]; dup && n.Bridge != "" {
			return nil, fmt.Errorf("config: %s: network.%s.bridge = %q: already used by network.%s", where, name, n.Bridge, other)
		}
		bridges[n.Bridge] = name
		c.Networks[name] = n
	}
	if err := validatePolicies(c); err != nil {
		return nil, fmt.Errorf("config: %s: %w", where, err)
	}
	if err := checkOverlays(c.Networks); err != nil {
		return nil, fmt.Errorf("config: %s: %w", where, err)
	}
	if c.DefaultNetwork != "" {
		if _, ok := c.Networks[c.DefaultNetwork]; !ok {
			return nil, fmt.Errorf("config: %s: default_network = %q: no [network.%s] table (have: %s)", where, c.DefaultNetwork, c.DefaultNetwork, strings.Join(names, ", "))
		}
	}
	c.specs = f.Network
	return c, nil
}

// ValidNetworkName reports whether name can name a network (it also names
// firewall tables and state files).
func ValidNetworkName(name string) error {
	if err := names.Network(name); err != nil {
		return err
	}
	if reservedNames[name] {
		return fmt.Errorf("network name %q is reserved (brouter keeps its own records under that name in run_dir)", name)
	}
	return nil
}

// reservedNames are run_dir entries of brouter's own; a network's own
// directory (run_dir/NAME, for its DHCP server) must not collide with them.
var reservedNames = map[string]bool{"locks": true, "networks": true, "ports": true, "forwards": true, "hostports": true}

// Validate checks a spec and fills in defaults; name is the [network.NAME] key.
func (s *NetworkSpec) Validate(name string) (*Network, error) {
	key := func(k string) string { return "network." + name + "." + k }
	if err := ValidNetworkName(name); err != nil {
		return nil, fmt.Errorf("[network.%s]: %w", name, err)
	}
	n := &Network{Name: name, Bridge: DefaultBridge, Mode: ModeNAT, MTU: DefaultMTU, Firewall: FirewallAuto}
	for _, step := range []func(func(string) string, *Network) error{
		s.validateBridge, s.validateAddresses, s.validateLink,
	} {
		if err := step(key, n); err != nil {
			return nil, err
		}
	}
	if err := s.validateTables(key, n); err != nil {
		return nil, err
	}
	if s.Firewall != nil {
		switch *s.Firewall {
		case FirewallAuto, FirewallNftables, FirewallIPTables:
			n.Firewall = *s.Firewall
		default:
			return nil, fmt.Errorf("%s = %q: want one of auto, nftables, iptables", key("firewall"), *s.Firewall)
		}
	}
	return n, nil
}

// validateBridge sets the network's mode and bridge.
func (s *NetworkSpec) validateBridge(key func(string) string, n *Network) error {
	if s.Mode != nil {
		n.Mode = Mode(*s.Mode)
		if !validMode(n.Mode) {
			return fmt.Errorf("%s = %q: want one of %s", key("mode"), *s.Mode, joinModes())
		}
	}
	if n.Mode == ModeRoute {
		// No bridge: vifs name the network by its name in their bridge= key.
		if s.Bridge != nil && *s.Bridge != "" {
			return fmt.Errorf("%s = %q: mode \"route\" has no bridge; remove the key (guests select the network with bridge=%s)", key("bridge"), *s.Bridge, n.Name)
		}
		n.Bridge = ""
		return nil
	}
	if s.Bridge != nil {
		n.Bridge = *s.Bridge
	}
	if err := names.Interface(n.Bridge); err != nil {
		return fmt.Errorf("%s: bridge %w", key("bridge"), err)
	}
	return nil
}

// validateAddresses sets the network's gateways and subnets.
func (s *NetworkSpec) validateAddresses(key func(string) string, n *Network) error {
	if s.Address != nil && *s.Address != "" {
		p, err := netip.ParsePrefix(*s.Address)
		if err != nil || !p.Addr().Is4() {
			return fmt.Errorf("%s = %q: want the bridge's IPv4 address with its prefix length, e.g. \"10.98.98.1/24\"", key("address"), *s.Address)
		}
		if err := hostAddress(p); err != nil {
			return fmt.Errorf("%s = %q: %w", key("address"), *s.Address, err)
		}
		n.Gateway, n.Subnet = p, p.Masked()
	} else if n.Mode != ModeBridge {
		p := netip.MustParsePrefix(DefaultAddress)
		n.Gateway, n.Subnet = p, p.Masked()
	}
	if s.Subnet != nil && *s.Subnet != "" {
		p, err := netip.ParsePrefix(*s.Subnet)
		if err != nil || !p.Addr().Is4() {
			return fmt.Errorf("%s = %q: want an IPv4 network, e.g. \"10.98.98.0/24\"", key("subnet"), *s.Subnet)
		}
		if p != p.Masked() {
			return fmt.Errorf("%s = %q: host bits set; the network is %s", key("subnet"), *s.Subnet, p.Masked())
		}
		if !n.Gateway.IsValid() {
			return fmt.Errorf("%s = %q: needs an address in that network", key("subnet"), *s.Subnet)
		}
		if p != n.Subnet {
			return fmt.Errorf("%s = %s: address is outside subnet %s (%s is in %s)", key("address"), n.Gateway, p, n.Gateway.Addr(), n.Subnet)
		}
	}
	if s.Address6 != nil && *s.Address6 != "" {
		p, err := netip.ParsePrefix(*s.Address6)
		if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
			return fmt.Errorf("%s = %q: want the bridge's IPv6 address with its prefix length, e.g. \"fd00:98::1/64\"", key("address6"), *s.Address6)
		}
		if err := hostAddress(p); err != nil {
			return fmt.Errorf("%s = %q: %w", key("address6"), *s.Address6, err)
		}
		n.Gateway6, n.Subnet6 = p, p.Masked()
	}
	if n.Mode == ModeBridge && n.Gateway6.IsValid() {
		return fmt.Errorf("%s: mode \"bridge\" attaches to an existing bridge and never configures its addresses; remove address6", key("address6"))
	}
	return nil
}

// validateLink sets the uplink, the bridge's MTU and spanning tree, antispoof.
func (s *NetworkSpec) validateLink(key func(string) string, n *Network) error {
	if s.Uplink != nil && *s.Uplink != "" {
		if err := names.Interface(*s.Uplink); err != nil {
			return fmt.Errorf("%s: uplink %w", key("uplink"), err)
		}
		if *s.Uplink == n.Bridge && n.Bridge != "" {
			return fmt.Errorf("%s = %q: the uplink cannot be the network's own bridge", key("uplink"), *s.Uplink)
		}
		n.Uplink = *s.Uplink
	}
	if s.MTU != nil {
		if *s.MTU < 68 || *s.MTU > 65535 {
			return fmt.Errorf("%s = %d: want 68..65535", key("mtu"), *s.MTU)
		}
		n.MTU = *s.MTU
	}
	if s.STP != nil {
		n.STP = *s.STP
	}
	if s.ForwardDelay != nil {
		// The kernel accepts 2..30 s with STP on; 0 is only meaningful with STP off.
		if *s.ForwardDelay < 0 || *s.ForwardDelay > 30 {
			return fmt.Errorf("%s = %d: want 0..30 (seconds)", key("forward_delay"), *s.ForwardDelay)
		}
		n.ForwardDelay = *s.ForwardDelay
	}
	if n.STP && n.ForwardDelay < 2 {
		if s.ForwardDelay != nil {
			return fmt.Errorf("%s = %d: with stp = true the kernel needs 2..30 seconds", key("forward_delay"), *s.ForwardDelay)
		}
		n.ForwardDelay = 15 // the 802.1D default
	}
	if s.Antispoof != nil {
		n.Antispoof = *s.Antispoof
	}
	return nil
}

// validateTables validates the network's sub-tables, in an order where each
// may rely on what the ones before set (DHCP before the allocator's pool).
func (s *NetworkSpec) validateTables(key func(string) string, n *Network) (err error) {
	if n.Shaping, err = s.Shaping.validate(key("shaping")); err != nil {
		return err
	}
	if n.DHCP, err = s.DHCP.validate(key("dhcp"), n); err != nil {
		return err
	}
	if n.DHCP6, err = s.DHCP6.validate(key("dhcp6"), n); err != nil {
		return err
	}
	if err := validateIPv6Keys(key, s, n); err != nil {
		return err
	}
	if n.Alloc, err = s.Alloc.validate(key("alloc"), n); err != nil {
		return err
	}
	if n.PortRules, err = validatePorts(key("port"), s.Port); err != nil {
		return err
	}
	if n.Policy, err = s.PolicySpec.validate(key, n); err != nil {
		return err
	}
	if n.Overlay, err = s.Overlay.validate(key("overlay"), n, s.MTU); err != nil {
		return err
	}
	if n.AllowUsers, err = validatePrincipals(key("allow_users"), s.AllowUsers); err != nil {
		return err
	}
	n.AllowGroups, err = validatePrincipals(key("allow_groups"), s.AllowGroups)
	return err
}

// hostAddress rejects a network or broadcast address used as the gateway.
func hostAddress(p netip.Prefix) error {
	if p.Bits() == p.Addr().BitLen() {
		return fmt.Errorf("prefix /%d leaves no room for guests", p.Bits())
	}
	if p.Addr() == p.Masked().Addr() && !(p.Addr().Is4() && p.Bits() >= 31) {
		return fmt.Errorf("that is the network address of %s, not a host address", p.Masked())
	}
	if p.Addr().Is4() && p.Bits() < 31 {
		b := p.Masked().Addr().As4()
		hostBits := 32 - p.Bits()
		v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
		v |= (1 << hostBits) - 1
		if p.Addr() == netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}) {
			return fmt.Errorf("that is the broadcast address of %s, not a host address", p.Masked())
		}
	}
	return nil
}

func validMode(m Mode) bool {
	for _, v := range Modes {
		if m == v {
			return true
		}
	}
	return false
}

func joinModes() string {
	s := make([]string, len(Modes))
	for i, m := range Modes {
		s[i] = string(m)
	}
	return strings.Join(s, ", ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
