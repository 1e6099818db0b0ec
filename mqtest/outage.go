package mqtest

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"

	"github.com/ceyewan/gochat/im-infra/mq"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrOutage is what dialing a broker returns while an Outage has cut it.
var ErrOutage = errors.New("mqtest: outage: connection refused")

// Outage stands between the clients given its Option and the brokers,
// in-process or real, and takes the brokers away from those clients only:
// other clients of the same brokers (other tests, mqtest's own) are not
// affected. It starts up; Hold, Cut and Restore change what the clients
// see, on the connections they hold and on those they open later.
//
// It works by dialing for the clients, so it cannot be used with
// security.tls (franz-go takes a dialer or a TLS config, not both).
type Outage struct {
	state  atomic.Int32 // an outageState
	dialer net.Dialer

	mu    sync.Mutex
	conns map[*outageConn]struct{}
}

type outageState = int32

const (
	outageUp outageState = iota
	outageHeld
	outageCut
)

// NewOutage returns an Outage with the brokers up.
func NewOutage() *Outage {
	return &Outage{conns: make(map[*outageConn]struct{})}
}

// Option routes the connections of a Producer or Consumer through o.
func (o *Outage) Option() mq.Option {
	return mq.WithClientOptions(kgo.Dialer(o.dial))
}

// Hold makes the brokers stop answering, as a hung broker or a network that
// drops packets does: connections still open, but every request written
// from now on vanishes, and its response never comes (franz-go gives up on
// it at its request timeout, or when the client closes).
func (o *Outage) Hold() { o.state.Store(outageHeld) }

// Cut takes the brokers away, as a broker that stopped does: every open
// connection is closed, and every dial fails with ErrOutage.
func (o *Outage) Cut() {
	o.state.Store(outageCut)
	o.closeConns(func(*outageConn) bool { return true })
}

// Restore brings the brokers back. The connections that lost a request
// while held are closed (their responses are out of step), so the clients
// dial again.
func (o *Outage) Restore() {
	o.state.Store(outageUp)
	o.closeConns(func(c *outageConn) bool { return c.lost.Load() })
}

func (o *Outage) closeConns(which func(*outageConn) bool) {
	o.mu.Lock()
	var doomed []*outageConn
	for c := range o.conns {
		if which(c) {
			doomed = append(doomed, c)
		}
	}
	o.mu.Unlock()
	for _, c := range doomed {
		_ = c.Close()
	}
}

func (o *Outage) dial(ctx context.Context, network, host string) (net.Conn, error) {
	if o.state.Load() == outageCut {
		return nil, &net.OpError{Op: "dial", Net: network, Err: ErrOutage}
	}
	conn, err := o.dialer.DialContext(ctx, network, host)
	if err != nil {
		return nil, err
	}
	c := &outageConn{Conn: conn, o: o}
	o.mu.Lock()
	o.conns[c] = struct{}{}
	o.mu.Unlock()
	if o.state.Load() == outageCut { // Cut ran while we dialed
		_ = c.Close()
		return nil, &net.OpError{Op: "dial", Net: network, Err: ErrOutage}
	}
	return c, nil
}

// outageConn is a client's connection to a broker, through its Outage.
type outageConn struct {
	net.Conn
	o    *Outage
	lost atomic.Bool // a write vanished while held
}

func (c *outageConn) Write(b []byte) (int, error) {
	if c.o.state.Load() == outageHeld {
		c.lost.Store(true)
		return len(b), nil
	}
	return c.Conn.Write(b)
}

func (c *outageConn) Close() error {
	c.o.mu.Lock()
	delete(c.o.conns, c)
	c.o.mu.Unlock()
	return c.Conn.Close()
}
