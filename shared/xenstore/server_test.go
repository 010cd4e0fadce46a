package xenstore

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"
)

// raw is a client at the frame level, to check the server's wire behaviour.
type raw struct {
	t  *testing.T
	nc net.Conn
}

func dialRaw(t *testing.T, s *Server) *raw {
	t.Helper()
	nc, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &raw{t, nc}
}

func (r *raw) send(m message) {
	r.t.Helper()
	frame, err := m.encode()
	if err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.nc.Write(frame); err != nil {
		r.t.Fatal(err)
	}
}

func (r *raw) recv() message {
	r.t.Helper()
	r.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	m, err := readMessage(r.nc)
	if err != nil {
		r.t.Fatal(err)
	}
	return m
}

// call sends one request and checks the reply's type and body.
func (r *raw) call(typ msgType, tx uint32, body string, wantType msgType, wantBody string) message {
	r.t.Helper()
	r.send(message{typ: typ, reqID: 77, txID: tx, body: []byte(body)})
	m := r.recv()
	if m.typ != wantType || string(m.body) != wantBody || m.reqID != 77 || m.txID != tx {
		r.t.Fatalf("%s %q: got %s req %d tx %d %q, want %s %q", typ, body, m.typ, m.reqID, m.txID, m.body, wantType, wantBody)
	}
	return m
}

func TestServerWire(t *testing.T) {
	s := startServer(t)
	r := dialRaw(t, s)

	r.call(msgWrite, 0, "backend/vif/1/0/mac\x00fe:ff", msgWrite, "OK\x00")
	r.call(msgRead, 0, "/local/domain/0/backend/vif/1/0/mac\x00", msgRead, "fe:ff") // no NUL added
	r.call(msgRead, 0, "backend/none\x00", msgError, "ENOENT\x00")
	r.call(msgDirectory, 0, "backend/vif/1/0\x00", msgDirectory, "mac\x00")
	r.call(msgMkdir, 0, "/tool/xenstored\x00", msgMkdir, "OK\x00")
	r.call(msgGetDomainPath, 0, "12\x00", msgGetDomainPath, "/local/domain/12\x00")
	r.call(msgGetDomainPath, 0, "x\x00", msgError, "EINVAL\x00")
	r.call(msgGetPerms, 0, "backend\x00", msgGetPerms, "n0\x00")
	r.call(msgSetPerms, 0, "backend\x00n0\x00r3\x00", msgSetPerms, "OK\x00")
	r.call(msgGetPerms, 0, "backend/vif\x00", msgGetPerms, "n0\x00") // set after creation: not inherited
	r.call(msgWrite, 0, "backend/new\x00", msgWrite, "OK\x00")
	r.call(msgGetPerms, 0, "backend/new\x00", msgGetPerms, "n0\x00r3\x00") // new nodes inherit the parent's
	r.call(msgSetPerms, 0, "backend\x00x9\x00", msgError, "EINVAL\x00")
	r.call(msgRm, 0, "/\x00", msgError, "EINVAL\x00")
	r.call(msgRm, 0, "/no/such\x00", msgError, "ENOENT\x00") // parent missing
	r.call(msgRm, 0, "backend/none\x00", msgRm, "OK\x00")    // parent exists
	r.call(msgRead, 0, "backend", msgError, "EINVAL\x00")    // no terminating NUL
	r.call(msgRead, 0, "", msgError, "EINVAL\x00")
	r.call(msgRead, 0, "a//b\x00", msgError, "EINVAL\x00")
	r.call(msgControl, 0, "print\x00", msgError, "ENOSYS\x00")
	r.call(msgType(99), 0, "\x00", msgError, "ENOSYS\x00")
	r.call(msgRead, 5, "backend\x00", msgError, "ENOENT\x00") // no such transaction
	r.call(msgTransactionEnd, 0, "T\x00", msgError, "ENOENT\x00")

	if v, ok := s.Get("backend/vif/1/0/mac"); !ok || v != "fe:ff" {
		t.Errorf("Get = %q, %v", v, ok)
	}
	s.Remove("backend/vif")
	want := map[string]string{
		"/local": "", "/local/domain": "", "/local/domain/0": "", "/local/domain/0/backend": "",
		"/local/domain/0/backend/new": "", "/tool": "", "/tool/xenstored": "",
	}
	if got := s.Dump(); !reflect.DeepEqual(got, want) {
		t.Errorf("Dump = %v", got)
	}
}

func TestServerOversizedFrameDropsClient(t *testing.T) {
	s := startServer(t)
	r := dialRaw(t, s)
	var h [headerLen]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(msgWrite))
	binary.LittleEndian.PutUint32(h[12:], PayloadMax+1)
	r.nc.Write(h[:])
	r.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := readMessage(r.nc); err != io.EOF {
		t.Fatalf("got %v, want the server to hang up", err)
	}
	dialRaw(t, s).call(msgRead, 0, "/\x00", msgRead, "") // others unaffected
}

func TestServerTransactionWire(t *testing.T) {
	s := startServer(t)
	a, b := dialRaw(t, s), dialRaw(t, s)
	s.Set("/k", "old")

	start := func(r *raw) uint32 {
		t.Helper()
		r.send(message{typ: msgTransactionStart, reqID: 1, body: []byte("\x00")})
		m := r.recv()
		id, err := strconv.ParseUint(string(m.body[:len(m.body)-1]), 10, 32)
		if m.typ != msgTransactionStart || m.reqID != 1 || m.body[len(m.body)-1] != 0 || err != nil || id == 0 {
			t.Fatalf("transaction start reply %s %q", m.typ, m.body)
		}
		return uint32(id)
	}
	tx := start(a)
	a.call(msgWrite, tx, "/k\x00new", msgWrite, "OK\x00")
	a.call(msgRead, tx, "/k\x00", msgRead, "new")
	b.call(msgRead, 0, "/k\x00", msgRead, "old")                   // isolated
	b.call(msgRead, tx, "/k\x00", msgError, "ENOENT\x00")          // someone else's transaction
	a.call(msgTransactionStart, tx, "\x00", msgError, "EBUSY\x00") // no nesting
	a.call(msgTransactionEnd, tx, "X\x00", msgError, "EINVAL\x00") // T or F only
	b.call(msgWrite, 0, "/k\x00other", msgWrite, "OK\x00")         // conflicting write
	a.call(msgTransactionEnd, tx, "T\x00", msgError, "EAGAIN\x00") // commit refused
	a.call(msgTransactionEnd, tx, "T\x00", msgError, "ENOENT\x00") // and gone
	if v, _ := s.Get("/k"); v != "other" {
		t.Errorf("/k = %q after failed commit", v)
	}

	// Writes to nodes the transaction did not touch do not conflict with it.
	// (Creating a node touches its parent, as in xenstored.)
	s.Set("/unrelated", "")
	tx = start(a)
	a.call(msgRead, tx, "/k\x00", msgRead, "other")
	b.call(msgWrite, 0, "/unrelated\x00x", msgWrite, "OK\x00")
	a.call(msgWrite, tx, "/k2\x00v", msgWrite, "OK\x00")
	a.call(msgTransactionEnd, tx, "T\x00", msgTransactionEnd, "OK\x00")
	if v, _ := s.Get("/k2"); v != "v" {
		t.Errorf("/k2 = %q after commit", v)
	}

	// Snapshot: a transaction reads the tree as it was when it started.
	tx = start(a)
	b.call(msgWrite, 0, "/later\x00x", msgWrite, "OK\x00")
	a.call(msgRead, tx, "/later\x00", msgError, "ENOENT\x00")
	a.call(msgTransactionEnd, tx, "F\x00", msgTransactionEnd, "OK\x00")

	// A client that disconnects mid-transaction leaves nothing behind.
	c := dialRaw(t, s)
	start(c)
	c.nc.Close()
	deadline := time.Now().Add(2 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.txs)
		s.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d transactions left after disconnect", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServerWatchWire(t *testing.T) {
	s := startServer(t)
	r := dialRaw(t, s)
	// The reply comes first, then the initial event (req_id 0, tx_id 0).
	r.call(msgWatch, 0, "backend\x00tok\x00", msgWatch, "OK\x00")
	ev := r.recv()
	if ev.typ != msgWatchEvent || string(ev.body) != "backend\x00tok\x00" || ev.reqID != 0 {
		t.Fatalf("initial event %s req %d %q", ev.typ, ev.reqID, ev.body)
	}
	s.Set("/local/domain/0/backend/x", "1")
	if ev := r.recv(); string(ev.body) != "backend/x\x00tok\x00" {
		t.Fatalf("event %q", ev.body)
	}
	r.call(msgResetWatches, 0, "\x00", msgResetWatches, "OK\x00")
	r.call(msgUnwatch, 0, "backend\x00tok\x00", msgError, "ENOENT\x00")
	r.call(msgWatch, 0, "a b\x00tok\x00", msgError, "EINVAL\x00")
}

func TestListenAndServe(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "xs.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- ListenAndServe(ctx, sock) }()
	var c *Client
	var err error
	for i := 0; i < 100; i++ {
		if c, err = DialPath(sock); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Write("a", "b"); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := NewServer(filepath.Join(t.TempDir(), string(make([]byte, 120)))); err == nil {
		t.Error("accepted a socket path longer than sun_path")
	}
}
