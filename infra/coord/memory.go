package coord

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
)

// NewMemoryProvider returns a Provider whose ConfigCenter lives in memory:
// for tests and for the embedded default of examples. It behaves as the
// etcd-backed one does, including the encoding of values.
func NewMemoryProvider() Provider {
	return &memoryProvider{cc: &memoryConfig{data: map[string][]byte{}}}
}

type memoryProvider struct{ cc *memoryConfig }

func (p *memoryProvider) Config() ConfigCenter { return p.cc }

func (p *memoryProvider) Close() error {
	p.cc.mu.Lock()
	defer p.cc.mu.Unlock()
	p.cc.closed = true
	for w := range p.cc.watchers {
		w.stop()
	}
	p.cc.watchers = nil
	return nil
}

type memoryConfig struct {
	mu       sync.Mutex
	closed   bool
	data     map[string][]byte
	watchers map[*memoryWatcher]struct{}
}

func (c *memoryConfig) Get(_ context.Context, key string, v any) error {
	if err := checkTarget(key, v); err != nil {
		return err
	}
	c.mu.Lock()
	raw, ok := c.data[key]
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return fmt.Errorf("coord: get %s: %w", key, ErrClosed)
	}
	if !ok {
		return fmt.Errorf("coord: get %s: %w", key, ErrNotFound)
	}
	return unmarshalValue(key, raw, v)
}

func (c *memoryConfig) Set(_ context.Context, key string, value any) error {
	if key == "" {
		return fmt.Errorf("coord: set: empty key")
	}
	raw, err := marshalValue(value)
	if err != nil {
		return fmt.Errorf("coord: set %s: %w", key, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("coord: set %s: %w", key, ErrClosed)
	}
	c.data[key] = raw
	for w := range c.watchers {
		w.notify(EventTypePut, key, raw)
	}
	return nil
}

func (c *memoryConfig) Delete(_ context.Context, key string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("coord: delete %s: %w", key, ErrClosed)
	}
	if _, ok := c.data[key]; !ok {
		return fmt.Errorf("coord: delete %s: %w", key, ErrNotFound)
	}
	delete(c.data, key)
	for w := range c.watchers {
		w.notify(EventTypeDelete, key, nil)
	}
	return nil
}

func (c *memoryConfig) List(_ context.Context, prefix string) ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, fmt.Errorf("coord: list %s: %w", prefix, ErrClosed)
	}
	p := strings.TrimSuffix(prefix, "/")
	var keys []string
	for k := range c.data {
		if p == "" || k == p || strings.HasPrefix(k, p+"/") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys, nil
}

func (c *memoryConfig) Watch(ctx context.Context, key string, v any) (Watcher[any], error) {
	if err := checkTarget(key, v); err != nil {
		return nil, err
	}
	w := &memoryWatcher{
		key:  key,
		typ:  reflect.TypeOf(v).Elem(),
		ch:   make(chan ConfigEvent[any], 64),
		done: make(chan struct{}),
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, fmt.Errorf("coord: watch %s: %w", key, ErrClosed)
	}
	if c.watchers == nil {
		c.watchers = map[*memoryWatcher]struct{}{}
	}
	c.watchers[w] = struct{}{}
	c.mu.Unlock()
	go func() {
		select {
		case <-ctx.Done():
		case <-w.done:
		}
		c.mu.Lock()
		if _, ok := c.watchers[w]; ok {
			delete(c.watchers, w)
			w.stop()
		}
		c.mu.Unlock()
	}()
	return w, nil
}

// memoryWatcher is notified under memoryConfig.mu; it drops an event when
// its buffer is full rather than block writers.
type memoryWatcher struct {
	key     string
	typ     reflect.Type
	ch      chan ConfigEvent[any]
	done    chan struct{}
	once    sync.Once
	stopped bool
}

func (w *memoryWatcher) Chan() <-chan ConfigEvent[any] { return w.ch }

func (w *memoryWatcher) Close() { w.once.Do(func() { close(w.done) }) }

// stop closes the event channel; callers hold memoryConfig.mu.
func (w *memoryWatcher) stop() {
	if !w.stopped {
		w.stopped = true
		close(w.ch)
	}
	w.Close()
}

func (w *memoryWatcher) notify(t EventType, key string, raw []byte) {
	if key != w.key || w.stopped {
		return
	}
	ev := ConfigEvent[any]{Type: t, Key: key}
	if t == EventTypePut {
		nv := reflect.New(w.typ)
		if err := unmarshalValue(key, raw, nv.Interface()); err != nil {
			ev.Value = string(raw)
		} else {
			ev.Value = nv.Elem().Interface()
		}
	}
	select {
	case w.ch <- ev:
	default:
	}
}

func checkTarget(key string, v any) error {
	if key == "" {
		return fmt.Errorf("coord: empty key")
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("coord: %s: target must be a non-nil pointer, got %T", key, v)
	}
	return nil
}

// marshalValue stores strings and byte slices as they are, anything else as JSON.
func marshalValue(value any) ([]byte, error) {
	switch v := value.(type) {
	case string:
		return []byte(v), nil
	case []byte:
		return append([]byte(nil), v...), nil
	default:
		return json.Marshal(value)
	}
}

// unmarshalValue decodes JSON into v; a *string target that is not a JSON
// string receives the stored text as it is (a YAML document, say).
func unmarshalValue(key string, raw []byte, v any) error {
	err := json.Unmarshal(raw, v)
	if err == nil {
		return nil
	}
	if s, ok := v.(*string); ok {
		*s = string(raw)
		return nil
	}
	if b, ok := v.(*[]byte); ok {
		*b = append([]byte(nil), raw...)
		return nil
	}
	return fmt.Errorf("coord: get %s: value is not valid JSON for %T: %w", key, v, err)
}
