package mq

import (
	"os"

	"github.com/ceyewan/gochat/im-infra/clog"
	"github.com/ceyewan/gochat/im-infra/coord"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Option configures NewProducer and NewConsumer.
type Option func(*options)

type options struct {
	logger      clog.Logger
	provider    coord.Provider
	providerSet bool // WithCoordProvider was called, even with nil
	env         string
	clientOpts  []kgo.Opt
}

// Environment variables read when the matching option is not given.
const (
	// EnvEnvironment names the config environment ("dev", "prod", …).
	EnvEnvironment = "GOCHAT_ENV"
	// EnvCoordEndpoints lists the etcd endpoints of the default config
	// center, comma separated.
	EnvCoordEndpoints = "COORD_ENDPOINTS"
)

func defaultOptions() options {
	env := os.Getenv(EnvEnvironment)
	if env == "" {
		env = "dev"
	}
	return options{env: env}
}

func applyOptions(opts []Option) options {
	o := defaultOptions()
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.logger == nil {
		o.logger = clog.Namespace("mq")
	}
	return o
}

// WithLogger sets the logger, overriding the default of clog.Namespace("mq").
func WithLogger(logger clog.Logger) Option {
	return func(o *options) {
		if logger != nil {
			o.logger = logger
		}
	}
}

// WithCoordProvider sets the config center mq reads its configuration from,
// overriding the default of a coord Provider built from the environment
// (etcd at $COORD_ENDPOINTS, else coord's default endpoints), which mq opens
// to read the configuration and closes again. A nil Provider makes the
// constructors fail with ErrNoCoordProvider. mq does not close the Provider.
func WithCoordProvider(p coord.Provider) Option {
	return func(o *options) {
		o.provider, o.providerSet = p, true
	}
}

// WithEnv sets the config environment, the first segment of the config keys
// ("{env}/global/kafka", "{env}/{service}/kafka"), overriding the default of
// $GOCHAT_ENV, else "dev".
func WithEnv(env string) Option {
	return func(o *options) { o.env = env }
}

// WithClientOptions appends franz-go options to those mq derives from the
// configuration, for what the configuration does not cover: hooks such as
// kprom or kotel metrics and tracing, a custom dialer. Options that change
// delivery semantics (acks, idempotence, commits) are the config's to set;
// overriding them here voids the delivery promise.
func WithClientOptions(opts ...kgo.Opt) Option {
	return func(o *options) { o.clientOpts = append(o.clientOpts, opts...) }
}
