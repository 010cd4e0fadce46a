package main

import (
	"fmt"
	"sort"
	"time"
)

func pct(ds []time.Duration, q float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(q*float64(len(s)-1)+0.5)]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond)) }

func dur(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	if d < 10*time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

func printReport(o opts, chains []string, build time.Duration, res map[string]*Result, outer map[string]*outerPhases) {
	fmt.Println()
	fmt.Printf("bench-cni: n=%d, big=%d, parallel %d ADDs with %d at a time, grow-j %d\n", o.n, o.big, o.par, o.parDeg, o.growJ)
	fmt.Println("every chain: bandwidth (100 Mbit/s each way) and one port mapping per container (distinct host ports);")
	fmt.Println("brouter: addresses from the network (no IPAM plugin); brouter-hostlocal and reference: host-local IPAM;")
	fmt.Println("each chain in a dom0 network namespace of its own")
	fmt.Println()
	fmt.Printf("%-46s %12s %12s\n", "operation", "p50", "p90")
	for _, name := range chains {
		r := res[name]
		if r == nil {
			continue
		}
		row := func(what string, ds []time.Duration) {
			if len(ds) == 0 {
				fmt.Printf("%-46s %12s %12s\n", name+" "+what, "-", "-")
				return
			}
			fmt.Printf("%-46s %12s %12s\n", name+" "+what, ms(pct(ds, 0.5)), ms(pct(ds, 0.9)))
		}
		wall := func(what string, d time.Duration) {
			s := "-"
			if d > 0 {
				s = ms(d)
			}
			fmt.Printf("%-46s %12s\n", name+" "+what, s)
		}
		row("ADD @10", r.Add10)
		row("DEL @10", r.Del10)
		row(fmt.Sprintf("ADD @%d", o.big), r.AddBig)
		row(fmt.Sprintf("DEL @%d", o.big), r.DelBig)
		row("  plugins' CPU (user+sys): ADD @10", r.AddCPU10)
		row("  plugins' CPU (user+sys): DEL @10", r.DelCPU10)
		row(fmt.Sprintf("  plugins' CPU (user+sys): ADD @%d", o.big), r.AddCPUBig)
		row(fmt.Sprintf("  plugins' CPU (user+sys): DEL @%d", o.big), r.DelCPUBig)
		row("  kernel floor: veth create+enslave @10", r.Floor10)
		row("  kernel floor: veth delete @10", r.FloorDel10)
		row(fmt.Sprintf("  kernel floor: veth create+enslave @%d", o.big), r.FloorBig)
		row(fmt.Sprintf("  kernel floor: veth delete @%d", o.big), r.FloorDelBig)
		row("  kernel floor: CPU of create+enslave @10", r.FloorCPU10)
		row(fmt.Sprintf("  kernel floor: CPU of create+enslave @%d", o.big), r.FloorCPUBig)
		row(fmt.Sprintf("%d ADDs x%d parallel: each", o.par, o.parDeg), r.ParAdd)
		wall(fmt.Sprintf("%d ADDs x%d parallel: wall", o.par, o.parDeg), r.ParWall)
		row(fmt.Sprintf("%d DELs x%d parallel: each", o.par, o.parDeg), r.ParDel)
		wall(fmt.Sprintf("%d DELs x%d parallel: wall", o.par, o.parDeg), r.ParDelWall)
	}

	fmt.Println()
	fmt.Printf("%-46s", "phase (build of all plugins: "+dur(build)+")")
	for _, name := range chains {
		fmt.Printf(" %14s", name)
	}
	fmt.Println()
	var names []string
	seen := map[string]bool{}
	for _, name := range chains {
		if r := res[name]; r != nil {
			for _, p := range r.Phases {
				if !seen[p.Name] {
					seen[p.Name] = true
					names = append(names, p.Name)
				}
			}
		}
	}
	phaseRow := func(label string, get func(name string) time.Duration) {
		fmt.Printf("%-46s", label)
		for _, name := range chains {
			fmt.Printf(" %14s", dur(get(name)))
		}
		fmt.Println()
	}
	for _, pn := range names {
		pn := pn
		phaseRow(pn, func(name string) time.Duration {
			if r := res[name]; r != nil {
				for _, p := range r.Phases {
					if p.Name == pn {
						return p.D
					}
				}
			}
			return 0
		})
	}
	phaseRow("setup total (10 + grow)", func(name string) time.Duration {
		var t time.Duration
		if r := res[name]; r != nil {
			for _, p := range r.Phases {
				if len(p.Name) >= 6 && p.Name[:6] == "setup:" {
					t += p.D
				}
			}
		}
		return t
	})
	get := func(f func(*outerPhases) time.Duration) func(string) time.Duration {
		return func(name string) time.Duration {
			if op := outer[name]; op != nil {
				return f(op)
			}
			return 0
		}
	}
	phaseRow("inner process (all of the above)", get(func(op *outerPhases) time.Duration { return op.inner }))
	phaseRow("teardown: delete dom0 + container netns", get(func(op *outerPhases) time.Duration { return op.teardown }))
	phaseRow("wait for the machine to settle", get(func(op *outerPhases) time.Duration { return op.settle }))

	fmt.Println()
	fmt.Printf("%-12s %22s %22s %22s\n", "firewall", "before (nft/ipt -A)", "@10 (nft/ipt -A)", fmt.Sprintf("@%d (nft/ipt -A)", o.big))
	cnt := func(a, b int) string {
		f := func(n int) string {
			if n < 0 {
				return "-"
			}
			return fmt.Sprint(n)
		}
		return f(a) + " / " + f(b)
	}
	for _, name := range chains {
		if r := res[name]; r != nil {
			fmt.Printf("%-12s %22s %22s %22s\n", name, cnt(r.Nft0, r.Ipt0), cnt(r.Nft10, r.Ipt10), cnt(r.NftBig, r.IptBig))
		}
	}
	fmt.Println("(nft counts rules of all tables, including iptables-nft's; the two columns overlap)")

	b, ref := res["brouter"], res["reference"]
	fmt.Println()
	ratio := func(label string, num, den []time.Duration, target float64) {
		if len(num) == 0 || len(den) == 0 {
			fmt.Printf("%-40s %8s\n", label, "n/a")
			return
		}
		v := float64(pct(num, 0.5)) / float64(pct(den, 0.5))
		verdict := "for comparison"
		if target > 0 {
			verdict = fmt.Sprintf("target <= %g: ok", target)
			if v > target {
				verdict = fmt.Sprintf("target <= %g: MISSED", target)
			}
		}
		fmt.Printf("%-40s %8.3f (%s)\n", label, v, verdict)
	}
	if b != nil && ref != nil {
		ratio("ADD p50 brouter/reference @10:", b.Add10, ref.Add10, 0.25)
		ratio("DEL p50 brouter/reference @10:", b.Del10, ref.Del10, 0.25)
		ratio(fmt.Sprintf("ADD p50 brouter/reference @%d:", o.big), b.AddBig, ref.AddBig, 0.25)
		ratio(fmt.Sprintf("DEL p50 brouter/reference @%d:", o.big), b.DelBig, ref.DelBig, 0.25)
		ratio("parallel ADD p50 brouter/reference:", b.ParAdd, ref.ParAdd, 0)
		if b.ParWall > 0 && ref.ParWall > 0 {
			fmt.Printf("%-40s %8.3f (for comparison)\n", "parallel ADD wall brouter/reference:", float64(b.ParWall)/float64(ref.ParWall))
		}
	}
	if b != nil {
		ratio(fmt.Sprintf("brouter ADD p50 @%d / @10:", o.big), b.AddBig, b.Add10, 1.2)
		ratio(fmt.Sprintf("brouter DEL p50 @%d / @10:", o.big), b.DelBig, b.Del10, 1.2)
	}
	for _, name := range chains {
		if r := res[name]; r != nil {
			growth(name, "ADD", o.big, r.Add10, r.AddBig, r.Floor10, r.FloorBig, name == "brouter")
			growth(name, "DEL", o.big, r.Del10, r.DelBig, r.FloorDel10, r.FloorDelBig, false)
			if len(r.AddCPU10) > 0 && len(r.AddCPUBig) > 0 && len(r.FloorCPU10) > 0 && len(r.FloorCPUBig) > 0 {
				fmt.Printf("%-40s ADD %+.2fms (x%.3f), DEL %+.2fms (x%.3f) p50 @%d vs @10; kernel floor create+enslave %+.2fms (x%.3f)\n",
					name+" CPU growth:", msDiff(r.AddCPUBig, r.AddCPU10), p50Ratio(r.AddCPUBig, r.AddCPU10),
					msDiff(r.DelCPUBig, r.DelCPU10), p50Ratio(r.DelCPUBig, r.DelCPU10), o.big,
					msDiff(r.FloorCPUBig, r.FloorCPU10), p50Ratio(r.FloorCPUBig, r.FloorCPU10))
			}
		}
	}
	if h := res["brouter-hostlocal"]; h != nil {
		if ref != nil {
			ratio("ADD p50 brouter-hostlocal/reference @10:", h.Add10, ref.Add10, 0.25)
			ratio("DEL p50 brouter-hostlocal/reference @10:", h.Del10, ref.Del10, 0.25)
			ratio(fmt.Sprintf("ADD p50 brouter-hostlocal/reference @%d:", o.big), h.AddBig, ref.AddBig, 0.25)
			ratio(fmt.Sprintf("DEL p50 brouter-hostlocal/reference @%d:", o.big), h.DelBig, ref.DelBig, 0.25)
		}
		ratio(fmt.Sprintf("brouter-hostlocal ADD p50 @%d / @10:", o.big), h.AddBig, h.Add10, 0)
		ratio(fmt.Sprintf("brouter-hostlocal DEL p50 @%d / @10:", o.big), h.DelBig, h.Del10, 0)
	}
	if ref != nil {
		ratio(fmt.Sprintf("reference ADD p50 @%d / @10:", o.big), ref.AddBig, ref.Add10, 0)
		ratio(fmt.Sprintf("reference DEL p50 @%d / @10:", o.big), ref.DelBig, ref.Del10, 0)
	}
	grow := func(r *Result) string {
		switch {
		case r == nil:
			return "n/a"
		case r.Nft10 < 0 || r.NftBig < 0:
			return "not measured"
		case r.NftBig == r.Nft10 && r.IptBig == r.Ipt10:
			return "does not grow"
		}
		return fmt.Sprintf("GROWS (+%d nft, +%d ipt)", r.NftBig-r.Nft10, r.IptBig-r.Ipt10)
	}
	fmt.Printf("firewall rules @10 -> @%d: brouter %s; reference %s\n", o.big, grow(b), grow(ref))
}

// growth prints a chain's growth from @10 to @big next to the kernel's (the
// floor's, measured at the same moments), and their quotient: the growth
// that is the plugin's own (target: brouter's ADD within 1.1 of the kernel's).
func growth(chain, op string, big int, at10, atBig, floor10, floorBig []time.Duration, target bool) {
	if len(at10) == 0 || len(atBig) == 0 || len(floor10) == 0 || len(floorBig) == 0 {
		return
	}
	g := float64(pct(atBig, 0.5)) / float64(pct(at10, 0.5))
	k := float64(pct(floorBig, 0.5)) / float64(pct(floor10, 0.5))
	verdict := "for comparison"
	if target {
		verdict = "target <= 1.1: ok"
		if g/k > 1.1 {
			verdict = "target <= 1.1: MISSED"
		}
	}
	fmt.Printf("%-40s %8.3f (%s p50 @%d/@10 %.3f, kernel's %.3f; %s)\n",
		fmt.Sprintf("%s %s growth / kernel's:", chain, op), g/k, op, big, g, k, verdict)
}

// msDiff is the difference of two p50s in milliseconds.
func msDiff(a, b []time.Duration) float64 {
	return float64(pct(a, 0.5)-pct(b, 0.5)) / float64(time.Millisecond)
}

// p50Ratio is the quotient of two p50s.
func p50Ratio(a, b []time.Duration) float64 { return float64(pct(a, 0.5)) / float64(pct(b, 0.5)) }
