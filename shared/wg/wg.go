// Package wg runs a WireGuard tunnel: the kernel's WireGuard when the kernel
// has it, else the reference userspace implementation (wireguard-go) over a
// TUN device, in a process of its own (the brouter-wg program, Serve) that
// vnet starts, finds by its pid file and stops, as it does dnsmasq.
//
// It is a mechanism: the caller decides the keys, addresses and peers
// (Config); this package creates the device and gives it that configuration,
// the kernel's over generic netlink, the process's over WireGuard's own
// configuration protocol (UAPI) on a unix socket.
package wg

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/wgctrl"
	"golang.zx2c4.com/wireguard/wgctrl/wgtypes"
)

// Key is a Curve25519 key, private or public.
type Key [32]byte

// PublicKey returns the public key of a private key.
func PublicKey(priv Key) (Key, error) {
	var pub Key
	b, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	if err != nil {
		return pub, fmt.Errorf("wg: public key: %w", err)
	}
	copy(pub[:], b)
	return pub, nil
}

// Peer is another end of the tunnel.
type Peer struct {
	PublicKey  Key
	Endpoint   netip.AddrPort // where it listens on the underlay
	AllowedIPs []netip.Prefix // inner addresses it may send from, and that are sent to it
}

// Config is a device's whole configuration: applying it replaces the
// previous one (peers not listed are removed).
type Config struct {
	PrivateKey Key
	ListenPort int
	Peers      []Peer
}

// uapi renders c as the body of a UAPI "set" operation.
func (c Config) uapi() string {
	var b strings.Builder
	fmt.Fprintf(&b, "private_key=%s\nlisten_port=%d\nreplace_peers=true\n", hex.EncodeToString(c.PrivateKey[:]), c.ListenPort)
	for _, p := range c.Peers {
		fmt.Fprintf(&b, "public_key=%s\nendpoint=%s\nreplace_allowed_ips=true\n", hex.EncodeToString(p.PublicKey[:]), p.Endpoint)
		for _, a := range p.AllowedIPs {
			fmt.Fprintf(&b, "allowed_ip=%s\n", a)
		}
	}
	return b.String()
}

// wgtypes renders c for the kernel (wgctrl).
func (c Config) wgtypes() wgtypes.Config {
	priv := wgtypes.Key(c.PrivateKey)
	port := c.ListenPort
	out := wgtypes.Config{PrivateKey: &priv, ListenPort: &port, ReplacePeers: true}
	for _, p := range c.Peers {
		pc := wgtypes.PeerConfig{PublicKey: wgtypes.Key(p.PublicKey), ReplaceAllowedIPs: true,
			Endpoint: net.UDPAddrFromAddrPort(p.Endpoint)}
		for _, a := range p.AllowedIPs {
			pc.AllowedIPs = append(pc.AllowedIPs, net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())})
		}
		out.Peers = append(out.Peers, pc)
	}
	return out
}

// ErrNoKernel says the kernel cannot make WireGuard devices (no module).
var ErrNoKernel = errors.New("the kernel has no WireGuard")

// EnsureKernel creates a kernel WireGuard device unless it exists; created
// says whether it did. ErrNoKernel (wrapped) when the kernel has none.
func EnsureKernel(name string, mtu int) (created bool, err error) {
	if l, err := netlink.LinkByName(name); err == nil {
		if l.Type() != "wireguard" {
			return false, fmt.Errorf("wg: %s exists and is a %s link, not WireGuard", name, l.Type())
		}
		return false, nil
	}
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU = name, mtu
	err = netlink.LinkAdd(&netlink.Wireguard{LinkAttrs: la})
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOENT):
		return false, fmt.Errorf("wg: create %s: %w", name, ErrNoKernel)
	}
	return false, fmt.Errorf("wg: create %s: %w", name, err)
}

// ConfigureKernel gives a kernel WireGuard device its whole configuration.
func ConfigureKernel(name string, c Config) error {
	client, err := wgctrl.New()
	if err != nil {
		return fmt.Errorf("wg: %w", err)
	}
	defer client.Close()
	if err := client.ConfigureDevice(name, c.wgtypes()); err != nil {
		return fmt.Errorf("wg: configure %s: %w", name, err)
	}
	return nil
}

// Configure gives a userspace device (the process serving socket) its whole
// configuration, over UAPI.
func Configure(socket string, c Config) error {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		return fmt.Errorf("wg: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("set=1\n" + c.uapi() + "\n")); err != nil {
		return fmt.Errorf("wg: configure through %s: %w", socket, err)
	}
	return uapiStatus(conn, socket)
}

// uapiStatus reads a UAPI answer up to its blank line: errno=0 is success.
func uapiStatus(conn net.Conn, socket string) error {
	var buf []byte
	tmp := make([]byte, 4096)
	for !strings.Contains(string(buf), "\n\n") {
		n, err := conn.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if err != nil {
			return fmt.Errorf("wg: read the answer of %s: %w", socket, err)
		}
	}
	for _, l := range strings.Split(string(buf), "\n") {
		if v, ok := strings.CutPrefix(l, "errno="); ok {
			if n, _ := strconv.Atoi(v); n != 0 {
				return fmt.Errorf("wg: %s refused the configuration (errno %d: %s)", socket, n, unix.Errno(n))
			}
			return nil
		}
	}
	return fmt.Errorf("wg: %s answered without a status", socket)
}
