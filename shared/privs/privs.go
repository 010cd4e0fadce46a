// Package privs is what a brouter program that unprivileged users run with
// root's privileges (the setuid-root bridge helper) does before anything
// else: learn who really called it, then keep only the privileges its job
// needs.
//
// After Drop the process keeps the effective uid and gid 0, so that the
// records it writes under run_dir are root's (a user must never be able to
// edit what root later undoes) and it may signal the network's dnsmasq; but
// of root's capabilities it keeps only those asked for, it can never regain
// the others (bounding set, SECBIT_NOROOT locked, no_new_privs), and the
// programs it runs (nft, iptables) get only the inheritable ones, as ambient
// capabilities.
package privs

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Securebits (linux/securebits.h): root is no longer special at execve,
// uid changes leave capabilities alone, and both stay so.
const (
	secbitNoroot              = 1 << 0
	secbitNorootLocked        = 1 << 1
	secbitNoSetuidFixup       = 1 << 2
	secbitNoSetuidFixupLocked = 1 << 3
	secbitKeepCapsLocked      = 1 << 5
	lockedSecurebits          = secbitNoroot | secbitNorootLocked | secbitNoSetuidFixup | secbitNoSetuidFixupLocked | secbitKeepCapsLocked
)

const (
	capLastCapFile    = "/proc/sys/kernel/cap_last_cap"
	defaultCapLastCap = 40
	maxCap            = 63 // two 32-bit words in capset's version 3
)

// Caller is who ran the program: the real uid and gid and every group of
// the process (its real gid first, then the supplementary ones). The kernel
// sets them from the caller's own; the caller cannot claim others.
type Caller struct {
	UID    uint32
	Groups []uint32
}

// Real returns the process's real user and its groups.
func Real() (Caller, error) {
	c := Caller{UID: uint32(unix.Getuid()), Groups: []uint32{uint32(unix.Getgid())}}
	groups, err := unix.Getgroups()
	if err != nil {
		return c, fmt.Errorf("privs: getgroups: %w", err)
	}
	for _, g := range groups {
		if uint32(g) != c.Groups[0] {
			c.Groups = append(c.Groups, uint32(g))
		}
	}
	return c, nil
}

// Elevated reports whether the process has privileges its real user has
// not: a setuid-root program run by another user.
func Elevated() bool { return unix.Geteuid() == 0 && unix.Getuid() != 0 }

// Drop keeps of root's capabilities only keep (effective and permitted) and
// lets the programs the process runs have inherit (a subset of keep) as
// ambient capabilities. It sets the effective and saved gid to 0, clears
// the supplementary groups, locks SECBIT_NOROOT (an execve by a uid-0
// process grants no capabilities), drops every other capability from the
// bounding set and sets no_new_privs (no setuid or file capabilities take
// effect in what it runs). Every thread of the process changes at once.
// It needs the effective uid 0 and every capability in keep; those the
// running kernel does not know (CAP_BPF before Linux 5.8) are left out.
func Drop(keep, inherit []uintptr) error {
	if unix.Geteuid() != 0 {
		return errors.New("privs: the effective uid is not 0 (is the program setuid root?)")
	}
	var keepMask, inheritMask uint64
	last := uintptr(capLastCap())
	for _, c := range keep {
		if c <= last {
			keepMask |= 1 << c
		}
	}
	for _, c := range inherit {
		if keepMask&(1<<c) == 0 {
			return fmt.Errorf("privs: capability %d is inherited but not kept", c)
		}
		inheritMask |= 1 << c
	}
	// The ids first: setresgid and setgroups need CAP_SETGID, which goes below.
	if err := syscall.Setresgid(unix.Getgid(), 0, 0); err != nil {
		return fmt.Errorf("privs: setresgid: %w", err)
	}
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("privs: setgroups: %w", err)
	}
	if err := allThreads(unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, lockedSecurebits); err != nil {
		return fmt.Errorf("privs: set securebits: %w", err)
	}
	for c := uintptr(0); c <= last; c++ {
		if keepMask&(1<<c) != 0 {
			continue
		}
		if err := allThreads(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, c); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("privs: drop capability %d from the bounding set: %w", c, err)
		}
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{
		{Effective: uint32(keepMask), Permitted: uint32(keepMask), Inheritable: uint32(inheritMask)},
		{Effective: uint32(keepMask >> 32), Permitted: uint32(keepMask >> 32), Inheritable: uint32(inheritMask >> 32)},
	}
	if err := allThreads(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0]))); err != nil {
		return fmt.Errorf("privs: capset: %w", err)
	}
	for _, c := range inherit {
		if err := allThreads(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, c); err != nil {
			return fmt.Errorf("privs: raise ambient capability %d: %w", c, err)
		}
	}
	if err := allThreads(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1); err != nil {
		return fmt.Errorf("privs: set no_new_privs: %w", err)
	}
	return nil
}

// allThreads makes the system call on every thread of the process: Linux
// keeps credentials per thread, and Go runs goroutines on several.
func allThreads(trap uintptr, args ...uintptr) error {
	var a [6]uintptr
	copy(a[:], args)
	_, _, errno := syscall.AllThreadsSyscall6(trap, a[0], a[1], a[2], a[3], a[4], a[5])
	switch {
	case errno == syscall.ENOTSUP:
		return errors.New("privs: built with cgo, which cannot change the credentials of every thread; build with CGO_ENABLED=0")
	case errno != 0:
		return errno
	}
	return nil
}

// capLastCap is the highest capability the running kernel knows.
func capLastCap() int {
	b, err := os.ReadFile(capLastCapFile)
	if err != nil {
		return defaultCapLastCap
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 0 || n > maxCap {
		return defaultCapLastCap
	}
	return n
}

// ResetInherited undoes what the caller set for the process and would
// otherwise steer it: the environment is emptied but for a PATH of the
// system's directories (the firewall backends run nft and iptables by
// name), and the umask is 022, so nothing written is writable by others.
func ResetInherited() {
	os.Clearenv()
	os.Setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
	unix.Umask(0o022)
}
