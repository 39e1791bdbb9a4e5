// Command disco is disco's agent with every source and sink: discovery
// from Kubernetes, DNS, files or plugins, fed to xDS clients, webhooks and
// sink plugins, declared in a config file and reloaded without a restart.
//
//	disco run -config disco.yaml
//	disco validate -config disco.yaml
//	disco version
//
// It is the default distribution of core/agent: a distribution is this
// main with the factories it includes; a smaller one lists fewer.
package main

import (
	"os"
	"runtime/debug"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/agent"
	"github.com/disco-lb/disco/core/plugin"
	"github.com/disco-lb/disco/sinks/webhook"
	"github.com/disco-lb/disco/sinks/xds"
	"github.com/disco-lb/disco/sources/dns"
	"github.com/disco-lb/disco/sources/etcd"
	"github.com/disco-lb/disco/sources/file"
	"github.com/disco-lb/disco/sources/kubernetes"
)

// version is set at build time (-ldflags "-X main.version=v0.3.0"), else
// read from the module's build information.
var version = ""

func main() {
	if version == "" {
		version = "devel"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
			version = bi.Main.Version
		}
	}
	os.Exit(agent.Main(os.Args[1:], factories(), version, os.Stdout, os.Stderr))
}

// factories are the types this distribution includes: every source and
// sink of disco.
func factories() agent.Factories {
	return agent.Factories{
		Sources: []core.SourceFactory{kubernetes.Factory(), dns.Factory(), file.Factory(), etcd.Factory(), plugin.SourceFactory()},
		Sinks:   []core.SinkFactory{xds.Factory(), webhook.Factory(), plugin.SinkFactory()},
	}
}
