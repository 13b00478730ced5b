//go:build tools

// Package tools pins the etcd commands that cluster/build.sh builds.
package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/server/v3"
)
