package firewall

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"syscall"

	gnftables "github.com/google/nftables"
	"sigs.k8s.io/knftables"
)

// The backends' side of overlay.go: creating and removing the tunnel's
// filter with the network's rules, and the local guests' MACs.

// nftOverlaySetup adds to tx what creates the overlay table of network, or
// brings an existing one to o's rules without touching its set elements.
func nftOverlaySetup(tx *knftables.Transaction, network string, o *OverlayRules) {
	fam, name := knftables.BridgeFamily, nftOverlayTableName(network)
	tx.Add(&knftables.Table{Family: fam, Name: name, Comment: knftables.PtrTo("brouter network " + network + ": the tunnel to other hosts")})
	tx.Add(&knftables.Set{Family: fam, Table: name, Name: setOvGuests, Type: "ether_addr"})
	nftSetChains(tx, fam, name, nftOverlayChains(o))
}

// nftOverlayExists reports whether the overlay table of network is among tables.
func nftOverlayExists(tables []*gnftables.Table, network string) bool {
	return slices.ContainsFunc(tables, func(t *gnftables.Table) bool {
		return t.Family == gnftables.TableFamilyBridge && t.Name == nftOverlayTableName(network)
	})
}

// ovGuestElement is a MAC as the key of an ether_addr set.
func ovGuestElement(mac net.HardwareAddr) []gnftables.SetElement {
	return []gnftables.SetElement{{Key: slices.Clone(mac)}}
}

func (b *nftBackend) EnsureOverlayGuest(network string, mac net.HardwareAddr) error {
	return b.overlayGuest(network, mac, true)
}

func (b *nftBackend) RemoveOverlayGuest(network string, mac net.HardwareAddr) error {
	return b.overlayGuest(network, mac, false)
}

// overlayGuest adds or removes a local guest's MAC: one set element, over
// netlink, whatever the number of guests.
func (b *nftBackend) overlayGuest(network string, mac net.HardwareAddr, add bool) error {
	if err := validOverlayGuest(network, mac); err != nil {
		return err
	}
	conn, err := nlOpen()
	if err != nil {
		return errorf("nftables: network %s: %w", network, err)
	}
	defer nlClose(conn)
	set := &gnftables.Set{Table: &gnftables.Table{Family: gnftables.TableFamilyBridge, Name: nftOverlayTableName(network)}, Name: setOvGuests}
	err = apply(conn, []setChange{{set: set, del: !add, elems: ovGuestElement(mac)}})
	switch {
	case err == nil:
		return nil
	case !add && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENODEV)):
		return nil // not there (or no table): removed already
	case add && errors.Is(err, syscall.ENOENT):
		return errorf("nftables: network %s: table bridge %s is missing; run start again (network-virtual start net=%s)", network, nftOverlayTableName(network), network)
	}
	return errorf("nftables: network %s: local guest %s: %w", network, mac, err)
}

func validOverlayGuest(network string, mac net.HardwareAddr) error {
	if err := validNetwork(network); err != nil {
		return err
	}
	if len(mac) != 6 {
		return errorf("network %s: overlay guest: %q is not an Ethernet address", network, mac)
	}
	return nil
}

// --- ebtables -----------------------------------------------------------------

// ebtOverlayHooks are the jumps to the tunnel's chains, in table nat:
// PREROUTING sees what enters from the tunnel, POSTROUTING what leaves into
// it, forwarded or sent by the host.
func ebtOverlayHooks(network, port string) [][3]string {
	return [][3]string{
		{"PREROUTING", "-i", ebtOvIn(network)},
		{"POSTROUTING", "-o", ebtOvOut(network)},
	}
}

// ensureOverlay fills the tunnel's chains with o's rules (the guests' chain
// keeps its rules), then jumps to them; removeOverlay undoes all of it.
func (b *iptBackend) ensureOverlay(network string, o *OverlayRules) error {
	e, err := b.ebtables()
	if err != nil {
		return err
	}
	if ok, err := e.chainExists(ebtOvGuest(network)); err != nil {
		return err
	} else if !ok {
		if err := e.newChain(ebtOvGuest(network)); err != nil {
			return err
		}
	}
	if err := e.fill(ebtOvIn(network), ebtOvSpecs(network, o, ovIn)); err != nil {
		return err
	}
	if err := e.fill(ebtOvOut(network), ebtOvSpecs(network, o, ovOut)); err != nil {
		return err
	}
	for _, h := range ebtOverlayHooks(network, o.Port) {
		// A jump for another port (the device was renamed) goes.
		if err := ebtRemoveJumps(e, h[0], h[2], func(f []string) bool { return !slices.Contains(f, o.Port) }); err != nil {
			return err
		}
		if ok, err := hasRule(e, h[0], h[1], o.Port, "-j", h[2]); err != nil {
			return err
		} else if !ok {
			if err := e.insert(h[0], h[1], o.Port, "-j", h[2]); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *iptBackend) removeOverlay(network string) error {
	e, err := b.ebtables()
	if err != nil {
		return nil // no ebtables: nothing of ours can be there
	}
	for _, h := range ebtOverlayHooks(network, "") {
		if err := ebtRemoveJumps(e, h[0], h[2], func([]string) bool { return true }); err != nil {
			return err
		}
	}
	for _, c := range []string{ebtOvIn(network), ebtOvOut(network), ebtOvGuest(network)} {
		if err := xtDeleteChainIfExists(e, c); err != nil {
			return err
		}
	}
	return nil
}

// ebtRemoveJumps deletes the rules of hook that jump to chain and match which.
func ebtRemoveJumps(e *execTool, hook, chain string, which func([]string) bool) error {
	l, err := e.rules(hook)
	if err != nil {
		return err
	}
	for _, f := range l {
		if len(f) >= 2 && f[len(f)-2] == "-j" && f[len(f)-1] == chain && which(f) {
			if err := e.deleteRule(hook, f...); err != nil {
				return err
			}
		}
	}
	return nil
}

func (b *iptBackend) EnsureOverlayGuest(network string, mac net.HardwareAddr) error {
	if err := validOverlayGuest(network, mac); err != nil {
		return err
	}
	e, err := b.ebtables()
	if err == nil {
		var ok bool
		if ok, err = hasRule(e, ebtOvGuest(network), ebtOvGuestSpec(mac)...); err == nil && !ok {
			err = e.appendRule(ebtOvGuest(network), ebtOvGuestSpec(mac)...)
		}
	}
	if err != nil {
		return errorf("iptables: network %s: local guest %s: %w", network, mac, err)
	}
	return nil
}

func (b *iptBackend) RemoveOverlayGuest(network string, mac net.HardwareAddr) error {
	if err := validOverlayGuest(network, mac); err != nil {
		return err
	}
	e, err := b.ebtables()
	if err != nil {
		return nil
	}
	if ok, err := e.chainExists(ebtOvGuest(network)); err != nil || !ok {
		return err
	}
	for {
		ok, err := hasRule(e, ebtOvGuest(network), ebtOvGuestSpec(mac)...)
		if err == nil && ok {
			err = e.deleteRule(ebtOvGuest(network), ebtOvGuestSpec(mac)...)
		}
		if err != nil {
			return errorf("iptables: network %s: local guest %s: %w", network, mac, err)
		}
		if !ok {
			return nil
		}
	}
}

// ovList is the overlay's part of List: the chains' rules and the guests.
func (b *iptBackend) listOverlay(network string) ([]string, error) {
	e, err := b.ebtables()
	if err != nil {
		return nil, nil
	}
	var out []string
	for _, c := range []string{ebtOvIn(network), ebtOvOut(network), ebtOvGuest(network)} {
		if ok, err := e.chainExists(c); err != nil || !ok {
			if err != nil {
				return nil, err
			}
			continue
		}
		l, err := e.rules(c)
		if err != nil {
			return nil, err
		}
		for _, f := range l {
			out = append(out, fmt.Sprintf("ebtables %s: %s", c, strings.Join(f, " ")))
		}
	}
	return out, nil
}
