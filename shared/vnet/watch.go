package vnet

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/brouter/brouter/shared/config"
	"github.com/brouter/brouter/shared/firewall"
	"github.com/brouter/brouter/shared/link"
)

// Watch timing: changes are gathered for settle before a reconcile (a
// firewall reload is a burst of events); iptables-legacy, which sends no
// notifications, is polled every poll.
const (
	watchSettle = 100 * time.Millisecond
	watchPoll   = time.Second
)

// Watch keeps the running networks as their records say until ctx ends
// (network-virtual watch, run by systemd): it reconciles every running
// network at once, then again whenever nf_tables reports a deletion in a
// network's tables or a change of iptables' tables, whenever a link that is
// a network's bridge or a recorded port disappears, and every second for
// networks whose rules are in iptables-legacy (which sends no
// notifications). load reads the host config, again for every reconcile, so
// that config changes apply. logf gets one line per repair. Its own repairs
// cause events too; the reconcile that follows finds nothing missing and
// changes nothing, so it never loops on itself.
func Watch(ctx context.Context, load func() (*config.Config, error), logf func(format string, a ...any)) error {
	w := &watcher{load: load, logf: logf, dirty: map[string]bool{}}
	return w.run(ctx)
}

type watcher struct {
	load  func() (*config.Config, error)
	logf  func(format string, a ...any)
	dirty map[string]bool // networks to reconcile; "" = all
	poll  bool            // some running network has iptables-legacy rules
}

func (w *watcher) run(ctx context.Context) error {
	fwCh, linkCh, err := w.subscribe(ctx, nil, nil)
	if err != nil {
		return err
	}
	w.dirty[""] = true
	settle := time.NewTimer(0)
	ticker := time.NewTicker(watchPoll)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case c, ok := <-fwCh:
			if !ok || c.Overflow {
				w.logf("firewall notifications lost (overflow or closed); subscribing again and checking every network")
				if fwCh, linkCh, err = w.subscribe(ctx, nil, linkCh); err != nil {
					return err
				}
				c.Network = ""
			}
			w.mark(c.Network, settle)
		case name, ok := <-linkCh:
			if !ok {
				w.logf("link notifications lost; subscribing again and checking every network")
				if fwCh, linkCh, err = w.subscribe(ctx, fwCh, nil); err != nil {
					return err
				}
				name = ""
			}
			w.mark(w.networkOfLink(name), settle)
		case <-ticker.C:
			if w.poll {
				w.mark("", settle)
			}
		case <-settle.C:
			w.reconcile()
		}
	}
}

// subscribe (re)subscribes to the notifications whose channel is nil. A host
// without nf_tables has no firewall notifications: every network is polled.
func (w *watcher) subscribe(ctx context.Context, fwCh <-chan firewall.Change, linkCh <-chan string) (<-chan firewall.Change, <-chan string, error) {
	var err error
	if fwCh == nil {
		if fwCh, err = firewall.Changes(ctx); err != nil {
			w.logf("no nf_tables notifications (%v): polling every %s", err, watchPoll)
			w.poll = true
			fwCh = make(chan firewall.Change) // never ready
		}
	}
	if linkCh == nil {
		if linkCh, err = link.Deleted(ctx); err != nil {
			return nil, nil, fmt.Errorf("vnet: watch: %w", err)
		}
	}
	return fwCh, linkCh, nil
}

// mark queues network ("" = every network) for the next reconcile.
func (w *watcher) mark(network string, settle *time.Timer) {
	if network == "-" {
		return // a link that is none of ours
	}
	if len(w.dirty) == 0 {
		settle.Reset(watchSettle)
	}
	w.dirty[network] = true
}

// networkOfLink is the network whose bridge, overlay device or recorded
// port the link was, "-" when none ("" for every network when the config
// cannot be read).
func (w *watcher) networkOfLink(name string) string {
	if name == "" {
		return ""
	}
	cfg, err := w.load()
	if err != nil {
		return ""
	}
	m := New(cfg)
	running, err := m.Running()
	if err != nil {
		return ""
	}
	for _, network := range running {
		if n, ok := cfg.Networks[network]; ok && (n.Bridge == name || n.Overlay != nil && overlayDevice(network) == name) {
			return network
		}
		if ok, err := m.Records.Read(portRecordName(network, name), &portRecord{}); err != nil || ok {
			return network
		}
	}
	return "-"
}

// reconcile reconciles the dirty networks, logging each repair.
func (w *watcher) reconcile() {
	dirty := w.dirty
	w.dirty = map[string]bool{}
	cfg, err := w.load()
	if err != nil {
		w.logf("reconcile: %v", err)
		return
	}
	m := New(cfg)
	running, err := m.Running()
	if err != nil {
		w.logf("reconcile: %v", err)
		return
	}
	w.poll = false
	sort.Strings(running)
	for _, name := range running {
		n, ok := cfg.Networks[name]
		if !ok {
			continue // started ad hoc (a CNI bridge config): not in the host config
		}
		// iptables-legacy holds the iptables backend's rules, and the
		// nftables backend's Docker compatibility: no notifications.
		w.poll = w.poll || firewall.IPTablesLegacy()
		if !dirty[""] && !dirty[name] {
			continue
		}
		start := time.Now()
		repairs, err := m.Reconcile(n)
		for _, r := range repairs {
			w.logf("network %s: %s (reconciled in %s)", name, r, time.Since(start).Round(time.Millisecond))
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			w.logf("network %s: reconcile: %v", name, err)
		}
	}
}
