package config

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
)

// OverlaySpec is a [network.NAME.overlay] table as written: the network
// spans hosts over a kernel VXLAN tunnel (optionally inside WireGuard).
type OverlaySpec struct {
	VNI            *int64            `toml:"vni"`
	Peers          []string          `toml:"peers"`
	Peer           []OverlayPeerSpec `toml:"peer"`
	Local          *string           `toml:"local"`
	Port           *int              `toml:"port"`
	Gateway        *string           `toml:"gateway"`
	Encrypt        *string           `toml:"encrypt"`
	PrivateKeyFile *string           `toml:"private_key_file"`
}

// OverlayPeerSpec is one [[network.NAME.overlay.peer]].
type OverlayPeerSpec struct {
	Address   *string `toml:"address"`
	PublicKey *string `toml:"public_key"`
}

// Overlay settings.
const (
	DefaultOverlayPort = 4789  // IANA's VXLAN port
	DefaultWGPort      = 51820 // WireGuard's customary port
	MaxVNI             = 1<<24 - 1

	GatewayLocal  = "local"  // every host has the network's address and routes its own guests
	GatewayRemote = "remote" // this host's bridge has no address; guests use a peer's gateway

	EncryptNone      = "none"
	EncryptWireGuard = "wireguard"
)

// WGKey is a WireGuard key (Curve25519, 32 bytes).
type WGKey [32]byte

// ParseWGKey reads a key in WireGuard's own format: 32 bytes in standard
// base64 (44 characters), as `wg genkey` and `wg pubkey` print it.
func ParseWGKey(s string) (WGKey, error) {
	var k WGKey
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != len(k) {
		return k, fmt.Errorf("not a WireGuard key (44 characters of base64, as `wg genkey` or `wg pubkey` print it)")
	}
	copy(k[:], b)
	return k, nil
}

func (k WGKey) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// IsZero reports whether the key is unset.
func (k WGKey) IsZero() bool { return k == WGKey{} }

// OverlayPeer is another host of the network.
type OverlayPeer struct {
	Address   netip.Addr // its underlay address
	PublicKey WGKey      // encrypt = "wireguard" only
}

// Overlay is a validated [network.NAME.overlay].
type Overlay struct {
	VNI   uint32
	Peers []OverlayPeer
	// Local is this host's underlay address; invalid: the source address of
	// the route to the first peer.
	Local netip.Addr
	// Port is the UDP port on the underlay: VXLAN's, or with encryption
	// WireGuard's (VXLAN then runs inside the tunnel, on DefaultOverlayPort).
	Port uint16
	// Gateway is GatewayLocal or GatewayRemote.
	Gateway string
	// Encrypt is EncryptNone or EncryptWireGuard.
	Encrypt        string
	PrivateKeyFile string
	// MTU is the network's mtu key when given (it must fit the underlay),
	// 0 when the MTU follows the underlay.
	MTU int
}

// LocalGateway reports whether this host's bridge is the guests' gateway.
func (o *Overlay) LocalGateway() bool { return o.Gateway == GatewayLocal }

// Encrypted reports whether the tunnel runs inside WireGuard.
func (o *Overlay) Encrypted() bool { return o.Encrypt == EncryptWireGuard }

// VXLANPort is the port of the network's VXLAN device: Port, or inside
// WireGuard IANA's (the host's VXLAN sockets are per port, whatever the
// address: WireGuard cannot listen on the same).
func (o *Overlay) VXLANPort() uint16 {
	if o.Encrypted() {
		return DefaultOverlayPort
	}
	return o.Port
}

// validate checks the table against the network n (whose other settings are
// validated already); mtu is the network's mtu key as written (nil: absent).
func (s *OverlaySpec) validate(key string, n *Network, mtu *int) (*Overlay, error) {
	if s == nil {
		return nil, nil
	}
	if n.Mode != ModeNAT && n.Mode != ModeRouted && n.Mode != ModeIsolated {
		return nil, fmt.Errorf("%s: an overlay joins a bridge brouter creates (mode nat, routed or isolated), not mode %q", key, n.Mode)
	}
	o := &Overlay{Port: DefaultOverlayPort, Gateway: GatewayLocal, Encrypt: EncryptNone}
	if mtu != nil {
		o.MTU = *mtu
	}
	if s.VNI == nil {
		return nil, fmt.Errorf("%s.vni: missing; give the VXLAN network identifier (1..%d), the same on every host of the network", key, MaxVNI)
	}
	if *s.VNI < 1 || *s.VNI > MaxVNI {
		return nil, fmt.Errorf("%s.vni = %d: want 1..%d", key, *s.VNI, MaxVNI)
	}
	o.VNI = uint32(*s.VNI)
	if s.Encrypt != nil {
		if *s.Encrypt != EncryptNone && *s.Encrypt != EncryptWireGuard {
			return nil, fmt.Errorf("%s.encrypt = %q: want %q or %q", key, *s.Encrypt, EncryptNone, EncryptWireGuard)
		}
		o.Encrypt = *s.Encrypt
	}
	if o.Encrypted() {
		o.Port = DefaultWGPort
	}
	if s.Port != nil {
		if *s.Port < 1 || *s.Port > 65535 {
			return nil, fmt.Errorf("%s.port = %d: want a UDP port, 1..65535", key, *s.Port)
		}
		if o.Encrypted() && *s.Port == DefaultOverlayPort {
			return nil, fmt.Errorf("%s.port = %d: with encrypt = %q that is the port of the VXLAN inside the tunnel; choose another for WireGuard (default %d)", key, *s.Port, EncryptWireGuard, DefaultWGPort)
		}
		o.Port = uint16(*s.Port)
	}
	if s.Gateway != nil {
		if *s.Gateway != GatewayLocal && *s.Gateway != GatewayRemote {
			return nil, fmt.Errorf("%s.gateway = %q: want %q or %q", key, *s.Gateway, GatewayLocal, GatewayRemote)
		}
		o.Gateway = *s.Gateway
	}
	if o.Gateway == GatewayRemote && n.DHCP != nil {
		return nil, fmt.Errorf("%s.gateway = %q: this host's bridge has no address, so it cannot serve DHCP; remove [network.%s.dhcp] (the host with the gateway serves it)", key, o.Gateway, n.Name)
	}
	if err := s.validateKeys(key, o); err != nil {
		return nil, err
	}
	var err error
	if o.Peers, err = s.peers(key, o.Encrypted()); err != nil {
		return nil, err
	}
	if s.Local != nil {
		a, err := netip.ParseAddr(*s.Local)
		if err != nil || !underlayAddr(a) {
			return nil, fmt.Errorf("%s.local = %q: want this host's unicast underlay address, e.g. \"198.51.100.1\"", key, *s.Local)
		}
		o.Local = a.Unmap()
		if o.Local.Is4() != o.Peers[0].Address.Is4() {
			return nil, fmt.Errorf("%s.local = %q: the peers are IPv%d; use an address of the same family", key, *s.Local, family(o.Peers[0].Address))
		}
		for _, p := range o.Peers {
			if p.Address == o.Local {
				return nil, fmt.Errorf("%s: peer %s is this host (local = %q); list only the other hosts", key, p.Address, *s.Local)
			}
		}
	}
	return o, nil
}

// validateKeys checks private_key_file against encrypt.
func (s *OverlaySpec) validateKeys(key string, o *Overlay) error {
	if !o.Encrypted() {
		if s.PrivateKeyFile != nil {
			return fmt.Errorf("%s.private_key_file: only with encrypt = %q; remove it or set encrypt", key, EncryptWireGuard)
		}
		return nil
	}
	if s.PrivateKeyFile == nil || *s.PrivateKeyFile == "" {
		return fmt.Errorf("%s: encrypt = %q needs private_key_file, this host's key (make one with `wg genkey > FILE`)", key, EncryptWireGuard)
	}
	if !filepath.IsAbs(*s.PrivateKeyFile) {
		return fmt.Errorf("%s.private_key_file = %q: must be an absolute path", key, *s.PrivateKeyFile)
	}
	o.PrivateKeyFile = *s.PrivateKeyFile
	return nil
}

// peers validates the peers, in either form (a config uses one or the other).
func (s *OverlaySpec) peers(key string, encrypted bool) ([]OverlayPeer, error) {
	if len(s.Peers) > 0 && len(s.Peer) > 0 {
		return nil, fmt.Errorf("%s: peers and [[%s.peer]] both given; use one form or the other", key, key)
	}
	if encrypted && len(s.Peers) > 0 {
		return nil, fmt.Errorf("%s.peers: encrypt = %q needs each peer's public key: list the peers as [[%s.peer]] tables with address and public_key", key, EncryptWireGuard, key)
	}
	var out []OverlayPeer
	seenKey := map[WGKey]netip.Addr{}
	add := func(what, addr string, pub *string) error {
		a, err := netip.ParseAddr(addr)
		if err != nil || !underlayAddr(a) {
			return fmt.Errorf("%s = %q: want a peer's unicast underlay address (IPv4 or IPv6), e.g. \"198.51.100.2\"", what, addr)
		}
		p := OverlayPeer{Address: a.Unmap()}
		for _, q := range out {
			if q.Address == p.Address {
				return fmt.Errorf("%s = %q: peer %s is listed twice", what, addr, p.Address)
			}
			if q.Address.Is4() != p.Address.Is4() {
				return fmt.Errorf("%s = %q: peers %s and %s are of different IP families; the underlay is one family", what, addr, out[0].Address, p.Address)
			}
		}
		switch {
		case encrypted && pub == nil:
			return fmt.Errorf("%s: peer %s has no public_key (encrypt = %q)", what, p.Address, EncryptWireGuard)
		case !encrypted && pub != nil:
			return fmt.Errorf("%s: public_key of peer %s: only with encrypt = %q", what, p.Address, EncryptWireGuard)
		case encrypted:
			k, err := ParseWGKey(*pub)
			if err != nil {
				return fmt.Errorf("%s: public_key of peer %s: %w", what, p.Address, err)
			}
			if other, dup := seenKey[k]; dup {
				return fmt.Errorf("%s: peers %s and %s have the same public_key", what, other, p.Address)
			}
			seenKey[k], p.PublicKey = p.Address, k
		}
		out = append(out, p)
		return nil
	}
	for _, a := range s.Peers {
		if err := add(key+".peers", a, nil); err != nil {
			return nil, err
		}
	}
	for i, p := range s.Peer {
		what := fmt.Sprintf("%s.peer[%d].address", key, i)
		if p.Address == nil {
			return nil, fmt.Errorf("%s: missing", what)
		}
		if err := add(what, *p.Address, p.PublicKey); err != nil {
			return nil, err
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no peers; list the underlay addresses of the other hosts (peers = [...] or [[%s.peer]] tables)", key, key)
	}
	return out, nil
}

// underlayAddr: an address a tunnel can be sent to and from.
func underlayAddr(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsValid() && a.Zone() == "" && !a.IsUnspecified() && !a.IsMulticast() && !a.IsLoopback() &&
		!(a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}))
}

func family(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}

// checkOverlays refuses overlays of two networks that would need the same
// kernel object: a VXLAN device per (VNI, port), a WireGuard listener per
// port that nothing else uses.
func checkOverlays(networks map[string]*Network) error {
	for _, a := range sortedKeys(networks) {
		oa := networks[a].Overlay
		if oa == nil {
			continue
		}
		for _, b := range sortedKeys(networks) {
			ob := networks[b].Overlay
			if b <= a || ob == nil {
				continue
			}
			if oa.VNI == ob.VNI && oa.VXLANPort() == ob.VXLANPort() {
				return fmt.Errorf("network.%s.overlay and network.%s.overlay both use vni %d on port %d; a VNI names one network", a, b, oa.VNI, oa.VXLANPort())
			}
			for _, p := range [][2]*Overlay{{oa, ob}, {ob, oa}} {
				if p[0].Encrypted() && (p[0].Port == p[1].Port || p[0].Port == p[1].VXLANPort()) {
					return fmt.Errorf("network.%s.overlay and network.%s.overlay both use UDP port %d, and WireGuard needs its port alone; give one another port", a, b, p[0].Port)
				}
			}
		}
	}
	return nil
}
