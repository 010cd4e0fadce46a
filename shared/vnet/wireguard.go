package vnet

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/link"
	"github.com/brouter/brouter/shared/wg"
)

// An encrypted overlay (encrypt = "wireguard") runs VXLAN inside a
// WireGuard tunnel between the hosts: a WireGuard device per network
// (wg-NAME) listening on the overlay's port, one peer per host. Inside the
// tunnel every host has an IPv6 address derived from the network's VNI and
// its public key, so each host computes every peer's without being told:
//
//	prefix   fdXX:XXXX:XXXX:XXXX::/64  from sha256("brouter overlay vni N")
//	address  prefix + the first 64 bits of sha256(public key)
//
// The VXLAN device sends from this host's inner address to the peers' inner
// addresses; the underlay carries only WireGuard's UDP.
//
// The kernel's WireGuard is used when it has it; otherwise a brouter-wg
// process (wireguard-go over a TUN device) that lives as long as the
// network, like its dnsmasq: started by start (again when it died),
// recorded by its pid file under run_dir/NAME, ended by stop.

// Bytes WireGuard adds: outer IP, UDP (8) and its data header and tag (32).
const (
	wgOverhead4 = 20 + 8 + 32
	wgOverhead6 = 40 + 8 + 32
)

// wgPlan is the WireGuard part of an overlay plan.
type wgPlan struct {
	device string
	cfg    wg.Config
	inner  netip.Prefix // this host's inner address, /64
	peers  []netip.Addr // the peers' inner addresses, in config order
	mtu    int          // the WireGuard device's
}

func (p *wgPlan) peerInner() []netip.Addr { return p.peers }

func wgDevice(network string) string { return devName("wg-", network) }

// innerPrefix is the tunnel's /64, the same on every host of the network.
func innerPrefix(vni uint32) netip.Prefix {
	h := sha256.Sum256(fmt.Appendf(nil, "brouter overlay vni %d", vni))
	var b [16]byte
	b[0] = 0xfd
	copy(b[1:8], h[:7])
	return netip.PrefixFrom(netip.AddrFrom16(b), 64)
}

// innerAddr is the inner address of the host with public key pub.
func innerAddr(prefix netip.Prefix, pub [32]byte) netip.Addr {
	h := sha256.Sum256(pub[:])
	b := prefix.Addr().As16()
	copy(b[8:], h[:8])
	return netip.AddrFrom16(b)
}

// planWireGuard reads this host's key and derives the tunnel's addresses and
// peers; underMTU is the underlay's.
func (m *Manager) planWireGuard(n *config.Network, o *config.Overlay, rec *record, underMTU int) (*wgPlan, error) {
	p := &wgPlan{device: wgDevice(n.Name)}
	if err := m.ownDevice(p.device, rec, func(r *overlayRecord) string { return r.WG }); err != nil {
		return nil, err
	}
	priv, err := readKey(o.PrivateKeyFile)
	if err != nil {
		return nil, err
	}
	pub, err := wg.PublicKey(wg.Key(priv))
	if err != nil {
		return nil, err
	}
	prefix := innerPrefix(o.VNI)
	p.inner = netip.PrefixFrom(innerAddr(prefix, pub), prefix.Bits())
	p.cfg = wg.Config{PrivateKey: wg.Key(priv), ListenPort: int(o.Port)}
	for _, peer := range o.Peers {
		if wg.Key(peer.PublicKey) == pub {
			return nil, fmt.Errorf("peer %s has this host's public key (that of %s); list only the other hosts", peer.Address, o.PrivateKeyFile)
		}
		a := innerAddr(prefix, peer.PublicKey)
		p.peers = append(p.peers, a)
		p.cfg.Peers = append(p.cfg.Peers, wg.Peer{PublicKey: wg.Key(peer.PublicKey),
			Endpoint: netip.AddrPortFrom(peer.Address, o.Port), AllowedIPs: []netip.Prefix{netip.PrefixFrom(a, 128)}})
	}
	p.mtu = underMTU - wgOverhead4
	if !o.Local.Is4() {
		p.mtu = underMTU - wgOverhead6
	}
	if p.mtu < 1280 {
		return nil, fmt.Errorf("the underlay's MTU %d leaves WireGuard %d, under the 1280 the IPv6 inside the tunnel needs", underMTU, p.mtu)
	}
	return p, nil
}

// readKey reads a private key file, which only its owner may read.
func readKey(path string) (config.WGKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return config.WGKey{}, fmt.Errorf("private_key_file: %w (make one with `wg genkey > %s; chmod 600 %s`)", err, path, path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return config.WGKey{}, fmt.Errorf("private_key_file %s is mode %04o: other users could read the key; chmod 600 it", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return config.WGKey{}, fmt.Errorf("private_key_file: %w", err)
	}
	k, err := config.ParseWGKey(string(data))
	if err != nil {
		return config.WGKey{}, fmt.Errorf("private_key_file %s: %w", path, err)
	}
	return k, nil
}

// wgDaemon is the network's userspace WireGuard process.
func (m *Manager) wgDaemon(network, device string) wg.Daemon {
	run, _ := m.dhcpDirs(network) // run_dir/NAME, the network's own directory
	return wg.Daemon{Binary: wgBinary(), Device: device, Dir: run}
}

// wgBinary finds brouter-wg: next to the running program (the suite is
// installed in one directory), else on PATH.
func wgBinary() string {
	if exe, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(exe), wg.ProgramName); fileExists(p) {
			return p
		}
	}
	for _, dir := range filepath.SplitList(os.Getenv("PATH") + ":/usr/local/lib/brouter:/usr/lib/brouter") {
		if p := filepath.Join(dir, wg.ProgramName); dir != "" && fileExists(p) {
			return p
		}
	}
	return wg.ProgramName
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && !fi.IsDir()
}

// startWireGuard brings the tunnel up: the kernel's device, or the process
// (started when not running), its whole configuration, then its address,
// MTU and state.
func (m *Manager) startWireGuard(n *config.Network, p *overlayPlan, rec *record, undo *[]func()) error {
	w := p.wg
	if !rec.Overlay.WGUser {
		created, err := wg.EnsureKernel(w.device, w.mtu)
		if created {
			*undo = append(*undo, func() { _ = link.Delete(w.device) })
		}
		switch {
		case err == nil:
			err = wg.ConfigureKernel(w.device, w.cfg)
		case errors.Is(err, wg.ErrNoKernel):
			rec.Overlay.WGUser = true // recorded before the process starts
			err = m.Records.Write(recordName(n.Name), rec)
		}
		if err != nil {
			return err
		}
	}
	if rec.Overlay.WGUser {
		d := m.wgDaemon(n.Name, w.device)
		started, err := d.Start(w.mtu)
		if started {
			*undo = append(*undo, func() { _ = d.Stop() })
		}
		if err == nil {
			err = wg.Configure(d.Socket(), w.cfg)
		}
		if err != nil {
			return err
		}
	}
	l, err := link.Configure(w.device, w.mtu, nil)
	if err == nil {
		_, err = link.EnsureAddr(l, w.inner)
	}
	if err != nil {
		return fmt.Errorf("overlay: %w", err)
	}
	return nil
}

// stopWireGuard ends the process, or deletes the kernel's device.
func (m *Manager) stopWireGuard(network string, r *overlayRecord) error {
	var err error
	if r.WGUser {
		err = m.wgDaemon(network, r.WG).Stop()
	}
	return errors.Join(err, link.Delete(r.WG))
}

// wireGuardStatus says which WireGuard runs the tunnel, adds a dead process
// to st's problems, and returns the inner addresses the flood list must have.
func (m *Manager) wireGuardStatus(n *config.Network, ov *OverlayStatus, problems *[]string, rec *record) []netip.Addr {
	prefix := innerPrefix(n.Overlay.VNI)
	var want []netip.Addr
	for _, p := range n.Overlay.Peers {
		want = append(want, innerAddr(prefix, p.PublicKey))
	}
	r := rec.Overlay
	switch {
	case r == nil || r.WG == "":
		*problems = append(*problems, "the overlay is not encrypted as configured; run start again")
	case r.WGUser:
		if pid, ok := m.wgDaemon(n.Name, r.WG).Running(); ok {
			ov.WireGuard = fmt.Sprintf("userspace (%s pid %d)", wg.ProgramName, pid)
		} else {
			ov.WireGuard = "userspace (not running)"
			*problems = append(*problems, fmt.Sprintf("%s of network %s is not running (it died?); run start to restart it", wg.ProgramName, n.Name))
		}
	default:
		ov.WireGuard = "kernel"
		if ok, _ := link.Exists(r.WG); !ok {
			*problems = append(*problems, fmt.Sprintf("WireGuard device %s is missing; run start again", r.WG))
		}
	}
	return want
}
