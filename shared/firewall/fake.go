package firewall

import (
	"net"
	"slices"
	"sync"
)

// Fake is an in-memory Backend for unit tests. It records, per network, the
// rules the nftables backend would install ("chain: rule" lines from the same
// rule generation), the NetworkRules it was given, the PortRules of each
// guarded port and the Forwards of each port with published ports. Like the
// real backends, it refuses a host port that another port of the network
// publishes.
// Safe for concurrent use.
type Fake struct {
	mu       sync.Mutex
	nets     map[string]fakeNet
	ports    map[string]map[string]PortRules // network → port → rules
	fwds     map[string]map[string]Forwards  // network → port → published ports
	ovGuests map[string]map[string]bool      // network → local guest MACs of its overlay
	err      error
	calls    int
}

type fakeNet struct {
	rules NetworkRules
	lines []string
}

// NewFake returns an empty Fake.
func NewFake() *Fake {
	return &Fake{nets: map[string]fakeNet{}, ports: map[string]map[string]PortRules{}, fwds: map[string]map[string]Forwards{}, ovGuests: map[string]map[string]bool{}}
}

func (f *Fake) Name() string { return "fake" }

// change runs a change of the fake's state: counted, under its lock, and
// failing with FailWith's error, when set, before anything changes.
func (f *Fake) change(fn func() error) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return f.err
	}
	return fn()
}

// FailWith makes every later Ensure, Remove, EnsurePort, RemovePort,
// EnsureForwards and RemoveForwards return err (nil: succeed again),
// to test the caller's error paths.
func (f *Fake) FailWith(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *Fake) Ensure(r NetworkRules) error {
	if err := r.validate(); err != nil {
		return err
	}
	lines := nftLines(r)
	r.Subnets = slices.Clone(r.Subnets)
	return f.change(func() error {
		f.nets[r.Network] = fakeNet{rules: r, lines: lines}
		return nil
	})
}

func (f *Fake) Remove(network string) error {
	if err := validNetwork(network); err != nil {
		return err
	}
	return f.change(func() error {
		delete(f.nets, network)
		delete(f.ports, network)
		delete(f.fwds, network)
		delete(f.ovGuests, network)
		return nil
	})
}

func (f *Fake) List(network string) ([]string, error) {
	if err := validNetwork(network); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Clone(f.nets[network].lines)
	for _, port := range sortedKeys(f.ports[network]) {
		p := f.ports[network][port]
		line := "port " + port + ": " + p.MAC.String()
		for _, a := range p.IPs {
			line += " " + a.String()
		}
		out = append(out, line)
	}
	for _, port := range sortedKeys(f.fwds[network]) {
		l := slices.Clone(f.fwds[network][port].Forwards)
		sortForwards(l)
		for _, fw := range l {
			out = append(out, ForwardLine(port, fw))
		}
	}
	return out, nil
}

// EnsurePort records p.
func (f *Fake) EnsurePort(p PortRules) error {
	if err := p.validate(); err != nil {
		return err
	}
	p = p.clone()
	return f.change(func() error {
		if f.ports[p.Network] == nil {
			f.ports[p.Network] = map[string]PortRules{}
		}
		f.ports[p.Network][p.Port] = p
		return nil
	})
}

func (f *Fake) RemovePort(network, port string) error {
	if err := validPortRef(network, port); err != nil {
		return err
	}
	return f.change(func() error {
		delete(f.ports[network], port)
		if len(f.ports[network]) == 0 {
			delete(f.ports, network)
		}
		return nil
	})
}

// Port returns the PortRules last installed for the port, if any.
func (f *Fake) Port(network, port string) (PortRules, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p, ok := f.ports[network][port]
	return p.clone(), ok
}

// Ports returns the guarded ports of network, sorted.
func (f *Fake) Ports(network string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return sortedKeys(f.ports[network])
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Rules returns the NetworkRules last installed for network, if any.
func (f *Fake) Rules(network string) (NetworkRules, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nets[network]
	n.rules.Subnets = slices.Clone(n.rules.Subnets)
	return n.rules, ok
}

// Networks returns the networks that have rules installed, sorted.
func (f *Fake) Networks() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return sortedKeys(f.nets)
}

// Calls returns how many Ensure, Remove, EnsurePort, RemovePort,
// EnsureForwards and RemoveForwards calls the Fake has seen.
func (f *Fake) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// EnsureForwards records fw (no forwards: none). A host port that another
// port of the network publishes is refused, as the real backends do.
func (f *Fake) EnsureForwards(fw Forwards) error {
	if err := fw.validate(); err != nil {
		return err
	}
	fw = fw.clone()
	return f.change(func() error {
		for port, other := range f.fwds[fw.Network] {
			if port == fw.Port {
				continue
			}
			for _, x := range fw.Forwards {
				if slices.ContainsFunc(other.Forwards, func(o Forward) bool { return o.key() == x.key() }) {
					return conflict(fw.Port, x, port)
				}
			}
		}
		if len(fw.Forwards) == 0 {
			f.removeForwards(fw.Network, fw.Port)
			return nil
		}
		if f.fwds[fw.Network] == nil {
			f.fwds[fw.Network] = map[string]Forwards{}
		}
		f.fwds[fw.Network][fw.Port] = fw
		return nil
	})
}

func (f *Fake) RemoveForwards(network, port string) error {
	if err := validPortRef(network, port); err != nil {
		return err
	}
	return f.change(func() error {
		f.removeForwards(network, port)
		return nil
	})
}

func (f *Fake) removeForwards(network, port string) {
	delete(f.fwds[network], port)
	if len(f.fwds[network]) == 0 {
		delete(f.fwds, network)
	}
}

// Forwards returns the Forwards last installed for the port, if it has published ports.
func (f *Fake) Forwards(network, port string) (Forwards, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fw, ok := f.fwds[network][port]
	return fw.clone(), ok
}

// ForwardPorts returns the ports of network that have published ports, sorted.
func (f *Fake) ForwardPorts(network string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return sortedKeys(f.fwds[network])
}

func (f *Fake) EnsureOverlayGuest(network string, mac net.HardwareAddr) error {
	return f.overlayGuest(network, mac, true)
}

func (f *Fake) RemoveOverlayGuest(network string, mac net.HardwareAddr) error {
	return f.overlayGuest(network, mac, false)
}

func (f *Fake) overlayGuest(network string, mac net.HardwareAddr, add bool) error {
	if err := validOverlayGuest(network, mac); err != nil {
		return err
	}
	return f.change(func() error {
		if f.ovGuests[network] == nil {
			f.ovGuests[network] = map[string]bool{}
		}
		if add {
			f.ovGuests[network][mac.String()] = true
		} else {
			delete(f.ovGuests[network], mac.String())
		}
		return nil
	})
}

// OverlayGuests lists the local guest MACs recorded for network's overlay.
func (f *Fake) OverlayGuests(network string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return sortedKeys(f.ovGuests[network])
}
