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
// between two guests of the same bridge and from dom0 itself included. On the ifb, one "tag" filter per member (parent
// 1:, handle m, a named bpf filter that never matches) records which port owns
// class 1:m, so that a port that is already gone can still be removed.
//
// # State
//
// None outside the kernel: every object has a fixed handle, preference or a
// name derived from the port or network (ifb names hash them to fit IFNAMSIZ),
// and the port's spec is written into the name of its classifier filter, so
// Describe can report it and a failed ApplyPort can restore the previous one.
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
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"

	"github.com/brouter/brouter/shared/link"
)

// Limit is a token bucket.
type Limit struct {
	Rate  uint64 // bits/s; 0 = no limit
	Burst uint64 // bytes; 0 = automatic (AutoBurst), which is what you want
}

// PortSpec is the shaping of one port.
type PortSpec struct {
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

func (s PortSpec) limit(d direction) Limit {
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

// Names.
const (
	specMark     = "brouter-shape/1" // first word of every filter name and ifb alias
	portIfbPre   = "brsp"
	netToIfbPre  = "brst"
	netFromIfbPr = "brsf"
)

var (
	ifnameRE   = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)
	networkRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	reservedRE = regexp.MustCompile(`^brs[pft][0-9a-f]{11}$`)
)

func hash11(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:11]
}

// PortIfb is the name of the ifb that shapes what the guest behind port sends
// (when the port is not part of a network aggregate).
func PortIfb(port string) string { return portIfbPre + hash11("port\x00"+port) }

// NetworkIfbs returns the names of the ifbs of a network's aggregate limits.
func NetworkIfbs(network string) (toGuestIfb, fromGuestIfb string) {
	h := hash11("network\x00" + network)
	return netToIfbPre + h, netFromIfbPr + h
}

func netIfbName(network string, d direction) string {
	t, f := NetworkIfbs(network)
	if d == toGuest {
		return t
	}
	return f
}

func validPort(port string) error {
	if !ifnameRE.MatchString(port) || port == "." || port == ".." {
		return fmt.Errorf("shape: invalid port name %q: want an interface name of 1-15 letters, digits, '.', '-' or '_'", port)
	}
	if reservedRE.MatchString(port) {
		return fmt.Errorf("shape: invalid port name %q: names brs[pft]<hash> belong to brouter's ifb devices", port)
	}
	return nil
}

func validNetwork(network string) error {
	if !networkRE.MatchString(network) {
		return fmt.Errorf("shape: invalid network name %q: want 1-64 letters, digits, '.', '-' or '_', starting with a letter or digit", network)
	}
	return nil
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

func (s PortSpec) validate() error {
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

// burstOr is the explicit burst or the automatic one for rate.
func (l Limit) burstOr(rate uint64) uint64 {
	if l.Burst > 0 {
		return l.Burst
	}
	return AutoBurst(rate)
}

// Filter names: the spec of a port's direction, written into its classifier
// filter on the port, and into its tag filter on a network ifb.
func portFilterName(l Limit, p Priority, network string) string {
	if network == "" {
		network = "-"
	}
	return fmt.Sprintf("%s rate=%d burst=%d prio=%s net=%s", specMark, l.Rate, l.Burst, p, network)
}

// netAlias labels a network ifb with its network and aggregate limit.
func netAlias(network string, d direction, l Limit) string {
	return fmt.Sprintf("%s network=%s dir=%s rate=%d burst=%d", specMark, network, d, l.Rate, l.Burst)
}

func tagName(port string, l Limit, p Priority) string {
	return fmt.Sprintf("%s port=%s rate=%d burst=%d prio=%s", specMark, port, l.Rate, l.Burst, p)
}

type parsedName struct {
	port    string
	limit   Limit
	prio    Priority
	network string
}

func parseName(name string) (parsedName, bool) {
	f := strings.Fields(name)
	if len(f) == 0 || f[0] != specMark {
		return parsedName{}, false
	}
	var out parsedName
	for _, kv := range f[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return parsedName{}, false
		}
		var err error
		switch k {
		case "port":
			out.port = v
		case "rate":
			out.limit.Rate, err = strconv.ParseUint(v, 10, 64)
		case "burst":
			out.limit.Burst, err = strconv.ParseUint(v, 10, 64)
		case "prio":
			out.prio, err = ParsePriority(v)
		case "net", "network":
			if v != "-" {
				out.network = v
			}
		}
		if err != nil {
			return parsedName{}, false
		}
	}
	return out, true
}

// ApplyPort makes the port's shaping what s says. It is idempotent (applying
// the same spec again changes nothing in the kernel), changes an existing
// shaping in place, and removes what s no longer asks for. s is validated
// before anything is touched; if the kernel refuses a step, the port's
// previous shaping is put back.
func ApplyPort(s PortSpec) error {
	if err := s.validate(); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	l, err := linkByName(s.Port)
	if err != nil {
		return err
	}
	if l == nil {
		return fmt.Errorf("shape: port %s: %w", s.Port, ErrNoPort)
	}
	prev, prevNets, hadPrev, err := readPortSpec(l)
	if err != nil {
		return err
	}
	if err := applyPort(l, s, prevNets...); err != nil {
		// The failed attempt may have joined s.Network's aggregate already.
		var undo error
		if hadPrev {
			undo = applyPort(l, prev, append(prevNets, s.Network)...)
		} else {
			undo = removePort(s.Port, false, s.Network)
		}
		if undo != nil {
			return fmt.Errorf("%w (restoring the previous shaping failed too: %v)", err, undo)
		}
		return err
	}
	return nil
}

// applyPort brings the port to s. leave names the networks whose aggregates
// the port may be a member of (those its previous spec named, read back from
// its filters): it leaves them, except s.Network's when it joins that. Only
// these networks' ifbs are looked at, by name: the cost does not depend on
// how many ports or networks the host has.
func applyPort(l netlink.Link, s PortSpec, leave ...string) error {
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
		if err := ensureClsact(l); err != nil {
			return err
		}
		hf, err := listHook(l, hook)
		if err != nil {
			return err
		}
		if err := ensureClassify(l, hook, hf.classify, netlink.MakeHandle(1, uint16(minor)), name); err != nil {
			return err
		}
		if err := ensureRedirect(l, hook, hf.redirect, netIfb); err != nil {
			return err
		}
		return delPortShaper(l, d)

	case lim.Rate > 0:
		dev := l
		if d == fromGuest {
			ifb, _, err := ensureIfb(PortIfb(port), fmt.Sprintf("%s port=%s dir=%s", specMark, port, d))
			if err != nil {
				return err
			}
			dev = ifb
		}
		if err := ensurePortShaper(dev, lim); err != nil {
			return err
		}
		if err := ensureClsact(l); err != nil {
			return err
		}
		hf, err := listHook(l, hook)
		if err != nil {
			return err
		}
		if err := ensureClassify(l, hook, hf.classify, aggClass, name); err != nil {
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
	ifb, err := linkByName(name)
	if err != nil || ifb == nil || ifb.Type() != "ifb" {
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

// removePort removes the port's shaping and its membership in the
// aggregates of networks, and of the networks its filters name; with
// scanAll, in the aggregates of every network on the host.
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

func removePort(port string, scanAll bool, networks ...string) error {
	var errs []error
	l, err := linkByName(port)
	if err != nil {
		return err
	}
	if l != nil {
		_, named, _, err := readPortSpec(l)
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

// aggregateIfb returns the ifb of network's aggregate in direction d, looked
// up by its name; nil if there is none (or the name belongs to a link that is
// not an ifb, which is not brouter's).
func aggregateIfb(network string, d direction) (netlink.Link, error) {
	l, err := linkByName(netIfbName(network, d))
	if err != nil || l == nil || l.Type() != "ifb" {
		return nil, err
	}
	return l, nil
}

// leaveAggregate removes the port from network's aggregate in direction d, if
// there is one and the port is in it.
func leaveAggregate(network string, d direction, port string) error {
	ifb, err := aggregateIfb(network, d)
	if err != nil || ifb == nil {
		return err
	}
	return leaveNetwork(ifb, port)
}

// allAggregateIfbs lists the aggregate ifbs of all networks. It dumps every
// link of the host: only for RemovePort of a port whose network is unknown.
func allAggregateIfbs() ([]netlink.Link, error) {
	countHostDump()
	links, err := link.List()
	if err != nil {
		return nil, fmt.Errorf("shape: list links: %w", err)
	}
	var out []netlink.Link
	for _, l := range links {
		a := l.Attrs()
		if l.Type() == "ifb" && len(a.Name) == 15 && (strings.HasPrefix(a.Name, netToIfbPre) || strings.HasPrefix(a.Name, netFromIfbPr)) {
			out = append(out, l)
		}
	}
	return out, nil
}

// joinNetwork gives the port a class in the network ifb (or updates it) and
// returns the class minor.
func joinNetwork(ifb netlink.Link, port string, lim Limit, prio Priority) (uint32, error) {
	tags, err := listTags(ifb)
	if err != nil {
		return 0, err
	}
	classes, err := htbClasses(ifb)
	if err != nil {
		return 0, err
	}
	want := tagName(port, lim, prio)
	minor := uint32(0)
	used := map[uint32]bool{}
	for _, t := range tags {
		used[t.Handle] = true
		if p, ok := parseName(t.Name); ok && p.port == port {
			minor = t.Handle
			if t.Name == want {
				// Unchanged: still make sure its class is there.
				return minor, rebalance(ifb)
			}
		}
	}
	if minor == 0 {
		for h := range classes {
			if h>>16 == 1 {
				used[h&0xffff] = true
			}
		}
		for m := uint32(minMember); m <= maxMember; m++ {
			if !used[m] {
				minor = m
				break
			}
		}
		if minor == 0 {
			return 0, fmt.Errorf("shape: network ifb %s has no free class for port %s", ifb.Attrs().Name, port)
		}
	}
	if err := writeTag(ifb, minor, want); err != nil {
		return 0, err
	}
	return minor, rebalance(ifb)
}

// leaveNetwork removes the port's tag and class from a network ifb, if it has one there.
func leaveNetwork(ifb netlink.Link, port string) error {
	tags, err := listTags(ifb)
	if err != nil {
		return err
	}
	found := false
	for _, t := range tags {
		if p, ok := parseName(t.Name); ok && p.port == port {
			if err := delTag(ifb, t.Handle); err != nil {
				return err
			}
			found = true
		}
	}
	if !found {
		return nil
	}
	return rebalance(ifb)
}

// member of a network aggregate, as recorded by its tag.
type tagMember struct {
	minor uint32
	parsedName
}

func members(ifb netlink.Link) ([]tagMember, error) {
	tags, err := listTags(ifb)
	if err != nil {
		return nil, err
	}
	var out []tagMember
	for _, t := range tags {
		if p, ok := parseName(t.Name); ok && p.port != "" {
			out = append(out, tagMember{minor: t.Handle, parsedName: p})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].minor < out[j].minor })
	return out, nil
}

// rebalance recomputes the guaranteed rates of all members of a network ifb
// from its aggregate class and the members' tags, brings their classes and
// leaves to that, and removes classes no tag owns.
func rebalance(ifb netlink.Link) error {
	classes, err := htbClasses(ifb)
	if err != nil {
		return err
	}
	root := classes[aggClass]
	if root == nil {
		return fmt.Errorf("shape: network ifb %s has no aggregate class 1:1", ifb.Attrs().Name)
	}
	total := root.Ceil * 8
	ms, err := members(ifb)
	if err != nil {
		return err
	}
	in := make([]member, len(ms))
	ceils := make([]uint64, len(ms))
	for i, m := range ms {
		c := m.limit.Rate
		if c == 0 || c > total {
			c = total
		}
		ceils[i] = c
		in[i] = member{ceil: c, weight: m.prio.weight()}
	}
	rates := shares(total, in)
	owned := map[uint32]bool{}
	for i, m := range ms {
		h := netlink.MakeHandle(1, uint16(m.minor))
		owned[h] = true
		c := classSpec{
			handle: h, parent: aggClass,
			rate: rates[i], ceil: ceils[i],
			burst: AutoBurst(rates[i]), cburst: m.limit.burstOr(ceils[i]),
			prio: m.prio.htbPrio(), quantum: quantum(m.prio),
		}
		if err := ensureClass(ifb, classes, c); err != nil {
			return err
		}
		if err := ensureLeaf(ifb, h, m.minor<<16, ceils[i]); err != nil {
			return err
		}
	}
	for h, c := range classes {
		if c.Parent == aggClass && !owned[h] {
			if err := delClass(ifb, h); err != nil {
				return err
			}
		}
	}
	return nil
}

// ApplyNetwork sets the aggregate limits of a network: for each direction
// with a rate, an ifb with an HTB tree that member ports join when they are
// applied; a direction without a rate has no aggregate (its members go back
// to their own limits). Idempotent; validated before anything is touched; on
// a kernel error the network's previous aggregates are restored.
func ApplyNetwork(n NetworkSpec) error {
	if err := n.validate(); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	prev, err := readNetwork(n.Network)
	if err != nil {
		return err
	}
	if err := applyNetwork(n); err != nil {
		if undo := applyNetwork(prev); undo != nil {
			return fmt.Errorf("%w (restoring the previous aggregate failed too: %v)", err, undo)
		}
		return err
	}
	return nil
}

// RemoveNetwork removes a network's aggregates; its members keep their own
// per-port limits. A network without aggregates is not an error.
func RemoveNetwork(network string) error {
	if err := validNetwork(network); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	return applyNetwork(NetworkSpec{Network: network})
}

func applyNetwork(n NetworkSpec) error {
	for _, d := range directions {
		lim := n.limit(d)
		name := netIfbName(n.Network, d)
		if lim.Rate == 0 {
			if err := dissolve(n.Network, d); err != nil {
				return err
			}
			continue
		}
		ifb, created, err := ensureIfb(name, netAlias(n.Network, d, lim))
		if err == nil {
			err = ensureAggregate(ifb, lim)
		}
		if err != nil {
			if created && ifb != nil {
				_ = delLink(ifb)
			}
			return err
		}
	}
	return nil
}

func ensureAggregate(ifb netlink.Link, lim Limit) error {
	if err := ensureRootHTB(ifb, 0); err != nil {
		return err
	}
	classes, err := htbClasses(ifb)
	if err != nil {
		return err
	}
	b := lim.burstOr(lim.Rate)
	c := classSpec{handle: aggClass, parent: htbHandle, rate: lim.Rate, ceil: lim.Rate, burst: b, cburst: b, quantum: quantum(Medium)}
	if err := ensureClass(ifb, classes, c); err != nil {
		return err
	}
	return rebalance(ifb)
}

// dissolve removes a network's aggregate in one direction: its members that
// still exist get their own limits back, then the ifb goes.
func dissolve(network string, d direction) error {
	ifb, err := linkByName(netIfbName(network, d))
	if err != nil || ifb == nil || ifb.Type() != "ifb" {
		return err
	}
	ms, err := members(ifb)
	if err != nil {
		return err
	}
	for _, m := range ms {
		l, err := linkByName(m.port)
		if err != nil {
			return err
		}
		if l == nil {
			continue
		}
		if err := applyDir(l, d, m.limit, m.prio, network, nil); err != nil {
			return err
		}
		if err := delClsactIfEmpty(l); err != nil {
			return err
		}
	}
	return delLink(ifb)
}

// readPortSpec reads back the spec a port was applied with, from the names
// of its classifier filters; ok is false if the port is not shaped. nets are
// the networks those names give (normally one, or none), whose aggregates the
// port may have joined.
func readPortSpec(l netlink.Link) (s PortSpec, nets []string, ok bool, err error) {
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

// readNetwork reads back a network's aggregates from the aliases of its ifbs.
func readNetwork(network string) (NetworkSpec, error) {
	n := NetworkSpec{Network: network}
	for _, d := range directions {
		ifb, err := linkByName(netIfbName(network, d))
		if err != nil {
			return n, err
		}
		if ifb == nil || ifb.Type() != "ifb" {
			continue
		}
		p, ok := parseName(ifb.Attrs().Alias)
		if !ok || p.limit.Rate == 0 {
			continue
		}
		if d == toGuest {
			n.ToGuest = p.limit
		} else {
			n.FromGuest = p.limit
		}
	}
	return n, nil
}
