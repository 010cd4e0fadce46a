package vnet

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/link"
	"github.com/brouter/brouter/shared/names"
)

// Owned ports are devices created for one attachment (the host end of a CNI
// veth; a tap opened for QEMU's bridge helper), whoever asks for them. vnet
// owns their whole lifecycle: the attachment is recorded before its device
// exists, a failed attach undoes all of it (BeginOwned, OwnedPort.Abort),
// DetachOwned deletes the device with everything Attach gave it, and GCOwned
// removes every attachment of a scope that its owner no longer lists.
//
// An attachment's record, run_dir/attachments.d/PORT.json, says whose it is:
// a scope (the owner and its own namespace, e.g. "cni/" and a CNI network's
// name) and the owner's ID for it (e.g. a container ID and interface). The
// port names the record: device names are unique on the host. ("." cannot
// occur in a network's name, so the directory never collides with a
// network's own.) The record format holds ports that are not owned too
// (Owned false: GC detaches them and leaves the device), so that Xen's and
// QEMU's leaks can be collected the same way.

const attachmentsDir = "attachments.d"

func attachmentRecord(port string) string { return attachmentsDir + "/" + port + ".json" }

// Attachment is the record of one attachment of a port.
type Attachment struct {
	// Scope is the owner's: GC of a scope never touches another's.
	Scope string `json:"scope"`
	// ID is the owner's name for the attachment, unique in its scope.
	ID string `json:"id"`
	// Network is the brouter network the port is attached to.
	Network string `json:"network"`
	// Port is the host-side device.
	Port string `json:"port"`
	// Owned: the device was made for the attachment and goes with it.
	Owned   bool      `json:"owned"`
	Created time.Time `json:"created"`
}

func (a *Attachment) validate() error {
	if err := names.Interface(a.Port); err != nil {
		return fmt.Errorf("vnet: attachment port: %w", err)
	}
	if err := names.Network(a.Network); err != nil {
		return fmt.Errorf("vnet: attachment %s: %w", a.Port, err)
	}
	if a.Scope == "" || a.ID == "" {
		return fmt.Errorf("vnet: attachment %s: a scope and an ID are required", a.Port)
	}
	return nil
}

// OwnedPort is an owned port being attached: BeginOwned returns it, its
// methods make the device, allocate its addresses and attach it, and Abort
// undoes whatever of that was done.
type OwnedPort struct {
	m         *Manager
	a         Attachment
	made      bool   // the device exists
	allocated string // network whose allocator gave the port addresses
	attached  bool   // Attach ran (it may leave state even when it fails)
}

// BeginOwned starts an owned port's attachment. A device with the port's
// name left by an earlier attach (one killed midway, or the same attachment
// added again) is detached and deleted first: the name is the attachment's.
// Then the attachment is recorded, before its device exists, so that
// DetachOwned and GCOwned find whatever a kill leaves from here on.
func (m *Manager) BeginOwned(a Attachment) (*OwnedPort, error) {
	a.Owned, a.Created = true, time.Now().UTC()
	if err := a.validate(); err != nil {
		return nil, invalidPort{err}
	}
	stale, err := link.Exists(a.Port)
	if err != nil {
		return nil, fmt.Errorf("vnet: %w", err)
	}
	if stale {
		if err := m.removeDevice(a.Port, "", true); err != nil {
			return nil, fmt.Errorf("vnet: remove the stale port %s: %w", a.Port, err)
		}
	}
	if err := m.Records.Write(attachmentRecord(a.Port), &a); err != nil {
		return nil, err
	}
	return &OwnedPort{m: m, a: a}, nil
}

// Name is the port's device name.
func (o *OwnedPort) Name() string { return o.a.Port }

// CreateVeth makes the port as the host end of a veth pair whose peer goes
// to the guest's namespace (see link.CreateVeth; the spec's Name is the
// port's). A peer namespace that is the caller's own is refused: the guest
// end would land on the host.
func (o *OwnedPort) CreateVeth(spec link.VethSpec) (link.VethEnds, error) {
	spec.Name = o.a.Port
	ends, err := link.CreateVeth(spec)
	if err != nil {
		return ends, err
	}
	o.made = true
	return ends, nil
}

// Allocate gives the port addresses from the network's own allocator (see
// Manager.Allocate), with the network's gateway for each; they go with the
// attachment.
func (o *OwnedPort) Allocate(n *config.Network, want []netip.Addr) ([]GuestAddr, error) {
	o.allocated = n.Name
	got, err := o.m.Allocate(n, o.a.Port, want)
	var out []GuestAddr
	for _, p := range got {
		out = append(out, GuestAddr{Prefix: p, Gateway: GatewayFor(n, p.Addr())})
	}
	return out, err
}

// Attach joins the port to network n (see Manager.Attach; the request's
// Name and Owned are the port's).
func (o *OwnedPort) Attach(n *config.Network, p PortRequest) error {
	p.Name, p.Owned = o.a.Port, true
	o.attached = true
	return o.m.Attach(n, p)
}

// Abort undoes the attachment as far as it went: the port off its network,
// its device, its addresses and the record. The record stays when something
// could not be undone, for DetachOwned or GCOwned to finish.
func (o *OwnedPort) Abort() error {
	var errs []error
	if o.attached {
		errs = append(errs, o.m.DetachPort(o.a.Port))
	}
	if o.made {
		errs = append(errs, link.Delete(o.a.Port))
	}
	if o.allocated != "" {
		errs = append(errs, o.m.Release(o.allocated, o.a.Port))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("vnet: undo the attachment of %s: %w", o.a.Port, err)
	}
	return o.m.Records.Remove(attachmentRecord(o.a.Port))
}

// DetachOwned undoes an owned port's attachment from whatever state an
// attach, a kill or an earlier detach left: the port off its network with
// its device (Detach), a device made before it was attached, the addresses
// allocated to it, and its record. network is the caller's idea of the
// port's network, for a port no record names one for. Nothing left to undo
// is not an error.
func (m *Manager) DetachOwned(port, network string) error {
	if err := names.Interface(port); err != nil {
		return fmt.Errorf("vnet: port: %w", err)
	}
	a := Attachment{Port: port, Network: network, Owned: true}
	if _, err := m.Records.Read(attachmentRecord(port), &a); err != nil {
		return err
	}
	if err := m.removeDevice(port, a.Network, a.Owned); err != nil {
		return fmt.Errorf("vnet: detach %s: %w", port, err)
	}
	return m.Records.Remove(attachmentRecord(port))
}

// removeDevice detaches the port from any network, deletes its device
// when owned (also one that was never attached), and releases what the
// network's allocator gave it.
func (m *Manager) removeDevice(port, network string, owned bool) error {
	if err := m.DetachPort(port); err != nil {
		return err
	}
	if owned {
		if err := link.Delete(port); err != nil {
			return err
		}
	}
	if network == "" {
		return nil
	}
	return m.Release(network, port)
}

// OwnedGC says which attachments of a scope on a network stay.
type OwnedGC struct {
	Scope   string
	Network string
	// Valid are the attachments that stay: their IDs, with their ports.
	Valid map[string]string
	// Mine reports whether a port name is one the owner gives its ports:
	// such a port on the network that has no record at all (an attach
	// killed before it recorded anything; a record lost) is taken as one
	// of the scope's leaks.
	Mine func(port string) bool
	// Release, when set, is the owner's own cleanup of a recorded
	// attachment (CNI: the IPAM plugin's DEL), run after the port is gone
	// and before the record goes; an error keeps the record for next time.
	Release func(Attachment) error
}

// GCOwned removes every attachment of gc's scope on its network that is not
// valid, as DetachOwned does, and the scope's unrecorded leaks (see
// OwnedGC.Mine). It goes on after a failure and returns the first.
func (m *Manager) GCOwned(gc OwnedGC) error {
	files, err := m.Records.List(attachmentsDir)
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	for _, port := range gc.Valid {
		keep[port] = true
	}
	recorded := map[string]bool{}
	var cands []Attachment
	var errs []error
	for _, f := range files {
		port, ok := strings.CutSuffix(f, ".json")
		if !ok {
			continue
		}
		recorded[port] = true
		var a Attachment
		if _, err := m.Records.Read(attachmentRecord(port), &a); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, valid := gc.Valid[a.ID]; a.Scope == gc.Scope && a.Network == gc.Network && !valid && !keep[port] {
			cands = append(cands, a)
		}
	}
	leaks, err := m.unrecorded(gc, recorded, keep)
	if err != nil {
		errs = append(errs, err)
	}
	for _, a := range append(cands, leaks...) {
		if err := m.removeDevice(a.Port, a.Network, a.Owned); err != nil {
			errs = append(errs, fmt.Errorf("vnet: remove %s: %w", a.Port, err))
			continue
		}
		if a.ID != "" && gc.Release != nil {
			if err := gc.Release(a); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		errs = append(errs, m.Records.Remove(attachmentRecord(a.Port)))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("vnet: GC of %s on network %s: %w", gc.Scope, gc.Network, err)
	}
	return nil
}

// unrecorded lists gc's leaks: ports attached to the network, and owners of
// its allocator's addresses, that gc.Mine claims and no record names.
func (m *Manager) unrecorded(gc OwnedGC, recorded, keep map[string]bool) ([]Attachment, error) {
	if gc.Mine == nil {
		return nil, nil
	}
	ports, err := m.Ports(gc.Network)
	if err != nil {
		return nil, err
	}
	owners, err := m.Owners(gc.Network)
	if err != nil {
		return nil, err
	}
	var out []Attachment
	seen := map[string]bool{}
	for _, p := range append(ports, owners...) {
		if seen[p] || recorded[p] || keep[p] || !gc.Mine(p) {
			continue
		}
		seen[p] = true
		out = append(out, Attachment{Scope: gc.Scope, Network: gc.Network, Port: p, Owned: true})
	}
	return out, nil
}
