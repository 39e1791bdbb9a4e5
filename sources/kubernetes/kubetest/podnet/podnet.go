// Package podnet makes "pods" for tests and the demo: each pod is a Linux
// network namespace with its own 10.244.N.x address, joined by a veth pair to
// a bridge that holds 10.244.N.1/24 in the test's own namespace, so the test
// process reaches every pod at its pod IP. A pod runs real servers: a
// listener opened from inside its namespace (Listen) or a child process
// under `ip netns exec` (Command).
//
// The bridge has a fixed hardware address, as a CNI bridge does: left to
// itself it would change with its ports, and pods that cached the old one
// would stall (see New).
//
// Every network gets its own /24 and uniquely named bridge, namespaces and
// links, recorded in a state file; Close removes them all, and New first
// removes what networks of dead processes left behind, so a test binary killed
// mid-run breaks nothing. Traffic only ever goes to these namespaces.
//
// It needs root and iproute2's `ip`; Check says what is missing.
package podnet

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrUnsupported means this machine cannot make pods (not root, no `ip`).
var ErrUnsupported = errors.New("podnet: network namespaces unavailable")

// Check reports whether pods can be made here, and if not, what is missing
// and how to get it.
func Check() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: needs root (network namespaces, bridges and veths); run as root, e.g. `sudo make test`", ErrUnsupported)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("%w: the `ip` command is missing: apt-get install -y iproute2", ErrUnsupported)
	}
	return nil
}

// stateDir holds one state file per live network and the allocation lock.
func stateDir() string { return filepath.Join(os.TempDir(), "disco-podnet") }

// state is what a network created, for Close and for sweeping after a crash.
type state struct {
	Pid        int      `json:"pid"`
	Bridge     string   `json:"bridge"`
	Namespaces []string `json:"namespaces"`
	Links      []string `json:"links"`
}

// Network is one bridge and its pods. Safe for concurrent use.
type Network struct {
	id      string
	bridge  string
	subnet  netip.Prefix
	gateway netip.Addr
	file    string

	mu     sync.Mutex
	st     state
	pods   map[string]*Pod
	inUse  [255]bool // host numbers held by pods
	next   int       // last host number handed out
	closed bool
}

func randomID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ip runs the ip command and returns its error with its output.
func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("podnet: ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// New creates a bridge with a free 10.244.N.0/24 (N in 1..254) and returns
// the network, ready for pods.
func New(ctx context.Context) (*Network, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(stateDir(), 0o700); err != nil {
		return nil, fmt.Errorf("podnet: %w", err)
	}
	unlock, err := lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	sweep(ctx)
	n := &Network{id: randomID(), pods: map[string]*Pod{}, next: 1}
	n.bridge = "db" + n.id
	n.file = filepath.Join(stateDir(), fmt.Sprintf("%d-%s.json", os.Getpid(), n.id))
	third, err := freeSubnet()
	if err != nil {
		return nil, err
	}
	n.subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, third, 0}), 24)
	n.gateway = netip.AddrFrom4([4]byte{10, 244, third, 1})
	n.st = state{Pid: os.Getpid(), Bridge: n.bridge}
	if err := n.saveLocked(); err != nil {
		return nil, err
	}
	// The bridge gets a fixed address. Left to itself, a Linux bridge takes
	// the lowest address of its ports and changes it as pods come and go;
	// pods that cached the old one (ARP) then send their replies nowhere
	// until the kernel probes again, about 5 s later: connections to steady
	// pods stall for seconds during churn. CNI's bridge plugin, Docker and
	// LXC fix the bridge's address for the same reason
	// (containernetworking/cni#285).
	for _, args := range [][]string{
		{"link", "add", n.bridge, "type", "bridge"},
		{"link", "set", n.bridge, "address", bridgeMAC(third)},
		{"addr", "add", n.gateway.String() + "/24", "dev", n.bridge},
		{"link", "set", n.bridge, "up"},
	} {
		if err := ip(ctx, args...); err != nil {
			n.Close()
			return nil, err
		}
	}
	return n, nil
}

// bridgeMAC is the bridge's fixed, locally administered unicast address:
// 02:00 then the gateway's IPv4 address, unique like the subnet.
func bridgeMAC(third byte) string { return fmt.Sprintf("02:00:0a:f4:%02x:01", third) }

// lock takes an exclusive lock across processes, so that parallel test
// binaries never pick the same subnet.
func lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(stateDir(), "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("podnet: lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("podnet: lock: %w", err)
	}
	return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
}

// freeSubnet returns a third octet N such that no interface holds an
// address in 10.244.N.0/24.
func freeSubnet() (byte, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return 0, fmt.Errorf("podnet: %w", err)
	}
	used := map[byte]bool{}
	for _, ifc := range ifaces {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() {
				b := p.Addr().As4()
				if b[0] == 10 && b[1] == 244 {
					used[b[2]] = true
				}
			}
		}
	}
	start := int(randomID()[0]) // spread choices a little
	for i := range 254 {
		third := byte((start+i)%254 + 1)
		if !used[third] {
			return third, nil
		}
	}
	return 0, errors.New("podnet: every 10.244.N.0/24 is in use")
}

func (n *Network) saveLocked() error {
	b, _ := json.Marshal(n.st)
	if err := os.WriteFile(n.file, b, 0o600); err != nil {
		return fmt.Errorf("podnet: state file: %w", err)
	}
	return nil
}

// Subnet returns the network's /24.
func (n *Network) Subnet() netip.Prefix { return n.subnet }

// Gateway returns the bridge's address, which pods see as the caller's.
func (n *Network) Gateway() netip.Addr { return n.gateway }

// AddPod creates a pod named name (unique in the network) with the next free
// address of the subnet.
func (n *Network) AddPod(ctx context.Context, name string) (*Pod, error) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil, errors.New("podnet: network closed")
	}
	if n.pods[name] != nil {
		n.mu.Unlock()
		return nil, fmt.Errorf("podnet: pod %q exists", name)
	}
	// Round robin over 2..254, skipping addresses in use, so a deleted pod's
	// address is reused only after the others, as a CNI would.
	host := 0
	for i := range 253 {
		h := (n.next-2+1+i)%253 + 2
		if !n.inUse[h] {
			host = h
			break
		}
	}
	if host == 0 {
		n.mu.Unlock()
		return nil, fmt.Errorf("podnet: subnet %s is full", n.subnet)
	}
	n.next, n.inUse[host] = host, true
	b := n.subnet.Addr().As4()
	b[3] = byte(host)
	p := &Pod{
		name: name, net: n, ip: netip.AddrFrom4(b), host: host,
		ns:       fmt.Sprintf("dn%s-%d", n.id, host),
		hostVeth: fmt.Sprintf("dh%s%d", n.id, host),
	}
	podVeth := fmt.Sprintf("dp%s%d", n.id, host)
	n.pods[name] = p
	n.st.Namespaces = append(n.st.Namespaces, p.ns)
	n.st.Links = append(n.st.Links, p.hostVeth)
	err := n.saveLocked()
	n.mu.Unlock()
	if err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		{"netns", "add", p.ns},
		{"link", "add", p.hostVeth, "type", "veth", "peer", "name", podVeth},
		{"link", "set", p.hostVeth, "master", n.bridge},
		{"link", "set", p.hostVeth, "up"},
		{"link", "set", podVeth, "netns", p.ns},
		{"-n", p.ns, "link", "set", podVeth, "name", "eth0"},
		{"-n", p.ns, "addr", "add", p.ip.String() + "/24", "dev", "eth0"},
		{"-n", p.ns, "link", "set", "eth0", "up"},
		{"-n", p.ns, "link", "set", "lo", "up"},
		{"-n", p.ns, "route", "add", "default", "via", n.gateway.String()},
	} {
		if err := ip(ctx, args...); err != nil {
			p.Delete()
			return nil, err
		}
	}
	return p, nil
}

// Pods returns the pods not deleted yet.
func (n *Network) Pods() []*Pod {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*Pod, 0, len(n.pods))
	for _, p := range n.pods {
		out = append(out, p)
	}
	return out
}

// Close kills and deletes every pod and removes the bridge and the state
// file. Idempotent.
func (n *Network) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	pods := make([]*Pod, 0, len(n.pods))
	for _, p := range n.pods {
		pods = append(pods, p)
	}
	n.mu.Unlock()
	var errs []error
	for _, p := range pods {
		errs = append(errs, p.Delete())
	}
	ctx := context.Background()
	if linkExists(n.bridge) {
		errs = append(errs, ip(ctx, "link", "del", n.bridge))
	}
	os.Remove(n.file)
	return errors.Join(errs...)
}

func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

func nsExists(name string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", name))
	return err == nil
}

// sweep removes the namespaces and links of networks whose process is gone.
// Called with the lock held.
func sweep(ctx context.Context) {
	files, _ := filepath.Glob(filepath.Join(stateDir(), "*.json"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		var st state
		if err != nil || json.Unmarshal(b, &st) != nil || alive(st.Pid) {
			continue
		}
		for _, ns := range st.Namespaces {
			if nsExists(ns) {
				_ = ip(ctx, "netns", "del", ns)
			}
		}
		for _, l := range append(st.Links, st.Bridge) {
			if l != "" && linkExists(l) {
				_ = ip(ctx, "link", "del", l)
			}
		}
		os.Remove(f)
	}
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Pod is one network namespace with one address.
type Pod struct {
	name     string
	net      *Network
	ip       netip.Addr
	host     int
	ns       string
	hostVeth string

	mu        sync.Mutex
	listeners []*listener
	cmds      []*exec.Cmd
	deleted   bool
}

// Name returns the pod's name.
func (p *Pod) Name() string { return p.name }

// IP returns the pod's address.
func (p *Pod) IP() netip.Addr { return p.ip }

// Namespace returns the name of the pod's network namespace (for `ip netns exec`).
func (p *Pod) Namespace() string { return p.ns }

// Addr returns "podIP:port".
func (p *Pod) Addr(port int) string { return net.JoinHostPort(p.ip.String(), strconv.Itoa(port)) }

// Listen opens a listener inside the pod's namespace: address ":50051"
// listens on the pod's IP (and its loopback). The listener works from any
// goroutine; Kill closes it and every connection it accepted.
func (p *Pod) Listen(network, address string) (net.Listener, error) {
	type result struct {
		ln  net.Listener
		err error
	}
	res := make(chan result, 1)
	// A goroutine of its own: if switching back fails, its thread stays
	// locked and the runtime discards it when the goroutine ends.
	go func() {
		runtime.LockOSThread()
		ln, err := p.listenInNamespace(network, address)
		res <- result{ln, err}
	}()
	r := <-res
	if r.err != nil {
		return nil, r.err
	}
	l := &listener{Listener: r.ln, conns: map[net.Conn]struct{}{}}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.deleted {
		r.ln.Close()
		return nil, fmt.Errorf("podnet: pod %s deleted", p.name)
	}
	p.listeners = append(p.listeners, l)
	return l, nil
}

// listenInNamespace runs on a locked thread and unlocks it only if the
// thread is back in its original namespace.
func (p *Pod) listenInNamespace(network, address string) (net.Listener, error) {
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, fmt.Errorf("podnet: %w", err)
	}
	defer orig.Close()
	target, err := os.Open(filepath.Join("/run/netns", p.ns))
	if err != nil {
		return nil, fmt.Errorf("podnet: pod %s: %w", p.name, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, fmt.Errorf("podnet: enter pod %s: %w", p.name, err)
	}
	ln, lerr := net.Listen(network, address)
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		if ln != nil {
			ln.Close()
		}
		return nil, fmt.Errorf("podnet: leave pod %s: %w", p.name, err)
	}
	runtime.UnlockOSThread()
	if lerr != nil {
		return nil, fmt.Errorf("podnet: listen in pod %s: %w", p.name, lerr)
	}
	return ln, nil
}

// Command returns a command that runs inside the pod's namespace (through
// `ip netns exec`). Start it yourself; Kill and Delete SIGKILL it.
func (p *Pod) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", p.ns, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.mu.Lock()
	p.cmds = append(p.cmds, cmd)
	p.mu.Unlock()
	return cmd
}

// Kill ends the pod's servers abruptly, as a crashed process would: every
// listener closes, every accepted connection is reset (RST), every command
// gets SIGKILL. The namespace and address stay until Delete.
func (p *Pod) Kill() {
	p.mu.Lock()
	ls, cmds := p.listeners, p.cmds
	p.listeners, p.cmds = nil, nil
	p.mu.Unlock()
	for _, l := range ls {
		l.kill()
	}
	for _, c := range cmds {
		if c.Process != nil {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}
}

// Disconnect takes the pod's link down: packets to it are dropped silently,
// as when a node vanishes, and connections hang rather than reset.
func (p *Pod) Disconnect(ctx context.Context) error {
	return ip(ctx, "link", "set", p.hostVeth, "down")
}

// ResetConnections resets (RST) every connection the pod's listeners
// accepted, while the servers go on listening: connections broken under a
// running server, as by a middlebox or a conntrack flush.
func (p *Pod) ResetConnections() {
	p.mu.Lock()
	ls := p.listeners
	p.mu.Unlock()
	for _, l := range ls {
		l.resetAll()
	}
}

// Unplug deletes the pod's link (its veth pair) and nothing else: the
// servers inside go on running but nothing reaches them and nothing is
// reset, as when a node vanishes or its network namespace is torn down
// under a running pod. Delete still removes the rest.
func (p *Pod) Unplug(ctx context.Context) error {
	if !linkExists(p.hostVeth) {
		return nil
	}
	return ip(ctx, "link", "del", p.hostVeth)
}

// Reconnect brings the pod's link back up.
func (p *Pod) Reconnect(ctx context.Context) error { return ip(ctx, "link", "set", p.hostVeth, "up") }

// Delete kills the pod and removes its namespace and links. Idempotent.
func (p *Pod) Delete() error {
	p.Kill()
	p.mu.Lock()
	if p.deleted {
		p.mu.Unlock()
		return nil
	}
	p.deleted = true
	p.mu.Unlock()
	ctx := context.Background()
	var errs []error
	if linkExists(p.hostVeth) {
		errs = append(errs, ip(ctx, "link", "del", p.hostVeth))
	}
	if nsExists(p.ns) {
		errs = append(errs, ip(ctx, "netns", "del", p.ns))
	}
	n := p.net
	n.mu.Lock()
	if n.pods[p.name] == p {
		delete(n.pods, p.name)
	}
	n.inUse[p.host] = false
	n.mu.Unlock()
	return errors.Join(errs...)
}

// listener tracks accepted connections so Kill can reset them.
type listener struct {
	net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	killed bool
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.killed {
		reset(c)
		return nil, net.ErrClosed
	}
	l.conns[c] = struct{}{}
	return &conn{Conn: c, l: l}, nil
}

func (l *listener) resetAll() {
	l.mu.Lock()
	conns := l.conns
	l.conns = map[net.Conn]struct{}{}
	l.mu.Unlock()
	for c := range conns {
		reset(c)
	}
}

func (l *listener) kill() {
	l.mu.Lock()
	l.killed = true
	conns := l.conns
	l.conns = map[net.Conn]struct{}{}
	l.mu.Unlock()
	l.Listener.Close()
	for c := range conns {
		reset(c)
	}
}

func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

type conn struct {
	net.Conn
	l *listener
}

func (c *conn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c.Conn)
	c.l.mu.Unlock()
	return c.Conn.Close()
}
