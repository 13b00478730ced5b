//go:build tools

// Package tools pins the Jaeger command that xtask/src/jaeger.rs builds (the OTLP
// export test sends traces to it).
package tools

import _ "github.com/jaegertracing/jaeger/cmd/jaeger"
