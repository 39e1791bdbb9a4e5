package webhook

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/core/wire"
)

// ReceiverOption configures a Receiver.
type ReceiverOption func(*Receiver)

// WithTolerance sets how far a request's timestamp may be from the
// receiver's clock, either way (default 5m, as Standard Webhooks
// suggests). Ids are remembered as long, so a replayed request is answered
// without being applied again.
func WithTolerance(d time.Duration) ReceiverOption {
	return func(r *Receiver) {
		if d > 0 {
			r.tolerance = d
		}
	}
}

// WithMaxBody bounds a request body (default 64 MiB); a larger one is
// refused with 413.
func WithMaxBody(n int64) ReceiverOption {
	return func(r *Receiver) {
		if n > 0 {
			r.maxBody = n
		}
	}
}

// WithClock sets the receiver's clock (tests).
func WithClock(now func() time.Time) ReceiverOption { return func(r *Receiver) { r.now = now } }

// Receiver is the receiving side in Go: an http.Handler that verifies a
// delivery's signature and timestamp, decodes it, rebuilds the target's
// state with a wire.Replica, and calls apply with the Update an in-process
// sink would have got (complete State, Delta against what it held). apply
// runs for one delivery at a time. Answers:
//
//   - 204: applied; 200: a retry or replay of one applied already;
//   - 409 (StatusResync): a delta whose base state is not held, or apply
//     returned an error wrapping core.ErrResync: the sender sends the full
//     state;
//   - 400: not a valid update; 401: bad signature or timestamp;
//     413: too large; 405: not a POST;
//   - 500: apply failed: the sender retries with the newest state.
type Receiver struct {
	secrets   []Secret
	apply     func(context.Context, core.Update) error
	tolerance time.Duration
	maxBody   int64
	now       func() time.Time
	replica   *wire.Replica

	mu   sync.Mutex // one delivery at a time
	seen map[string]time.Time
}

// NewReceiver returns a receiver that accepts deliveries signed with any of
// secrets ("whsec_<base64>"; several during a rotation).
func NewReceiver(apply func(context.Context, core.Update) error, secrets []string, opts ...ReceiverOption) (*Receiver, error) {
	r := &Receiver{apply: apply, tolerance: 5 * time.Minute, maxBody: 64 << 20, now: time.Now,
		replica: wire.NewReplica(), seen: map[string]time.Time{}}
	if len(secrets) == 0 {
		return nil, fmt.Errorf("webhook: receiver without a secret: %w", core.ErrInvalid)
	}
	for i, text := range secrets {
		s, err := ParseSecret(text)
		if err != nil {
			return nil, fmt.Errorf("webhook: receiver secret %d: %w", i, err)
		}
		r.secrets = append(r.secrets, s)
	}
	for _, o := range opts {
		o(r)
	}
	return r, nil
}

// State returns what the receiver holds for t.
func (r *Receiver) State(t core.Target) (core.State, bool) {
	st, _, _, ok := r.replica.State(t)
	return st, ok
}

// Forget drops what the receiver holds (as a restart would): the next
// delta of each target is answered 409 and the sender resends the full
// state.
func (r *Receiver) Forget() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range r.replica.Targets() {
		r.replica.Forget(t)
	}
	clear(r.seen)
}

func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "webhook: POST only", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, r.maxBody+1))
	if err != nil {
		http.Error(w, "webhook: reading the body: "+err.Error(), http.StatusBadRequest)
		return
	}
	if int64(len(body)) > r.maxBody {
		http.Error(w, fmt.Sprintf("webhook: body over %d bytes", r.maxBody), http.StatusRequestEntityTooLarge)
		return
	}
	code, msg := r.Handle(req.Context(), req.Header, body)
	if code == http.StatusNoContent {
		w.WriteHeader(code)
		return
	}
	http.Error(w, msg, code)
}

// Handle is ServeHTTP without HTTP: it verifies, decodes and applies one
// delivery and returns the status to answer and a message.
func (r *Receiver) Handle(ctx context.Context, h http.Header, body []byte) (int, string) {
	now := r.now()
	id, err := Verify(h, body, now, r.tolerance, r.secrets...)
	if err != nil {
		return http.StatusUnauthorized, err.Error()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, at := range r.seen {
		if now.Sub(at) > 2*r.tolerance {
			delete(r.seen, k)
		}
	}
	if _, dup := r.seen[id]; dup {
		return http.StatusOK, "webhook: " + id + " applied already"
	}
	wu, err := wire.Decode(body)
	if err != nil {
		return http.StatusBadRequest, err.Error()
	}
	err = r.replica.Receive(ctx, wu, core.SinkFunc(r.apply))
	var sinkErr *wire.SinkError
	switch {
	case err == nil:
		r.seen[id] = now
		return http.StatusNoContent, ""
	case errors.Is(err, core.ErrResync): // a delta it cannot apply, or apply lost its state
		return StatusResync, err.Error()
	case errors.As(err, &sinkErr):
		return http.StatusInternalServerError, err.Error()
	case errors.Is(err, wire.ErrDuplicate):
		return http.StatusOK, err.Error()
	}
	return http.StatusBadRequest, err.Error()
}
