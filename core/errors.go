package core

import (
	"errors"
	"time"
)

// Sentinel errors. Sources wrap one of the first four (with %w) so that core,
// and the sinks behind it, can tell what kind of failure a target has.
var (
	// ErrUnavailable: the backend cannot be reached now (API server down,
	// DNS timeout, unreadable file). The last good state stays in force.
	ErrUnavailable = errors.New("backend unavailable")
	// ErrNotFound: the target does not exist (no such service or name).
	ErrNotFound = errors.New("target not found")
	// ErrForbidden: the source is not allowed to read the target (RBAC).
	ErrForbidden = errors.New("forbidden")
	// ErrInvalid: the target or the data read for it is malformed.
	ErrInvalid = errors.New("invalid")

	// ErrResync is returned by a sink that lost what it held for a target
	// (a restarted plugin, a webhook receiver that lost its data): its next
	// update carries the full state as added, with BaseSeq 0. Set.Apply
	// wraps it when a delta does not fit the set it is applied to, so a
	// sink that returns Set.Apply's error as it is gets the full state.
	ErrResync = errors.New("resync needed")

	// ErrClosed is returned by Hub methods after Close.
	ErrClosed = errors.New("core: closed")
	// ErrNotWatched is returned by WaitSynced for a target nobody watches.
	ErrNotWatched = errors.New("core: target not watched")
	// ErrEnded is wrapped by WaitSynced when the source's Watch of a target
	// returned before the target's first sync.
	ErrEnded = errors.New("watch ended")
)

// ErrorKind classifies why a target is stale. It travels inside State as
// plain data (JSON: the string value).
type ErrorKind string

// The error kinds, one per sentinel error.
const (
	KindNone        ErrorKind = ""
	KindUnavailable ErrorKind = "unavailable"
	KindNotFound    ErrorKind = "not_found"
	KindForbidden   ErrorKind = "forbidden"
	KindInvalid     ErrorKind = "invalid"
)

// KindOf classifies err by the sentinel it wraps. Errors wrapping none of
// them are KindUnavailable: an unknown failure is treated as transient.
func KindOf(err error) ErrorKind {
	switch {
	case err == nil:
		return KindNone
	case errors.Is(err, ErrNotFound):
		return KindNotFound
	case errors.Is(err, ErrForbidden):
		return KindForbidden
	case errors.Is(err, ErrInvalid):
		return KindInvalid
	default:
		return KindUnavailable
	}
}

// Sentinel returns the sentinel error of the kind (nil for KindNone).
func (k ErrorKind) Sentinel() error {
	switch k {
	case KindNone:
		return nil
	case KindNotFound:
		return ErrNotFound
	case KindForbidden:
		return ErrForbidden
	case KindInvalid:
		return ErrInvalid
	default:
		return ErrUnavailable
	}
}

// Permanent marks err as one that retrying cannot fix, whatever it wraps: a
// sink returning it has the update logged, counted and not accepted (the
// next delta still holds its changes); a source whose Watch returns it is
// not restarted until the target is subscribed to anew. Permanent(nil) is
// nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return markedError{err: err, retryable: false}
}

// Retry marks err as transient, whatever it wraps, to be retried after
// after (0: the hub's jittered backoff): a sink returning it gets the
// target's newest state again then (a webhook honouring a receiver's
// Retry-After passes its delay), and a source whose Watch returns it is
// restarted then. Packages mark their errors without importing core by
// giving them a method `Retryable() bool` (and `RetryAfter()
// time.Duration` for a delay). Retry(nil, d) is nil.
func Retry(err error, after time.Duration) error {
	if err == nil {
		return nil
	}
	return markedError{err: err, retryable: true, after: max(after, 0)}
}

// IsPermanent applies core's one error rule, for sources and sinks alike:
// an error is permanent if it (or an error it wraps) was marked with
// Permanent, or, unless marked with Retry first, if it is classified
// ErrInvalid, ErrNotFound or ErrForbidden. Every other error is transient
// and retried with a jittered backoff. nil is not permanent.
func IsPermanent(err error) bool {
	if err == nil {
		return false
	}
	var r interface{ Retryable() bool }
	if errors.As(err, &r) {
		return !r.Retryable()
	}
	switch KindOf(err) {
	case KindInvalid, KindNotFound, KindForbidden:
		return true
	}
	return false
}

type markedError struct {
	err       error
	retryable bool
	after     time.Duration
}

func (e markedError) Error() string   { return e.err.Error() }
func (e markedError) Unwrap() error   { return e.err }
func (e markedError) Retryable() bool { return e.retryable }

// RetryAfter is the delay a Retry asked for (0: the hub's backoff).
func (e markedError) RetryAfter() time.Duration { return e.after }

// RetryDelay returns the delay err asks for, if it was marked with Retry
// and a delay above 0 (or has a RetryAfter method).
func RetryDelay(err error) (time.Duration, bool) {
	var r interface{ RetryAfter() time.Duration }
	if errors.As(err, &r) && r.RetryAfter() > 0 {
		return r.RetryAfter(), true
	}
	return 0, false
}
