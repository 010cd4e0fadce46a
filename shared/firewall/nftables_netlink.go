package firewall

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync/atomic"
	"syscall"

	gnftables "github.com/google/nftables"
)

// Set and map elements over netlink (github.com/google/nftables): one
// connection per operation, changes queued and sent as one batch that the
// kernel applies all or nothing. The port guards (nftables_ports.go), the
// published ports (nftables_forwards.go) and resyncs (resync.go) share it.

// nftPortOp is what syncPort needs from netlink (a *gnftables.Conn; tests may fake it).
type nftPortOp interface {
	ListTables() ([]*gnftables.Table, error)
	GetSetElements(s *gnftables.Set) ([]gnftables.SetElement, error)
	SetAddElements(s *gnftables.Set, vals []gnftables.SetElement) error
	SetDeleteElements(s *gnftables.Set, vals []gnftables.SetElement) error
	Flush() error
}

// nftSetDumps counts the set and map element dumps of this package (every
// read of a whole set goes through dumpSet): a test hook, to check that
// operations with a correct hint read no set, so that their cost does not
// grow with the number of guests.
var nftSetDumps atomic.Int64

func dumpSet(conn interface {
	GetSetElements(*gnftables.Set) ([]gnftables.SetElement, error)
}, s *gnftables.Set) ([]gnftables.SetElement, error) {
	nftSetDumps.Add(1)
	return conn.GetSetElements(s)
}

// nlOpen opens the one netlink connection of an operation; nlClose closes it.
//
// Every operation opens one connection and closes it once, at its end (retries
// and the fallback from a hint to reading the kernel reuse it), because
// closing costs: when nf_tables has destroy work pending, as it has right
// after a batch that deleted set elements, rules or tables, close() of an
// nfnetlink socket blocks for about 10 ms. The kernel's NETLINK_URELEASE
// handler (nft_rcv_nl_event) flushes nf_tables' destroy work, which waits for
// an RCU grace period. A batch that only adds elements leaves no such work.
func nlOpen() (*gnftables.Conn, error) {
	conn, err := gnftables.New(gnftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	return conn, nil
}

// nlClose closes an operation's connection without waiting (see nlOpen for
// why close can block): the close runs on its own goroutine, and the
// operation returns (and its caller releases the network's lock) while the
// kernel finishes. A process that exits meanwhile still waits for the rest
// of that grace period in exit, once, after everything else it did.
func nlClose(conn *gnftables.Conn) { go conn.CloseLasting() }

// connBroken reports whether a failed batch leaves the connection unusable
// (the library returns before reading every acknowledgement) or is not the
// kernel disagreeing with what we asked.
func connBroken(err error) bool {
	var q queueError
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, os.ErrPermission) || errors.As(err, &q)
}

// setChange is one queued change of a set's (or map's) elements.
type setChange struct {
	set   *gnftables.Set
	del   bool
	elems []gnftables.SetElement
}

// setOp is what queue needs from a connection.
type setOp interface {
	SetAddElements(*gnftables.Set, []gnftables.SetElement) error
	SetDeleteElements(*gnftables.Set, []gnftables.SetElement) error
	Flush() error
}

// queue queues changes on conn, in order, without sending them.
func queue(conn setOp, changes []setChange) error {
	for _, c := range changes {
		var err error
		if c.del {
			err = conn.SetDeleteElements(c.set, c.elems)
		} else {
			err = conn.SetAddElements(c.set, c.elems)
		}
		if err != nil {
			// Earlier changes may be queued: the connection must not send another batch.
			return queueError{err}
		}
	}
	return nil
}

// queueError is a change that could not be queued (a marshalling error).
type queueError struct{ error }

func (e queueError) Unwrap() error { return e.error }

// apply queues changes on conn and sends them as one batch: one nf_tables
// transaction, so packets see the old entries or the new ones.
func apply(conn setOp, changes []setChange) error {
	if err := queue(conn, changes); err != nil {
		return err
	}
	return conn.Flush()
}

// keyChanges returns the changes of one set from the keys in old to those in
// want: only the difference, so that an unchanged port costs no transaction
// at all (and the kernel's commit is slower when it deletes something). Adds
// carry no NLM_F_EXCL: a key that is already there is fine.
func keyChanges(s *gnftables.Set, old, want [][]byte) []setChange {
	var del, add []gnftables.SetElement
	for _, k := range old {
		if !slices.ContainsFunc(want, func(w []byte) bool { return bytes.Equal(w, k) }) {
			del = append(del, gnftables.SetElement{Key: k})
		}
	}
	for _, k := range want {
		if !slices.ContainsFunc(old, func(o []byte) bool { return bytes.Equal(o, k) }) {
			add = append(add, gnftables.SetElement{Key: k})
		}
	}
	var out []setChange
	if len(del) > 0 {
		out = append(out, setChange{set: s, del: true, elems: del})
	}
	if len(add) > 0 {
		out = append(out, setChange{set: s, elems: add})
	}
	return out
}

// applyUnlessMissing ends a plan: with tables missing (to be created first)
// it changes nothing and returns them; else it sends the changes, if any.
func applyUnlessMissing(conn setOp, missing []nftPortTable, changes []setChange) ([]nftPortTable, error) {
	if len(missing) > 0 {
		return missing, nil
	}
	if len(changes) == 0 {
		return nil, nil
	}
	return nil, apply(conn, changes)
}
