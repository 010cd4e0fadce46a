// Package xenstore is a client for Xen's xenstore, speaking the wire protocol
// of xs_wire.h directly (as libxenstore and the xenstore-read/-write tools
// do), plus an in-memory server double for tests.
//
// Paths: an absolute path ("/local/domain/0/backend/vif/1/0/mac") is used as
// is. A relative path ("backend/vif/1/0/mac", the form libxl puts in
// XENBUS_PATH) is sent unchanged and xenstored resolves it under the caller's
// domain path, /local/domain/0/ for dom0.
//
// Every call is bounded by the client's timeout (DefaultTimeout unless
// SetTimeout says otherwise), so a hung xenstored makes a hotplug script fail
// with an error well before Xen kills it. A call that times out leaves the
// stream in an unknown state, so the client closes itself; open a new one to
// go on.
package xenstore

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultTimeout bounds each request; Xen kills a hotplug script after 40 s.
const DefaultTimeout = 10 * time.Second

// ErrNotFound is what errors.Is matches for a path that does not exist
// (xenstored's ENOENT). errors.Is(err, fs.ErrNotExist) matches too.
var ErrNotFound error = syscall.ENOENT

// ErrClosed is wrapped by the errors of calls on a closed client, including
// one closed after a timeout.
var ErrClosed = errors.New("connection closed")

// Error is an error answered by xenstored (an XS_ERROR message).
type Error struct {
	Op    string        // "read", "write", ...
	Path  string        // as given by the caller
	Name  string        // the errno name on the wire, e.g. "ENOENT"
	Errno syscall.Errno // Name as an errno (EINVAL for unknown names)
}

func (e *Error) Error() string { return fmt.Sprintf("xenstore: %s %s: %s", e.Op, e.Path, e.Name) }
func (e *Error) Unwrap() error { return e.Errno }

// WatchEvent is a fired watch: the path that changed (relative if the watch
// was registered with a relative path) and the watch's token.
type WatchEvent struct {
	Path  string
	Token string
}

// Client is a connection to xenstored. It is safe for concurrent use;
// requests are serialised, one outstanding at a time.
type Client struct {
	conn    io.ReadWriteCloser
	timeout time.Duration

	mu      sync.Mutex // serialises requests; guards reqID and timeout
	reqID   uint32
	replies chan message

	dead    chan struct{} // closed when the reader stops
	deadErr error         // why, readable once dead is closed
	close   sync.Once
	closed  atomic.Bool // set before the connection is closed

	evMu   sync.Mutex
	events []WatchEvent
	evSig  chan struct{} // one token when events is non-empty
}

// Dial connects the way libxenstore's xs_open does: the Unix socket named by
// XENSTORED_PATH, else $XENSTORED_RUNDIR/socket (default /var/run/xenstored),
// else the xenbus device (XENSTORED_PATH, else /dev/xen/xenbus, else
// /proc/xen/xenbus).
func Dial() (*Client, error) {
	var errs []string
	for _, p := range candidates() {
		c, err := DialPath(p)
		if err == nil {
			return c, nil
		}
		errs = append(errs, strings.TrimPrefix(err.Error(), "xenstore: "))
	}
	return nil, fmt.Errorf("xenstore: no xenstored reachable: %s", strings.Join(errs, "; "))
}

func candidates() []string {
	if p := os.Getenv("XENSTORED_PATH"); p != "" {
		return []string{p}
	}
	rundir := os.Getenv("XENSTORED_RUNDIR")
	if rundir == "" {
		rundir = "/var/run/xenstored"
	}
	dev := "/dev/xen/xenbus"
	if _, err := os.Stat(dev); err != nil {
		dev = "/proc/xen/xenbus"
	}
	return []string{rundir + "/socket", dev}
}

// DialPath connects to path: a Unix socket is dialled, anything else (the
// xenbus character device) is opened read-write; both carry the same protocol.
func DialPath(path string) (*Client, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("xenstore: %w", err)
	}
	var conn io.ReadWriteCloser
	if fi.Mode()&os.ModeSocket != 0 {
		conn, err = net.DialTimeout("unix", path, DefaultTimeout)
	} else {
		conn, err = os.OpenFile(path, os.O_RDWR, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("xenstore: %w", err)
	}
	return newClient(conn), nil
}

func newClient(conn io.ReadWriteCloser) *Client {
	c := &Client{
		conn:    conn,
		timeout: DefaultTimeout,
		replies: make(chan message, 1),
		dead:    make(chan struct{}),
		evSig:   make(chan struct{}, 1),
	}
	go c.readLoop()
	return c
}

// SetTimeout sets the bound on each later request (d <= 0: DefaultTimeout).
func (c *Client) SetTimeout(d time.Duration) {
	if d <= 0 {
		d = DefaultTimeout
	}
	c.mu.Lock()
	c.timeout = d
	c.mu.Unlock()
}

// Close closes the connection; xenstored drops its watches and aborts its
// open transactions. Closing twice is harmless.
func (c *Client) Close() error {
	if err := c.shutdown(); err != nil {
		return fmt.Errorf("xenstore: close: %w", err)
	}
	return nil
}

// readLoop owns reading: replies go to the waiting request, watch events to
// the event queue.
func (c *Client) readLoop() {
	defer close(c.dead)
	for {
		m, err := readMessage(c.conn)
		if err != nil {
			switch {
			case errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrClosed):
				err = ErrClosed // closed on this side
			case errors.Is(err, io.EOF):
				err = fmt.Errorf("xenstored hung up: %w", ErrClosed)
			default:
				err = fmt.Errorf("connection lost: %w", err)
			}
			c.deadErr = err
			c.shutdown()
			return
		}
		if m.typ == msgWatchEvent {
			c.queueEvent(m.body)
			continue
		}
		select {
		case c.replies <- m:
		default: // a second unsolicited reply: the first already fails the next request
		}
	}
}

// request sends one message and waits for its reply, within the timeout.
func (c *Client) request(op string, typ msgType, tx uint32, path string, body []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.dead:
		return nil, fmt.Errorf("xenstore: %s %s: %w", op, path, c.deadErr)
	default:
		if c.closed.Load() {
			return nil, fmt.Errorf("xenstore: %s %s: %w", op, path, ErrClosed)
		}
	}
	c.reqID++
	frame, err := message{typ: typ, reqID: c.reqID, txID: tx, body: body}.encode()
	if err != nil {
		return nil, fmt.Errorf("xenstore: %s %s: %w", op, path, err)
	}
	deadline := time.Now().Add(c.timeout)
	if d, ok := c.conn.(interface{ SetWriteDeadline(time.Time) error }); ok {
		_ = d.SetWriteDeadline(deadline) // not every device file supports it; the reply wait is bounded anyway
	}
	if _, err := c.conn.Write(frame); err != nil {
		c.shutdown()
		return nil, fmt.Errorf("xenstore: %s %s: %w", op, path, err)
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case m := <-c.replies:
		if m.reqID != c.reqID || (m.typ != typ && m.typ != msgError) {
			c.shutdown()
			return nil, fmt.Errorf("xenstore: %s %s: protocol error: got %s reply with req_id %d for req_id %d", op, path, m.typ, m.reqID, c.reqID)
		}
		if m.typ == msgError {
			name := strings.TrimRight(string(m.body), "\x00")
			return nil, &Error{Op: op, Path: path, Name: name, Errno: errnoFromName(name)}
		}
		return m.body, nil
	case <-c.dead:
		return nil, fmt.Errorf("xenstore: %s %s: %w", op, path, c.deadErr)
	case <-timer.C:
		c.shutdown()
		return nil, fmt.Errorf("xenstore: %s %s: no answer from xenstored within %v: %w", op, path, c.timeout, os.ErrDeadlineExceeded)
	}
}

// shutdown closes the connection once; later requests fail with ErrClosed.
// It is also how a request gives up on a stream whose state is unknown.
func (c *Client) shutdown() error {
	var err error
	c.close.Do(func() {
		c.closed.Store(true)
		err = c.conn.Close()
	})
	return err
}

// --- operations, shared by Client (tx 0) and Tx ---

func (c *Client) read(tx uint32, path string) (string, error) {
	if err := checkPath(path); err != nil {
		return "", fmt.Errorf("xenstore: read %q: %w", path, err)
	}
	v, err := c.request("read", msgRead, tx, path, join(path))
	return string(v), err
}

func (c *Client) write(tx uint32, path, value string) error {
	if err := checkPath(path); err != nil {
		return fmt.Errorf("xenstore: write %q: %w", path, err)
	}
	if n := len(path) + 1 + len(value); n > PayloadMax {
		return fmt.Errorf("xenstore: write %s: path and value of %d bytes exceed %d: %w", path, n, PayloadMax, syscall.E2BIG)
	}
	_, err := c.request("write", msgWrite, tx, path, append(join(path), value...))
	return err
}

func (c *Client) simple(op string, typ msgType, tx uint32, path string) error {
	if err := checkPath(path); err != nil {
		return fmt.Errorf("xenstore: %s %q: %w", op, path, err)
	}
	_, err := c.request(op, typ, tx, path, join(path))
	return err
}

func (c *Client) rm(tx uint32, path string) error {
	if err := c.simple("rm", msgRm, tx, path); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return nil
}

func (c *Client) list(tx uint32, path string) ([]string, error) {
	if err := checkPath(path); err != nil {
		return nil, fmt.Errorf("xenstore: list %q: %w", path, err)
	}
	body, err := c.request("list", msgDirectory, tx, path, join(path))
	if errors.Is(err, syscall.E2BIG) { // too many children for one message
		return c.listParts(tx, path)
	}
	if err != nil {
		return nil, err
	}
	names, ok := split(body)
	if !ok {
		return nil, fmt.Errorf("xenstore: list %s: malformed reply", path)
	}
	return names, nil
}

// listParts reads a long directory with XS_DIRECTORY_PART, as libxenstore
// does: each reply is the node's generation, then the names from the offset;
// a trailing empty name marks the end. A changed generation restarts.
func (c *Client) listParts(tx uint32, path string) ([]string, error) {
	var all []byte
	gen := ""
	for attempt := 0; attempt < 64; {
		body, err := c.request("list", msgDirectoryPart, tx, path, join(path, strconv.Itoa(len(all))))
		if err != nil {
			return nil, err
		}
		g, rest, ok := strings.Cut(string(body), "\x00")
		if !ok {
			return nil, fmt.Errorf("xenstore: list %s: malformed reply", path)
		}
		if len(all) > 0 && g != gen {
			all, attempt = nil, attempt+1
			continue
		}
		gen = g
		all = append(all, rest...)
		if len(all) <= 1 || all[len(all)-2] == 0 {
			break
		}
		if len(rest) == 0 {
			return nil, fmt.Errorf("xenstore: list %s: malformed reply", path)
		}
	}
	if len(all) <= 1 {
		return nil, nil
	}
	names, ok := split(all[:len(all)-1])
	if !ok {
		return nil, fmt.Errorf("xenstore: list %s: malformed reply", path)
	}
	return names, nil
}

func (c *Client) exists(tx uint32, path string) (bool, error) {
	_, err := c.read(tx, path)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Read returns the value at path; a missing path is an error matching ErrNotFound.
func (c *Client) Read(path string) (string, error) { return c.read(0, path) }

// Write sets path to value, creating missing parents.
func (c *Client) Write(path, value string) error { return c.write(0, path, value) }

// Mkdir creates path (and parents) with an empty value; an existing path is fine.
func (c *Client) Mkdir(path string) error { return c.simple("mkdir", msgMkdir, 0, path) }

// Rm removes path and everything under it; a missing path is not an error.
func (c *Client) Rm(path string) error { return c.rm(0, path) }

// List returns the names of path's children.
func (c *Client) List(path string) ([]string, error) { return c.list(0, path) }

// Exists reports whether path exists.
func (c *Client) Exists(path string) (bool, error) { return c.exists(0, path) }

// DomainPath returns the home path of a domain, e.g. "/local/domain/3".
func (c *Client) DomainPath(domid uint32) (string, error) {
	id := strconv.FormatUint(uint64(domid), 10)
	v, err := c.request("get-domain-path", msgGetDomainPath, 0, id, join(id))
	return strings.TrimRight(string(v), "\x00"), err
}

// --- transactions ---

// MaxTransactionAttempts bounds how often Transaction runs fn when xenstored
// answers EAGAIN (another writer touched what the transaction used).
const MaxTransactionAttempts = 16

// Tx is an open transaction: its reads see one consistent snapshot and its
// writes land together when it commits, or not at all.
type Tx struct {
	c  *Client
	id uint32
}

// Transaction runs fn in a transaction and commits it. If xenstored answers
// EAGAIN (a conflict), fn runs again, up to MaxTransactionAttempts times, so
// fn must have no effects outside tx. If fn fails the transaction is aborted
// and fn's error returned.
func (c *Client) Transaction(fn func(tx *Tx) error) error {
	var err error
	for attempt := 1; attempt <= MaxTransactionAttempts; attempt++ {
		if attempt > 1 {
			time.Sleep(time.Duration(attempt) * time.Millisecond)
		}
		var tx *Tx
		if tx, err = c.begin(); err != nil {
			return err
		}
		if err = fn(tx); err != nil {
			_ = tx.end(false) // best effort: fn's error is the one that matters
			if errors.Is(err, syscall.EAGAIN) {
				continue
			}
			return err
		}
		if err = tx.end(true); !errors.Is(err, syscall.EAGAIN) {
			return err
		}
	}
	return fmt.Errorf("xenstore: transaction still conflicting after %d attempts: %w", MaxTransactionAttempts, err)
}

func (c *Client) begin() (*Tx, error) {
	body, err := c.request("transaction-start", msgTransactionStart, 0, "", join(""))
	if err != nil {
		return nil, err
	}
	// libxenstore parses with strtoul(s, NULL, 0); xenstored sends decimal.
	id, err := strconv.ParseUint(strings.TrimRight(string(body), "\x00"), 0, 32)
	if err != nil || id == 0 {
		return nil, fmt.Errorf("xenstore: transaction-start: bad transaction id %q", body)
	}
	return &Tx{c: c, id: uint32(id)}, nil
}

func (t *Tx) end(commit bool) error {
	arg := "F"
	if commit {
		arg = "T"
	}
	_, err := t.c.request("transaction-end", msgTransactionEnd, t.id, arg, join(arg))
	return err
}

// Read is Client.Read inside the transaction.
func (t *Tx) Read(path string) (string, error) { return t.c.read(t.id, path) }

// Write is Client.Write inside the transaction.
func (t *Tx) Write(path, value string) error { return t.c.write(t.id, path, value) }

// Mkdir is Client.Mkdir inside the transaction.
func (t *Tx) Mkdir(path string) error { return t.c.simple("mkdir", msgMkdir, t.id, path) }

// Rm is Client.Rm inside the transaction.
func (t *Tx) Rm(path string) error { return t.c.rm(t.id, path) }

// List is Client.List inside the transaction.
func (t *Tx) List(path string) ([]string, error) { return t.c.list(t.id, path) }

// Exists is Client.Exists inside the transaction.
func (t *Tx) Exists(path string) (bool, error) { return t.c.exists(t.id, path) }

// --- watches ---

// Watch asks xenstored to report changes to path and everything under it,
// tagged with token. xenstored fires once at registration. Events are read
// with NextEvent.
func (c *Client) Watch(path, token string) error {
	if err := checkPath(path); err != nil {
		return fmt.Errorf("xenstore: watch %q: %w", path, err)
	}
	_, err := c.request("watch", msgWatch, 0, path, join(path, token))
	return err
}

// Unwatch removes a watch registered with the same path and token.
func (c *Client) Unwatch(path, token string) error {
	_, err := c.request("unwatch", msgUnwatch, 0, path, join(path, token))
	return err
}

func (c *Client) queueEvent(body []byte) {
	strs, ok := split(body)
	if !ok || len(strs) < 2 {
		return // malformed; libxenstore would assert
	}
	c.evMu.Lock()
	c.events = append(c.events, WatchEvent{Path: strs[0], Token: strs[1]})
	c.evMu.Unlock()
	select {
	case c.evSig <- struct{}{}:
	default:
	}
}

// NextEvent returns the oldest unread watch event, waiting at most timeout.
func (c *Client) NextEvent(timeout time.Duration) (WatchEvent, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		c.evMu.Lock()
		if len(c.events) > 0 {
			ev := c.events[0]
			c.events = c.events[1:]
			if len(c.events) > 0 {
				select {
				case c.evSig <- struct{}{}:
				default:
				}
			}
			c.evMu.Unlock()
			return ev, nil
		}
		c.evMu.Unlock()
		select {
		case <-c.evSig:
		case <-c.dead:
			return WatchEvent{}, fmt.Errorf("xenstore: watch event: %w", c.deadErr)
		case <-timer.C:
			return WatchEvent{}, fmt.Errorf("xenstore: no watch event within %v: %w", timeout, os.ErrDeadlineExceeded)
		}
	}
}
