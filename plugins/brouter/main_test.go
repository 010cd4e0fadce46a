package main

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

// The shipped conflists decode and pass the plugin's own checks.
func TestShippedConflists(t *testing.T) {
	files, _ := filepath.Glob("../../conf/cni/*.conflist")
	if len(files) == 0 {
		t.Fatal("no conf/cni/*.conflist")
	}
	for _, f := range files {
		list, err := libcni.ConfListFromFile(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		for _, p := range list.Plugins {
			if p.Network.Type != "brouter" {
				continue
			}
			c, err := loadConf(&skel.CmdArgs{StdinData: p.Bytes})
			if err != nil {
				t.Errorf("%s: %v", f, err)
				continue
			}
			if c.Network == "" && c.Bridge == "" {
				t.Errorf("%s: names neither a network nor a bridge", f)
			}
		}
	}
}

func code(err error) uint {
	var te *types.Error
	if errors.As(err, &te) {
		return te.Code
	}
	return 0
}

func TestLoadConfRuntimeConfig(t *testing.T) {
	for _, tc := range []struct {
		name, conf string
		code       uint
	}{
		{"ok", `{"cniVersion":"1.1.0","name":"x","type":"brouter","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],"bandwidth":{"ingressRate":1000000,"egressRate":1000000}}}`, 0},
		{"bad json", `{"cniVersion":`, types.ErrDecodingFailure},
		{"bad protocol", `{"cniVersion":"1.1.0","name":"x","type":"brouter","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"icmp"}]}}`, types.ErrInvalidNetworkConfig},
		{"host port 0", `{"cniVersion":"1.1.0","name":"x","type":"brouter","runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80}]}}`, types.ErrInvalidNetworkConfig},
		{"container port too big", `{"cniVersion":"1.1.0","name":"x","type":"brouter","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":70000}]}}`, types.ErrInvalidNetworkConfig},
		{"bad hostIP", `{"cniVersion":"1.1.0","name":"x","type":"brouter","runtimeConfig":{"portMappings":[{"hostPort":80,"containerPort":80,"hostIP":"nope"}]}}`, types.ErrInvalidNetworkConfig},
		{"rate below minimum", `{"cniVersion":"1.1.0","name":"x","type":"brouter","runtimeConfig":{"bandwidth":{"ingressRate":1000}}}`, types.ErrInvalidNetworkConfig},
		{"burst without rate", `{"cniVersion":"1.1.0","name":"x","type":"brouter","runtimeConfig":{"bandwidth":{"egressBurst":100000}}}`, types.ErrInvalidNetworkConfig},
		{"multicast mac", `{"cniVersion":"1.1.0","name":"x","type":"brouter","runtimeConfig":{"mac":"01:00:5e:00:00:01"}}`, types.ErrInvalidNetworkConfig},
		{"bad mtu", `{"cniVersion":"1.1.0","name":"x","type":"brouter","mtu":20}`, types.ErrInvalidNetworkConfig},
	} {
		_, err := loadConf(&skel.CmdArgs{StdinData: []byte(tc.conf)})
		if got := code(err); got != tc.code || (tc.code != 0) != (err != nil) {
			t.Errorf("%s: error %v (code %d), want code %d", tc.name, err, got, tc.code)
		}
	}
}
