// Package shape limits the bandwidth of guest ports, in both directions, with
// HTB token buckets sized so that the achieved rate is the configured one.
//
// It is a mechanism: vnet decides which port gets which limits and calls
// ApplyPort/RemovePortIn at attach/detach and ApplyNetwork/RemoveNetwork at
// network start/stop. Xen vifs, QEMU taps and CNI veths are all "ports": the
// host-side end of a guest's link.
//
// # What goes where
//
// Directions are named from the guest's point of view:
//   - ToGuest (CNI's ingressRate): traffic the host sends out of the port.
//     Shaped by an HTB root qdisc on the port itself.
//   - FromGuest (CNI's egressRate): traffic the guest sends, which arrives on
//     the port's ingress. Ingress has no queue; policing there drops every
//     packet above the rate, which TCP takes for congestion and backs off well
//     below the rate unless the policer's burst is huge. So the port's ingress
//     is redirected (tc mirred) to an ifb device and shaped on the ifb's
//     egress: a real queue, as in the other direction.
//
// Per port, with a limit in both directions and no network aggregate:
//
//	port (e.g. vif3.0)
//	  clsact ingress: pref 46336 bpf "skb->priority = 1:1"; pref 46337 u32 mirred -> brsp<hash>
//	         egress:  pref 46336 bpf "skb->priority = 1:1"
//	  root:  htb 1: default 1 -> class 1:1 (rate = ceil = ToGuest) -> fq_codel|bfifo 2:
//	brsp<hash> (ifb, alias "brouter-shape/1 port=vif3.0 dir=from-guest")
//	  root:  htb 1: default 1 -> class 1:1 (rate = ceil = FromGuest) -> fq_codel|bfifo 2:
//
// The bpf filters pin skb->priority, from which HTB picks the class before
// any filter (see bpf.go for why that matters), and their names record the
// port's spec. Burst and queue sizes come from the rate (see sizing.go).
//
// A network with an aggregate limit (like a Crossbow etherstub's maxbw) has
// one ifb per limited direction, brsf<hash> (from guests) and brst<hash> (to
// guests), holding an HTB tree: class 1:1 is the aggregate, and every member
// port has a child class 1:m (ceil = the port's own limit, or the aggregate;
// rate = its guaranteed share by priority, see shares) with its leaf queue m:.
// A member port's clsact hook sets skb->priority to 1:m and redirects to the
// network's ifb, in both directions: for ToGuest the packet is redirected
// from the port's egress (u32 pref 46338) to the ifb, which sends it back out
// of the port once shaped (the ifb marks it so that the redirect is not
// repeated). Shaping at the ports rather than at the bridge device means that
// everything a guest sends or receives counts toward the aggregate, traffic
// between two guests of the same bridge and from dom0 itself included. On the
// ifb, one "tag" filter per member (parent 1:, handle m, a named bpf filter
// that never matches) records which port owns class 1:m, so that a port that
// is already gone can still be removed.
//
// # State
//
// None outside the kernel: every object has a fixed handle, preference or a
// name derived from the port or network (ifb names hash them to fit IFNAMSIZ),
// and the port's spec is written into the name of its classifier filter, so
// Describe can report it and a failed ApplyPort can restore the previous one.
//
// # Files
//
// names.go derives every name (ifbs, filter names, aliases) and parses them
// back; port.go shapes one port (ApplyPort, RemovePortIn, ForgetPort);
// aggregate.go holds network aggregates (ApplyNetwork, RemoveNetwork) and
// their members' classes; tc.go and bpf.go talk to the kernel; sizing.go
// derives bursts, queues and shares from rates; describe.go reads it all back.
//
// # Limits of the design
//
//   - ApplyNetwork before ApplyPort: a port joins its network's aggregate when
//     it is applied. A network that gains an aggregate direction later does
//     not pull in ports applied before; re-apply them (vnet does on attach).
//     Removing an aggregate (RemoveNetwork, or a direction set to 0) returns
//     its members to their own per-port limits.
//   - brouter owns the qdiscs of its ports: ApplyPort replaces the port's root
//     qdisc when it limits ToGuest, and RemovePort deletes an HTB 1: root
//     (the kernel then restores the device's default qdisc).
//   - Rates are layer 2: what the qdisc counts is the Ethernet frame without
//     FCS. TCP goodput over IPv4 with timestamps is 1448/1514 = 95.6% of it.
//   - ApplyPort and RemovePortIn cost the same on a host with 10 ports or
//     1000: they ask the kernel about the port's own devices and the named
//     network's ifbs (by name, and for qdiscs one device and parent at a
//     time), never for host-wide lists; a network aggregate's members are
//     rebalanced together, so joining or leaving one costs in proportion to
//     that network's members. Only RemovePort (network unknown) lists all
//     links, to find the port in every network's aggregate.
//   - ApplyPort takes a port out of the aggregate its previous spec named
//     (read back from its filters). A tag that an earlier port of the same
//     name left in another network's aggregate (its device deleted without
//     RemovePortIn) stays until RemovePortIn with that network, RemovePort,
//     or RemoveNetwork.
//   - Callers serialise operations on one network (vnet holds its lock); this
//     package also serialises its own calls within the process.
//   - Everything acts in the network namespace of the calling OS thread.
package shape

import (
	"errors"
	"fmt"
	"sync"
)

// Limit is a token bucket.
type Limit struct {
	Rate  uint64 // bits/s; 0 = no limit
	Burst uint64 // bytes; 0 = automatic (AutoBurst), which is what you want
}

// PortLimits is the shaping of one port.
type PortLimits struct {
	// Port is the host-side interface: vif3.0, tap0, veth1234abcd.
	Port string
	// ToGuest limits what the port sends to the guest, FromGuest what the guest sends.
	ToGuest, FromGuest Limit
	// Priority decides the port's share when its network's aggregate is saturated.
	Priority Priority
	// Network names the aggregate group the port belongs to ("" = none). It
	// only matters if ApplyNetwork gave that network an aggregate limit.
	Network string
}

// NetworkSpec is the aggregate limit of all guests of a network together;
// a zero Rate means no aggregate in that direction.
type NetworkSpec struct {
	Network            string
	ToGuest, FromGuest Limit
}

// ErrNoPort is returned (wrapped) by ApplyPort and Describe for a port that does not exist.
var ErrNoPort = errors.New("no such port")

var mu sync.Mutex

type direction int

const (
	toGuest direction = iota
	fromGuest
)

var directions = []direction{toGuest, fromGuest}

func (d direction) String() string {
	if d == toGuest {
		return "to-guest"
	}
	return "from-guest"
}

// hook is the clsact hook of the port where the direction's traffic passes.
func (d direction) hook() uint32 {
	if d == toGuest {
		return hookEgress
	}
	return hookIngress
}

func (s PortLimits) limit(d direction) Limit {
	if d == toGuest {
		return s.ToGuest
	}
	return s.FromGuest
}

func (n NetworkSpec) limit(d direction) Limit {
	if d == toGuest {
		return n.ToGuest
	}
	return n.FromGuest
}

func (l Limit) validate(what string) error {
	if l.Rate == 0 {
		if l.Burst != 0 {
			return fmt.Errorf("shape: %s: burst %s given without a rate", what, FormatSize(l.Burst))
		}
		return nil
	}
	switch {
	case l.Rate < MinRate:
		return fmt.Errorf("shape: %s: rate %dbit/s is below the minimum of %s", what, l.Rate, FormatRate(MinRate))
	case l.Rate > MaxRate:
		return fmt.Errorf("shape: %s: rate %s is above the maximum of %s", what, FormatRate(l.Rate), FormatRate(MaxRate))
	case l.Burst > MaxBurst:
		return fmt.Errorf("shape: %s: burst %s is above the maximum of %s", what, FormatSize(l.Burst), FormatSize(MaxBurst))
	case l.Burst > maxBurstFor(l.Rate):
		return fmt.Errorf("shape: %s: burst %s is more than the kernel can hold at %s (a bucket is at most about 274 s of its rate: %s)",
			what, FormatSize(l.Burst), FormatRate(l.Rate), FormatSize(maxBurstFor(l.Rate)))
	}
	return nil
}

func (s PortLimits) validate() error {
	if err := validPort(s.Port); err != nil {
		return err
	}
	if s.Network != "" {
		if err := validNetwork(s.Network); err != nil {
			return err
		}
	}
	if !s.Priority.valid() {
		return fmt.Errorf("shape: port %s: invalid priority %d: want High, Medium or Low", s.Port, int(s.Priority))
	}
	if err := s.ToGuest.validate("port " + s.Port + " to-guest"); err != nil {
		return err
	}
	return s.FromGuest.validate("port " + s.Port + " from-guest")
}

func (n NetworkSpec) validate() error {
	if err := validNetwork(n.Network); err != nil {
		return err
	}
	if err := n.ToGuest.validate("network " + n.Network + " to-guest aggregate"); err != nil {
		return err
	}
	return n.FromGuest.validate("network " + n.Network + " from-guest aggregate")
}

// undoOnError returns err, the failure of a change (nil: it succeeded). On a
// failure it first runs undo, which puts back what was there before, and
// says so if that fails too: what names the state undo restores.
func undoOnError(err error, what string, undo func() error) error {
	if err == nil {
		return nil
	}
	if u := undo(); u != nil {
		return fmt.Errorf("%w (restoring the previous %s failed too: %v)", err, what, u)
	}
	return err
}

// burstOr is the explicit burst or the automatic one for rate.
func (l Limit) burstOr(rate uint64) uint64 {
	if l.Burst > 0 {
		return l.Burst
	}
	return AutoBurst(rate)
}
