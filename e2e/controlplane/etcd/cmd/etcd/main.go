// Command etcd is upstream's etcd server, built from Go modules because
// Debian's etcd is too old for current kube-apiserver watch features.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
