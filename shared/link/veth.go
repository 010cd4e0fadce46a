package link

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrExists is returned (wrapped) when a link to be created exists already.
var ErrExists = errors.New("link exists")

// VethSpec says how to make a veth pair whose peer lives in another network
// namespace (a container's).
type VethSpec struct {
	// Name of the host end, made in the calling thread's namespace and
	// left down (the caller sets it up once it is where it belongs).
	Name string
	// PeerName, PeerMAC (nil: a random locally administered one) and the
	// peer's namespace, as an open file descriptor of it (/proc/PID/ns/net,
	// /run/netns/NAME). The peer is created there directly, under its name:
	// it never appears in the host's namespace.
	PeerName  string
	PeerMAC   net.HardwareAddr
	PeerNetns int
	// MTU of both ends; 0: the kernel's default.
	MTU int
}

// VethEnds are a new veth pair's two ends: Index, Name, MTU and MAC each.
type VethEnds struct {
	Host, Peer net.Interface
}

// CreateVeth makes the veth pair of spec in one kernel request. A name
// taken on either side is an error wrapping ErrExists; a peer namespace
// that is the calling thread's own is refused (the guest's end would land
// on the host). The peer's MAC is chosen here (when the spec has none) so
// that nothing needs to look into the peer's namespace afterwards.
func CreateVeth(spec VethSpec) (VethEnds, error) {
	if same, err := SameNetns(fmt.Sprintf("/proc/self/fd/%d", spec.PeerNetns)); err != nil || same {
		if err == nil {
			err = errors.New("it is this namespace")
		}
		return VethEnds{}, fmt.Errorf("link: create veth %s: peer namespace: %w", spec.Name, err)
	}
	mac := spec.PeerMAC
	if mac == nil {
		mac = RandomMAC()
	}
	la := netlink.NewLinkAttrs()
	la.Name = spec.Name
	v := &netlink.Veth{LinkAttrs: la, PeerName: spec.PeerName, PeerNamespace: netlink.NsFd(spec.PeerNetns), PeerHardwareAddr: mac}
	if spec.MTU > 0 {
		v.MTU, v.PeerMTU = spec.MTU, uint32(spec.MTU)
	}
	if err := netlink.LinkAdd(v); err != nil {
		if errors.Is(err, unix.EEXIST) {
			err = fmt.Errorf("%w (%v)", ErrExists, err)
		}
		return VethEnds{}, fmt.Errorf("link: create veth %s (peer %s): %w", spec.Name, spec.PeerName, err)
	}
	host, err := Get(spec.Name)
	if err != nil {
		return VethEnds{}, err
	}
	a := host.Attrs()
	ends := VethEnds{
		Host: net.Interface{Index: a.Index, Name: a.Name, MTU: a.MTU, HardwareAddr: a.HardwareAddr},
		// The host end's link is the peer's index (in the peer's namespace).
		Peer: net.Interface{Index: a.ParentIndex, Name: spec.PeerName, MTU: a.MTU, HardwareAddr: mac},
	}
	return ends, nil
}

// RandomMAC is a random locally administered unicast Ethernet address, as
// the kernel gives a device made without one.
func RandomMAC() net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	_, _ = rand.Read(mac)
	mac[0] = mac[0]&^0x01 | 0x02
	return mac
}

// SameNetns reports whether path names the network namespace of the
// calling thread (e.g. /proc/self/ns/net, or a /run/netns entry bound to
// it). A path that is no namespace, or does not exist, is not: opening it
// as one fails later with its own error.
func SameNetns(path string) (bool, error) {
	var here, there unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &here); err != nil {
		return false, fmt.Errorf("link: network namespace of this thread: %w", err)
	}
	if err := unix.Stat(path, &there); err != nil {
		return false, nil
	}
	return here.Dev == there.Dev && here.Ino == there.Ino, nil
}
