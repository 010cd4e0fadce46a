// Package proc finds and stops the long-running helper processes brouter
// starts (a network's dnsmasq, a userspace WireGuard device), identified by
// their command line, never by a PID alone: a recorded PID may have been
// recycled by another process since.
package proc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Alive reports whether pid is a living (not zombie) process whose command
// line (its arguments, argv[0] first) matches.
func Alive(pid int, match func(args []string) bool) bool {
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil || len(cmdline) == 0 || !match(strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")) {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) STATE ...; comm may contain spaces and parentheses.
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] != 'Z' && stat[i+2] != 'X'
}

// Terminate stops pid (SIGTERM, then SIGKILL) and waits until it has exited,
// if it is the process match describes. The process is pinned with a pidfd
// and checked again before any signal, so a recycled PID is never signalled.
// A process that is gone already is not an error. what names it in errors.
func Terminate(pid int, what string, match func(args []string) bool) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	defer unix.Close(fd)
	if !Alive(pid, match) {
		return nil // exited (and maybe recycled) meanwhile
	}
	for _, step := range []struct {
		sig  unix.Signal
		wait time.Duration
	}{{unix.SIGTERM, 3 * time.Second}, {unix.SIGKILL, 2 * time.Second}} {
		if err := unix.PidfdSendSignal(fd, step.sig, nil, 0); err != nil {
			if errors.Is(err, unix.ESRCH) {
				return nil
			}
			return fmt.Errorf("signal %s %d: %w", what, pid, err)
		}
		if exited(fd, step.wait) {
			return nil
		}
	}
	return fmt.Errorf("%s %d did not exit after SIGKILL", what, pid)
}

// exited waits up to d for the pidfd to report the process's exit.
func exited(fd int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline)
		if left < 0 {
			left = 0
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(left/time.Millisecond))
		if err == nil && n > 0 {
			return true
		}
		if (err != nil && !errors.Is(err, unix.EINTR)) || time.Now().After(deadline) {
			return false
		}
	}
}
