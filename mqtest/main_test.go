package mqtest_test

import (
	"context"
	"testing"

	"github.com/ceyewan/gochat/im-infra/clog"
	"go.uber.org/goleak"
)

// After each test's Close, no goroutine may be left; logs go to stderr, so
// that the examples' output is theirs alone.
func TestMain(m *testing.M) {
	if err := clog.Init(context.Background(), &clog.Config{Level: "warn", Format: "console", Output: "stderr"}); err != nil {
		panic(err)
	}
	goleak.VerifyTestMain(m)
}
