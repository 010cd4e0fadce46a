package state

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// Callers get the lock in the order they asked for it.
func TestLockIsFIFO(t *testing.T) {
	s := New(t.TempDir())
	first, err := s.Acquire("net.lock", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := s.Acquire("net.lock", 10*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			time.Sleep(time.Millisecond)
			l.Release()
		}()
		// Wait until this caller's ticket is in the queue before the next one asks.
		waitTickets(t, s, "net.lock", i+2)
	}
	first.Release()
	wg.Wait()
	for i, v := range order {
		if v != i {
			t.Fatalf("lock order %v, want 0..%d in order", order, n-1)
		}
	}
}

func waitTickets(t *testing.T, s *Store, name string, want int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Microsecond) {
		if l, err := listTickets(s.path(name) + ".q"); err == nil && len(l) >= want {
			return
		}
	}
	t.Fatalf("queue of %s never reached %d tickets", name, want)
}

// A ticket left by a process that died (its file exists, nobody flocks it)
// does not block anyone, and is cleaned up.
func TestLockSkipsDeadTickets(t *testing.T) {
	s := New(t.TempDir())
	q := s.path("net.lock") + ".q"
	if err := os.MkdirAll(q, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"1", "2"} {
		if err := os.WriteFile(filepath.Join(q, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	l, err := s.Acquire("net.lock", 100*time.Millisecond)
	if err != nil {
		t.Fatalf("dead tickets blocked the lock: %v", err)
	}
	if l.path != filepath.Join(q, "3") {
		t.Errorf("ticket %s, want number 3 (after the dead ones)", l.path)
	}
	if tk, _ := listTickets(q); len(tk) != 1 {
		t.Errorf("dead tickets not removed: %v", tk)
	}
	l.Release()
	if tk, _ := listTickets(q); len(tk) != 0 {
		t.Errorf("Release left tickets: %v", tk)
	}
}

// A waiter that times out leaves the queue, and the callers behind it move up.
func TestLockTimeoutLeavesQueue(t *testing.T) {
	s := New(t.TempDir())
	held, err := s.Acquire("net.lock", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Acquire("net.lock", 20*time.Millisecond); err == nil {
		t.Fatal("a held lock was taken twice")
	}
	got := make(chan error, 1)
	go func() {
		l, err := s.Acquire("net.lock", 5*time.Second)
		if err == nil {
			l.Release()
		}
		got <- err
	}()
	waitTickets(t, s, "net.lock", 2)
	held.Release()
	if err := <-got; err != nil {
		t.Fatalf("the caller behind a timed-out one: %v", err)
	}
}

// Shared holders hold together; an exclusive caller waits for those before
// it, and a shared caller after it waits for it.
func TestLockShared(t *testing.T) {
	s := New(t.TempDir())
	r1, err := s.AcquireShared("net.lock", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.AcquireShared("net.lock", 50*time.Millisecond)
	if err != nil {
		t.Fatalf("a second shared holder waited for the first: %v", err)
	}
	if _, err := s.Acquire("net.lock", 20*time.Millisecond); err == nil {
		t.Fatal("exclusive lock taken while shared holders hold it")
	}
	var mu sync.Mutex
	var order []string
	note := func(s string) { mu.Lock(); order = append(order, s); mu.Unlock() }
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		w, err := s.Acquire("net.lock", 5*time.Second)
		if err != nil {
			t.Error(err)
			return
		}
		note("exclusive")
		time.Sleep(20 * time.Millisecond)
		note("exclusive done")
		w.Release()
	}()
	waitTickets(t, s, "net.lock", 3)
	go func() {
		defer wg.Done()
		r, err := s.AcquireShared("net.lock", 5*time.Second)
		if err != nil {
			t.Error(err)
			return
		}
		note("shared after")
		r.Release()
	}()
	waitTickets(t, s, "net.lock", 4)
	note("release")
	r1.Release()
	r2.Release()
	wg.Wait()
	want := []string{"release", "exclusive", "exclusive done", "shared after"}
	if !slices.Equal(order, want) {
		t.Errorf("order %v, want %v", order, want)
	}
}

// A key's lock excludes other holders of that key, not of others, and
// makes no file per key.
func TestLockKey(t *testing.T) {
	s := New(t.TempDir())
	var inside, most, total int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 20 {
				l, err := s.AcquireKey("locks/ports.lock", "vif1.0", 10*time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				inside++
				most = max(most, inside)
				total++
				mu.Unlock()
				time.Sleep(50 * time.Microsecond)
				mu.Lock()
				inside--
				mu.Unlock()
				l.Release()
			}
		})
	}
	wg.Wait()
	if most != 1 || total != 16*20 {
		t.Errorf("%d holders at once (want 1), %d holds (want %d)", most, total, 16*20)
	}
	held, err := s.AcquireKey("locks/ports.lock", "vif1.0", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AcquireKey("locks/ports.lock", "vif1.0", 20*time.Millisecond); !errors.Is(err, ErrLockTimeout) {
		t.Errorf("second holder: %v, want a timeout", err)
	}
	other, err := s.AcquireKey("locks/ports.lock", "vif2.0", 20*time.Millisecond)
	if err != nil {
		t.Errorf("another key waited: %v", err)
	}
	other.Release()
	held.Release()
	if ents, _ := os.ReadDir(s.path("locks")); len(ents) != 1 {
		t.Errorf("files %v, want the one lock file", ents)
	}
}
