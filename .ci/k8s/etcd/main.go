// Command etcd is etcd's server, built from go.etcd.io/etcd/server/v3 for
// disco's test control plane (`make k8s-bins`). It lives outside go.work.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
