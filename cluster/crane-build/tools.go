//go:build tools

// Package tools pins the crane command that cluster/build.sh builds.
package tools

import _ "github.com/google/go-containerregistry/cmd/crane"
