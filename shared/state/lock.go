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
// numbers are unique and increase), and its owner holds the lock once no
// ticket with a lower number is held. A ticket whose file is not flocked
// belongs to a process that died: it is removed by whoever finds it. A
// waiter polls the flock of the ticket just before its own, and lists the
// queue again only when that one is gone, so waiting costs one system call
// per poll whatever the length of the queue.

// Lock is a held lock.
type Lock struct {
	ticket     *os.File
	path       string
	guard      string    // the lock's name, for lock statistics
	asked, got time.Time // when the caller asked and got it (lock statistics)
}

// ErrLockTimeout is returned (wrapped) when a lock was not obtained in time.
var ErrLockTimeout = errors.New("timed out waiting for lock")

// Acquire takes lock name (a file in the store's directory), waiting in
// line at most timeout.
func (s *Store) Acquire(name string, timeout time.Duration) (*Lock, error) {
	guard := s.path(name)
	queue := guard + ".q"
	if err := os.MkdirAll(queue, 0o755); err != nil {
		return nil, fmt.Errorf("state: lock: %w", err)
	}
	asked := time.Now()
	deadline := asked.Add(timeout)
	l, seq, err := takeTicket(guard, queue, deadline, timeout)
	if err != nil {
		return nil, err
	}
	wait := 50 * time.Microsecond
	for {
		pred, err := predecessor(queue, seq)
		if err != nil {
			l.Release()
			return nil, err
		}
		if pred == nil { // first in line
			l.guard, l.asked, l.got = guard, asked, time.Now()
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
				return nil, fmt.Errorf("state: lock %s: %w after %s (another brouter invocation holds it; see lslocks)", guard, ErrLockTimeout, timeout)
			}
			time.Sleep(wait)
			if wait < 2*time.Millisecond {
				wait *= 2
			}
		}
		pred.Close()
	}
}

// takeTicket adds a ticket to the queue, under the guard's flock.
func takeTicket(guard, queue string, deadline time.Time, timeout time.Duration) (*Lock, int, error) {
	g, err := os.OpenFile(guard, os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, 0, fmt.Errorf("state: lock: %w", err)
	}
	defer g.Close()
	// Held for a directory listing and a file creation: microseconds.
	for wait := 20 * time.Microsecond; ; {
		err := unix.Flock(int(g.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			return nil, 0, fmt.Errorf("state: lock %s: %w", guard, err)
		}
		if time.Now().After(deadline) {
			return nil, 0, fmt.Errorf("state: lock %s: %w after %s (another brouter invocation holds it; see lslocks)", guard, ErrLockTimeout, timeout)
		}
		time.Sleep(wait)
		if wait < time.Millisecond {
			wait *= 2
		}
	}
	defer unix.Flock(int(g.Fd()), unix.LOCK_UN)
	tickets, err := listTickets(queue)
	if err != nil {
		return nil, 0, err
	}
	seq := 1
	if n := len(tickets); n > 0 {
		seq = tickets[n-1] + 1
	}
	p := filepath.Join(queue, strconv.Itoa(seq))
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, 0, fmt.Errorf("state: lock %s: %w", guard, err)
	}
	// Not blocking: nobody else flocks a ticket nobody could see yet.
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		os.Remove(p)
		return nil, 0, fmt.Errorf("state: lock %s: %w", guard, err)
	}
	return &Lock{ticket: f, path: p}, seq, nil
}

// listTickets returns the ticket numbers in the queue, ascending.
func listTickets(queue string) ([]int, error) {
	d, err := os.Open(queue)
	if err != nil {
		return nil, fmt.Errorf("state: lock: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("state: lock: %w", err)
	}
	var out []int
	for _, n := range names {
		if v, err := strconv.Atoi(n); err == nil && v > 0 && !strings.HasPrefix(n, "0") {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out, nil
}

// predecessor opens the live ticket just below seq (nil: none), removing
// the tickets of dead processes it meets on the way.
func predecessor(queue string, seq int) (*os.File, error) {
	tickets, err := listTickets(queue)
	if err != nil {
		return nil, err
	}
	for i := len(tickets) - 1; i >= 0; i-- {
		t := tickets[i]
		if t >= seq {
			continue
		}
		p := filepath.Join(queue, strconv.Itoa(t))
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
	// free finds the name gone too.
	os.Remove(l.path)
	l.ticket.Close()
	l.ticket = nil
	if !l.got.IsZero() {
		noteLock(l.guard, l.asked, l.got)
	}
}
