package shape

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"
)

// Limits on what ParseRate, ParseSize and the Apply functions accept.
const (
	// MinRate is the lowest rate, in bits/s: below it a token bucket in
	// bytes per second rounds to nothing useful.
	MinRate = 8_000
	// MaxRate is the highest rate, in bits/s (10 Tbit/s).
	MaxRate = 10_000_000_000_000
	// MaxBurst is the largest burst, in bytes (1 GiB). The kernel also caps a
	// bucket at about 274 s worth of the rate (a u32 of 64 ns ticks); Apply
	// checks that too.
	MaxBurst = 1 << 30
)

// The accepted forms, quoted in every error so that one line is enough to fix the value.
const (
	rateForms = "want a number and a unit: 500kbit, 10mbit, 1gbit (tc style, bits/s) or 100kb/s, 10Mb/s, 1MB/s (Xen style, b = bits, B = bytes)"
	sizeForms = "want bytes as 1500, 1500b, 32k, 32kb, 32KiB, 1mb, 1MiB (1024-based, like tc) or bits as 64kbit"
)

var numberRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)\s*(.*)$`)

// siPrefix maps a (lower-case) SI prefix to its factor; rates use 1000-based
// prefixes as tc and Xen's libxl do.
var siPrefix = map[string]uint64{"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}

// iecPrefix maps an IEC prefix (ki, mi, gi, ti) to its factor.
var iecPrefix = map[string]uint64{"ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40}

// ParseRate parses a rate and returns it in bits per second.
//
// Accepted forms, the number being an integer or a decimal fraction:
//   - tc style: 500kbit, 10mbit, 1gbit, 1tbit, 8000bit (SI prefixes, 1000-based;
//     kibit/mibit/gibit are 1024-based as in tc). Case does not matter.
//   - Xen style: 100kb/s, 10Mb/s, 1MB/s, 500B/s. The prefix may be written in
//     either case (k or K); the unit letter may not: b is bits, B is bytes.
//
// A bare number is rejected (bits or bytes?), and so are tc's "bps", "kbps",
// "mbps"..., which tc reads as bytes per second but most people read as bits
// per second; the error suggests an unambiguous spelling. Zero, negative,
// garbage and values above MaxRate are errors naming the value.
func ParseRate(s string) (uint64, error) {
	in := strings.TrimSpace(s)
	bad := func(why string) error {
		if why == "" {
			return fmt.Errorf("shape: invalid rate %q: %s", s, rateForms)
		}
		return fmt.Errorf("shape: invalid rate %q: %s", s, why)
	}
	if strings.HasPrefix(in, "-") {
		return 0, bad("a rate cannot be negative; " + rateForms)
	}
	m := numberRE.FindStringSubmatch(in)
	if m == nil {
		return 0, bad("")
	}
	num, unit := m[1], m[2]
	if unit == "" {
		return 0, bad(fmt.Sprintf("a bare number is ambiguous (bits or bytes per second?); write e.g. %[1]smbit or %[1]sMB/s", num))
	}
	var factor *big.Rat
	lower := strings.ToLower(unit)
	switch {
	case strings.HasSuffix(lower, "bit"):
		p := strings.TrimSuffix(lower, "bit")
		if f, ok := siPrefix[p]; ok {
			factor = new(big.Rat).SetInt64(int64(f))
		} else if f, ok := iecPrefix[p]; ok {
			factor = new(big.Rat).SetInt64(int64(f))
		}
	case strings.HasSuffix(unit, "b/s") || strings.HasSuffix(unit, "B/s"):
		p := strings.ToLower(unit[:len(unit)-3])
		f, ok := siPrefix[p]
		if !ok {
			break
		}
		factor = new(big.Rat).SetInt64(int64(f))
		if unit[len(unit)-3] == 'B' {
			factor.Mul(factor, big.NewRat(8, 1))
		}
	case strings.HasSuffix(lower, "bps"):
		p := strings.TrimSuffix(lower, "bps")
		if f, ok := siPrefix[p]; ok {
			bits := new(big.Rat).Mul(mustRat(num), new(big.Rat).SetInt64(int64(f*8)))
			return 0, bad(fmt.Sprintf("%q is ambiguous (tc reads it as %sbytes per second, most people as %sbits); write %s%sbit for bits or %s%sB/s for bytes",
				unit, siWord(p), siWord(p), ratString(bits, f), p, num, siSymbol(p)))
		}
	}
	if factor == nil {
		return 0, bad(fmt.Sprintf("unknown unit %q; %s", unit, rateForms))
	}
	bits := new(big.Rat).Mul(mustRat(num), factor)
	v, ok := roundRat(bits)
	switch {
	case !ok || v > MaxRate:
		return 0, bad(fmt.Sprintf("above the maximum of %s", FormatRate(MaxRate)))
	case v == 0:
		return 0, bad("a rate must be positive (leave the setting out for no limit)")
	case v < MinRate:
		return 0, bad(fmt.Sprintf("below the minimum of %s", FormatRate(MinRate)))
	}
	return v, nil
}

// ParseSize parses a burst size and returns it in bytes. Like tc, prefixes are
// 1024-based and case does not matter: 1500 and 1500b are bytes; 32k, 32kb and
// 32KiB are 32768 bytes; 1m, 1mb, 1MiB are 1048576 bytes; g, gb, GiB likewise.
// kbit, mbit and gbit are bits (64kbit = 8192 bytes, as tc reads it). Zero,
// negative, garbage and sizes above MaxBurst are errors naming the value.
func ParseSize(s string) (uint64, error) {
	in := strings.TrimSpace(s)
	bad := func(why string) error {
		return fmt.Errorf("shape: invalid size %q: %s", s, why)
	}
	if strings.HasPrefix(in, "-") {
		return 0, bad("a size cannot be negative; " + sizeForms)
	}
	m := numberRE.FindStringSubmatch(in)
	if m == nil {
		return 0, bad(sizeForms)
	}
	num, unit := m[1], strings.ToLower(m[2])
	var factor *big.Rat
	switch unit {
	case "", "b":
		factor = big.NewRat(1, 1)
	case "k", "kb", "kib":
		factor = big.NewRat(1<<10, 1)
	case "m", "mb", "mib":
		factor = big.NewRat(1<<20, 1)
	case "g", "gb", "gib":
		factor = big.NewRat(1<<30, 1)
	case "bit":
		factor = big.NewRat(1, 8)
	case "kbit", "kibit":
		factor = big.NewRat(1<<10, 8)
	case "mbit", "mibit":
		factor = big.NewRat(1<<20, 8)
	case "gbit", "gibit":
		factor = big.NewRat(1<<30, 8)
	default:
		return 0, bad(fmt.Sprintf("unknown unit %q; %s", m[2], sizeForms))
	}
	v, ok := roundRat(new(big.Rat).Mul(mustRat(num), factor))
	switch {
	case !ok || v > MaxBurst:
		return 0, bad(fmt.Sprintf("above the maximum of %s", FormatSize(MaxBurst)))
	case v == 0:
		return 0, bad("a size must be positive (leave the setting out for an automatic burst)")
	}
	return v, nil
}

// FormatRate formats a rate in bits/s for people: "10Mbit/s", "1.5Gbit/s",
// "640kbit/s", at most three decimals.
func FormatRate(bits uint64) string {
	units := []struct {
		f    uint64
		name string
	}{{1e12, "Tbit/s"}, {1e9, "Gbit/s"}, {1e6, "Mbit/s"}, {1e3, "kbit/s"}}
	for _, u := range units {
		if bits >= u.f {
			return trimFloat(float64(bits)/float64(u.f)) + u.name
		}
	}
	return strconv.FormatUint(bits, 10) + "bit/s"
}

// FormatSize formats a size in bytes, 1024-based: "1514B", "32KiB", "1.5MiB".
func FormatSize(bytes uint64) string {
	units := []struct {
		f    uint64
		name string
	}{{1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}}
	for _, u := range units {
		if bytes >= u.f {
			return trimFloat(float64(bytes)/float64(u.f)) + u.name
		}
	}
	return strconv.FormatUint(bytes, 10) + "B"
}

func trimFloat(v float64) string {
	s := strconv.FormatFloat(math.Round(v*1000)/1000, 'f', 3, 64)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}

func mustRat(num string) *big.Rat {
	r, ok := new(big.Rat).SetString(num)
	if !ok { // unreachable: numberRE only lets decimals through
		panic("shape: bad number " + num)
	}
	return r
}

// roundRat rounds a non-negative rational to the nearest integer; ok is false
// if it does not fit in a uint64.
func roundRat(r *big.Rat) (uint64, bool) {
	n := new(big.Int).Mul(r.Num(), big.NewInt(2))
	n.Add(n, r.Denom())
	n.Quo(n, new(big.Int).Mul(r.Denom(), big.NewInt(2)))
	if !n.IsUint64() {
		return 0, false
	}
	return n.Uint64(), true
}

// ratString writes bits (a rational) divided by factor as a short decimal.
func ratString(bits *big.Rat, factor uint64) string {
	f, _ := new(big.Rat).Quo(bits, new(big.Rat).SetInt64(int64(factor))).Float64()
	return trimFloat(f)
}

func siSymbol(p string) string {
	return map[string]string{"": "", "k": "k", "m": "M", "g": "G", "t": "T"}[p]
}

func siWord(p string) string {
	return map[string]string{"": "", "k": "kilo", "m": "mega", "g": "giga", "t": "tera"}[p]
}

// Priority says which guests keep their bandwidth when the guests of a
// network together exceed the network's aggregate limit. The zero value is
// Medium.
type Priority int

// Priorities, from the zero value.
const (
	Medium Priority = iota
	High
	Low
)

// String returns "high", "medium" or "low".
func (p Priority) String() string {
	switch p {
	case High:
		return "high"
	case Medium:
		return "medium"
	case Low:
		return "low"
	}
	return fmt.Sprintf("Priority(%d)", int(p))
}

// ErrBadPriority is returned (wrapped) by ParsePriority.
var ErrBadPriority = errors.New("want high, medium or low")

// ParsePriority parses "high", "medium" or "low" (any case); "" is Medium.
func ParsePriority(s string) (Priority, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "high":
		return High, nil
	case "medium", "":
		return Medium, nil
	case "low":
		return Low, nil
	}
	return Medium, fmt.Errorf("shape: invalid priority %q: %w", s, ErrBadPriority)
}

func (p Priority) valid() bool { return p == High || p == Medium || p == Low }

// weight is the port's share of a saturated aggregate relative to others.
func (p Priority) weight() uint64 {
	switch p {
	case High:
		return 4
	case Low:
		return 1
	}
	return 2
}

// htbPrio is the HTB class priority: lower borrows spare bandwidth first.
func (p Priority) htbPrio() uint32 {
	switch p {
	case High:
		return 0
	case Low:
		return 2
	}
	return 1
}
