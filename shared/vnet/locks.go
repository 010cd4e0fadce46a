package vnet

import (
	"fmt"

	"github.com/brouter/brouter/shared/state"
)

// Locks serialise invocations for their bookkeeping, not for their slow
// work, so that parallel callers scale (a hypervisor starting 20 guests at
// once, a runtime starting 30 containers):
//
//	locks/NET.lock          the network's. Start and Stop hold it exclusively,
//	                        Attach and Detach shared: ports attach and detach
//	                        at once, and Start or Stop waits for the ports in
//	                        flight (which then find the network as it left it).
//	locks/ports.lock        a port's own: one byte of the file per port name
//	                        (state.AcquireKey). Attach and Detach of one port
//	                        hold it for the port's whole work: its record,
//	                        device, tc, set elements.
//	locks/NET.shaping.lock  the network's aggregate shaping classes: held only
//	                        around a port's tc changes when the port is in the
//	                        network's aggregate limits.
//	locks/hostports.lock    host-wide claims of published host ports: a few
//	                        file operations (forwards.go).
//	locks/NET.ndproxy.lock  a mode route network's proxy NDP entries between
//	                        its ports, made from the other ports' records
//	                        (ipv6.go): held around a port's entries and the
//	                        record that lists its addresses.
//
// Order: network, then port, then shaping or host ports; never the other
// way. Every wait has the config's lock_timeout.

func lockName(network string) string { return "locks/" + network + ".lock" }

const portsLock = "locks/ports.lock"        // "ports" is no network's name (names.Network)
func shapingLockName(network string) string { return "locks/" + network + ".shaping.lock" }
func ndProxyLockName(network string) string { return "locks/" + network + ".ndproxy.lock" }

// lock takes the network's lock exclusively (Start, Stop).
func (m *Manager) lock(network string) (*state.Lock, error) {
	l, err := m.Records.Acquire(lockName(network), m.Config.LockTimeout)
	if err != nil {
		return nil, fmt.Errorf("vnet: network %s: %w", network, err)
	}
	return l, nil
}

// portLock is what Attach and Detach hold: the network's lock shared and
// the port's own.
type portLock struct{ network, port *state.Lock }

// lockPort takes the locks for work on one port of network.
func (m *Manager) lockPort(network, port string) (*portLock, error) {
	nl, err := m.Records.AcquireShared(lockName(network), m.Config.LockTimeout)
	if err != nil {
		return nil, fmt.Errorf("vnet: network %s: %w", network, err)
	}
	pl, err := m.lockPortOnly(port)
	if err != nil {
		nl.Release()
		return nil, err
	}
	return &portLock{network: nl, port: pl}, nil
}

// lockPortOnly takes the port's own lock, for a caller that holds the
// network's or needs none.
func (m *Manager) lockPortOnly(port string) (*state.Lock, error) {
	l, err := m.Records.AcquireKey(portsLock, port, m.Config.LockTimeout)
	if err != nil {
		return nil, fmt.Errorf("vnet: port %s: %w", port, err)
	}
	return l, nil
}

func (l *portLock) release() {
	l.port.Release()
	l.network.Release()
}

// withShapingLock runs fn holding the network's shaping lock when locked,
// else just runs it.
func (m *Manager) withShapingLock(network string, locked bool, fn func() error) error {
	if !locked {
		return fn()
	}
	return m.withLock(shapingLockName(network), fn)
}

// withLock runs fn holding the lock name exclusively.
func (m *Manager) withLock(name string, fn func() error) error {
	l, err := m.Records.Acquire(name, m.Config.LockTimeout)
	if err != nil {
		return fmt.Errorf("vnet: %w", err)
	}
	defer l.Release()
	return fn()
}

// makePortsLock makes the file of the ports' locks, at Start rather than at
// a network's first port, so that a port leaves the run directory as it
// found it.
func (m *Manager) makePortsLock() {
	if l, err := m.lockPortOnly(""); err == nil {
		l.Release()
	}
}
