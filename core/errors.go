package core

import (
	"errors"
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

	// ErrClosed is returned by Hub and Pipeline methods after Close.
	ErrClosed = errors.New("core: closed")
	// ErrNotWatched is returned by WaitSynced for a target nobody watches.
	ErrNotWatched = errors.New("core: target not watched")
	// ErrAlreadyRunning is returned by a second call of Pipeline.Run.
	ErrAlreadyRunning = errors.New("core: pipeline already running")
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

// Retryable marks err as transient: a sink returning it gets the update again
// after a jittered backoff (with the newest state by then), and a source whose
// Watch returns it is restarted after a backoff. Retryable(nil) is nil.
func Retryable(err error) error {
	if err == nil {
		return nil
	}
	return retryableError{err}
}

// IsRetryable reports whether err, or any error it wraps, was marked with
// Retryable or has a method `Retryable() bool` that returns true. Packages
// can so mark their errors without importing core.
func IsRetryable(err error) bool {
	var r interface{ Retryable() bool }
	return errors.As(err, &r) && r.Retryable()
}

type retryableError struct{ err error }

func (e retryableError) Error() string   { return e.err.Error() }
func (e retryableError) Unwrap() error   { return e.err }
func (e retryableError) Retryable() bool { return true }
