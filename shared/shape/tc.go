package shape

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/brouter/brouter/shared/link"
)

// Handles and filter preferences. Everything this package creates on a
// device is found again by these numbers (and the names written into the
// classifier filters), so no state is kept outside the kernel.
const (
	htbHandle  = 0x0001_0000 // 1:  the HTB root qdisc (on a port or an ifb)
	aggClass   = 0x0001_0001 // 1:1 the only class (per-port shaper) or the aggregate class (network ifb)
	portLeaf   = 0x0002_0000 // 2:  the leaf queue under 1:1 of a per-port shaper
	minMember  = 2           // network ifb: classes 1:2 ... 1:fffe, leaf m: under 1:m
	maxMember  = 0xfffe
	prefFilter = 0xb500 // classifier (bpf) on a port hook; tag filters on a network ifb
	// The mirred redirect (u32) has a different preference on each hook: u32
	// keeps its hash tables per qdisc, and clsact's ingress and egress share
	// one qdisc, so filters of equal preference on the two hooks would show
	// (and could be changed) through each other.
	prefRedirIn  = 0xb501
	prefRedirOut = 0xb502

	hookIngress = netlink.HANDLE_MIN_INGRESS // clsact ingress: what the guest sends
	hookEgress  = netlink.HANDLE_MIN_EGRESS  // clsact egress: what goes to the guest
)

func isNotExist(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV)
}

// linkByName returns the link, or (nil, nil) when there is none.
func linkByName(name string) (netlink.Link, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil, nil
		}
		return nil, fmt.Errorf("shape: look up %s: %w", name, err)
	}
	return l, nil
}

// hostDumps counts the requests whose answer grows with the number of
// devices on the host: link dumps, and qdisc dumps (the kernel ignores the
// device of an RTM_GETQDISC dump and sends every qdisc of every device).
// Every helper that makes one adds to it; ApplyPort and RemovePortIn with a
// network make none, which TestNoHostWideDumps holds them to (and
// TestDumpsAreCounted keeps new dumps from going uncounted).
var hostDumps atomic.Int64

// countHostDump is called by every helper that dumps links or qdiscs.
func countHostDump() { hostDumps.Add(1) }

// qdisc is what this package reads back of one qdisc.
type qdisc struct {
	kind           string
	ifindex        int32
	handle, parent uint32
	defcls         uint32 // htb: the default class
	target         uint32 // fq_codel, µs
	interval       uint32 // fq_codel, µs
	ecn            uint32 // fq_codel
	limit          uint32 // bfifo (bytes), pfifo (packets)
}

// qdiscGet asks the kernel for the qdisc attached to the device at parent:
// netlink.HANDLE_ROOT, the clsact/ingress parent netlink.HANDLE_CLSACT, or an
// HTB class for its leaf queue. It is a single RTM_GETQDISC for that device
// and parent (the kernel's tc_get_qdisc), not a dump: its cost does not grow
// with the number of devices on the host. It returns nil when there is none:
// no such parent or device (ENOENT, ENODEV, EINVAL), or a qdisc the kernel
// does not show (a builtin or an HTB class's default queue). A device without
// a root qdisc of its own shows its default one (noqueue, pfifo_fast, mq),
// with handle 0.
//
// The kernel answers an RTM_GETQDISC only when asked to echo, and then also
// multicasts the answer to RTNLGRP_TC listeners (tc monitor sees a "qdisc"
// line per call); the ack tells when no qdisc was shown at all.
func qdiscGet(l netlink.Link, parent uint32) (*qdisc, error) {
	index := int32(l.Attrs().Index)
	req := nl.NewNetlinkRequest(unix.RTM_GETQDISC, unix.NLM_F_ECHO|unix.NLM_F_ACK)
	req.AddData(&nl.TcMsg{Family: nl.FAMILY_ALL, Ifindex: index, Parent: parent})
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWQDISC)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENODEV) {
			return nil, nil
		}
		return nil, fmt.Errorf("shape: get qdisc %s of %s: %w", netlink.HandleStr(parent), l.Attrs().Name, err)
	}
	for _, m := range msgs {
		q, err := parseQdisc(m)
		if err != nil {
			return nil, fmt.Errorf("shape: qdisc %s of %s: %w", netlink.HandleStr(parent), l.Attrs().Name, err)
		}
		if q.ifindex == index && q.parent == parent {
			return q, nil
		}
	}
	return nil, nil
}

// parseQdisc reads an RTM_NEWQDISC message: struct tcmsg, then attributes.
func parseQdisc(m []byte) (*qdisc, error) {
	if len(m) < nl.SizeofTcMsg {
		return nil, fmt.Errorf("short RTM_NEWQDISC message (%d bytes)", len(m))
	}
	msg := nl.DeserializeTcMsg(m)
	q := &qdisc{ifindex: msg.Ifindex, handle: msg.Handle, parent: msg.Parent}
	attrs, err := nl.ParseRouteAttr(m[msg.Len():])
	if err != nil {
		return nil, err
	}
	var opts []byte
	for _, a := range attrs {
		switch a.Attr.Type {
		case nl.TCA_KIND:
			q.kind = strings.TrimRight(string(a.Value), "\x00")
		case nl.TCA_OPTIONS:
			opts = a.Value
		}
	}
	u32 := func(b []byte) uint32 {
		if len(b) < 4 {
			return 0
		}
		return binary.NativeEndian.Uint32(b)
	}
	switch q.kind {
	case "htb":
		nested, err := nl.ParseRouteAttr(opts)
		if err != nil {
			return nil, fmt.Errorf("htb options: %w", err)
		}
		for _, a := range nested {
			if a.Attr.Type == nl.TCA_HTB_INIT && len(a.Value) >= nl.SizeofTcHtbGlob {
				q.defcls = nl.DeserializeTcHtbGlob(a.Value).Defcls // struct tc_htb_glob
			}
		}
	case "fq_codel":
		nested, err := nl.ParseRouteAttr(opts)
		if err != nil {
			return nil, fmt.Errorf("fq_codel options: %w", err)
		}
		for _, a := range nested {
			switch a.Attr.Type {
			case nl.TCA_FQ_CODEL_TARGET:
				q.target = u32(a.Value)
			case nl.TCA_FQ_CODEL_INTERVAL:
				q.interval = u32(a.Value)
			case nl.TCA_FQ_CODEL_ECN:
				q.ecn = u32(a.Value)
			}
		}
	case "bfifo", "pfifo":
		q.limit = u32(opts) // struct tc_fifo_qopt { __u32 limit; }
	}
	return q, nil
}

// ensureRootHTB makes the device's root qdisc HTB 1: with default class defcls.
func ensureRootHTB(l netlink.Link, defcls uint32) error {
	root, err := qdiscGet(l, netlink.HANDLE_ROOT)
	if err != nil {
		return err
	}
	name := l.Attrs().Name
	want := netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_ROOT, Handle: htbHandle})
	want.Defcls = defcls
	if root != nil && root.kind == "htb" && root.handle == htbHandle {
		if root.defcls == defcls {
			return nil
		}
		// HTB cannot change its default class in place.
		if err := netlink.QdiscDel(want); err != nil && !isNotExist(err) {
			return fmt.Errorf("shape: replace root qdisc of %s: %w", name, err)
		}
	}
	if err := netlink.QdiscReplace(want); err != nil {
		return fmt.Errorf("shape: add htb root qdisc to %s: %w", name, err)
	}
	return nil
}

// delRootHTB removes the device's root qdisc if it is this package's HTB 1:;
// the kernel then puts the device's default qdisc back.
func delRootHTB(l netlink.Link) error {
	root, err := qdiscGet(l, netlink.HANDLE_ROOT)
	if err != nil {
		return err
	}
	if root == nil || root.kind != "htb" || root.handle != htbHandle {
		return nil
	}
	// With the handle given, the kernel deletes the root only if it is still 1:.
	q := netlink.NewHtb(netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_ROOT, Handle: htbHandle})
	if err := netlink.QdiscDel(q); err != nil && !isNotExist(err) {
		return fmt.Errorf("shape: remove htb root qdisc of %s: %w", l.Attrs().Name, err)
	}
	return nil
}

// classSpec is one HTB class as this package sets it.
type classSpec struct {
	handle, parent uint32
	rate, ceil     uint64 // bits/s
	burst, cburst  uint64 // bytes
	prio           uint32
	quantum        uint32
}

func (c classSpec) htb(index int) *netlink.HtbClass {
	return &netlink.HtbClass{
		ClassAttrs: netlink.ClassAttrs{LinkIndex: index, Handle: c.handle, Parent: c.parent},
		Rate:       c.rate / 8,
		Ceil:       c.ceil / 8,
		Buffer:     burstTicks(c.burst, c.rate),
		Cbuffer:    burstTicks(c.cburst, c.ceil),
		Quantum:    c.quantum,
		Prio:       c.prio,
	}
}

func htbClasses(l netlink.Link) (map[uint32]*netlink.HtbClass, error) {
	cs, err := netlink.ClassList(l, 0)
	if err != nil {
		return nil, fmt.Errorf("shape: list classes of %s: %w", l.Attrs().Name, err)
	}
	out := map[uint32]*netlink.HtbClass{}
	for _, c := range cs {
		if h, ok := c.(*netlink.HtbClass); ok {
			out[h.Handle] = h
		}
	}
	return out, nil
}

// ensureClass creates the class or changes it in place; an identical class is left alone.
func ensureClass(l netlink.Link, have map[uint32]*netlink.HtbClass, c classSpec) error {
	want := c.htb(l.Attrs().Index)
	if h := have[c.handle]; h != nil {
		parent := h.Parent
		if parent == netlink.HANDLE_ROOT { // a top-level class is listed with parent "root"
			parent = c.parent & 0xffff0000
		}
		if parent == c.parent && h.Rate == want.Rate && h.Ceil == want.Ceil && h.Buffer == want.Buffer &&
			h.Cbuffer == want.Cbuffer && h.Prio == want.Prio && h.Quantum == want.Quantum {
			return nil
		}
		if parent == c.parent {
			if err := netlink.ClassChange(want); err != nil {
				return fmt.Errorf("shape: change class %s of %s: %w", netlink.HandleStr(c.handle), l.Attrs().Name, err)
			}
			return nil
		}
		if err := netlink.ClassDel(h); err != nil && !isNotExist(err) {
			return fmt.Errorf("shape: remove class %s of %s: %w", netlink.HandleStr(c.handle), l.Attrs().Name, err)
		}
	}
	if err := netlink.ClassAdd(want); err != nil {
		return fmt.Errorf("shape: add class %s (%s) to %s: %w", netlink.HandleStr(c.handle), FormatRate(c.ceil), l.Attrs().Name, err)
	}
	return nil
}

func delClass(l netlink.Link, handle uint32) error {
	err := netlink.ClassDel(&netlink.HtbClass{ClassAttrs: netlink.ClassAttrs{LinkIndex: l.Attrs().Index, Handle: handle, Parent: aggClass}})
	if err != nil && !isNotExist(err) {
		return fmt.Errorf("shape: remove class %s of %s: %w", netlink.HandleStr(handle), l.Attrs().Name, err)
	}
	return nil
}

// Leaf queues: fq_codel when the kernel has it, else a byte-limited fifo.
var (
	leafMu    sync.Mutex
	noFqCodel bool // set once the kernel refused fq_codel as an unknown kind
)

func fqCodelKnownMissing() bool {
	leafMu.Lock()
	defer leafMu.Unlock()
	return noFqCodel
}

// ensureLeaf puts the leaf queue sized for rate under class parent.
func ensureLeaf(l netlink.Link, parent, handle uint32, rate uint64) error {
	cur, err := qdiscGet(l, parent)
	if err != nil {
		return err
	}
	name := l.Attrs().Name
	if !fqCodelKnownMissing() {
		want := netlink.NewFqCodel(netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Parent: parent, Handle: handle})
		want.Target = codelTarget(rate)
		want.Interval = want.Target * codelIntervals
		if cur != nil && cur.kind == "fq_codel" && cur.handle == handle && cur.target == want.Target && cur.interval == want.Interval && cur.ecn == want.ECN {
			return nil
		}
		err := netlink.QdiscReplace(want)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("shape: add fq_codel queue %s to %s: %w", netlink.HandleStr(handle), name, err)
		}
		leafMu.Lock()
		noFqCodel = true // kernel without sch_fq_codel: use bfifo from now on
		leafMu.Unlock()
	}
	limit := uint32(QueueLimit(rate))
	if cur != nil && cur.kind == "bfifo" && cur.handle == handle && cur.limit == limit {
		return nil
	}
	if err := bfifoReplace(l.Attrs().Index, parent, handle, limit); err != nil {
		return fmt.Errorf("shape: add bfifo queue %s (limit %s) to %s: %w", netlink.HandleStr(handle), FormatSize(uint64(limit)), name, err)
	}
	return nil
}

// bfifoReplace creates or changes a bfifo (the library has no options for it).
func bfifoReplace(index int, parent, handle, limit uint32) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWQDISC, unix.NLM_F_CREATE|unix.NLM_F_REPLACE|unix.NLM_F_ACK)
	req.AddData(&nl.TcMsg{Family: nl.FAMILY_ALL, Ifindex: int32(index), Handle: handle, Parent: parent})
	req.AddData(nl.NewRtAttr(nl.TCA_KIND, nl.ZeroTerminated("bfifo")))
	opt := make([]byte, 4)
	binary.NativeEndian.PutUint32(opt, limit) // struct tc_fifo_qopt { __u32 limit; }
	req.AddData(nl.NewRtAttr(nl.TCA_OPTIONS, opt))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// ensureClsact adds the clsact qdisc (ingress and egress hooks) to a port.
func ensureClsact(l netlink.Link) error {
	q, err := qdiscGet(l, netlink.HANDLE_CLSACT)
	if err != nil {
		return err
	}
	if q != nil {
		if q.kind == "clsact" {
			return nil
		}
		return fmt.Errorf("shape: %s has an %s qdisc that brouter did not create; remove it (tc qdisc del dev %s %s) to shape this port",
			l.Attrs().Name, q.kind, l.Attrs().Name, q.kind)
	}
	if err := netlink.QdiscAdd(clsactOf(l)); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("shape: add clsact qdisc to %s: %w", l.Attrs().Name, err)
	}
	return nil
}

func clsactOf(l netlink.Link) *netlink.Clsact {
	return &netlink.Clsact{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_CLSACT, Handle: netlink.MakeHandle(0xffff, 0)}}
}

// delClsactIfEmpty removes the clsact qdisc when no filter is left on either hook.
func delClsactIfEmpty(l netlink.Link) error {
	q, err := qdiscGet(l, netlink.HANDLE_CLSACT)
	if err != nil {
		return err
	}
	if q == nil || q.kind != "clsact" {
		return nil
	}
	for _, hook := range []uint32{hookIngress, hookEgress} {
		fs, err := netlink.FilterList(l, hook)
		if err != nil {
			return fmt.Errorf("shape: list filters of %s: %w", l.Attrs().Name, err)
		}
		if len(fs) > 0 {
			return nil
		}
	}
	if err := netlink.QdiscDel(clsactOf(l)); err != nil && !isNotExist(err) {
		return fmt.Errorf("shape: remove clsact qdisc of %s: %w", l.Attrs().Name, err)
	}
	return nil
}

// hookFilters are this package's filters on one clsact hook of a port.
type hookFilters struct {
	classify *netlink.BpfFilter // pref prefFilter
	redirect *netlink.U32       // pref prefRedir
}

func listHook(l netlink.Link, hook uint32) (hookFilters, error) {
	var out hookFilters
	fs, err := netlink.FilterList(l, hook)
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) { // no clsact
			return out, nil
		}
		return out, fmt.Errorf("shape: list filters of %s: %w", l.Attrs().Name, err)
	}
	for _, f := range fs {
		switch f := f.(type) {
		case *netlink.BpfFilter:
			if f.Priority == prefFilter {
				out.classify = f
			}
		case *netlink.U32:
			if f.Priority == prefRedir(hook) && f.Sel != nil {
				out.redirect = f
			}
		}
	}
	return out, nil
}

func prefRedir(hook uint32) uint16 {
	if hook == hookEgress {
		return prefRedirOut
	}
	return prefRedirIn
}

// ensureClassify puts the filter that pins skb->priority to classid on a
// port hook; name records the port's spec for that direction.
func ensureClassify(l netlink.Link, hook uint32, have *netlink.BpfFilter, classid uint32, name string) error {
	if have != nil && have.Name == name && have.ClassId == classid && have.DirectAction {
		return nil
	}
	return replaceBpf(l, hook, 1, classid, name, "brouter_prio", setPriorityProg(classid))
}

func replaceBpf(l netlink.Link, parent, handle, classid uint32, name, progName string, code []byte) error {
	fd, err := loadProg(progName, code)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: l.Attrs().Index, Parent: parent, Handle: handle,
			Priority: prefFilter, Protocol: unix.ETH_P_ALL,
		},
		ClassId: classid, Fd: fd, Name: name, DirectAction: true,
	}
	if err := netlink.FilterReplace(f); err != nil {
		return fmt.Errorf("shape: add bpf filter to %s: %w", l.Attrs().Name, err)
	}
	return nil
}

// ensureRedirect puts the filter that redirects everything to ifb on a port hook.
func ensureRedirect(l netlink.Link, hook uint32, have *netlink.U32, ifb netlink.Link) error {
	idx := ifb.Attrs().Index
	if have != nil && len(have.Actions) == 1 {
		if m, ok := have.Actions[0].(*netlink.MirredAction); ok && m.Ifindex == idx && m.MirredAction == netlink.TCA_EGRESS_REDIR && m.Attrs().Action == netlink.TC_ACT_STOLEN {
			return nil
		}
	}
	// The kernel numbers u32 hash tables itself: add without a handle, and
	// change an existing filter through the handle it was given.
	handle, replace := uint32(0), netlink.FilterAdd
	if have != nil {
		handle, replace = have.Handle, netlink.FilterReplace
	}
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: l.Attrs().Index, Parent: hook, Handle: handle,
			Priority: prefRedir(hook), Protocol: unix.ETH_P_ALL,
		},
		Sel:     &netlink.TcU32Sel{Flags: nl.TC_U32_TERMINAL, Nkeys: 1, Keys: []netlink.TcU32Key{{Mask: 0, Val: 0, Off: 0}}},
		Actions: []netlink.Action{netlink.NewMirredAction(idx)},
	}
	if err := replace(f); err != nil {
		return fmt.Errorf("shape: redirect %s to %s: %w", l.Attrs().Name, ifb.Attrs().Name, err)
	}
	return nil
}

// delFilter deletes filter handle (0: all of them) at pref on parent.
func delFilter(l netlink.Link, parent uint32, pref uint16, handle uint32, kind string) error {
	req := nl.NewNetlinkRequest(unix.RTM_DELTFILTER, unix.NLM_F_ACK)
	req.AddData(&nl.TcMsg{
		Family: nl.FAMILY_ALL, Ifindex: int32(l.Attrs().Index), Parent: parent, Handle: handle,
		Info: netlink.MakeHandle(pref, nl.Swap16(unix.ETH_P_ALL)),
	})
	req.AddData(nl.NewRtAttr(nl.TCA_KIND, nl.ZeroTerminated(kind)))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	if err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("shape: remove %s filter of %s: %w", kind, l.Attrs().Name, err)
	}
	return nil
}

// Tag filters: on a network ifb, one bpf filter per member port at the HTB
// root (parent 1:, pref prefFilter, handle = the port's class minor) whose
// name records the port and its spec. The program never matches (HTB finds
// the class from skb->priority before it consults filters); the filter is how
// RemovePort finds the class of a port that no longer exists.
func listTags(ifb netlink.Link) ([]*netlink.BpfFilter, error) {
	fs, err := netlink.FilterList(ifb, htbHandle)
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("shape: list filters of %s: %w", ifb.Attrs().Name, err)
	}
	var out []*netlink.BpfFilter
	for _, f := range fs {
		if b, ok := f.(*netlink.BpfFilter); ok && b.Priority == prefFilter && b.Handle >= minMember && b.Handle <= maxMember {
			out = append(out, b)
		}
	}
	return out, nil
}

func writeTag(ifb netlink.Link, minor uint32, name string) error {
	return replaceBpf(ifb, htbHandle, minor, 0, name, "brouter_tag", noopProg())
}

func delTag(ifb netlink.Link, minor uint32) error {
	return delFilter(ifb, htbHandle, prefFilter, minor, "bpf")
}

// ensureIfb creates the ifb (or checks the existing one), labels it and sets it up.
func ensureIfb(name, alias string) (l netlink.Link, created bool, err error) {
	l, err = linkByName(name)
	if err != nil {
		return nil, false, err
	}
	if l == nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = name
		if err := netlink.LinkAdd(&netlink.Ifb{LinkAttrs: attrs}); err != nil {
			return nil, false, fmt.Errorf("shape: create ifb %s (the kernel needs CONFIG_IFB): %w", name, err)
		}
		created = true
		if l, err = linkByName(name); err != nil || l == nil {
			return nil, true, fmt.Errorf("shape: ifb %s vanished after creation: %v", name, err)
		}
		// No IPv6 of its own (see link.SetIPv6): no link-local address, DAD,
		// router solicitations or MLD, and no multicast route, which every
		// later link change on the host would walk past: nothing but
		// redirected traffic through its qdisc.
		if err := netlink.LinkSetIP6AddrGenMode(l, nl.IN6_ADDR_GEN_MODE_NONE); err != nil && !errors.Is(err, unix.EAFNOSUPPORT) {
			return l, true, fmt.Errorf("shape: set addrgenmode none on ifb %s: %w", name, err)
		}
		if _, err := link.SetIPv6(name, false); err != nil {
			return l, true, fmt.Errorf("shape: ifb %s: %w", name, err)
		}
	} else if l.Type() != "ifb" {
		return nil, false, fmt.Errorf("shape: a %s link named %s exists; brouter needs that name for an ifb", l.Type(), name)
	}
	if l.Attrs().Alias != alias {
		if err := netlink.LinkSetAlias(l, alias); err != nil {
			return l, created, fmt.Errorf("shape: label ifb %s: %w", name, err)
		}
	}
	if l.Attrs().RawFlags&unix.IFF_UP == 0 {
		if err := netlink.LinkSetUp(l); err != nil {
			return l, created, fmt.Errorf("shape: set ifb %s up: %w", name, err)
		}
	}
	return l, created, nil
}

// ifbByName looks up the ifb called name; nil if there is none, or if the
// name belongs to a link that is not an ifb (which is not brouter's).
func ifbByName(name string) (netlink.Link, error) {
	l, err := linkByName(name)
	if err != nil || l == nil || l.Type() != "ifb" {
		return nil, err
	}
	return l, nil
}

func delLink(l netlink.Link) error {
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("shape: delete %s: %w", l.Attrs().Name, err)
	}
	return nil
}
