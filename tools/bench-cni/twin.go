package main

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// A second dom0 for the same chain, kept at 10 attachments while the first
// grows: the measurements at 10 and at -big are taken alternately, one
// container in each in turn, so that a machine whose load changes over the
// minutes of a run (other jobs, the kernel destroying namespaces) weighs on
// both alike. It is a namespace bound on a file in the work directory, in
// this process's private mount namespace (like the containers'), and its
// plugins run from a thread that entered it; its state (brouter's run and
// state directories, host-local's, libcni's cache) has names of its own.

// newTwin makes the second dom0 and the chain in it.
func newTwin(o opts) (*chain, error) {
	path := filepath.Join(o.work, "dom0-twin")
	if err := newNetNS(path); err != nil {
		return nil, err
	}
	var env []string
	if len(o.inner) >= 7 && o.inner[:7] == "brouter" {
		env = []string{"BROUTER_RUN_DIR=" + filepath.Join(o.work, "run-twin"), "BROUTER_STATE_DIR=" + filepath.Join(o.work, "lib-twin")}
	}
	c, err := newChain(o, "-twin", env)
	if err != nil {
		return nil, err
	}
	c.enter = path
	return c, c.in(func() error {
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		return err
	})
}

// in runs f with the calling goroutine's thread in the chain's dom0 (the
// plugins libcni starts from it run there too).
func (c *chain) in(f func() error) error {
	if c.enter == "" {
		return f()
	}
	runtime.LockOSThread()
	here, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer here.Close()
	there, err := netns.GetFromPath(c.enter)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer there.Close()
	if err := netns.Set(there); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter %s: %w", c.enter, err)
	}
	defer func() {
		if netns.Set(here) == nil {
			runtime.UnlockOSThread() // else the thread stays locked, and Go discards it
		}
	}()
	return f()
}

// alternate measures n rounds (ADD, DEL, the floor's veth) in each of the
// chains, one after the other in turn.
func alternate(ctx context.Context, n int, small, big *chain) (s10, sBig samples, err error) {
	for _, c := range []*chain{small, big} {
		bridge := "brbench"
		if c.name == "reference" || c.name == "reference-twin" {
			bridge = "cni-ref"
		}
		if c.fl, err = c.newFloor(bridge); err != nil {
			return s10, sBig, err
		}
	}
	ns10, err := small.newNS()
	if err != nil {
		return s10, sBig, err
	}
	nsBig, err := big.newNS()
	if err != nil {
		return s10, sBig, err
	}
	for i := 0; i < n; i++ {
		if err := small.round(ctx, small.rt(ns10), &s10); err != nil {
			return s10, sBig, err
		}
		if err := big.round(ctx, big.rt(nsBig), &sBig); err != nil {
			return s10, sBig, err
		}
	}
	return s10, sBig, nil
}
