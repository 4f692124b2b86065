package reliability_test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/turnstile-dev/turnstile/internal/testenv"
)

var (
	natsServerOnce sync.Once
	natsServerErr  error
)

// natsServerBin builds nats-server from the module this one requires, once.
func natsServerBin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(binDir, "nats-server")
	natsServerOnce.Do(func() {
		out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			natsServerErr = fmt.Errorf("go build nats-server: %v\n%s", err, out)
		}
	})
	if natsServerErr != nil {
		t.Fatal(natsServerErr)
	}
	return bin
}

// natsServer is an external nats-server with JetStream on loopback.
type natsServer struct {
	t    *testing.T
	bin  string
	dir  string
	port int
	cmd  *exec.Cmd
	done chan struct{}
	out  *syncBuffer
	// args is the command line; nil runs one node on port with its store
	// in dir (a cluster's node gives its configuration file instead).
	args []string
}

func startNATSServer(t *testing.T) *natsServer {
	t.Helper()
	n := &natsServer{t: t, bin: natsServerBin(t), dir: t.TempDir(), port: testenv.FreePort(t), out: &syncBuffer{}}
	n.start()
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("nats-server output (tail):\n%s", n.out)
		}
	})
	return n
}

func (n *natsServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// start runs the server and waits until it accepts connections.
func (n *natsServer) start() {
	n.t.Helper()
	args := n.args
	if args == nil {
		args = []string{"-a", "127.0.0.1", "-p", fmt.Sprint(n.port), "-js", "-sd", n.dir}
	}
	n.cmd = exec.Command(n.bin, args...)
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	done := make(chan struct{})
	n.done = done
	cmd := n.cmd
	go func() { _ = cmd.Wait(); close(done) }()
	poll(n.t, 30*time.Second, 20*time.Millisecond, "nats-server to listen", func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.port), time.Second)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	})
}

// kill9 kills the server with SIGKILL and waits for the process to be gone.
func (n *natsServer) kill9() {
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.done
}

// stop stops the server gracefully (SIGTERM; SIGKILL after 30 s).
func (n *natsServer) stop() {
	select {
	case <-n.done:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(30 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
}

// TestNATSDown stops an external nats-server (serve runs with --nats-url)
// mid-load and starts it again: serve's engine, worker and projector
// reconnect and nothing is lost or duplicated.
func TestNATSDown(t *testing.T) {
	gate(t)
	outage := pick(5*time.Second, 10*time.Second)
	workspaces := pick(50, 500)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d: nats-server down for %v", seed, outage)

	ns := startNATSServer(t)
	pg := testenv.StartPostgres(t)
	dbURL := pg.NewDatabase(t)
	s := startServe(t, serveOptions{databaseURL: dbURL, natsURL: ns.url()})
	cl := newClient(t, connect(t, ns.url(), "reliability-load"))

	ctx, cancel := context.WithTimeout(context.Background(), pick(3*time.Minute, 10*time.Minute))
	defer cancel()
	l := startOutageLoad(ctx, t, cl, workspaces, seed)
	ns.stop()
	time.Sleep(outage) // the fault's duration: NATS stays down this long
	ns.start()
	after := l.done.Load()
	poll(t, 2*time.Minute, 10*time.Millisecond, "200 more outcomes after the outage", func() bool { return l.done.Load() >= after+200 })
	loadTime := l.finish()
	if t.Failed() {
		t.FailNow()
	}
	if err := s.ready(time.Minute); err != nil {
		t.Fatal(err)
	}
	waitQuiet(t, cl, dbURL, l.workspaces, 2*time.Minute)
	f := checkStream(t, cl, l.commands())
	// A pull answer lost when the server went down comes back only after
	// the ack wait; the engine catches up at the gap (engine/gap.go), so
	// no later command of its workspace is decided first.
	misordered := checkOrder(t, cl, f, true)
	checkAuditCLI(t, ns.url())
	checkRebuild(t, ns.url(), dbURL, "")
	report{Scenario: "nats-down", Long: long(), Commands: len(l.commands()), Workspaces: workspaces,
		Seconds: loadTime.Seconds(), Faults: 1, FaultKind: fmt.Sprintf("external nats-server stopped for %v", outage),
		Resends: l.resends.Load(), StreamRecords: f.Records, Events: f.Events,
		Outcomes: f.Outcomes, Lost: f.Lost + int(l.lost.Load()), Duplicated: f.Duplicated, Misordered: misordered}.log(t)
}
