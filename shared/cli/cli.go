// Package cli is what every brouter program's main does the same way: one
// line per error on stderr, usage on -h/--help.
package cli

import (
	"fmt"
	"io"
	"strings"
)

// Exit statuses shared by the programs (network-virtual adds LSB's 3 for
// "not running").
const (
	ExitOK    = 0
	ExitFail  = 1
	ExitUsage = 2
)

// OneLine is err's message on one line, its whitespace runs (newlines of a
// tool's diagnostics included) collapsed to single spaces: what a user sees
// on stderr and Xen keeps in hotplug-error.
func OneLine(err error) string {
	if err == nil {
		return ""
	}
	return strings.Join(strings.Fields(err.Error()), " ")
}

// IsHelp reports whether arg asks for usage.
func IsHelp(arg string) bool { return arg == "-h" || arg == "--help" }

// WantsHelp reports whether any argument asks for usage. The callers'
// arguments are operations, VAR=VAL pairs and interface names, none of which
// can be "-h" or "--help".
func WantsHelp(args []string) bool {
	for _, a := range args {
		if IsHelp(a) {
			return true
		}
	}
	return false
}

// Program is a command's name and usage text, for its messages.
type Program struct {
	Name  string
	Usage string // the full text --help prints, ending in a newline
}

// Help prints the usage text; a program does so on -h/--help and exits 0.
func (p Program) Help(w io.Writer) int {
	fmt.Fprint(w, p.Usage)
	return ExitOK
}

// Fail prints "NAME: what" on one line and returns code.
func (p Program) Fail(w io.Writer, code int, err error) int {
	fmt.Fprintf(w, "%s: %s\n", p.Name, OneLine(err))
	return code
}

// UsageError prints a one-line usage error that points at --help and
// returns ExitUsage.
func (p Program) UsageError(w io.Writer, err error) int {
	fmt.Fprintf(w, "%s: %s (see %s --help)\n", p.Name, OneLine(err), p.Name)
	return ExitUsage
}
