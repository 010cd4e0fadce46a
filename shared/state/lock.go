package state

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Locks are fair: callers get a lock in the order they asked for it (FIFO),
// so no caller starves behind a stream of others, and a caller killed while
// holding or waiting never blocks the others.
//
// A lock NAME is a queue: a directory NAME.q of ticket files, each held with
// flock(2) by the process that waits or holds, and a guard file NAME whose
// flock is taken only for the instant of taking a ticket. A ticket is
// numbered one above the highest in the queue (taken under the guard, so
// numbers are unique and increase). An exclusive ticket ("N") holds the lock
// once no ticket with a lower number is held; a shared ticket ("Ns") once no
// exclusive ticket with a lower number is held, so shared holders run
// together, and an exclusive caller waits for the shared ones before it and
// makes the shared ones after it wait (a reader/writer lock without writer
// starvation). A ticket whose file is not flocked belongs to a process that
// died: it is removed by whoever finds it. A waiter polls the flock of the
// ticket it waits for, and lists the queue again only when that one is gone,
// so waiting costs one system call per poll whatever the length of the queue.
//
// (Binaries from before shared tickets ignore "Ns" files: do not mix them on
// one run_dir while operations are in flight.)

// Lock is a held lock.
type Lock struct {
	ticket     *os.File
	path       string
	label      string    // what lock statistics call it
	asked, got time.Time // when the caller asked and got it (lock statistics)
}

// ErrLockTimeout is returned (wrapped) when a lock was not obtained in time.
var ErrLockTimeout = errors.New("timed out waiting for lock")

// Acquire takes lock name (a file in the store's directory) exclusively,
// waiting in line at most timeout.
func (s *Store) Acquire(name string, timeout time.Duration) (*Lock, error) {
	return s.acquire(name, timeout, false)
}

// AcquireShared takes lock name shared: with the other shared holders, and
// with no exclusive one (see above), waiting in line at most timeout.
func (s *Store) AcquireShared(name string, timeout time.Duration) (*Lock, error) {
	return s.acquire(name, timeout, true)
}

func (s *Store) acquire(name string, timeout time.Duration, shared bool) (*Lock, error) {
	guard := s.path(name)
	queue := guard + ".q"
	if err := os.MkdirAll(queue, 0o755); err != nil {
		return nil, fmt.Errorf("state: lock: %w", err)
	}
	asked := time.Now()
	deadline := asked.Add(timeout)
	l, seq, first, err := takeTicket(guard, queue, shared, deadline, timeout)
	if err != nil {
		return nil, err
	}
	wait := 50 * time.Microsecond
	for {
		var pred *os.File
		if !first {
			if pred, err = predecessor(queue, seq, shared); err != nil {
				l.Release()
				return nil, err
			}
		}
		if pred == nil { // first in line
			l.label, l.asked, l.got = statLabel(guard, shared), asked, time.Now()
			return l, nil
		}
		for {
			gone, err := ticketGone(pred)
			if err != nil {
				pred.Close()
				l.Release()
				return nil, err
			}
			if gone {
				break
			}
			if time.Now().After(deadline) {
				pred.Close()
				l.Release()
				return nil, timeoutError(guard, timeout)
			}
			time.Sleep(wait)
			if wait < 2*time.Millisecond {
				wait *= 2
			}
		}
		pred.Close()
	}
}

func timeoutError(path string, timeout time.Duration) error {
	return fmt.Errorf("state: lock %s: %w after %s (another brouter invocation holds it; see lslocks)", path, ErrLockTimeout, timeout)
}

// statLabel is a lock's name in lock statistics: its file's name without
// ".lock", and "(shared)" for a shared hold.
func statLabel(path string, shared bool) string {
	label := strings.TrimSuffix(filepath.Base(path), ".lock")
	if shared {
		label += "(shared)"
	}
	return label
}

// takeTicket adds a ticket to the queue, under the guard's flock, and
// reports whether it is first in line: the queue had no ticket it would
// wait for (none at all; for a shared one, no exclusive one), and no ticket
// added later can come before it.
func takeTicket(guard, queue string, shared bool, deadline time.Time, timeout time.Duration) (l *Lock, seq int, first bool, err error) {
	g, err := os.OpenFile(guard, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, 0, false, fmt.Errorf("state: lock: %w", err)
	}
	defer g.Close()
	// Held for a directory listing and a file creation: microseconds.
	for wait := 20 * time.Microsecond; ; {
		err := unix.Flock(int(g.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return nil, 0, false, fmt.Errorf("state: lock %s: %w", guard, err)
		}
		if time.Now().After(deadline) {
			return nil, 0, false, timeoutError(guard, timeout)
		}
		time.Sleep(wait)
		if wait < time.Millisecond {
			wait *= 2
		}
	}
	defer unix.Flock(int(g.Fd()), unix.LOCK_UN)
	tickets, err := listTickets(queue)
	if err != nil {
		return nil, 0, false, err
	}
	seq = 1
	if n := len(tickets); n > 0 {
		seq = tickets[n-1].seq + 1
	}
	first = !slices.ContainsFunc(tickets, func(t ticket) bool { return !shared || !t.shared })
	p := filepath.Join(queue, ticket{seq, shared}.String())
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, 0, false, fmt.Errorf("state: lock %s: %w", guard, err)
	}
	// Not blocking: nobody else flocks a ticket nobody could see yet.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		os.Remove(p)
		return nil, 0, false, fmt.Errorf("state: lock %s: %w", guard, err)
	}
	return &Lock{ticket: f, path: p}, seq, first, nil
}

// ticket is one ticket of a queue: its number, and whether it is shared.
type ticket struct {
	seq    int
	shared bool
}

// String is the ticket's file name: "N", or "Ns" when shared.
func (t ticket) String() string {
	if t.shared {
		return strconv.Itoa(t.seq) + "s"
	}
	return strconv.Itoa(t.seq)
}

// parseTicket reads a ticket's file name; false for other files.
func parseTicket(name string) (ticket, bool) {
	num, shared := strings.CutSuffix(name, "s")
	v, err := strconv.Atoi(num)
	if err != nil || v <= 0 || strings.HasPrefix(num, "0") || strings.HasPrefix(num, "+") {
		return ticket{}, false
	}
	return ticket{v, shared}, true
}

// listTickets returns the tickets in the queue, by ascending number.
func listTickets(queue string) ([]ticket, error) {
	d, err := os.Open(queue)
	if err != nil {
		return nil, fmt.Errorf("state: lock: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("state: lock: %w", err)
	}
	var out []ticket
	for _, n := range names {
		if t, ok := parseTicket(n); ok {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(a, b ticket) int { return a.seq - b.seq })
	return out, nil
}

// predecessor opens the live ticket that ticket seq waits for (nil: none):
// the nearest below it, or for a shared ticket the nearest exclusive one
// below it. It removes the tickets of dead processes it meets on the way.
func predecessor(queue string, seq int, shared bool) (*os.File, error) {
	tickets, err := listTickets(queue)
	if err != nil {
		return nil, err
	}
	for i := len(tickets) - 1; i >= 0; i-- {
		t := tickets[i]
		if t.seq >= seq || shared && t.shared {
			continue
		}
		p := filepath.Join(queue, t.String())
		f, err := os.OpenFile(p, os.O_RDONLY|unix.O_CLOEXEC, 0)
		if errors.Is(err, os.ErrNotExist) {
			continue // released meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("state: lock: %w", err)
		}
		gone, err := ticketGone(f)
		if err != nil {
			f.Close()
			return nil, err
		}
		if !gone {
			return f, nil
		}
		// Not flocked and still linked: its owner died. No new ticket can
		// take a number below ours, so the name is still that ticket's.
		_ = os.Remove(p)
		f.Close()
	}
	return nil, nil
}

// ticketGone reports whether the ticket open as f is no longer held: its
// owner released it (and unlinked it) or died.
func ticketGone(f *os.File) (bool, error) {
	err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB)
	switch {
	case err == nil:
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		return true, nil
	case errors.Is(err, unix.EWOULDBLOCK) || errors.Is(err, unix.EINTR):
		return false, nil
	}
	return false, fmt.Errorf("state: lock: %w", err)
}

// Release drops the lock: the ticket leaves the queue. Safe on nil.
func (l *Lock) Release() {
	if l == nil || l.ticket == nil {
		return
	}
	// Unlink first, then unlock by closing: a waiter that sees the flock
	// free finds the name gone too. (A key's lock has no file of its own.)
	if l.path != "" {
		os.Remove(l.path)
	}
	l.ticket.Close()
	l.ticket = nil
	if !l.got.IsZero() {
		noteLock(l.label, l.asked, l.got)
	}
}

// Lock takes lock name shared or exclusively (AcquireShared, Acquire) and
// returns its release: for packages that take locks through an interface of
// their own (firewall.Locker), without depending on this one.
func (s *Store) Lock(name string, shared bool, timeout time.Duration) (release func(), err error) {
	l, err := s.acquire(name, timeout, shared)
	if err != nil {
		return nil, err
	}
	return l.Release, nil
}
