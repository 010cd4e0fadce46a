package vnet

import "strings"

// Ports lists the names of the ports recorded as attached to network (by
// Attach, on any path: Xen, QEMU or CNI), whether or not their devices still
// exist. A network with no ports gives an empty list.
func (m *Manager) Ports(network string) ([]string, error) { return m.recorded(portDir(network)) }

// Running lists the names of the networks that Start has recorded as
// running (whatever started them: network-virtual, a CNI ADD, a hook on an
// existing bridge), sorted.
func (m *Manager) Running() ([]string, error) { return m.recorded("networks") }

// recorded lists the names of the records (NAME.json) in directory dir.
func (m *Manager) recorded(dir string) ([]string, error) {
	files, err := m.Records.List(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range files {
		if name, ok := strings.CutSuffix(f, ".json"); ok {
			out = append(out, name)
		}
	}
	return out, nil
}
