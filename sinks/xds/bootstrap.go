package xds

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/disco-lb/disco/core"
)

// Bootstrap is what a gRPC client needs to use this server: the JSON of its
// xDS bootstrap, which Go, Java, C++, Python and Node clients read from the
// file named by GRPC_XDS_BOOTSTRAP (or the JSON itself in
// GRPC_XDS_BOOTSTRAP_CONFIG).
type Bootstrap struct {
	// ServerURI is this server's address as the client dials it
	// ("xds.disco.svc:18000", "127.0.0.1:18000"). Required.
	ServerURI string
	// NodeID names the client in the server's logs (default "disco-client").
	NodeID string
	// Zone is the client's zone. Set, the client asks for the zone variant
	// of every target (client_default_listener_resource_name_template
	// "%s?zone=<zone>"): its own zone's endpoints at priority 0, the rest at
	// priority 1, by core's zone rule (route.Locality).
	Zone string
	// Client is this client's own id, unique among the server's clients
	// (a pod name, from the downward API). Set, the client asks for its
	// own assignment of every target ("%s?client=<id>" in the template),
	// which is its subset when the server subsets (WithSubsetSize);
	// letters, digits and - . _ : only.
	Client string
	// TLS, when set, makes the client check the server's certificate
	// against CAFile and, with CertFile and KeyFile, present its own (mTLS):
	// channel_creds of type "tls" (gRFC A65: grpc-go 1.61+ and grpc-java;
	// see the README for the other languages). Without, the channel is
	// insecure.
	TLS *BootstrapTLS
}

// BootstrapTLS are a client's certificate files for the xDS channel.
type BootstrapTLS struct {
	CAFile   string
	CertFile string // with KeyFile: mTLS
	KeyFile  string
}

// JSON returns the bootstrap document.
func (b Bootstrap) JSON() ([]byte, error) {
	if b.ServerURI == "" {
		return nil, fmt.Errorf("xds: bootstrap: no server URI: %w", core.ErrInvalid)
	}
	creds := map[string]any{"type": "insecure"}
	if t := b.TLS; t != nil {
		if t.CAFile == "" || (t.CertFile == "") != (t.KeyFile == "") {
			return nil, fmt.Errorf("xds: bootstrap: TLS needs a CA file, and a certificate with its key or neither: %w", core.ErrInvalid)
		}
		cfg := map[string]string{"ca_certificate_file": t.CAFile}
		if t.CertFile != "" {
			cfg["certificate_file"], cfg["private_key_file"] = t.CertFile, t.KeyFile
		}
		creds = map[string]any{"type": "tls", "config": cfg}
	}
	// grpc-js refuses a node without a locality, even an empty one.
	locality := map[string]string{}
	node := map[string]any{"id": b.NodeID, "locality": locality}
	if b.NodeID == "" {
		node["id"] = "disco-client"
	}
	doc := map[string]any{
		"xds_servers": []any{map[string]any{
			"server_uri": b.ServerURI, "channel_creds": []any{creds}, "server_features": []string{"xds_v3"},
		}},
		"node": node,
	}
	var params []string
	if b.Zone != "" {
		locality["zone"] = b.Zone
		params = append(params, "zone="+b.Zone)
	}
	if b.Client != "" {
		if strings.Trim(b.Client, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._:") != "" {
			return nil, fmt.Errorf("xds: bootstrap: client id %q: letters, digits and - . _ : only: %w", b.Client, core.ErrInvalid)
		}
		params = append(params, "client="+b.Client)
	}
	if len(params) > 0 {
		doc["client_default_listener_resource_name_template"] = "%s?" + strings.Join(params, "&")
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // "%s?zone=z&client=c" as written, not \u0026
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// Write writes the bootstrap document to path (mode 0644).
func (b Bootstrap) Write(path string) error {
	data, err := b.JSON()
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
