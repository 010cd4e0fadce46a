package firewall

import (
	"slices"
	"sync"
)

// Fake is an in-memory Backend for unit tests. It records, per network, the
// rules the nftables backend would install ("chain: rule" lines from the same
// rule generation), and the NetworkRules it was given. Safe for concurrent use.
type Fake struct {
	mu    sync.Mutex
	nets  map[string]fakeNet
	err   error
	calls int
}

type fakeNet struct {
	rules NetworkRules
	lines []string
}

// NewFake returns an empty Fake.
func NewFake() *Fake { return &Fake{nets: map[string]fakeNet{}} }

func (f *Fake) Name() string { return "fake" }

// FailWith makes every later Ensure and Remove return err (nil: succeed again),
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
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return f.err
	}
	f.nets[r.Network] = fakeNet{rules: r, lines: lines}
	return nil
}

func (f *Fake) Remove(network string) error {
	if err := validNetwork(network); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return f.err
	}
	delete(f.nets, network)
	return nil
}

func (f *Fake) List(network string) ([]string, error) {
	if err := validNetwork(network); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.nets[network].lines), nil
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
	var out []string
	for n := range f.nets {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Calls returns how many Ensure and Remove calls the Fake has seen.
func (f *Fake) Calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}
