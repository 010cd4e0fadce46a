package nstest

import (
	"strings"
	"testing"
)

func TestDiff(t *testing.T) {
	for _, tc := range []struct {
		name, a, b string
		want       string
	}{
		{"equal", "x\ny\n", "x\ny\n", ""},
		{"empty", "", "", ""},
		{"added", "a\nb\n", "a\nb\nc\n", "  a\n  b\n+ c\n"},
		{"removed", "a\nb\nc\n", "a\nc\n", "  a\n- b\n  c\n"},
		{"changed", "a\nb\nc\n", "a\nB\nc\n", "  a\n- b\n+ B\n  c\n"},
		{"from empty", "", "a\n", "+ a\n"},
		{"to empty", "a\n", "", "- a\n"},
		{"context gap", "1\n2\n3\n4\n5\n6\n7\n8\n", "0\n1\n2\n3\n4\n5\n6\n7\n", "+ 0\n  1\n  2\n  ...\n  6\n  7\n- 8\n"},
		{"trailing newline", "a\n", "a", "- \"a\\n\"\n+ \"a\"\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Diff(tc.a, tc.b); got != tc.want {
				t.Errorf("Diff(%q, %q) =\n%s\nwant\n%s", tc.a, tc.b, got, tc.want)
			}
		})
	}
}

func TestSortNft(t *testing.T) {
	in := []string{
		"table ip z {",
		"\tchain b {",
		"\t\ttype filter hook forward priority filter; policy accept;",
		"\t\tcounter jump a",
		"\t\tcounter accept",
		"\t}",
		"\tchain a {",
		"\t}",
		"}",
		"table inet a {",
		"}",
	}
	want := []string{
		"table inet a {",
		"}",
		"table ip z {",
		"\tchain a {",
		"\t}",
		"\tchain b {",
		"\t\ttype filter hook forward priority filter; policy accept;",
		"\t\tcounter jump a",
		"\t\tcounter accept",
		"\t}",
		"}",
	}
	got := sortNft(in)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("sortNft =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestUniqueName(t *testing.T) {
	a, b := uniqueName("Dom0 x/y"), uniqueName("dom0")
	if a == b {
		t.Errorf("two names alike: %s", a)
	}
	if !strings.HasPrefix(a, "brt-dom0xy-") {
		t.Errorf("name %q: want prefix brt-dom0xy-", a)
	}
}
