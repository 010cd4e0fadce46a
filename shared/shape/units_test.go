package shape

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
	}{
		// tc style: SI prefixes, bits, any case.
		{"500kbit", 500_000},
		{"10mbit", 10_000_000},
		{"10Mbit", 10_000_000},
		{"10MBIT", 10_000_000},
		{"1gbit", 1_000_000_000},
		{"1Gbit", 1_000_000_000},
		{"1tbit", 1_000_000_000_000},
		{"8000bit", 8000},
		{"1.5mbit", 1_500_000},
		{"0.5gbit", 500_000_000},
		{" 100mbit ", 100_000_000},
		{"1mibit", 1 << 20},
		// Xen style: b = bits, B = bytes; prefix in either case.
		{"10Mb/s", 10_000_000},
		{"10mb/s", 10_000_000},
		{"1MB/s", 8_000_000},
		{"1mB/s", 8_000_000},
		{"100kb/s", 100_000},
		{"100Kb/s", 100_000},
		{"100KB/s", 800_000},
		{"1Gb/s", 1_000_000_000},
		{"1GB/s", 8_000_000_000},
		{"2500B/s", 20_000},
		{"8000b/s", 8000},
		{"1.25MB/s", 10_000_000},
	} {
		got, err := ParseRate(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	if v, err := ParseRate("100kibit"); v != 102400 {
		t.Errorf("100kibit = %d, %v; want 102400 (IEC, as tc)", v, err)
	}
}

func TestParseRateErrors(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string // all must appear in the error
	}{
		{"10", []string{`"10"`, "bare number is ambiguous", "10mbit", "10MB/s"}},
		{"0", []string{`"0"`, "bare number"}},
		{"0mbit", []string{`"0mbit"`, "must be positive"}},
		{"-5mbit", []string{`"-5mbit"`, "negative", "500kbit"}},
		{"1kbps", []string{`"1kbps"`, "ambiguous", "8kbit", "1kB/s"}},
		{"10mbps", []string{"80mbit", "10MB/s"}},
		{"2Gbps", []string{"16gbit", "2GB/s"}},
		{"100bps", []string{"800bit", "100B/s"}},
		{"10 furlongs", []string{"unknown unit", "furlongs", "10mbit"}},
		{"mbit", []string{`"mbit"`, "1gbit", "10Mb/s"}},
		{"", []string{`""`, "want a number and a unit"}},
		{"fast", []string{`"fast"`, "1MB/s"}},
		{"10Xb/s", []string{"unknown unit"}},
		{"10mb", []string{"unknown unit", `"mb"`}},
		{"1e6bit", []string{"unknown unit"}},
		{"100bit", []string{"below the minimum of 8kbit/s"}},
		{"99999999999999999999999tbit", []string{"above the maximum of 10Tbit/s"}},
		{"11tbit", []string{"above the maximum"}},
		{"0x10mbit", []string{"unknown unit"}},
	} {
		_, err := ParseRate(tc.in)
		if err == nil {
			t.Errorf("ParseRate(%q) succeeded, want an error", tc.in)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "shape: ") || strings.Contains(msg, "\n") {
			t.Errorf("ParseRate(%q) error %q: want one line starting \"shape: \"", tc.in, msg)
		}
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("ParseRate(%q) error %q: missing %q", tc.in, msg, w)
			}
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
	}{
		{"1500", 1500},
		{"1500b", 1500},
		{"1500B", 1500},
		{"32k", 32 << 10},
		{"32kb", 32 << 10},
		{"32KB", 32 << 10},
		{"32KiB", 32 << 10},
		{"32kib", 32 << 10},
		{"1mb", 1 << 20},
		{"1m", 1 << 20},
		{"1MiB", 1 << 20},
		{"1.5mb", 3 << 19},
		{"1g", 1 << 30},
		{"1GiB", 1 << 30},
		{"64kbit", 8192}, // tc: kbit are 1024 bits in sizes
		{"8bit", 1},
		{"1mbit", 1 << 17},
	} {
		got, err := ParseSize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"0", "must be positive"},
		{"0kb", "must be positive"},
		{"-1k", "negative"},
		{"2g", "above the maximum of 1GiB"},
		{"1025mb", "above the maximum"},
		{"big", "want bytes as 1500"},
		{"10 parsecs", `unknown unit "parsecs"`},
		{"3bit", "must be positive"}, // rounds to 0 bytes
	} {
		_, err := ParseSize(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "shape: ") || !strings.Contains(err.Error(), `"`+tc.in+`"`) {
			t.Errorf("ParseSize(%q) = %v, want an error naming the value and containing %q", tc.in, err, tc.want)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		bits uint64
		want string
	}{
		{10_000_000, "10Mbit/s"},
		{1_500_000_000, "1.5Gbit/s"},
		{640_000, "640kbit/s"},
		{999, "999bit/s"},
		{123_456_789, "123.457Mbit/s"},
		{1_000_000_000_000, "1Tbit/s"},
		{8000, "8kbit/s"},
	} {
		if got := FormatRate(tc.bits); got != tc.want {
			t.Errorf("FormatRate(%d) = %q, want %q", tc.bits, got, tc.want)
		}
	}
	for _, tc := range []struct {
		bytes uint64
		want  string
	}{
		{1514, "1.479KiB"},
		{1000, "1000B"},
		{32 << 10, "32KiB"},
		{3 << 19, "1.5MiB"},
		{1 << 30, "1GiB"},
	} {
		if got := FormatSize(tc.bytes); got != tc.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tc.bytes, got, tc.want)
		}
	}
	// What FormatRate prints, ParseRate reads back (tc style without "/s").
	for _, bits := range []uint64{8000, 1e6, 10e6, 2.5e9} {
		s := strings.TrimSuffix(FormatRate(bits), "/s")
		if got, err := ParseRate(s); err != nil || got != bits {
			t.Errorf("ParseRate(FormatRate(%d) = %q) = %d, %v", bits, s, got, err)
		}
	}
}

func TestParsePriority(t *testing.T) {
	for in, want := range map[string]Priority{"high": High, "HIGH": High, "medium": Medium, "": Medium, "Low": Low} {
		if got, err := ParsePriority(in); err != nil || got != want {
			t.Errorf("ParsePriority(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParsePriority("urgent"); !errors.Is(err, ErrBadPriority) || !strings.Contains(err.Error(), `"urgent"`) {
		t.Errorf("ParsePriority(urgent) = %v", err)
	}
	var zero Priority
	if zero != Medium || zero.String() != "medium" {
		t.Errorf("zero Priority = %v, want medium", zero)
	}
}
