// Package sparkplugb is the Sparkplug B payload schema (sparkplug_b.proto, from the Sparkplug 3.0
// specification) compiled with google.golang.org/protobuf. The generated sparkplug_b.pb.go is
// committed; to make it again (protoc from Debian's protobuf-compiler, protoc-gen-go at the
// version go.mod pins for google.golang.org/protobuf):
//
//	go generate ./outputs/mqtt/sparkplugb
package sparkplugb

//go:generate go build -o protoc-gen-go.tmp google.golang.org/protobuf/cmd/protoc-gen-go
//go:generate protoc --plugin=protoc-gen-go=protoc-gen-go.tmp --go_out=. --go_opt=paths=source_relative sparkplug_b.proto
//go:generate rm -f protoc-gen-go.tmp
