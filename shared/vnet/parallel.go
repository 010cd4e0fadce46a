package vnet

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// parallel runs the functions at once and returns their errors, joined.
// They run in the caller's network namespace, also when the caller's thread
// was switched to another one than the rest of the process (as tests do):
// a goroutine that finds itself elsewhere moves to it, on a thread it never
// unlocks, which Go then discards rather than reuse.
func parallel(fns ...func() error) error {
	want, err := threadNetns()
	if err != nil {
		return err
	}
	callerTid := unix.Gettid()
	errs := make([]error, len(fns))
	done := make(chan struct{}, len(fns))
	for i, fn := range fns {
		go func() {
			defer func() { done <- struct{}{} }()
			if here, err := threadNetns(); err != nil || here != want {
				runtime.LockOSThread()
				h, err := netns.GetFromThread(os.Getpid(), callerTid)
				if err == nil {
					err = netns.Set(h)
					h.Close()
				}
				if err != nil {
					errs[i] = fmt.Errorf("vnet: enter the caller's network namespace: %w", err)
					return
				}
			}
			errs[i] = fn()
		}()
	}
	for range fns {
		<-done
	}
	return errors.Join(errs...)
}

// threadNetns identifies the calling thread's network namespace.
func threadNetns() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return 0, fmt.Errorf("vnet: network namespace: %w", err)
	}
	return st.Ino, nil
}
