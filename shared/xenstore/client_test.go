package xenstore

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestReadWriteRoundTrip(t *testing.T) {
	s := startServer(t)
	c := dial(t, s)

	if err := c.Write("backend/vif/1/0/mac", "00:16:3e:00:00:01"); err != nil {
		t.Fatal(err)
	}
	// A relative path resolves under /local/domain/0/ (dom0's domain path).
	for _, p := range []string{"backend/vif/1/0/mac", "/local/domain/0/backend/vif/1/0/mac"} {
		if v, err := c.Read(p); err != nil || v != "00:16:3e:00:00:01" {
			t.Errorf("Read(%s) = %q, %v", p, v, err)
		}
	}
	if v, ok := s.Get("/local/domain/0/backend/vif/1/0/mac"); !ok || v != "00:16:3e:00:00:01" {
		t.Errorf("server has %q, %v", v, ok)
	}
	// Parents were created with empty values.
	if v, err := c.Read("backend/vif/1"); err != nil || v != "" {
		t.Errorf("parent: %q, %v", v, err)
	}
	// Values are bytes: empty, spaces, a full payload.
	long := strings.Repeat("v", PayloadMax-len("/k")-1)
	for _, v := range []string{"", "192.0.2.10 2001:db8::10", long} {
		if err := c.Write("/k", v); err != nil {
			t.Fatalf("Write %d bytes: %v", len(v), err)
		}
		if got, err := c.Read("/k"); err != nil || got != v {
			t.Fatalf("Read back %d bytes: %d bytes, %v", len(v), len(got), err)
		}
	}
	if err := c.Write("/k", long+"x"); !errors.Is(err, syscall.E2BIG) {
		t.Errorf("oversized write: %v, want E2BIG", err)
	}
}

func TestNotFoundAndRm(t *testing.T) {
	s := startServer(t)
	c := dial(t, s)

	_, err := c.Read("backend/vif/9/9/mac")
	if !errors.Is(err, ErrNotFound) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Read missing: %v, want ErrNotFound", err)
	}
	var xe *Error
	if !errors.As(err, &xe) || xe.Name != "ENOENT" || xe.Op != "read" {
		t.Fatalf("error detail: %#v", xe)
	}
	if got := err.Error(); got != "xenstore: read backend/vif/9/9/mac: ENOENT" {
		t.Errorf("message %q", got)
	}
	if ok, err := c.Exists("backend/vif/9/9/mac"); ok || err != nil {
		t.Errorf("Exists missing = %v, %v", ok, err)
	}

	s.Set("backend/vif/1/0/mac", "m")
	s.Set("backend/vif/1/0/ip", "192.0.2.1")
	if ok, err := c.Exists("backend/vif/1/0/mac"); !ok || err != nil {
		t.Errorf("Exists = %v, %v", ok, err)
	}
	if err := c.Rm("backend/vif/1"); err != nil { // recursive
		t.Fatal(err)
	}
	for p := range s.Dump() {
		if strings.HasPrefix(p, "/local/domain/0/backend/vif/1") {
			t.Errorf("%s survived rm", p)
		}
	}
	// Missing node, and missing parent (ENOENT from xenstored): not errors for Rm.
	for _, p := range []string{"backend/vif/1", "no/such/parent"} {
		if err := c.Rm(p); err != nil {
			t.Errorf("Rm(%s): %v", p, err)
		}
	}
}

func TestMkdirListDomainPath(t *testing.T) {
	s := startServer(t)
	c := dial(t, s)
	if err := c.Mkdir("device/vif/0"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mkdir("device/vif/0"); err != nil {
		t.Fatalf("Mkdir existing: %v", err)
	}
	for _, k := range []string{"mac", "bridge", "handle"} {
		if err := c.Write("device/vif/0/"+k, "x"); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := c.List("/local/domain/0/device/vif/0"); err != nil || !reflect.DeepEqual(got, []string{"mac", "bridge", "handle"}) {
		t.Errorf("List = %q, %v", got, err)
	}
	if got, err := c.List("device/vif/0/mac"); err != nil || len(got) != 0 {
		t.Errorf("List leaf = %q, %v", got, err)
	}
	if _, err := c.List("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("List missing: %v", err)
	}
	if p, err := c.DomainPath(7); err != nil || p != "/local/domain/7" {
		t.Errorf("DomainPath = %q, %v", p, err)
	}
}

func TestListLongDirectory(t *testing.T) {
	// More names than fit in one reply: XS_DIRECTORY says E2BIG and the
	// client falls back to XS_DIRECTORY_PART, as libxenstore does.
	s := startServer(t)
	c := dial(t, s)
	var want []string
	for i := 0; i < 500; i++ {
		name := fmt.Sprintf("child-with-a-longish-name-%04d", i)
		want = append(want, name)
		s.Set("/big/"+name, "")
	}
	if _, err := c.request("list", msgDirectory, 0, "/big", join("/big")); !errors.Is(err, syscall.E2BIG) {
		t.Fatalf("plain directory: %v, want E2BIG", err)
	}
	got, err := c.List("/big")
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("List = %d names, %v", len(got), err)
	}
	s.Set("/empty", "")
	if got, err := c.listParts(0, "/empty"); err != nil || len(got) != 0 {
		t.Errorf("listParts(empty) = %q, %v", got, err)
	}
}

func TestInvalidPaths(t *testing.T) {
	s := startServer(t)
	c := dial(t, s)
	for _, p := range []string{"", "a\x00b", strings.Repeat("a", RelPathMax+1)} {
		if _, err := c.Read(p); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("client accepted %.20q: %v", p, err)
		}
	}
	// Left to the server, as to xenstored.
	for _, p := range []string{"/a//b", "/a/", "a b", "/a/ü"} {
		if err := c.Write(p, "x"); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Write(%q): %v, want EINVAL", p, err)
		}
	}
}

func TestTransaction(t *testing.T) {
	s := startServer(t)
	c := dial(t, s)
	other := dial(t, s)

	// Commit: all keys land together.
	err := c.Transaction(func(tx *Tx) error {
		if err := tx.Write("backend/vif/1/0/hotplug-error", "no bridge"); err != nil {
			return err
		}
		if err := tx.Write("backend/vif/1/0/hotplug-status", "error"); err != nil {
			return err
		}
		// Isolation: other clients do not see uncommitted writes.
		if _, ok := s.Get("backend/vif/1/0/hotplug-status"); ok {
			t.Error("uncommitted write visible")
		}
		if v, err := tx.Read("backend/vif/1/0/hotplug-status"); err != nil || v != "error" {
			t.Errorf("tx reads its own write: %q, %v", v, err)
		}
		if names, err := tx.List("backend/vif/1/0"); err != nil || len(names) != 2 {
			t.Errorf("tx.List = %q, %v", names, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Get("backend/vif/1/0/hotplug-status"); v != "error" {
		t.Fatalf("after commit: %q", v)
	}

	// fn's error aborts: nothing lands.
	boom := errors.New("boom")
	err = c.Transaction(func(tx *Tx) error {
		tx.Write("aborted", "x")
		tx.Rm("backend")
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want fn's error", err)
	}
	if _, ok := s.Get("aborted"); ok {
		t.Error("aborted write landed")
	}
	if _, ok := s.Get("backend/vif/1/0/hotplug-status"); !ok {
		t.Error("aborted rm landed")
	}

	// Conflict: another client changes what the transaction read; the commit
	// gets EAGAIN and fn runs again on fresh data.
	s.Set("counter", "1")
	attempts := 0
	err = c.Transaction(func(tx *Tx) error {
		attempts++
		v, err := tx.Read("counter")
		if err != nil {
			return err
		}
		if attempts == 1 {
			if err := other.Write("counter", "10"); err != nil {
				return err
			}
		}
		n, _ := strconv.Atoi(v)
		return tx.Write("counter", strconv.Itoa(n+1))
	})
	if err != nil || attempts != 2 {
		t.Fatalf("err %v after %d attempts, want success after 2", err, attempts)
	}
	if v, _ := s.Get("counter"); v != "11" {
		t.Errorf("counter = %s, want 11 (the concurrent write must not be lost)", v)
	}

	// A conflict every time: bounded retries, then EAGAIN.
	attempts = 0
	err = c.Transaction(func(tx *Tx) error {
		attempts++
		tx.Read("counter")
		other.Write("counter", strconv.Itoa(attempts))
		return tx.Write("counter", "mine")
	})
	if !errors.Is(err, syscall.EAGAIN) || attempts != MaxTransactionAttempts {
		t.Fatalf("err %v after %d attempts, want EAGAIN after %d", err, attempts, MaxTransactionAttempts)
	}
}

func TestTransactionAtomicIncrements(t *testing.T) {
	s := startServer(t)
	s.Set("/n", "0")
	const workers, each = 5, 20
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	for w := 0; w < workers; w++ {
		c := dial(t, s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				err := c.Transaction(func(tx *Tx) error {
					v, err := tx.Read("/n")
					if err != nil {
						return err
					}
					n, _ := strconv.Atoi(v)
					return tx.Write("/n", strconv.Itoa(n+1))
				})
				if err == nil {
					mu.Lock()
					done++
					mu.Unlock()
				} else if !errors.Is(err, syscall.EAGAIN) {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if v, _ := s.Get("/n"); v != strconv.Itoa(done) {
		t.Fatalf("counter %s after %d committed increments: lost update", v, done)
	}
	if done < workers*each/2 {
		t.Errorf("only %d of %d transactions committed", done, workers*each)
	}
}

func TestWatch(t *testing.T) {
	s := startServer(t)
	w := dial(t, s)
	c := dial(t, s)
	expect := func(path, token string) {
		t.Helper()
		ev, err := w.NextEvent(2 * time.Second)
		if err != nil || ev.Path != path || ev.Token != token {
			t.Fatalf("event %+v, %v; want %s %s", ev, err, path, token)
		}
	}
	none := func() {
		t.Helper()
		if ev, err := w.NextEvent(100 * time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("unexpected event %+v, %v", ev, err)
		}
	}

	if err := w.Watch("backend/vif", "rel"); err != nil {
		t.Fatal(err)
	}
	expect("backend/vif", "rel") // fired once at registration
	if err := w.Watch("/local/domain/0/backend/vif/1/0/state", "abs"); err != nil {
		t.Fatal(err)
	}
	expect("/local/domain/0/backend/vif/1/0/state", "abs")
	if err := w.Watch("backend/vif", "rel"); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("duplicate watch: %v", err)
	}

	c.Write("backend/vif/1/0/mac", "m")
	expect("backend/vif/1/0/mac", "rel") // relative watch, relative event path
	c.Write("backend/vbd/1/0/mode", "w")
	none()

	c.Write("backend/vif/1/0/state", "4")
	ev1, _ := w.NextEvent(2 * time.Second)
	ev2, _ := w.NextEvent(2 * time.Second)
	got := []string{ev1.Token + " " + ev1.Path, ev2.Token + " " + ev2.Path}
	slices.Sort(got)
	if want := []string{"abs /local/domain/0/backend/vif/1/0/state", "rel backend/vif/1/0/state"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}

	// Transactions fire at commit, not before.
	err := c.Transaction(func(tx *Tx) error {
		tx.Write("backend/vif/1/0/hotplug-status", "connected")
		none()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	expect("backend/vif/1/0/hotplug-status", "rel")

	// Removing a parent fires watches set inside the removed subtree.
	if err := w.Unwatch("backend/vif", "rel"); err != nil {
		t.Fatal(err)
	}
	c.Rm("backend")
	expect("/local/domain/0/backend/vif/1/0/state", "abs")
	none()

	if err := w.Unwatch("backend/vif", "rel"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unwatch twice: %v", err)
	}
	if err := w.Watch("@releaseDomain", "rd"); err != nil {
		t.Fatal(err)
	}
	expect("@releaseDomain", "rd")
}

func TestConcurrentClients(t *testing.T) {
	s := startServer(t)
	shared := dial(t, s)
	const n = 50
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		own := dial(t, s)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, c := range []*Client{own, shared} { // separate and shared connections
				key := fmt.Sprintf("backend/vif/%d/0/%p", i, c)
				if err := c.Write(key, key); err != nil {
					t.Error(err)
					return
				}
				if v, err := c.Read(key); err != nil || v != key {
					t.Errorf("Read(%s) = %q, %v", key, v, err)
				}
			}
		}()
	}
	wg.Wait()
	count := 0
	for p := range s.Dump() {
		if strings.Count(p, "/") == 8 { // /local/domain/0/backend/vif/N/0/KEY
			count++
		}
	}
	if count != 2*n {
		t.Errorf("%d keys written, want %d", count, 2*n)
	}
}

func TestTimeout(t *testing.T) {
	// A "xenstored" that accepts and never answers.
	sock := filepath.Join(t.TempDir(), "hung.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
		}
	}()
	c, err := DialPath(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetTimeout(200 * time.Millisecond)
	start := time.Now()
	_, err = c.Read("backend/vif/1/0/mac")
	if took := time.Since(start); !errors.Is(err, os.ErrDeadlineExceeded) || took > 2*time.Second {
		t.Fatalf("after %v: %v, want a timeout within the bound", took, err)
	}
	if !strings.HasPrefix(err.Error(), "xenstore: read backend/vif/1/0/mac: ") {
		t.Errorf("message %q", err)
	}
	// The stream is in an unknown state: the client refuses further use at once.
	start = time.Now()
	if err := c.Write("x", "y"); !errors.Is(err, ErrClosed) || time.Since(start) > time.Second {
		t.Fatalf("after timeout: %v", err)
	}
}

func TestServerGoneAndClose(t *testing.T) {
	s := startServer(t)
	c := dial(t, s)
	if err := c.Write("a", "b"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := c.Read("a"); err == nil {
		t.Fatal("read after server closed succeeded")
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := DialPath(s.Path()); err == nil {
		t.Error("socket still there after Close")
	}
}

func TestDialSelection(t *testing.T) {
	s := startServer(t)
	t.Setenv("XENSTORED_PATH", s.Path())
	c, err := Dial()
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	// XENSTORED_RUNDIR/socket when XENSTORED_PATH is unset.
	t.Setenv("XENSTORED_PATH", "")
	dir := t.TempDir()
	s2, err := NewServer(filepath.Join(dir, "socket"))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	t.Setenv("XENSTORED_RUNDIR", dir)
	if got := candidates(); got[0] != filepath.Join(dir, "socket") {
		t.Fatalf("candidates %q", got)
	}
	c, err = Dial()
	if err != nil {
		t.Fatal(err)
	}
	s2.Set("/where", "rundir")
	if v, err := c.Read("/where"); err != nil || v != "rundir" {
		t.Errorf("Read = %q, %v", v, err)
	}
	c.Close()

	t.Setenv("XENSTORED_RUNDIR", t.TempDir()) // no socket there, and (here) no xenbus device
	if _, err := os.Stat("/dev/xen/xenbus"); err == nil {
		t.Skip("this machine has a xenbus device")
	}
	if _, err := Dial(); err == nil || !strings.HasPrefix(err.Error(), "xenstore: no xenstored reachable: ") {
		t.Errorf("Dial with nothing there: %v", err)
	}
}
