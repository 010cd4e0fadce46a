package firewall

import (
	"context"
	"strings"

	gnftables "github.com/google/nftables"
)

// Change is something another tool (or brouter itself) did to rules that a
// network's traffic depends on, as nf_tables reports it: a table, chain,
// rule, set or element of network Network deleted, or, with Network "", a
// change of iptables' tables (iptables-nft: FORWARD's policy, Docker's
// DOCKER-USER rebuilt, a flush) that may concern any network. Overflow: the
// kernel dropped notifications (a huge flush); anything may have changed.
type Change struct {
	Network  string
	Overflow bool
}

// Changes reports nf_tables changes until ctx ends, for a watcher that
// checks the networks concerned and repairs them (vnet.Watch). It reports
// only what can break a network: deletions in brouter's tables, and any
// change of iptables-nft's tables; additions to brouter's own tables (every
// attach adds set elements) are not reported. After an Overflow the channel
// is closed; subscribe again. iptables-legacy changes are invisible here
// (no notifications exist for them): poll those (Check).
func Changes(ctx context.Context) (<-chan Change, error) {
	conn, err := gnftables.New()
	if err != nil {
		return nil, errorf("monitor: netlink: %w", err)
	}
	mon := gnftables.NewMonitor(gnftables.WithMonitorEventBuffer(1024))
	events, err := conn.AddMonitor(mon)
	if err != nil {
		return nil, errorf("monitor: subscribe to nf_tables events: %w", err)
	}
	out := make(chan Change, 64)
	go func() {
		defer close(out)
		go func() { <-ctx.Done(); mon.Close() }()
		for ev := range events {
			c, ok := changeOf(ev)
			if !ok {
				continue
			}
			select {
			case out <- c:
			case <-ctx.Done():
				return
			}
			if c.Overflow {
				mon.Close()
				for range events { // let the monitor's goroutines end
				}
				return
			}
		}
	}()
	return out, nil
}

// changeOf says whether an nf_tables event can break a network, and which.
func changeOf(ev *gnftables.MonitorEvent) (Change, bool) {
	if ev.Type == gnftables.MonitorEventTypeOOB {
		return Change{Overflow: true}, true
	}
	if ev.Error != nil {
		// An event the library cannot parse (an xt match of iptables-nft):
		// which table it is about is unknown, so it may be any network's.
		return Change{}, true
	}
	var table *gnftables.Table
	switch d := ev.Data.(type) {
	case *gnftables.Table:
		table = d
	case *gnftables.Chain:
		table = d.Table
	case *gnftables.Rule:
		table = d.Table
	case *gnftables.Set:
		table = d.Table
	default:
		// Set elements, objects: only brouter's tables have ours, and the
		// library does not say which table an element event is about;
		// a deleted element alone is what a detach does.
		return Change{}, false
	}
	if table == nil {
		return Change{}, false
	}
	del := ev.Type == gnftables.MonitorEventTypeDelTable || ev.Type == gnftables.MonitorEventTypeDelChain ||
		ev.Type == gnftables.MonitorEventTypeDelRule || ev.Type == gnftables.MonitorEventTypeDelSet
	if net, ok := strings.CutPrefix(table.Name, "brouter-"); ok {
		net, _, _ = strings.Cut(net, ".") // brouter-NET.ports, brouter-NET.fwd
		return Change{Network: net}, del && validNetwork(net) == nil
	}
	switch table.Family {
	case gnftables.TableFamilyIPv4, gnftables.TableFamilyIPv6, gnftables.TableFamilyBridge, gnftables.TableFamilyARP:
		// iptables-nft, ebtables-nft, arptables-nft: the iptables backend's
		// chains and jumps, and Docker's FORWARD policy and DOCKER-USER.
		switch table.Name {
		case "filter", "nat", "raw", "mangle", "broute":
			return Change{}, true
		}
	}
	return Change{}, false
}
