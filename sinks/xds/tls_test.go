package xds_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/disco-lb/disco/core"
	"github.com/disco-lb/disco/sinks/xds"
)

// pki is a test CA with a server certificate (for 127.0.0.1) and a client
// certificate, as files.
type pki struct {
	caFile, serverCert, serverKey, clientCert, clientKey string
	pool                                                 *x509.CertPool
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	caKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "disco test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER := must(x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey))
	ca := must(x509.ParseCertificate(caDER))
	p := &pki{pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	p.caFile = write("ca.pem", "CERTIFICATE", caDER)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der := must(x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey))
		keyDER := must(x509.MarshalPKCS8PrivateKey(key))
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "PRIVATE KEY", keyDER)
	}
	p.serverCert, p.serverKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return p
}

// must returns v, failing loudly on err (test setup).
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// mtls is the server's credentials: its certificate, and a client
// certificate required and checked against the CA.
func (p *pki) mtls(t *testing.T) grpc.ServerOption {
	t.Helper()
	cert := must(tls.LoadX509KeyPair(p.serverCert, p.serverKey))
	return grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: p.pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}))
}

// The xDS channel over mTLS: a grpc-go client whose bootstrap (written by
// Bootstrap) names the CA and its certificate is served; one without a
// certificate, or without TLS, never opens a stream.
func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	b1 := startBackend(t, "b1", 21)
	tg := core.Target{Name: "greeter"}
	f := newFixture(t, map[core.Target]core.Set{tg: set(t, b1.endpoint(""))}, xds.WithServerOptions(p.mtls(t)))

	good := testgrpc.NewTestServiceClient(f.dialWith(xds.Bootstrap{ServerURI: f.uri, NodeID: "mtls",
		TLS: &xds.BootstrapTLS{CAFile: p.caFile, CertFile: p.clientCert, KeyFile: p.clientKey}}))
	serving(t, good, 10, "b1")
	f.noNACK()
	streams := f.metric("disco_xds_streams", "")

	for name, b := range map[string]xds.Bootstrap{
		"no client certificate": {ServerURI: f.uri, NodeID: "no-cert", TLS: &xds.BootstrapTLS{CAFile: p.caFile}},
		"no TLS":                {ServerURI: f.uri, NodeID: "plain"},
	} {
		c := testgrpc.NewTestServiceClient(f.dialWith(b))
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		cancel()
		if err == nil {
			t.Fatalf("%s: a call succeeded", name)
		}
		t.Logf("%s: %v", name, err)
	}
	if n := f.metric("disco_xds_streams", ""); n != streams {
		t.Fatalf("streams %v -> %v: a client without a valid certificate got a stream", streams, n)
	}
}

// The bootstrap is what the clients read: its JSON has the fields the
// gRPC clients require (grpc-js refuses a node without a locality), the
// zone's listener template, and TLS channel credentials; a bootstrap that
// cannot work is refused.
func TestBootstrapDocument(t *testing.T) {
	data := must(xds.Bootstrap{ServerURI: "xds.disco:18000", Zone: "zone-a",
		TLS: &xds.BootstrapTLS{CAFile: "/ca.pem", CertFile: "/c.pem", KeyFile: "/k.pem"}}.JSON())
	var doc struct {
		Servers []struct {
			URI   string `json:"server_uri"`
			Creds []struct {
				Type   string            `json:"type"`
				Config map[string]string `json:"config"`
			} `json:"channel_creds"`
			Features []string `json:"server_features"`
		} `json:"xds_servers"`
		Node struct {
			ID       string            `json:"id"`
			Locality map[string]string `json:"locality"`
		} `json:"node"`
		Template string `json:"client_default_listener_resource_name_template"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	s := doc.Servers[0]
	if s.URI != "xds.disco:18000" || s.Creds[0].Type != "tls" || s.Creds[0].Config["ca_certificate_file"] != "/ca.pem" ||
		s.Creds[0].Config["certificate_file"] != "/c.pem" || s.Creds[0].Config["private_key_file"] != "/k.pem" ||
		len(s.Features) != 1 || s.Features[0] != "xds_v3" {
		t.Fatalf("server: %+v", s)
	}
	if doc.Node.ID != "disco-client" || doc.Node.Locality["zone"] != "zone-a" || doc.Template != "%s?zone=zone-a" {
		t.Fatalf("node %+v, template %q", doc.Node, doc.Template)
	}
	plain := string(must(xds.Bootstrap{ServerURI: "x:1"}.JSON()))
	var p map[string]any
	if err := json.Unmarshal([]byte(plain), &p); err != nil {
		t.Fatal(err)
	}
	if _, ok := p["node"].(map[string]any)["locality"]; !ok {
		t.Fatalf("no locality in %s: grpc-js refuses it", plain)
	}
	if _, ok := p["client_default_listener_resource_name_template"]; ok {
		t.Fatalf("a template without a zone: %s", plain)
	}
	for name, b := range map[string]xds.Bootstrap{
		"no server":          {},
		"TLS without a CA":   {ServerURI: "x:1", TLS: &xds.BootstrapTLS{CertFile: "c", KeyFile: "k"}},
		"a cert without key": {ServerURI: "x:1", TLS: &xds.BootstrapTLS{CAFile: "ca", CertFile: "c"}},
	} {
		if _, err := b.JSON(); !errors.Is(err, core.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if err := (xds.Bootstrap{}).Write(filepath.Join(t.TempDir(), "b.json")); !errors.Is(err, core.ErrInvalid) {
		t.Errorf("Write of an invalid bootstrap: %v", err)
	}
}
