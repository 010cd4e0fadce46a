package firewall

import (
	"sync"
	"time"
)

// What the iptables backend keeps apart, and what it remembers.
//
// A network's guarded ports share its dispatch chains (BROUTER-AS-NET and
// the hooks' jumps to them, iptables_ports.go) and its published ports share
// its DNAT and hairpin chains (iptables_forwards.go): chains that the first
// port creates and the last one removes. Operations on different ports of a
// network run at once (their caller only serialises each port's), so the
// backend takes a lock of its own per network ("locks/iptables-NET.guard",
// "locks/iptables-NET.fwd" in its Records, when they are a Locker such as
// state.Store; else a lock of the process):
//
//   - a port's guard: its own jump added or deleted holding the guard lock
//     shared, the dispatch chain and its hook jump created or removed holding
//     it exclusively;
//   - a port's published ports: the fwd lock, exclusively (they are rare, and
//     their ownership check reads the network's chains).
//
// To spare a port's operations the tools of the other kind (three of them
// for a bridged port, each an exec), the backend records the kind of each
// guarded port's chains, before it creates them:
//
//	iptables/NET/network.json      the network's port records are complete
//	iptables/NET/guard/PORT.json   the port's chains' kind: bridged or routed
//
// The network record is written when the network's first dispatch chain is
// created, found missing from every tool; without it (chains made by an
// older version, or no Records) a port without a record is looked for
// everywhere: correct, only slower.

// Locker is implemented by Records that also lock between processes
// (state.Store is one): name is a lock of the store, held shared or
// exclusively until release is called, waited for at most timeout.
type Locker interface {
	Lock(name string, shared bool, timeout time.Duration) (release func(), err error)
}

// lockWait is how long a backend waits for one of its locks: they are
// held for a few execs.
const lockWait = 10 * time.Second

// processLocks are the locks of a backend without a Locker.
var processLocks sync.Map // name → *sync.RWMutex

// locked runs fn holding lock name of rec (shared or exclusively), or one
// of the process when rec is not a Locker.
func locked(rec Records, name string, shared bool, fn func() error) error {
	if lk, ok := rec.(Locker); ok {
		release, err := lk.Lock("locks/"+name+".lock", shared, lockWait)
		if err != nil {
			return err
		}
		defer release()
		return fn()
	}
	v, _ := processLocks.LoadOrStore(name, new(sync.RWMutex))
	mu := v.(*sync.RWMutex)
	if shared {
		mu.RLock()
		defer mu.RUnlock()
	} else {
		mu.Lock()
		defer mu.Unlock()
	}
	return fn()
}

// guardLocked runs fn holding the network's guard lock.
func (b *iptBackend) guardLocked(network string, shared bool, fn func() error) error {
	return locked(b.rec, "iptables-"+network+".guard", shared, fn)
}

// fwdLocked runs fn holding the network's published-ports lock.
func (b *iptBackend) fwdLocked(network string, fn func() error) error {
	return locked(b.rec, "iptables-"+network+".fwd", false, fn)
}

func iptRecNetwork(network string) string     { return "iptables/" + network + "/network.json" }
func iptRecGuardDir(network string) string    { return "iptables/" + network + "/guard" }
func iptRecGuard(network, port string) string { return iptRecGuardDir(network) + "/" + port + ".json" }

// guardKindOf is what a port's guard record says.
type guardKindOf int

const (
	kindUnknown guardKindOf = iota // no record to go by: look everywhere
	kindNone                       // the port has no chains
	kindBridged
	kindRouted
)

func kindOf(bridged bool) guardKindOf {
	if bridged {
		return kindBridged
	}
	return kindRouted
}

type iptGuardRec struct {
	Bridged bool `json:"bridged"`
}

// guardKind is the kind of the port's chains, as recorded.
func (b *iptBackend) guardKind(network, port string) guardKindOf {
	if b.rec == nil {
		return kindUnknown
	}
	var r iptGuardRec
	ok, err := b.rec.Read(iptRecGuard(network, port), &r)
	switch {
	case err != nil:
		return kindUnknown
	case ok:
		return kindOf(r.Bridged)
	}
	if ok, err := b.rec.Read(iptRecNetwork(network), &netNote{}); err == nil && ok {
		return kindNone
	}
	return kindUnknown
}

// noteGuard records the kind of the port's chains before they are made.
func (b *iptBackend) noteGuard(network, port string, k guardKindOf) error {
	if b.rec == nil {
		return nil
	}
	if err := b.rec.Write(iptRecGuard(network, port), iptGuardRec{Bridged: k == kindBridged}); err != nil {
		return errorf("iptables: port %s: %w", port, err)
	}
	return nil
}

// forgetGuard removes the port's record once its chains are gone.
func (b *iptBackend) forgetGuard(network, port string) error {
	if b.rec == nil {
		return nil
	}
	if err := b.rec.Remove(iptRecGuard(network, port)); err != nil {
		return errorf("iptables: port %s: %w", port, err)
	}
	return nil
}

// noteComplete records, before the network's first dispatch chain is made
// in a tool, that its port records are complete, when no tool has one yet
// (the caller holds the guard lock exclusively). Best effort: without the
// record, ports are looked for everywhere.
func (b *iptBackend) noteComplete(network string) {
	if b.rec == nil {
		return
	}
	if ok, err := b.rec.Read(iptRecNetwork(network), &netNote{}); err != nil || ok {
		return
	}
	tools, err := b.allPortTools()
	if err != nil {
		return
	}
	for _, x := range tools {
		if ok, err := x.chainExists(asDispatchChain(network)); err != nil || ok {
			return
		}
	}
	_ = b.rec.Write(iptRecNetwork(network), recNetworkNote(network))
}

// forgetNetwork removes the network's records (after its chains went).
func (b *iptBackend) forgetNetwork(network string) error {
	if b.rec == nil {
		return nil
	}
	names, err := b.rec.List(iptRecGuardDir(network))
	if err != nil {
		return errorf("iptables: network %s: %w", network, err)
	}
	for _, n := range names {
		if err := b.rec.Remove(iptRecGuardDir(network) + "/" + n); err != nil {
			return errorf("iptables: network %s: %w", network, err)
		}
	}
	if err := b.rec.Remove(iptRecNetwork(network)); err != nil {
		return errorf("iptables: network %s: %w", network, err)
	}
	return nil
}
