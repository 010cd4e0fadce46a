package vnet

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/link"
	"github.com/brouter/brouter/shared/names"
)

// Taps made for unprivileged users (the bridge helper's) are named after
// their owner: "tap" + the uid + "." + a number the kernel picks, e.g.
// tap1000.0, tap1000.1. A [[network.NAME.port]] or shaping rule names one
// user's taps with the glob "tap1000.*".

// TapPrefix is the start of the names of uid's taps ("tap1000.").
func TapPrefix(uid uint32) string { return "tap" + strconv.FormatUint(uint64(uid), 10) + "." }

// HelperNetwork is the network a bridge helper's caller means by a bridge:
// only a configured network with that bridge (never an existing bridge no
// config names, never a mode route network, which has no bridge).
func (m *Manager) HelperNetwork(bridge string) (*config.Network, error) {
	if err := names.Interface(bridge); err != nil {
		return nil, fmt.Errorf("vnet: bridge %w", err)
	}
	where := m.Config.Path
	if where == "" {
		where = "the host config (there is none)"
	}
	n := m.Config.NetworkByBridge(bridge)
	if n == nil || n.Mode == config.ModeRoute {
		return nil, fmt.Errorf("vnet: bridge %s is not a brouter network: no [network.NAME] in %s has bridge = %q; ask the administrator to add one, or use the bridge of a brouter network", bridge, where, bridge)
	}
	return n, nil
}

// AttachTap creates a tap for the caller (named after its uid, see
// TapPrefix) and attaches it to network n as an owned port, through Attach
// like every port: MTU, MAC, shaping, the [[network.NAME.port]] rule matching
// its name, antispoof, the firewall. It first checks that the caller may use
// the network (Authorize) and detaches the caller's earlier taps whose
// devices are gone (their QEMU exited: taps have no downscript), so a new
// tap that gets an old one's name starts clean.
//
// It returns the descriptor that holds the tap (the tap goes when its last
// copy is closed) and its name. On failure nothing is left: no tap, no record.
func (m *Manager) AttachTap(n *config.Network, c Caller, vnetHdr bool) (fd int, name string, err error) {
	if err := m.Authorize(n, c); err != nil {
		return -1, "", err
	}
	prefix := TapPrefix(c.UID)
	if len(prefix)+2 > names.MaxInterface {
		return -1, "", fmt.Errorf("vnet: uid %d is too large for a tap name (%s%%d has more than %d bytes)", c.UID, prefix, names.MaxInterface)
	}
	if err := m.detachVanishedTaps(n, prefix); err != nil {
		return -1, "", err
	}
	fd, name, err = link.OpenTap(prefix+"%d", vnetHdr)
	if err != nil {
		return -1, "", fmt.Errorf("vnet: network %s: %w", n.Name, err)
	}
	if err := m.Attach(n, PortRequest{Name: name, MAC: HostPortMAC(), Owned: true}); err != nil {
		// Attach removed what it did, the tap included (an owned port).
		unix.Close(fd)
		return -1, "", err
	}
	return fd, name, nil
}

// detachVanishedTaps detaches the network's ports whose name starts with
// prefix (one user's taps) and whose device is gone.
func (m *Manager) detachVanishedTaps(n *config.Network, prefix string) error {
	ports, err := m.Ports(n.Name)
	if err != nil {
		return err
	}
	for _, p := range ports {
		if !strings.HasPrefix(p, prefix) {
			continue
		}
		if _, err := m.detachVanished(n, p); err != nil {
			return fmt.Errorf("vnet: network %s: %w", n.Name, err)
		}
	}
	return nil
}

// DetachTap undoes AttachTap, when the tap could not be handed over: the
// port's state goes, and so does the tap (fd is closed).
func (m *Manager) DetachTap(n *config.Network, fd int, name string) error {
	err := m.Detach(n, name)
	if cerr := unix.Close(fd); cerr != nil && !errors.Is(cerr, unix.EBADF) {
		err = errors.Join(err, fmt.Errorf("vnet: close tap %s: %w", name, cerr))
	}
	return err
}
