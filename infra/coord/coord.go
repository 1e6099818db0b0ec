// Package coord is the part of gochat's coordination library that mq needs:
// a Provider whose ConfigCenter stores JSON documents under the etcd prefix
// /config, backed by etcd (New) or by memory (NewMemoryProvider).
//
// It follows the published shape of github.com/ceyewan/gochat/im-infra/coord
// so that mq compiles unchanged against the real package.
package coord

import (
	"context"
	"errors"
	"time"

	"github.com/ceyewan/gochat/im-infra/clog"
)

// ErrNotFound is returned (wrapped) by ConfigCenter.Get and Delete when the
// key holds no value.
var ErrNotFound = errors.New("coord: config key not found")

// ErrClosed is returned (wrapped) by a ConfigCenter whose Provider was closed.
var ErrClosed = errors.New("coord: provider closed")

// Provider gives access to the coordination services.
type Provider interface {
	// Config returns the configuration center.
	Config() ConfigCenter
	// Close releases the connection to the backing store.
	Close() error
}

// ConfigCenter stores configuration documents by key. Values are encoded as
// JSON, except string and []byte values, which are stored as they are; Get
// into a *string returns the stored text when it is not a JSON string.
type ConfigCenter interface {
	// Get decodes the value under key into v (a non-nil pointer).
	Get(ctx context.Context, key string, v any) error
	// Set encodes value and stores it under key.
	Set(ctx context.Context, key string, value any) error
	// Delete removes key.
	Delete(ctx context.Context, key string) error
	// Watch reports changes of key until ctx ends or the Watcher is closed.
	// v is a pointer to the type values are decoded into.
	Watch(ctx context.Context, key string, v any) (Watcher[any], error)
	// List returns the keys under prefix.
	List(ctx context.Context, prefix string) ([]string, error)
}

// EventType is the kind of a change.
type EventType string

// Kinds of change.
const (
	EventTypePut    EventType = "PUT"
	EventTypeDelete EventType = "DELETE"
)

// ConfigEvent is one change of a watched key.
type ConfigEvent[T any] struct {
	Type  EventType
	Key   string
	Value T
}

// Watcher delivers changes until closed.
type Watcher[T any] interface {
	Chan() <-chan ConfigEvent[T]
	Close()
}

// Config describes the etcd cluster behind a Provider.
type Config struct {
	// Endpoints are etcd client addresses, host:port.
	Endpoints []string `json:"endpoints"`
	// Username and Password authenticate to etcd when set.
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	// DialTimeout bounds connecting to etcd.
	DialTimeout time.Duration `json:"dial_timeout"`
}

// GetDefaultConfig returns the default configuration: etcd on
// localhost:2379, a 5s dial timeout.
func GetDefaultConfig(env string) *Config {
	_ = env
	return &Config{Endpoints: []string{"localhost:2379"}, DialTimeout: 5 * time.Second}
}

type options struct {
	logger clog.Logger
}

// Option configures New.
type Option func(*options)

// WithLogger sets the logger, overriding the default of clog.Namespace("coord").
func WithLogger(l clog.Logger) Option { return func(o *options) { o.logger = l } }
