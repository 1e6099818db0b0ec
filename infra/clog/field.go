package clog

import (
	"time"

	"go.uber.org/zap"
)

// Field is a structured log field.
type Field = zap.Field

// String is a string field.
func String(key, val string) Field { return zap.String(key, val) }

// Strings is a []string field.
func Strings(key string, val []string) Field { return zap.Strings(key, val) }

// Int is an int field.
func Int(key string, val int) Field { return zap.Int(key, val) }

// Int32 is an int32 field.
func Int32(key string, val int32) Field { return zap.Int32(key, val) }

// Int64 is an int64 field.
func Int64(key string, val int64) Field { return zap.Int64(key, val) }

// Bool is a bool field.
func Bool(key string, val bool) Field { return zap.Bool(key, val) }

// Float64 is a float64 field.
func Float64(key string, val float64) Field { return zap.Float64(key, val) }

// Duration is a time.Duration field.
func Duration(key string, val time.Duration) Field { return zap.Duration(key, val) }

// Any is a field of any type.
func Any(key string, val any) Field { return zap.Any(key, val) }

// Err is an error field under the key "error".
func Err(err error) Field { return zap.Error(err) }

// ByteString is a UTF-8 []byte field.
func ByteString(key string, val []byte) Field { return zap.ByteString(key, val) }
