package vnet

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/firewall"
	"github.com/brouter/brouter/shared/link"
)

// A network that spans hosts (config's [network.NAME.overlay]) has a kernel
// VXLAN device on its bridge: a port like a guest's, but carrying the other
// hosts' guests. Broadcast, unknown unicast and multicast go to every peer
// (head-end replication: an all-zeros FDB entry per peer), and the device
// learns which peer is behind each remote MAC. With encrypt = "wireguard"
// the VXLAN packets go to the peers' inner addresses over a WireGuard
// tunnel (wireguard.go) and the underlay carries only WireGuard.
//
// Start decides everything (planOverlay) before the host changes, so bad
// input (a peer that is this host, an MTU that cannot fit, a missing key)
// fails with the host as it was. Start on a running network brings the
// overlay to the config without disturbing local guests: the device is
// kept, only the flood entries of peers added or removed change.

// Bytes a VXLAN encapsulation adds: outer IP, UDP (8), VXLAN (8) and the
// inner Ethernet header (14).
const (
	vxlanOverhead4 = 20 + 8 + 8 + 14
	vxlanOverhead6 = 40 + 8 + 8 + 14
)

// overlayRecord is what Start created for a network's overlay (in its record).
type overlayRecord struct {
	Device string `json:"device"`            // the VXLAN device
	WG     string `json:"wg,omitempty"`      // the WireGuard device
	WGUser bool   `json:"wg_user,omitempty"` // WireGuard in userspace (a brouter-wg process), not the kernel's
}

// overlayPlan is what Start does for an overlay, decided before the host changes.
type overlayPlan struct {
	o        *config.Overlay // with Local resolved
	device   string
	mtu      int          // of the bridge, the guests and the VXLAN device
	vxLocal  netip.Addr   // the VXLAN device's source: the underlay address, or the inner one
	flood    []netip.Addr // where the VXLAN device floods: the peers' underlay or inner addresses
	underlay string       // the underlay link (for messages)
	wg       *wgPlan      // encrypt = "wireguard"
}

// devName names a device of the network: prefix + the network's name, or,
// when that is longer than Linux allows, prefix + a hash of the name.
func devName(prefix, network string) string {
	if len(prefix)+len(network) <= 15 {
		return prefix + network
	}
	h := sha256.Sum256([]byte(network))
	return prefix + hex.EncodeToString(h[:])[:15-len(prefix)]
}

func overlayDevice(network string) string { return devName("vx-", network) }

// planOverlay checks a network's overlay against this host and returns the
// plan, and the network as Start must set it up: with the overlay's MTU,
// and without the gateway's addresses when the gateway is another host's.
// A network without an overlay is returned as it is, with a nil plan.
func (m *Manager) planOverlay(n *config.Network, rec *record) (*overlayPlan, *config.Network, error) {
	if n.Overlay == nil {
		return nil, n, nil
	}
	fail := func(format string, a ...any) error {
		return fmt.Errorf("vnet: network %s: overlay: "+format, append([]any{n.Name}, a...)...)
	}
	o := *n.Overlay
	p := &overlayPlan{o: &o, device: overlayDevice(n.Name)}
	if err := m.ownDevice(p.device, rec, func(r *overlayRecord) string { return r.Device }); err != nil {
		return nil, nil, fail("%w", err)
	}
	underMTU := 0
	for i, peer := range o.Peers {
		if here, err := link.IsLocalAddr(peer.Address); err != nil {
			return nil, nil, fail("%w", err)
		} else if here {
			return nil, nil, fail("peer %s is this host (one of its addresses); list only the other hosts", peer.Address)
		}
		path, err := link.RouteTo(peer.Address)
		if err != nil {
			return nil, nil, fail("no route to peer %s on the underlay; add one, or correct the peer's address: %w", peer.Address, err)
		}
		if i == 0 && !o.Local.IsValid() {
			o.Local = path.Src
		}
		if underMTU == 0 || path.MTU < underMTU {
			underMTU, p.underlay = path.MTU, path.Dev
		}
	}
	if !o.Local.IsValid() {
		return nil, nil, fail("no source address toward peer %s; set local", o.Peers[0].Address)
	}
	if here, err := link.IsLocalAddr(o.Local); err != nil {
		return nil, nil, fail("%w", err)
	} else if !here {
		return nil, nil, fail("local = %s is not an address of this host", o.Local)
	}
	overhead, what := vxlanOverhead4, "VXLAN over IPv4"
	if !o.Local.Is4() {
		overhead, what = vxlanOverhead6, "VXLAN over IPv6"
	}
	p.vxLocal = o.Local
	for _, peer := range o.Peers {
		p.flood = append(p.flood, peer.Address)
	}
	if o.Encrypted() {
		wp, err := m.planWireGuard(n, &o, rec, underMTU)
		if err != nil {
			return nil, nil, fail("%w", err)
		}
		p.wg, p.vxLocal, p.flood = wp, wp.inner.Addr(), wp.peerInner()
		overhead, what = underMTU-wp.mtu+vxlanOverhead6, "VXLAN over IPv6 in WireGuard"
	}
	fits := underMTU - overhead
	switch {
	case o.MTU > fits:
		return nil, nil, fail("mtu = %d does not fit: the underlay (%s) has MTU %d, which leaves %d after %s (%d bytes); set mtu to %d or less, or leave it out", o.MTU, p.underlay, underMTU, fits, what, overhead, fits)
	case o.MTU > 0:
		p.mtu = o.MTU
	case fits < 68:
		return nil, nil, fail("the underlay (%s) has MTU %d: too small for %s (%d bytes)", p.underlay, underMTU, what, overhead)
	default:
		p.mtu = fits
	}
	nn := *n
	nn.MTU, nn.Overlay = p.mtu, &o
	if !o.LocalGateway() {
		nn.Gateway, nn.Gateway6 = netip.Prefix{}, netip.Prefix{}
	}
	return p, &nn, nil
}

// ownDevice refuses a device name that exists and is not ours (the record
// names it): brouter never replaces someone else's link.
func (m *Manager) ownDevice(name string, rec *record, ours func(*overlayRecord) string) error {
	if rec.Overlay != nil && ours(rec.Overlay) == name {
		return nil
	}
	ok, err := link.Exists(name)
	if err != nil {
		return err
	}
	if ok {
		return fmt.Errorf("a link named %s exists and is not brouter's; remove or rename it", name)
	}
	return nil
}

// bridgeMACOf is the MAC of a network's bridge: the same on every host
// (bridgeMAC), so that guests find their gateway at one MAC wherever they
// run; but with the gateway on another host, a MAC of this host's own (from
// its underlay address), so that guests' frames to the gateway cross the
// tunnel instead of ending at this bridge.
func bridgeMACOf(n *config.Network) net.HardwareAddr {
	if o := n.Overlay; o != nil && !o.LocalGateway() {
		h := sha256.Sum256([]byte("brouter bridge " + n.Name + " at " + o.Local.String()))
		return net.HardwareAddr{0x02, h[0], h[1], h[2], h[3], h[4]}
	}
	return bridgeMAC(n.Name)
}

// overlayRules is the firewall's view of the overlay (nil: none).
func overlayRules(n *config.Network) *firewall.OverlayRules {
	o := n.Overlay
	if o == nil {
		return nil
	}
	r := &firewall.OverlayRules{Port: overlayDevice(n.Name), LocalGateway: o.LocalGateway()}
	if !o.Encrypted() {
		r.UDPPort = o.VXLANPort()
		for _, p := range o.Peers {
			r.Peers = append(r.Peers, p.Address)
		}
	}
	if !r.LocalGateway {
		return r
	}
	r.GatewayMAC = bridgeMAC(n.Name)
	if n.Gateway.IsValid() {
		r.Gateways = append(r.Gateways, n.Gateway.Addr())
	}
	if n.Gateway6.IsValid() {
		r.Gateways = append(r.Gateways, n.Gateway6.Addr(), linkLocal(r.GatewayMAC))
	}
	return r
}

// linkLocal is the IPv6 link-local address the kernel derives from a MAC (EUI-64).
func linkLocal(mac net.HardwareAddr) netip.Addr {
	return netip.AddrFrom16([16]byte{0: 0xfe, 1: 0x80, 8: mac[0] ^ 2, 9: mac[1], 10: mac[2], 11: 0xff, 12: 0xfe, 13: mac[3], 14: mac[4], 15: mac[5]})
}

// startOverlay brings the overlay to plan p (nil: removes what the record
// says Start made before), recording what it creates before creating it.
func (m *Manager) startOverlay(n *config.Network, p *overlayPlan, rec *record, undo *[]func()) error {
	if p == nil {
		return m.stopOverlay(n.Name, rec)
	}
	want := &overlayRecord{Device: p.device}
	if p.wg != nil {
		want.WG, want.WGUser = p.wg.device, rec.Overlay != nil && rec.Overlay.WG == p.wg.device && rec.Overlay.WGUser
	}
	if rec.Overlay == nil || *rec.Overlay != *want {
		if rec.Overlay != nil && rec.Overlay.WG != "" && rec.Overlay.WG != want.WG {
			if err := m.stopWireGuard(n.Name, rec.Overlay); err != nil {
				return fmt.Errorf("vnet: network %s: %w", n.Name, err)
			}
		}
		rec.Overlay = want
		if err := m.Records.Write(recordName(n.Name), rec); err != nil {
			return err
		}
	}
	if p.wg != nil {
		if err := m.startWireGuard(n, p, rec, undo); err != nil {
			return fmt.Errorf("vnet: network %s: %w", n.Name, err)
		}
	}
	_, created, err := link.EnsureVxlan(link.VxlanSpec{Name: p.device, VNI: p.o.VNI, Local: p.vxLocal, Port: p.o.VXLANPort(), MTU: p.mtu, Bridge: n.Bridge})
	if created {
		*undo = append(*undo, func() { _ = link.Delete(p.device) })
	}
	if err == nil {
		_, _, err = link.SyncFlood(p.device, p.flood)
	}
	if err != nil {
		return fmt.Errorf("vnet: network %s: overlay: %w", n.Name, err)
	}
	return nil
}

// forgetRemovedPeers drops, once the firewall admits VXLAN only from the
// peers left (planTunnel), the MACs the device learnt behind a removed peer
// between startOverlay's flood sync and that firewall change: the removed
// host may still be sending.
func forgetRemovedPeers(n *config.Network, p *overlayPlan) error {
	if p == nil || n.Mode == config.ModeRoute {
		return nil
	}
	if _, _, err := link.SyncFlood(p.device, p.flood); err != nil {
		return fmt.Errorf("vnet: network %s: overlay: %w", n.Name, err)
	}
	return nil
}

// stopOverlay removes the overlay's devices (and WireGuard process) the
// record names, and forgets them. Already gone: fine.
func (m *Manager) stopOverlay(network string, rec *record) error {
	r := rec.Overlay
	if r == nil {
		return nil
	}
	err := link.Delete(r.Device)
	if r.WG != "" {
		err = errors.Join(err, m.stopWireGuard(network, r))
	}
	if err != nil {
		return fmt.Errorf("vnet: network %s: overlay: %w", network, err)
	}
	rec.Overlay = nil
	return nil
}

// OverlayStatus is the state of a network's tunnel to other hosts.
type OverlayStatus struct {
	Device    string   `json:"device"`
	VNI       uint32   `json:"vni"`
	Peers     []string `json:"peers"` // the flood list, as the kernel has it
	Gateway   string   `json:"gateway"`
	Encrypt   string   `json:"encrypt"`
	WireGuard string   `json:"wireguard,omitempty"` // "kernel", or "userspace (brouter-wg pid N)"
}

// overlayStatus describes the network's overlay (nil: none), and what of it
// differs from the config: each a problem line of Status and reconcile.
func (m *Manager) overlayStatus(n *config.Network, rec *record) (ov *OverlayStatus, problems []string) {
	o := n.Overlay
	if o == nil {
		return nil, nil
	}
	dev := overlayDevice(n.Name)
	ov = &OverlayStatus{Device: dev, VNI: o.VNI, Peers: []string{}, Gateway: o.Gateway, Encrypt: o.Encrypt}
	flood, err := link.Flood(dev)
	if err != nil {
		return ov, []string{fmt.Sprintf("overlay device %s is missing; run start again", dev)}
	}
	want := make([]netip.Addr, 0, len(o.Peers))
	for _, p := range o.Peers {
		want = append(want, p.Address)
	}
	if o.Encrypted() {
		want = m.wireGuardStatus(n, ov, &problems, rec)
	}
	for _, a := range flood {
		ov.Peers = append(ov.Peers, a.String())
	}
	for _, a := range want {
		if !slices.Contains(flood, a) {
			problems = append(problems, fmt.Sprintf("peer %s is not in the flood list of %s; run start again", a, dev))
		}
	}
	return ov, problems
}

// overlayGuestMAC is the MAC Attach records as a local guest of the
// network's overlay: the guest's, when the port's caller or a port rule
// knows it ("" otherwise: the nftables backend learns it from its frames).
func overlayGuestMAC(n *config.Network, p PortRequest) string {
	if n.Overlay == nil || p.GuestMAC == nil {
		return ""
	}
	return p.GuestMAC.String()
}

// attachOverlayGuest tells the firewall about the port's guest (pr.Overlay),
// and forgets the previous one of a re-attached port.
func (m *Manager) attachOverlayGuest(n *config.Network, rec *record, pr, prev *portRecord) error {
	if prev.Overlay != "" && prev.Overlay != pr.Overlay {
		if err := m.forgetOverlayGuest(prev); err != nil {
			return err
		}
	}
	mac, err := net.ParseMAC(pr.Overlay)
	if err != nil {
		return nil
	}
	fw, err := m.backendFor(n, rec)
	if err != nil {
		return err
	}
	return fw.EnsureOverlayGuest(n.Name, mac)
}

// forgetOverlayGuest removes the port's guest from its overlay's local guests.
func (m *Manager) forgetOverlayGuest(pr *portRecord) error {
	mac, err := net.ParseMAC(pr.Overlay)
	if err != nil {
		return nil
	}
	var rec record
	if ok, err := m.Records.Read(recordName(pr.Network), &rec); err != nil || !ok || rec.Backend == "" {
		return err // the network's rules, guests included, are gone
	}
	fw, err := m.NewFirewall(rec.Backend)
	if err != nil {
		return err
	}
	return fw.RemoveOverlayGuest(pr.Network, mac)
}

// GuestMTU is the MTU a new guest device of the network gets (a CNI
// container's veth): the config's, but on a network spanning hosts its
// bridge's, which Start set to what the tunnel leaves.
func GuestMTU(n *config.Network) int {
	if n.Overlay != nil {
		if br, err := link.Get(n.Bridge); err == nil {
			return br.Attrs().MTU
		}
	}
	return n.MTU
}
