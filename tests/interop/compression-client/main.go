// Command compression-client runs the four compression interop cases of the
// standard gRPC interop test descriptions against a grpc.testing.TestService:
//
//	client_compressed_unary, server_compressed_unary,
//	client_compressed_streaming, server_compressed_streaming
//
// grpc-go's own interop client does not implement them, hence this program.
// It uses grpc-go and grpc-go's published generated package for test.proto.
//
// Exit status: 0 when every selected case passed, 1 otherwise (a message on
// stderr says which check failed), 2 for bad flags.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/status"

	"grpcchat.test/interop/internal/msgstats"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

var (
	serverHost = flag.String("server_host", "localhost", "server host to connect to")
	serverPort = flag.Int("server_port", 10000, "server port to connect to")
	testCase   = flag.String("test_case", "all", "client_compressed_unary | server_compressed_unary | client_compressed_streaming | server_compressed_streaming | all")
	useTLS     = flag.Bool("use_tls", false, "only false is supported")
	timeout    = flag.Duration("timeout", 30*time.Second, "deadline for each test case")
)

type testFn func(ctx context.Context, c testgrpc.TestServiceClient) error

var cases = []struct {
	name string
	fn   testFn
}{
	{"client_compressed_unary", clientCompressedUnary},
	{"server_compressed_unary", serverCompressedUnary},
	{"client_compressed_streaming", clientCompressedStreaming},
	{"server_compressed_streaming", serverCompressedStreaming},
}

func main() {
	flag.Parse()
	if *useTLS {
		fmt.Fprintln(os.Stderr, "compression-client: --use_tls=true is not supported")
		os.Exit(2)
	}
	var selected []int
	for i, c := range cases {
		if *testCase == "all" || *testCase == c.name {
			selected = append(selected, i)
		}
	}
	if len(selected) == 0 {
		fmt.Fprintf(os.Stderr, "compression-client: unknown --test_case %q\n", *testCase)
		os.Exit(2)
	}

	target := "passthrough:///" + net.JoinHostPort(*serverHost, strconv.Itoa(*serverPort))
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStatsHandler(msgstats.Handler{}))
	if err != nil {
		fmt.Fprintf(os.Stderr, "compression-client: dial %s: %v\n", target, err)
		os.Exit(1)
	}
	defer conn.Close()
	client := testgrpc.NewTestServiceClient(conn)

	failed := 0
	for _, i := range selected {
		c := cases[i]
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		err := c.fn(ctx, client)
		cancel()
		if err != nil {
			failed++
			fmt.Fprintf(os.Stderr, "FAIL %s: %v\n", c.name, err)
		} else {
			fmt.Printf("PASS %s\n", c.name)
		}
	}
	if failed > 0 {
		os.Exit(1)
	}
}

func zeros(n int) *testpb.Payload {
	return &testpb.Payload{Type: testpb.PayloadType_COMPRESSABLE, Body: make([]byte, n)}
}

func boolValue(b bool) *testpb.BoolValue { return &testpb.BoolValue{Value: b} }

func checkPayload(what string, p *testpb.Payload, size int) error {
	body := p.GetBody()
	if len(body) != size {
		return fmt.Errorf("%s: response payload is %d bytes, want %d", what, len(body), size)
	}
	if !bytes.Equal(body, make([]byte, size)) {
		return fmt.Errorf("%s: response payload is not all zeros", what)
	}
	return nil
}

// checkFlags compares the per-message compressed flags seen on an RPC.
func checkFlags(what string, rec *msgstats.Recorder, want ...bool) error {
	got := rec.Received()
	if len(got) != len(want) {
		return fmt.Errorf("%s: received %d messages, want %d", what, len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			return fmt.Errorf("%s: response message %d compressed flag = %v, want %v", what, i+1, got[i], want[i])
		}
	}
	return nil
}

func wantCode(what string, err error, code codes.Code) error {
	if err == nil {
		return fmt.Errorf("%s: call succeeded, want status %v", what, code)
	}
	if s, _ := status.FromError(err); s.Code() != code {
		return fmt.Errorf("%s: got status %v (%q), want %v", what, s.Code(), s.Message(), code)
	}
	return nil
}

func clientCompressedUnary(ctx context.Context, c testgrpc.TestServiceClient) error {
	const reqSize, respSize = 271828, 314159
	req := func(expect bool) *testpb.SimpleRequest {
		return &testpb.SimpleRequest{
			ResponseType:     testpb.PayloadType_COMPRESSABLE,
			ResponseSize:     respSize,
			Payload:          zeros(reqSize),
			ExpectCompressed: boolValue(expect),
		}
	}

	// 1. Feature probe: expect_compressed=true on an UNcompressed message.
	_, err := c.UnaryCall(ctx, req(true))
	if e := wantCode("probe (uncompressed request with expect_compressed=true)", err, codes.InvalidArgument); e != nil {
		return e
	}

	// 2. Compressed request, expect_compressed=true.
	resp, err := c.UnaryCall(ctx, req(true), grpc.UseCompressor(gzip.Name))
	if err != nil {
		return fmt.Errorf("compressed request with expect_compressed=true: %v", err)
	}
	if err := checkPayload("compressed request", resp.GetPayload(), respSize); err != nil {
		return err
	}

	// 3. Uncompressed request, expect_compressed=false.
	resp, err = c.UnaryCall(ctx, req(false))
	if err != nil {
		return fmt.Errorf("uncompressed request with expect_compressed=false: %v", err)
	}
	return checkPayload("uncompressed request", resp.GetPayload(), respSize)
}

func serverCompressedUnary(ctx context.Context, c testgrpc.TestServiceClient) error {
	const reqSize, respSize = 271828, 314159
	for _, compressed := range []bool{true, false} {
		what := fmt.Sprintf("response_compressed=%v", compressed)
		rctx, rec := msgstats.With(ctx)
		resp, err := c.UnaryCall(rctx, &testpb.SimpleRequest{
			ResponseType:       testpb.PayloadType_COMPRESSABLE,
			ResponseSize:       respSize,
			Payload:            zeros(reqSize),
			ResponseCompressed: boolValue(compressed),
		})
		if err != nil {
			return fmt.Errorf("%s: %v", what, err)
		}
		if err := checkPayload(what, resp.GetPayload(), respSize); err != nil {
			return err
		}
		if err := checkFlags(what, rec, compressed); err != nil {
			return err
		}
	}
	return nil
}

func clientCompressedStreaming(ctx context.Context, c testgrpc.TestServiceClient) error {
	const size1, size2 = 27182, 45904
	first := &testpb.StreamingInputCallRequest{Payload: zeros(size1), ExpectCompressed: boolValue(true)}
	second := &testpb.StreamingInputCallRequest{Payload: zeros(size2), ExpectCompressed: boolValue(false)}

	// 1. Feature probe: an UNcompressed first message with expect_compressed=true.
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	probe, err := c.StreamingInputCall(pctx)
	if err != nil {
		return fmt.Errorf("probe: starting call: %v", err)
	}
	// grpc-go compresses every message of a call that has a compressor. To
	// send the second message of step 2 uncompressed on a compressed call, it
	// is pre-encoded on this (uncompressor-less) call and sent as-is later.
	var plainSecond grpc.PreparedMsg
	if err := plainSecond.Encode(probe, second); err != nil {
		return fmt.Errorf("preparing uncompressed message: %v", err)
	}
	if err := probe.Send(first); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("probe: send: %v", err)
	}
	_, err = probe.CloseAndRecv()
	if e := wantCode("probe (uncompressed message with expect_compressed=true)", err, codes.InvalidArgument); e != nil {
		return e
	}
	pcancel()

	// 2. Compressed first message, uncompressed second message.
	stream, err := c.StreamingInputCall(ctx, grpc.UseCompressor(gzip.Name))
	if err != nil {
		return fmt.Errorf("starting call: %v", err)
	}
	if err := stream.Send(first); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("sending compressed message: %v", err)
	}
	if err := stream.SendMsg(&plainSecond); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("sending uncompressed message: %v", err)
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return fmt.Errorf("StreamingInputCall: %v", err)
	}
	if got, want := resp.GetAggregatedPayloadSize(), int32(size1+size2); got != want {
		return fmt.Errorf("aggregated_payload_size = %d, want %d", got, want)
	}
	return nil
}

func serverCompressedStreaming(ctx context.Context, c testgrpc.TestServiceClient) error {
	sizes := []int{31415, 92653}
	flags := []bool{true, false}
	req := &testpb.StreamingOutputCallRequest{ResponseType: testpb.PayloadType_COMPRESSABLE}
	for i := range sizes {
		req.ResponseParameters = append(req.ResponseParameters, &testpb.ResponseParameters{
			Size:       int32(sizes[i]),
			Compressed: boolValue(flags[i]),
		})
	}
	sctx, rec := msgstats.With(ctx)
	stream, err := c.StreamingOutputCall(sctx, req)
	if err != nil {
		return fmt.Errorf("starting call: %v", err)
	}
	for i, size := range sizes {
		resp, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("receiving response %d: %v", i+1, err)
		}
		if err := checkPayload(fmt.Sprintf("response %d", i+1), resp.GetPayload(), size); err != nil {
			return err
		}
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		if err == nil {
			return fmt.Errorf("received more than %d responses", len(sizes))
		}
		return fmt.Errorf("call ended with %v, want OK", err)
	}
	return checkFlags("StreamingOutputCall", rec, flags...)
}
