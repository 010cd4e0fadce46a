package shape

import (
	"errors"
	"fmt"
	"slices"

	"github.com/vishvananda/netlink"
)

// ApplyPort makes the port's shaping what s says. It is idempotent (applying
// the same spec again changes nothing in the kernel), changes an existing
// shaping in place, and removes what s no longer asks for. s is validated
// before anything is touched; if the kernel refuses a step, the port's
// previous shaping is put back.
func ApplyPort(s PortLimits) error {
	if err := s.validate(); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	l, err := portLink(s.Port)
	if err != nil {
		return err
	}
	prev, prevNets, hadPrev, err := readPortLimits(l)
	if err != nil {
		return err
	}
	return undoOnError(applyPort(l, s, prevNets...), "shaping", func() error {
		// The failed attempt may have joined s.Network's aggregate already.
		if hadPrev {
			return applyPort(l, prev, append(prevNets, s.Network)...)
		}
		return removePort(s.Port, false, s.Network)
	})
}

// portLink looks up the port's device; a port that does not exist is an
// error wrapping ErrNoPort.
func portLink(port string) (netlink.Link, error) {
	l, err := linkByName(port)
	if err != nil {
		return nil, err
	}
	if l == nil {
		return nil, fmt.Errorf("shape: port %s: %w", port, ErrNoPort)
	}
	return l, nil
}

// applyPort brings the port to s. leave names the networks whose aggregates
// the port may be a member of (those its previous spec named, read back from
// its filters): it leaves them, except s.Network's when it joins that. Only
// these networks' ifbs are looked at, by name: the cost does not depend on
// how many ports or networks the host has.
func applyPort(l netlink.Link, s PortLimits, leave ...string) error {
	for _, d := range directions {
		var target netlink.Link
		if s.Network != "" {
			var err error
			if target, err = aggregateIfb(s.Network, d); err != nil {
				return err
			}
		}
		if err := applyDir(l, d, s.limit(d), s.Priority, s.Network, target); err != nil {
			return err
		}
		// Leave the aggregate of this direction the port was in (a port
		// moved into another network or out of one).
		for _, n := range distinct(leave) {
			if target != nil && n == s.Network {
				continue
			}
			if err := leaveAggregate(n, d, s.Port); err != nil {
				return err
			}
		}
	}
	return delClsactIfEmpty(l)
}

// distinct returns the non-empty names in ns, each once.
func distinct(ns []string) []string {
	var out []string
	for _, n := range ns {
		if n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// applyDir brings one direction of a port to its wanted state: a member of
// the network aggregate on netIfb, a per-port shaper, or nothing.
func applyDir(l netlink.Link, d direction, lim Limit, prio Priority, network string, netIfb netlink.Link) error {
	port := l.Attrs().Name
	hook := d.hook()
	name := portFilterName(lim, prio, network)
	switch {
	case netIfb != nil:
		minor, err := joinNetwork(netIfb, port, lim, prio)
		if err != nil {
			return err
		}
		hf, err := classify(l, hook, netlink.MakeHandle(1, uint16(minor)), name)
		if err != nil {
			return err
		}
		if err := ensureRedirect(l, hook, hf.redirect, netIfb); err != nil {
			return err
		}
		return delPortShaper(l, d)

	case lim.Rate > 0:
		dev := l
		if d == fromGuest {
			ifb, _, err := ensureIfb(PortIfb(port), portIfbAlias(port, d))
			if err != nil {
				return err
			}
			dev = ifb
		}
		if err := ensurePortShaper(dev, lim); err != nil {
			return err
		}
		hf, err := classify(l, hook, aggClass, name)
		if err != nil {
			return err
		}
		if d == fromGuest {
			return ensureRedirect(l, hook, hf.redirect, dev)
		}
		if hf.redirect != nil {
			return delFilter(l, hook, prefRedir(hook), 0, "u32")
		}
		return nil

	default:
		hf, err := listHook(l, hook)
		if err != nil {
			return err
		}
		if hf.redirect != nil {
			if err := delFilter(l, hook, prefRedir(hook), 0, "u32"); err != nil {
				return err
			}
		}
		if hf.classify != nil {
			if err := delFilter(l, hook, prefFilter, 0, "bpf"); err != nil {
				return err
			}
		}
		return delPortShaper(l, d)
	}
}

// classify makes the port's hook set skb->priority to classid, with a filter
// called name (which records the spec); it returns the hook's filters as they
// were before.
func classify(l netlink.Link, hook, classid uint32, name string) (hookFilters, error) {
	if err := ensureClsact(l); err != nil {
		return hookFilters{}, err
	}
	hf, err := listHook(l, hook)
	if err != nil {
		return hookFilters{}, err
	}
	return hf, ensureClassify(l, hook, hf.classify, classid, name)
}

// ensurePortShaper sets up HTB 1: -> 1:1 -> leaf 2: on dev (the port or its ifb).
func ensurePortShaper(dev netlink.Link, lim Limit) error {
	if err := ensureRootHTB(dev, 1); err != nil {
		return err
	}
	classes, err := htbClasses(dev)
	if err != nil {
		return err
	}
	b := lim.burstOr(lim.Rate)
	c := classSpec{handle: aggClass, parent: htbHandle, rate: lim.Rate, ceil: lim.Rate, burst: b, cburst: b, prio: 0, quantum: quantum(Medium)}
	if err := ensureClass(dev, classes, c); err != nil {
		return err
	}
	return ensureLeaf(dev, aggClass, portLeaf, lim.Rate)
}

// delPortShaper removes the per-port shaper of direction d.
func delPortShaper(l netlink.Link, d direction) error {
	if d == toGuest {
		return delRootHTB(l)
	}
	return delIfb(PortIfb(l.Attrs().Name))
}

// delIfb deletes the ifb called name, if there is one; a link of another
// kind with that name is not brouter's and stays.
func delIfb(name string) error {
	ifb, err := ifbByName(name)
	if err != nil || ifb == nil {
		return err
	}
	return delLink(ifb)
}

// RemovePort removes all shaping of the port: its filters and qdiscs, its
// ifb, and its classes in network aggregates. A port that is gone already
// (its qdiscs and filters went with it) is not an error: what it left
// elsewhere is removed.
//
// Not knowing the port's network, it looks for the port in the aggregates of
// every network on the host, which costs a dump of all links: callers that
// know the network use RemovePortIn.
func RemovePort(port string) error { return RemovePortIn(port, "") }

// RemovePortIn is RemovePort for a port that may have joined network's
// aggregate (the network it was applied with); network "" means unknown,
// as RemovePort. It looks only at that network's aggregate ifbs and at those
// of the network the port's own filters name, so its cost does not grow with
// the number of ports or networks on the host. A port that is gone already
// still loses its ifb and its classes in network's aggregates.
func RemovePortIn(port, network string) error {
	if err := validPort(port); err != nil {
		return err
	}
	if network != "" {
		if err := validNetwork(network); err != nil {
			return err
		}
	}
	mu.Lock()
	defer mu.Unlock()
	return removePort(port, network == "", network)
}

// ForgetPort removes what a port's shaping leaves outside the port device:
// its ifb and its classes in network's aggregates. It never touches the
// device itself, so a caller that is deleting the device (whose qdiscs and
// filters go with it) can run both at once.
func ForgetPort(port, network string) error {
	if err := validPort(port); err != nil {
		return err
	}
	if err := validNetwork(network); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	errs := []error{delIfb(PortIfb(port))}
	for _, d := range directions {
		errs = append(errs, leaveAggregate(network, d, port))
	}
	return errors.Join(errs...)
}

// removePort removes the port's shaping and its membership in the
// aggregates of networks, and of the networks its filters name; with
// scanAll, in the aggregates of every network on the host.
func removePort(port string, scanAll bool, networks ...string) error {
	var errs []error
	l, err := linkByName(port)
	if err != nil {
		return err
	}
	if l != nil {
		_, named, _, err := readPortLimits(l)
		if err != nil {
			errs = append(errs, err)
		}
		networks = append(networks, named...)
		for _, d := range directions {
			if err := applyDir(l, d, Limit{}, Medium, "", nil); err != nil {
				errs = append(errs, err)
			}
		}
		if err := delClsactIfEmpty(l); err != nil {
			errs = append(errs, err)
		}
	} else {
		errs = append(errs, delIfb(PortIfb(port)))
	}
	if scanAll {
		ifbs, err := allAggregateIfbs()
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		for _, ifb := range ifbs {
			errs = append(errs, leaveNetwork(ifb, port))
		}
		return errors.Join(errs...)
	}
	for _, n := range distinct(networks) {
		for _, d := range directions {
			errs = append(errs, leaveAggregate(n, d, port))
		}
	}
	return errors.Join(errs...)
}

// readPortLimits reads back the spec a port was applied with, from the names
// of its classifier filters; ok is false if the port is not shaped. nets are
// the networks those names give (normally one, or none), whose aggregates the
// port may have joined.
func readPortLimits(l netlink.Link) (s PortLimits, nets []string, ok bool, err error) {
	s.Port = l.Attrs().Name
	for _, d := range directions {
		hf, err := listHook(l, d.hook())
		if err != nil {
			return s, nil, false, err
		}
		if hf.classify == nil {
			continue
		}
		p, good := parseName(hf.classify.Name)
		if !good {
			continue
		}
		ok = true
		if d == toGuest {
			s.ToGuest = p.limit
		} else {
			s.FromGuest = p.limit
		}
		s.Priority, s.Network = p.prio, p.network
		if p.network != "" && !slices.Contains(nets, p.network) {
			nets = append(nets, p.network)
		}
	}
	return s, nets, ok, nil
}
