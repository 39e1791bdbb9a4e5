package kit

import (
	"fmt"
	"time"

	"go.uber.org/zap"
)

// Every disco module's constructor takes options of one shape: a function
// that applies itself to the module's configuration and fails, at
// construction, for a value out of range. Option is that shape for a
// configuration of type C; a module declares
//
//	type Option = kit.Option[*options]
//
// and its constructor calls Apply. The options every module has (WithLogger
// and a backoff) live in Common, which a configuration embeds.
type Option[C any] func(C) error

// OptionError says which option had a bad value and what it allows.
type OptionError struct {
	Option string // "WithTimeout"
	Value  string // "-1s"
	Want   string // "more than 0"
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("option %s(%s): want %s", e.Option, e.Value, e.Want)
}

// Apply applies opts to c in order and returns the first error.
func Apply[C any](c C, opts ...Option[C]) error {
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(c); err != nil {
			return err
		}
	}
	return nil
}

// Common is the configuration every module has: its logger and its retry
// backoff. Embed it in a module's configuration.
type Common struct {
	// Log is never nil once defaults are set (zap.NewNop()).
	Log *zap.Logger
	// Backoff between retries.
	Backoff Backoff
}

// Kit returns c: the method through which the shared options reach it.
func (c *Common) Kit() *Common { return c }

// HasCommon is a configuration that embeds Common.
type HasCommon interface{ Kit() *Common }

// WithLogger sets the logger for lifecycle events and errors (nil: none).
func WithLogger[C HasCommon](l *zap.Logger) Option[C] {
	return func(c C) error {
		if l == nil {
			l = zap.NewNop()
		}
		c.Kit().Log = l
		return nil
	}
}

// WithBackoff sets the jittered exponential backoff between retries, from
// min to max: 0 < min <= max <= 24h, else an OptionError naming option.
func WithBackoff[C HasCommon](option string, min, max time.Duration) Option[C] {
	return func(c C) error {
		if err := CheckBackoff(option, min, max); err != nil {
			return err
		}
		c.Kit().Backoff = Backoff{Min: min, Max: max}
		return nil
	}
}

// CheckBackoff checks the bounds of a backoff: 0 < min <= max <= 24h.
func CheckBackoff(option string, min, max time.Duration) error {
	if min <= 0 || max < min || max > 24*time.Hour {
		return &OptionError{Option: option, Value: fmt.Sprintf("%v, %v", min, max), Want: "0 < min <= max <= 24h"}
	}
	return nil
}

// Positive checks 0 < d <= max (a timeout, an interval).
func Positive(option string, d, max time.Duration) error {
	if d <= 0 || d > max {
		return &OptionError{Option: option, Value: d.String(), Want: fmt.Sprintf("more than 0 and at most %v", max)}
	}
	return nil
}

// NonNegative checks 0 <= d <= max (a grace period, a linger; 0 turns it
// off).
func NonNegative(option string, d, max time.Duration) error {
	if d < 0 || d > max {
		return &OptionError{Option: option, Value: d.String(), Want: fmt.Sprintf("0 (off) to %v", max)}
	}
	return nil
}

// Between checks lo <= n <= hi for a count or a size.
func Between[N ~int | ~int64 | ~uint16 | ~uint32](option string, n, lo, hi N) error {
	if n < lo || n > hi {
		return &OptionError{Option: option, Value: fmt.Sprint(n), Want: fmt.Sprintf("%v to %v", lo, hi)}
	}
	return nil
}

// Checked returns the option that fails with err (a check's result: nil
// when the value is in range) or else applies set: one line per option.
//
//	func WithTimeout(d time.Duration) Option {
//		return kit.Checked(kit.Positive("WithTimeout", d, time.Minute), func(o *options) { o.timeout = d })
//	}
func Checked[C any](err error, set func(C)) Option[C] {
	return func(c C) error {
		if err != nil {
			return err
		}
		set(c)
		return nil
	}
}
