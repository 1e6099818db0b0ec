// Package clog is the part of gochat's logging library that mq needs: a
// structured Logger over zap, a process-wide default logger, and trace_id
// propagation through context.Context.
//
// It follows the published shape of github.com/ceyewan/gochat/im-infra/clog so
// that mq compiles unchanged against the real package.
package clog

import (
	"context"
	"fmt"
	"os"
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Logger is a structured logger. Implementations must be safe for concurrent use.
type Logger interface {
	Debug(msg string, fields ...Field)
	Info(msg string, fields ...Field)
	Warn(msg string, fields ...Field)
	Error(msg string, fields ...Field)
	// Fatal logs and then exits the process with status 1.
	Fatal(msg string, fields ...Field)
	// Namespace returns a child logger whose entries carry the name
	// appended to the parent's (as zap's Named does).
	Namespace(name string) Logger
	// With returns a child logger that adds fields to every entry.
	With(fields ...Field) Logger
}

// Config describes a logger.
type Config struct {
	// Level is the minimum level: debug, info, warn, error, fatal.
	Level string `json:"level"`
	// Format is "json" or "console".
	Format string `json:"format"`
	// Output is "stdout", "stderr" or a file path.
	Output string `json:"output"`
	// AddSource adds the caller's file and line.
	AddSource bool `json:"add_source"`
}

// GetDefaultConfig returns the default configuration for an environment:
// console output at debug level for "dev", JSON at info level otherwise.
func GetDefaultConfig(env string) *Config {
	if env == "dev" || env == "" {
		return &Config{Level: "debug", Format: "console", Output: "stdout", AddSource: true}
	}
	return &Config{Level: "info", Format: "json", Output: "stdout", AddSource: true}
}

type options struct {
	name string
}

// Option configures New.
type Option func(*options)

// WithNamespace names the logger, overriding the default of no name.
func WithNamespace(name string) Option { return func(o *options) { o.name = name } }

// New builds a Logger from cfg (nil means GetDefaultConfig("dev")).
func New(_ context.Context, cfg *Config, opts ...Option) (Logger, error) {
	if cfg == nil {
		cfg = GetDefaultConfig("dev")
	}
	o := options{}
	for _, opt := range opts {
		opt(&o)
	}
	lvl, err := zapcore.ParseLevel(cfg.Level)
	if err != nil {
		return nil, fmt.Errorf("clog: level %q: %w", cfg.Level, err)
	}
	var enc zapcore.Encoder
	switch cfg.Format {
	case "json":
		enc = zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	case "console", "":
		ec := zap.NewDevelopmentEncoderConfig()
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, fmt.Errorf("clog: format %q: want json or console", cfg.Format)
	}
	var ws zapcore.WriteSyncer
	switch cfg.Output {
	case "stdout", "":
		ws = zapcore.Lock(os.Stdout)
	case "stderr":
		ws = zapcore.Lock(os.Stderr)
	default:
		f, err := os.OpenFile(cfg.Output, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, fmt.Errorf("clog: output: %w", err)
		}
		ws = zapcore.Lock(f)
	}
	zopts := []zap.Option{}
	if cfg.AddSource {
		zopts = append(zopts, zap.AddCaller(), zap.AddCallerSkip(1))
	}
	z := zap.New(zapcore.NewCore(enc, ws, lvl), zopts...)
	if o.name != "" {
		z = z.Named(o.name)
	}
	return &zapLogger{z: z}, nil
}

// NewFromZap wraps an existing *zap.Logger (for example one built on
// zaptest/observer in tests).
func NewFromZap(z *zap.Logger) Logger { return &zapLogger{z: z} }

var (
	defaultMu     sync.RWMutex
	defaultLogger Logger
)

// Init replaces the process-wide default logger with one built from cfg.
func Init(ctx context.Context, cfg *Config, opts ...Option) error {
	l, err := New(ctx, cfg, opts...)
	if err != nil {
		return err
	}
	defaultMu.Lock()
	defaultLogger = l
	defaultMu.Unlock()
	return nil
}

// SetDefault replaces the process-wide default logger; nil restores the
// built-in one.
func SetDefault(l Logger) {
	defaultMu.Lock()
	defaultLogger = l
	defaultMu.Unlock()
}

// Default returns the process-wide default logger: the one Init set, or a
// console logger at info level on stderr.
func Default() Logger {
	defaultMu.RLock()
	l := defaultLogger
	defaultMu.RUnlock()
	if l != nil {
		return l
	}
	defaultMu.Lock()
	defer defaultMu.Unlock()
	if defaultLogger == nil {
		defaultLogger, _ = New(context.Background(), &Config{Level: "info", Format: "console", Output: "stderr", AddSource: true})
	}
	return defaultLogger
}

// Namespace returns a named child of the default logger.
func Namespace(name string) Logger { return Default().Namespace(name) }

type traceKey struct{}

// WithTraceID returns a copy of ctx carrying the trace id.
func WithTraceID(ctx context.Context, traceID string) context.Context {
	return context.WithValue(ctx, traceKey{}, traceID)
}

// TraceIDFromContext returns the trace id WithTraceID put into ctx, or "".
func TraceIDFromContext(ctx context.Context) string {
	if ctx == nil {
		return ""
	}
	id, _ := ctx.Value(traceKey{}).(string)
	return id
}

// WithContext returns the default logger, with a trace_id field when ctx
// carries one.
func WithContext(ctx context.Context) Logger {
	l := Default()
	if id := TraceIDFromContext(ctx); id != "" {
		return l.With(String("trace_id", id))
	}
	return l
}

type zapLogger struct{ z *zap.Logger }

func (l *zapLogger) Debug(msg string, fields ...Field) { l.z.Debug(msg, fields...) }
func (l *zapLogger) Info(msg string, fields ...Field)  { l.z.Info(msg, fields...) }
func (l *zapLogger) Warn(msg string, fields ...Field)  { l.z.Warn(msg, fields...) }
func (l *zapLogger) Error(msg string, fields ...Field) { l.z.Error(msg, fields...) }
func (l *zapLogger) Fatal(msg string, fields ...Field) { l.z.Fatal(msg, fields...) }
func (l *zapLogger) Namespace(name string) Logger      { return &zapLogger{z: l.z.Named(name)} }
func (l *zapLogger) With(fields ...Field) Logger       { return &zapLogger{z: l.z.With(fields...)} }
