package coord

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/ceyewan/gochat/im-infra/clog"
)

// etcdPrefix is where configuration keys live in etcd: key "dev/global/kafka"
// is stored at "/config/dev/global/kafka".
const etcdPrefix = "/config/"

// defaultDialTimeout applies when Config.DialTimeout is zero.
const defaultDialTimeout = 5 * time.Second

// New connects to the etcd cluster described by cfg (GetDefaultConfig("")
// when nil) and returns a Provider backed by it. It verifies that the cluster
// answers within cfg.DialTimeout (5s when zero) and fails otherwise; ctx
// bounds only the connection attempt, not the Provider's lifetime.
func New(ctx context.Context, cfg *Config, opts ...Option) (Provider, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	if cfg == nil {
		cfg = GetDefaultConfig("")
	}
	o := options{}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	logger := o.logger
	if logger == nil {
		logger = clog.Namespace("coord")
	}
	endpoints := make([]string, 0, len(cfg.Endpoints))
	for _, ep := range cfg.Endpoints {
		if ep = strings.TrimSpace(ep); ep != "" {
			endpoints = append(endpoints, ep)
		}
	}
	if len(endpoints) == 0 {
		return nil, errors.New("coord: no etcd endpoints configured")
	}
	timeout := cfg.DialTimeout
	if timeout <= 0 {
		timeout = defaultDialTimeout
	}

	// The client lives until Close, independent of ctx; but while New runs,
	// cancelling ctx aborts the connection attempt (including the
	// authentication clientv3.New performs when a username is set).
	clientCtx, clientCancel := context.WithCancel(context.WithoutCancel(ctx))
	stopAbort := context.AfterFunc(ctx, clientCancel)

	fail := func(err error) error {
		// Never include cfg.Password: the errors below come from gRPC/etcd,
		// which do not echo credentials.
		return fmt.Errorf("coord: connect to etcd %v (timeout %s): %w", endpoints, timeout, err)
	}

	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		Username:    cfg.Username,
		Password:    cfg.Password,
		DialTimeout: timeout,
		Context:     clientCtx,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		stopAbort()
		clientCancel()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fail(err)
	}

	// clientv3.New does not wait for a connection; a linearizable read proves
	// that the cluster is reachable and has a leader.
	vctx, vcancel := context.WithTimeout(ctx, timeout)
	_, err = cli.Get(vctx, etcdPrefix, clientv3.WithCountOnly())
	vcancel()
	if err == nil && !stopAbort() {
		err = ctx.Err()
	}
	if err != nil {
		stopAbort()
		_ = cli.Close()
		clientCancel()
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fail(err)
	}

	logger.Info("connected to etcd", clog.Strings("endpoints", endpoints))
	p := &etcdProvider{cli: cli, cancel: clientCancel, logger: logger}
	p.cc = &etcdConfig{p: p}
	return p, nil
}

type etcdProvider struct {
	cli    *clientv3.Client
	cancel context.CancelFunc
	logger clog.Logger
	cc     *etcdConfig

	mu       sync.Mutex
	closed   bool
	watchers map[*etcdWatcher]struct{}
}

func (p *etcdProvider) Config() ConfigCenter { return p.cc }

// Close stops every watcher, waits for their goroutines and closes the
// client. Closing twice is harmless.
func (p *etcdProvider) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	watchers := p.watchers
	p.watchers = nil
	p.mu.Unlock()

	for w := range watchers {
		w.Close()
	}
	err := p.cli.Close()
	p.cancel()
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("coord: close: %w", err)
	}
	p.logger.Debug("etcd provider closed")
	return nil
}

func (p *etcdProvider) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

// opErr wraps an etcd error of op on key, reporting ErrClosed when the
// Provider was closed meanwhile.
func (p *etcdProvider) opErr(op, key string, err error) error {
	if p.isClosed() {
		return fmt.Errorf("coord: %s %s: %w", op, key, ErrClosed)
	}
	return fmt.Errorf("coord: %s %s: %w", op, key, err)
}

type etcdConfig struct{ p *etcdProvider }

func etcdKey(key string) string { return etcdPrefix + key }

func (c *etcdConfig) Get(ctx context.Context, key string, v any) error {
	if err := checkTarget(key, v); err != nil {
		return err
	}
	if c.p.isClosed() {
		return fmt.Errorf("coord: get %s: %w", key, ErrClosed)
	}
	resp, err := c.p.cli.Get(ctx, etcdKey(key))
	if err != nil {
		return c.p.opErr("get", key, err)
	}
	if len(resp.Kvs) == 0 {
		return fmt.Errorf("coord: get %s: %w", key, ErrNotFound)
	}
	return unmarshalValue(key, resp.Kvs[0].Value, v)
}

func (c *etcdConfig) Set(ctx context.Context, key string, value any) error {
	if key == "" {
		return fmt.Errorf("coord: set: empty key")
	}
	raw, err := marshalValue(value)
	if err != nil {
		return fmt.Errorf("coord: set %s: %w", key, err)
	}
	if c.p.isClosed() {
		return fmt.Errorf("coord: set %s: %w", key, ErrClosed)
	}
	if _, err := c.p.cli.Put(ctx, etcdKey(key), string(raw)); err != nil {
		return c.p.opErr("set", key, err)
	}
	return nil
}

func (c *etcdConfig) Delete(ctx context.Context, key string) error {
	if c.p.isClosed() {
		return fmt.Errorf("coord: delete %s: %w", key, ErrClosed)
	}
	resp, err := c.p.cli.Delete(ctx, etcdKey(key))
	if err != nil {
		return c.p.opErr("delete", key, err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("coord: delete %s: %w", key, ErrNotFound)
	}
	return nil
}

// List returns, sorted, the keys equal to prefix or under prefix + "/"
// (every key when prefix is empty), as the memory implementation does.
func (c *etcdConfig) List(ctx context.Context, prefix string) ([]string, error) {
	if c.p.isClosed() {
		return nil, fmt.Errorf("coord: list %s: %w", prefix, ErrClosed)
	}
	p := strings.TrimSuffix(prefix, "/")
	var ops []clientv3.Op
	if p == "" {
		ops = []clientv3.Op{clientv3.OpGet(etcdPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())}
	} else {
		ops = []clientv3.Op{
			clientv3.OpGet(etcdKey(p), clientv3.WithKeysOnly()),
			clientv3.OpGet(etcdKey(p)+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		}
	}
	resp, err := c.p.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, c.p.opErr("list", prefix, err)
	}
	var keys []string
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().GetKvs() {
			keys = append(keys, strings.TrimPrefix(string(kv.Key), etcdPrefix))
		}
	}
	sort.Strings(keys)
	return keys, nil
}

// Watch starts watching key and returns once etcd has confirmed the watch,
// so every change made after Watch returns is reported. The watcher's
// goroutine ends, closing the event channel, when ctx ends, the Watcher is
// closed, the Provider is closed or etcd cancels the watch.
func (c *etcdConfig) Watch(ctx context.Context, key string, v any) (Watcher[any], error) {
	if err := checkTarget(key, v); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &etcdWatcher{
		key:    key,
		typ:    reflect.TypeOf(v).Elem(),
		ch:     make(chan ConfigEvent[any], 64),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	p := c.p
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		cancel()
		return nil, fmt.Errorf("coord: watch %s: %w", key, ErrClosed)
	}
	if p.watchers == nil {
		p.watchers = map[*etcdWatcher]struct{}{}
	}
	p.watchers[w] = struct{}{}
	p.mu.Unlock()

	remove := func() {
		p.mu.Lock()
		delete(p.watchers, w)
		p.mu.Unlock()
	}

	wch := p.cli.Watch(wctx, etcdKey(key), clientv3.WithCreatedNotify())
	var startErr error
	select {
	case resp, ok := <-wch:
		switch {
		case !ok:
			startErr = wctx.Err()
			if startErr == nil {
				startErr = errors.New("watch channel closed")
			}
		case resp.Err() != nil:
			startErr = resp.Err()
		case !resp.Created:
			startErr = errors.New("unexpected first watch response")
		}
	case <-wctx.Done():
		startErr = wctx.Err()
	}
	if startErr != nil {
		cancel()
		remove()
		close(w.done)
		close(w.ch)
		return nil, p.opErr("watch", key, startErr)
	}

	go func() {
		defer close(w.done)
		defer close(w.ch)
		defer remove()
		defer cancel()
		for {
			select {
			case <-wctx.Done():
				return
			case resp, ok := <-wch:
				if !ok {
					return
				}
				if err := resp.Err(); err != nil {
					if wctx.Err() == nil {
						p.logger.Warn("etcd watch ended", clog.String("key", key), clog.Err(err))
					}
					return
				}
				if resp.Canceled {
					return
				}
				for _, ev := range resp.Events {
					if !w.send(wctx, ev) {
						return
					}
				}
			}
		}
	}()
	return w, nil
}

type etcdWatcher struct {
	key    string
	typ    reflect.Type
	ch     chan ConfigEvent[any]
	cancel context.CancelFunc
	done   chan struct{}
}

func (w *etcdWatcher) Chan() <-chan ConfigEvent[any] { return w.ch }

// Close stops the watcher and waits until its goroutine has exited and the
// event channel is closed.
func (w *etcdWatcher) Close() {
	w.cancel()
	<-w.done
}

// send delivers one etcd event, blocking until it is read or ctx ends.
func (w *etcdWatcher) send(ctx context.Context, ev *clientv3.Event) bool {
	ce := ConfigEvent[any]{Key: strings.TrimPrefix(string(ev.Kv.Key), etcdPrefix)}
	switch ev.Type {
	case clientv3.EventTypePut:
		ce.Type = EventTypePut
		nv := reflect.New(w.typ)
		if err := unmarshalValue(w.key, ev.Kv.Value, nv.Interface()); err != nil {
			ce.Value = string(ev.Kv.Value)
		} else {
			ce.Value = nv.Elem().Interface()
		}
	case clientv3.EventTypeDelete:
		ce.Type = EventTypeDelete
	default:
		return true
	}
	select {
	case w.ch <- ce:
		return true
	case <-ctx.Done():
		return false
	}
}
