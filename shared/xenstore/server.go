package xenstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Server is an in-memory xenstored for tests and demos. It speaks the wire
// protocol on a Unix socket, so libxenstore's tools (with XENSTORED_PATH set
// to the socket) and programs under test talk to it as to the real daemon.
//
// Every client is treated as dom0 with full rights: relative paths resolve
// under /local/domain/0/ and permissions are stored but not enforced.
// Transactions work on a snapshot and commit atomically; a commit fails with
// EAGAIN if any node the transaction touched changed meanwhile. Watches fire
// as xenstored's do: once at registration, then for each change at or under
// the watched path (a removed subtree also fires watches set inside it).
//
// The helpers Set, Get, Remove and Dump act on the tree directly; they panic
// on a malformed path, which is a bug in the test calling them.
type Server struct {
	ln   net.Listener
	path string

	mu      sync.Mutex
	st      *store
	gen     uint64
	nextTx  uint32
	txs     map[uint32]*txn
	watches []*watch
	conns   map[*conn]struct{}
	closed  bool

	wg sync.WaitGroup
}

// domainPath is where relative paths resolve: the clients are dom0.
const domainPath = "/local/domain/0"

// NewServer listens on the Unix socket socketPath and serves in the
// background until Close. The tree starts with /local/domain/0.
func NewServer(socketPath string) (*Server, error) {
	if len(socketPath) >= 108 { // sizeof(sockaddr_un.sun_path)
		return nil, fmt.Errorf("xenstore: socket path %s is too long for a Unix socket", socketPath)
	}
	ln, err := net.Listen("unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("xenstore: %w", err)
	}
	s := &Server{ln: ln, path: socketPath, txs: map[uint32]*txn{}, conns: map[*conn]struct{}{}}
	s.st = &store{nodes: map[string]*node{"/": {perms: []string{"n0"}}}, gen: &s.gen}
	s.st.create(domainPath)
	s.st.events = nil
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// ListenAndServe runs a Server on socketPath until ctx is done.
func ListenAndServe(ctx context.Context, socketPath string) error {
	s, err := NewServer(socketPath)
	if err != nil {
		return err
	}
	<-ctx.Done()
	return s.Close()
}

// Path is the socket's path, the value for XENSTORED_PATH.
func (s *Server) Path() string { return s.path }

// Close stops listening, drops every connection and removes the socket.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	err := s.ln.Close()
	for c := range s.conns {
		c.kill()
	}
	s.mu.Unlock()
	s.wg.Wait()
	if err != nil {
		return fmt.Errorf("xenstore: %w", err)
	}
	return nil
}

// Set writes value at path (relative paths resolve under /local/domain/0),
// creating parents, and fires watches like a client's write.
func (s *Server) Set(path, value string) {
	p := mustResolve(path)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.write(p, []byte(value))
	s.fire(s.st.drain())
}

// Remove deletes path and its subtree, firing watches; a missing path is fine.
func (s *Server) Remove(path string) {
	p := mustResolve(path)
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.st.rm(p)
	s.fire(s.st.drain())
}

// Get returns the value at path and whether it exists.
func (s *Server) Get(path string) (string, bool) {
	p := mustResolve(path)
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := s.st.nodes[p]; n != nil {
		return string(n.value), true
	}
	return "", false
}

// Dump returns every node but the root, by absolute path.
func (s *Server) Dump() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]string, len(s.st.nodes))
	for p, n := range s.st.nodes {
		if p != "/" {
			m[p] = string(n.value)
		}
	}
	return m
}

func mustResolve(path string) string {
	p, err := resolve(path)
	if err != nil {
		panic(fmt.Sprintf("xenstore: bad path %q", path))
	}
	return p
}

// resolve validates a path as xenstored does and makes it absolute.
func resolve(path string) (string, error) {
	if path == "" || len(path) > AbsPathMax || (path[0] != '/' && len(path) > RelPathMax) {
		return "", syscall.EINVAL
	}
	if path[0] != '/' {
		path = domainPath + "/" + path
	}
	if len(path) > AbsPathMax || strings.Contains(path, "//") || (path != "/" && strings.HasSuffix(path, "/")) {
		return "", syscall.EINVAL
	}
	for _, r := range path {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/_@-", r)) {
			return "", syscall.EINVAL
		}
	}
	return path, nil
}

func parent(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

func child(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}

// --- the tree ---

// node is immutable once stored, so a transaction's snapshot can share
// nodes with the live tree.
type node struct {
	value    []byte
	children []string // names, in creation order as xenstored keeps them
	perms    []string // e.g. "n0": owner dom0, no access for others
	gen      uint64   // changes whenever value, children or perms change
}

func (n *node) clone() *node {
	c := *n
	c.children = slices.Clone(n.children)
	return &c
}

type change struct {
	path  string
	exact bool // fire only watches on path itself (a node removed with its parent)
}

// store is the live tree, or a transaction's private copy of it.
type store struct {
	nodes  map[string]*node
	gen    *uint64           // the server's generation counter
	seen   map[string]uint64 // transaction only: generation at first touch, 0 if absent
	dirty  map[string]bool   // transaction only: nodes changed
	events []change
}

func (s *store) get(p string) *node {
	n := s.nodes[p]
	if s.seen != nil {
		if _, ok := s.seen[p]; !ok {
			s.seen[p] = genOf(n)
		}
	}
	return n
}

func genOf(n *node) uint64 {
	if n == nil {
		return 0
	}
	return n.gen
}

// put stores n at p (nil deletes).
func (s *store) put(p string, n *node) {
	s.get(p)
	if n == nil {
		delete(s.nodes, p)
	} else {
		*s.gen++
		n.gen = *s.gen
		s.nodes[p] = n
	}
	if s.dirty != nil {
		s.dirty[p] = true
	}
}

func (s *store) drain() []change {
	ev := s.events
	s.events = nil
	return ev
}

// create returns the node at p, creating it and missing parents (empty
// values, the parent's permissions).
func (s *store) create(p string) *node {
	if n := s.get(p); n != nil {
		return n
	}
	dir := parent(p)
	par := s.create(dir).clone()
	par.children = append(par.children, p[strings.LastIndexByte(p, '/')+1:])
	s.put(dir, par)
	n := &node{perms: par.perms}
	s.put(p, n)
	return n
}

func (s *store) write(p string, value []byte) {
	n := s.create(p).clone()
	n.value = value
	s.put(p, n)
	s.events = append(s.events, change{path: p})
}

func (s *store) mkdir(p string) {
	if s.get(p) == nil {
		s.create(p)
		s.events = append(s.events, change{path: p})
	}
}

// rm removes p and its subtree. Like xenstored, a missing node whose parent
// exists is fine; a missing parent is ENOENT.
func (s *store) rm(p string) error {
	if p == "/" {
		return syscall.EINVAL
	}
	n := s.get(p)
	if n == nil {
		if s.get(parent(p)) == nil {
			return syscall.ENOENT
		}
		return nil
	}
	s.removeTree(p, n)
	dir, name := parent(p), p[strings.LastIndexByte(p, '/')+1:]
	par := s.get(dir).clone()
	par.children = slices.DeleteFunc(par.children, func(c string) bool { return c == name })
	s.put(dir, par)
	s.events = append(s.events, change{path: p})
	return nil
}

func (s *store) removeTree(p string, n *node) {
	for _, c := range n.children {
		cp := child(p, c)
		if cn := s.get(cp); cn != nil {
			s.removeTree(cp, cn)
			s.events = append(s.events, change{path: cp, exact: true})
		}
	}
	s.put(p, nil)
}

func (s *store) setPerms(p string, perms []string) error {
	n := s.get(p)
	if n == nil {
		return syscall.ENOENT
	}
	for _, q := range perms {
		if len(q) < 2 || !strings.ContainsRune("nrwb", rune(q[0])) {
			return syscall.EINVAL
		}
		if _, err := strconv.ParseUint(q[1:], 10, 16); err != nil {
			return syscall.EINVAL
		}
	}
	if len(perms) == 0 {
		return syscall.EINVAL
	}
	n = n.clone()
	n.perms = perms
	s.put(p, n)
	s.events = append(s.events, change{path: p})
	return nil
}

// --- transactions and watches ---

type txn struct {
	owner *conn
	st    *store
}

type watch struct {
	owner    *conn
	path     string // absolute, or a special "@..." name
	given    string // as registered
	token    string
	relative bool
}

func (w *watch) matches(ch change) bool {
	if ch.exact {
		return ch.path == w.path
	}
	return ch.path == w.path || w.path == "/" || strings.HasPrefix(ch.path, w.path+"/")
}

// fire sends watch events for changes; s.mu is held.
func (s *Server) fire(changes []change) {
	for _, ch := range changes {
		for _, w := range s.watches {
			if w.matches(ch) {
				p := ch.path
				if w.relative {
					p = strings.TrimPrefix(p, domainPath+"/")
				}
				w.owner.send(message{typ: msgWatchEvent, body: join(p, w.token)})
			}
		}
	}
}

// --- connections ---

type conn struct {
	srv  *Server
	nc   net.Conn
	out  chan []byte
	done chan struct{}
	once sync.Once
}

// outQueue bounds what a connection may have unread; a client that lets
// more pile up is disconnected (xenstored has similar quotas).
const outQueue = 1024

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		c := &conn{srv: s, nc: nc, out: make(chan []byte, outQueue), done: make(chan struct{})}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(2)
		s.mu.Unlock()
		go c.readLoop()
		go c.writeLoop()
	}
}

func (c *conn) kill() {
	c.once.Do(func() {
		close(c.done)
		c.nc.Close()
	})
}

// send queues a frame; s.mu is held by the caller.
func (c *conn) send(m message) {
	frame, err := m.encode()
	if err != nil { // a reply too long for the wire
		frame, _ = message{typ: msgError, reqID: m.reqID, txID: m.txID, body: join("E2BIG")}.encode()
	}
	select {
	case c.out <- frame:
	case <-c.done:
	default:
		c.kill()
	}
}

func (c *conn) writeLoop() {
	defer c.srv.wg.Done()
	for {
		select {
		case f := <-c.out:
			if _, err := c.nc.Write(f); err != nil {
				c.kill()
				return
			}
		case <-c.done:
			return
		}
	}
}

func (c *conn) readLoop() {
	s := c.srv
	defer s.wg.Done()
	defer func() {
		c.kill()
		s.mu.Lock()
		delete(s.conns, c)
		for id, t := range s.txs {
			if t.owner == c {
				delete(s.txs, id)
			}
		}
		s.watches = slices.DeleteFunc(s.watches, func(w *watch) bool { return w.owner == c })
		s.mu.Unlock()
	}()
	for {
		m, err := readMessage(c.nc)
		if err != nil {
			return // EOF, or a frame xenstored would also refuse: drop the client
		}
		s.mu.Lock()
		body, err := s.handle(c, m)
		var reply message
		if err != nil {
			var errno syscall.Errno
			if !errors.As(err, &errno) {
				errno = syscall.EINVAL
			}
			reply = message{typ: msgError, reqID: m.reqID, txID: m.txID, body: join(errnoName(errno))}
		} else {
			reply = message{typ: m.typ, reqID: m.reqID, txID: m.txID, body: body}
		}
		c.send(reply)
		if m.typ == msgWatch && err == nil {
			w := s.watches[len(s.watches)-1]
			c.send(message{typ: msgWatchEvent, body: join(w.given, w.token)}) // the initial event
		}
		s.fire(s.st.drain())
		s.mu.Unlock()
	}
}

var ok = join("OK")

// handle executes one request with s.mu held and returns the reply body.
func (s *Server) handle(c *conn, m message) ([]byte, error) {
	args, valid := split(m.body)
	if m.typ == msgWrite { // path NUL value: the value is raw bytes
		i := bytes.IndexByte(m.body, 0)
		if i < 0 {
			return nil, syscall.EINVAL
		}
		args, valid = []string{string(m.body[:i])}, true
	}
	if !valid || len(args) == 0 {
		return nil, syscall.EINVAL
	}

	st := s.st
	if m.txID != 0 && m.typ != msgWatch && m.typ != msgUnwatch {
		t := s.txs[m.txID]
		if t == nil || t.owner != c {
			return nil, syscall.ENOENT
		}
		if m.typ == msgTransactionStart {
			return nil, syscall.EBUSY
		}
		st = t.st
	}

	switch m.typ {
	case msgTransactionStart:
		s.nextTx++
		if s.nextTx == 0 {
			s.nextTx = 1
		}
		s.txs[s.nextTx] = &txn{owner: c, st: &store{
			nodes: maps.Clone(s.st.nodes), gen: &s.gen, seen: map[string]uint64{}, dirty: map[string]bool{},
		}}
		return join(strconv.FormatUint(uint64(s.nextTx), 10)), nil
	case msgTransactionEnd:
		return s.endTx(m.txID, args[0])
	case msgGetDomainPath:
		id, err := strconv.ParseUint(args[0], 10, 16)
		if err != nil {
			return nil, syscall.EINVAL
		}
		return join("/local/domain/" + strconv.FormatUint(id, 10)), nil
	case msgWatch, msgUnwatch:
		if len(args) < 2 {
			return nil, syscall.EINVAL
		}
		return s.watch(c, m.typ, args[0], args[1])
	case msgResetWatches:
		s.watches = slices.DeleteFunc(s.watches, func(w *watch) bool { return w.owner == c })
		return ok, nil
	}

	switch m.typ { // the rest operate on a node
	case msgRead, msgWrite, msgMkdir, msgRm, msgDirectory, msgDirectoryPart, msgGetPerms, msgSetPerms:
	default:
		return nil, syscall.ENOSYS // as xenstored answers unknown or unsupported types
	}
	p, err := resolve(args[0])
	if err != nil {
		return nil, err
	}
	switch m.typ {
	case msgRead:
		if n := st.get(p); n != nil {
			return n.value, nil
		}
		return nil, syscall.ENOENT
	case msgWrite:
		st.write(p, m.body[len(args[0])+1:])
		return ok, nil
	case msgMkdir:
		st.mkdir(p)
		return ok, nil
	case msgRm:
		if err := st.rm(p); err != nil {
			return nil, err
		}
		return ok, nil
	case msgDirectory:
		n := st.get(p)
		if n == nil {
			return nil, syscall.ENOENT
		}
		return join(n.children...), nil
	case msgDirectoryPart:
		return directoryPart(st.get(p), args)
	case msgGetPerms:
		if n := st.get(p); n != nil {
			return join(n.perms...), nil
		}
		return nil, syscall.ENOENT
	case msgSetPerms:
		if err := st.setPerms(p, args[1:]); err != nil {
			return nil, err
		}
	}
	return ok, nil
}

// directoryPart answers XS_DIRECTORY_PART as xenstored does: the node's
// generation, then as many whole names from the byte offset as fit, then an
// empty name once the list is complete.
func directoryPart(n *node, args []string) ([]byte, error) {
	if n == nil {
		return nil, syscall.ENOENT
	}
	if len(args) < 2 {
		return nil, syscall.EINVAL
	}
	off, err := strconv.Atoi(args[1])
	all := join(n.children...)
	if err != nil || off < 0 || off > len(all) {
		return nil, syscall.EINVAL
	}
	out := join(strconv.FormatUint(n.gen, 10))
	rest, max := all[off:], PayloadMax-len(out)-1
	end := 0
	for end < len(rest) {
		next := end + bytes.IndexByte(rest[end:], 0) + 1
		if next > max {
			break
		}
		end = next
	}
	out = append(out, rest[:end]...)
	if end == len(rest) {
		out = append(out, 0)
	}
	return out, nil
}

func (s *Server) endTx(id uint32, arg string) ([]byte, error) {
	t := s.txs[id]
	if id == 0 || t == nil {
		return nil, syscall.ENOENT
	}
	if arg != "T" && arg != "F" {
		return nil, syscall.EINVAL
	}
	delete(s.txs, id)
	if arg == "F" {
		return ok, nil
	}
	for p, g := range t.st.seen {
		if genOf(s.st.nodes[p]) != g {
			return nil, syscall.EAGAIN
		}
	}
	for p := range t.st.dirty {
		if n := t.st.nodes[p]; n != nil {
			s.st.nodes[p] = n
		} else {
			delete(s.st.nodes, p)
		}
	}
	s.fire(t.st.drain())
	return ok, nil
}

func (s *Server) watch(c *conn, typ msgType, path, token string) ([]byte, error) {
	w := &watch{owner: c, path: path, given: path, token: token}
	if !strings.HasPrefix(path, "@") {
		p, err := resolve(path)
		if err != nil {
			return nil, err
		}
		w.path, w.relative = p, path[0] != '/'
	}
	i := slices.IndexFunc(s.watches, func(o *watch) bool { return o.owner == c && o.path == w.path && o.token == token })
	if typ == msgUnwatch {
		if i < 0 {
			return nil, syscall.ENOENT
		}
		s.watches = slices.Delete(s.watches, i, i+1)
		return ok, nil
	}
	if i >= 0 {
		return nil, syscall.EEXIST
	}
	s.watches = append(s.watches, w)
	return ok, nil
}
