package firewall

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"syscall"

	gnftables "github.com/google/nftables"
)

// SyncPorts (every backend) makes the antispoof entries of the listed ports
// of network exactly theirs, trusting nothing it remembers: after another
// tool flushed or recreated the network's tables behind its back, what a
// backend recorded of its own installs may be wrong in ways it cannot see (a
// table deleted and created again holds nothing, whatever was written down).
// A reconcile calls it with every guarded port of the network. Ports not
// listed keep their entries.

// SyncPorts reads each of the network's sets once, sends every missing or
// wrong element of the listed ports in one batch, and rewrites their records:
// its cost does not depend on how stale the records were.
func (b *nftBackend) SyncPorts(network string, ports []PortRules) error {
	if err := validNetwork(network); err != nil {
		return err
	}
	for _, p := range ports {
		if p.Network != network {
			return errorf("nftables: port %s is of network %s, not %s", p.Port, p.Network, network)
		}
		if err := p.validate(); err != nil {
			return err
		}
	}
	if len(ports) == 0 {
		return nil
	}
	for _, p := range ports {
		if err := b.changing(recGuard(network, p.Port), guardRec{}); err != nil {
			return err
		}
	}
	conn, err := nlOpen()
	if err != nil {
		return errorf("nftables: network %s: %w", network, err)
	}
	defer nlClose(conn)
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		missing, err := planResync(conn, network, ports)
		if err == nil && len(missing) == 0 {
			for i := range ports {
				if err := b.installedGuard(network, ports[i].Port, &ports[i]); err != nil {
					return err
				}
			}
			return nil
		}
		if len(missing) > 0 {
			if err := b.setupPortTables(network, missing); err != nil {
				return err
			}
			continue
		}
		if connBroken(err) {
			return errorf("nftables: network %s: %w", network, err)
		}
		lastErr = err // a concurrent change failed the batch, which changed nothing: again
	}
	return errorf("nftables: network %s: resync ports: %w", network, lastErr)
}

// planResync queues and flushes, as one batch, what makes the ports'
// elements in every existing port table of the network theirs, reading each
// set once. It returns the tables the ports need that do not exist (then
// nothing was changed).
func planResync(conn nftPortOp, network string, ports []PortRules) ([]nftPortTable, error) {
	existing, err := conn.ListTables()
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	var missing []nftPortTable
	var changes []setChange
	for _, t := range nftPortTables(network) {
		needed := slices.ContainsFunc(ports, func(p PortRules) bool { return p.Bridged == t.bridged })
		if !slices.ContainsFunc(existing, func(e *gnftables.Table) bool { return e.Family == t.nl && e.Name == t.name }) {
			if needed {
				missing = append(missing, t)
			}
			continue
		}
		table := &gnftables.Table{Family: t.nl, Name: t.name}
		for _, s := range t.sets {
			set := &gnftables.Set{Table: table, Name: s}
			elems, err := dumpSet(conn, set)
			if errors.Is(err, syscall.ENOENT) {
				if needed {
					missing = append(missing, t) // a table without its sets: set it up again
				}
				break
			}
			if err != nil {
				return nil, fmt.Errorf("list set %s %s: %w", t, s, err)
			}
			// One change per set for all the ports: a message (and an
			// acknowledgement) per port would overflow the socket's buffer.
			var old, want [][]byte
			for _, p := range ports {
				prefix := keyIfname(p.Port)
				for _, e := range elems {
					if bytes.HasPrefix(e.Key, prefix) {
						old = append(old, e.Key)
					}
				}
				if p.Bridged == t.bridged {
					want = append(want, t.portElements(p)[s]...)
				}
			}
			changes = append(changes, keyChanges(set, old, want)...)
		}
	}
	return applyUnlessMissing(conn, missing, changes)
}

// SyncPorts on the Fake is EnsurePort for each port.
func (f *Fake) SyncPorts(network string, ports []PortRules) error {
	return syncEach(f, network, ports)
}

func syncEach(b Backend, network string, ports []PortRules) error {
	if err := validNetwork(network); err != nil {
		return err
	}
	for _, p := range ports {
		if p.Network != network {
			return errorf("port %s is of network %s, not %s", p.Port, p.Network, network)
		}
		if err := b.EnsurePort(p); err != nil {
			return err
		}
	}
	return nil
}
