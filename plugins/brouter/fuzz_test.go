package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

// fuzzConfSeeds are plugin configs as runtimes pass them: the shipped
// conflists' brouter plugins (name and cniVersion injected, as libcni
// does), and odd ones.
func fuzzConfSeeds(f *testing.F) {
	files, _ := filepath.Glob("../../conf/cni/*.conflist")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		list, err := libcni.ConfListFromBytes(b)
		if err != nil {
			f.Fatalf("%s: %v", file, err)
		}
		for _, p := range list.Plugins {
			var m map[string]any
			if err := json.Unmarshal(p.Bytes, &m); err != nil {
				f.Fatal(err)
			}
			m["name"], m["cniVersion"] = list.Name, list.CNIVersion
			one, _ := json.Marshal(m)
			f.Add(one)
		}
	}
	for _, s := range []string{
		``, `{}`, `null`, `[]`, `{"cniVersion":`,
		`{"cniVersion":"1.1.0","name":"x","type":"brouter","network":"lab","mtu":9000,"antispoof":false,"hairpinMode":true}`,
		`{"cniVersion":"1.1.0","name":"x","type":"brouter","bridge":"cni0","isGateway":true,"ipMasq":true,"ipam":{"type":"host-local"}}`,
		`{"cniVersion":"1.1.0","name":"x","type":"brouter","network":"bad name!"}`,
		`{"cniVersion":"1.1.0","name":"x","type":"brouter","bridge":"a-very-long-bridge-name"}`,
		`{"cniVersion":"1.1.0","name":"x","type":"brouter","mtu":-1}`,
		`{"cniVersion":"1.1.0","name":"x","type":"brouter","prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"10.0.0.2/24","interface":0}]}}`,
		`{"cniVersion":"1.1.0","name":"x","type":"brouter","prevResult":{"ips":[{"address":"nope"}]}}`,
		`{"cniVersion":"0.4.0","name":"x","type":"brouter","prevResult":{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.2/24"}]}}`,
		`{"cniVersion":"1.1.0","name":"x","type":"brouter","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}`,
	} {
		f.Add([]byte(s))
	}
}

// FuzzLoadConf: any stdin gives a config or a CNI error (a code, never a
// panic); a config it accepts has only values the plugin can use.
func FuzzLoadConf(f *testing.F) {
	fuzzConfSeeds(f)
	f.Fuzz(func(t *testing.T, stdin []byte) {
		c, err := loadConf(&skel.CmdArgs{StdinData: stdin})
		checkConfOutcome(t, c, err)
	})
}

// FuzzRuntimeConfig is FuzzLoadConf for the capabilities a runtime passes
// (runtimeConfig: mac, ips, bandwidth, portMappings), in a valid config.
func FuzzRuntimeConfig(f *testing.F) {
	for _, s := range []string{
		`{}`, `null`, `{"mac":"02:00:00:00:00:01","ips":["10.0.0.5/24","fd00::5"]}`,
		`{"mac":"01:00:5e:00:00:01"}`, `{"mac":"00:11:22:33:44:55:66:77"}`, `{"ips":["10.0.0.0/33"]}`,
		`{"bandwidth":{"ingressRate":1000000,"ingressBurst":800000,"egressRate":1000000,"egressBurst":800000}}`,
		`{"bandwidth":{"ingressRate":1}}`, `{"bandwidth":{"egressBurst":100000}}`,
		`{"bandwidth":{"ingressRate":18446744073709551615,"ingressBurst":18446744073709551615}}`,
		`{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":53,"containerPort":53,"protocol":"UDP","hostIP":"::"}]}`,
		`{"portMappings":[{"hostPort":0,"containerPort":80}]}`, `{"portMappings":[{"hostPort":80,"containerPort":70000}]}`,
		`{"portMappings":[{"hostPort":80,"containerPort":80,"hostIP":"::ffff:1.2.3.4"}]}`,
		`{"portMappings":[{"hostPort":80,"containerPort":80,"hostIP":"fe80::1%eth0"}]}`,
		`{"portMappings":[{"hostPort":80,"containerPort":80,"protocol":"icmp"}]}`,
		`{"portMappings":{"hostPort":80}}`, `{"ips":"10.0.0.1"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, rc []byte) {
		stdin := append([]byte(`{"cniVersion":"1.1.0","name":"x","type":"brouter","network":"lab","runtimeConfig":`), rc...)
		stdin = append(stdin, '}')
		c, err := loadConf(&skel.CmdArgs{StdinData: stdin})
		checkConfOutcome(t, c, err)
	})
}

// checkConfOutcome: an error is a CNI error with a code; a config has
// usable values only.
func checkConfOutcome(t *testing.T, c *netConf, err error) {
	if err != nil {
		var te *types.Error
		if !errors.As(err, &te) || te.Code == 0 {
			t.Fatalf("error %v (%T) is not a CNI error with a code", err, err)
		}
		return
	}
	if c.MTU < 0 || c.MTU > 65535 || c.MTU > 0 && c.MTU < 68 {
		t.Fatalf("accepted mtu %d", c.MTU)
	}
	if c.mac != nil && (len(c.mac) != 6 || c.mac[0]&1 != 0) {
		t.Fatalf("accepted MAC %s", c.mac)
	}
	if len(c.ips) != len(c.RuntimeConfig.IPs) {
		t.Fatalf("ips %v parsed as %v", c.RuntimeConfig.IPs, c.ips)
	}
	for _, a := range c.ips {
		if !a.IsValid() {
			t.Fatalf("accepted an invalid address in %v", c.RuntimeConfig.IPs)
		}
	}
	if len(c.mappings) != len(c.RuntimeConfig.PortMappings) {
		t.Fatalf("portMappings %v parsed as %v", c.RuntimeConfig.PortMappings, c.mappings)
	}
	for _, f := range c.mappings {
		if f.Proto != "tcp" && f.Proto != "udp" && f.Proto != "sctp" || f.HostPort == 0 || f.GuestPort == 0 {
			t.Fatalf("accepted port mapping %+v", f)
		}
	}
	if b := c.RuntimeConfig.Bandwidth; b != nil && b.shaping().Validate() != nil {
		t.Fatalf("accepted bandwidth %+v", *b)
	}
}
