// Command protoset writes a FileDescriptorSet (a "protoset", as read by
// `ghz --protoset` and `protoc --descriptor_set_in`) describing
// grpc/testing/test.proto and everything it imports, taken from the
// descriptors compiled into grpc-go's published grpc_testing package, so that
// no .proto file has to be kept in this repository.
//
// Usage: protoset -o FILE
package main

import (
	"flag"
	"log"
	"os"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	testpb "google.golang.org/grpc/interop/grpc_testing"
)

func main() {
	out := flag.String("o", "", "output file")
	flag.Parse()
	if *out == "" {
		log.Fatal("protoset: -o FILE is required")
	}
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	// Dependencies first, as protoc orders them.
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := 0; i < imports.Len(); i++ {
			add(imports.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	add(testpb.File_grpc_testing_test_proto)
	b, err := proto.Marshal(set)
	if err != nil {
		log.Fatalf("protoset: %v", err)
	}
	if err := os.WriteFile(*out, b, 0o644); err != nil {
		log.Fatalf("protoset: %v", err)
	}
}
