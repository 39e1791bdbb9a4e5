// Package dnstest runs a real DNS server for tests: Debian's dnsmasq, on
// 127.0.0.1 and a free port, authoritative for one test domain, with
// records that tests change while it runs.
//
// Host records (A and AAAA) live in a hosts file that SetHosts rewrites
// (write to a temporary file, rename) before it signals dnsmasq to reload
// (SIGHUP), so dnsmasq never reads half a file. SRV records are
// command-line options: SetSRV restarts dnsmasq on the same port. Pause
// and Resume stop and continue the process (SIGSTOP, SIGCONT), so queries
// time out as they do against a hung server. Every change returns once
// dnsmasq answers with it.
//
// Names of the domain that have no record get NXDOMAIN (dnsmasq's --local),
// never a forwarded query: the server asks no one else.
//
// dnsmasq comes from Debian's dnsmasq-base package. Without it tests skip,
// unless DISCO_REQUIRE_DNS=1 (CI sets it), in which case they fail.
package dnstest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// Required reports whether tests must fail, not skip, when dnsmasq is
// missing: DISCO_REQUIRE_DNS=1.
func Required() bool { return os.Getenv("DISCO_REQUIRE_DNS") == "1" }

// Binary returns the path of dnsmasq, or an error saying how to get it.
func Binary() (string, error) {
	if p, err := exec.LookPath("dnsmasq"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/sbin/dnsmasq", "/sbin/dnsmasq"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("dnstest: dnsmasq is missing: apt-get install -y dnsmasq-base")
}

// SRV is one SRV record.
type SRV struct {
	Target   string // host name, in the server's domain
	Port     uint16
	Priority uint16
	Weight   uint16
}

// HostRecord is a name's A and AAAA records with a TTL of their own
// (dnsmasq's --host-record).
type HostRecord struct {
	Addrs []string
	TTL   uint32
}

// CNAME is an alias's target with the CNAME record's own TTL (dnsmasq's
// --cname; the target must be a name dnsmasq knows).
type CNAME struct {
	Target string
	TTL    uint32
}

// Config configures a server.
type Config struct {
	// Domain the server answers for (default "disco.test").
	Domain string
	// TTL of every record, in seconds (default 1; 0 is allowed).
	TTL *uint32
}

// Server is a running dnsmasq.
type Server struct {
	tb     testing.TB
	bin    string
	dir    string
	domain string
	ttl    uint32
	addr   string

	mu     sync.Mutex
	hosts  map[string][]string   // name (FQDN, lower case) → addresses
	recs   map[string]HostRecord // name (FQDN) → host record with its own TTL
	cnames map[string]CNAME      // alias (FQDN) → its target
	srvs   map[string][]SRV      // name (FQDN) → records
	cmd    *exec.Cmd
	done   chan struct{}
	paused bool
	stderr *syncBuffer
}

// syncBuffer is a buffer the process writes while tests read it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Start starts dnsmasq with no records, and stops it when tb ends. It skips
// tb when dnsmasq is missing, or fails it if Required.
func Start(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	bin, err := Binary()
	if err != nil {
		if Required() {
			tb.Fatal(err)
		}
		tb.Skip(err)
	}
	s := &Server{tb: tb, bin: bin, dir: tb.TempDir(), domain: "disco.test", ttl: 1,
		hosts: map[string][]string{}, srvs: map[string][]SRV{}, recs: map[string]HostRecord{}, cnames: map[string]CNAME{}}
	if cfg.Domain != "" {
		s.domain = strings.TrimSuffix(strings.ToLower(cfg.Domain), ".")
	}
	if cfg.TTL != nil {
		s.ttl = *cfg.TTL
	}
	if err := s.writeHosts(); err != nil {
		tb.Fatal(err)
	}
	var lastErr error
	for range 5 { // a free port can be taken between probe and bind
		s.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(tb)))
		if lastErr = s.start(); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		tb.Fatal(lastErr)
	}
	tb.Cleanup(s.Stop)
	return s
}

// Addr is the server's address, host:port.
func (s *Server) Addr() string { return s.addr }

// Domain is the domain the server answers for, without a trailing dot.
func (s *Server) Domain() string { return s.domain }

// Name returns label.<domain>.
func (s *Server) Name(label string) string { return label + "." + s.domain }

// SetHosts makes name have exactly addrs as A and AAAA records (none:
// the name no longer exists), and returns once dnsmasq answers so.
func (s *Server) SetHosts(name string, addrs ...string) {
	s.tb.Helper()
	fq := mdns.Fqdn(strings.ToLower(name))
	for _, a := range addrs {
		if net.ParseIP(a) == nil {
			s.tb.Fatalf("dnstest: %q is not an IP address", a)
		}
	}
	s.mu.Lock()
	if len(addrs) == 0 {
		delete(s.hosts, fq)
	} else {
		s.hosts[fq] = slices.Clone(addrs)
	}
	err := s.writeHosts()
	if err == nil && !s.paused {
		err = s.cmd.Process.Signal(syscall.SIGHUP)
	}
	paused := s.paused
	s.mu.Unlock()
	if err != nil {
		s.tb.Fatal(err)
	}
	if !paused {
		s.waitHosts(fq, addrs)
	}
}

// SetSRV makes name have exactly recs as SRV records, restarting dnsmasq,
// and returns once it answers so.
func (s *Server) SetSRV(name string, recs ...SRV) {
	s.tb.Helper()
	fq := mdns.Fqdn(strings.ToLower(name))
	s.mu.Lock()
	if len(recs) == 0 {
		delete(s.srvs, fq)
	} else {
		s.srvs[fq] = slices.Clone(recs)
	}
	s.mu.Unlock()
	s.Restart()
	s.waitSRV(fq, recs)
}

// SetHostRecord gives name exactly addrs, with a TTL of their own
// (--host-record; none: removed), restarting dnsmasq, and returns once it
// answers so.
func (s *Server) SetHostRecord(name string, ttl uint32, addrs ...string) {
	s.tb.Helper()
	fq := mdns.Fqdn(strings.ToLower(name))
	s.mu.Lock()
	if len(addrs) == 0 {
		delete(s.recs, fq)
	} else {
		s.recs[fq] = HostRecord{Addrs: slices.Clone(addrs), TTL: ttl}
	}
	s.mu.Unlock()
	s.Restart()
	s.waitHosts(fq, addrs)
}

// SetCNAME points alias at target with a CNAME of TTL ttl (empty target:
// removed), restarting dnsmasq, and returns once it answers so.
func (s *Server) SetCNAME(alias, target string, ttl uint32) {
	s.tb.Helper()
	fq := mdns.Fqdn(strings.ToLower(alias))
	s.mu.Lock()
	if target == "" {
		delete(s.cnames, fq)
	} else {
		s.cnames[fq] = CNAME{Target: mdns.Fqdn(strings.ToLower(target)), TTL: ttl}
	}
	s.mu.Unlock()
	s.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		m, err := s.ask(fq, mdns.TypeA)
		if err == nil {
			for _, rr := range m.Answer {
				if c, ok := rr.(*mdns.CNAME); ok && strings.EqualFold(c.Target, mdns.Fqdn(target)) {
					return
				}
			}
			if target == "" && len(m.Answer) == 0 {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.tb.Fatalf("dnstest: %s is not a CNAME of %s", fq, target)
}

// Restart stops dnsmasq and starts it again on the same port with the
// current records. Queries in between fail (connection refused).
func (s *Server) Restart() {
	s.tb.Helper()
	s.kill()
	var err error
	for range 50 { // the old process's sockets may linger an instant
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.tb.Fatal(err)
}

// Pause stops the process (SIGSTOP): queries get no answer until Resume.
func (s *Server) Pause() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		s.tb.Fatal(err)
	}
	s.paused = true
}

// Resume continues a paused process and has it reread its hosts file.
func (s *Server) Resume() {
	s.tb.Helper()
	s.mu.Lock()
	err := s.cmd.Process.Signal(syscall.SIGCONT)
	if err == nil {
		err = s.cmd.Process.Signal(syscall.SIGHUP)
	}
	s.paused = false
	s.mu.Unlock()
	if err != nil {
		s.tb.Fatal(err)
	}
	s.waitUp()
}

// Stop ends the process; it is safe to call more than once.
func (s *Server) Stop() { s.kill() }

func (s *Server) kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd, s.paused = nil, false
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// start runs dnsmasq with the current records and waits until it answers.
func (s *Server) start() error {
	host, port, _ := net.SplitHostPort(s.addr)
	args := []string{
		"--keep-in-foreground", "--conf-file=/dev/null", "--user=root", "--group=root",
		"--pid-file=" + filepath.Join(s.dir, "pid"), "--log-facility=-",
		"--no-resolv", "--no-hosts", "--no-poll", "--no-negcache",
		"--bind-interfaces", "--listen-address=" + host, "--port=" + port,
		"--local=/" + s.domain + "/", "--addn-hosts=" + s.hostsPath(),
		"--local-ttl=" + strconv.Itoa(int(s.ttl)), "--cache-size=0",
	}
	s.mu.Lock()
	for _, n := range slices.Sorted(maps.Keys(s.recs)) {
		r := s.recs[n]
		var v4, v6 []string
		for _, a := range r.Addrs {
			if strings.Contains(a, ":") {
				v6 = append(v6, a)
			} else {
				v4 = append(v4, a)
			}
		}
		for i := range max(len(v4), len(v6)) { // one address of each family per option
			at := func(l []string) string {
				if i < len(l) {
					return l[i]
				}
				return ""
			}
			args = append(args, fmt.Sprintf("--host-record=%s,%s,%s,%d", strings.TrimSuffix(n, "."), at(v4), at(v6), r.TTL))
		}
	}
	for _, n := range slices.Sorted(maps.Keys(s.cnames)) {
		c := s.cnames[n]
		args = append(args, fmt.Sprintf("--cname=%s,%s,%d", strings.TrimSuffix(n, "."), strings.TrimSuffix(c.Target, "."), c.TTL))
	}
	names := make([]string, 0, len(s.srvs))
	for n := range s.srvs {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		for _, r := range s.srvs[n] {
			args = append(args, fmt.Sprintf("--srv-host=%s,%s,%d,%d,%d",
				strings.TrimSuffix(n, "."), strings.TrimSuffix(r.Target, "."), r.Port, r.Priority, r.Weight))
		}
	}
	s.mu.Unlock()
	cmd := exec.Command(s.bin, args...)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("dnstest: start dnsmasq: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done, s.stderr = cmd, done, stderr
	s.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			s.mu.Lock()
			s.cmd = nil
			s.mu.Unlock()
			return fmt.Errorf("dnstest: dnsmasq exited at start: %s", strings.TrimSpace(stderr.String()))
		default:
		}
		if _, err := s.ask(s.domain, mdns.TypeSOA); err == nil {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.kill()
	return fmt.Errorf("dnstest: dnsmasq did not answer on %s within 10s", s.addr)
}

func (s *Server) waitUp() {
	s.tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := s.ask(s.domain, mdns.TypeSOA); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.tb.Fatalf("dnstest: dnsmasq on %s does not answer", s.addr)
}

func (s *Server) hostsPath() string { return filepath.Join(s.dir, "hosts") }

// writeHosts replaces the hosts file in one step (write, then rename).
// Callers hold s.mu, or own s alone.
func (s *Server) writeHosts() error {
	var b strings.Builder
	names := make([]string, 0, len(s.hosts))
	for n := range s.hosts {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		for _, a := range s.hosts[n] {
			fmt.Fprintf(&b, "%s %s\n", a, strings.TrimSuffix(n, "."))
		}
	}
	tmp := s.hostsPath() + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, s.hostsPath())
}

// waitHosts waits until the server answers name with exactly addrs.
func (s *Server) waitHosts(fq string, addrs []string) {
	s.tb.Helper()
	want := slices.Clone(addrs)
	for i, a := range want {
		want[i] = net.ParseIP(a).String()
	}
	slices.Sort(want)
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		got = nil
		for _, qt := range []uint16{mdns.TypeA, mdns.TypeAAAA} {
			m, err := s.ask(fq, qt)
			if err != nil {
				got = append(got, err.Error())
				continue
			}
			for _, rr := range m.Answer {
				switch r := rr.(type) {
				case *mdns.A:
					got = append(got, r.A.String())
				case *mdns.AAAA:
					got = append(got, r.AAAA.String())
				}
			}
		}
		slices.Sort(got)
		if slices.Equal(got, want) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.tb.Fatalf("dnstest: %s answers %v, want %v", fq, got, want)
}

// waitSRV waits until the server answers name's SRV query with recs.
func (s *Server) waitSRV(fq string, recs []SRV) {
	s.tb.Helper()
	var want, got []string
	for _, r := range recs {
		want = append(want, fmt.Sprintf("%s %d %d %d", mdns.Fqdn(strings.ToLower(r.Target)), r.Port, r.Priority, r.Weight))
	}
	slices.Sort(want)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		got = nil
		m, err := s.ask(fq, mdns.TypeSRV)
		if err != nil {
			got = []string{err.Error()}
		} else {
			for _, rr := range m.Answer {
				if r, ok := rr.(*mdns.SRV); ok {
					got = append(got, fmt.Sprintf("%s %d %d %d", strings.ToLower(r.Target), r.Port, r.Priority, r.Weight))
				}
			}
		}
		slices.Sort(got)
		if slices.Equal(got, want) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.tb.Fatalf("dnstest: SRV %s answers %v, want %v", fq, got, want)
}

// ask sends one query and returns the answer (any response code).
func (s *Server) ask(name string, qt uint16) (*mdns.Msg, error) {
	q := new(mdns.Msg)
	q.SetQuestion(mdns.Fqdn(name), qt)
	c := &mdns.Client{Timeout: 500 * time.Millisecond}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	m, _, err := c.ExchangeContext(ctx, q, s.addr)
	return m, err
}

// Log returns what dnsmasq has written to stderr so far.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stderr == nil {
		return ""
	}
	return s.stderr.String()
}

// freePort returns a port that is free for both UDP and TCP on 127.0.0.1.
func freePort(tb testing.TB) int {
	tb.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	tb.Fatal("dnstest: no free port on 127.0.0.1")
	return 0
}
