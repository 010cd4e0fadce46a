// Package e2e holds brouter's end-to-end tests: the built programs called
// exactly as their real callers call them, inside throwaway network
// namespaces (a "dom0" namespace that runs the program, an "outside"
// namespace beyond dom0's uplink, and guest namespaces on the bridge).
//
// The tests need root and skip otherwise. They build the programs themselves
// (go build ./hooks/NAME into a temporary directory) and never touch the
// machine's root network namespace or its /etc/brouter, /run/brouter and
// /var/lib/brouter: BROUTER_CONFIG, BROUTER_RUN_DIR and BROUTER_STATE_DIR
// always point into the test's temporary directories.
//
// Run them with: go test ./e2e/  (as root).
package e2e
