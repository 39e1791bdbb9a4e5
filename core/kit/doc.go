// Package kit holds the building blocks disco's modules share, beside the
// contract in package core: the jittered backoff and the wait between
// retries (Backoff, Sleep), values shared by reference count (Shared), and
// the one shape of options every module's constructor takes (Option,
// Common, the With* helpers), in which a bad value is an error at
// construction naming the option and what it allows.
//
// A program composing sources and sinks rarely needs it; a module that
// implements one does.
package kit
