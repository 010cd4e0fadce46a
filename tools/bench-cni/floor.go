package main

import (
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The kernel's own cost of what every ADD and DEL does, the floor under
// the plugins' growth with the number of attachments: a veth made with its
// peer directly in a container's namespace, enslaved to the chain's bridge
// and set up (ADD); the veth deleted (DEL). Done over netlink from this
// process (no exec), in dom0, next to each measured ADD and DEL so that
// both see the same load.
type floor struct {
	bridge string
	peerNS *os.File // the namespace the peers go to
	seq    int
}

// newFloor prepares the floor's measurements; the bridge is the chain's
// (it exists once the chain's first ADD ran).
func (c *chain) newFloor(bridge string) (*floor, error) {
	ns, err := c.newNS()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(ns)
	if err != nil {
		return nil, err
	}
	return &floor{bridge: bridge, peerNS: f}, nil
}

// threadCPU is the CPU time (user+sys) of the calling thread: the kernel
// work of its syscalls, not what they wait for.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_THREAD, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// once creates and enslaves one veth, then deletes it, and returns how long
// each took, and the CPU time of the creation.
func (f *floor) once() (add, del, addCPU time.Duration, err error) {
	runtime.LockOSThread() // for threadCPU
	defer runtime.UnlockOSThread()
	br, err := netlink.LinkByName(f.bridge)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("floor: bridge %s: %w", f.bridge, err)
	}
	f.seq++
	la := netlink.NewLinkAttrs()
	la.Name = fmt.Sprintf("bkf%d", f.seq)
	v := &netlink.Veth{LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(f.peerNS.Fd()))}
	c0, t0 := threadCPU(), time.Now()
	if err := netlink.LinkAdd(v); err != nil {
		return 0, 0, 0, fmt.Errorf("floor: create veth %s: %w", la.Name, err)
	}
	l, err := netlink.LinkByName(la.Name)
	if err == nil {
		err = netlink.LinkSetMasterByIndex(l, br.Attrs().Index)
	}
	if err == nil {
		err = netlink.LinkSetUp(l)
	}
	add, addCPU = time.Since(t0), threadCPU()-c0
	t1 := time.Now()
	if derr := netlink.LinkDel(v); err == nil && derr != nil {
		err = fmt.Errorf("floor: delete veth %s: %w", la.Name, derr)
	}
	return add, time.Since(t1), addCPU, err
}
