package mq

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/ceyewan/gochat/im-infra/clog"
	"github.com/ceyewan/gochat/im-infra/coord"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// setup is what the constructors share: the checked arguments, the
// options, the configuration and the franz-go options derived from it.
type setup struct {
	ctx   context.Context
	cfg   *config
	o     options
	kopts []kgo.Opt // without the producer's or the group's
}

// prepare checks the arguments common to the constructors, applies the
// options and reads the configuration.
func prepare(ctx context.Context, service string, opts []Option) (setup, error) {
	o := applyOptions(opts)
	if service == "" || strings.ContainsAny(service, "/ \t\n") {
		return setup{}, fmt.Errorf("%w: service name %q (want a non-empty name without '/' or spaces)", ErrInvalidArgument, service)
	}
	if o.env == "" || strings.Contains(o.env, "/") {
		return setup{}, fmt.Errorf("%w: environment %q", ErrInvalidArgument, o.env)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	provider, release, err := resolveProvider(ctx, &o)
	if err != nil {
		return setup{}, err
	}
	defer release()
	cfg, err := loadConfig(ctx, provider.Config(), o.env, service, o.logger)
	if err != nil {
		return setup{}, err
	}
	if cfg.ClientID == "" {
		cfg.ClientID = service
	}
	kopts, err := clientOpts(cfg, o.logger)
	if err != nil {
		return setup{}, err
	}
	return setup{ctx: ctx, cfg: cfg, o: o, kopts: kopts}, nil
}

// resolveProvider returns the Provider given by option, or one built from
// the environment, which release closes.
func resolveProvider(ctx context.Context, o *options) (coord.Provider, func(), error) {
	if o.providerSet {
		if o.provider == nil {
			return nil, nil, fmt.Errorf("%w: WithCoordProvider(nil)", ErrNoCoordProvider)
		}
		return o.provider, func() {}, nil
	}
	cc := coord.GetDefaultConfig(o.env)
	if env := os.Getenv(EnvCoordEndpoints); env != "" {
		cc.Endpoints = nil
		for _, e := range strings.Split(env, ",") {
			if e = strings.TrimSpace(e); e != "" {
				cc.Endpoints = append(cc.Endpoints, e)
			}
		}
	}
	p, err := coord.New(ctx, cc, coord.WithLogger(o.logger))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: no config center reachable at %s (set %s to the etcd endpoints, or pass mq.WithCoordProvider): %w",
			ErrNoCoordProvider, strings.Join(cc.Endpoints, ","), EnvCoordEndpoints, err)
	}
	return p, func() { _ = p.Close() }, nil
}

// clientOpts returns the franz-go options common to producers and consumers.
func clientOpts(cfg *config, logger clog.Logger) ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		kgo.DialTimeout(cfg.DialTimeout.D()),
		kgo.WithLogger(kgoLogger{logger}),
	}
	if t := cfg.Security.TLS; t.Enabled {
		tc, err := buildTLS(t)
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	switch s := cfg.Security.SASL; s.Mechanism {
	case "plain":
		opts = append(opts, kgo.SASL(plain.Auth{User: s.Username, Pass: string(s.Password)}.AsMechanism()))
	case "scram-sha-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: s.Username, Pass: string(s.Password)}.AsSha256Mechanism()))
	case "scram-sha-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: s.Username, Pass: string(s.Password)}.AsSha512Mechanism()))
	}
	return opts, nil
}

func buildTLS(t tlsConfig) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify} //nolint:gosec // the operator's choice, off by default
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, &ConfigError{Field: "security.tls.ca_file", Reason: err.Error()}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &ConfigError{Field: "security.tls.ca_file", Reason: "no PEM certificate in " + t.CAFile}
		}
		tc.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, &ConfigError{Field: "security.tls.cert_file", Reason: err.Error()}
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// newClient builds a franz-go client and checks, within dial_timeout, that
// a broker answers.
func newClient(ctx context.Context, cfg *config, opts []kgo.Opt) (*kgo.Client, error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("mq: new client: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout.D())
	defer cancel()
	if err := cl.Ping(pctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("%w: none of %s answered within %s (check brokers in the config, and that Kafka runs): %w",
			ErrBrokersUnreachable, strings.Join(cfg.Brokers, ","), cfg.DialTimeout.D(), err)
	}
	return cl, nil
}

// kgoLogger passes franz-go's warnings and errors to clog.
type kgoLogger struct{ l clog.Logger }

func (k kgoLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (k kgoLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	fields := make([]clog.Field, 0, len(keyvals)/2)
	for i := 0; i+1 < len(keyvals); i += 2 {
		key, _ := keyvals[i].(string)
		fields = append(fields, clog.Any(key, keyvals[i+1]))
	}
	msg = "kafka client: " + msg
	switch level {
	case kgo.LogLevelError:
		k.l.Error(msg, fields...)
	case kgo.LogLevelWarn:
		k.l.Warn(msg, fields...)
	case kgo.LogLevelInfo:
		k.l.Info(msg, fields...)
	default:
		k.l.Debug(msg, fields...)
	}
}
