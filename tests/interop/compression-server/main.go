// Command compression-server is grpc-go's interop TestService server plus the
// compression features of the standard interop test descriptions, which
// grpc-go's own interop server does not implement (it also has no gzip
// decompressor registered, so it rejects compressed requests):
//
//   - SimpleRequest.expect_compressed / StreamingInputCallRequest.expect_compressed:
//     INVALID_ARGUMENT when the request message's compressed flag differs.
//   - SimpleRequest.response_compressed: the response is sent gzip'd or plain.
//   - ResponseParameters.compressed (StreamingOutputCall): per-message choice.
//
// Every other method is grpc-go's interop.NewTestServer() unchanged. Used as
// "grpc-go's server" for our interop-client's compression cases.
//
// Flags: --port N (default 10000), --use_tls (only false is supported).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/interop"
	"google.golang.org/grpc/status"

	"grpcchat.test/interop/internal/msgstats"

	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

var (
	port   = flag.Int("port", 10000, "port to listen on (127.0.0.1 and all other interfaces)")
	useTLS = flag.Bool("use_tls", false, "only false is supported")
)

type server struct {
	testgrpc.TestServiceServer // grpc-go's interop test server
}

// checkExpectCompressed enforces the expect_compressed field for the message
// the RPC received last.
func checkExpectCompressed(ctx context.Context, expect *testpb.BoolValue) error {
	if expect == nil {
		return nil
	}
	got, ok := msgstats.From(ctx).Last()
	if !ok {
		return status.Error(codes.Internal, "compression-server: no message recorded")
	}
	if got != expect.GetValue() {
		return status.Errorf(codes.InvalidArgument,
			"expect_compressed=%v but the message's compressed flag was %v", expect.GetValue(), got)
	}
	return nil
}

func (s *server) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if err := checkExpectCompressed(ctx, req.GetExpectCompressed()); err != nil {
		return nil, err
	}
	if rc := req.GetResponseCompressed(); rc != nil {
		name := encoding.Identity
		if rc.GetValue() {
			name = gzip.Name
		}
		if err := grpc.SetSendCompressor(ctx, name); err != nil {
			return nil, status.Errorf(codes.Internal, "compression-server: SetSendCompressor(%q): %v", name, err)
		}
	}
	return s.TestServiceServer.UnaryCall(ctx, req)
}

func (s *server) StreamingInputCall(stream testgrpc.TestService_StreamingInputCallServer) error {
	var sum int
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: int32(sum)})
		}
		if err != nil {
			return err
		}
		if err := checkExpectCompressed(stream.Context(), req.GetExpectCompressed()); err != nil {
			return err
		}
		sum += len(req.GetPayload().GetBody())
	}
}

// StreamingOutputCall honours ResponseParameters.compressed per message. A
// call's compressor is chosen when the call starts (it follows the request's
// grpc-encoding); messages that must be compressed are sent after switching
// the call to gzip, messages that must not be are pre-encoded with the call's
// original compressor (none, when the request was uncompressed, as in
// server_compressed_streaming).
func (s *server) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	ctx := stream.Context()
	params := req.GetResponseParameters()
	for _, p := range params {
		if p.GetCompressed().GetValue() {
			if err := grpc.SetSendCompressor(ctx, gzip.Name); err != nil {
				return status.Errorf(codes.Internal, "compression-server: SetSendCompressor: %v", err)
			}
			break
		}
	}
	for _, p := range params {
		if us := p.GetIntervalUs(); us > 0 {
			select {
			case <-time.After(time.Duration(us) * time.Microsecond):
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			}
		}
		resp := &testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{
			Type: testpb.PayloadType_COMPRESSABLE,
			Body: make([]byte, p.GetSize()),
		}}
		if p.GetCompressed() != nil && !p.GetCompressed().GetValue() {
			var plain grpc.PreparedMsg
			if err := plain.Encode(stream, resp); err != nil {
				return err
			}
			if err := stream.SendMsg(&plain); err != nil {
				return err
			}
			continue
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
	if st := req.GetResponseStatus(); st != nil && st.GetCode() != 0 {
		return status.Error(codes.Code(st.GetCode()), st.GetMessage())
	}
	return nil
}

func main() {
	flag.Parse()
	if *useTLS {
		log.Fatal("compression-server: --use_tls=true is not supported")
	}
	lis, err := net.Listen("tcp", fmt.Sprintf(":%d", *port))
	if err != nil {
		log.Fatalf("compression-server: listen: %v", err)
	}
	s := grpc.NewServer(grpc.StatsHandler(msgstats.Handler{Server: true}))
	testgrpc.RegisterTestServiceServer(s, &server{TestServiceServer: interop.NewTestServer()})
	log.Printf("compression-server: listening on %s", lis.Addr())
	if err := s.Serve(lis); err != nil {
		log.Fatalf("compression-server: %v", err)
	}
}
