package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Standard Webhooks 1.0 (https://www.standardwebhooks.com): every request
// carries webhook-id, webhook-timestamp (Unix seconds) and
// webhook-signature, a space-separated list of "v1,<base64 HMAC-SHA256 of
// id.timestamp.body>", one per secret.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// Secret is a signing key. Its text form is "whsec_" followed by the key in
// base64 (Standard Webhooks); keys of 24 to 64 bytes are accepted.
type Secret struct {
	key []byte
}

// ErrSecret is wrapped by errors about a secret's text.
var ErrSecret = errors.New("webhook: bad secret")

// ParseSecret reads "whsec_<base64>" (the prefix may be left out).
func ParseSecret(text string) (Secret, error) {
	b64 := strings.TrimPrefix(strings.TrimSpace(text), "whsec_")
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return Secret{}, fmt.Errorf("%w: not base64 after whsec_: %v", ErrSecret, err)
	}
	if len(key) < 24 || len(key) > 64 {
		return Secret{}, fmt.Errorf("%w: %d bytes, want 24 to 64", ErrSecret, len(key))
	}
	return Secret{key: key}, nil
}

// NewSecret returns a new random secret of 32 bytes: give its Text to the
// receiver and the sender (through an environment variable or a secret
// store, never a file in version control).
func NewSecret() (Secret, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return Secret{}, fmt.Errorf("webhook: new secret: %w", err)
	}
	return Secret{key: key}, nil
}

// Text returns the secret's text form, whsec_<base64>: the one method that
// shows the key.
func (s Secret) Text() string { return "whsec_" + base64.StdEncoding.EncodeToString(s.key) }

// String returns a redacted form, "whsec_…" and the key's length, so that a
// secret printed or logged by mistake shows nothing of the key.
func (s Secret) String() string { return fmt.Sprintf("whsec_…(redacted, %d bytes)", len(s.key)) }

// GoString is String, for %#v.
func (s Secret) GoString() string { return s.String() }

// MarshalText is String: a secret encoded as JSON, YAML or a log field shows
// nothing of the key.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

func (s Secret) sign(id, ts string, body []byte) []byte {
	mac := hmac.New(sha256.New, s.key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(ts))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return mac.Sum(nil)
}

// Sign sets the three Standard Webhooks headers of a request: id, the
// timestamp at, and one v1 signature per secret (several during a key
// rotation, so that receivers holding either key accept the request).
func Sign(h http.Header, id string, at time.Time, body []byte, secrets ...Secret) {
	ts := strconv.FormatInt(at.Unix(), 10)
	sigs := make([]string, len(secrets))
	for i, s := range secrets {
		sigs[i] = "v1," + base64.StdEncoding.EncodeToString(s.sign(id, ts, body))
	}
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, ts)
	h.Set(HeaderSignature, strings.Join(sigs, " "))
}

// Verification errors (wrapped by Verify's).
var (
	ErrMissingHeaders = errors.New("webhook: missing webhook-id, webhook-timestamp or webhook-signature")
	ErrTimestamp      = errors.New("webhook: timestamp outside the tolerance")
	ErrSignature      = errors.New("webhook: no valid signature")
)

// Verify checks a request's Standard Webhooks headers against body: a
// timestamp within tolerance of now (either way), and at least one v1
// signature made with one of the secrets (compared in constant time). It
// returns the webhook id.
func Verify(h http.Header, body []byte, now time.Time, tolerance time.Duration, secrets ...Secret) (string, error) {
	id, ts, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || ts == "" || sigs == "" {
		return "", ErrMissingHeaders
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return id, fmt.Errorf("%w: %q is not Unix seconds", ErrTimestamp, ts)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return id, fmt.Errorf("%w: %s off, tolerance %s", ErrTimestamp, d.Round(time.Second), tolerance)
	}
	for _, s := range secrets {
		want := s.sign(id, ts, body)
		for _, sig := range strings.Fields(sigs) {
			version, b64, ok := strings.Cut(sig, ",")
			if !ok || version != "v1" {
				continue
			}
			got, err := base64.StdEncoding.DecodeString(b64)
			if err == nil && hmac.Equal(got, want) {
				return id, nil
			}
		}
	}
	return id, ErrSignature
}
