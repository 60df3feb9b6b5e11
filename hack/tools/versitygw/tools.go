// Package tools only exists so that the build module has a package; binaries are built with `go build <pkg>`.
package tools
