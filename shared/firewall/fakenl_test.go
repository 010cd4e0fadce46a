package firewall

import (
	"bytes"
	"fmt"
	"maps"
	"math/bits"
	"slices"
	"strings"
	"syscall"
	"testing"

	gnftables "github.com/google/nftables"

	"github.com/brouter/brouter/shared/state"
)

// fakeNL is an in-memory nftFwdOp (and nftPortOp) with the kernel's
// semantics where the code relies on them: a batch (Flush) is all or nothing;
// deleting an element, object or table that is not there fails with ENOENT;
// adding an element whose key exists with another value fails with EEXIST
// (the same value: nothing happens, as without NLM_F_EXCL); adding an object
// that exists is fine. ListTables reports each table's use count (chains, sets,
// objects) the way google/nftables v0.3.0 decodes it on a little-endian host.
type fakeNL struct {
	tables map[string]*fakeTable // "family name"
	queued []func(map[string]*fakeTable) error
	failOn error // every Flush fails with it, changing nothing
	lists  int   // ListTables calls
}

type fakeElem struct {
	key, val []byte
	comment  string
}

type fakeTable struct {
	sets   map[string][]fakeElem
	objs   map[string]bool
	chains int
}

func (t *fakeTable) clone() *fakeTable {
	c := &fakeTable{sets: map[string][]fakeElem{}, objs: maps.Clone(t.objs), chains: t.chains}
	for s, l := range t.sets {
		c.sets[s] = slices.Clone(l)
	}
	return c
}

func newFakeNL() *fakeNL { return &fakeNL{tables: map[string]*fakeTable{}} }

var fakeFamilies = map[gnftables.TableFamily]string{gnftables.TableFamilyBridge: "bridge", gnftables.TableFamilyINet: "inet", gnftables.TableFamilyARP: "arp"}

func fkey(f gnftables.TableFamily, name string) string { return fakeFamilies[f] + " " + name }

func (f *fakeNL) ListTables() ([]*gnftables.Table, error) {
	f.lists++
	var out []*gnftables.Table
	for _, k := range sortedKeys(f.tables) {
		fam, name, _ := strings.Cut(k, " ")
		t := f.tables[k]
		use := uint32(t.chains + len(t.sets) + len(t.objs))
		for nl, s := range fakeFamilies {
			if s == fam {
				out = append(out, &gnftables.Table{Family: nl, Name: name, Use: bits.ReverseBytes32(use)})
			}
		}
	}
	return out, nil
}

func (f *fakeNL) GetSetElements(s *gnftables.Set) ([]gnftables.SetElement, error) {
	t, ok := f.tables[fkey(s.Table.Family, s.Table.Name)]
	if !ok {
		return nil, syscall.ENOENT
	}
	elems, ok := t.sets[s.Name]
	if !ok {
		return nil, syscall.ENOENT
	}
	var out []gnftables.SetElement
	for _, e := range elems {
		out = append(out, gnftables.SetElement{Key: e.key, Val: e.val, Comment: e.comment})
	}
	return out, nil
}

// op queues a change of the table t (which must exist when the batch runs).
func (f *fakeNL) op(tf gnftables.TableFamily, name string, fn func(t *fakeTable) error) {
	k := fkey(tf, name)
	f.queued = append(f.queued, func(tables map[string]*fakeTable) error {
		t, ok := tables[k]
		if !ok {
			return syscall.ENOENT
		}
		return fn(t)
	})
}

func (f *fakeNL) SetAddElements(s *gnftables.Set, vals []gnftables.SetElement) error {
	f.op(s.Table.Family, s.Table.Name, func(t *fakeTable) error {
		l, ok := t.sets[s.Name]
		if !ok {
			return syscall.ENOENT
		}
		for _, v := range vals {
			i := slices.IndexFunc(l, func(e fakeElem) bool { return bytes.Equal(e.key, v.Key) })
			switch {
			case i < 0:
				l = append(l, fakeElem{key: v.Key, val: v.Val, comment: v.Comment})
			case !bytes.Equal(l[i].val, v.Val):
				return syscall.EEXIST
			}
		}
		t.sets[s.Name] = l
		return nil
	})
	return nil
}

func (f *fakeNL) SetDeleteElements(s *gnftables.Set, vals []gnftables.SetElement) error {
	f.op(s.Table.Family, s.Table.Name, func(t *fakeTable) error {
		l, ok := t.sets[s.Name]
		if !ok {
			return syscall.ENOENT
		}
		for _, v := range vals {
			i := slices.IndexFunc(l, func(e fakeElem) bool { return bytes.Equal(e.key, v.Key) })
			if i < 0 {
				return syscall.ENOENT
			}
			l = slices.Delete(l, i, i+1)
		}
		t.sets[s.Name] = l
		return nil
	})
	return nil
}

func objName(o gnftables.Obj) (*gnftables.Table, string) {
	c := o.(*gnftables.CounterObj)
	return c.Table, c.Name
}

func (f *fakeNL) AddObj(o gnftables.Obj) gnftables.Obj {
	tb, name := objName(o)
	f.op(tb.Family, tb.Name, func(t *fakeTable) error { t.objs[name] = true; return nil })
	return o
}

func (f *fakeNL) DeleteObject(o gnftables.Obj) {
	tb, name := objName(o)
	f.op(tb.Family, tb.Name, func(t *fakeTable) error {
		if !t.objs[name] {
			return syscall.ENOENT
		}
		delete(t.objs, name)
		return nil
	})
}

func (f *fakeNL) DelTable(tb *gnftables.Table) {
	k := fkey(tb.Family, tb.Name)
	f.queued = append(f.queued, func(tables map[string]*fakeTable) error {
		if _, ok := tables[k]; !ok {
			return syscall.ENOENT
		}
		delete(tables, k)
		return nil
	})
}

func (f *fakeNL) Flush() error {
	q := f.queued
	f.queued = nil
	if f.failOn != nil {
		return f.failOn
	}
	next := map[string]*fakeTable{}
	for k, t := range f.tables {
		next[k] = t.clone()
	}
	for _, op := range q {
		if err := op(next); err != nil {
			return fmt.Errorf("conn.Receive: %w", err)
		}
	}
	f.tables = next
	return nil
}

// create makes port tables, as setupPortTables would.
func (f *fakeNL) create(tables []nftPortTable) {
	for _, t := range tables {
		k := fkey(t.nl, t.name)
		if f.tables[k] == nil {
			f.tables[k] = &fakeTable{sets: map[string][]fakeElem{}, objs: map[string]bool{}, chains: len(t.chains())}
		}
		for _, s := range t.sets {
			if _, ok := f.tables[k].sets[s]; !ok {
				f.tables[k].sets[s] = nil
			}
		}
	}
}

// createFwd makes network's published-ports table, as setupFwdTable would.
func (f *fakeNL) createFwd(network string) {
	t := &fakeTable{sets: map[string][]fakeElem{}, objs: map[string]bool{}, chains: len(nftFwdChains("br0", nil))}
	for _, m := range nftFwdMaps {
		t.sets[m] = nil
	}
	f.tables[fkey(gnftables.TableFamilyINet, nftFwdTableName(network))] = t
}

// dump renders the fake's elements (as nft prints port set keys, or as
// List prints published ports) and objects, sorted.
func (f *fakeNL) dump() []string {
	var out []string
	for tk, t := range f.tables {
		out = append(out, tk)
		for s, elems := range t.sets {
			for _, e := range elems {
				if fw, err := forwardFromElement(s, e.key, e.val); err == nil && strings.HasSuffix(tk, ".fwd") {
					out = append(out, tk+" "+s+" "+ForwardLine(e.comment, fw))
				} else if strings.HasPrefix(s, "own") {
					owner, _, _ := bytes.Cut(e.val, []byte{0})
					vlen := 8
					if strings.HasPrefix(s, "own6") {
						vlen = 20
					}
					fw, err := forwardFromElement("fwd"+strings.TrimPrefix(s, "own"), e.key, make([]byte, vlen))
					if err != nil {
						panic(err)
					}
					out = append(out, tk+" "+s+" "+fw.published()+" : "+string(owner))
				} else {
					out = append(out, tk+" "+s+" "+describeKey(s, e.key))
				}
			}
		}
		for o := range t.objs {
			out = append(out, tk+" counter "+o)
		}
	}
	slices.Sort(out)
	return out
}

// testRecords is a record store of the test's own, for a backend's records
// of what it installed (installed.go).
func testRecords(t testing.TB) Records { return state.NewVolatile(t.TempDir()) }
