package state

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func TestRecordRoundTrip(t *testing.T) {
	s := New(filepath.Join(t.TempDir(), "a", "b"))
	type rec struct{ Bridge string }
	var got rec
	if ok, err := s.Read("net/x.json", &got); ok || err != nil {
		t.Fatalf("missing record: ok=%v err=%v", ok, err)
	}
	if err := s.Write("net/x.json", rec{"br0"}); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Read("net/x.json", &got); !ok || err != nil || got.Bridge != "br0" {
		t.Fatalf("read back: ok=%v err=%v got=%+v", ok, err, got)
	}
	names, err := s.List("net")
	if err != nil || len(names) != 1 || names[0] != "x.json" {
		t.Fatalf("List = %v, %v; want [x.json] (no temp files)", names, err)
	}
	if err := s.Remove("net/x.json"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("net/x.json"); err != nil {
		t.Fatalf("second remove: %v", err)
	}
}

func TestCorruptRecordIsAnError(t *testing.T) {
	s := New(t.TempDir())
	if err := os.WriteFile(filepath.Join(s.Dir, "r"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if _, err := s.Read("r", &v); err == nil {
		t.Fatal("corrupt record read without error")
	}
}

func TestLockExcludesAndTimesOut(t *testing.T) {
	s := New(t.TempDir())
	l, err := s.Acquire("net.lock", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// flock locks belong to the open file description, so a second Acquire in
	// the same process conflicts just as another process would.
	if _, err := s.Acquire("net.lock", 30*time.Millisecond); !errors.Is(err, ErrLockTimeout) {
		t.Fatalf("second acquire: %v, want ErrLockTimeout", err)
	}
	l.Release()
	l.Release() // idempotent
	l2, err := s.Acquire("net.lock", time.Second)
	if err != nil {
		t.Fatalf("after release: %v", err)
	}
	l2.Release()
}

func TestLockSerialises(t *testing.T) {
	s := New(t.TempDir())
	var mu sync.Mutex
	inside, maxInside := 0, 0
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := s.Acquire("x.lock", 5*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			inside++
			if inside > maxInside {
				maxInside = inside
			}
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
			mu.Lock()
			inside--
			mu.Unlock()
			l.Release()
		}()
	}
	wg.Wait()
	if maxInside != 1 {
		t.Fatalf("%d holders at once, want 1", maxInside)
	}
}

// A writer killed between creating its temp file and the rename leaves the
// temp file; Remove takes it away with the record.
func TestRemoveTakesADeadWritersTempFile(t *testing.T) {
	s := New(t.TempDir())
	if err := s.Write("ports/a.json", map[string]int{"v": 1}); err != nil {
		t.Fatal(err)
	}
	tmp := tmpPath(s.path("ports/a.json"))
	if err := os.WriteFile(tmp, []byte(`{"v":`), 0o644); err != nil {
		t.Fatal(err)
	}
	if names, _ := s.List("ports"); len(names) != 1 || names[0] != "a.json" {
		t.Errorf("List = %v, want only a.json", names)
	}
	if err := s.Remove("ports/a.json"); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(tmp)); len(ents) != 0 {
		t.Errorf("left after Remove: %v", ents)
	}
}

// Writers of one record at once all succeed, and the record is whole: one
// of theirs.
func TestConcurrentWritesOfOneRecord(t *testing.T) {
	s := NewVolatile(t.TempDir())
	var wg sync.WaitGroup
	errs := make(chan error, 16*50)
	for w := range 16 {
		wg.Go(func() {
			for i := range 50 {
				if err := s.Write("nftables/net/network.json", map[string]int{"writer": w, "i": i}); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var got map[string]int
	if ok, err := s.Read("nftables/net/network.json", &got); !ok || err != nil || got["i"] != 49 {
		t.Errorf("record %v (found %v, %v), want some writer's last", got, ok, err)
	}
	if names, _ := s.List("nftables/net"); len(names) != 1 {
		t.Errorf("files left: %v", names)
	}
}
