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
	// update carries the full state as added, with BaseSeq 0. Set.Apply and
	// Replica wrap it when a delta does not fit the state it is applied to.
	ErrResync = errors.New("resync needed")

	// ErrDuplicate is wrapped by Replica.Next for an update that is not
	// newer than the one it holds (a retried or late delivery): acknowledge
	// it and apply nothing.
	ErrDuplicate = errors.New("update already applied")

	// ErrClosed is returned by Hub and Pipeline methods after Close.
	ErrClosed = errors.New("core: closed")
	// ErrNotWatched is returned by WaitSynced for a target nobody watches.
	ErrNotWatched = errors.New("core: target not watched")
	// ErrAlreadyRunning is returned by a second call of Pipeline.Run.
	ErrAlreadyRunning = errors.New("core: pipeline already running")
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

// Retryable marks err as transient, whatever it wraps: a sink returning it
// gets the update again after a jittered backoff (with the newest state by
// then), and a source whose Watch returns it is restarted after a backoff.
// Retryable(nil) is nil.
func Retryable(err error) error {
	if err == nil {
		return nil
	}
	return markedError{err: err, retryable: true}
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

// IsPermanent applies core's one error rule, for sources and sinks alike:
// an error is permanent if it (or an error it wraps) was marked with
// Permanent, or, unless marked with Retryable first, if it is classified
// ErrInvalid, ErrNotFound or ErrForbidden. Every other error is transient
// and retried with a jittered backoff. Packages can mark their errors
// without importing core by giving them a method `Retryable() bool`. nil is
// not permanent.
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

// IsRetryable reports whether err is not nil and not permanent (see
// IsPermanent): core retries it.
func IsRetryable(err error) bool { return err != nil && !IsPermanent(err) }

type markedError struct {
	err       error
	retryable bool
}

func (e markedError) Error() string   { return e.err.Error() }
func (e markedError) Unwrap() error   { return e.err }
func (e markedError) Retryable() bool { return e.retryable }

// RetryAfter marks err as retryable, no sooner than d from now: a sink
// returning it has the target's newest state delivered again after d
// instead of after the hub's backoff. A sink with a schedule of its own
// (the webhook sink, honouring a receiver's Retry-After) uses it. Packages
// can do the same without importing core by giving their error a method
// `RetryAfter() time.Duration`. RetryAfter(nil, d) is nil.
func RetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return retryAfterError{markedError{err: err, retryable: true}, max(d, 0)}
}

// RetryDelay returns the delay err asks for (see RetryAfter).
func RetryDelay(err error) (time.Duration, bool) {
	var r interface{ RetryAfter() time.Duration }
	if errors.As(err, &r) {
		return r.RetryAfter(), true
	}
	return 0, false
}

type retryAfterError struct {
	markedError
	d time.Duration
}

func (e retryAfterError) RetryAfter() time.Duration { return e.d }
