// Package msgstats records, per RPC, whether each received message arrived
// with the gRPC per-message "compressed" flag set.
//
// grpc-go has no public API that exposes the flag, so it is inferred from the
// stats.InPayload event: for a compressed message CompressedLength is the size
// on the wire and Length the decompressed size; for an uncompressed message the
// two are equal. The interop payloads are long runs of zeros, so a gzip'd
// message is always much smaller than its plain form and the inference is exact
// for these tests.
package msgstats

import (
	"context"
	"sync"

	"google.golang.org/grpc/stats"
)

type key struct{}

// Recorder collects the compressed flag of each message received on one RPC.
type Recorder struct {
	mu         sync.Mutex
	compressed []bool
}

// With returns a child context that carries a fresh Recorder. Pass the context
// to the RPC (client side) and read the recorder afterwards.
func With(ctx context.Context) (context.Context, *Recorder) {
	r := &Recorder{}
	return context.WithValue(ctx, key{}, r), r
}

// From returns the Recorder attached by With or by the server-side Handler.
func From(ctx context.Context) *Recorder {
	r, _ := ctx.Value(key{}).(*Recorder)
	return r
}

// Received returns the compressed flags of the messages received so far.
func (r *Recorder) Received() []bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]bool(nil), r.compressed...)
}

// Last returns the flag of the most recently received message.
func (r *Recorder) Last() (compressed bool, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.compressed) == 0 {
		return false, false
	}
	return r.compressed[len(r.compressed)-1], true
}

// Handler is a stats.Handler feeding the Recorders. On a server (Server: true)
// it attaches a Recorder to every RPC's context itself; on a client the caller
// attaches one with With.
type Handler struct{ Server bool }

func (h Handler) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	if h.Server {
		ctx, _ = With(ctx)
	}
	return ctx
}

func (h Handler) HandleRPC(ctx context.Context, s stats.RPCStats) {
	p, ok := s.(*stats.InPayload)
	if !ok {
		return
	}
	if r := From(ctx); r != nil {
		r.mu.Lock()
		r.compressed = append(r.compressed, p.CompressedLength != p.Length)
		r.mu.Unlock()
	}
}

func (Handler) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (Handler) HandleConn(context.Context, stats.ConnStats)                       {}
