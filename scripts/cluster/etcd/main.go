// Command etcd is the etcd server built from its Go module: etcd ships no main package as a module
// (its own main lives in a module path that cannot be required), so the local cluster wraps etcdmain.Main.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
