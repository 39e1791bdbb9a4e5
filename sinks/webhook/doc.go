// Package webhook is disco's webhook sink: it tells HTTP receivers about
// endpoint changes, for consumers that are not Go programs (a config
// generator, a load balancer's API, an alert).
//
//	s, err := webhook.New("https://lb-config.internal/disco",
//		webhook.WithSecrets(os.Getenv("DISCO_WEBHOOK_SECRET")), // whsec_...
//		webhook.WithForm(wire.DeltaForm))
//	sub, err := s.Subscribe(hub, targets...) // one lane per target
//
// Each delivery is a POST of one update in core's wire form (schema
// disco.update.v1, see core/SCHEMA.md), signed as Standard Webhooks 1.0
// says (webhook-id, webhook-timestamp, webhook-signature: v1 HMAC-SHA256 of
// id.timestamp.body, one signature per secret during a rotation).
//
// Promises:
//
//   - The receiver ends with the exact final state of every target, however
//     long it was down: core keeps only the newest state per target (memory
//     O(targets)), and a failed delivery is retried with the newest state on
//     a jittered exponential schedule, or after the receiver's Retry-After
//     (429, 503).
//   - Ordered: per target, seq never goes backwards within an epoch, and at
//     most one request is in flight; targets are delivered independently.
//   - Idempotent: webhook-id is derived from target, epoch, seq and base
//     seq, the same on every retry.
//   - A receiver that lost its state answers 409 (StatusResync) and gets the
//     full state; 410 Gone stops delivery to it for good (Sender.Gone).
//   - Redirects are failures, never followed; response bodies are read up
//     to 4 KiB; every request has a deadline, so a receiver that hangs or
//     trickles bytes costs its own lanes a timeout and no one else anything.
//
// Receiver is the receiving side in Go: verification, replay protection,
// decoding and state keeping in one http.Handler.
package webhook
