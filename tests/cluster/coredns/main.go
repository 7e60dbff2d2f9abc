// CoreDNS with only the plugins the real node's cluster DNS needs (tests/cluster/node.sh writes
// its Corefile): pods resolve Services and headless-Service pod names (<job>-master-0) from the
// API server. Built by tests/cluster/build.sh from the coredns Go module at COREDNS_VERSION;
// the plugin list replaces CoreDNS's generated one, in the order of its plugin.cfg.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{"bind", "ready", "errors", "log", "cache", "kubernetes"}
}

func main() {
	coremain.Run()
}
